"""Train `sag_tiny` with 11_sag's own cells and ship it (`ris_nb/assets/checkpoints/sag_tiny.pt`, read there and by
`ris_nb.shipped.load_shipped`, appendix 97a): the notebook's data cell (3,000 appearance-language scenes, seed 0, 64
px) and its bare training loop with `FULL_RUN = True` (1,000 steps of 32, one thread), run here as
`nbs/11_sag.ipynb` holds them; the trained model is written as a run folder (best.pt + tokenizer) and handed to
`tools/ship_checkpoint.py`.

python tools/ship_sag_tiny.py [--keep runs/sag_tiny_11]
python tools/ship_sag_tiny.py --smoke   # the cells as nbdev_test runs them (IN_TEST: 300 scenes, 20 steps), shipped
                                        # into a temporary folder, not the package"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "nbs" / "11_sag.ipynb"
# the notebook's imports (FULL_RUN and IN_TEST are set in the first), its data + model cell and the cell that trains
# (`bare_train`, appendix 95g) (cell ids)
CELLS = ("s11full1", "74a65885", "dbb1102e", "2317b142")
DATA = {"language": "appearance", "n_images": 3000, "seed": 0, "size": 64}  # what cell dbb1102e generates
SMOKE_SCENES = 300  # what it generates under nbdev_test (IN_TEST)


def notebook_cells(ids: tuple[str, ...]) -> list[str]:
    "The sources of the cells `ids` of NOTEBOOK, in that order; a missing id is named."
    by_id = {c.get("id"): "".join(c["source"]) for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise KeyError(f"{NOTEBOOK}: no cell with id {', '.join(missing)} (the cells this tool runs moved?)")
    return [by_id[i] for i in ids]


def train_as_the_notebook(in_test: bool = False) -> tuple[dict, float, float]:
    """Run the notebook's cells with FULL_RUN = True, outside nbdev_test (`in_test`: as nbdev_test runs them) -> (their
    namespace, wall s, CPU s)."""
    import matplotlib

    matplotlib.use("Agg")  # the loss curve is drawn, not shown
    if in_test:
        os.environ["IN_TEST"] = "1"
    else:
        os.environ.pop("IN_TEST", None)
    ns: dict = {"__name__": "__ship_sag_tiny__"}
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime
    for src in notebook_cells(CELLS):
        exec(compile(src, str(NOTEBOOK), "exec"), ns)
        ns["FULL_RUN"] = True  # the first cell sets it False
    return ns, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_utime - c0


def write_run(ns: dict, run_dir: Path) -> None:
    "The trained model as `fit` leaves a run folder: best.pt (weights, config, step, val, fingerprints) + tokenizer."
    import torch

    from ris_nb.fingerprints import run_fingerprints
    from ris_nb.data.transforms import save_tokenizer
    from ris_nb.evaluate import evaluate

    model, cfg, loaders = ns["model"].eval(), ns["cfg"], ns["loaders"]
    val = evaluate(model, loaders["val"], protocol=cfg.eval.protocol, progress=False)["overall"]
    run_dir.mkdir(parents=True, exist_ok=True)
    ck = {"model": model.state_dict(), "config": cfg.to_json(), "step": ns["steps"], "val": val}
    torch.save({**ck, **run_fingerprints(loaders)}, run_dir / "best.pt")
    save_tokenizer(loaders["train"].dataset.tokenizer, run_dir / "tokenizer")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, default=None, help="write the run folder here (default: a temporary one)")
    ap.add_argument(
        "--smoke", action="store_true", help="the cells as nbdev_test runs them, shipped to a temporary folder"
    )
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tools"))
    os.chdir(ROOT / "nbs")  # where the notebook runs
    if not args.smoke:
        return ship(args.keep or Path(tempfile.mkdtemp(prefix="ris_nb_sag_tiny_")))
    with tempfile.TemporaryDirectory(prefix="ship_sag_tiny_") as tmp:
        return ship(Path(tmp) / "run", smoke=True, dest=Path(tmp) / "shipped")


def ship(run_dir: Path, smoke: bool = False, dest: Path | None = None) -> int:
    "Train as the notebook does (`smoke`: as nbdev_test runs it), write the run to `run_dir`, ship it (to `dest`)."
    ns, wall, cpu = train_as_the_notebook(in_test=smoke)
    write_run(ns, run_dir.resolve())
    import ship_checkpoint

    data = DATA | ({"n_images": SMOKE_SCENES} if smoke else {})
    return ship_checkpoint.main(
        [str(run_dir.resolve()), "--name", "sag_tiny"]
        + [f"--{k.replace('_', '-')}={v}" for k, v in data.items()]
        + ["--command", "python tools/ship_sag_tiny.py", "--wall-s", f"{wall:.0f}", "--cpu-s", f"{cpu:.0f}"]
        + ["--threads", "1", "--note", "11_sag's bare loop (FULL_RUN = True), appearance language, frozen entities"]
        + (["--dest", str(dest)] if dest else [])
    )


if __name__ == "__main__":
    sys.exit(main())
