"""How far can SaG's gather go with `sag_tiny`'s shipped entities if it is *told* which slot to pick? A diagnostic, not
a method.

The entity module stays frozen (the shipped weights); the text encoder and the fusion (and
`model.sag.entity_appearance`'s CNN when set) are trained with masks, on purpose: the target of A^fuse is the slot whose
region best overlaps the referred object's mask (cross-entropy on log A^fuse). Its val picks and mIoU bound what C³
could reach with these entities and this fusion; the gap between them and C³'s own numbers is what the text-only signal
fails to teach.

`--variant` swaps one part of the gather for a stronger one, to ask which part holds the told gather back (diagnostic
variants, not options of the model): `context` runs two transformer layers over [t_j; the entities of image i] before
the fusion's cross-attention, so an entity's key can depend on the other entities (for "the second star from the left");
`moments` adds to each entity a code of its map's shape (Hu's first four moment invariants and how much of its bounding
box it fills), which a circle, a square and a triangle do not share.

Training runs on the library's `Learner` and training loader; `ToldSlotLoss` (a callback) brings the loss and the
parameters. The committed rows were made by this tool's earlier hand-written loop (AdamW + OneCycleLR); the engine
reproduced them when the tool moved onto it (e.g. "slots, fusion" with the earlier sag_tiny's entities, 500 steps: 30.62
val mIoU and 57.0 % picks on the engine against 30.6 and 57.4).

Usage: OMP_NUM_THREADS=2 python tools/sag_gather_probe.py --data data/shaperefs [--steps 500] [--set key=value ...]
       [--variant context|moments] [--results nbs/results/sag_gather_probe.csv --row NAME]
"""

from __future__ import annotations
import argparse
import csv
import io
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import ris_nb.models.sag as sag
from ris_nb.core import parse_override
from ris_nb.presets import get_preset
from ris_nb.machine import probe_ms
from ris_nb.io import write_atomic
from ris_nb.evaluate import evaluate
from ris_nb.grounding import shatter_gather
from ris_nb.metrics import iou_from
from ris_nb.models.image_entities import grid_coords
from ris_nb.distributed import DistInfo
from ris_nb.train import Callback, DeviceCB, Learner, NaNGuardCB
from ris_nb.training_run import prepare
from ris_nb.exact_resume import SamplerCB
from ris_nb.loaders import make_train_loader


class ContextFusion(sag.Fusion):
    """Fusion whose keys and values come from the entities after `layers` transformer layers over [t_j; entities of
    image i]."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        mult: float = 4.0,
        dropout: float = 0.0,
        residual: bool = True,
        layers: int = 2,
    ):
        super().__init__(dim, heads, head_dim, mult, dropout, residual)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mult), dropout, batch_first=True, norm_first=True)
        self.context = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, text, entities, valid=None):
        (I, K, D), J = entities.shape, len(text)
        seq = torch.cat([text[None, :, None].expand(I, J, 1, D), entities[:, None].expand(I, J, K, D)], 2).flatten(0, 1)
        pad = (
            None
            if valid is None
            else ~torch.cat([valid.new_ones(I, 1), valid], 1)[:, None].expand(I, J, K + 1).flatten(0, 1)
        )
        ctx = self.context(seq, src_key_padding_mask=pad)[:, 1:].unflatten(0, (I, J))  # (I,J,K,D)
        q = self.to_q(self.norm(text)).unflatten(-1, (self.heads, -1)) * self.scale
        k, v = (
            x.unflatten(-1, (self.heads, -1)).transpose(-2, -3) for x in self.to_kv(self.norm_context(ctx)).chunk(2, -1)
        )
        attn = sag._masked_softmax(
            torch.einsum("jhd,ijhkd->ijhk", q, k), None if valid is None else valid[:, None, None]
        )
        return self._readout(text[None], torch.einsum("ijhk,ijhkd->ijhd", attn, v).flatten(2)), attn.mean(2)


def shape_moments(maps: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    "(B,K,5) of maps (B,K,N): Hu's φ1–φ4 (signed log) and the bounding-box fill of each map's core (≥ half its peak)."
    xy = grid_coords(*hw, device=maps.device).to(maps.dtype) * (hw[0] / 2)  # token units
    core = (maps >= 0.5 * maps.amax(-1, keepdim=True).clamp(min=1e-6)).to(maps.dtype)
    m0 = core.sum(-1).clamp(min=1)
    c = (core @ xy) / m0[..., None]
    x, y = (xy[None, None] - c[:, :, None]).unbind(-1)

    def eta(p, q):
        return (core * x**p * y**q).sum(-1) / m0 ** (1 + (p + q) / 2)

    n20, n02, n11, n30, n03, n21, n12 = eta(2, 0), eta(0, 2), eta(1, 1), eta(3, 0), eta(0, 3), eta(2, 1), eta(1, 2)
    phis = [
        n20 + n02,
        (n20 - n02) ** 2 + 4 * n11**2,
        (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
        (n30 + n12) ** 2 + (n21 + n03) ** 2,
    ]
    on = core > 0

    def span(v):
        return torch.where(on, v, -1e4).amax(-1) - torch.where(on, v, 1e4).amin(-1) + 1

    fill = m0 / (span(x) * span(y)).clamp(min=1)
    return torch.stack([(p + 1e-6).log() for p in phis] + [fill], -1)


class MomentAppearance(sag.EntityAppearance):
    "`EntityAppearance` plus an MLP code of `shape_moments`."

    def __init__(self, dim: int, width: int = 16):
        super().__init__(dim, width)
        self.shape = nn.Sequential(nn.Linear(5, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, entities, a_slot, images, hw):
        return super().forward(entities, a_slot, images, hw) + self.shape(shape_moments(a_slot, hw))


def use_variant(name: str | None) -> None:
    """Swap the class `SaG` builds for the fusion (`context`) or the appearance code (`moments`, needs
    entity_appearance)."""
    if name == "context":
        sag.Fusion = ContextFusion
    elif name == "moments":
        sag.EntityAppearance = MomentAppearance
    elif name:
        raise SystemExit(f"--variant {name!r}: expected 'context' or 'moments'")


def best_slot_targets(a_slot: torch.Tensor, hw: tuple[int, int], masks: torch.Tensor) -> torch.Tensor:
    "(B,) index of the slot whose hard region (argmax of A^slot on the token grid) has the highest IoU with each mask."
    K = a_slot.shape[1]
    regions = a_slot.argmax(1)[:, None] == torch.arange(K)[None, :, None]  # (B,K,N)
    gt = F.interpolate(masks[:, None].float(), size=hw, mode="area").flatten(1)[:, None] > 0.5  # (B,1,N)
    inter, union = (regions & gt).sum(-1), (regions | gt).sum(-1)
    return iou_from(inter, union).argmax(1)


class ToldSlotLoss(Callback):
    """For the engine: the told gather's loss (cross-entropy of log A^fuse against `best_slot_targets`) over the
    trainable parameters."""

    def __init__(self, lr: float):
        self.lr = lr

    def param_groups(self, cfg) -> list[dict]:
        return [{"params": [p for p in self.learn.core.parameters() if p.requires_grad], "lr": self.lr}]

    def losses(self, out, batch) -> dict[str, torch.Tensor]:
        target = best_slot_targets(out.a_slot.detach(), out.hw, batch.masks)
        return {"loss": F.nll_loss(out.a_fuse.clamp(min=1e-8).log(), target)}


class PrintLossCB(Callback):
    "A line with the loss every 100 optimizer steps (these tools run in the background, without a terminal for a bar)."

    def after_step(self):
        if self.learn.step % 100 == 0:
            print(f"step {self.learn.step}: loss {float(self.learn.loss.detach()):.3f}", flush=True)


def train_on_engine(module: nn.Module, loaders: dict, cfg, cb: Callback, steps: int, lr: float) -> float:
    """Train `module` for `steps` optimizer steps with the library's `Learner` and training loader (its sampler: SaG's
    sentence pairs when the config asks for them), `cb` supplying the loss and the parameters; AdamW at `lr` with a 5 %
    linear warm-up, then cosine to 0, no gradient clipping. Returns the seconds it took."""
    cfg = cfg.override(
        {
            "train.max_steps": steps,
            "train.lr": lr,
            "train.schedule": "cosine",
            "train.warmup": "lr",
            "train.warmup_steps": max(1, steps // 20),
            "train.grad_clip": 0.0,
        }
    )
    train = loaders["train"]
    loader = make_train_loader(train.dataset, cfg, DistInfo(device=torch.device("cpu")), train.collate_fn)
    t0 = time.perf_counter()
    Learner(module, loader, cfg, [SamplerCB(), DeviceCB(), NaNGuardCB(), PrintLossCB(), cb]).fit()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides of sag_tiny, key=value")
    ap.add_argument("--variant", default=None, help="context | moments (see above)")
    ap.add_argument("--results", default=None)
    ap.add_argument("--row", default="probe")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    one, two = probe_ms(threads=1), probe_ms()
    cfg = get_preset("sag_tiny").override(
        {
            "data.root": str(Path(a.data).parent),
            "data.weak": False,
            "seed": a.seed,
            "train.max_steps": a.steps,
            **dict(parse_override(o) for o in a.set),
        }
    )
    use_variant(a.variant)
    tok, loaders, model, cfg = prepare(cfg, ["train", "val"])
    secs = train_on_engine(model, loaders, cfg, ToldSlotLoss(a.lr), a.steps, a.lr)
    sg = shatter_gather(model, loaders["val"])
    res = evaluate(model, loaders["val"], progress=False, keep_samples=False)
    row = {
        "row": a.row,
        "overrides": " ".join(a.set + ([f"--variant {a.variant}"] if a.variant else [])),
        "steps": a.steps,
        "samples": a.steps * cfg.train.batch_size,
        "val_mIoU": round(res["overall"]["mIoU"], 2),
        "val_oIoU": round(res["overall"]["oIoU"], 2),
        "picks_best_slot": round(sg["picks_best_slot"], 1),
        "best_slot_mIoU": round(sg["best_slot_mIoU"], 1),
        **{f"mIoU_{k}": round(v["mIoU"], 2) for k, v in sorted(res["by_type"].items())},
        "train_s": round(secs),
        "probe_1t_ms": round(one, 2),
        "probe_2t_ms": round(two, 2),
    }
    print(row)
    if a.results:
        write_row(Path(a.results), row)


def write_row(path: Path, row: dict) -> None:
    "Add `row` to the results CSV at `path`, replacing a row of the same name; written atomically."
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    rows = [r for r in rows if r["row"] != row["row"]] + [row]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols)
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, lambda tmp: tmp.write_text(buf.getvalue()))
    print("written:", path)


if __name__ == "__main__":
    main()
