"""The architecture figures (ris_nb.diagrams) draw what the models do. A traced training step of `magnet_tiny` (both
forms), `lavt_tiny` and `sag_tiny` records which box's output each box reads (`trace_flows`: every tensor carries the
boxes its data came from, through every torch operation); every arrow between two traced boxes must be such a flow,
every flow between two boxes of a figure must be drawn, and every traced box must run."""

from functools import partial
from types import SimpleNamespace

import pytest
import torch

from ris_nb import diagrams as dg
from ris_nb.core import seed_everything
from ris_nb.registry import build_model
from ris_nb.presets import get_preset

torch.set_num_threads(1)  # `make test` runs two pytest workers on two cores

# sag_tiny with the paper's parts: its own ViT-free tokens stay, the entity module is trained and repaints the
# tokens (BroadcastDecoder), no appearance code, no entity pieces: the parts `sag_boxes` draws
SAG_PAPER_PARTS = {
    "model.sag.entity_weights": "",
    "model.sag.freeze_entities": False,
    "model.sag.decoder": "broadcast",
    "model.sag.entity_appearance": False,
    "model.sag.entity_pieces": 0,
}


def _batch(B: int, T: int = 8, size: int = 64, vocab: int = 50) -> SimpleNamespace:
    "Random images, sentences (padding in every other one) and square masks."
    g = torch.Generator().manual_seed(0)
    am = torch.ones(B, T, dtype=torch.long)
    am[::2, T // 2 :] = 0
    ids = torch.randint(5, vocab, (B, T), generator=g)
    ids[:, 0] = 2  # [CLS]
    m = torch.zeros(B, size, size)
    m[:, size // 4 : size // 2, size // 4 : size // 2] = 1
    return SimpleNamespace(
        images=torch.randn(B, 3, size, size, generator=g), input_ids=ids * am, attention_mask=am, masks=m
    )


def _step(model, batch):
    "One training step's forward: outputs, losses, the predicted mask."

    def step():
        out = model(batch)
        model.losses(out, batch)
        model.predict(out, batch)

    return step


@pytest.fixture(scope="module")
def models():
    """magnet_tiny (Mask Grounding and CAL on) in both forms, lavt_tiny, lavt_mg_tiny and sag_tiny, in train mode, each
    with a batch."""
    seed_everything(0)
    over = {"model.text.vocab_size": 50, "data.image_size": 64}
    out = {}
    for impl in ("reference", "fast"):  # MG's masked sentence: its own text pass, or in the sentence's layer calls
        magnet = build_model(get_preset("magnet_tiny").override({**over, "model.impl": impl})).train()
        assert magnet.mg is not None and magnet.cams is not None and magnet.cfg.model.cal.enabled
        out[f"magnet_{impl}"] = (magnet, _batch(2))
    lavt = build_model(get_preset("lavt_tiny").override(over)).train()
    lavt_mg = build_model(get_preset("lavt_mg_tiny").override(over)).train()
    assert lavt_mg.mg is not None and lavt_mg.cfg.model.mg.visual_source == "masked"
    sag = build_model(get_preset("sag_tiny").override({**over, **SAG_PAPER_PARTS})).train()
    return out | {"lavt": (lavt, _batch(2)), "lavt_mg": (lavt_mg, _batch(2)), "sag": (sag, _batch(4))}


FIGURES = {  # figure: (the model it draws, its boxes and arrows)
    "lavt": ("lavt", dg.lavt_boxes),
    **{
        f"{fig}_{impl}": (f"magnet_{impl}", spec)
        for impl in ("reference", "fast")
        for fig, spec in [
            ("magnet", dg.magnet_boxes),
            ("mask_grounding", partial(dg.mask_grounding_boxes, "magnet")),
            ("cam", dg.cam_boxes),
        ]
    },
    "mask_grounding_lavt": ("lavt_mg", partial(dg.mask_grounding_boxes, "lavt")),
    "sag": ("sag", dg.sag_boxes),
    "fusion_c3": ("sag", dg.fusion_boxes),
}


@pytest.fixture(scope="module")
def traces(models):
    "Each figure's traced step: (boxes, arrows, nodes that ran, flows)."
    out = {}
    for name, (model, spec) in FIGURES.items():
        boxes, arrows = spec()
        out[name] = (boxes, arrows, *dg.trace_flows(models[model][0], boxes, _step(*models[model])))
    return out


@pytest.mark.parametrize("name", FIGURES)
def test_figure_draws_the_traced_flows(traces, name):
    boxes, arrows, ran, flows = traces[name]
    traced = [b for b in boxes if dg.node(b)]
    assert len(traced) >= 5, f"{name}: only {len(traced)} boxes are tied to the model"
    problems = dg.figure_mismatches(boxes, arrows, ran, flows)
    assert not problems, "\n".join(problems)


def _without(arrows, *pairs):
    return [a for a in arrows if (a.src, a.dst) not in pairs]


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_old_magnet_flows_fail(traces, impl):
    "The two flows the earlier MagNet figure drew wrong are refused: hidden words straight into MG; CAM fed only r."
    boxes, arrows, ran, flows = traces[f"magnet_{impl}"]
    direct = _without(arrows, ("mgtext", "mg")) + [dg.Arrow("hide", "mg", "masked words", True)]
    problems = dg.figure_mismatches(boxes, direct, ran, flows)
    assert any("hide → mg" in p and "never feeds" in p for p in problems), problems
    only_r = _without(arrows, ("stage", "cam"), ("group", "cam"))
    problems = dg.figure_mismatches(boxes, only_r, ran, flows)
    assert f"flow {dg.SWIN} → cams.* is drawn by no arrow" in problems, problems
    assert f"flow {dg.LAYERS} → cams.* is drawn by no arrow" in problems, problems


def test_c3_without_the_sentences_and_a_box_that_never_runs_fail(traces, models):
    "C³ drawn as ẑ alone is refused; so is a box whose module the step never calls (the decoder outside training)."
    boxes, arrows, ran, flows = traces["sag"]
    problems = dg.figure_mismatches(boxes, _without(arrows, ("txt", "c3")), ran, flows)
    assert "flow text → models.sag.c3_loss is drawn by no arrow" in problems, problems
    sag, batch = models["sag"]
    sag.eval()  # no reconstruction outside training
    try:
        ran_eval, flows_eval = dg.trace_flows(sag, boxes, lambda: sag.predict(sag(batch), batch))
    finally:
        sag.train()
    assert "box 'rec' (decoder) never ran" in dg.figure_mismatches(boxes, arrows, ran_eval, flows_eval)


def test_tracing_leaves_the_models_as_they_were(models, traces):
    "After every trace: no hook left on any module, every wrapped function and method back in place."
    import ris_nb.models.sag as sag_module

    for name, (model, _) in models.items():
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()), name
        assert not any({"mask_losses", "alignment_loss", "loss"} & set(m.__dict__) for m in model.modules()), name
    assert sag_module.c3_loss is dg.implementation("models.sag.c3_loss")
    assert sag_module.c3_loss.__qualname__ == "c3_loss"
