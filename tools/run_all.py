"""Re-execute notebooks as a student's *Run All* does and save what they print: `python tools/run_all.py` (default:
every notebook in nbs/), or `python tools/run_all.py nbs/06_lavt.ipynb ...`.

Each notebook runs in a fresh kernel, in nbs/, every code cell in order (Jupyter's Run All ignores nbdev's `#| slow`
and `#| eval: false`), without `IN_TEST`, `OMP_NUM_THREADS` or `MPLBACKEND` (every core, figures drawn inline). Just
before it, the 512³ float32 matmul probe is measured on one and on two threads, each in a fresh process. When the run
ends without an error, the outputs are written into the notebook (sanitised as `tools/rerun_notebook.py` does: no temp
folder, progress bar or widget state), the first cell's `**Run All:** about N min …` statement is rewritten from this
run (course notebooks, and any notebook that already states one), and `nbdev_clean --fname` cleans the file. A
notebook that stops on an error keeps its file as it was.

Every run, failed or not, replaces the notebook's row in `nbs/results/run_manifest.csv`: notebook, commit (HEAD at the
run; `+dirty` when run with `--allow-dirty`), date (UTC), seconds (wall, whole Run All), error (the first one, or
empty), probe_1t_ms, probe_2t_ms, jobs (notebooks run at once), sources_sha256 (`sources_hash`: the cells' types and
sources once the statement is written; outputs, metadata and `#| check_output` marks are left out, so saving outputs
or marking a cell for the output check keeps the hash), library_sha256 (`library_hash`: the `ris_nb` modules the
notebook's code imports, directly or through each other). `tests/test_manifest.py` fails when a notebook's sources or
the modules it imports no longer hash to its row. `--table` prints, running nothing, a markdown table of the course:
code cells, figures, exported cells, summary, stated and measured Run All, probe.

The tool refuses a notebook with uncommitted changes, or a run while `ris_nb/`, settings.ini or setup.py differ from
HEAD (the record names a commit: the run must be that commit's); `--allow-dirty` runs anyway and records `+dirty`.
`--jobs 2` runs two notebooks at once (longest recorded first): faster, but the notebooks share the cores, so each
one's seconds and probe come out larger than alone, and its statement says it was measured beside another
and each kernel gets its share of the cores as threads.

The release run, after the last content change, on one idle machine: commit everything; `make run-all` (this tool on
every notebook); commit the notebooks and the manifest; `make mark-outputs` (tools/check_notebooks.py --mark: marks
for the output check every cell that prints under IN_TEST what Run All saved) and, time allowing, `make
mark-outputs-run-all` (the cells whose output depends on IN_TEST); `make output-coverage`; commit the marks.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rerun_notebook import sanitise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
MANIFEST = NBS / "results" / "run_manifest.csv"
FIELDS = [
    "notebook",
    "commit",
    "date",
    "seconds",
    "error",
    "probe_1t_ms",
    "probe_2t_ms",
    "jobs",
    "sources_sha256",
    "library_sha256",
]
LIBRARY = ["ris_nb", "settings.ini", "setup.py"]  # what a notebook imports: it must be the recorded commit's
KERNEL_ENV_DROP = ("IN_TEST", "OMP_NUM_THREADS", "MPLBACKEND")  # a student's kernel has none of them
STATEMENT = re.compile(r"\n*\*\*Run All:\*\*[^\n]*")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # a traceback's colours
CHECK_MARK = re.compile(r"^#\|\s*check_output\b[^\n]*\n?", re.M)  # tools/check_notebooks.py's mark


def course_notebooks() -> list[Path]:
    "The course path: notebooks numbered 00–89."
    return sorted(NBS.glob("[0-8][0-9]*.ipynb"))


def sources_hash(path: Path) -> str:
    "SHA-256 (first 16 hex digits) of `path`'s cell types and sources, `#| check_output` marks left out."
    cells = json.loads(path.read_text())["cells"]
    parts = [[c["cell_type"], CHECK_MARK.sub("", "".join(c["source"]))] for c in cells]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:16]


MODULE_NAME = re.compile(r"\bris_nb(?:\.\w+)+")  # `ris_nb.models.magnet`, in an import or a lazy registry's table
IMPORTED = r"import[ \t]+(\([^)]*\)|[\w \t,]+)"  # the names after `import`, parenthesised over lines or on one line
FROM_PACKAGE = re.compile(r"^[ \t]*from[ \t]+ris_nb[ \t]+" + IMPORTED, re.M)


def module_file(name: str) -> Path | None:
    "The file of the deepest module of a dotted `ris_nb.…` name (`ris_nb.models.magnet.MagNet` → its magnet.py)."
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        for f in (base.with_suffix(".py"), base / "__init__.py"):
            if f.is_file():
                return f
    return None


def named_modules(text: str, package: str = "ris_nb") -> set[Path]:
    "Files of the `ris_nb` modules `text` names (imports, strings), and its relative imports from inside `package`."
    names = set(MODULE_NAME.findall(text))
    names |= {
        f"ris_nb.{n.split()[0]}" for m in FROM_PACKAGE.findall(text) for n in m.strip("()").split(",") if n.strip()
    }
    for dots, rest, what in re.findall(r"^[ \t]*from[ \t]+(\.+)([\w.]*)[ \t]+" + IMPORTED, text, re.M):
        base = ".".join(package.split(".")[: len(package.split(".")) - len(dots) + 1] + ([rest] if rest else []))
        names |= {base} | {f"{base}.{n.split()[0]}" for n in what.strip("()").split(",") if n.strip()}
    return {f for n in names if (f := module_file(n)) is not None}


def library_hash(path: Path) -> str:
    """SHA-256 (first 16 hex digits) of the `ris_nb` modules `path`'s code imports, directly or through each other (a
    library change makes the notebook's saved outputs stale)."""
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    todo, seen = named_modules(code) | {ROOT / "ris_nb" / "__init__.py"}, set()
    while todo:
        f = todo.pop()
        seen.add(f)
        rel = f.relative_to(ROOT).with_suffix("")
        package = ".".join(rel.parts[:-1])  # what `from .` means in this file
        todo |= named_modules(f.read_text(), package) - seen
    h = hashlib.sha256()
    for f in sorted(seen):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def probe(threads: int) -> float:
    "The 512³ float32 matmul probe (ms, fastest of 5) on `threads` threads, in a fresh process."
    code = f"from ris_nb.machine import probe_ms; print(probe_ms(threads={threads}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return round(float(out.stdout.strip().splitlines()[-1]), 2)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def dirty(paths: list[str]) -> list[str]:
    "Those of `paths` (files or folders) with tracked changes against HEAD."
    out = git("status", "--porcelain", "--untracked-files=no", "--", *paths)
    return [line[3:] for line in out.splitlines()]


def execute(path: Path, timeout: int, jobs: int = 1) -> tuple[dict, float, str]:
    """Run All of `path` in a fresh kernel in its folder: (the executed notebook as a dict, wall seconds, first error).
    With `jobs` notebooks at once each kernel gets its share of the cores as threads (more would oversubscribe them)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV_DROP}
    if jobs > 1:
        env["OMP_NUM_THREADS"] = str(kernel_threads(jobs))
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": path.parent}}, coalesce_streams=True
    )
    t0, error = time.perf_counter(), ""
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        error = ANSI.sub("", str(e)).strip().splitlines()[-1][:200]
    except Exception as e:  # a cell over --timeout, a dead kernel: this notebook fails, the others still run
        error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return json.loads(nbformat.writes(nb)), time.perf_counter() - t0, error


def kernel_threads(jobs: int) -> int:
    "Threads per kernel when `jobs` notebooks run at once: the cores shared out."
    return max(1, (os.cpu_count() or 1) // jobs)


def statement(row: dict) -> str:
    "The first cell's sentence for a manifest row."
    seconds = float(row["seconds"])
    jobs = int(row["jobs"])
    threads = kernel_threads(jobs)
    beside = f", {threads} thread{'s' * (threads > 1)} beside another notebook" if jobs > 1 else ""
    return (
        f"**Run All:** about {max(1, math.ceil(seconds / 60))} min on a laptop CPU ({seconds:.0f} s on "
        f"{os.cpu_count()} cores{beside}; 512³ matmul {row['probe_1t_ms']} ms on 1 thread); needs no other notebook."
    )


def save(path: Path, done: dict, row: dict) -> None:
    "Write the executed outputs (sanitised) and the row's statement into `path`; clean it with nbdev_clean."
    saved = json.loads(path.read_text())
    done = sanitise(done)
    for cell, ran in zip(saved["cells"], done["cells"]):
        if cell["cell_type"] == "code":
            cell["outputs"] = ran["outputs"]
    first = "".join(saved["cells"][0]["source"])
    if path in course_notebooks() or STATEMENT.search(first):
        text = STATEMENT.sub("", first).rstrip("\n") + "\n\n" + statement(row)
        saved["cells"][0]["source"] = text.splitlines(keepends=True)
    path.write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n")
    subprocess.run([str(Path(sys.executable).parent / "nbdev_clean"), "--fname", str(path)], check=True, cwd=ROOT)


def read_manifest() -> dict[str, dict]:
    if not MANIFEST.exists():
        return {}
    with MANIFEST.open() as f:
        return {r["notebook"]: r for r in csv.DictReader(f)}


def write_manifest(rows: dict[str, dict]) -> None:
    "Write the manifest, sorted by notebook, through a temporary file."
    tmp = MANIFEST.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, restval="")
        w.writeheader()
        w.writerows(rows[k] for k in sorted(rows))
    tmp.replace(MANIFEST)


def run_one(path: Path, commit: str, jobs: int, timeout: int) -> dict:
    "Probe, Run All and (without an error) save `path`; its manifest row."
    before = sources_hash(path)
    p1, p2 = probe(1), probe(2)
    done, seconds, error = execute(path, timeout, jobs)
    if not error and sources_hash(path) != before:
        error = "the notebook's sources changed on disk during the run: outputs not saved"
    row = {
        "notebook": path.stem,
        "commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
        "seconds": round(seconds, 1),
        "error": error,
        "probe_1t_ms": p1,
        "probe_2t_ms": p2,
        "jobs": jobs,
        "sources_sha256": "",
        "library_sha256": library_hash(path),
    }
    if not error:
        save(path, done, row)
    row["sources_sha256"] = sources_hash(path)
    return row


def table(rows: dict[str, dict]) -> str:
    "Markdown: each course notebook's code cells, figures, exported cells, summary, stated and measured Run All, probe."
    out = [
        "| notebook | code cells | figures | exported | summary | stated | measured | probe 1t / 2t ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in course_notebooks():
        cells, row = json.loads(path.read_text())["cells"], rows.get(path.stem, {})
        code = [c for c in cells if c["cell_type"] == "code"]
        figures = sum(any("image/png" in o.get("data", {}) for o in c.get("outputs", [])) for c in code)
        exported = sum(bool(re.match(r"\s*#\|\s*export", "".join(c["source"]))) for c in code)
        summary = any(
            c["cell_type"] == "markdown" and re.search(r"^##\s+Summary", "".join(c["source"]), re.M) for c in cells
        )
        stated = re.search(r"\*\*Run All:\*\* about (\d+) min", "".join(cells[0]["source"]))
        measured = f"{float(row['seconds']):.0f} s" if row.get("seconds") else "–"
        probes = f"{row['probe_1t_ms']} / {row['probe_2t_ms']}" if row else "–"
        out.append(
            f"| {path.stem} | {len(code)} | {figures} | {exported} | {'yes' if summary else 'no'} | "
            f"{stated.group(1) + ' min' if stated else '–'} | {measured} | {probes} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in nbs/")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks at once (more inflates each one's seconds)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument("--allow-dirty", action="store_true", help="run uncommitted notebooks; the commit gets '+dirty'")
    ap.add_argument(
        "--table", action="store_true", help="only print the course's table from the notebooks and manifest"
    )
    args = ap.parse_args(argv)
    if args.table:
        return print(table(read_manifest())) or 0
    paths = [p.resolve() for p in args.notebooks] or sorted(NBS.glob("*.ipynb"))
    if missing := [str(p) for p in paths if not p.exists() or p.suffix != ".ipynb"]:
        ap.error(f"no such notebook: {', '.join(missing)}")
    changed = dirty([*LIBRARY, *(str(p.relative_to(ROOT)) for p in paths)])
    if changed and not args.allow_dirty:
        ap.error(f"uncommitted changes in {', '.join(changed)}: commit them first (or --allow-dirty)")
    commit = git("rev-parse", "--short=12", "HEAD").strip() + ("+dirty" if changed else "")
    rows = read_manifest()
    paths.sort(key=lambda p: -float(rows.get(p.stem, {}).get("seconds") or 0) if args.jobs > 1 else 0)
    others_before = set(dirty(["."]))
    failed = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, p, commit, args.jobs, args.timeout) for p in paths]
        for fut in futures:
            row = fut.result()
            rows[row["notebook"]] = row
            write_manifest(rows)
            failed += [row["notebook"]] * bool(row["error"])
            err = f"  ERROR {row['error']}" if row["error"] else ""
            print(
                f"{row['notebook']}: {row['seconds']:.0f} s (probe {row['probe_1t_ms']} / {row['probe_2t_ms']} ms){err}"
            )
    ran = {str(p.relative_to(ROOT)) for p in paths}
    if extra := sorted(set(dirty(["."])) - others_before - ran - {str(MANIFEST.relative_to(ROOT))}):
        print(f"tracked files the notebooks changed (a notebook must not): {', '.join(extra)}")
    if failed:
        print(f"stopped by an error (outputs not saved): {', '.join(failed)}")
    return 1 if failed or extra else 0


if __name__ == "__main__":
    sys.exit(main())
