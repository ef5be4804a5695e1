"""Ship a trained run's best checkpoint inside the package (`ris_nb/assets/checkpoints/NAME.pt`, read by
`ris_nb.shipped.load_shipped`, appendix 97a): its config, tokenizer, float16 weights and recipe, then its val scores
measured on freshly generated data with the float16 weights (`ris_nb.evaluate.evaluate`).

    python tools/ship_checkpoint.py runs/lavt_tiny --name lavt_tiny --language plain --n-images 3000 --seed 0 \
        --size 64 --command "ris_nb train --preset lavt_tiny ..." [--wall-s 900 --cpu-s 330 --threads 1] [--note "..."]

`--language/--n-images/--seed/--size` must be the settings the run's data was generated with: the recorded SHA-256 of
its REFER files is compared with the regenerated ones before anything is scored. `--dest DIR` writes the checkpoint in
DIR instead of the package and regenerates its data there (`tools/ship_sag_tiny.py --smoke` ships that way)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FLOAT16_MAX = 65504.0


def half_state(state: dict) -> dict:
    "Floating tensors in float16 (refusing values float16 cannot hold), others as they are."
    out = {}
    for k, v in state.items():
        if v.is_floating_point():
            if v.abs().max().item() > FLOAT16_MAX:
                raise ValueError(f"{k}: values up to {v.abs().max().item():.3g} do not fit float16")
            v = v.half()
        out[k] = v.contiguous().clone()
    return out


def portable_config(text: str) -> str:
    "The run's config with this machine's paths replaced by the presets' defaults (the data root is the recipe's)."
    cfg = json.loads(text)
    cfg["data"]["root"], cfg["train"]["out_dir"] = "data", "runs"
    return json.dumps(cfg, indent=1)


def shipped_dict(run_dir: Path, args: argparse.Namespace) -> dict:
    "Everything a shipped checkpoint holds but its scores, from `run_dir`'s best.pt and tokenizer."
    from ris_nb.io import torch_load_checked

    ck = torch_load_checked(run_dir / "best.pt")
    cfg = json.loads(ck["config"])
    return {
        "config": portable_config(ck["config"]),
        "state_dict": half_state(ck["model"]),
        "tokenizer": {
            "json": (run_dir / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"),
            "fingerprint": ck["tokenizer_fingerprint"],
        },
        "data": {
            "language": args.language,
            "n_images": args.n_images,
            "seed": args.seed,
            "size": args.size,
            "fingerprint": dict(ck["data_fingerprint"]),
        },
        "train": {
            "steps": int(ck["step"]),
            "batch_size": cfg["train"]["batch_size"],
            "seed": cfg["seed"],
            "command": args.command,
            "wall_s": args.wall_s,
            "threads": args.threads,
            "cpu_s": args.cpu_s,
            "val_float32": {k: float(v) for k, v in ck["val"].items()},  # as trained, before float16
            "note": args.note,
        },
        "scores": {},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--language", required=True)
    ap.add_argument("--n-images", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--command", required=True, help="the command that trained the run")
    ap.add_argument("--wall-s", type=float, default=None, help="its wall-clock seconds, if known")
    ap.add_argument("--threads", type=int, default=None, help="its torch threads, if known")
    ap.add_argument("--cpu-s", type=float, default=None, help="its CPU seconds (user), if known")
    ap.add_argument("--note", default="")
    ap.add_argument("--dest", type=Path, default=None, help="ship into this folder, not the package (a trial)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import ris_nb.shipped
    from ris_nb.evaluate import evaluate

    if args.dest:  # `load_shipped` reads the checkpoint from `shipped_dir()`: here, from DEST
        ris_nb.shipped.shipped_dir = lambda: args.dest.resolve()
    ck = shipped_dict(args.run_dir, args)
    out = ris_nb.shipped.shipped_dir() / f"{args.name}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, out)
    sh = ris_nb.shipped.load_shipped(args.name)
    loader = sh.loaders(["val"], folder=args.dest / "data" if args.dest else None)["val"]
    ck["scores"]["val"] = evaluate(sh.model, loader, protocol=sh.cfg.eval.protocol, progress=False)["overall"]
    torch.save(ck, out)
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB)")
    print("val, float32 as trained:", {k: round(v, 2) for k, v in ck["train"]["val_float32"].items()})
    print("val, float16 as shipped:", {k: round(v, 2) for k, v in ck["scores"]["val"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
