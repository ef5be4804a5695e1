"""`make test`'s notebook step: every notebook run once as `nbdev_test` runs it, and its marked outputs checked.

A code cell whose leading directives include `#| check_output` promises that its saved output is what the code prints
now. The notebooks run exactly as under `nbdev_test` (nbdev 2.4.14's `test_nb`: `IN_TEST=1`, settings.ini's
`tst_flags` skipped unless `--flags` names them, `#| eval: false` and `nbdev_export()` cells skipped, each notebook in
its folder, `--n_workers` at a time), and a marked cell whose text now differs from the saved one fails the run, named
with its first differing line. Compared: stdout, stderr less Python's warnings, and the text of results and displays
(markdown where there is some, else plain text). Not compared: images, widgets, blank lines. Masked on both sides:
times and rates (`12.3 s`, `31 CPU s`, `4 ms`, `250 images/s`, `0:01:02`), the temporary folder (`<tmp>`, as
`tools/rerun_notebook.py` writes it), memory addresses, progress-bar lines; every other number must match exactly.
Mark only cells whose output does not depend on `IN_TEST` or on the CPU (a trained model's loss and scores move in
their last digits between CPU models: 02a's TinyRefer scored 50.4 val oIoU on one, 50.7 on another); refresh a
stale one with `python tools/rerun_notebook.py nbs/X.ipynb --cells N,...` (and the cells it depends on).

    python tools/check_notebooks.py [--path nbs/00_core.ipynb] [--flags slow] [--n_workers 2] [--timing]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rerun_notebook import sanitise_text  # noqa: E402  (the temp-folder rule the saved outputs were written with)

MARK = "check_output"
MASKS = [
    (re.compile(r"\b\d+:\d\d(:\d\d)?(\.\d+)?\b"), "<clock>"),
    (re.compile(r"\d[\d,]*(\.\d+)?(e-?\d+)?\s?(\w+ ?)?/s\b"), "<rate>"),
    (
        re.compile(r"\d[\d,]*(\.\d+)?(e-?\d+)?\s?(CPU )?(ms|µs|us|ns|s|sec|secs|seconds|min|mins|minutes|h|hours)\b"),
        "<time>",
    ),
    (re.compile(r"\b0x[0-9a-fA-F]{6,}\b"), "0x<address>"),
]
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


def first_difference(saved: list[str], now: list[str]) -> str | None:
    "None when the two agree, else where they first differ, quoted."
    if saved == now:
        return None
    i = next((i for i, (a, b) in enumerate(zip(saved, now)) if a != b), min(len(saved), len(now)))
    show = lambda lines: repr(lines[i]) if i < len(lines) else "(no more lines)"  # noqa: E731
    return f"line {i + 1} of {len(saved)} saved / {len(now)} now\n      saved: {show(saved)}\n      now:   {show(now)}"


def is_skipped(cell, flags: set[str]) -> bool:
    "nbdev_test's rule: markdown, `nbdev_export()` calls, `#| eval: false` and cells with a skipped flag do not run."
    if cell.cell_type != "code" or "nbdev_export" + "(" in cell.source:
        return True
    direc = getattr(cell, "directives_", {}) or {}
    return direc.get("eval:", [""])[0].lower() == "false" or bool(flags & direc.keys())


def check_notebook(
    path: Path,
    skip_flags: list[str],
    force_flags: list[str],
    basepath: Path | None = None,
) -> tuple[bool, float, list[str]]:
    "Run `path` as nbdev_test does: (no error and every marked output as saved, seconds, one message per problem)."
    from execnb.shell import CaptureShell
    from fastcore.basics import str2bool
    from fastcore.foundation import working_directory
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor, nb_lang

    if basepath:
        sys.path.insert(0, str(basepath))
    os.environ["IN_TEST"] = "1"
    nb = NBProcessor(path, procs=FrontmatterProc, process=True).nb
    if str2bool(getattr(nb, "frontmatter_", {}).get("skip_exec", False)) or nb_lang(nb) != "python":
        return True, 0.0, []
    flags, saved, problems = set(skip_flags) - set(force_flags), {}, []

    def before(cell) -> bool:
        if is_skipped(cell, flags):
            return True
        if MARK in (getattr(cell, "directives_", {}) or {}):
            saved[cell.idx_], cell.outputs = reader_lines(cell.get("outputs", [])), []
        return False

    def after(cell) -> None:
        if cell.idx_ in saved and (diff := first_difference(saved[cell.idx_], reader_lines(cell.outputs))):
            problems.append(f"{path.name} cell {cell.idx_} (#| {MARK}): saved output is not what it prints now, {diff}")

    start, shell = time.time(), CaptureShell(path)
    try:
        with working_directory(path.parent):
            shell.run_all(nb, exc_stop=True, preproc=before, postproc=after)
    except Exception:
        tb = shell.prettytb(fname=path) if shell.exc is not None else traceback.format_exc()
        problems.append(f"{path.name}: stopped by an error\n{tb}")
    return not problems, time.time() - start, problems


def notebooks(path: str | None) -> list[Path]:
    "The notebooks nbdev_test would test under `path` (default: settings.ini's nbs_path), sorted, absolute."
    from nbdev.doclinks import nbglob

    return [f.absolute() for f in sorted(nbglob(path, as_path=True)) if not (f.parent / ".notest").exists()]


def check_all(files: list[Path], force_flags: list[str], n_workers: int | None) -> list[tuple[bool, float, list[str]]]:
    "`check_notebook` over `files` in parallel, from the notebooks' folder, as nbdev_test runs them."
    from fastcore.foundation import working_directory
    from fastcore.parallel import parallel
    from nbdev.config import get_config

    cfg = get_config()
    if n_workers is None:
        n_workers = 0 if len(files) == 1 else min(os.cpu_count() or 1, 8)
    with working_directory(cfg.nbs_path if cfg.nbs_path.exists() else Path.cwd()):
        return list(
            parallel(
                check_notebook,
                files,
                skip_flags=cfg.tst_flags.split(),
                force_flags=force_flags,
                basepath=cfg.config_path,
                n_workers=n_workers,
                pause=0.01,
            )
        )


def main(argv: list[str] | None = None) -> int:
    "Check the notebooks like `nbdev_test`; print every problem; 1 when there is one."
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", help="a notebook or folder (default: settings.ini's nbs_path)")
    ap.add_argument("--flags", default="", help="space-separated tst_flags to run anyway, e.g. 'slow'")
    ap.add_argument("--n_workers", type=int, default=None, help="parallel notebooks (default: one per core, at most 8)")
    ap.add_argument("--timing", action="store_true", help="print each notebook's seconds, slowest first")
    args = ap.parse_args(argv)
    files = notebooks(args.path)
    if not files:
        print("No files were eligible for testing")
        return 0
    results = check_all(files, args.flags.split(), args.n_workers)
    for _, _, problems in results:
        for p in problems:
            sys.stderr.write(p + "\n\n")
    failed = [f.name for f, (ok, _, _) in zip(files, results) if not ok]
    print("Success." if not failed else "Notebooks failing (an error or a stale marked output): " + ", ".join(failed))
    if args.timing:
        for f, (_, secs, _) in sorted(zip(files, results), key=lambda r: r[1][1], reverse=True):
            print(f"{f.name}: {int(secs)} secs")
    return 1 if failed else 0


if __name__ == "__main__":
    import check_notebooks  # workers unpickle `check_notebook` by module name: IPython's shell replaces their __main__

    sys.exit(check_notebooks.main())
