"MagNet: parity with the official network, presets, switches, converter errors, and a short CPU training that learns."

import json
from types import SimpleNamespace

import pytest
import torch

from ris_nb.core import build_model
from ris_nb.presets import get_preset
from ris_nb.testing import official_fixture
from ris_nb.models.encoders import offline_random
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


def test_mg_masked_sentence_shares_the_sentence_text_calls():
    "MG's masked sentence rides in the sentence's BERT calls: same logits and gradients as its own text-only pass."
    torch.manual_seed(0)
    model = build_model(_tiny()).train()
    for mod in model.modules():  # no dropout or drop path: both ways see the same network
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
        if hasattr(mod, "drop_prob"):
            mod.drop_prob = 0.0
        if isinstance(mod, torch.nn.MultiheadAttention):
            mod.dropout = 0.0
    b, state = _batch(), model.mg.generator.get_state()
    rows = []
    hook = model.text.bert.encoder.layer[0].register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    out = model(b)
    hook.remove()
    assert rows == [2 * len(b.input_ids)]  # one call for the sentence and its masked copy
    shared = out.mask_logits.sum() + out.mg["logits"].sum()
    grads = torch.autograd.grad(shared, list(model.parameters()), allow_unused=True)
    model.mg.generator.set_state(state)
    masked, targets = model.mg.mask(b.input_ids, b.attention_mask)
    assert torch.equal(targets, out.mg["targets"])
    feats, _ = model.encode(b.images, b.input_ids, b.attention_mask)
    mf, maps = model.pixel_decoder(feats)
    alone = model.mg(model.text(masked, b.attention_mask).tokens, b.attention_mask, maps[model.mg_level], b.masks)
    final = model.refine(model.decoder(maps, mf).mask_logits[-1], b.images, None)
    assert (final - out.mask_logits).abs().max() <= 1e-5
    assert (alone - out.mg["logits"]).abs().max() <= 1e-5
    separate = final.sum() + alone.sum()
    ref = torch.autograd.grad(separate, list(model.parameters()), allow_unused=True)
    pairs = [(g, r) for g, r in zip(grads, ref) if r is not None]
    assert len(pairs) > 100 and all(g is not None for g, _ in pairs)
    assert max(((g - r).abs().max() / r.abs().max().clamp(min=1e-3)).item() for g, r in pairs) <= 1e-4


def test_one_query_self_attention_is_its_value_path():
    "One query: softmax over one key is exactly 1, so `value_path` gives `forward`'s output bit for bit."
    from ris_nb.models.magnet import Attention

    torch.manual_seed(0)
    att = Attention(64, 4)
    torch.nn.init.normal_(att.in_proj_bias)
    q, qpos = torch.randn(3, 1, 64, requires_grad=True), torch.randn(3, 1, 64)
    full, short = att(q + qpos, q + qpos, q), att.value_path(q)
    assert torch.equal(full, short)
    g = torch.randn_like(full)
    (dq, dw), (sq, sw) = (torch.autograd.grad(o, [q, att.in_proj_weight], g) for o in (full, short))
    assert (dq - sq).abs().max() <= 1e-5 * dq.abs().max()  # forward's query/key path adds only rounding noise
    assert not sw[:128].any() and dw[:128].abs().max() <= 1e-5 * dw.abs().max()
    assert (dw[128:] - sw[128:]).abs().max() <= 1e-6 * dw.abs().max()


def test_cam_branches_run_as_one_batch_like_a_loop():
    "CAM's branches as one batch (`pyramid_batched`, vmap): a loop's outputs, and its gradients within 1e-5."
    from ris_nb.models.alignment import CAM

    torch.manual_seed(0)
    cam = CAM(32, 16).train()
    words, mask = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    for hw in [(2, 3), (7, 5)]:  # a branch on the map's pixels (pooling would repeat them); pooled branches only
        v = torch.randn(2, 32, *hw, requires_grad=True)
        fast = cam.pyramid_batched(v, words, mask)
        loop = [
            pw(br(v).flatten(2).transpose(1, 2), words, mask).transpose(1, 2).reshape(2, 8, p, p)
            for p, br, pw in zip(cam.pool_sizes, cam.branches, cam.pwams)
        ]
        assert max((f - s).abs().max() for f, s in zip(fast, loop)) <= 1e-6
        named = [("v", v), *cam.branches.named_parameters(), *cam.pwams.named_parameters()]
        g = [torch.randn_like(f) for f in fast]
        grads = [torch.autograd.grad(o, [p for _, p in named], g) for o in (fast, loop)]
        for (name, _), a, b in zip(named, *grads):
            # a key bias shifts every score alike: analytically zero, rounding noise both ways
            tol = 1e-6 if name.endswith("k.bias") else 1e-5 * b.abs().max()
            assert (a - b).abs().max() <= tol, name


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
    from ris_nb.train import prepare

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
