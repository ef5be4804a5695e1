"""Grading that no student's folder can stop or fool: links, FIFOs, deep trees, big notebooks and forking students are
refused or contained one student at a time, and nothing a student started outlives grading (issue 70)."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import ris_nb.grading as grading
from ris_nb.grading import grade_notebooks, write_grades_csv
from ris_nb.sandbox import StudentBudget, clean_stale

from test_grading import RIGHT, TEACHER, outcome, student, write

LINUX = sys.platform.startswith("linux")


def unique_tag() -> str:
    """A `sleep` argument no other process holds: drawn from os.urandom, since tests that seed the library put `random`
    in the same state on every worker (two workers could draw one tag and see each other's student)."""
    return f"3000.{int.from_bytes(os.urandom(6), 'big'):015d}"


def alive(tag: str) -> list[int]:
    "Processes whose command line holds `tag`."
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            if tag.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                out.append(int(d))
        except OSError:
            pass
    return out


def stat_of(pid: int) -> str:
    "The start of /proc/pid/stat (its state and parent), for a failure message."
    try:
        return Path(f"/proc/{pid}/stat").read_text(errors="replace")[:80]
    except OSError:
        return f"{pid} (gone)"


def forks(tag: str, then: str = "") -> dict:
    "A right student whose first cell leaves a `setsid` grandchild (`sleep <tag>`) behind, then runs `then`."
    spawn = f"import subprocess\nsubprocess.Popen(['setsid', 'sleep', '{tag}'])\n{then}\n"
    return student({**RIGHT, "sol-double": spawn + RIGHT["sol-double"]})


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    "One grading of the hostile folders beside an honest student: each refused or contained, the honest one graded."
    tmp = tmp_path_factory.mktemp("batch")
    teacher = write(tmp / "teacher", TEACHER)
    (tmp / "link").mkdir()
    (tmp / "link" / "lesson_a.ipynb").symlink_to(teacher)
    os.mkfifo(tmp / "fifo.ipynb")
    (tmp / "zero").mkdir()
    (tmp / "zero" / "lesson_a.ipynb").symlink_to("/dev/zero")
    big = tmp / "big" / "lesson_a.ipynb"
    big.parent.mkdir()
    big.write_bytes(b" " * (2 << 20))
    old = tmp / "v3" / "lesson_a.ipynb"
    old.parent.mkdir()
    old.write_text(json.dumps({"nbformat": 3, "worksheets": [{"cells": []}], "metadata": {}}))
    messy = write(tmp / "messy", student(RIGHT))
    os.mkfifo(messy.parent / "pipe")
    socket.socket(socket.AF_UNIX).bind(str(messy.parent / "sock"))
    deep = messy.parent
    for _ in range(40):
        deep = deep / "d"
    deep.mkdir(parents=True)
    tag = unique_tag()
    forking = write(tmp / "forking", forks(tag))
    right = write(tmp / "right", student(RIGHT))
    students = [tmp / "link" / "lesson_a.ipynb", tmp / "fifo.ipynb", tmp / "zero" / "lesson_a.ipynb", big, old]
    t0 = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:  # other work may rebuild ris_nb meanwhile: not what this grading tests
        mp.setattr(grading, "_package_digest", lambda: "")
        graded = grade_notebooks(
            teacher, [*students, messy, forking, right], timeout=60, budget=StudentBudget(notebook=1 << 20)
        )
    return dict(graded=graded, tag=tag, seconds=time.monotonic() - t0, csv=write_grades_csv(tmp / "g.csv", graded))


@pytest.mark.parametrize(
    "k, why",
    [
        (0, "is a symbolic link (to "),  # the teacher's notebook behind a link: never graded
        (1, "fifo.ipynb is a FIFO; expected a notebook file"),  # read, it would block forever
        (2, "is a symbolic link (to /dev/zero)"),  # read, it would fill memory
        (3, "holds over 1 MiB; expected a notebook under that"),
        (4, "is an nbformat 3 notebook; expected nbformat 4: convert it with `jupyter nbconvert"),
    ],
)
def test_a_notebook_that_is_no_file_of_the_students_is_refused_by_name(batch, k, why):
    g = batch["graded"][k]
    assert why in g.refused and not g.results, g


def test_special_files_and_deep_trees_are_skipped_and_the_student_graded(batch):
    g = batch["graded"][5]
    assert not g.refused and all(r.passed for r in g.results), g
    note = g.note()
    assert "pipe: a FIFO" in note and "sock: a socket" in note and "more than 32 folder levels" in note, note
    rows = [r for r in batch["csv"].read_text().splitlines() if "messy" in r]
    assert len(rows) == 2 and all("a FIFO" in r for r in rows), rows


def test_the_others_are_graded(batch):
    assert all(r.passed for r in batch["graded"][-1].results) and not batch["graded"][-1].refused


@pytest.mark.skipif(not LINUX, reason="/proc and PR_SET_CHILD_SUBREAPER are Linux's")
def test_a_setsid_grandchild_does_not_outlive_grading(batch):
    g = batch["graded"][6]
    assert all(r.passed for r in g.results), g  # it ran, so it forked
    assert alive(batch["tag"]) == [], "a student's setsid() grandchild still runs after grading"


def budget_probe(expr: str) -> dict:
    "A right student whose `double` is right only while `expr` holds in its process."
    return student({**RIGHT, "sol-double": f"import resource\n_ok = {expr}\ndef double(x): return 2 * x if _ok else x"})


@pytest.mark.skipif(not LINUX, reason="RLIMIT_AS is enforced on Linux")
def test_memory_and_file_size_are_bounded_by_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(grading, "_package_digest", lambda: "")
    teacher = write(tmp_path / "teacher", TEACHER)
    mem = 5 << 30
    limited = budget_probe(f"resource.getrlimit(resource.RLIMIT_AS)[0] == {mem}")
    writes = student(
        {
            **RIGHT,
            "sol-double": "try:\n    open('big', 'wb').write(bytes(2 << 20))\n    _ok = False\nexcept OSError as e:\n"
            "    _ok = e.errno == 27\ndef double(x): return 2 * x if _ok else x",
        }
    )
    g_mem, g_file = grade_notebooks(
        teacher,
        [write(tmp_path / "m", limited), write(tmp_path / "f", writes)],
        timeout=60,
        budget=StudentBudget(memory=mem, file_size=1 << 20),
    )
    assert outcome(g_mem)["chk-double"][0], g_mem  # its address space is the budget's
    assert outcome(g_file)["chk-double"][0], g_file  # a 2 MiB file is refused (EFBIG) under a 1 MiB budget


def grader(tmp: Path, teacher: Path, nb: Path, tmpdir: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ris_nb", "grade", str(teacher), str(nb), "--csv", str(tmp / "g.csv")]
    env = {**os.environ, "TMPDIR": str(tmpdir)} if tmpdir else None
    # SIGINT as a terminal's foreground job has it: a test run started in the background inherits it ignored, and a
    # grader rightly keeps ignoring it (as `nohup` asks)
    default_int = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, preexec_fn=default_int)


def wait_for(tag: str, p: subprocess.Popen, seconds: float = 240) -> None:
    t0 = time.monotonic()
    while not alive(tag):
        assert p.poll() is None and time.monotonic() - t0 < seconds, "the student never started"
        time.sleep(0.2)


def scratch_of(pid: int, tmpdir: Path | None = None) -> list[Path]:
    return [p for p in Path(tmpdir or tempfile.gettempdir()).glob(f"ris_nb_grade*_{pid}-*")]


@pytest.mark.skipif(not LINUX, reason="/proc and PR_SET_CHILD_SUBREAPER are Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_grader_leaves_no_student_process_and_no_folder(tmp_path, sig):
    tag = unique_tag()
    teacher = write(tmp_path / "teacher", TEACHER)
    p = grader(tmp_path, teacher, write(tmp_path / "s", forks(tag, "while True: pass")))
    wait_for(tag, p)
    p.send_signal(sig)
    try:
        p.wait(60)
    finally:  # a grader that did not stop must not outlive the test
        p.kill()
    left = [stat_of(q) for q in alive(tag)]
    assert left == [] and scratch_of(p.pid) == [], (left, scratch_of(p.pid), p.returncode, p.stderr.read()[-500:])


@pytest.mark.skipif(not LINUX, reason="/proc and PR_SET_PDEATHSIG are Linux's")
def test_a_grader_killed_hard_is_cleaned_up_at_the_next_start(tmp_path, monkeypatch):
    tag = unique_tag()
    teacher = write(tmp_path / "teacher", TEACHER)
    own_tmp = tmp_path / "tmp"  # graders of other test workers clean the shared temp folder when they start
    own_tmp.mkdir()
    p = grader(tmp_path, teacher, write(tmp_path / "s", forks(tag, "while True: pass")), own_tmp)
    wait_for(tag, p)
    t0 = time.monotonic()  # under load the student may be seen before its scratch folder is listed: wait for both
    while not scratch_of(p.pid, own_tmp) and p.poll() is None and time.monotonic() - t0 < 60:
        time.sleep(0.2)
    p.kill()
    p.wait(60)
    held = sorted(x.name for x in own_tmp.iterdir())
    assert scratch_of(p.pid, own_tmp), f"expected the killed grader's (pid {p.pid}) scratch folders; {own_tmp}: {held}"
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    cleaned = clean_stale()
    deadline = time.monotonic() + 30  # the killed processes leave the process table when the kernel reaps them
    while (alive(tag) or scratch_of(p.pid, own_tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive(tag) == [] and scratch_of(p.pid, own_tmp) == [], cleaned


def test_budget_flags_are_checked(tmp_path, capsys):
    from ris_nb.__main__ import main

    teacher = write(tmp_path / "teacher", TEACHER)
    assert main(["grade", str(teacher), str(teacher), "--memory-gib", "0"]) == 2
    assert "--memory-gib 0: expected a size > 0" in capsys.readouterr().err


def test_unreadable_file_is_skipped(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    from ris_nb.sandbox import scratch_copy

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "secret").write_text("x")
    (tmp_path / "src" / "secret").chmod(0)
    assert scratch_copy(tmp_path / "src", tmp_path / "dst") == [
        f"{tmp_path / 'src' / 'secret'}: unreadable (Permission denied)"
    ]


def test_a_student_filling_its_folder_is_stopped_at_the_disk_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(grading, "_package_digest", lambda: "")
    teacher = write(tmp_path / "teacher", TEACHER)
    fill = "import time\nfor i in range(100):\n    open(f'f{i}', 'wb').write(bytes(1 << 20))\ntime.sleep(60)\n"
    nb = write(tmp_path / "fill", student({**RIGHT, "sol-double": fill + RIGHT["sol-double"]}))
    (g,) = grade_notebooks(teacher, [nb], timeout=50, budget=StudentBudget(disk=20 << 20))
    assert "its folder holds over 20 MiB" in g.ended, g.ended  # not the 100 MiB it wrote, nor a time-out


def test_an_error_before_a_check_is_named_beside_its_consequence(tmp_path, monkeypatch):
    "A cell that raised (here MemoryError) before the check that then fails by NameError: the check's row names both."
    monkeypatch.setattr(grading, "_package_digest", lambda: "")
    teacher = write(tmp_path / "teacher", TEACHER)
    hidden = student({**RIGHT, "sol-double": "raise MemoryError('4 GiB')\ndef double(x): return 2 * x"})
    (g,) = grade_notebooks(teacher, [write(tmp_path / "s", hidden)], timeout=120)
    passed, msg = outcome(g)["chk-double"]
    assert not passed and "NameError" in msg and "raised MemoryError: 4 GiB" in msg, msg
    assert outcome(g)["chk-think"][0]  # a check whose cell ran fine is not blamed on it
