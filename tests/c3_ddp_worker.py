"""One SaG training step under torchrun (gloo): each of the W ranks takes its slice of a fixed global batch of 8, fixed
initial slots and dropout off, so the only thing that depends on the split is C³'s contrast. Rank 0 writes the loss of
the global batch (the mean over ranks) and DDP's averaged gradients to OUT, then each rank prints how many gloo threads
are left after `finish_distributed` (0 expected). Usage: python c3_ddp_worker.py OUT"""

import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ddp_worker import report_teardown
from ris_nb.distributed import finish_distributed, init_distributed


def sag_tiny_step_inputs():
    "The model (seeded, dropout off), the global batch and its initial slots; shared with tests/test_sag.py."
    from types import SimpleNamespace
    from ris_nb.core import seed_everything
    from ris_nb.registry import build_model
    from ris_nb.presets import get_preset

    cfg = get_preset("sag_tiny").override(
        {"model.text.vocab_size": 50, "data.image_size": 64, "model.sag.dropout": 0.0}
    )
    seed_everything(0)
    model = build_model(cfg)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (8, 7), generator=g)
    ids[:, 0] = 2
    am = torch.ones(8, 7, dtype=torch.long)
    am[::2, -3:] = 0
    batch = SimpleNamespace(images=torch.randn(8, 3, 64, 64, generator=g), input_ids=ids * am, attention_mask=am)
    s0 = torch.randn(8, model.slots.n_slots, cfg.model.sag.dim, generator=g)
    return model.train(), batch, s0


class Step(nn.Module):
    "forward(slice) -> loss of the SaG model on it (the unit DDP wraps)."

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch, s0):
        return self.model.losses(self.model(batch, slots_init=s0))["loss"]


def main(out: str) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    model, batch, s0 = sag_tiny_step_inputs()
    n = 8 // info.world
    sl = slice(info.rank * n, (info.rank + 1) * n)
    from types import SimpleNamespace

    part = SimpleNamespace(
        images=batch.images[sl], input_ids=batch.input_ids[sl], attention_mask=batch.attention_mask[sl]
    )
    step = DDP(Step(model), find_unused_parameters=True)
    loss = step(part, s0[sl])
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    total /= info.world
    if info.is_main:
        torch.save(
            {"loss": total, "grads": {k: p.grad for k, p in model.named_parameters() if p.grad is not None}}, out
        )
    del step  # the wrapper holds the process group: gone first, so that destroying the group frees it
    finish_distributed()
    report_teardown()


if __name__ == "__main__":
    main(sys.argv[1])
