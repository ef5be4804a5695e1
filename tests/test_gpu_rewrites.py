"""The step's operator-saving rewrites (issue 72) against the forms they replace, in float32: the deformable
attention's one-image sampler against one `grid_sample` per level, the unchunked FFN against the chunked one, and
the CAL loss's batched draws (uniform, no host sync, the per-image loss on the same draws)."""

import pytest
import torch
import torch.nn.functional as F

from ris_nb.models.alignment import _cal_positions, cal_loss
from ris_nb.models.magnet import DeformEncoderLayer, MSDeformAttn, reference_points


def by_level(attn: MSDeformAttn, v, shapes, r, off, aw) -> torch.Tensor:
    "The form `sample_by_image` replaced: one `grid_sample` per level (zeros, align_corners=False) → (B,Q,M,D)."
    B, Q, M, _ = aw.shape
    L, K, D = attn.levels, attn.points, v.shape[-1] // M
    n = M * L * K
    norm = off.new_tensor([[w, h] for h, w in shapes]).view(1, 1, 1, L, 1, 2)
    loc = (
        r.view(r.shape[0], Q, 1, 1, 1, 2) + torch.stack([off[..., :n], off[..., n:]], -1).view(B, Q, M, L, K, 2) / norm
    )
    grid = (2 * loc - 1).permute(3, 0, 2, 1, 4, 5).reshape(L, B * M, Q, K, 2)
    mix = aw.view(B, Q, M, L, K).permute(3, 0, 2, 1, 4).reshape(L, B * M, 1, Q, K)
    out = 0
    for l, (m, (h, w)) in enumerate(zip(v.split([h * w for h, w in shapes], 1), shapes)):
        img = m.view(B, h, w, M, D).permute(0, 3, 4, 1, 2).reshape(B * M, D, h, w)
        s = F.grid_sample(img, grid[l], mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + (s * mix[l]).sum(-1)
    return out.view(B, M, D, Q).permute(0, 3, 1, 2)


def _msda_inputs(shapes, B=2, dim=32, heads=4, points=3, spread=2.0, seed=0):
    "Value table, offsets (many beyond the borders) and attention weights as leaves, with the module."
    g = torch.Generator().manual_seed(seed)
    attn = MSDeformAttn(dim, len(shapes), heads, points)
    S = sum(h * w for h, w in shapes)
    n = heads * len(shapes) * points
    v = torch.randn(B, S, dim, generator=g).requires_grad_()
    off = (spread * torch.randn(B, S, 2 * n, generator=g)).requires_grad_()
    aw = torch.randn(B, S, heads, len(shapes) * points, generator=g).softmax(-1).requires_grad_()
    return attn, v, reference_points(shapes)[None], off, aw


def _off_grid(attn, shapes, r, off, margin=1e-3):
    "Offsets whose sample lands more than `margin` px from an integer (bilinear's gradient jumps there)."
    lay = attn.layout(shapes, off.dtype, off.device)
    n = off.shape[-1] // 2
    p = torch.cat([off[..., :n] + r[..., :1] * lay["W"] - 0.5, off[..., n:] + r[..., 1:] * lay["H"] - 0.5], -1)
    return ((p - p.round()).abs() > margin).detach()


@pytest.mark.parametrize(
    "shapes", [[(2, 3), (4, 4), (8, 6)], [(16, 16), (8, 8), (4, 4), (2, 2)], [(30, 30), (15, 15), (8, 8), (4, 4)]]
)
def test_image_sampler_matches_per_level(shapes):
    "Outputs within 1e-5 of their largest value, gradients within 1e-4: float32 rounding and summing order only."
    attn, v, r, off, aw = _msda_inputs(shapes)
    new, old = attn.sample_by_image(v, shapes, r, off, aw), by_level(attn, v, shapes, r, off, aw)
    assert (new - old).abs().max() <= 1e-5 * old.abs().max()
    go = torch.randn_like(old)
    gn = torch.autograd.grad((new * go).sum(), (v, off, aw))
    gl = torch.autograd.grad((old * go).sum(), (v, off, aw))
    keep = _off_grid(attn, shapes, r, off)  # bilinear's gradient jumps where a sample crosses a pixel
    assert keep.float().mean() > 0.99
    for what, a, b in zip(("values", "offsets", "attention weights"), gn, gl):
        a, b = (a[keep], b[keep]) if what == "offsets" else (a, b)
        # 1e-4: the gradients are sums that grid_sample's backward accumulates across threads, in no fixed order
        assert (a - b).abs().max() <= 1e-4 * b.abs().max(), (what, ((a - b).abs().max() / b.abs().max()).item())


def test_training_forward_uses_one_grid_sample():
    shapes = [(8, 8), (4, 4), (2, 2)]
    attn, v, r, off, aw = _msda_inputs(shapes)
    q = torch.randn(2, v.shape[1], 32, requires_grad=True)
    calls = []
    orig = F.grid_sample
    try:
        F.grid_sample = lambda *a, **k: calls.append(1) or orig(*a, **k)
        out = attn(q, r.expand(2, -1, -1), v, shapes)
    finally:
        F.grid_sample = orig
    assert len(calls) == 1
    with torch.no_grad():
        torch.testing.assert_close(attn(q, r.expand(2, -1, -1), v, shapes), out, rtol=0, atol=1e-5)  # the table form


def test_ffn_unchunked_under_autograd_matches_chunks():
    torch.manual_seed(0)
    layer = DeformEncoderLayer(16, 1024, 2, 2, 2)
    x = torch.randn(2, 2_500, 16, requires_grad=True)  # 5,000 rows: 3 chunks of 2,048 without autograd
    y = layer.ffn(x)
    with torch.no_grad():
        chunked = layer.ffn(x)
    torch.testing.assert_close(y, chunked, rtol=0, atol=1e-5)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad((y * g).sum(), (x, layer.linear1.weight))
    xc = x.detach().requires_grad_()
    yc = torch.cat([layer.linear2(F.relu(layer.linear1(c))) for c in xc.reshape(-1, 16).split(2_048)]).view_as(
        xc
    )  # the chunks under autograd, as before
    hx, hw = torch.autograd.grad((yc * g).sum(), (xc, layer.linear1.weight))
    torch.testing.assert_close(gx, hx, rtol=0, atol=1e-5)
    torch.testing.assert_close(gw, hw, rtol=1e-5, atol=1e-4)  # a sum over 5,000 rows


def test_cal_draws_uniform_without_sync():
    gt = torch.zeros(3, 400, dtype=torch.bool)
    gt[0, :300], gt[1, :50], gt[2, 100:400] = True, True, True
    counts = torch.zeros(3, 400)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        f, b = _cal_positions(gt, 100, 60, gen)
        assert not (f & ~gt).any() and not (b & gt).any()
        assert f.sum(1).tolist() == [100, 50, 100] and b.sum(1).tolist() == [60, 60, 60]
        counts += f.float()
    # each of image 0's 300 fg positions is drawn with probability 1/3: 400 draws, mean 133, sd 9.4
    assert counts[0, :300].min() > 90 and counts[0, :300].max() < 180
    assert (counts[1, :50] == 400).all()  # fewer than n: all kept


def test_cal_loss_same_seed_same_value():
    g = torch.Generator().manual_seed(1)
    pix, text = torch.randn(2, 8, 32, 32, generator=g), torch.randn(2, 8, generator=g)
    masks = torch.rand(2, 32, 32, generator=g) < 0.5
    a = cal_loss(pix, text, masks, n_fg=50, n_bg=50, generator=torch.Generator().manual_seed(3))
    b = cal_loss(pix, text, masks, n_fg=50, n_bg=50, generator=torch.Generator().manual_seed(3))
    c = cal_loss(pix, text, masks, n_fg=50, n_bg=50, generator=torch.Generator().manual_seed(4))
    assert a["cal"] == b["cal"] and a["cal"] != c["cal"]


def test_cal_draws_stay_eager_when_compiled():
    "Compiled (`train.compile=regional`), CAL's draws run eagerly: inductor's own generator would draw other positions."
    from ris_nb.models.alignment import _cal_scores

    assert _cal_scores._torchdynamo_disable
    torch.manual_seed(5)
    a = _cal_scores(torch.Size([2, 600]), 512, None, "cpu")
    torch.manual_seed(5)
    assert torch.equal(a, torch.rand(2, 600))  # the wrapper draws exactly what the eager call does


def test_swin_fused_attention_matches_unfused():
    "build_magnet turns on timm's fused window attention: Swin's outputs and gradients as with the unfused form."
    from timm.models.swin_transformer import WindowAttention

    import ris_nb.models  # noqa: F401  (registers the models)
    from ris_nb.core import build_model
    from ris_nb.presets import get_preset
    from ris_nb.models.encoders import offline_random

    torch.manual_seed(0)
    bb = build_model(offline_random(get_preset("magnet_tiny")).override({"model.text.vocab_size": 50})).backbone
    attns = [m for m in bb.modules() if isinstance(m, WindowAttention)]
    assert attns and all(a.fused_attn for a in attns)
    x = torch.randn(2, 3, 64, 64)
    res = []
    for fused in (True, False):
        for a in attns:
            a.fused_attn = fused
        bb.zero_grad()
        xx = x.clone().requires_grad_()
        h, outs = bb.stem(xx), []
        for s in range(4):
            h = bb.stage(s, h)
            outs.append(h)
        g = torch.Generator().manual_seed(1)
        sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs).backward()
        res.append((outs, [xx.grad] + [p.grad for p in bb.parameters()]))
    (o1, g1), (o0, g0) = res
    for a, b in zip(o1 + g1, o0 + g0):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max().clamp(min=1e-6)


def test_compile_regions_wraps_the_repeated_blocks():
    "compile_regions replaces visual stages, text groups, fusion, heads and losses (compiled at first call); no key."
    import ris_nb.models  # noqa: F401  (registers the models)
    from ris_nb.core import build_model
    from ris_nb.models.encoders import offline_random
    from ris_nb.models.magnet import compile_regions
    from ris_nb.presets import get_preset

    model = build_model(offline_random(get_preset("magnet_tiny")).override({"model.text.vocab_size": 50}))
    keys = list(model.state_dict())
    assert compile_regions(model) is model and list(model.state_dict()) == keys
    for m in [model.pixel_decoder, model.decoder] + ([model.mg] if model.mg is not None else []):
        assert hasattr(vars(m)["forward"], "_torchdynamo_orig_callable"), type(m).__name__
    for obj, name in [(model.backbone, "stage"), (model.text, "group"), (model, "_fuse"), (model, "losses")]:
        assert hasattr(vars(obj)[name], "_torchdynamo_orig_callable"), name
    assert not hasattr(type(model.decoder).forward, "_torchdynamo_orig_callable")  # the class is untouched


def test_layout_row_count_from_python_ints():
    "`layout`'s padded-table length comes from the level shapes (no host sync) and equals the tensor sum it replaced."
    shapes = [(15, 15), (8, 8), (4, 4), (2, 2)]
    lay = MSDeformAttn(32, 4, 4, 3).layout(shapes, torch.float32, torch.device("cpu"))
    size = (torch.tensor([h for h, _ in shapes], dtype=torch.float32) + 3) * (
        torch.tensor([w for _, w in shapes], dtype=torch.float32) + 3
    )
    assert isinstance(lay["Sp"], int) and lay["Sp"] == int(size.sum())


def _magnet_tiny_cfg(**train):
    from ris_nb.models.encoders import offline_random
    from ris_nb.presets import get_preset

    return offline_random(get_preset("magnet_tiny")).override({"model.text.vocab_size": 50, **train})


def test_train_compile_regional_reaches_compile_regions(monkeypatch):
    "`train.compile=regional`: the run's model goes through compile_regions (recorded here, nothing compiled)."
    import ris_nb.loaders as loaders

    seen = []
    monkeypatch.setattr(loaders, "compile_regions", lambda m, options=None: seen.append((m, options)) or m)
    model = loaders.seeded_model(_magnet_tiny_cfg(**{"train.compile": "regional"}))
    assert [m for m, _ in seen] == [model]
    assert seen[0][1]["pre_grad_custom_pass"].uuid() == "ris_nb.shared_input_linears.1"  # the run's graph pass
    loaders.seeded_model(_magnet_tiny_cfg())  # the default, none: not called
    assert len(seen) == 1


class ThreeProjections(torch.nn.Module):
    "Query, key and value of one input (BERT's pattern), and a fourth linear of another input."

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(8, 6) for _ in range(3))
        self.other = torch.nn.Linear(6, 6, bias=False)

    def forward(self, x):
        return (self.q(x) * self.k(x)).softmax(-1) * self.other(self.v(x))


def test_shared_input_linears_makes_one_product_of_three():
    "The pass merges the three linears that read `x` (not the fourth); outputs and gradients as eager to 1e-6."
    import uuid

    import torch.nn.functional as F

    from ris_nb.loaders import shared_input_linears

    def linears(graph) -> int:
        return sum(n.op == "call_function" and n.target in (F.linear, torch._C._nn.linear) for n in graph.nodes)

    counted = []

    class Counted(type(shared_input_linears())):
        def __call__(self, graph):
            before = linears(graph)
            super().__call__(graph)
            counted.append((before, linears(graph)))

        def uuid(self) -> str:  # a key of its own: inductor's cache would replay a graph without running the pass
            return f"counted-{uuid.uuid4()}"

    torch.manual_seed(0)
    m, x = ThreeProjections(), torch.randn(2, 5, 8)
    eager = m(x)
    eager.square().sum().backward()
    want = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    got = torch.compile(m, dynamic=False, options={"pre_grad_custom_pass": Counted()})(x)
    got.square().sum().backward()
    assert counted == [(4, 2)]
    torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)
    for p, w in zip(m.parameters(), want):
        torch.testing.assert_close(p.grad, w, rtol=1e-6, atol=1e-6)


def test_train_compile_checked():
    "An unknown `train.compile` is refused by name; regional on a model without compiled regions says what to use."
    import ris_nb.models  # noqa: F401  (registers the models)
    from ris_nb.core import validate_config
    from ris_nb.loaders import seeded_model
    from ris_nb.models.encoders import offline_random
    from ris_nb.presets import get_preset

    with pytest.raises(ValueError, match="train.compile.*'fast'"):
        validate_config(_magnet_tiny_cfg(**{"train.compile": "fast"}))
    lavt = offline_random(get_preset("lavt_tiny")).override({"model.text.vocab_size": 50, "train.compile": "regional"})
    with pytest.raises(ValueError, match="train.compile='regional'.*use train.compile=none"):
        seeded_model(lavt)
