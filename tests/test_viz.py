"""ris_nb.viz and its appendices (picture_views, run_curves): every picture function on every tiny preset it applies to
(axes and image content, not only "no error"), a clear error on the presets it does not apply to, and the checkpoint
helper that the notebooks and the demo share."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from ris_nb import picture_inputs as pi
from ris_nb import picture_views as pv
from ris_nb import run_curves as rc
from ris_nb import viz
from ris_nb.run_folder import load_run
from ris_nb.data.refer import Refer
from ris_nb.io import load_image
from ris_nb.data.transforms import make_dataloaders
from ris_nb.evaluate import evaluate
from ris_nb.metrics import intersection_union

TINY = ["lavt_tiny", "lavt_mg_tiny", "magnet_tiny", "sag_tiny"]
PWAM = ["lavt_tiny", "lavt_mg_tiny", "magnet_tiny"]
MG = ["lavt_mg_tiny", "magnet_tiny"]
QUICK = {
    "data.image_size": 64,
    "train.max_steps": 2,
    "train.eval_every": 2,
    "train.ckpt_every": 2,
    "train.log_every": 1,
    "train.batch_size": 4,
    "eval.batch_size": 8,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shaperefs_data):
    """Each tiny preset trained for 2 steps on 24 ShapeRefs scenes at 64 px: {preset: (cfg, tokenizer, model, val
    batch, run dir)}."""
    torch.set_num_threads(1)
    root, data = tmp_path_factory.mktemp("viz"), shaperefs_data(24, 3, 64)
    out = {}
    for p in TINY:
        ckpt = pi.ensure_checkpoint(p, data, root / "runs" / p, QUICK)
        cfg, tok, model = load_run(ckpt)
        batch = next(iter(make_dataloaders(cfg.override({"eval.batch_size": 4}), tok, splits=["val"])["val"]))
        out[p] = (cfg, tok, model, batch, ckpt.parent)
    return out


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


def varied(ax) -> bool:
    "The first image drawn on `ax` is not a constant picture."
    return float(np.asarray(ax.images[0].get_array(), dtype=float).std()) > 1e-6


def test_ensure_checkpoint_reuses(runs):
    cfg, _, _, _, run_dir = runs["magnet_tiny"]
    best = run_dir / "best.pt"
    before = best.stat().st_mtime_ns
    assert pi.ensure_checkpoint("magnet_tiny", cfg.data.root, run_dir, QUICK) == best
    assert best.stat().st_mtime_ns == before  # found, not retrained
    assert (run_dir / "tokenizer").is_dir() and (run_dir / "log.jsonl").is_file()
    with pytest.raises(ValueError, match="another config"):  # never a stale checkpoint for a changed recipe
        pi.ensure_checkpoint("magnet_tiny", cfg.data.root, run_dir, {**QUICK, "train.lr": 1e-4})


def test_config_tag():
    from ris_nb.presets import get_preset

    base = get_preset("sag_tiny")
    assert pi.config_tag(base) == pi.config_tag(base.override({"data.root": "/elsewhere", "train.out_dir": "x"}))
    assert pi.config_tag(base) != pi.config_tag(base.override({"train.lr": 1e-4}))
    assert len(pi.config_tag(base)) == 8


@pytest.mark.parametrize("preset", TINY)
def test_plot_predictions(runs, preset):
    cfg, tok, model, b, _ = runs[preset]
    _, probs = viz.predict_probs(model, b)
    assert probs.shape == b.masks.shape
    fig = viz.plot_predictions(b.images, probs, b.masks, b.meta["sentence"], cfg.data.normalize, ncols=3)
    axs = image_axes(fig)
    assert len(axs) == len(b) and all(varied(ax) for ax in axs)
    inter, union = intersection_union(probs[:, None], b.masks)
    for ax, i, u, s in zip(axs, inter.tolist(), union.tolist(), b.meta["sentence"]):
        assert ax.get_title().endswith(f"IoU {(i / u if u else 0.0):.2f}")
        assert s.split()[0] in ax.get_title()


def test_overlay_dims_outside_prediction():
    img = np.full((8, 8, 3), 0.8)
    pred = np.zeros((8, 8), bool)
    pred[2:5, 2:5] = True
    fig, ax = plt.subplots()
    viz.draw_overlay(ax, img, pred, pred, dim=0.5)
    shown = np.asarray(ax.images[0].get_array())
    assert np.allclose(shown[3, 3], 0.8) and np.allclose(shown[0, 0], 0.4)
    assert len(ax.collections) >= 2  # two outlines: prediction and ground truth


@pytest.mark.parametrize("preset", PWAM)
def test_word_attention(runs, preset):
    cfg, tok, model, b, _ = runs[preset]
    maps = viz.word_attention(model, b)
    assert len(maps.l2v) == 4
    for a in maps.l2v:
        assert a.shape[:2] == b.input_ids.shape
        torch.testing.assert_close(a.sum(1), torch.ones_like(a.sum(1)), atol=1e-4, rtol=0)
    if preset == "magnet_tiny":
        for a in maps.v2l:
            s = a.flatten(2).sum(-1)[b.attention_mask.bool()]
            torch.testing.assert_close(s, torch.ones_like(s), atol=1e-4, rtol=0)
    else:
        assert maps.v2l is None
    fig = viz.plot_word_attention(model, b, tok, i=1, maps=maps)
    words = viz.pick_words(viz.tokens_of(tok, b.input_ids[1], b.attention_mask[1]))
    assert len(fig.axes) == len(words) * (8 if preset == "magnet_tiny" else 4)
    assert all(len(ax.images) == 2 and varied(ax) for ax in fig.axes)


def test_lavt_attention_reproduces_the_module(runs):
    cfg, tok, model, b, _ = runs["lavt_tiny"]
    att = model.pwams[1].image_lang_att
    with viz.eval_mode(model), viz.capture([att], lambda m, a, o: (a, o)) as got:
        model(b)
    (x, l, m), o = got[0]
    a = viz.lavt_word_attention(att, x, l, m)
    v = (att.f_value(l.transpose(1, 2)) * m[:, None]).reshape(len(b), att.heads, -1, l.shape[1])
    again = att._chan(att.W, (a @ v.transpose(2, 3)).transpose(1, 2).reshape(len(b), x.shape[1], -1))
    torch.testing.assert_close(again, o, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preset", TINY)
def test_cam_pyramid(runs, preset):
    cfg, tok, model, b, _ = runs[preset]
    if preset != "magnet_tiny":
        with pytest.raises(ValueError, match="CAM"):
            pv.cam_maps(model, b)
        return
    cm = pv.cam_maps(model, b)
    for s, pooled in enumerate(cm.pooled):
        assert {p: tuple(t.shape) for p, t in pooled.items()} == {
            p: (len(b), model.backbone.channels[s] // 4, p, p) for p in (1, 2, 3, 6)
        }
    fig = pv.plot_cam_pyramid(model, b, maps=cm)
    assert len(image_axes(fig)) == 4 * 5 + 2
    assert varied(fig.axes[0])


@pytest.mark.parametrize("preset", TINY)
def test_mask_grounding(runs, preset):
    cfg, tok, model, b, _ = runs[preset]
    if preset not in MG:
        with pytest.raises(ValueError, match="Mask Grounding"):
            pv.mg_topk(model, b, 0, 1, {"m": b.masks[0]})
        return
    pos = pv.default_hidden_word(viz.tokens_of(tok, b.input_ids[0], b.attention_mask[0]))
    full, empty = torch.ones_like(b.masks[0]), torch.zeros_like(b.masks[0])
    top = pv.mg_topk(model, b, 0, pos, {"full": full, "empty": empty}, k=4)
    for p, j in top.values():
        assert p.shape == j.shape == (4,) and (p[:-1] >= p[1:]).all() and float(p.sum()) <= 1 + 1e-5
    assert not torch.equal(top["full"][0], top["empty"][0])  # the mask is an input of the predictor
    fig = pv.plot_mask_grounding(model, b, tok, i=0, masks={"whole image": full.numpy(), "nothing": empty}, k=4)
    bars = [ax for ax in fig.axes if not ax.images]
    assert [len(ax.patches) for ax in bars] == [4, 4]
    assert "[MASK]" in fig._suptitle.get_text() and all(varied(ax) for ax in image_axes(fig))
    with pytest.raises(ValueError, match="not a word"):
        pv.mg_topk(model, b, 0, 0, {"m": full})


@pytest.mark.parametrize("preset", TINY)
def test_plot_sag(runs, preset):
    cfg, tok, model, b, _ = runs[preset]
    if preset != "sag_tiny":
        with pytest.raises(ValueError, match="SaG"):
            viz.plot_sag(model, b)
        return
    fig = viz.plot_sag(model, b, i=2)
    with viz.eval_mode(model):
        out = model(b)
    # the preset's entities: pieces of the K slots, at most 2K
    K = out.a_slot.shape[1]
    assert K == 2 * model.slots.n_slots and len(fig.axes[2].patches) == K
    assert abs(sum(p.get_height() for p in fig.axes[2].patches) - 1) < 1e-4
    assert all(varied(ax) for ax in image_axes(fig))
    comp = viz.entity_composite(out.a_slot[2], viz.entity_colours(model, K), out.hw)
    assert comp.shape == (*out.hw, 3)
    np.testing.assert_allclose(
        comp.reshape(-1, 3), (out.a_slot[2].T.numpy() @ viz.entity_colours(model, K)).clip(0, 1), atol=1e-6
    )
    init = pv.plot_slot_init(model, b, i=2, outputs=out)
    assert len(init.axes[0].collections) == model.slots.init.n_gaussians + 1  # a cloud per Gaussian + the slots


@pytest.mark.parametrize("slot_type", ["random", "query"])
def test_plot_sag_other_slot_types(runs, slot_type):
    from ris_nb.registry import build_model

    cfg, tok, _, b, _ = runs["sag_tiny"]
    torch.manual_seed(0)
    # other slots: no shipped weights
    model = build_model(
        cfg.override(
            {
                "model.sag.slot_type": slot_type,
                "model.sag.entity_weights": "",
                "model.sag.freeze_entities": False,
                "model.sag.entity_pieces": 0,
                # the slots themselves
                "model.sag.entity_appearance": False,
                "model.sag.slot_vector": True,
            }
        )
    )
    fig = viz.plot_sag(model, b)
    assert len(fig.axes[2].patches) == model.slots.n_slots
    assert len(pv.plot_slot_init(model, b).axes) == 1
    if slot_type == "query":
        with pytest.raises(ValueError, match="no Gaussian"):
            pv.slot_clouds(model)


@pytest.mark.parametrize("preset", TINY)
def test_plot_log(runs, preset):
    *_, run_dir = runs[preset]
    recs = rc._records(run_dir)
    parts = {k for r in recs if "loss" in r for k in r} - rc._NOT_LOSSES
    fig = rc.plot_log(run_dir)
    titled = {ax.get_title(): ax for ax in fig.axes if ax.lines}
    assert set(titled) == parts | {"learning rate", "validation (%)"}
    assert len(titled["loss"].lines[0].get_xdata()) == QUICK["train.max_steps"]
    with pytest.raises(FileNotFoundError, match="no training log"):
        rc.plot_log(run_dir / "missing")


def test_plot_by_type(runs):
    results = {}
    for p in TINY:
        cfg, tok, model, _, _ = runs[p]
        val = make_dataloaders(cfg, tok, splits=["val"])["val"]
        results[p] = evaluate(model, val, protocol=cfg.eval.protocol, progress=False, keep_samples=False)
    one = rc.plot_by_type(results["magnet_tiny"])
    types = sorted(results["magnet_tiny"]["by_type"])
    assert [len(ax.patches) for ax in one.axes] == [len(types)] * 2
    heights = [p.get_height() for p in one.axes[0].patches]
    assert heights == pytest.approx([results["magnet_tiny"]["by_type"][t]["oIoU"] for t in types])
    many = rc.plot_by_type(results, metrics=("mIoU",))
    assert len(many.axes[0].patches) == len(types) * len(TINY)
    assert [t.get_text() for t in many.axes[0].get_legend().get_texts()] == TINY
    with pytest.raises(ValueError, match="not an evaluate"):
        rc.plot_by_type({"x": {"overall": {}}})


def test_story_and_single_batch(runs):
    cfg, tok, model, b, _ = runs["magnet_tiny"]
    refer = Refer(cfg.data.root, cfg.data.dataset, cfg.data.split_by)
    r = refer.refs[b.meta["ref_id"][0]]
    img, gt = load_image(refer.image_path(r["image_id"])), refer.mask(r["ann_id"])
    one = pi.single_batch(cfg, tok, img, b.meta["sentence"][0], gt)
    torch.testing.assert_close(one.images[0], b.images[0])  # the data pipeline's own transform
    torch.testing.assert_close(one.input_ids[0], b.input_ids[0])
    torch.testing.assert_close(one.masks[0], b.masks[0])
    fig = pv.plot_story(img, b.meta["sentence"][0], gt, runs["magnet_tiny"][:3], runs["sag_tiny"][:3])
    assert len(image_axes(fig)) == 7 and all(varied(ax) for ax in image_axes(fig))
    # MG top-3, A^fuse over pieces
    assert sum(len(ax.patches) for ax in fig.axes if not ax.images) == 3 + 2 * runs["sag_tiny"][2].slots.n_slots
    with pytest.raises(ValueError, match="empty"):
        pi.single_batch(cfg, tok, img, "   ")
    with pytest.raises(ValueError, match="RGB"):
        pi.single_batch(cfg, tok, img[..., 0], "the circle")
    with pytest.raises(ValueError, match="mask shape"):
        pi.single_batch(cfg, tok, img, "the circle", gt[1:])


def test_key_words_skip_words_without_meaning():
    "The demo's attention figure shows the words that matter ('the square that is not yellow': square, not, yellow)."
    toks = ["[CLS]", "the", "square", "that", "is", "not", "yellow", "[SEP]"]
    assert [toks[k] for k in pv.key_words(toks)] == ["square", "not", "yellow"]
    assert [toks[k] for k in viz.pick_words(toks, max_words=4)] == ["the", "square", "that", "is"]
    assert pv.key_words(["[CLS]", "the", "[SEP]"]) == [1]  # only function words: still something


@pytest.mark.parametrize("preset", PWAM)
def test_word_attention_explained(runs, preset):
    "explain_word_attention: the same panels, a colour bar per direction labelled in words, and the glossary line."
    cfg, tok, model, b, _ = runs[preset]
    fig = pv.explain_word_attention(model, b, tok, i=1)
    words = viz.pick_words(viz.tokens_of(tok, b.input_ids[1], b.attention_mask[1]))
    assert len(image_axes(fig)) == len(words) * (8 if preset == "magnet_tiny" else 4)
    bars = [ax.get_xlabel() for ax in fig.axes if not ax.images]
    assert bars == ["L→V: the pixel's weight on the word (one scale)"] + (
        ["V→L: the word's attention (each panel its own range)"] if preset == "magnet_tiny" else []
    )
    glossary = " ".join(t.get_text() for t in fig.texts)
    assert pv.GLOSSARY["L→V"] in glossary and (pv.GLOSSARY["V→L"] in glossary) == (preset == "magnet_tiny")


def test_plot_sag_explained(runs):
    cfg, tok, model, b, _ = runs["sag_tiny"]
    plain, fig = viz.plot_sag(model, b, i=2), pv.explain_sag(model, b, i=2)
    assert len(fig.axes) == len(plain.axes) + 1 and fig.axes[-1].get_xlabel() == "gathered map (min–max)"
    assert all(pv.GLOSSARY[k] in " ".join(t.get_text() for t in fig.texts) for k in ("A^slot", "A^fuse", "gathered"))


def test_read_sentence_names_unknown_and_cut_words(runs):
    "What a model cannot read is said: an unknown word, words past max_tokens, a sentence of unknown words only."
    cfg, tok, _, _, _ = runs["magnet_tiny"]
    n = cfg.data.max_tokens - tok.num_special_tokens_to_add(pair=False)
    r = pi.read_sentence(tok, "the zorblax circle", cfg.data.max_tokens)
    assert (r.kept, r.unknown, r.cut) == (["the", "circle"], ["zorblax"], [])
    assert r.note() == 'unknown to this model: zorblax; it reads "the circle"'
    long = pi.read_sentence(tok, " ".join(["the circle"] * n), cfg.data.max_tokens)
    assert len(long.kept) == n and len(long.cut) == n and "cut, the sentence is too long" in long.note()
    assert pi.read_sentence(tok, "the circle", cfg.data.max_tokens).note() == ""
    assert "no word of the sentence is known" in pi.read_sentence(tok, "zorblax quux", cfg.data.max_tokens).note()
