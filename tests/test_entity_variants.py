"""The paper's entity-module variants (tables 2 and 3) pretrained without text (12a's `ENTITY_VARIANTS`): each builds,
pretrains a few steps on tiny data, is cached under its own name, and plugs into `sag_tiny`'s gather for a forward and
backward pass; `validate_config` accepts exactly the combinations that work; `pretrain-entities --set`; the study's
`sag_pre_*` rows."""

import json
import os
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")

from ris_nb.core import flat_config
from ris_nb.registry import validate_config
from ris_nb.presets import get_preset
from ris_nb.models import build_model
from ris_nb.models.sag_parts import entity_overrides, entity_pretrain_config
from ris_nb.models.image_entities import (
    EntityPretrainConfig,
    PatchEntities,
    entity_weights_name,
    load_entity_model,
    packaged_entity_weights,
)
from ris_nb.models.slots import EntityDiscovery
from ris_nb.pretrain import ENTITY_VARIANTS, cached_entity_weights

TINY = dict(steps=2, warmup=1, batch_size=8)  # the mechanics: two optimizer steps


def tiny_batch(bs=4, vocab=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        images=torch.randn(bs, 3, 64, 64, generator=g),
        input_ids=torch.randint(5, vocab, (bs, 6), generator=g),
        attention_mask=torch.ones(bs, 6, dtype=torch.long),
        masks=None,
        meta={},
    )


@pytest.fixture(scope="module")
def variant_folder(shaperefs_data, tmp_path_factory):
    "Every variant and the default, pretrained TINY on 40 scenes into one folder: (folder, data root, {name: path})."
    torch.set_num_threads(1)
    root, folder = shaperefs_data(40, 2, 64), tmp_path_factory.mktemp("entities")
    paths = {
        name: cached_entity_weights(EntityPretrainConfig(**change, **TINY), folder, root, n_val=3)
        for name, change in {"default": {}, **ENTITY_VARIANTS}.items()
    }
    return folder, root, paths


def test_the_default_is_the_shipped_module_and_its_name():
    "New fields default to the paper's module, so the shipped file (written before them) loads as the default variant."
    shipped = load_entity_model(packaged_entity_weights())
    assert shipped.cfg == EntityPretrainConfig()
    assert entity_weights_name(EntityPretrainConfig()) == packaged_entity_weights().stem == "entities_shaperefs64"
    assert entity_pretrain_config(get_preset("sag_tiny")) == EntityPretrainConfig()
    assert (
        entity_weights_name(EntityPretrainConfig(n_gaussians=5, n_samples=2, steps=7))
        == "entities_shaperefs64-n_gaussians=5-n_samples=2"
    )  # the recipe (steps) is not part of the name


@pytest.mark.parametrize("name", ["default", *ENTITY_VARIANTS])
def test_variant_pretrains_caches_and_plugs_into_sag_tiny(variant_folder, name):
    folder, _, paths = variant_folder
    path = paths[name]
    assert len(set(paths.values())) == len(paths) and path.is_file()  # one file per variant
    pc = EntityPretrainConfig(**({} if name == "default" else ENTITY_VARIANTS[name]), **TINY)
    src = load_entity_model(path)
    assert src.cfg == pc
    if name == "no_discovery":
        assert src.log == []  # one-token entities: nothing to score
    else:
        assert src.log[-1]["step"] == (0 if name == "no_recon" else 2)  # no reconstruction loss: no step at all
    assert isinstance(src.slots, PatchEntities if name == "no_discovery" else EntityDiscovery)
    cfg = validate_config(
        get_preset("sag_tiny").override(
            {**entity_overrides(pc), "model.text.vocab_size": 40, "model.sag.entity_weights": str(folder)}
        )
    )
    torch.manual_seed(0)
    model = build_model(cfg).train()
    for ours, theirs in ((model.vision, src.encoder), (model.slots, src.slots)):
        for (k, p), (_, q) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(p, q), k
    b = tiny_batch()
    out = model(b)
    K = 32 * 32 if name == "no_discovery" else 2 * pc.n_gaussians * pc.n_samples  # tokens, or up to 2K pieces
    assert out.a_slot.shape == (4, K, 32 * 32)
    loss = model.losses(out, b)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    trained = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == ({"text", "fusion"} if name == "no_discovery" else {"text", "fusion", "appearance"}), trained


def test_cache_reads_back_and_refuses_another_recipe(variant_folder):
    folder, root, paths = variant_folder
    before = paths["query_slots"].stat().st_mtime_ns
    pc = EntityPretrainConfig(**ENTITY_VARIANTS["query_slots"], **TINY)
    assert cached_entity_weights(pc, folder, root) == paths["query_slots"]
    assert paths["query_slots"].stat().st_mtime_ns == before  # read back, not trained again
    with pytest.raises(ValueError, match=r"was pretrained with steps=2 \(this run: 3\)"):
        cached_entity_weights(replace(pc, steps=3), folder, root)


def test_a_folder_without_the_variant_names_the_file_and_the_command(tmp_path):
    cfg = get_preset("sag_tiny").override(
        {"model.text.vocab_size": 40, "model.sag.slot_type": "random", "model.sag.entity_weights": str(tmp_path)}
    )
    missing = r"no entities_shaperefs64-slot_type=random\.pt in that folder.*pretrain-entities"
    with pytest.raises(FileNotFoundError, match=missing):
        build_model(cfg)
    with pytest.raises(ValueError, match=r"model\.sag\.slot_type='random' \(the weights need 'entity'\)"):
        build_model(cfg.override({"model.sag.entity_weights": "packaged"}))  # the shipped module is the default


@pytest.mark.parametrize(
    "over,words",
    [
        ({"model.sag.entity_discovery": False}, "entity_pieces=4: expected model.sag.entity_appearance=True"),
        (
            {"model.sag.entity_discovery": False, "model.sag.entity_pieces": 0},
            "the tokens are the entities; expected model.sag.entity_appearance=False",
        ),
        (
            {
                "model.sag.entity_discovery": False,
                "model.sag.entity_pieces": 0,
                "model.sag.entity_appearance": False,
                "model.sag.slot_vector": True,
                "model.sag.interaction": False,
            },
            "there are no slots, so interaction=False would change nothing",
        ),
    ],
)
def test_validate_refuses_what_does_not_work(over, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        validate_config(get_preset("sag_tiny").override(over))


def test_validate_accepts_every_variant_of_sag_tiny():
    "Each variant of SaG's tables 2 and 3 is a valid sag_tiny config that differs from sag_tiny where it says."
    base = flat_config(get_preset("sag_tiny"))
    for name, change in ENTITY_VARIANTS.items():
        over = entity_overrides(EntityPretrainConfig(**change))
        cfg = flat_config(validate_config(get_preset("sag_tiny").override(over)))
        assert over and {k: cfg[k] for k in over} == over, name
        assert {k for k in cfg if cfg[k] != base[k]} == {k for k in over if over[k] != base[k]}, name


def test_pretrain_entities_cli_sets_a_variant_and_names_its_file(tmp_path, shaperefs_data, capsys):
    from ris_nb.cli import main

    torch.set_num_threads(1)
    data, out = shaperefs_data(40, 2, 64) / "shaperefs", tmp_path / "ents"
    assert (
        main(
            [
                "pretrain-entities",
                "--data",
                str(data),
                "--out",
                str(out),
                "--steps",
                "2",
                "--n-val",
                "0",
                "--set",
                "slot_type=random",
                "interaction=false",
            ]
        )
        == 0
    )
    m = load_entity_model(out / "entities_shaperefs64-slot_type=random-interaction=False.pt")
    assert (m.cfg.slot_type, m.cfg.interaction, m.cfg.steps) == ("random", False, 2)
    assert main(["pretrain-entities", "--data", str(data), "--out", str(out), "--set", "slots=3"]) == 2
    assert "--set slots: expected EntityPretrainConfig fields (image_size, " in capsys.readouterr().err
    assert main(["pretrain-entities", "--data", str(data), "--out", str(out), "--set", "recon=maybe"]) == 2
    assert "recon='maybe': expected a bool like the default True" in capsys.readouterr().err


def test_study_runs_a_variant_row_at_toy_size(tmp_path):
    """`sag` and one `sag_pre_*` row through the study (one seed, two steps each): the module is pretrained once into
    OUT/entities, the row loads it, the claim between them is made; run again, everything is read back."""
    from ris_nb import experiments as E
    from ris_nb import study_design as D
    from ris_nb.study_runner import run_study

    torch.set_num_threads(1)
    budget = E.Budget(n_images=60, steps=2, batch_size=8, entity_steps=2, entity_scenes=40)
    names = ["sag", "sag_pre_no_interaction"]
    with pytest.raises(ValueError, match="sag_pre_no_interaction"):
        D.study_rows("magnet", names)  # a SaG row, not MagNet's
    st = run_study(tmp_path, only="sag", seeds=1, budget=budget, progress=False, names=names)
    assert set(st["rows"]) == set(names) and [c["variant"] for c in st["claims"]] == ["sag"]
    path = tmp_path / "entities" / "entities_shaperefs64-interaction=False.pt"
    assert load_entity_model(path).cfg == EntityPretrainConfig(interaction=False, steps=2)
    res = json.loads((tmp_path / "sag_pre_no_interaction" / "seed0" / "result.json").read_text())
    assert res["config"]["model"]["sag"]["entity_weights"] == str(tmp_path / "entities")
    assert res["config"]["model"]["sag"]["interaction"] is False
    before = path.stat().st_mtime_ns
    st2 = run_study(tmp_path, only="sag", seeds=1, budget=budget, progress=False, names=names)
    assert st2["runs_done_now"] == 0 and path.stat().st_mtime_ns == before
