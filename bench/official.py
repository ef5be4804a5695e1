"""Build the OFFICIAL MagNet / SaG networks from a checkout the user fetched (`--official-src DIR`), on CPU, at a
fixture's configuration, and load the fixture's weights into them. Nothing of the official code lives in this
repository: it is imported from DIR at run time. What the import needs on a CPU-only machine without the authors' full
environment is stubbed here, in memory, for the duration of the import (each stub is described in bench/README.md):

MagNet (yxchng/mask-grounding)
- `mmcv`, `mmseg` (imported only to load ImageNet checkpoints into the Swin backbone, never called here): empty modules
  whose functions raise if called; `lib.mmcv_custom` likewise.
- `fvcore.nn.weight_init.c2_xavier_fill` (init only; the fixture's weights overwrite it): Kaiming-uniform, zero bias.
- `addict.Dict` (the head's config object): a small auto-vivifying attribute dict.
- The text width is a literal 768 in the released fusion modules and `lang_proj`; while the official constructors run,
  `nn.Linear` / `nn.Conv1d` / `nn.LayerNorm` given 768 get the fixture's text width instead (a shape-only change, as the
  fixture's README describes; the strict load of the fixture's state dict checks every shape), and integer attributes
  holding 768 (channel counts kept for reshapes) are set to that width after construction.
- The released deformable attention already runs its pure-PyTorch `grid_sample` path (the CUDA op import is commented
  out upstream), so no op is replaced.

SaG (kdwonn/SaG)
- `.cuda()` calls on the forward path: `Tensor.cuda` returns the tensor itself while the official forward runs on a
  machine without CUDA.
- No downloads: the fixture's tiny ViT is added to the architectures the official yaml lists, timm's pretrained loader
  does nothing (and timm ≥ 1.0's missing `default_cfgs` is an empty dict), BERT is built from the fixture's
  `BertConfig`.
- `wandb`, `cv2`: empty modules (never called on these paths).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn


# ----------------------------------------------------------------------------------------------------------------
# helpers
def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    m.__path__ = []  # importable as a package too
    return m


def _not_here(what: str):
    def f(*a, **k):
        raise RuntimeError(f"{what} is stubbed by bench/official.py (not needed to run the network on CPU)")

    return f


class AttrDict(dict):
    "Auto-vivifying attribute dict (what the official head reads its config from)."

    def __getattr__(self, k):
        if k.startswith("__"):
            raise AttributeError(k)
        if k not in self:
            self[k] = AttrDict()
        return self[k]

    def __setattr__(self, k, v):
        self[k] = v


def _kaiming_fill(module: nn.Module):
    "Init-only stand-in: Kaiming-uniform (a=1) weights, zero bias."
    nn.init.kaiming_uniform_(module.weight, a=1)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


@contextlib.contextmanager
def _on_path(src: Path, stubs: dict[str, types.ModuleType], always: tuple[str, ...] = ()):
    """Put `src` first on sys.path and `stubs` into sys.modules (those whose package is not installed, and `always`);
    undo on exit."""
    import importlib.util

    added = [n for n in stubs if n.split(".")[0] in always or importlib.util.find_spec(n.split(".")[0]) is None]
    for n in added:
        sys.modules[n] = stubs[n]
    sys.path.insert(0, str(src))
    try:
        yield
    finally:
        sys.path.remove(str(src))
        for n in added:
            sys.modules.pop(n, None)


@contextlib.contextmanager
def _text_width(width: int, literal: int = 768):
    "While active, nn.Linear / nn.Conv1d / nn.LayerNorm built with `literal` features get `width` instead."
    orig = {c: c.__init__ for c in (nn.Linear, nn.Conv1d, nn.LayerNorm)}

    def sub(a):
        return width if (isinstance(a, int) and not isinstance(a, bool) and a == literal) else a

    def wrap(cls):
        def init(self, *a, **k):
            orig[cls](self, *[sub(x) for x in a], **{kk: sub(v) for kk, v in k.items()})

        return init

    for c in orig:
        c.__init__ = wrap(c)
    try:
        yield
    finally:
        for c, f in orig.items():
            c.__init__ = f


def _retarget_ints(model: nn.Module, literal: int, width: int):
    "Integer attributes equal to `literal` (channel counts the fusion modules keep for reshapes) → `width`."
    for m in model.modules():
        for k, v in list(vars(m).items()):
            if type(v) is int and v == literal:
                setattr(m, k, width)


def _purge(prefixes: tuple[str, ...]):
    "Forget already-imported official modules (two checkouts both have top-level `model`, `utils`, …)."
    for k in [k for k in sys.modules if k.split(".")[0] in prefixes]:
        del sys.modules[k]


def commit_of(src: Path) -> str:
    "The checkout's commit if it is a git work tree, else 'unknown'."
    import subprocess

    try:
        return subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:
        return "unknown (not a git checkout)"


# ----------------------------------------------------------------------------------------------------------------
# MagNet
_MAGNET_TOP = ("bert", "lib", "modeling", "test", "transforms", "utils", "args", "data", "refer")


def magnet_official(src: str | Path, fixture: Path) -> nn.Module:
    """The official `WrapperModel` (test.py) at the fixture's configuration, fixture weights loaded strictly, eval mode.
    Call it as `model(image, input_ids, attention_mask)` → dict with 'pred_logits', 'pred_masks'."""
    src = Path(src).resolve()
    if not (src / "test.py").is_file() or not (src / "bert" / "multimodal_bert.py").is_file():
        raise FileNotFoundError(
            f"--official-src {src}: not a checkout of yxchng/mask-grounding (no test.py / bert/multimodal_bert.py)"
        )
    cfg = json.loads((fixture / "config.json").read_text())
    sw, bt, fu, de = cfg["swin"], cfg["bert"], cfg["fusion"], cfg["decoder"]
    stubs = {
        "mmcv": _module("mmcv", load_checkpoint=_not_here("mmcv")),
        "mmseg": _module("mmseg"),
        "mmseg.utils": _module("mmseg.utils", get_root_logger=lambda *a, **k: __import__("logging").getLogger("mmseg")),
        "lib.mmcv_custom": _module("lib.mmcv_custom", load_checkpoint=_not_here("mmcv checkpoint loading")),
        "fvcore": _module("fvcore"),
        "fvcore.nn": _module("fvcore.nn"),
        "fvcore.nn.weight_init": _module("fvcore.nn.weight_init", c2_xavier_fill=_kaiming_fill),
        "addict": _module("addict", Dict=AttrDict),
    }
    stubs["fvcore"].nn = stubs["fvcore.nn"]
    stubs["fvcore.nn"].weight_init = stubs["fvcore.nn.weight_init"]
    stubs["mmseg"].utils = stubs["mmseg.utils"]
    _purge(
        _MAGNET_TOP + ("model", "loss", "option", "eval_cma_recon", "train_cma_recon", "phraseutils", "sync_batchnorm")
    )
    with _on_path(src, stubs, always=("lib",)), _text_width(bt["hidden_size"]):
        test = importlib.import_module("test")
        from bert.configuration_bert import BertConfig
        from bert.multimodal_bert import MultiModalBert
        from lib.multimodal_swin import MultiModalSwin
        from modeling.MaskFormerModel import MaskFormerHead

        swin = MultiModalSwin(
            embed_dim=sw["embed_dim"],
            depths=sw["depths"],
            num_heads=sw["num_heads"],
            window_size=sw["window_size"],
            ape=sw.get("ape", False),
            drop_path_rate=sw["drop_path_rate"],
            patch_norm=sw.get("patch_norm", True),
            out_indices=(0, 1, 2, 3),
            use_checkpoint=False,
            num_heads_fusion=fu["num_heads_fusion"],
            fusion_drop=fu.get("fusion_drop", 0.0),
        )
        swin.init_weights()
        bcfg = BertConfig(
            vocab_size=bt["vocab_size"],
            hidden_size=bt["hidden_size"],
            num_hidden_layers=bt["num_hidden_layers"],
            num_attention_heads=bt["num_attention_heads"],
            intermediate_size=bt["intermediate_size"],
            max_position_embeddings=bt["max_position_embeddings"],
            type_vocab_size=bt["type_vocab_size"],
            layer_norm_eps=bt["layer_norm_eps"],
        )
        bert = MultiModalBert(
            bcfg,
            embed_dim=sw["embed_dim"],
            pwam_idx=bt["pwam_idx"],
            num_heads_fusion=fu["num_heads_fusion"],
            fusion_drop=fu.get("fusion_drop", 0.0),
        )
        bert.pooler = None  # test.py: --ddp_trained_weights
        shapes = AttrDict({f"s{i + 1}": AttrDict(channel=d, stride=4 * 2**i) for i, d in enumerate(sw["stage_dims"])})
        c = AttrDict()
        c.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = de["common_stride"]
        c.MODEL.MASK_FORMER.DROPOUT = 0.0
        c.MODEL.MASK_FORMER.NHEADS = de["nheads"]
        c.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = de["enc_layers"]
        c.MODEL.SEM_SEG_HEAD.CONVS_DIM = de["conv_dim"]
        c.MODEL.SEM_SEG_HEAD.MASK_DIM = de["mask_dim"]
        c.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["s1", "s2", "s3", "s4"]
        c.MODEL.SEM_SEG_HEAD.NUM_CLASSES = de["num_classes"]
        c.MODEL.MASK_FORMER.HIDDEN_DIM = de["hidden_dim"]
        c.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = de["num_queries"]
        c.MODEL.MASK_FORMER.DIM_FEEDFORWARD = de["dec_dim_feedforward"]
        c.MODEL.MASK_FORMER.DEC_LAYERS = de["DEC_LAYERS_cfg"]
        c.MODEL.MASK_FORMER.PRE_NORM = de["pre_norm"]
        head = MaskFormerHead(c, shapes)
        model = test.WrapperModel(swin, bert, head, None)
        model.lang_proj = nn.Linear(bt["hidden_size"], cfg["lang_proj"]["out"])  # test.py hard-codes 768→256
    _retarget_ints(model, 768, bt["hidden_size"])
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(fixture / "state_dict.safetensors")), strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------- SaG
_SAG_TOP = (
    "model",
    "loss",
    "option",
    "utils",
    "data",
    "eval_cma_recon",
    "train_cma_recon",
    "build_batches",
    "phraseutils",
    "sync_batchnorm",
)


class _NoCuda:
    "While active on a machine without CUDA, `Tensor.cuda()` returns the tensor itself (the official forward calls it)."

    def __enter__(self):
        self.orig = torch.Tensor.cuda
        if not torch.cuda.is_available():
            torch.Tensor.cuda = lambda self, *a, **k: self

    def __exit__(self, *exc):
        torch.Tensor.cuda = self.orig


class SaGOfficial(nn.Module):
    """The official `CrossModalAttentionRecon` plus its training criterion (C³ info-NCE + reconstruction MSE),
    CPU-callable."""

    def __init__(self, model: nn.Module, criterion: nn.Module, args):
        super().__init__()
        self.model, self.criterion, self.args = model, criterion, args

    def forward(self, images, input_ids, txt_len):
        with _NoCuda():
            return self.model(images, input_ids, txt_len)

    def loss(self, images, input_ids, txt_len) -> torch.Tensor:
        "The official training loss of one batch (train_cma_recon.py, without the warm-up scale)."
        with _NoCuda():
            cm_feat, img_emb, txt_emb, img_feat_recon, img_feat, txt_bert = self.model(images, input_ids, txt_len)
            loss, _ = self.criterion(cm_feat, txt_emb, img_emb, txt_bert=txt_bert)
            return loss + self.args.recon_weight * nn.functional.mse_loss(img_feat_recon, img_feat.detach())

    def param_groups(self) -> list[dict]:
        "The official optimizer's parameter groups (train_cma_recon.py)."
        m, a = self.model, self.args
        enc = m.encoders.img_enc
        backbone = set(enc.img_backbone.parameters())
        return [
            {"params": list(m.cma.parameters()), "lr": a.lr},
            {"params": list(m.decoder.parameters()), "lr": a.lr},
            {"params": [p for p in enc.parameters() if p not in backbone], "lr": a.lr * a.img_spm_lr_scale},
            {"params": list(enc.img_backbone.parameters()), "lr": a.lr * a.img_lr_scale},
            {"params": list(m.encoders.txt_enc.parameters()), "lr": a.lr * a.txt_lr_scale},
        ]


def sag_official(src: str | Path, fixture: Path) -> SaGOfficial:
    """The official SaG model at the fixture's configuration (`config.json` args), fixture weights loaded strictly,
    eval mode."""
    src = Path(src).resolve()
    if not (src / "model" / "cross_modal_attention.py").is_file():
        raise FileNotFoundError(
            f"--official-src {src}: not a checkout of kdwonn/SaG (no model/cross_modal_attention.py)"
        )
    try:
        import einops  # noqa: F401
    except ImportError:
        raise SystemExit("the official SaG code imports einops: pip install einops (only the comparison needs it)")
    cfg = json.loads((fixture / "config.json").read_text())
    a, d = dict(cfg["args"]), cfg["derived"]
    args = types.SimpleNamespace(**a)
    import yaml
    import timm.models.helpers as th
    import timm.models.vision_transformer as tv
    import transformers

    arch = {
        "image_size": 480,
        "patch_size": 16,
        "d_model": d["vit_d_model"],
        "n_heads": d["vit_heads"],
        "n_layers": d["vit_layers"],
        "normalization": "vit",
        "distilled": False,
    }
    yaml_load, had_cfgs, load_pre = yaml.load, hasattr(tv, "default_cfgs"), getattr(th, "load_custom_pretrained", None)

    def load_with_arch(*x, **k):  # the fixture's tiny ViT is not among the yaml's architectures
        out = yaml_load(*x, **k)
        if isinstance(out, dict) and "model" in out:
            out["model"].setdefault(args.img_backbone, dict(arch))
        return out

    class Bert:  # BERT from the fixture's config instead of a download
        @staticmethod
        def from_pretrained(*x, **k):
            return transformers.BertModel(transformers.BertConfig(**a["bert_config"]), add_pooling_layer=True)

    stubs = {"wandb": _module("wandb"), "cv2": _module("cv2")}
    _purge(_SAG_TOP + _MAGNET_TOP)
    yaml.load = load_with_arch
    if not had_cfgs:
        tv.default_cfgs = {}
    th.load_custom_pretrained = lambda *x, **k: None  # no pretrained weights: the fixture's are loaded below
    try:
        with _on_path(src, stubs):
            enc_mod = importlib.import_module("model.encoders")
            enc_mod.BertModel = Bert
            from model.cross_modal_attention import CrossModalAttentionRecon
            from model.encoders import ImageTextEncodersRecon
            from loss.cma_loss import CMA_Loss

            model = CrossModalAttentionRecon(ImageTextEncodersRecon(args), args.embed_dim, args)
            crit = CMA_Loss(
                margin=args.margin,
                criterion=args.cma_criterion,
                mining=args.cma_mining,
                detach_target=args.cma_detach_target,
                detach_img_target=args.cma_detach_img_target,
                i_t_loss=None,
                i_t_weight=args.i_t_weight,
                temperature=args.info_temperature,
                cm_i_weight=args.cm_i_weight,
                size_p_loss=None,
                size_p_weight=args.size_p_weight,
            )
    finally:
        yaml.load = yaml_load
        if not had_cfgs:
            del tv.default_cfgs
        if load_pre is not None:
            th.load_custom_pretrained = load_pre
    from safetensors.torch import load_file

    sd = load_file(str(fixture / "state_dict.safetensors"))
    sd.update({k: sd[v] for k, v in json.loads((fixture / "tied_aliases.json").read_text()).items()})
    model.load_state_dict(sd, strict=True)
    return SaGOfficial(model, crit, args).eval()
