"Config round trip, bad keys, presets and the console script (no network needed)."

import json
import sys
from configparser import ConfigParser
from pathlib import Path

import pytest

import ris_nb
from conftest import cli, run
from ris_nb.core import Config, parse_override, seed_everything
from ris_nb.machine import amp_dtype
from ris_nb.presets import get_preset, list_presets

ROOT = Path(__file__).resolve().parents[1]


def test_every_preset_round_trips_through_json():
    names = list_presets()
    assert {"lavt_tiny", "lavt_paper", "magnet_tiny", "magnet_paper", "sag_tiny", "sag_paper"} <= set(names)
    for name in names:
        cfg = get_preset(name)
        assert cfg.name == name
        assert Config.from_json(cfg.to_json()) == cfg
        assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_paper_presets_follow_their_papers():
    """Each *_paper preset selects on its paper's headline metric, trains the papers' epochs and tokenises as its
    code does."""
    # LAVT train.py / MagNet README: oIoU; SaG train_cma_recon.py: mIoU
    headline = {"lavt": "oIoU", "magnet": "oIoU", "sag": "mIoU"}
    papers = [n for n in list_presets() if n.endswith("_paper")]
    assert {"lavt_paper", "lavt_mg_paper", "magnet_paper", "sag_paper"} <= set(papers)
    for name in papers:
        cfg = get_preset(name)
        assert cfg.eval.select_metric == headline[cfg.model.name], name
        assert cfg.train.epochs == (50 if cfg.model.name == "sag" else 40), name
        assert (cfg.data.max_tokens, cfg.data.pad_to) == (
            (512, "longest") if cfg.model.name == "sag" else (20, "max_tokens")
        ), name
    for name in [n for n in list_presets() if not n.endswith("_paper")]:  # CPU presets count steps
        assert get_preset(name).train.epochs == 0, name


def test_unknown_key_names_key_and_allowed_ones():
    with pytest.raises(ValueError) as e:
        Config.from_dict({"model": {"vision": {"windw_size": 7}}})
    msg = str(e.value)
    assert "windw_size" in msg and "window_size" in msg


def test_unknown_top_level_key():
    with pytest.raises(ValueError, match="allowed keys: name, seed, data, model, train, eval"):
        Config.from_dict({"optimizer": {}})


@pytest.mark.parametrize(
    "key,value,fragment",
    [
        ("train.lr", "fast", "train.lr"),
        ("train.max_steps", 2.5, "train.max_steps"),
        ("model.mg.enabled", 1, "model.mg.enabled"),
        ("data.test_splits", "testA", "data.test_splits"),
        ("train.nope", 1, "allowed keys in train"),
        ("nope.lr", 1, "sections here"),
    ],
)
def test_override_type_and_key_errors(key, value, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        get_preset("lavt_tiny").override({key: value})


def test_override_returns_new_config():
    cfg = get_preset("lavt_tiny")
    new = cfg.override({"train.lr": 1e-4, "model.vision.depths": [2, 2, 2, 2]})
    assert new.train.lr == 1e-4 and new.model.vision.depths == [2, 2, 2, 2]
    assert cfg.train.lr != 1e-4


def test_parse_override_values():
    assert parse_override("model.mg.enabled=true") == ("model.mg.enabled", True)
    assert parse_override('data.test_splits=["testA"]') == ("data.test_splits", ["testA"])
    with pytest.raises(ValueError, match="key=value"):
        parse_override("train.lr")


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="lavt_tiny"):
        get_preset("lavt_huge")


def test_seed_and_amp():
    import torch

    g1 = seed_everything(3)
    a = torch.rand(2, generator=g1)
    g2 = seed_everything(3)
    assert torch.equal(a, torch.rand(2, generator=g2))
    assert amp_dtype("cpu") is None


def test_console_script_version_matches_settings():
    cfg = ConfigParser()
    cfg.read(ROOT / "settings.ini")
    out = cli("--version", check_rc=0)
    assert out.stdout.strip() == f"ris_nb {cfg['DEFAULT']['version']}" == f"ris_nb {ris_nb.__version__}"
    out = cli("--help", check_rc=0)
    assert "synth" in out.stdout


def test_core_does_not_import_the_models():
    """`ris_nb.registry` (and `ris_nb.core` below it) holds the registry only: importing it loads no model module, yet
    every model name is known (`MODEL_MODULES`) and `validate_config` refuses an unknown one before any model is
    loaded."""
    code = (
        "import sys, ris_nb.registry as c; from ris_nb.presets import get_preset; "
        "assert not [m for m in sys.modules if m.startswith('ris_nb.models')], sys.modules.keys(); "
        "assert not c._MODELS; "
        "cfg = get_preset('lavt_tiny').override({'model.name': 'nope'})\n"
        "try: c.validate_config(cfg)\nexcept ValueError as e: print(e)\n"
        "print(c.model_names(), [m for m in sys.modules if m.startswith('ris_nb.models')])"
    )
    out = run([sys.executable, "-c", code]).stdout.splitlines()
    assert "model.name='nope': expected one of lavt, magnet, sag, tiny_refer" in out[0]
    assert out[1] == "['lavt', 'magnet', 'sag', 'tiny_refer'] []"


def test_a_fresh_process_builds_every_preset_from_core_and_presets():
    """Importing `ris_nb.core` and `ris_nb.presets` only, every preset's model builds: the first lookup of a model
    name (and of a part, LAVT's MG head) imports the module that registers it. Paper presets at random init."""
    code = """
import sys
from ris_nb.registry import build_model, model_spec
from ris_nb.presets import get_preset, list_presets
for name in list_presets():
    cfg = get_preset(name)
    minilm = cfg.model.text.encoder == "minilm"
    o = {"model.text.vocab_size": 30522 if minilm else 100}
    if cfg.model.text.encoder not in ("minilm", "bert"):  # a hub model (bert-base-uncased): the same sizes, random init
        o["model.text.encoder"] = "bert"
    if not cfg.model.vision.weights:
        o["model.vision.weights"] = "random"
    model = build_model(cfg.override(o))
    print(name, cfg.model.name, isinstance(model, model_spec(cfg.model.name).model_type))
print(sorted(m for m in sys.modules if m.startswith("ris_nb.models.")))
"""
    out = run([sys.executable, "-W", "ignore", "-c", code]).stdout.splitlines()
    built = {line.split()[0]: line.split()[1:] for line in out[:-1]}
    assert set(built) == set(list_presets())
    assert {n: m for n, (m, _) in built.items()} == {n: get_preset(n).model.name for n in list_presets()}
    assert all(ok == "True" for _, ok in built.values()), built  # each the class its registry entry names
    assert {"lavt", "magnet", "sag", "tiny_refer"} == {m for m, _ in built.values()}
    assert "ris_nb.models.mask_grounding" in out[-1]  # the MG part of lavt_mg_*, imported on its first lookup


def test_model_capabilities_come_from_the_registry():
    """What callers ask of a model (its sampler, grounding diagnostic, image index) is in its registry entry, by name
    or by class."""
    import torch
    from ris_nb.models import model_spec
    from ris_nb.models.sag import SaG

    assert model_spec("sag").model_type is SaG and model_spec("sag").grounding == "shatter_gather"
    assert model_spec("sag").pairs_sentences(get_preset("sag_tiny").override({"model.sag.in_image_negatives": True}))
    assert not model_spec("lavt").pairs_sentences(get_preset("lavt_tiny"))
    assert all(model_spec(n).takes_image_index for n in ("lavt", "magnet", "sag"))
    assert model_spec(torch.nn.Linear(2, 2)).build is None and not model_spec(torch.nn.Linear(2, 2)).takes_image_index
    with pytest.raises(ValueError, match="unknown model 'nope'; available models: lavt, magnet, sag, tiny_refer"):
        model_spec("nope")


def test_builds_tiny_models_without_network(monkeypatch):
    "Every tiny preset builds offline (random init, no hub access)."
    import socket
    from ris_nb.models import build_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*a, **k):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    for name in ["lavt_tiny", "lavt_mg_tiny", "magnet_tiny", "sag_tiny"]:
        model = build_model(get_preset(name).override({"model.text.vocab_size": 100}))
        assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", ["magnet_paper", "sag_paper"])
def test_paper_preset_sources(name):
    """A paper preset's provenance is registered with it and names a source for every field (source_table raises
    otherwise)."""
    from ris_nb.core import flat_config, source_table
    from ris_nb.presets import preset_sources

    tab = source_table(get_preset(name), preset_sources(name))
    assert len(tab.splitlines()) == 2 + len(flat_config(get_preset(name)))
    assert preset_sources(name) is not preset_sources(name)  # a copy: a caller cannot edit the registry


def test_preset_sources_missing():
    from ris_nb.presets import preset_sources

    with pytest.raises(ValueError, match="lavt_tiny.*no recorded sources"):
        preset_sources("lavt_tiny")
