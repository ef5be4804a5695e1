"""`model.impl`: the fast forms (appendix 97c, which checks each block against its reference on three shape sets) in
whole training steps against the lessons' reference forms, and compiled against eager; and what the fast code may not
do: branch on the compiler, change a process-wide setting at import, or appear in a course lesson's code."""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ris_nb.registry import build_model, validate_config
from ris_nb.models.encoder_builds import offline_random
from ris_nb.models.fast import FastMagNet, compile_regions, regions_to_compile, to_impl
from ris_nb.models.magnet import MagNet
from ris_nb.models.mask2former import MSDeformAttn
from ris_nb.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # `make test` runs one pytest worker per core


def _batch(B: int, size: int, vocab: int, T: int = 8) -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    am = torch.ones(B, T, dtype=torch.long)
    am[0, T // 2 :] = 0
    masks = torch.zeros(B, size, size)
    masks[:, size // 4 : size // 2, size // 4 : size // 2] = 1
    ids = torch.randint(5, vocab, (B, T), generator=g) * am
    images = torch.randn(B, 3, size, size, generator=g)
    return SimpleNamespace(images=images, input_ids=ids, attention_mask=am, masks=masks)


def _reference(preset: str, size: int, at_init: bool = False, over: dict | None = None) -> MagNet:
    """A reference-form model of `preset` at `size` px (`over`: more config), random encoders, dropout off, sampling
    offsets off the grid."""
    cfg = offline_random(get_preset(preset)).override(
        {"data.image_size": size, "model.impl": "reference", **(over or {})}
    )
    if preset == "magnet_tiny":
        cfg = cfg.override({"model.text.vocab_size": 50})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    g = torch.Generator().manual_seed(0)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
        if hasattr(mod, "drop_prob"):
            mod.drop_prob = 0.0
        if isinstance(mod, MSDeformAttn) and not at_init:  # random offsets: samples anywhere, not only near the lattice
            with torch.no_grad():
                b = mod.sampling_offsets.bias
                b.add_(torch.rand(b.shape, generator=g) * 0.5 - 0.25)
    return model


def _step(model: torch.nn.Module, batch) -> tuple[dict, dict]:
    "Loss parts and gradients of one step; MG draws from the model's generator, CAL from the global one (seeded)."
    model.zero_grad()
    torch.manual_seed(0)
    out = model.losses(model(batch), batch)
    out["loss"].backward()
    return {k: v.item() for k, v in out.items()}, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


# A fast form's gradient may differ from the reference's by 0.1 % of its tensor's scale, plus 0.01 % of the step's
# largest gradient: the sampler's bilinear interpolation has a kink at every grid line, and a sampling point that
# rounding puts on the other side takes the other one-sided derivative, a difference that reaches tensors whose own
# gradients are small (magnet_paper at 96 px: up to 5e-5 of the largest, on AVX2, AVX-512 and ATen's default
# kernels alike; 1.2e-3 of linear1's own scale on AVX-512). A wrong form is off by its whole size.
GRAD_OF_OWN, GRAD_OF_LARGEST = 1e-3, 1e-4


def _gaps(a: torch.nn.Module, b: torch.nn.Module, batch) -> tuple[float, float]:
    """Largest relative loss gap; largest gradient gap as a share of what it may be (≤ 1 passes: `GRAD_OF_OWN` of the
    tensor's scale plus `GRAD_OF_LARGEST` of the step's largest gradient)."""
    (la, ga), (lb, gb) = _step(a, batch), _step(b, batch)
    assert set(la) == set(lb) and set(ga) == set(gb) and len(ga) > 100
    largest = max(g.abs().max().item() for g in ga.values())
    loss = max(abs(la[k] - lb[k]) / max(1.0, abs(la[k])) for k in la)
    allowed = {n: GRAD_OF_OWN * ga[n].abs().max().item() + GRAD_OF_LARGEST * largest for n in ga}
    grad = max((ga[n] - gb[n]).abs().max().item() / allowed[n] for n in ga)
    return loss, grad


@pytest.mark.parametrize("preset,size,batch", [pytest.param("magnet_paper", 96, 1, marks=pytest.mark.slow)])
def test_whole_step_fast_matches_reference(preset, size, batch):
    """One state dict, one seed: the fast forms' losses within 1e-5 and gradients within what `_gaps` allows of the
    reference's, at paper widths (97c checks `magnet_tiny`'s step, in `make test`; this is not written twice)."""
    ref = _reference(preset, size)
    fast = to_impl(copy.deepcopy(ref), "fast")
    assert isinstance(fast, FastMagNet) and list(fast.state_dict()) == list(ref.state_dict())
    loss, grad = _gaps(ref, fast, _batch(batch, size, 50))
    assert loss <= 1e-5 and grad <= 1, (loss, grad)


def test_fast_matches_reference_at_initialisation():
    """`magnet_tiny` as built (`model.magnet.offset_init_shift` keeps every sample off bilinear interpolation's kinks):
    one state dict, one seed, losses within 1e-5 and every gradient within 1e-4 of its own tensor's largest. Tensors
    whose exact gradient is zero (a bias before a GroupNorm, a key's bias) hold only float32 noise: that may reach
    1e-5 of the step's largest gradient (2e-7 measured). With no shift the offsets' gradients differ by 0.5 of their
    own size."""
    ref = _reference("magnet_tiny", 64, at_init=True)
    assert ref.cfg.model.magnet.offset_init_shift > 0
    fast = to_impl(copy.deepcopy(ref), "fast")
    batch = _batch(2, 64, 50)
    (la, ga), (lb, gb) = _step(ref, batch), _step(fast, batch)
    assert max(abs(la[k] - lb[k]) / max(1.0, abs(la[k])) for k in la) <= 1e-5
    largest = max(g.abs().max().item() for g in ga.values())
    gaps = {n: (ga[n] - gb[n]).abs().max().item() / (1e-4 * ga[n].abs().max().item() + 1e-5 * largest) for n in ga}
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] <= 1, (worst, gaps[worst])


def test_compiled_step_matches_eager(tmp_path, monkeypatch):
    """The regions where compiled and eager were seen apart (the deformable pixel decoder, the one-query decoder), a
    BERT layer and a fusion block (PWAM, CAM: where the graph pass merges linears of one input), compiled as
    `compile_regions` compiles them (`Module.compile`, inductor, the graph pass): losses within 1e-5, gradients within
    what `_gaps` allows of eager. Compiling the whole model takes tens of minutes on a CPU (bench_impl --compile)."""
    from ris_nb.models.fast import check_compiler, shared_input_linears

    check_compiler()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # kernels of this run only, not a shared cache's
    # one decoder layer (each layer is the same code): 121 s alone, against 210 s with four in a CI run
    eager = to_impl(_reference("magnet_tiny", 64, over={"model.magnet.dec_layers": 1}), "fast")
    compiled = copy.deepcopy(eager)
    regions = (compiled.pixel_decoder, compiled.decoder, compiled.text.bert.encoder.layer[0], compiled.pwams[0])
    for mod in (*regions, *(compiled.cams or [])[:1]):
        mod.compile(dynamic=False, options={"pre_grad_custom_pass": shared_input_linears()})
    loss, grad = _gaps(eager, compiled, _batch(2, 64, 50))
    assert loss <= 1e-5 and grad <= 1, (loss, grad)


def test_the_graph_pass_pickles_into_inductors_cache_key():
    """Inductor pickles the pass into its FX-graph cache key: a class made inside a function did not pickle (torch
    2.11 on an H200: every region compiled from scratch), so each compiled region missed the cache."""
    import pickle

    from torch._inductor.custom_graph_pass import CustomGraphPass

    from ris_nb.models.fast import shared_input_linears

    p = shared_input_linears()
    assert isinstance(p, CustomGraphPass)
    assert pickle.loads(pickle.dumps(p)).uuid() == p.uuid() == "ris_nb.shared_input_linears.1"


def test_auto_builds_the_form_the_table_names(monkeypatch):
    """`model.impl='auto'` builds what `MEASURED_FASTER` names for the device, by every builder: were a CPU measured
    faster with the fast forms, 'auto' would build them; a model without forms builds its reference."""
    import ris_nb.models.fast as fast_mod

    cfg = offline_random(get_preset("magnet_tiny")).override({"model.text.vocab_size": 50, "train.device": "cpu"})
    assert type(build_model(cfg)) is MagNet
    monkeypatch.setitem(fast_mod.MEASURED_FASTER, "cpu", "fast")
    assert type(build_model(cfg)) is FastMagNet
    lavt_cfg = offline_random(get_preset("lavt_tiny")).override({"model.text.vocab_size": 50, "train.device": "cpu"})
    assert type(build_model(lavt_cfg)).__name__ == "LAVT"


def test_impl_switch_keeps_the_state_dict():
    """`model.impl` builds either form from one config ('auto', the default, the reference on a CPU); `to_impl` swaps
    back and forth; a bad value, or a form a model lacks, is refused by name."""
    cfg = offline_random(get_preset("magnet_tiny")).override({"model.text.vocab_size": 50, "train.device": "cpu"})
    assert cfg.model.impl == "auto" and type(build_model(cfg)) is MagNet
    assert type(build_model(cfg.override({"model.impl": "fast"}))) is FastMagNet
    ref = build_model(cfg.override({"model.impl": "reference"}))
    assert type(ref) is MagNet and not any(type(m).__name__.startswith("Fast") for m in ref.modules())
    keys = {k: v.shape for k, v in ref.state_dict().items()}
    fast = to_impl(ref, "fast")
    assert {k: v.shape for k, v in fast.state_dict().items()} == keys
    assert type(to_impl(fast, "reference")) is MagNet
    with pytest.raises(ValueError, match="model.impl='quick': expected one of 'auto', 'reference', 'fast'"):
        validate_config(cfg.override({"model.impl": "quick"}))
    lavt_cfg = offline_random(get_preset("lavt_tiny")).override({"model.text.vocab_size": 50})
    lavt = build_model(lavt_cfg)
    assert type(lavt).__name__ == "LAVT" and lavt_cfg.model.impl == "auto"
    with pytest.raises(ValueError, match="model.impl='fast': lavt_tiny has no 'fast' form; its forms: auto, reference"):
        validate_config(lavt_cfg.override({"model.impl": "fast"}))
    with pytest.raises(ValueError, match="model.impl='fast': LAVT has no 'fast' form"):
        build_model(lavt_cfg.override({"model.impl": "fast"}))  # built without validation: refused all the same
    with pytest.raises(ValueError, match="LAVT has no 'fast' form"):
        to_impl(lavt, "fast")  # never a silent no-op


def test_auto_runs_the_form_measured_faster():
    "`MEASURED_FASTER` is what nbs/results/impl_speed.csv's whole-step rows say per device: the reference on a tie."
    import csv

    from ris_nb.models.fast import MEASURED_FASTER, TIE, resolved_impl

    rows = list(csv.DictReader((ROOT / "nbs" / "results" / "impl_speed.csv").open()))
    steps = {r["device"]: float(r["fast speed-up"]) for r in rows if r["what"].startswith("quickstart training step")}
    assert steps and MEASURED_FASTER == {d: "fast" if up >= TIE else "reference" for d, up in steps.items()}
    assert resolved_impl("auto", "cpu") == MEASURED_FASTER["cpu"] and resolved_impl("fast", "cpu") == "fast"


def test_official_weights_run_the_form_asked():
    "`load_magnet` builds the form its `impl` names, as `build_model` does."
    from safetensors.torch import load_file

    from ris_nb.official import load_magnet
    from ris_nb.testing import official_fixture

    fix = official_fixture("magnet_official_tiny")
    sd, conf = load_file(fix / "state_dict.safetensors"), json.loads((fix / "config.json").read_text())
    assert type(load_magnet(sd, conf)) is MagNet  # auto on a CPU: the reference
    assert type(load_magnet(sd, conf, impl="fast")) is FastMagNet


def test_compile_regions_uses_module_compile_only():
    "Each region compiled by `Module.compile` (nothing compiles until a call); methods, keys and settings untouched."
    import torch._dynamo.config as dynamo_config

    model = to_impl(_reference("magnet_tiny", 64), "fast")
    keys, before = list(model.state_dict()), dynamo_config.get_config_copy()
    regions = regions_to_compile(model)
    assert compile_regions(model) is model and list(model.state_dict()) == keys
    assert all(m._compiled_call_impl is not None for m in regions)
    assert len(regions) == len({id(m) for m in regions}) > 12
    assert "forward" not in vars(model.decoder) and "_fuse" not in vars(model)  # no replaced method
    assert dynamo_config.get_config_copy() == before


def test_train_compile_regional_reaches_compile_regions(monkeypatch):
    "`train.compile=regional`: the run's model goes through the registry's `compile_regions` (recorded, not compiled)."
    import ris_nb.loaders as loaders
    import ris_nb.registry as registry

    seen = []
    registry.model_part("compile_regions")  # registered
    monkeypatch.setitem(registry._PARTS, "compile_regions", lambda m: seen.append(m) or m)
    cfg = offline_random(get_preset("magnet_tiny")).override({"model.text.vocab_size": 50})
    model = loaders.seeded_model(cfg.override({"train.compile": "regional"}))
    assert seen == [model]
    loaders.seeded_model(cfg)  # the default, none: not called
    assert len(seen) == 1


def test_official_parity_with_both_forms():
    "The official fixture's outputs within 1e-4 with the reference forms and with the fast ones."
    from safetensors.torch import load_file

    from ris_nb.official import load_magnet
    from ris_nb.testing import official_fixture

    fix = official_fixture("magnet_official_tiny")
    sd, inp = load_file(fix / "state_dict.safetensors"), torch.load(fix / "inputs.pt", weights_only=True)
    ref = torch.load(fix / "outputs.pt", weights_only=True)["pred_masks"]
    batch = SimpleNamespace(
        images=inp["image"], input_ids=inp["input_ids"], attention_mask=inp["attention_mask"], masks=None
    )
    model = load_magnet(sd, json.loads((fix / "config.json").read_text()))
    for impl in ("reference", "fast"):
        with torch.no_grad():
            got = to_impl(model, impl)(batch).mask_logits
        assert (got - ref).abs().max() <= 1e-4, impl


IMPORT_ALL = """
import importlib, importlib.util, json, pathlib, sys, warnings
root = pathlib.Path(importlib.util.find_spec("ris_nb").submodule_search_locations[0])  # found, not imported
files = [p.relative_to(root).with_suffix("").parts for p in sorted(root.rglob("*.py")) if p.name != "__main__.py"]
names = sorted({".".join(("ris_nb",) + (f[:-1] if f[-1] == "__init__" else f)) for f in files})
first = sys.argv[1] == "list"
if not first:  # every other module ris_nb imports, imported before the snapshot: only ris_nb's own effects count
    for dep in json.loads(sys.argv[2]):
        try:
            importlib.import_module(dep)
        except Exception:
            pass
import os, torch, torch._dynamo.config as dc, torch._inductor.config as ic
def snap():
    configs = [sorted(c.get_config_copy().items()) for c in (dc, ic)]
    threads = (torch.get_num_threads(), torch.get_num_interop_threads())
    b = torch.backends
    flags = (b.cudnn.benchmark, b.cudnn.deterministic, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.mkldnn.enabled,
             torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision())
    return tuple(repr(x) for x in (warnings.filters, *configs, threads, flags, torch.get_default_dtype(),
                                   sorted(os.environ.items())))
before = snap()
for n in names:
    importlib.import_module(n)
if first:
    print(json.dumps([m for m in sys.modules if not m.startswith(("ris_nb", "__main__"))]))
else:
    print(json.dumps([a == b for a, b in zip(before, snap())]))
"""


def _import_all(*args: str) -> str:
    run = subprocess.run([sys.executable, "-c", IMPORT_ALL, *args], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


SNAPSHOT = [
    "warnings.filters",
    "dynamo config",
    "inductor config",
    "thread counts",
    "torch.backends flags",
    "default dtype",
    "environment variables",
]


def test_importing_ris_nb_changes_no_process_setting():
    "Every `ris_nb` module imported: each of `SNAPSHOT` unchanged."
    deps = _import_all("list")
    same = json.loads(_import_all("check", deps))
    assert len(same) == len(SNAPSHOT) and all(same), [n for n, ok in zip(SNAPSHOT, same) if not ok]


def test_chunked_ffn_matches_the_reference_over_several_chunks():
    "`FastDeformEncoderLayer.ffn` without autograd runs 2,000 rows in chunks of 256; with autograd in one piece."
    from ris_nb.models.fast import FastDeformEncoderLayer
    from ris_nb.models.mask2former import DeformEncoderLayer

    torch.manual_seed(0)
    ref, fast = DeformEncoderLayer(8, 8192, 1, 1, 1), FastDeformEncoderLayer(8, 8192, 1, 1, 1)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 1000, 8)
    assert 2 * 1000 > max(256, 2**21 // fast.linear1.out_features) * 7  # eight chunks, the last one short
    with torch.no_grad():
        torch.testing.assert_close(fast.ffn(x), ref.ffn(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.ffn(x), ref.ffn(x), rtol=1e-5, atol=1e-6)


FORBIDDEN = re.compile(r"torch\.compile\b|\bvmap\b|_dynamo|_inductor|embedding_bag|is_compiling")


def test_course_code_teaches_the_reference_forms():
    "No compile, vmap, dynamo/inductor or table sampler in a course lesson's code (02a's bag of words may bag)."
    hits = []
    for nb in sorted((ROOT / "nbs").glob("[0-8][0-9]*.ipynb")):
        for i, c in enumerate(json.loads(nb.read_text())["cells"]):
            for line in "".join(c["source"]).splitlines() if c["cell_type"] == "code" else []:
                code = line.split("#", 1)[0]  # a comment may name them
                if FORBIDDEN.search(code) and not (nb.stem == "02a_first_model" and "embedding_bag" in code):
                    hits.append(f"{nb.stem}[{i}]: {line.strip()}")
    assert not hits, hits


def test_library_never_branches_on_the_compiler():
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "ris_nb").rglob("*.py") if "is_compiling" in p.read_text()]
    assert not hits


def test_cal_draws_uniform_and_shared():
    "`sample_positions`: n of each image's positions, uniformly, all where fewer; one seed, one draw, for both forms."
    from ris_nb.models.alignment import sample_positions

    gt = torch.zeros(3, 400, dtype=torch.bool)
    gt[0, :300], gt[1, :50], gt[2, 100:400] = True, True, True
    counts = torch.zeros(3, 400)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        f, b = sample_positions(gt, 100, 60, gen)
        assert not (f & ~gt).any() and not (b & gt).any()
        assert f.sum(1).tolist() == [100, 50, 100] and b.sum(1).tolist() == [60, 60, 60]
        counts += f.float()
    # each of image 0's 300 fg positions is drawn with probability 1/3: 400 draws, mean 133, sd 9.4
    assert counts[0, :300].min() > 90 and counts[0, :300].max() < 180
    assert (counts[1, :50] == 400).all()  # fewer than n: all kept
    a, b = (sample_positions(gt, 100, 60, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_swin_fused_attention_only_in_the_fast_form():
    "The fast form turns on timm's fused window attention: Swin's outputs and gradients as unfused, to 1e-5."
    from timm.models.swin_transformer import WindowAttention

    model = _reference("magnet_tiny", 64)
    attns = [m for m in model.backbone.modules() if isinstance(m, WindowAttention)]
    assert attns and not any(a.fused_attn for a in attns)
    bb = to_impl(model, "fast").backbone
    assert all(a.fused_attn for a in attns)
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


def test_fast_deformable_attention_trains_with_one_grid_sample():
    "Under autograd the fast form samples all levels in one `grid_sample` (the reference: one per level); none without."
    import torch.nn.functional as F

    from ris_nb.models.fast import FastMSDeformAttn
    from ris_nb.models.mask2former import reference_points

    shapes = [(8, 8), (4, 4), (2, 2)]
    S = sum(h * w for h, w in shapes)
    q, v, r = torch.randn(2, S, 32, requires_grad=True), torch.randn(2, S, 32), reference_points(shapes)[None]
    counts = []
    for cls, grad in ((MSDeformAttn, True), (FastMSDeformAttn, True), (FastMSDeformAttn, False)):
        calls, orig = [], F.grid_sample
        try:
            F.grid_sample = lambda *a, **k: calls.append(1) or orig(*a, **k)
            with torch.set_grad_enabled(grad):
                cls(32, 3, 4, 2)(q, r.expand(2, -1, -1), v, shapes)
        finally:
            F.grid_sample = orig
        counts.append(len(calls))
    assert counts == [3, 1, 0]


def test_train_compile_checked():
    "An unknown `train.compile` is refused by name; regional on a model without compiled regions says what to use."
    from ris_nb.loaders import seeded_model

    cfg = offline_random(get_preset("magnet_tiny")).override({"model.text.vocab_size": 50})
    with pytest.raises(ValueError, match="train.compile.*'fast'"):
        validate_config(cfg.override({"train.compile": "fast"}))
    lavt = offline_random(get_preset("lavt_tiny")).override({"model.text.vocab_size": 50, "train.compile": "regional"})
    with pytest.raises(ValueError, match="train.compile='regional'.*use train.compile=none"):
        seeded_model(lavt)
