"""Train magnet_tiny for a few steps with `ris_nb.training_run.fit`; run alone or under torchrun (gloo).
One process with the global batch and two processes with half each compute the same losses up to float summation
order when nothing depends on how the batch is split: dropout is switched off, Mask Grounding (its loss averages over
the masked tokens of the whole batch) and CAL are off, and the model has no BatchNorm (SyncBN needs GPUs; LAVT's
decoder has BatchNorm, so it is not used here). Also used for gradient accumulation (ACCUM micro-batches of
8/ACCUM samples per optimizer step). The first step's gradients are saved beside the log (first_grads.pt), and
`noise=True` adds a rounding-sized noise to every step's gradients (what test_engine's comparison allows). Each rank
prints how many gloo threads are left after `finish_distributed` (0: the process group was freed there, not at
interpreter exit). Usage: python ddp_worker.py DATA_DIR OUT_DIR STEPS
[ACCUM]"""

import os
import sys

import torch
from torch import nn

from ris_nb.presets import get_preset
from ris_nb.distributed import finish_distributed
from ris_nb.train import Callback, unwrap
from ris_nb.training_run import fit, prepare

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from gloo_threads import gloo_threads  # noqa: E402  (the diagnostic tool owns the count)


def report_teardown() -> None:
    "After `finish_distributed`: the gloo threads still alive in this rank (the tests want 0)."
    if "RANK" in os.environ:
        print(f"rank {os.environ['RANK']}: {gloo_threads()} gloo threads after finish_distributed", flush=True)


# float32's unit roundoff × √N, N = 8 samples × 64 × 64 pixels summed into each step's loss and gradients: the
# relative size of the difference another summation order makes (a sum of N rounded terms drifts like √N roundings)
ROUNDING = 2.0**-24 * (8 * 64 * 64) ** 0.5


class WorkerCB(Callback):
    "A callback that lets go of the learner after the fit (else it keeps the DDP wrapper and its gloo threads alive)."

    def after_fit(self):
        del self.learn


class FirstGradsCB(WorkerCB):
    "Save the gradients of the first optimizer step (after DDP's average) to OUT_DIR/first_grads.pt, on rank 0."

    def before_step(self):
        if self.learn.step == 0 and os.environ.get("RANK", "0") == "0":
            model = unwrap(self.learn.model)  # names as in one process (no DDP `module.` prefix)
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
            torch.save(grads, os.path.join(self.learn.cfg.train.out_dir, "first_grads.pt"))


class RoundingNoiseCB(WorkerCB):
    """Before each step, every gradient entry moved by ± u·√N·G (u = 2⁻²⁴, N = the terms summed per step, G = the
    step's largest gradient entry; signs drawn with a fixed seed): the size of what another summation order changes,
    to measure how much the following steps amplify it."""

    order = 10

    def before_fit(self):
        self.gen = torch.Generator().manual_seed(1234)

    def before_step(self):
        grads = [p.grad for p in self.learn.model.parameters() if p.grad is not None]
        size = ROUNDING * max(g.abs().max() for g in grads)
        for g in grads:
            g.add_((torch.randint(0, 2, g.shape, generator=self.gen).to(g.dtype) * 2 - 1) * size)


def main(data: str, out: str, steps: int, accum: int = 1, noise: bool = False) -> None:
    torch.set_num_threads(1)
    cfg = get_preset("magnet_tiny").override(
        {
            "data.root": os.path.dirname(data),
            "data.dataset": os.path.basename(data),
            "train.batch_size": 8 // accum,
            "train.accum_steps": accum,
            "train.max_steps": steps,
            "train.log_every": 1,
            "train.eval_every": 10_000,
            "train.ckpt_every": 10_000,
            "train.out_dir": out,
            "train.device": "cpu",
            "data.image_size": 64,
            "model.mg.enabled": False,
            "model.cal.enabled": False,
            # the official init (every sample on the lattice). With MagNet's 1/64 px shift, ATen's AVX2 path made
            # step 1 of a batch of 8 and of two batches of 4 differ by 16x this test's rounding bound, while shifts of
            # 1/128, 1/32 and 3/64 stayed within it: a discontinuity the bound does not model (suspected: the one-query
            # decoder's masked attention thresholds mask logits that start near 0). Not what DDP or accumulation is.
            "model.magnet.offset_init_shift": 0.0,
        }
    )
    _, loaders, model, cfg = prepare(cfg, splits=["train"])  # seeded with cfg.seed = 0
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if hasattr(m, "config") and hasattr(m.config, "attention_probs_dropout_prob"):
            m.config.attention_probs_dropout_prob = 0.0
            m.config.hidden_dropout_prob = 0.0
    fit(model, loaders, cfg, cbs=[FirstGradsCB()] + [RoundingNoiseCB()] * noise, resume_run=False)
    finish_distributed()
    report_teardown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
