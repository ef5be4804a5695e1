"""Shared by the test files: the ShapeRefs folders they read, generated once per run, and one way to run the command
line in a subprocess.

Scheduling for `make test` (pytest-xdist, `--dist loadgroup`, one worker per core): each worker is a session of its
own, and the wall time is the busier worker's sum. So that no work is done twice and the slow work starts first:
- `shaperefs_data` generates each folder once per run, in a folder every worker of the run shares, under a file lock;
- every test that uses a fixture of `ONE_WORKER` goes into one xdist group, so that the fixture is built on one worker
  instead of on each;
- the work units (an xdist group, or a test) are handed out slowest first (`SLOWEST`), not by xdist's default (the
  units with the most tests first): the learning runs start at once on different workers, and the short tests fill the
  gaps at the end instead of a long run starting last and leaving the other worker idle.

Two gates: `make test` runs every test not marked `slow` (the aim: ≤ 10 minutes on an idle 2-core machine);
`make test-all` (CI) runs them all. `SLOW` lists the slow ones with what of their claim the fast gate also proves.
`--cpu-durations N` lists the N tests with the most CPU seconds (this process and its finished children), a measure
that other load on a shared machine moves far less than `--durations`' wall seconds, with the 512³ matmul probe before
and after."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
CLI = [sys.executable, "-m", "ris_nb"]
# `ris_nb train` arguments of a seconds-long lavt_tiny run at 64 px that logs every step and evaluates and saves
# every 2; tests add `--set` items (e.g. "train.max_steps=2")
TINY_RUN = [
    "--preset",
    "lavt_tiny",
    "--set",
    "data.image_size=64",
    "train.batch_size=4",
    "train.log_every=1",
    "train.eval_every=2",
    "train.ckpt_every=2",
    "train.device=cpu",
]

# Fixtures slow to build (CPU seconds a build, one thread): the tests using one share a worker, so it is built once.
ONE_WORKER = {
    "graded": "test_grading: 15 student notebooks graded, each in a process of its own (32 s)",
    "site": "test_site: both editions of the course website built, read in Chromium, downloads run (260 s)",
    "runs": "test_viz: four tiny presets trained for 2 steps (7 s)",
    "trained": "test_faults: a 2-step lavt_tiny run through the CLI, read by 23 tests (2-5 s)",
    "one_process_run": "test_engine: the one-process magnet_tiny run that DDP and accumulation compare with (13 s)",
}

# Seconds of the slowest work units on one thread (CPU seconds of `--cpu-durations`, session 11): handed out first, in
# this order. A unit is an xdist group or a test function (all its parameters, each its own unit); those not listed
# follow in the order of collection.
SLOWEST = {
    "learning_magnet": 188,
    "tests/test_fast_forms.py::test_compiled_step_matches_eager": 250,  # inductor's C++ kernels, fresh cache
    "site": 260,  # two Jupyter Book builds (97 s), Chromium over 46 pages (67 s), three downloads run (52 s)
    "hostile": 100,  # nbgrader_config.py: ten submissions autograded by ris_nb grade, their feedback, export
    "nbgrader": 520,  # nbgrader's round trip of three lessons (120 s) and of 07, 10, 12 (`totals`, 400 s loaded)
    "learning_lavt_sag": 182,
    "tests/test_experiments.py::test_parallel_study_matches_serial_and_resumes": 68,
    "entity_pretraining": 61,
    "trained": 52,
    "graded": 50,
    "tests/test_gpu_check.py::test_tiny_cpu_check_writes_a_row_per_check": 48,
    "one_process_run": 44,  # its run and accumulation's in the worker's process, DDP's two ranks
    "tests/test_experiments.py::test_main_table_cli_writes_the_record_and_resumes": 43,
    "tests/test_experiments.py::test_experiments_cli_writes_tables_and_resumes": 32,
    "tests/test_gpu_check.py::test_tiny_cpu_profile_mode_writes_rows_and_tables": 32,
    "tests/test_shipped_checkpoints.py::test_the_recorded_val_score_is_measured_again": 31,
    "tests/test_engine.py::test_torchrun_cli_runs": 29,
    "tests/test_sag.py::test_c3_two_processes_match_one_process": 25,
    "tests/test_faults.py::test_declared_image_size_beyond_what_load_image_reads_is_refused_first": 22,
    "tests/test_grading_faults.py::test_a_stopped_grader_leaves_no_student_process_and_no_folder": 21,
    "tests/test_grading_faults.py::test_a_notebook_that_is_no_file_of_the_students_is_refused_by_name": 19,
    "tests/test_engine.py::test_kill_9_and_resume_gives_the_same_losses": 16,
    "tests/test_magnet.py::test_short_training_learns": 16,
    "tests/test_engine.py::test_cli_round_trip_synth_train_eval_predict": 16,
    "runs": 12,
    "tests/test_tiny_refer.py::test_tiny_refer_learns_to_refer": 11,
    "tests/test_sag.py::test_pieces_split_shared_slots_on_shaperefs": 11,
    "tests/test_engine.py::test_every_mini_preset_resumes_bit_identically": 11,
    "tests/test_faults.py::test_writes_past_a_file_size_limit_name_the_file_and_leave_nothing": 10,
    "tests/test_cli_startup.py::test_a_later_command_imports_its_module_and_torch": 9,
}


# Left to `make test-all` (CI): long end-to-end runs (seconds as in SLOWEST), each with what `make test` still proves
# of its claim. A key is a fixture (every test using it), an xdist group or a test function (all its parameters).
# Some parameters of a test are marked in their file instead, with the same account (test_course's GRADED_FAST).
SLOW = {
    "learning_magnet": "test_learning: magnet_tiny, 300 steps, beats every language-blind answer (188 s). make test: "
    "test_magnet's 24 steps lower the loss; the shipped magnet_tiny scores its recorded val again (09_magnet)",
    "learning_lavt_sag": "test_learning: lavt_tiny and sag_tiny, 300 steps each, beat every language-blind answer "
    "(182 s). make test: the shipped lavt_tiny and sag_tiny score their recorded val again; 06_lavt, 11_sag train",
    "site": "test_site: both website editions built, read in Chromium, three downloads run (260 s). make test: "
    "test_course's student copies hold no answer and one runs top to bottom; test_site's order, contents, citations",
    "totals": "test_nbgrader: 07, 10 and 12 through nbgrader and ris_nb grade, equal totals, a point per Think "
    "question (400 s on a loaded 2-core machine). make test: ris_nb grade scores one wrong Think answer of two 1 "
    "of 2 (test_course); the marking gives every Think question a check cell of 1 point (test_nbgrader)",
    "hostile": "test_nbgrader_hostile: a two-exercise lesson through nbgrader with ten hostile or clumsy "
    "submissions (100 s). make test: every teacher's slip refused (test_teacher_slips); 98e_grading's cells check "
    "nbgrader_parts' verdicts and ris_nb grade confines a student's reads (test_grading)",
    "round_trip": "test_nbgrader: three lessons through nbgrader itself (120 s). make test: each exercise cell's "
    "nbgrader metadata and the config (test_nbgrader); nbgrader's copies are our own (test_course); ris_nb grade",
    "entity_pretraining": "test_sag: 300 steps of entity pretraining split the slots into shapes (61 s). make test: "
    "12a pretrains 30 steps; the pretrain-entities command writes weights that load (test_sag)",
    "tests/test_experiments.py::test_parallel_study_matches_serial_and_resumes": "a SaG study with --jobs 2 gives "
    "the numbers of --jobs 1 and resumes (68 s). make test: 98b runs the same study both ways and finds the same "
    "numbers; test_experiments_cli_writes_tables_and_resumes resumes a study",
    "tests/test_demo_browser.py::test_a_click_during_run_all_sees_still_loading_then_is_answered": "the demo in "
    "JupyterLab in Chromium (26 CPU s and a 20 s wait). make test: the same clicks on the app's widgets "
    "(test_demo's test_clicks_during_run_all_see_still_loading_until_ready)",
    "tests/test_fast_forms.py::test_compiled_step_matches_eager": "a magnet_tiny step with its pixel decoder, "
    "decoder, a BERT layer, a PWAM and a CAM compiled by inductor (C++ kernels: minutes on a CPU) against eager. "
    "make test: compile_regions compiles "
    "each region with Module.compile and changes no setting (test_fast_forms); 97c's graph pass leaves one linear of "
    "three, output as eager",
    "tests/test_fast_forms.py::test_importing_ris_nb_changes_no_process_setting": "every ris_nb module imported in "
    "a fresh process leaves warnings and dynamo/inductor settings unchanged. make test: no `is_compiling` in ris_nb; "
    "compile_regions leaves dynamo's settings unchanged (test_fast_forms)",
    "tests/test_gpu_check.py::test_tiny_cpu_check_writes_a_row_per_check": "every check of tools/gpu_check.py on "
    "the CPU (48 s). make test: its options and table (test_gpu_check); the runs it checks (DDP, torchrun, resume: "
    "test_engine)",
    "tests/test_gpu_check.py::test_tiny_cpu_profile_mode_writes_rows_and_tables": "gpu_check's profile mode on the "
    "CPU (32 s). make test: its options and verdict (test_gpu_check)",
    "tests/test_experiments.py::test_main_table_cli_writes_the_record_and_resumes": "`experiments --table main` "
    "through the CLI: 15 runs, resumed, --rows added to a record (43 s). make test: 98b runs the main table (two "
    "languages), reads every run back, adds a row to a record and refuses another seed count; 98b's parser cells "
    "refuse --language and --record beside it",
    "tests/test_experiments.py::test_experiments_cli_writes_tables_and_resumes": "MagNet's study rows through the "
    "CLI, a killed run re-trained alone, another budget refused (32 s). make test: 98b's run_study does the same with "
    "SaG's rows (a killed run alone re-trained, another config refused, a cut-off result redone)",
    "tests/test_engine.py::test_torchrun_cli_runs": "`ris_nb train` under torchrun, two ranks (29 s). make test: "
    "two torchrun ranks through fit equal one process and free their group (test_ddp_two_processes_match_one_process); "
    "`ris_nb train`'s start in process (test_run_once)",
    "tests/test_engine.py::test_every_mini_preset_resumes_bit_identically": "the four mini presets resume "
    "bit-identically (49 s). make test: each model family's tiny preset does (test_faults' "
    "test_every_tiny_preset_resumes_bit_identically)",
    "tests/test_engine.py::test_cli_round_trip_synth_train_eval_predict": "synth → train → eval → predict through "
    "the CLI (16 s). make test: 15_cli runs the same four commands in process and checks their files",
    "tests/test_sag.py::test_c3_two_processes_match_one_process": "C³'s gather over two gloo ranks equals one "
    "process (25 s). make test: two ranks through fit equal one process (test_ddp_two_processes_match_one_process); "
    "SaG's C³ loss on one process (11_sag)",
    "tests/test_faults.py::test_declared_image_size_beyond_what_load_image_reads_is_refused_first": "a declared "
    "10⁹ × 10⁹ image refused by train and check-data in child processes (22 s). make test: Refer's pixel bound "
    "(91_refer_safety)",
    "tests/test_faults.py::test_predict_names_a_directory_and_warns_in_one_line": "predict --image a folder, and a "
    "warning as one line, in child processes (21 s). make test: predict's refusals and one-line warnings (15_cli)",
    "tests/test_faults.py::test_predict_says_when_a_long_text_is_cut": "predict of 504 words warns once, in a child "
    "process (11 s). make test: predict's one-line warnings (15_cli)",
    "tests/test_faults.py::test_predict_under_a_file_size_limit_keeps_the_previous_outputs": "predict under ulimit "
    "-f keeps its previous outputs (11 s). make test: a checkpoint and curves.png past the limit name the file and "
    "leave nothing (test_writes_past_a_file_size_limit_name_the_file_and_leave_nothing)",
    "tests/test_grading_faults.py::test_a_stopped_grader_leaves_no_student_process_and_no_folder": "SIGINT / SIGTERM "
    "to a grading process (21 s). make test: a grader killed hard is cleaned up at the next start, a hanging student "
    "times out (test_a_grader_killed_hard_is_cleaned_up_at_the_next_start, test_grading)",
}


# Tests whose claim is a number that the CPU's vector path moves (parity, DDP, resume, accumulation, learning): marked
# `numeric`; `make test-portable` (run by `make test-all`) runs them again under each emulated vector path
# (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2, ATEN_CPU_CAPABILITY=default), so that a tolerance that holds only
# on one CPU's kernels fails here. A key is a test function, a fixture or a test file.
NUMERIC = {
    "tests/test_engine.py::test_kill_9_and_resume_gives_the_same_losses": "resume: the same losses bit for bit",
    "tests/test_engine.py::test_ddp_two_processes_match_one_process": "DDP: two ranks' losses equal one process's",
    "tests/test_engine.py::test_gradient_accumulation_matches_the_full_batch": "accumulation: 2 × 4 equals 8",
    "tests/test_faults.py::test_every_tiny_preset_resumes_bit_identically": "resume, every model family",
    "tests/test_sag.py::test_c3_two_processes_match_one_process": "C³'s gather over two ranks equals one process",
    "tests/test_magnet.py::test_parity_with_official": "parity with the official MagNet's outputs, within 1e-4",
    "tests/test_sag.py::test_parity_with_official": "parity with the official SaG's outputs, within 1e-4",
    "tests/test_fast_forms.py::test_whole_step_fast_matches_reference": "a whole step: fast forms vs reference",
    "tests/test_fast_forms.py::test_official_parity_with_both_forms": "official parity with both forms, within 1e-4",
    "tests/test_magnet.py::test_short_training_learns": "learning: 24 steps lower the loss",
    "tests/test_tiny_refer.py::test_tiny_refer_learns_to_refer": "learning: TinyRefer beats the floors",
    "tests/test_learning.py": "learning: each tiny preset beats every language-blind answer",
    "tests/test_shipped_checkpoints.py::test_the_recorded_val_score_is_measured_again": "a shipped val score, ±0.1",
}


def pytest_addoption(parser):
    parser.addoption(
        "--cpu-durations",
        type=int,
        default=0,
        metavar="N",
        help="list the N tests with the most CPU seconds (setup, call and teardown; the process and its children)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: run by `make test-all`, not `make test` (conftest.SLOW says why)")
    config.addinivalue_line(
        "markers",
        "numeric: a number the CPU's vector path moves; `make test-portable` runs it under each emulated path",
    )
    if config.getoption("cpu_durations") and not hasattr(config, "workerinput"):  # the controller (or no xdist)
        config.pluginmanager.register(CPUReport(config.getoption("cpu_durations")), "ris_nb_cpu_report")
    if getattr(config.option, "dist", "no") == "loadgroup":
        config.option.loadscopereorder = False  # xdist keeps the collection order, set below: slowest unit first
    config.pluginmanager.register(GroupCheck(), "ris_nb_group_check")


class GroupCheck:
    """xdist's loadgroup reads a test's group from its node id (`<id>@<group>`, written by xdist after collection);
    pytest 9.2's structured node ids ignore that write (pytest-xdist issue #1386), which splits every group silently:
    hence `pytest<9.2` in settings.ini. Stops the run if a group was not applied anyway."""

    @pytest.hookimpl(trylast=True)  # after xdist's own write
    def pytest_collection_modifyitems(self, config, items):
        if not getattr(config.option, "loadgroup", False):  # set on xdist workers under --dist loadgroup
            return
        missed = [item.nodeid for item in items if (g := _group(item)) and not item.nodeid.endswith("@" + g)]
        if missed:
            raise pytest.UsageError(
                f"pytest {pytest.__version__} drops xdist groups (pytest-xdist issue #1386), e.g. {missed[0]}: "
                "install pytest<9.2 (settings.ini's dev_requirements)"
            )


def _group(item) -> str | None:
    "The item's xdist group as xdist names it (several marks: their names sorted, joined by '_'), or None."
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) or None


def _unit(item) -> str:
    "The work unit xdist hands out: the item's group, else its test function (all its parameters)."
    return _group(item) or item.nodeid.split("@")[0].split("[")[0]


def _seconds(item) -> float:
    return SLOWEST.get(_unit(item), 0)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(session, config, items):
    for item in items:
        shared = [f for f in item.fixturenames if f in ONE_WORKER]
        if shared and _group(item) is None:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
        function = item.nodeid.split("@")[0].split("[")[0]  # a test of a group is named by its function too
        if {_unit(item), function, *item.fixturenames} & SLOW.keys():  # before pytest's own hook deselects by -m
            item.add_marker(pytest.mark.slow)
        if {function, item.nodeid.split("::")[0]} & NUMERIC.keys():
            item.add_marker(pytest.mark.numeric)
    if getattr(config.option, "loadgroup", False):  # an xdist worker: the order it reports is the order handed out
        items.sort(key=_seconds, reverse=True)  # stable: the others keep their order


CPU = pytest.StashKey[dict]()


def _cpu_seconds() -> float:
    "User and system CPU seconds of this process and of its children that have ended."
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_phase(item, when: str):
    if not item.config.getoption("cpu_durations"):
        return (yield)
    start = _cpu_seconds()
    try:
        return (yield)
    finally:
        item.stash.setdefault(CPU, {})[when] = _cpu_seconds() - start


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _timed_phase(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _timed_phase(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _timed_phase(item, "teardown"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when in item.stash.get(CPU, {}):  # travels to xdist's controller with the report
        report.user_properties.append(("cpu_s", round(item.stash[CPU][call.when], 3)))
    return report


class CPUReport:
    "`--cpu-durations N`: the N tests with the most CPU seconds, each worker's summed wall seconds, the probe."

    def __init__(self, n: int):
        self.n, self.cpu, self.wall, self.worker, self.slow = n, {}, {}, {}, set()
        self.probe_before = _probes()

    def pytest_runtest_logreport(self, report):
        cpu = dict(map(tuple, report.user_properties)).get("cpu_s")
        if cpu is None:
            return
        self.cpu[report.nodeid] = self.cpu.get(report.nodeid, 0.0) + cpu
        if "slow" in report.keywords:
            self.slow.add(report.nodeid)
        self.wall[report.nodeid] = self.wall.get(report.nodeid, 0.0) + report.duration
        node = getattr(getattr(getattr(report, "node", None), "gateway", None), "id", "main")
        self.worker[node] = self.worker.get(node, 0.0) + report.duration

    def pytest_terminal_summary(self, terminalreporter):
        tr, after = terminalreporter, _probes()
        tr.write_sep("=", f"{self.n} tests with the most CPU seconds (setup + call + teardown, with child processes)")
        for nodeid in sorted(self.cpu, key=self.cpu.get, reverse=True)[: self.n]:
            slow = "  (slow)" if nodeid in self.slow else ""
            tr.write_line(f"{self.cpu[nodeid]:8.1f} CPU s {self.wall[nodeid]:8.1f} s  {nodeid}{slow}")
        workers = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(self.worker.items()))
        slow, total = sum(v for k, v in self.cpu.items() if k in self.slow), sum(self.cpu.values())
        tr.write_line(
            f"{len(self.cpu)} tests: {total:.0f} CPU s ({len(self.slow)} marked slow: {slow:.0f} CPU s), "
            f"{sum(self.wall.values()):.0f} s of wall time summed (per worker: {workers}); 512³ matmul probe, 1 / 2 "
            f"threads: {self.probe_before} ms before, {after} ms after"
        )


def _probes() -> str:
    from ris_nb.machine import probe_ms  # imports torch: only for --cpu-durations

    return f"{probe_ms(threads=1):.2f} / {probe_ms(threads=2):.2f}"


def run(args, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run `args` one-threaded and offline, capturing text output; `check`: a non-zero exit fails with the command
    and its output's tail."""
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=ENV, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        )
    return p


def cli(*args, check_rc: int | None = None, **kw) -> subprocess.CompletedProcess:
    "`ris_nb <args>` in a subprocess; `check_rc`: assert that exit code (showing the output's tail otherwise)."
    p = run(CLI + list(args), check=False, **kw)
    if check_rc is not None:
        assert p.returncode == check_rc, f"rc {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


def run_folder(tmp_path_factory) -> Path:
    "A temporary folder of this run that every xdist worker shares (a worker's own folder lies in it)."
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def shaperefs_data(tmp_path_factory) -> Callable[..., Path]:
    """`get(n_images, seed, size=128, language="plain")`: a data root holding `shaperefs/` made with those settings,
    generated once per run and shared by every test and worker: read it only (`copy_data` it into `tmp_path` to change
    it)."""
    from ris_nb.data.shaperefs_files import generate_once

    shared, made = run_folder(tmp_path_factory), {}

    def get(n_images: int, seed: int, size: int = 128, language: str = "plain") -> Path:
        key = (n_images, seed, size, language)
        if key not in made:
            root = shared / f"shaperefs-{n_images}-{seed}-{size}-{language}"
            # the first worker to ask generates it under a file lock, the others wait and read it
            generate_once(root, {"n_images": n_images, "seed": seed, "size": size, "language": language})
            made[key] = root
        return made[key]

    return get


def copy_data(root: Path, dest: Path) -> Path:
    "A private copy of a shared data root (for a test that changes the data); returns `dest`."
    shutil.copytree(root, dest)
    return dest
