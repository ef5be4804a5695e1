"MagNet: parity with the official network, presets, switches, converter errors, and a short CPU training that learns."

import json
from types import SimpleNamespace

import pytest
import torch

from ris_nb.registry import build_model
from ris_nb.presets import get_preset
from ris_nb.testing import official_fixture
from ris_nb.models.encoder_builds import offline_random
from ris_nb.models.magnet import MagNet
from ris_nb.official import convert_magnet, load_magnet

FIX = official_fixture("magnet_official_tiny")  # tests/fixtures/, shipped with the repository
torch.set_num_threads(1)  # `make test` runs two pytest workers on two cores


def _batch(B=2, size=64, vocab=50, T=8, masks=True):
    g = torch.Generator().manual_seed(0)
    am = torch.ones(B, T, dtype=torch.long)
    am[0, T // 2 :] = 0
    m = torch.zeros(B, size, size)
    m[:, size // 4 : size // 2, size // 4 : size // 2] = 1
    return SimpleNamespace(
        images=torch.randn(B, 3, size, size, generator=g),
        input_ids=torch.randint(5, vocab, (B, T), generator=g) * am,
        attention_mask=am,
        masks=m if masks else None,
    )


def _tiny(**over):
    return get_preset("magnet_tiny").override({"model.text.vocab_size": 50, "data.image_size": 64, **over})


@pytest.fixture(scope="module")
def fixture():
    from safetensors.torch import load_file

    return (
        load_file(FIX / "state_dict.safetensors"),
        torch.load(FIX / "inputs.pt", weights_only=True),
        torch.load(FIX / "outputs.pt", weights_only=True),
        json.loads((FIX / "config.json").read_text()),
    )


def test_parity_with_official(fixture):
    sd, inp, ref, oc = fixture
    model = load_magnet(sd, oc)
    batch = SimpleNamespace(
        images=inp["image"], input_ids=inp["input_ids"], attention_mask=inp["attention_mask"], masks=None
    )
    with torch.no_grad():
        out = model(batch, trace=True)
    assert (out.mask_logits - ref["pred_masks"]).abs().max() <= 1e-4
    for k, v in ref.items():
        if v.dtype == torch.bool:
            continue
        err = (out.trace[k].float() - v).abs().max().item()
        assert err <= 1e-4, f"{k}: max abs error {err:.2e}"
    assert (out.trace["mask_full"] != ref["mask_full"]).sum() <= 8  # margins ≥ 4.4e-4 (fixture README)


def test_converter_names_keys(fixture):
    sd, _, _, oc = fixture
    with pytest.raises(ValueError, match="missing keys.*lang_proj.weight"):
        load_magnet({k: v for k, v in sd.items() if k != "lang_proj.weight"}, oc)
    with pytest.raises(ValueError, match="bogus.weight"):
        convert_magnet(sd | {"bogus.weight": torch.zeros(1)})
    conv = convert_magnet(sd)
    model = MagNet(load_magnet(sd, oc).cfg)
    with pytest.raises(ValueError, match="unexpected keys.*extra.weight"):
        from ris_nb.official import load_magnet_state

        load_magnet_state(model, conv | {"extra.weight": torch.zeros(1)})


def test_loader_refuses_integer_and_nan_weights(fixture):
    sd, _, _, oc = fixture
    k = "lang_proj.weight"
    with pytest.raises(ValueError, match="integer where the model holds floats: .*lang_proj"):
        load_magnet(sd | {k: sd[k].round().long()}, oc)  # float weights cast to int64: would load rounded
    bad = sd[k].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity: .*lang_proj"):
        load_magnet(sd | {k: bad}, oc)


@pytest.mark.parametrize("name", ["magnet_tiny", "magnet_mini"])
def test_preset_forward_backward(name):
    cfg = get_preset(name).override({"data.image_size": 64})
    if cfg.model.text.encoder == "bert":
        cfg = cfg.override({"model.text.vocab_size": 50})
    model = build_model(cfg).train()  # magnet_mini: packaged MobileNetV2 + MiniLM (installed by `make venv`)
    b = _batch(vocab=50 if cfg.model.text.encoder == "bert" else 1000)
    out = model(b)
    L = model.losses(out, b)
    assert set(L) >= {"loss", "bce", "dice", "cls", "cal", "mg"} and torch.isfinite(L["loss"])
    L["loss"].backward()
    assert model.predict(out, b).shape == (2, 1, 64, 64)
    assert [p.shape for p in model.predict(out, b, sizes=[(30, 40), (50, 20)])] == [(1, 30, 40), (1, 50, 20)]
    assert sum(len(g["params"]) for g in model.param_groups(cfg)) == sum(p.requires_grad for p in model.parameters())


def test_paper_preset_builds():
    model = MagNet(offline_random(get_preset("magnet_paper")).override({"model.text.vocab_size": 30522}))
    n = sum(p.numel() for p in model.parameters())
    assert 280e6 < n < 330e6, n


@pytest.mark.parametrize("switch", ["model.mg.enabled", "model.cal.cam", "model.cal.enabled"])
def test_switches_off(switch):
    cfg = _tiny(**{switch: False})
    model = build_model(cfg).train()
    b = _batch()
    out = model(b)
    L = model.losses(out, b)
    L["loss"].backward()
    key = {"model.mg.enabled": "mg", "model.cal.enabled": "cal"}.get(switch)
    if key:
        assert key not in L
    else:
        assert model.cams is None


@pytest.mark.parametrize("source", ["clean", "masked"])
def test_mg_hidden_words_leak_only_through_clean_visual_stream(source):
    from test_lavt import hidden_word_swap

    torch.manual_seed(0)
    model = build_model(_tiny(**{"model.mg.visual_source": source, "model.mg.visual_stride": 16})).eval()
    b = _batch()
    masked, b2 = hidden_word_swap(model, b)
    with torch.no_grad():
        same = torch.equal(model.fill_masked(b, masked), model.fill_masked(b2, masked))
    assert same == (source == "masked")


def test_mg_visual_stride_must_be_a_decoder_map():
    with pytest.raises(ValueError, match=r"visual_stride=4.*strides \[32, 16, 8\]"):
        build_model(_tiny(**{"model.mg.visual_stride": 4}))


def test_clean_and_compat_differ():
    b = _batch(masks=False)
    torch.manual_seed(0)
    a = MagNet(_tiny(**{"model.magnet.official_compat": True})).eval()
    c = MagNet(_tiny()).eval()
    # open the zero-init gates
    for g in list(a.word_gates) + list(a.gates):
        torch.nn.init.normal_(g.fc2.weight, std=0.5)
    c.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("unused.")}, strict=True)
    with torch.no_grad():
        assert (a(b).mask_logits - c(b).mask_logits).abs().max() > 1e-4


def test_short_training_learns(shaperefs_data):
    from ris_nb.training_run import prepare

    cfg = get_preset("magnet_tiny").override(
        {"data.root": str(shaperefs_data(60, 0)), "data.image_size": 64, "train.batch_size": 8, "eval.batch_size": 16}
    )
    with pytest.raises(ValueError, match="vocab_size is 0.*prepare"):
        build_model(cfg)
    # tokenizer → vocabulary → loaders → model seeded with cfg.seed = 0
    _, loaders, model, cfg = prepare(cfg, splits=["train", "val"])
    model.train()
    opt = torch.optim.AdamW(model.param_groups(cfg))
    losses, batches = [], [b for _, b in zip(range(4), loaders["train"])]
    for step in range(24):
        b = batches[step % len(batches)]
        L = model.losses(model(b), b)
        opt.zero_grad()
        L["loss"].backward()
        opt.step()
        losses.append(L["loss"].item())
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    model.eval()
    inter = union = 0
    with torch.no_grad():
        for b in loaders["val"]:
            p = model.predict(model(b), b)[:, 0] >= 0.5
            g = b.masks > 0.5
            inter += (p & g).sum().item()
            union += (p | g).sum().item()
    assert union > 0 and inter / union > 0.0  # an empty prediction scores oIoU 0


def test_an_image_size_whose_coarsest_map_is_one_pixel_is_refused_and_the_smallest_allowed_predicts():
    """At 32 px magnet_tiny's stage-4 map is 1×1: the pixel decoder's GroupNorm (one channel per group) normalises a
    single value, so a batch of one image failed at `predict` after training had run; it is refused before training.
    At 36 px (a 2×2 map) one image goes through."""
    from ris_nb.registry import validate_config

    cfg = offline_random(get_preset("magnet_tiny")).override({"model.text.vocab_size": 50})
    with pytest.raises(ValueError, match="data.image_size=32: too small for MagNet: its coarsest map would be 1×1"):
        validate_config(cfg.override({"data.image_size": 32}))
    small = cfg.override({"data.image_size": 36})
    validate_config(small)
    model = build_model(small).eval()
    with torch.no_grad():
        out = model(_batch(1, 36, masks=False))
    assert out.mask_logits.shape[0] == 1 and torch.isfinite(out.mask_logits).all()
