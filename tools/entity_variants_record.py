"""What each text-free entity module of a SaG entity study does to the objects: `nbs/results/entity_variants.csv`.

    python tools/entity_variants_record.py runs/study_sag_entities

For the shipped module and each `ENTITY_VARIANTS` module in STUDY/entities (pretrained there by `ris_nb experiments
--only sag --rows sag_pre_...`), on the first 200 val scenes of STUDY/entities/data (the scenes that scored the
pretraining): the best slot's IoU per object, the objects some slot covers (IoU >= 0.5), and how the best slot misses:
the share of the object inside it (low: the object is cut into pieces) and the share of it on the object (low: the slot
spreads over other things). These are the module's raw slots, before `sag_tiny` splits them into connected pieces.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from ris_nb.data.refer import Refer
from ris_nb.models.slots import (
    EntityPretrainConfig,
    entity_weights_name,
    load_entity_model,
    object_discovery,
    packaged_entity_weights,
    scene_object_masks,
    slot_regions,
    split_images,
)
from ris_nb.pretrain import ENTITY_VARIANTS

from mg_quickstart_record import write_csv  # tools/: the same atomic CSV writer

OUT = Path(__file__).resolve().parents[1] / "nbs" / "results" / "entity_variants.csv"
FIELDS = [
    "variant",
    "file",
    "pretrain_steps",
    "best_slot_iou",
    "objects_covered",
    "best_slot_recall",
    "best_slot_precision",
    "n_objects",
]


@torch.no_grad()
def best_slot_fit(model, images: torch.Tensor, masks: list[list[np.ndarray]], batch: int = 50) -> dict[str, float]:
    """Of each object's best slot (highest IoU), the share of the object inside it (recall) and the share of the slot on
    the object (precision), averaged (%): low recall, the object is cut into pieces; low precision, the slot spreads."""
    recall, precision = [], []
    for b in range(0, len(images), batch):
        so, hw = model(images[b : b + batch])
        for reg, objs in zip(slot_regions(so.a_slot, hw, images.shape[-1]).numpy(), masks[b : b + batch]):
            area = reg.sum((1, 2))
            for m in objs:
                inter = (reg & m[None]).sum((1, 2))
                best = int(np.argmax(inter / np.maximum(area + m.sum() - inter, 1)))
                recall.append(inter[best] / max(int(m.sum()), 1))
                precision.append(inter[best] / max(int(area[best]), 1))
    return {"best_slot_recall": 100 * float(np.mean(recall)), "best_slot_precision": 100 * float(np.mean(precision))}


def modules(folder: Path) -> dict[str, Path]:
    "variant name → its weights: the shipped default, then each variant the study pretrained."
    found = {"default (shipped)": packaged_entity_weights()}
    for name, change in ENTITY_VARIANTS.items():
        path = folder / f"{entity_weights_name(EntityPretrainConfig(**change))}.pt"
        if path.is_file():
            found[name] = path
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="the study folder (holds entities/)")
    folder = ap.parse_args().study / "entities"
    refer = Refer(folder / "data", "shaperefs", "shaperefs")
    images, ids = split_images(refer, "val", 64)
    images, masks = images[:200], scene_object_masks(refer, ids[:200], 64)
    lines = []
    for name, path in modules(folder).items():
        model = load_entity_model(path).eval()
        d = object_discovery(model, images, masks)
        lines.append(
            {
                "variant": name,
                "file": path.name,
                "pretrain_steps": model.log[-1]["step"] if model.log else 0,
                "best_slot_iou": round(d["best_slot_iou"], 1),
                "objects_covered": round(d["objects_covered"], 1),
                **{k: round(v, 1) for k, v in best_slot_fit(model, images, masks).items()},
                "n_objects": d["n_objects"],
            }
        )
        print(lines[-1])
    write_csv(OUT, FIELDS, lines)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
