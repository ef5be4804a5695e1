"""An old checkpoint scores what its own version scored (issue 70): SaG's evaluation S⁰ changed at 318265a (each
sentence of a batch its own row of one seeded draw → one fixed S⁰ for every image) before a key named it; a config
written before that change is read with `model.sag.eval_init="per_sentence"`, a later one with today's "shared"."""

import json
from types import SimpleNamespace

import torch

from ris_nb.core import Config
from ris_nb.registry import build_model
from ris_nb.presets import get_preset
from ris_nb.run_folder import DEFAULT_CHANGES, fill_old_defaults, saved_config
from test_faults_upgrade import old_config


def stored(preset: str, *drop: str) -> str:
    "The JSON config of `preset` as a version without the dotted keys `drop` stored it."
    return json.dumps(old_config(preset, *drop))


def test_a_config_from_before_the_shared_eval_slots_reads_per_sentence():
    old = Config.from_dict(saved_config(stored("sag_tiny", *DEFAULT_CHANGES), "old.pt"))  # e.g. 267a81b's sag_tiny
    assert old.model.sag.eval_init == "per_sentence"
    # written after the change (it holds text_pool, as the shipped checkpoints do), without the key: today's value
    later = stored("sag_tiny", "model.sag.eval_init", "train.compile")
    assert Config.from_dict(saved_config(later, "later.pt")).model.sag.eval_init == "shared"
    assert fill_old_defaults(json.loads(later))[1] == ["train.compile='none'"]
    assert get_preset("sag_tiny").model.sag.eval_init == "shared"


def sentences_of_two_images(eval_init: str):
    "A small eval-mode SaG and a batch of 3 sentences about 2 images, image-grouped as `evaluate` sends it."
    cfg = get_preset("sag_tiny").override(
        {"model.text.vocab_size": 50, "data.image_size": 64, "model.sag.eval_init": eval_init}
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    batch = SimpleNamespace(
        images=torch.randn(2, 3, 64, 64, generator=g),
        input_ids=torch.randint(5, 50, (3, 6), generator=g),
        attention_mask=torch.ones(3, 6, dtype=torch.long),
    )
    return model, batch, torch.tensor([0, 0, 1])


@torch.no_grad()
def test_per_sentence_eval_slots_are_what_older_versions_drew():
    model, batch, index = sentences_of_two_images("per_sentence")
    out = model(batch, image_index=index)
    # before 318265a: the images stacked per sentence, sentence b's S⁰ row b of the eval generator's (B,K,D) draw
    assert torch.equal(out.slots_init, model.slots.init(3))
    one_per_sentence = SimpleNamespace(**{**vars(batch), "images": batch.images[index]})
    assert torch.equal(out.a_fuse, model(one_per_sentence).a_fuse)
    shared, batch, index = sentences_of_two_images("shared")
    today = shared(batch, image_index=index)  # today: one S⁰ for every image
    assert torch.equal(today.slots_init, shared.slots.init(1).expand(3, -1, -1))
    assert not torch.equal(today.slots_init, out.slots_init)
