"""Helper for the exact-resume tests: train a preset straight through, and again with a crash after the step-2
checkpoint followed by a resume into a freshly built model; return the largest weight difference (0.0 =
bit-identical)."""

from pathlib import Path

import torch

from ris_nb.core import seed_everything
from ris_nb.registry import build_model
from ris_nb.presets import get_preset
from ris_nb.data.transforms import build_tokenizer, make_dataloaders
from ris_nb.training_run import Crash, CrashAt, fit  # 93f: a crash between two checkpoints, as kill -9 leaves it
from ris_nb.checkpoints import model_state
from ris_nb.run_folder import read_log


def _train(preset: str, data_root: Path, out: Path, steps: int, crash_at: int | None = None, extra: dict | None = None):
    cfg = get_preset(preset).override(
        {
            "data.root": str(data_root),
            "data.image_size": 64,
            "train.batch_size": 2,
            "train.max_steps": steps,
            "train.ckpt_every": 2,
            "train.eval_every": 1000,
            "train.log_every": 1,
            "train.warmup_steps": 1,
            "train.out_dir": str(out),
            "train.device": "cpu",
            **(extra or {}),
        }
    )
    tok = build_tokenizer(cfg)
    cfg = cfg.override({"model.text.vocab_size": len(tok)})
    loaders = make_dataloaders(cfg, tok, splits=["train"])
    seed_everything(cfg.seed)
    model = build_model(cfg)  # a fresh model: its own generators start from their seeds
    try:
        fit(model, loaders, cfg, cbs=[CrashAt(crash_at)] if crash_at else [])
    except Crash:
        return None
    return model


def resume_difference(
    preset: str, data_root: Path, tmp: Path, steps: int = 4, extra: dict | None = None
) -> tuple[float, dict, dict]:
    "(max |Δ| of the final weights, losses of the straight run, losses of the crashed-and-resumed run)."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = _train(preset, data_root, tmp / "straight", steps, extra=extra)
        # last checkpoint: step 2
        assert _train(preset, data_root, tmp / "crashed", steps, crash_at=steps, extra=extra) is None
        b = _train(preset, data_root, tmp / "crashed", steps, extra=extra)
    finally:
        torch.set_num_threads(threads)
    sa, sb = model_state(a), model_state(b)
    assert sa.keys() == sb.keys()
    diff = max(((sa[k].double() - sb[k].double()).abs().max().item() for k in sa if sa[k].numel()), default=0.0)

    def loss(run):
        return {r["step"]: r["loss"] for r in read_log(tmp / run / "log.jsonl") if "loss" in r}

    return diff, loss("straight"), loss("crashed")
