"""Can SaG's gather refer on ShapeRefs when the entities are *perfect*? A diagnostic, not a method.

The entities are the scene's true shapes (their masks on `sag_tiny`'s token grid, read from instances.json — what a
perfect shatter would give), each described by `EntityAppearance` (a small CNN over the shape's map and the image under
it, plus its map's geometry and mean colour). `sag_tiny`'s text encoder and fusion then learn the gather, either *told*
the referred shape (cross-entropy on log A^fuse, masks used on purpose) or from text alone with C³ — the paper's signal.
The val accuracy of argmax A^fuse is the fraction of sentences whose shape is picked; the language-blind reference is
one random shape of the scene (1 / number of shapes, averaged).

It separates SaG's two halves: if C³ picks well here, the gather is learnable from text on this data and the wall is the
shatter.

Training runs on the library's `Learner` and training loader (its sampler pairs sentences of one image when
`model.sag.in_image_negatives` asks for it); `OracleLoss` (a callback) brings the loss and the parameters. The committed
rows were made by an earlier hand-written loop; the engine reproduced them when the tool moved onto it (told 58.3
against 57.6 % picked, C³ 33.0 against 32.3, 500 steps).

Usage: OMP_NUM_THREADS=2 python tools/sag_oracle_gather.py --data data/shaperefs --loss c3|told [--steps 500]
       [--set key=value ...] [--shape-code] [--fusion-scale S] [--results nbs/results/sag_oracle_gather.csv --row NAME]
The rows of nbs/results/sag_oracle_gather.csv: `--loss told|c3 --steps 500` (and 2000), `--set
model.sag.fusion_residual=false`, `--set model.sag.c3_normalize_target=true model.sag.c3_temperature=0.1`, both, `--set
model.sag.in_image_negatives=true`, `--fusion-scale 4`, `--shape-code` (its `overrides` column).
"""

from __future__ import annotations
import argparse
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ris_nb.core import parse_override
from ris_nb.presets import get_preset
from ris_nb.machine import probe_ms
from ris_nb.data.refer import scene_masks
from ris_nb.data.transforms import resize_mask
from ris_nb.models.sag import c3_loss
from ris_nb.models.sag_parts import EntityAppearance, batch_partners, own_image_copies, swapped_gather
from ris_nb.train import Callback
from ris_nb.training_run import prepare


class SceneEntities:
    "The true shapes of each image on the token grid: (B,E,N) maps, (B,E) valid, (B,) index of the referred shape."

    def __init__(self, refer, size: int, hw: tuple[int, int], max_shapes: int = 8):
        self.refer, self.size, self.hw, self.E, self.cache = refer, size, hw, max_shapes, {}

    def _image(self, image_id: int) -> tuple[list[int], torch.Tensor]:
        if image_id not in self.cache:
            masks = scene_masks(self.refer, image_id)
            grid = torch.stack([resize_mask(m, self.size) for m in masks.values()])[:, None]
            self.cache[image_id] = (list(masks), F.adaptive_avg_pool2d(grid, self.hw).flatten(1))
        return self.cache[image_id]

    def category(self, image_id: int, index: int) -> int:
        "Category id of the `index`-th true shape of an image."
        ann = self._image(int(image_id))[0][index]
        return self.refer.anns[ann]["category_id"]

    def __call__(self, image_ids, ann_ids) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N = len(image_ids), self.hw[0] * self.hw[1]
        maps, valid, target = (
            torch.zeros(B, self.E, N),
            torch.zeros(B, self.E, dtype=torch.bool),
            torch.zeros(B, dtype=torch.long),
        )
        for b, (im, ann) in enumerate(zip(image_ids, ann_ids)):
            ids, grid = self._image(int(im))
            maps[b, : len(ids)], valid[b, : len(ids)], target[b] = grid, True, ids.index(int(ann))
        return maps, valid, target


def gather(model, appearance, scene, batch):
    """A^fuse (B_img,B_txt,E), ẑ, t, the entities (B,E,D) and their validity of a batch over its true shapes; the
    referred shape's index."""
    maps, valid, target = scene(batch.meta["image_id"], batch.meta["ann_id"])
    ents = appearance(torch.zeros(*maps.shape[:2], model.cfg.model.sag.dim), maps, batch.images, scene.hw)
    t = model.text(batch.input_ids, batch.attention_mask)
    fused, a_all = model.fusion(t, ents, valid)
    return a_all, fused, t, ents, valid, target


class OracleGather(nn.Module):
    """SaG's text encoder and fusion over the scene's true shapes, described by `appearance`: forward(batch) →
    `gather`'s outputs."""

    def __init__(self, model: nn.Module, appearance: nn.Module, scene: SceneEntities):
        super().__init__()
        self.model, self.appearance, self.scene = model, appearance, scene

    def forward(self, batch):
        return gather(self.model, self.appearance, self.scene, batch)


class OracleLoss(Callback):
    """For the engine: the told loss (cross-entropy on log A^fuse) or C³, over the text encoder, the fusion and the
    appearance code."""

    def __init__(self, kind: str, lr: float):
        self.kind, self.lr = kind, lr

    def param_groups(self, cfg) -> list[dict]:
        m = self.learn.core
        return [
            {
                "params": [*m.model.text.parameters(), *m.model.fusion.parameters(), *m.appearance.parameters()],
                "lr": self.lr,
            }
        ]

    def losses(self, out, batch) -> dict[str, torch.Tensor]:
        a_all, fused, t, ents, valid, target = out
        model = self.learn.core.model
        s = model.cfg.model.sag
        if self.kind == "told":
            loss = F.nll_loss(a_all.diagonal(dim1=0, dim2=1).T.clamp(min=1e-8).log(), target)
        elif s.in_image_negatives:
            loss = c3_with_in_image(model, fused, t, ents, valid, batch)
        else:
            loss = c3_loss(fused, t, s.c3_temperature, s.c3_detach_target, s.c3_normalize_target)
        return {"loss": loss}


def c3_with_in_image(model, fused, t, ents, valid, batch) -> torch.Tensor:
    """`c3_loss` with in-image negatives as SaG computes it with model.sag.in_image_negatives (the partner sentence's
    gather is a negative)."""
    s = model.cfg.model.sag
    images = torch.as_tensor(batch.meta["image_id"])
    partner = batch_partners(batch.meta["image_id"], batch.meta["ann_id"])
    own = torch.where(partner < 0, torch.arange(len(images)), partner)
    swapped = swapped_gather(model.fusion, t, ents, own, valid)
    in_image = (swapped, partner, own_image_copies(images, images))
    return c3_loss(fused, t, s.c3_temperature, s.c3_detach_target, s.c3_normalize_target, in_image=in_image)


def noun_phrase_candidates(refer, ref: dict, tokens: list[str]) -> list[int]:
    """Annotation ids of the ref's scene that fit the sentence's first noun phrase: its colour and size words and its
    shape noun."""
    cats = {name: cid for cid, name in refer.cats.items()}
    anns = refer.img_to_anns[ref["image_id"]]
    colours, sizes = {a["color"] for a in anns}, {a["size"] for a in anns}
    want = {}
    for w in tokens:
        if w in colours:
            want["color"] = w
        elif w in sizes:
            want["size"] = w
        elif w in cats or w == "object":
            if w != "object":
                want["category_id"] = cats[w]
            break
    return [a["id"] for a in anns if all(a.get(k) == v for k, v in want.items())]


def words_only_reference(dataset) -> float:
    """% picks of an answer that reads the colour, size and shape words of the first noun phrase and guesses among
    the fitting shapes."""
    base = getattr(dataset, "base", dataset)
    hits = []
    for i in range(len(base)):
        ref, sent = base.index(i)
        cands = noun_phrase_candidates(base.refer, ref, sent["tokens"])
        hits.append(1 / len(cands) if ref["ann_id"] in cands else 0.0)
    return 100 * float(np.mean(hits))


@torch.no_grad()
def pick_accuracy(model, appearance, scene, loader) -> dict[str, float]:
    "% of sentences whose shape has the largest A^fuse, overall and by expression type; and the random-shape reference."
    model.eval()
    appearance.eval()
    hits, blind, wrong_shape = defaultdict(list), [], []
    for batch in loader:
        a_all, _, _, _, valid, target = gather(model, appearance, scene, batch)
        own = a_all.diagonal(dim1=0, dim2=1).T  # (B,E) each sentence over its image
        pick = own.argmax(1)
        for b, (p, t, typ) in enumerate(zip(pick.tolist(), target.tolist(), batch.meta["expr_type"])):
            hits[typ].append(p == t)
            hits["overall"].append(p == t)
            if typ == "attribute" and p != t:
                wrong_shape.append(
                    scene.category(batch.meta["image_id"][b], p) != scene.category(batch.meta["image_id"][b], t)
                )
        blind += (1 / valid.sum(1).float()).tolist()
    model.train()
    appearance.train()
    return {
        "picks": 100 * float(np.mean(hits["overall"])),
        "random_shape": 100 * float(np.mean(blind)),
        "words_only": words_only_reference(loader.dataset),
        "attribute_misses_of_another_shape": 100 * float(np.mean(wrong_shape)) if wrong_shape else 0.0,
        **{f"picks_{k}": 100 * float(np.mean(v)) for k, v in sorted(hits.items()) if k != "overall"},
    }


def gather_probe():
    "tools/sag_gather_probe.py as a module (its shape code and its results writer)."
    import importlib.util

    spec = importlib.util.spec_from_file_location("sag_gather_probe", Path(__file__).with_name("sag_gather_probe.py"))
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    return probe


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--loss", choices=("c3", "told"), default="c3")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides of sag_tiny, key=value")
    ap.add_argument(
        "--shape-code",
        action="store_true",
        help="entities also carry sag_gather_probe.py's shape moments (Hu's φ1–φ4, box fill; diagnostic)",
    )
    ap.add_argument(
        "--fusion-scale", type=float, default=1.0, help="× the fusion's attention logits (sharper A^fuse; diagnostic)"
    )
    ap.add_argument("--results", default=None)
    ap.add_argument("--row", default="oracle")
    a = ap.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", 2))
    one, two = probe_ms(threads=1), probe_ms(threads=threads)
    cfg = get_preset("sag_tiny").override(
        {
            "data.root": str(Path(a.data).parent),
            "data.weak": False,
            "seed": a.seed,
            "train.max_steps": a.steps,
            **dict(parse_override(o) for o in a.set),
        }
    )
    tok, loaders, model, cfg = prepare(cfg, ["train", "val"])
    hw = (cfg.data.image_size // cfg.model.vision.patch_size,) * 2
    scenes = {k: SceneEntities(l.dataset.base.refer, cfg.data.image_size, hw) for k, l in loaders.items()}
    probe = gather_probe()
    appearance = (probe.MomentAppearance if a.shape_code else EntityAppearance)(cfg.model.sag.dim)
    model.fusion.scale *= a.fusion_scale
    secs = probe.train_on_engine(
        OracleGather(model, appearance, scenes["train"]), loaders, cfg, OracleLoss(a.loss, a.lr), a.steps, a.lr
    )
    row = {
        "row": a.row,
        "loss": a.loss,
        "overrides": " ".join(
            a.set
            + ([f"--fusion-scale {a.fusion_scale:g}"] if a.fusion_scale != 1 else [])
            + (["--shape-code"] if a.shape_code else [])
        ),
        "steps": a.steps,
        "samples": a.steps * cfg.train.batch_size,
        **{k: round(v, 1) for k, v in pick_accuracy(model, appearance, scenes["val"], loaders["val"]).items()},
        "train_s": round(secs),
        "probe_1t_ms": round(one, 2),
        "probe_2t_ms": round(two, 2),
    }
    print(row)
    if a.results:
        probe.write_row(Path(a.results), row)


if __name__ == "__main__":
    main()
