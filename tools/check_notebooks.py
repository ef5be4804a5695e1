"""`make test`'s notebook step: every notebook run once as `nbdev_test` runs it, and its marked outputs checked.

A code cell whose leading directives include `#| check_output` promises that its saved output is what the code prints
now. The notebooks run exactly as under `nbdev_test` (nbdev 2.4.14's `test_nb`: `IN_TEST=1`, settings.ini's `tst_flags`
skipped unless `--flags` names them, `#| eval: false` and `nbdev_export()` cells skipped, each notebook in its folder,
`--n_workers` at a time), and a marked cell whose text now differs from the saved one fails the run, named with its
first differing line. Compared: stdout, stderr less Python's warnings, and the text of results and displays (markdown
where there is some, else plain text). Not compared: images, widgets, blank lines. Masked on both sides: times and rates
(`12.3 s`, `31 CPU s`, `4 ms`, `250 images/s`, `0:01:02`, the probe's `2.1 on two`), the temporary folder (`<tmp>`, as
`tools/rerun_notebook.py` writes it), memory addresses, process ids, commit hashes, show_doc's source line
(`train.py#L784`), progress-bar lines; under `#| check_output` every other number must match exactly. Under `#|
check_output: numbers` (for numbers that move in their last digits between CPU models: a parity error of 3e-07; a
trained model's loss or score is a trajectory that can move further: its cell asserts what it means instead, below) the
text and the lines must match exactly and each number only within 5 %, 1e-5 or one unit of its last printed digit. What
`train.amp=bf16` gives (`precision: …`) is masked: it depends on whether the CPU computes bfloat16 natively. Under `#|
check_output: run_all` (or `run_all numbers`: an output that depends on `IN_TEST`, such as a loop shortened under test)
a cell is compared only by `--run-all`, which runs the notebooks as Run All does (no `IN_TEST`, flagged cells too):
slow, so `make check-run-all` and not `make test`.

`--mark` proposes the marks: it runs the notebooks as the check does, compares every unmarked code cell's text output
with its saved one, and marks the cells that match: `#| check_output` when exactly, else `#| check_output: numbers`
when within the tolerance. A cell whose output depends on `IN_TEST` matches under neither and stays unmarked; each
one is listed with its first difference. `--mark --run-all` then marks those that match as Run All prints them
(`run_all`, `run_all numbers`). Run it after the notebooks' outputs were saved by one run
(`tools/run_all.py`); the marks are not part of the sources `tools/run_all.py` hashes. `--coverage` counts, without
running anything, the code cells with text output and the share of them marked (the course: 00–89, and all).
Refresh a stale output with `python tools/rerun_notebook.py nbs/X.ipynb --cells N,...` (and the cells it depends
on), or `python tools/run_all.py nbs/X.ipynb`.

The CPU's vector path (`VECTOR_PATHS`): a trained loss or score is a trajectory whose digits move with the kernels the
CPU runs (oneDNN's AVX-512 kernels give other losses from the first steps than AVX2's). When a marked cell differs, the
notebook runs again in a child process under each other path (`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`,
`ATEN_CPU_CAPABILITY=default`, and the native one when this run is under an emulated path); if one prints the saved
text, the cell still fails, but as "this output depends on the CPU's vector path (reproduced under X)", not as stale:
its check should test what the output means (a bound, beating the floors), not its digits. `--mark` marks a cell only
when every path prints it alike (the native run and the emulated ones). `make test-portable` runs the whole check under
each emulated path, on the notebooks that print a fractional number in a marked cell (`--fractional`: what a vector
path can move; the others, and `SAME_ON_EVERY_PATH`'s, were checked natively). `--no-vector-paths` runs none of them.

    python tools/check_notebooks.py [--path nbs/00_core.ipynb] [--flags slow] [--n_workers 2] [--timing]
    python tools/check_notebooks.py --mark [--run-all] [--path nbs/06_lavt.ipynb] [--n_workers 2]
    python tools/check_notebooks.py --run-all [--path nbs/06_lavt.ipynb]
    python tools/check_notebooks.py --coverage
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python tools/check_notebooks.py --fractional   (make test-portable)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rerun_notebook import sanitise_text  # noqa: E402  (the temp-folder rule the saved outputs were written with)
from vector_path import check_environment  # noqa: E402

MARK = "check_output"
NUMBERS = "numbers"  # `#| check_output: numbers`: numbers within a tolerance
RUN_ALL = "run_all"  # `#| check_output: run_all`: compared only by `--run-all` (the output depends on IN_TEST)
MODES = ("", NUMBERS, RUN_ALL, f"{RUN_ALL} {NUMBERS}")
REL_TOL = 0.05
ABS_TOL = (
    1e-5  # float32 rounding: a parity error of 3e-07 on one CPU is 2e-07 or 0 on another (its cell's assert bounds it)
)
MASKS = [
    (re.compile(r"\b\d+:\d\d(:\d\d)?(\.\d+)?\b"), "<clock>"),
    (re.compile(r"\d[\d,]*(\.\d+)?(e-?\d+)?\s?(\w+ ?)?/s\b"), "<rate>"),
    (
        re.compile(r"\d[\d,]*(\.\d+)?(e-?\d+)?\s?(CPU )?(ms|µs|us|ns|s|sec|secs|seconds|min|mins|minutes|h|hours)\b"),
        "<time>",
    ),
    (re.compile(r"\b0x[0-9a-fA-F]{6,}\b"), "0x<address>"),
    (re.compile(r"(\.py)#L\d+\b"), r"\1#L<line>"),  # show_doc's source link: moves when another notebook adds code
    (re.compile(r"\b\d+(\.\d+)? on two\b"), "<time> on two"),  # the probe on two threads, printed without its unit
    (re.compile(r"\(pid \d+\)"), "(pid <pid>)"),
    (re.compile(r"\bcommit [0-9a-f]{7,40}\b"), "commit <sha>"),
    (re.compile(r" {2,}(?=<time>)"), " "),  # a column of times realigned when one time is wider
    # what train.amp=bf16 gives depends on whether this CPU computes bfloat16 natively
    (re.compile(r"^precision: .*\(train\.amp=bf16: this CPU .*$"), "precision: <train.amp=bf16 on this CPU>"),
]
# The CPU's vector paths besides the native one: an AVX2 machine (oneDNN and ATen capped at AVX2; on an AVX-512 CPU
# oneDNN's AVX-512 kernels move a trained loss by 0.035 from step 10) and ATen's portable kernels. Each is a set of
# environment variables read when torch starts, so a path is a child process.
PATH_VARS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
NATIVE = "native"
VECTOR_PATHS = {
    NATIVE: {},
    "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
}
WARNING = re.compile(r"^\S.*:\d+: \w*Warning: .*\n(  .*\n)?", re.M)
PROGRESS_LINE = re.compile(r"\d+%\|")  # tqdm's text form: "ShapeRefs:  40%|████      | 320/800"


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def mask(text: str) -> str:
    "`text` with the temp folder, times, rates and addresses replaced by placeholders."
    text = sanitise_text(text)
    for pattern, placeholder in MASKS:
        text = pattern.sub(placeholder, text)
    return text


def without_warnings(text: str) -> str:
    "`text` less Python's warning lines (`file.py:12: UserWarning: ...` and the source line under it)."
    return WARNING.sub("", text)


def reader_lines(outputs: list) -> list[str]:
    "The masked lines a reader relies on in a cell's `outputs`: stdout, stderr less warnings, results and displays."
    streams, shown = {"stdout": [], "stderr": []}, []
    for out in outputs:
        if out["output_type"] == "stream":
            streams[out["name"]].append(_text(out["text"]))
        elif out["output_type"] in ("execute_result", "display_data"):
            data = out["data"]
            if any(k.startswith("image/") or "widget" in k for k in data):
                continue
            shown.append(_text(data.get("text/markdown") or data.get("text/plain", "")))
    text = "".join(streams["stdout"]) + "\n" + without_warnings("".join(streams["stderr"])) + "\n" + "\n".join(shown)
    return [mask(line.rstrip()) for line in text.splitlines() if line.strip() and not PROGRESS_LINE.search(line)]


# a number standing alone (not inside a name such as float32): 1,718  -0.25  3.2e-05  50.4
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _unit(number: str) -> float:
    "One unit of the last printed digit: '50.4' -> 0.1, '1,718' -> 1, '3.25e-05' -> 1e-07."
    mantissa, _, exponent = number.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def numbers_close(saved: str, now: str) -> bool:
    "Two printed numbers within `REL_TOL` of the larger, within `ABS_TOL`, or one unit of the saved one's last digit."
    a, b = float(saved.replace(",", "")), float(now.replace(",", ""))
    return abs(a - b) <= max(REL_TOL * max(abs(a), abs(b)), ABS_TOL, _unit(saved) * 1.000001)


def lines_agree(saved: str, now: str, mode: str) -> bool:
    "One line each: equal; under `numbers`, equal text around numbers that are `numbers_close`."
    if saved == now:
        return True
    if NUMBERS not in mode.split() or NUMBER.sub("#", saved) != NUMBER.sub("#", now):
        return False
    return all(numbers_close(a, b) for a, b in zip(NUMBER.findall(saved), NUMBER.findall(now)))


def first_difference(saved: list[str], now: list[str], mode: str = "") -> str | None:
    "None when the two agree (exactly, or under a `numbers` mode within the tolerance), else where they first differ."
    if len(saved) == len(now) and all(lines_agree(a, b, mode) for a, b in zip(saved, now)):
        return None
    i = next((i for i, (a, b) in enumerate(zip(saved, now)) if not lines_agree(a, b, mode)), min(len(saved), len(now)))
    show = lambda lines: repr(lines[i]) if i < len(lines) else "(no more lines)"  # noqa: E731
    return f"line {i + 1} of {len(saved)} saved / {len(now)} now\n      saved: {show(saved)}\n      now:   {show(now)}"


def is_skipped(cell, flags: set[str]) -> bool:
    "nbdev_test's rule: markdown, `nbdev_export()` calls, `#| eval: false` and cells with a skipped flag do not run."
    if cell.cell_type != "code" or "nbdev_export" + "(" in cell.source:
        return True
    direc = getattr(cell, "directives_", {}) or {}
    return direc.get("eval:", [""])[0].lower() == "false" or bool(flags & direc.keys())


def mark_mode(directives: dict) -> str | None:
    "None for an unmarked cell, else its mode: '' for `#| check_output`, 'numbers' for `#| check_output: numbers` …"
    for key in (MARK, MARK + ":"):
        if key in directives:
            mode = " ".join(directives[key])
            if mode not in MODES:
                raise ValueError(f"#| {MARK}: expected one of {[m for m in MODES if m]} or nothing, got {mode!r}")
            return mode
    return None


def check_notebook(
    path: Path,
    skip_flags: list[str],
    force_flags: list[str],
    basepath: Path | None = None,
    collect: bool = False,
    run_all: bool = False,
) -> tuple[bool, float, list[str], dict[int, tuple[list[str], list[str], str]], float]:
    """Run `path` as nbdev_test does (with `run_all`: without IN_TEST, every flagged cell too): (no error and every
    marked output as saved, seconds, one message per problem, with `collect` each unmarked cell's saved and new text
    lines and its source as run by cell index, and CPU seconds: this process and the child processes that ended)."""
    from execnb.shell import CaptureShell
    from fastcore.basics import str2bool
    from fastcore.foundation import working_directory
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor, nb_lang

    if basepath:
        sys.path.insert(0, str(basepath))
    if run_all:
        os.environ.pop("IN_TEST", None)
        skip_flags = []
    else:
        os.environ["IN_TEST"] = "1"
    sources = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]  # directives included
    nb = NBProcessor(path, procs=FrontmatterProc, process=True).nb
    if str2bool(getattr(nb, "frontmatter_", {}).get("skip_exec", False)) or nb_lang(nb) != "python":
        return True, 0.0, [], {}, 0.0
    flags, saved, problems, collected = set(skip_flags) - set(force_flags), {}, [], {}

    def before(cell) -> bool:
        if is_skipped(cell, flags):
            return True
        mode = mark_mode(getattr(cell, "directives_", {}) or {})
        if mode is not None and RUN_ALL in mode.split() and not run_all:
            return False  # compared only by --run-all; already marked
        if mode is not None or collect:
            saved[cell.idx_], cell.outputs = (reader_lines(cell.get("outputs", [])), mode), []
        return False

    def after(cell) -> None:
        if cell.idx_ not in saved:
            return
        (lines, mode), now = saved[cell.idx_], reader_lines(cell.outputs)
        if mode is None:
            collected[cell.idx_] = (lines, now, sources[cell.idx_])
        elif diff := first_difference(lines, now, mode):
            label = MARK + (f": {mode}" if mode else "")
            problems.append(
                f"{path.name} cell {cell.idx_} (#| {label}): saved output is not what it prints now, {diff}"
            )

    start, cpu, shell = time.time(), cpu_seconds(), CaptureShell(path)
    try:
        with working_directory(path.parent):
            shell.run_all(nb, exc_stop=True, preproc=before, postproc=after)
    except Exception:
        tb = shell.prettytb(fname=path) if shell.exc is not None else traceback.format_exc()
        problems.append(f"{path.name}: stopped by an error\n{tb}")
    return not problems, time.time() - start, problems, collected, cpu_seconds() - cpu


def cpu_seconds() -> float:
    "User and system CPU seconds of this process and of its children that have ended."
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


STALE = re.compile(r"^(?P<name>\S+\.ipynb) cell (?P<idx>\d+) \(#\| ")


def stale_cells(problems: list[str]) -> list[int]:
    "The cells of a notebook's `problems` whose marked output differs (an error stops the notebook: none counted)."
    if any(": stopped by an error" in p.split("\n")[0] for p in problems):
        return []
    return [int(m["idx"]) for p in problems if (m := STALE.match(p))]


def current_path(environ=None) -> str:
    "The name of the vector path this process runs under (`VECTOR_PATHS`), else its settings as `VAR=value` words."
    environ = os.environ if environ is None else environ
    now = {k: environ[k] for k in PATH_VARS if environ.get(k)}
    return next(
        (name for name, env in VECTOR_PATHS.items() if env == now), " ".join(f"{k}={v}" for k, v in now.items())
    )


def run_under(
    path_name: str, files: list[Path], flags: str, n_workers: int | None, run_all: bool, collect: bool
) -> dict[str, dict]:
    """This check of `files` in a child process under the vector path `path_name`: per notebook (its absolute path),
    {'error': it stopped, 'stale': marked cells that differ, 'now': with `collect`, each unmarked cell's text lines}."""
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS} | VECTOR_PATHS[path_name]
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--no-vector-paths", "--json", str(out), "--flags", flags]
        cmd += [a for f in files for a in ("--path", str(f))]
        cmd += (["--n_workers", str(n_workers)] if n_workers is not None else []) + ["--run-all"] * run_all
        cmd += ["--collect"] * collect
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if not out.exists():
            print(f"could not run the notebooks under {path_name} (exit {p.returncode}): {p.stderr[-500:]}")
            return {}
        return json.loads(out.read_text())


def reproduced_under(
    files: list[Path], results: list[tuple], flags: str, n_workers: int | None, run_all: bool
) -> dict[tuple[str, int], str]:
    """(notebook name, cell) -> the first other vector path under which a marked cell that differs here prints its
    saved text: the saved output came from another vector path, the cell is not stale."""
    stale = {f: cells for f, r in zip(files, results) if (cells := stale_cells(r[2]))}
    found: dict[tuple[str, int], str] = {}
    for name in VECTOR_PATHS:
        todo = [f for f, cells in stale.items() if any((f.name, i) not in found for i in cells)]
        if name == current_path() or not todo:
            continue
        print(f"re-running {', '.join(f.name for f in todo)} under {name}: does it print the saved outputs?")
        got = run_under(name, todo, flags, n_workers, run_all, collect=False)
        for f in todo:
            r = got.get(str(f))
            if r and not r["error"]:
                found |= {(f.name, i): name for i in stale[f] if i not in r["stale"] and (f.name, i) not in found}
    return found


def name_vector_paths(problems: list[str], found: dict[tuple[str, int], str]) -> list[str]:
    "`problems` with each marked cell that another vector path reproduces named so instead of as stale."
    out = []
    for p in problems:
        m = STALE.match(p)
        if m and (path := found.get((m["name"], int(m["idx"])))):
            p = p.replace(
                "saved output is not what it prints now",
                f"this output depends on the CPU's vector path (reproduced under {path}); it is not stale: check what "
                "it means (a bound, beating the floors) instead of its digits. Here",
                1,
            )
        out.append(p)
    return out


def proposed_marks(
    collected: dict[int, tuple], run_all: bool = False, others: tuple[dict[int, list[str]], ...] = ()
) -> tuple[dict[int, str], list[int]]:
    """The mark for each collected cell with saved text that matches ('' exact, else 'numbers'; with `run_all` those
    prefixed 'run_all') here and in each of `others` (a cell's text lines under another vector path); the cells that
    differ."""
    marks, differ = {}, []
    for i, (saved, now, _) in sorted(collected.items()):
        if not saved:
            continue
        modes = MODES[2:] if run_all else MODES[:2]
        runs = [now, *(o.get(i) for o in others)]
        mode = next(
            (m for m in modes if all(r is not None and first_difference(saved, r, m) is None for r in runs)), None
        )
        if mode is None:
            differ.append(i)
        else:
            marks[i] = mode
    return marks, differ


DIRECTIVE = re.compile(r"\s*#\|")


def add_marks(path: Path, marks: dict[int, str], ran_sources: dict[int, str]) -> int:
    """Write `marks` into `path`'s cells (after their leading directives), skipping a cell whose source changed since
    it ran or that opens with a cell magic; how many were written."""
    nb, done = json.loads(path.read_text()), 0
    for i, mode in marks.items():
        cell = nb["cells"][i]
        source = "".join(cell["source"])
        if source != ran_sources.get(i) or source.startswith("%%"):
            continue
        lines = source.splitlines(keepends=True)
        at = next((k for k, line in enumerate(lines) if not DIRECTIVE.match(line)), len(lines))
        lines.insert(at, f"#| {MARK}" + (f": {mode}" if mode else "") + "\n")
        cell["source"], done = lines, done + 1
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return done


def has_text_output(cell: dict) -> bool:
    "A code cell whose saved outputs hold text a reader sees (what the check compares)."
    return cell["cell_type"] == "code" and bool(reader_lines(cell.get("outputs", [])))


def is_marked(cell: dict) -> bool:
    return bool(re.search(rf"^\s*#\|\s*{MARK}\b", "".join(cell["source"]), re.M))


def is_marked_run_all(cell: dict) -> bool:
    return bool(re.search(rf"^\s*#\|\s*{MARK}:?\s+{RUN_ALL}\b", "".join(cell["source"]), re.M))


def coverage(files: list[Path]) -> dict[str, tuple[int, int, int]]:
    "Per notebook: (code cells with text output, those marked for the output check, those of them marked run_all)."
    out = {}
    for f in files:
        cells = [c for c in json.loads(f.read_text())["cells"] if has_text_output(c)]
        out[f.stem] = (len(cells), sum(map(is_marked, cells)), sum(map(is_marked_run_all, cells)))
    return out


def notebooks(path: str | None) -> list[Path]:
    "The notebooks nbdev_test would test under `path` (default: settings.ini's nbs_path), sorted, absolute."
    from nbdev.doclinks import nbglob

    return [f.absolute() for f in sorted(nbglob(path, as_path=True)) if not (f.parent / ".notest").exists()]


# Seconds of the slowest notebooks under IN_TEST (`make test`'s --timing on a heavily loaded 2-core machine): started
# first, so that a long one does not start last while the other worker has nothing left; the rest in name order.
SLOWEST = {
    "98b_study_runner": 536,
    "98g_demo": 421,
    "13a_learning": 340,
    "12a_entity_pretraining": 194,
    "09_magnet": 162,
    "18_refcoco_gpu": 160,
    "13_evaluation": 131,
    "19_course": 101,
    "14_visualize": 99,
    "11_sag": 97,
    "91a_check_data": 80,
    "98c_student_sandbox": 67,
    "12_training": 61,
    "95_sag_diagnosis": 59,
    "15_cli": 55,
    "02a_first_model": 54,
    "93_distributed": 54,
    "17_demo": 51,
    "10_entity_slots": 49,
    "07_mask_grounding": 43,
}


def check_all(
    files: list[Path], force_flags: list[str], n_workers: int | None, collect: bool = False, run_all: bool = False
) -> list[tuple]:
    """`check_notebook` over `files` in parallel (the slowest first), from the notebooks' folder, as nbdev_test runs
    them; the results in the order of `files`."""
    from fastcore.foundation import working_directory
    from fastcore.parallel import parallel
    from nbdev.config import get_config

    cfg = get_config()
    if n_workers is None:
        n_workers = 0 if len(files) == 1 else min(os.cpu_count() or 1, 8)
    order = sorted(range(len(files)), key=lambda i: -SLOWEST.get(files[i].stem, 0))  # stable: then by name
    with working_directory(cfg.nbs_path if cfg.nbs_path.exists() else Path.cwd()):
        results = list(
            parallel(
                check_notebook,
                [files[i] for i in order],
                skip_flags=cfg.tst_flags.split(),
                force_flags=force_flags,
                basepath=cfg.config_path,
                collect=collect,
                run_all=run_all,
                n_workers=n_workers,
                pause=0.01,
            )
        )
    return [results[order.index(i)] for i in range(len(files))]


def report_coverage(files: list[Path]) -> None:
    "Print the marked share of code cells with text output: each notebook, the course (00–89) and all."
    cov = coverage(files)
    for name, (n, marked, run_all) in cov.items():
        print(f"{name}: {marked} of {n} marked ({run_all} {RUN_ALL})")
    for what, names in (("course (00-89)", [k for k in cov if re.match(r"[0-8]\d", k)]), ("all", list(cov))):
        n, marked, run_all = (sum(cov[k][j] for k in names) for j in range(3))
        share = lambda k: f"{k} ({100 * k / max(n, 1):.1f} %)"  # noqa: E731
        print(
            f"{what}: {n} code cells with text output, {share(marked)} marked; without the {RUN_ALL} ones "
            f"(compared by make test): {share(marked - run_all)}"
        )


def mark(files: list[Path], results: list[tuple], run_all: bool, elsewhere: dict[str, dict] | None = None) -> None:
    """Write the proposed marks into each notebook that ran without a problem; print what was marked and what differs.
    `elsewhere`: path name -> `run_under`'s result under that vector path; a cell is marked only if all print it
    alike."""
    elsewhere = elsewhere or {}
    for f, (ok, _, problems, collected, _) in zip(files, results):
        runs = {name: got.get(str(f)) for name, got in elsewhere.items()}
        failed = [name for name, r in runs.items() if not r or r["error"] or r["stale"]]
        if not ok or failed:
            why = f"{len(problems)} problem(s) above" if not ok else f"it fails under {', '.join(failed)}"
            print(f"{f.name}: not marked ({why})")
            continue
        others = tuple({int(i): lines for i, lines in r["now"].items()} for r in runs.values())
        marks, differ = proposed_marks(collected, run_all, others)
        here = proposed_marks(collected, run_all)[0]
        vector = [i for i in differ if i in here]
        written = add_marks(f, marks, {i: c[2] for i, c in collected.items()}) if marks else 0
        exact = sum(1 for m in marks.values() if NUMBERS not in m)
        print(
            f"{f.name}: marked {written}{' run_all' if run_all else ''} ({exact} exact, {len(marks) - exact} numbers); "
            f"{len(differ)} differ from their saved output (IN_TEST or the CPU): cells {differ}"
        )
        for i in differ:
            saved, now, _ = collected[i]
            if i in vector:  # as saved here; not so under another path
                path, lines = next(
                    (n, o.get(i, [])) for n, o in zip(runs, others) if first_difference(saved, o.get(i, []), here[i])
                )
                print(f"  cell {i}: depends on the CPU's vector path: under {path} {first_difference(saved, lines)}")
            else:
                print(f"  cell {i}: {first_difference(saved, now, NUMBERS)}")


# a number with a fraction or an exponent (50.4, 3.2e-05): what training or a float sum prints, so what a vector path
# can move; a count, a size or a name cannot
FRACTIONAL = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+(?:[eE][-+]?\d+)?|[eE][-+]?\d+)")


# Left out of `--fractional`: notebooks whose marked fractions no vector path can move, each with what they are. `make
# mark-outputs` marked them only after they printed the same under both emulated paths; nothing in them computes those
# numbers with a float kernel, so re-running them per path checks nothing the native run did not.
SAME_ON_EVERY_PATH = {
    "18_refcoco_gpu.ipynb": "recipe values, FLOP and parameter counts from tensor shapes, committed GPU rows",
    "95g_sag_studies.ipynb": "committed study results and parameter counts",
}


def prints_fractions(path: Path) -> bool:
    "Whether a cell of `path` marked for `make test`'s check holds a fractional number in its saved output."
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code" and is_marked(c)]
    return any(not is_marked_run_all(c) and FRACTIONAL.search("\n".join(reader_lines(c["outputs"]))) for c in cells)


def checked_here(path: Path, run_all: bool) -> bool:
    "Whether `path` holds a cell that this check compares (`run_all`: any marked cell; else a mark without run_all)."
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code" and is_marked(c)]
    return any(run_all or not is_marked_run_all(c) for c in cells)


def child_result(result: tuple) -> dict:
    "What `run_under`'s child reports of one notebook's result: stopped, the marked cells that differ, unmarked text."
    ok, _, problems, collected, _ = result
    error = not ok and not all(STALE.match(p) for p in problems)
    return {"error": error, "stale": stale_cells(problems), "now": {i: c[1] for i, c in collected.items()}}


def main(argv: list[str] | None = None) -> int:
    "Check the notebooks like `nbdev_test`; print every problem; 1 when there is one."
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--path", action="append", help="a notebook or folder (default: settings.ini's nbs_path); may be repeated"
    )
    ap.add_argument("--flags", default="", help="space-separated tst_flags to run anyway, e.g. 'slow'")
    ap.add_argument("--n_workers", type=int, default=None, help="parallel notebooks (default: one per core, at most 8)")
    ap.add_argument(
        "--timing", action="store_true", help="print each notebook's seconds and CPU seconds, slowest first"
    )
    ap.add_argument("--mark", action="store_true", help="mark the unmarked cells whose output matches")
    ap.add_argument("--coverage", action="store_true", help="count the marked cells (runs nothing)")
    ap.add_argument("--run-all", action="store_true", help="run as Run All (no IN_TEST, flagged cells too)")
    ap.add_argument("--marked", action="store_true", help="only the notebooks with a cell marked for the check")
    ap.add_argument(
        "--fractional",
        action="store_true",
        help="only the notebooks with a marked cell that prints a fractional number (what a vector path can move)",
    )
    ap.add_argument(
        "--no-vector-paths",
        dest="vector_paths",
        action="store_false",
        help="never re-run under another vector path (VECTOR_PATHS) to name why a marked output differs",
    )
    ap.add_argument("--json", help=argparse.SUPPRESS)  # run_under's child: where to write its result
    ap.add_argument("--collect", action="store_true", help=argparse.SUPPRESS)  # run_under's child: unmarked cells too
    args = ap.parse_args(argv)
    check_environment()  # a misspelt vector path would run the native one and report its success
    missing = [p for p in args.path or [] if not Path(p).exists()]
    if missing:
        print(f"--path {missing[0]}: no such notebook or folder", file=sys.stderr)
        return 2
    files = [f for p in args.path or [None] for f in notebooks(p)]
    if args.path and not files:
        print(f"--path {' '.join(args.path)}: no notebook there that nbdev_test would test", file=sys.stderr)
        return 2
    if args.marked or args.fractional:
        files = [f for f in files if checked_here(f, args.run_all)]
    if args.fractional:
        files = [f for f in files if prints_fractions(f) and f.name not in SAME_ON_EVERY_PATH]
    if not files:  # a filter left none: said so, not as nbdev's "No files were eligible for testing"
        what = "a marked cell that prints a fractional number" if args.fractional else "a marked cell"
        print(f"no notebook with {what} under {' '.join(args.path or ['nbs'])}: nothing to check")
        return 0
    if args.coverage:
        return report_coverage(files) or 0
    start = time.time()
    collect = args.mark or args.collect
    results = check_all(files, args.flags.split(), args.n_workers, collect=collect, run_all=args.run_all)
    if args.json:
        Path(args.json).write_text(json.dumps({str(f): child_result(r) for f, r in zip(files, results)}))
    found = {}
    if args.vector_paths and not args.mark:
        found = reproduced_under(files, results, args.flags, args.n_workers, args.run_all)
    for _, _, problems, *_ in results:
        for p in name_vector_paths(problems, found):
            sys.stderr.write(p + "\n\n")
    if args.mark:
        elsewhere = {}
        if args.vector_paths:
            ran = [f for f, (ok, *_) in zip(files, results) if ok]
            for name in [n for n in VECTOR_PATHS if n != current_path()] if ran else []:
                print(f"running {len(ran)} notebook(s) under {name}: a cell is marked only if it prints alike there")
                elsewhere[name] = run_under(name, ran, args.flags, args.n_workers, args.run_all, collect=True)
        mark(files, results, args.run_all, elsewhere)
    failed = [f.name for f, (ok, *_) in zip(files, results) if not ok]
    # a notebook fails on its vector path alone when each of its problems is a marked cell another path reproduces
    vector = [
        f.name
        for f, (ok, _, problems, *_) in zip(files, results)
        if not ok and all((m := STALE.match(p)) and (f.name, int(m["idx"])) in found for p in problems)
    ]
    stale = [name for name in failed if name not in vector]
    if not failed:
        print("Success.")
    if stale:
        print("Notebooks failing (an error or a stale marked output): " + ", ".join(stale))
    if vector:
        print(
            f"Notebooks failing (a marked output that depends on the CPU's vector path, {current_path()} here): "
            + ", ".join(vector)
        )
    if args.timing:
        for f, (_, secs, *_, cpu) in sorted(zip(files, results), key=lambda r: r[1][1], reverse=True):
            print(f"{f.name}: {int(secs)} secs ({cpu:.0f} CPU s)")
        print(f"{len(files)} notebooks in {time.time() - start:.0f} s: {sum(r[4] for r in results):.0f} CPU s")
    return 1 if failed else 0


if __name__ == "__main__":
    import check_notebooks  # workers unpickle `check_notebook` by module name: IPython's shell replaces their __main__

    sys.exit(check_notebooks.main())
