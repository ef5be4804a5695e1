"""Helper for the exact-resume tests: train a preset straight through, and again with a crash after the step-2
checkpoint followed by a resume into a freshly built model; return the largest weight difference (0.0 =
bit-identical)."""

from pathlib import Path

import torch

from ris_nb.training_run import train_tiny  # 93f: a tiny run, crashed between two checkpoints as kill -9 leaves it
from ris_nb.checkpoints import model_state
from ris_nb.run_folder import read_log


def resume_difference(
    preset: str, data_root: Path, tmp: Path, steps: int = 4, extra: dict | None = None
) -> tuple[float, dict, dict]:
    "(max |Δ| of the final weights, losses of the straight run, losses of the crashed-and-resumed run)."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = train_tiny(tmp / "straight", None, steps, preset, data_root, extra)
        # last checkpoint: step 2
        assert train_tiny(tmp / "crashed", steps, steps, preset, data_root, extra) is None
        b = train_tiny(tmp / "crashed", None, steps, preset, data_root, extra)
    finally:
        torch.set_num_threads(threads)
    sa, sb = model_state(a), model_state(b)
    assert sa.keys() == sb.keys()
    diff = max(((sa[k].double() - sb[k].double()).abs().max().item() for k in sa if sa[k].numel()), default=0.0)

    def loss(run):
        return {r["step"]: r["loss"] for r in read_log(tmp / run / "log.jsonl") if "loss" in r}

    return diff, loss("straight"), loss("crashed")
