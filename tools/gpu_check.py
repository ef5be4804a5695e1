"""The GPU check: our training, evaluation and launch paths on one CUDA device in ≤ 8 minutes, one CSV row per check.

Usage: timeout 600 python tools/gpu_check.py [--out nbs/results/gpu_check.csv] [--budget-s 450] [--checks precision …]
       timeout 500 python tools/gpu_check.py --profile [--commit SHA]   # where a step's time goes, ≤ 8 minutes
       python tools/gpu_check.py --device cpu --tiny --out /tmp/gpu_check.csv   # the same code on the CPU, toy sizes
The CPU run takes 2–3 minutes on a 2-core machine shared with other jobs, most of it starting processes (torchrun's
two). Every row carries the date, the device, torch's version and the commit (git's, '+changes' when ris_nb/ or tools/
differ from it; --commit where the checkout has no git).

Checks (each in a process of its own under its own time limit: a check that fails or runs out of time is a row with a
note, never a hang):
- `precision`: magnet_tiny and sag_tiny trained by `TrainingRun` (the run object `ris_nb train` uses) on a small
  generated ShapeRefs under CUDA autocast bf16 and fp16 (fp16: the path of a GPU without bf16 — `train.amp=auto` then
  picks fp16 with a `GradScaler`; here `torch.cuda.is_bf16_supported` answers False in that process). The loss must
  fall; the run is then killed (SIGKILL) between two checkpoints and resumed in a new process, and its losses and final
  weights are compared with the uninterrupted run's. Steps 1..h of the killed run (h: its checkpoint) are a second
  uninterrupted run, so the note separates CUDA's own run-to-run differences from what resuming adds.
- `torchrun_cli`: `torchrun --standalone --nproc_per_node 1` running the console script's `train` for a few steps
  (NCCL on a GPU, gloo on the CPU; with one process `ris_nb` makes no process group, see the note).
- `nccl_ddp`: the library's multi-process path (DDP wrapper, loss averaging, gathered RNG states, sharded validation) on
  a one-rank process group of the device's backend.
- `paper_step`: magnet_paper and sag_paper with random weights at the papers' resolution: training-step time and peak
  memory at the largest batch of 8, 4, 2, 1 that fits (one training step of the Learner).
- `paper_eval`: `ris_nb eval` on a checkpoint of each paper preset (random weights, ShapeRefs val resized to the paper's
  resolution): evaluation throughput in sentences/s (the second of two runs; the first, cold, is in the note).
With `--tiny` the paper checks run magnet_tiny and sag_tiny at 64 px in the paper presets' place (the paper models are
143–307 M parameters), the precision checks train a few steps in float32, and the data is a few dozen scenes.

The profile mode (`--profile` = `--checks paper_step sweep profile msda graphs`, budget 420 s; `paper_step` is the
baseline, rerun in the same call so that every number can be compared with it). Its tables also go to a markdown file
beside the CSV (`gpu_check_profile.md` for `gpu_check.csv`), one dated section per run:
- `sweep`: magnet_paper and sag_paper training steps (random weights, paper resolution) at batch 4, 8 and 16 on one
  model: median step time, peak memory, samples/s; a batch whose steps would not fit in the check's time is skipped
  (said in its row). The batch-8 row gives the verdict: step time ×≥ 1.7 from batch 4 to 8 → GPU-bound, kernels first;
  ≤ 1.2 → host-bound, launches and syncs first; in between, mixed.
- `profile`: two training steps at batch 8 under `torch.profiler` after two warm-up steps, MagNet in each form
  (`model.impl` reference and fast; on CUDA also fast with `train.compile=regional`): the top 15 kernels by device
  time (CPU: ops by self time), kernel launches and kernels per step (CPU: aten calls), the host-device syncs of one
  step by call site (`torch.cuda.set_sync_debug_mode('warn')`; CUDA only) and each top-level module's memory over one
  step (forward hooks; CUDA only).
- `msda`: magnet_paper's deformable attention alone (one layer, batch 8 at 480 px, the step's autocast), forward and
  backward in its three forms: one grid_sample per level (the lesson's), over all levels (training's) and one
  embedding_bag per corner; median time and peak memory of each, to choose training's form on the GPU.
- `graphs`: magnet_tiny and sag_tiny training steps at batch 32, 64 px: eager; the whole step captured as one CUDA
  graph (`torch.cuda.graph`; the row says where capture fails); forward and losses under
  `torch.compile(mode='reduce-overhead')` (compile time and graph breaks in the note). On the CPU only eager runs.
Under `--tiny` the sweep takes 1 warm-up and 2 timed steps, the profile one step at batch 2, graphs batch 4.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import gc
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's ris_nb, here and in every check process
DEFAULT_OUT = ROOT / "nbs" / "results" / "gpu_check.csv"
COLUMNS = [
    "check",
    "device",
    "precision",
    "preset",
    "batch",
    "steps",
    "step_ms",
    "peak_mem_mb",
    "loss_first",
    "loss_last",
    "resume_identical",
    "samples_per_s",
    "note",
    "date",
    "torch",
    "commit",
]
PRELOAD = ["ris_nb.__main__", "ris_nb.train", "ris_nb.evaluate", "ris_nb.models", "ris_nb.data.shaperefs"]
PAPERS = {"magnet_paper": "magnet_tiny", "sag_paper": "sag_tiny"}  # paper preset → its stand-in under --tiny
TINY_PRESETS = ["magnet_tiny", "sag_tiny"]
FORMS = ["reference", "fast", "fast+compile"]  # MagNet's, in the profile and graphs checks; the last on CUDA only
CHECKS = ["precision", "torchrun_cli", "nccl_ddp", "paper", "paper_step", "sweep", "profile", "msda", "graphs"]
DEFAULT_CHECKS = CHECKS[:4]  # "paper": paper_step and paper_eval
PROFILE_CHECKS = ["paper_step", "sweep", "profile", "msda", "graphs"]  # --profile; paper_step: the baseline
LIMITS_S = {
    "sweep": 100,
    "profile": 100,
    "msda": 40,
    "eager": 45,
    "capture": 45,
    "compile": 120,
}  # GPU; --tiny: 90 s each


# ---------------------------------------------------------------- helpers run inside the check processes (torch here)


def _torch():
    import torch

    return torch


def device_info(device: str) -> dict:
    "The device's name, torch's version and whether the GPU computes bf16."
    torch = _torch()
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: torch sees no CUDA device on this machine")
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "nccl": bool(cuda and torch.distributed.is_available() and torch.distributed.is_nccl_available()),
    }


def synth(root: str, n_images: int, size: int) -> dict:
    "ShapeRefs under `root`/shaperefs."
    from ris_nb.data.shaperefs_files import generate

    generate(Path(root) / "shaperefs", n_images=n_images, seed=0, size=size, verbose=False)
    return {"ok": True}


def peak_mb(device: str) -> float:
    "Peak CUDA memory allocated by this process, or on the CPU its peak resident set (MiB)."
    torch = _torch()
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def step_clock():
    "A callback timing each optimizer step (device synchronised), stopping the run after `stop_at` steps or `stop_s` s."
    from ris_nb.train import CancelFitException, Callback
    from ris_nb.checkpoints import save_checkpoint
    from ris_nb.checkpoints import model_state

    class StepClock(Callback):
        order = 30  # after the step's log line and checkpoint

        def __init__(self, stop_at: int | None = None, stop_s: float | None = None, final: Path | None = None):
            self.stop_at, self.stop_s, self.final, self.times = stop_at, stop_s, final, []

        def sync(self):
            if self.learn.dist.device.type == "cuda":
                _torch().cuda.synchronize()
            return time.perf_counter()

        def before_fit(self):
            self.t0 = self.start = self.sync()

        def after_step(self):
            t = self.sync()
            self.times.append((t - self.t0) * 1e3)
            self.t0 = t
            l = self.learn
            # the budget starts after two warm-up steps (CUDA's first kernels)
            if len(self.times) <= 2:
                self.start = t
            over = self.stop_s and len(self.times) > 2 and t - self.start > self.stop_s
            if (self.stop_at and l.step >= self.stop_at) or over:
                self.save()
                raise CancelFitException

        def after_fit(self):
            if self.learn.step >= self.learn.cfg.train.max_steps:
                self.save()

        def save(self):
            if self.final:
                save_checkpoint({"model": model_state(self.learn.core), "step": self.learn.step}, self.final)

        def median_ms(self, skip: int = 2) -> float:
            t = self.times[skip:] or self.times
            return round(statistics.median(t), 2) if t else float("nan")

    return StepClock


def kill_at(step: int):
    "A callback that kills its own process (SIGKILL: nothing cleaned up) right after step `step` is logged."
    from ris_nb.train import Callback

    class KillAt(Callback):
        order = 15  # after the log line (LogCB), before the step's checkpoint

        def after_step(self):
            if self.learn.step == step:
                os.kill(os.getpid(), signal.SIGKILL)

    return KillAt()


def run_config(preset: str, data: str, out: str, device: str, precision: str, steps: int, ckpt_every: int, tiny: bool):
    "`preset` on the generated ShapeRefs, logging every step, no validation; tiny: 64 px, batch 2."
    from ris_nb.presets import get_preset

    cfg = get_preset(preset)
    amp = {"fp32": "off", "bf16": "bf16", "fp16": "auto"}[precision]
    sets = {
        "data.root": data,
        "data.num_workers": 0,
        "train.max_steps": steps,
        "train.log_every": 1,
        "train.ckpt_every": ckpt_every,
        "train.eval_every": steps,
        "train.out_dir": out,
        "train.device": device,
        "train.amp": amp,
        "train.warmup_steps": min(cfg.train.warmup_steps, steps // 10),
    }
    if tiny:
        sets |= {"data.image_size": 64, "train.batch_size": 2}
    return cfg.override(sets)


def reset_peak(device: str) -> None:
    "Zero CUDA's peak-memory counter; the caching allocator exists only once CUDA is initialised in this process."
    torch = _torch()
    torch.cuda.init()
    torch.empty(1, device=device)
    torch.cuda.reset_peak_memory_stats(device)


def without_bf16() -> None:
    "This process answers `torch.cuda.is_bf16_supported() == False`: `train.amp=auto` takes the fp16 + GradScaler path."
    _torch().cuda.is_bf16_supported = lambda *a, **k: False


def train_run(
    preset: str,
    precision: str,
    data: str,
    out: str,
    device: str,
    steps: int,
    tiny: bool,
    ckpt_every: int,
    stop_at: int | None = None,
    stop_s: float | None = None,
    kill: int | None = None,
    compare: str | None = None,
) -> dict:
    "Train (or resume) `out` with `TrainingRun` as `ris_nb train` does, no validation; `compare`: a run folder to diff."
    from ris_nb.machine import precision_line
    from ris_nb.training_run import TrainingRun
    from ris_nb.run_folder import read_log

    if precision == "fp16":
        without_bf16()
    if device.startswith("cuda"):
        reset_peak(device)
    cfg = run_config(preset, data, out, device, precision, steps, ckpt_every, tiny)
    clock = step_clock()(stop_at, stop_s, Path(out) / "final.pt")
    TrainingRun(cfg).start(["train"], cbs=[clock] + ([kill_at(kill)] if kill else []), validate=False)
    losses = {r["step"]: r["loss"] for r in read_log(out) if "loss" in r}
    dw = weight_difference(Path(compare) / "final.pt", Path(out) / "final.pt") if compare else None
    return {
        "steps": max(losses),
        "step_ms": clock.median_ms(),
        "peak_mem_mb": peak_mb(device),
        "losses": losses,
        "batch": cfg.train.batch_size,
        "precision_line": precision_line(device, cfg.train.amp),
        "weight_diff": dw,
    }


def weight_difference(a: Path, b: Path) -> float:
    "Largest |Δ| between the model weights of two `final.pt` files."
    torch = _torch()
    sa, sb = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    return max(((sa[k].double() - sb[k].double()).abs().max().item() for k in sa if sa[k].numel()), default=0.0)


def random_batch(batch_size: int, image_size: int, vocab: int, tokens: int = 20):
    "Random images and token ids, a disc-shaped mask per sample."
    torch = _torch()
    from ris_nb.data.transforms import Batch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch_size, tokens), generator=g)
    yy, xx = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
    disc = (((yy - image_size / 2) ** 2 + (xx - image_size / 3) ** 2) < (image_size / 5) ** 2).float()
    return Batch(
        images=torch.randn(batch_size, 3, image_size, image_size, generator=g),
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        masks=disc.expand(batch_size, -1, -1).clone(),
    )


def paper_config(preset: str, device: str, tiny: bool):
    "`preset` with random encoders (nothing read from disk); --tiny: its tiny stand-in at 64 px."
    from ris_nb.presets import get_preset
    from ris_nb.models.encoder_builds import offline_random

    cfg = offline_random(get_preset(PAPERS[preset] if tiny else preset))
    sets = {"train.device": device, "data.num_workers": 0}
    if tiny:
        sets |= {"data.image_size": 64, "model.text.vocab_size": 64}
    return cfg.override(sets)


def paper_step(preset: str, device: str, tiny: bool, steps: int) -> dict:
    "Learner steps on random batches at the largest batch of 8, 4, 2, 1 that fits: step time, peak memory."
    from ris_nb.core import seed_everything
    from ris_nb.registry import build_model
    from ris_nb.machine import precision_line
    from ris_nb.train import DeviceCB, Learner

    torch = _torch()
    cfg = paper_config(preset, device, tiny)
    seed_everything(0)
    model = build_model(cfg).to(device)
    tried = []
    for bs in [2] if tiny else [8, 4, 2, 1]:
        batch = random_batch(bs, cfg.data.image_size, cfg.model.text.vocab_size)
        c = cfg.override({"train.batch_size": bs, "train.max_steps": steps})
        clock, oom = step_clock()(), False
        if device.startswith("cuda"):
            reset_peak(device)
        try:
            Learner(model, [batch] * steps, c, [DeviceCB(), clock]).fit()
        except torch.OutOfMemoryError:
            oom = True
        if oom:  # outside the except block: its traceback no longer holds the tensors
            tried.append(bs)
            model.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.empty_cache()
            continue
        n = sum(p.numel() for p in model.parameters()) / 1e6
        oom = f"; batch {', '.join(map(str, tried))} ran out of memory" if tried else ""
        return {
            "steps": steps,
            "step_ms": clock.median_ms(),
            "peak_mem_mb": peak_mb(device),
            "batch": bs,
            "note": f"{cfg.name} ({n:.1f} M parameters, random weights) at {cfg.data.image_size} px, "
            f"batch {bs}{oom}; "
            f"median of steps 3..{steps} of the Learner; {precision_line(device, cfg.train.amp)}",
        }
    raise RuntimeError(f"out of memory at every batch size ({tried})")


def paper_eval(preset: str, device: str, tiny: bool, data: str, out: str) -> dict:
    "`ris_nb eval` (the console script, in this process) twice on a random-weight checkpoint: its `evaluate`'s rate."
    import ris_nb.evaluate
    from ris_nb.__main__ import main
    from ris_nb.core import seed_everything
    from ris_nb.registry import build_model
    from ris_nb.data.transforms import build_tokenizer, save_tokenizer, tokenizer_fingerprint
    from ris_nb.checkpoints import save_checkpoint
    from ris_nb.checkpoints import model_state

    torch = _torch()
    cfg = paper_config(preset, device, tiny).override(
        {"data.root": data, "data.dataset": "shaperefs", "data.split_by": "shaperefs", "data.tokenizer": "word"}
    )
    tok = build_tokenizer(cfg)
    if cfg.model.text.vocab_size < len(tok):
        cfg = cfg.override({"model.text.vocab_size": len(tok)})
    seed_everything(0)
    run = Path(out)
    save_tokenizer(tok, run / "tokenizer")
    save_checkpoint(
        {
            "model": model_state(build_model(cfg)),
            "config": cfg.to_json(),
            "step": 0,
            "tokenizer_fingerprint": tokenizer_fingerprint(tok),
        },
        run / "best.pt",
    )
    timed, library_evaluate = [], ris_nb.evaluate.evaluate

    def evaluate(model, loader, *a, **k):  # the CLI's own call, timed
        t = time.perf_counter()
        res = library_evaluate(model, loader, *a, **k)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timed.append((len(res["samples"]), time.perf_counter() - t))
        return res

    ris_nb.evaluate.evaluate = evaluate
    walls = []
    for _ in range(2):
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the report it prints
            rc = main(["eval", "--ckpt", str(run / "best.pt"), "--split", "val", "--out", str(run / "report")])
        if rc:
            raise RuntimeError(f"ris_nb eval exited with {rc}")
        walls.append(time.perf_counter() - t)
    (n, cold), (_, warm) = timed
    return {
        "samples_per_s": round(n / warm, 2),
        "peak_mem_mb": peak_mb(device),
        "batch": cfg.eval.batch_size,
        "note": f"{cfg.name} (random weights) on ShapeRefs val, {n} sentences at {cfg.data.image_size} px, "
        f"eval batch {cfg.eval.batch_size}, protocol {cfg.eval.protocol}: {n / cold:.1f} sentences/s cold; "
        f"whole command "
        f"{walls[1]:.1f} s (checkpoint load included); evaluate runs without autocast",
    }


def ddp_run(preset: str, data: str, out: str, device: str, steps: int, tiny: bool) -> dict:
    "`TrainingRun` with validation on a one-rank process group (nccl on CUDA, gloo on the CPU), the DDP path forced on."
    import torch.distributed as dist

    from ris_nb.distributed import DistInfo, finish_distributed
    from ris_nb.evaluate import evaluate
    from ris_nb.training_run import TrainingRun
    from ris_nb.run_folder import read_log

    cuda = device.startswith("cuda")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    if cuda:
        _torch().cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")

    class OneRankGroup(DistInfo):  # world 1, but every collective goes through the group
        distributed = property(lambda self: True)

    cfg = run_config(preset, data, out, device, "bf16" if cuda else "fp32", steps, steps, tiny)
    run = TrainingRun(cfg, evaluate=evaluate)
    run._info = OneRankGroup(0, 1, 0, _torch().device(device))
    clock = step_clock()()
    run.start(["train", "val"], cbs=[clock], validate=True)
    step_ms, backend = clock.median_ms(), dist.get_backend()
    del run, clock  # the learner, and its DDP wrapper with it
    finish_distributed()
    losses = {r["step"]: r["loss"] for r in read_log(out) if "loss" in r}
    val = [r for r in read_log(out) if r.get("split") == "val"]
    return {
        "steps": max(losses),
        "step_ms": step_ms,
        "peak_mem_mb": peak_mb(device),
        "losses": losses,
        "batch": cfg.train.batch_size,
        "note": f"{backend} group of one rank: DDP over the LossWrapper, losses averaged by all_reduce, RNG states "
        f"gathered for the checkpoint, validation sharded and reduced "
        f"(val oIoU {val[-1].get('oIoU', float('nan')):.1f})",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the profile mode (--profile), inside the processes

SWEEP = [4, 8, 16]
DIRECT = ("stem", "stage", "embed", "group")  # a top-level module's methods that models call directly, not via __call__
LAUNCH = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")


def sync(device: str) -> float:
    "perf_counter after the device finished its queued work."
    if device.startswith("cuda"):
        _torch().cuda.synchronize(device)
    return time.perf_counter()


def step_learner(model, cfg, batch_size: int):
    "A Learner over `model` (its optimizer, schedule, autocast and scaler as `fit` builds them), no callbacks."
    from ris_nb.train import Learner

    learn = Learner(model, [], cfg.override({"train.batch_size": batch_size, "train.max_steps": 10**6}))
    learn.trainer.train()
    return learn


def learner_steps(learn, batch, n: int, device: str) -> list[float]:
    "`n` training steps of the Learner (`one_batch`: forward, losses, backward, optimizer) on `batch`: ms each."
    times, t = [], sync(device)
    for _ in range(n):
        learn.batch = batch
        learn.one_batch()
        t, t0 = sync(device), t
        times.append((t - t0) * 1e3)
    return times


def free_cuda(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        _torch().cuda.empty_cache()


def sweep_run(preset: str, device: str, tiny: bool, budget_s: float) -> dict:
    """Training steps at batch 4, 8, 16 on one model: median ms and peak memory per batch; a batch whose steps would
    not fit in what is left of `budget_s` (projected from the previous batch's, as if time grew with the batch) is
    skipped."""
    from ris_nb.core import seed_everything
    from ris_nb.registry import build_model
    from ris_nb.machine import precision_line

    torch, end = _torch(), time.monotonic() + budget_s
    cfg = paper_config(preset, device, tiny)
    seed_everything(0)
    model = build_model(cfg).to(device)
    warm, timed = (1, 2) if tiny else (2, 6)
    rows, last = [], None
    for bs in SWEEP:
        left = end - time.monotonic()
        if last and (warm + timed) * last[1] / 1e3 * bs / last[0] > left:  # as if the time grew with the batch
            rows.append(
                {
                    "batch": bs,
                    "note": f"skipped: batch {last[0]} took {last[1]:.0f} ms per step, so {warm + timed} steps of "
                    f"{bs} (projected ≈ {(warm + timed) * last[1] * bs / last[0] / 1e3:.0f} s) would not fit in the "
                    f"{left:.0f} s left of this check's {budget_s:.0f} s",
                }
            )
            continue
        batch = random_batch(bs, cfg.data.image_size, cfg.model.text.vocab_size).to(device)
        if device.startswith("cuda"):
            reset_peak(device)
        learn, oom = step_learner(model, cfg, bs), False
        try:
            ms = learner_steps(learn, batch, warm + timed, device)
        except torch.OutOfMemoryError:
            oom = True
        if oom:  # outside the except block: its traceback no longer holds the tensors
            del learn, batch
            model.zero_grad(set_to_none=True)
            free_cuda(device)
            rows.append({"batch": bs, "note": "out of memory"})
            continue
        med = statistics.median(ms[warm:])
        rows.append(
            {
                "batch": bs,
                "steps": timed,
                "step_ms": round(med, 2),
                "peak_mem_mb": peak_mb(device),
                "samples_per_s": round(bs / med * 1e3, 2),
            }
        )
        last = (bs, med)
        del learn, batch
        model.zero_grad(set_to_none=True)
        free_cuda(device)
    return {
        "rows": rows,
        "note": f"{cfg.name} (random weights) at {cfg.data.image_size} px; median of {timed} Learner steps after "
        f"{warm} warm-up; {precision_line(device, cfg.train.amp)}",
    }


def md_table(rows: list[dict], cols: list[str]) -> str:
    "A markdown table of `rows` restricted to `cols`."

    def cell(v):
        return f"{v:,.2f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v))

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(out + ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows])


def short_site(path: str, line: int) -> str:
    "A call site relative to this checkout or to site-packages."
    for root in (str(ROOT) + os.sep, "site-packages" + os.sep):
        if root in path:
            path = path.split(root, 1)[1]
    return f"{path}:{line}"


def top_ops(prof, cuda: bool, steps: int, top: int) -> tuple[list[dict], float]:
    "The `top` kernels (CUDA) or CPU ops (self time) by time, per step; and the total of that time per step (ms)."
    from torch.autograd import DeviceType

    tot, n = {}, {}
    for e in prof.events():
        if cuda and e.device_type != DeviceType.CPU:
            t = e.time_range.elapsed_us()
        elif not cuda and e.device_type == DeviceType.CPU and not e.is_async:
            t = e.self_cpu_time_total
        else:
            continue
        tot[e.name], n[e.name] = tot.get(e.name, 0) + t, n.get(e.name, 0) + 1
    if cuda and not tot:  # no device events listed: the ops' own device time instead
        for e in prof.key_averages():
            if e.self_device_time_total > 0:
                tot[e.key], n[e.key] = e.self_device_time_total, e.count
    all_us = sum(tot.values()) or 1
    rows = [
        {
            "kernel" if cuda else "op": name[:90],
            "calls per step": n[name] // steps,
            "ms per step": round(us / 1e3 / steps, 3),
            "share": f"{100 * us / all_us:.1f} %",
        }
        for name, us in sorted(tot.items(), key=lambda kv: -kv[1])[:top]
    ]
    return rows, all_us / 1e3 / steps


def launch_counts(prof, cuda: bool, steps: int) -> dict:
    "Per step: kernel launches and kernels (CUDA), or aten calls (all, and those not called by another aten op)."
    from torch.autograd import DeviceType

    ev = list(prof.events())
    if cuda:
        dev = [e for e in ev if e.device_type != DeviceType.CPU]
        return {
            "launch calls": sum(e.name in LAUNCH for e in ev) // steps,
            "kernels": sum(not e.name.startswith(("Memcpy", "Memset")) for e in dev) // steps,
            "memcpy/memset": sum(e.name.startswith(("Memcpy", "Memset")) for e in dev) // steps,
            "sync runtime calls (one is the timing's)": sum("Synchronize" in e.name for e in ev) // steps,
        }
    aten = [e for e in ev if e.name.startswith("aten::")]
    top = sum(not (e.cpu_parent and e.cpu_parent.name.startswith("aten::")) for e in aten)
    return {"aten calls": len(aten) // steps, "top-level aten calls": top // steps}


def count_syncs(learn, batch, device: str) -> tuple[int, list[dict]]:
    "One step under `torch.cuda.set_sync_debug_mode('warn')`: the synchronizing calls it warns of, by call site."
    import warnings
    from collections import Counter

    torch = _torch()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            learn.batch = batch
            learn.one_batch()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sync(device)
    hits = [w for w in caught if "synchroniz" in str(w.message).lower()]
    sites = Counter(short_site(w.filename, w.lineno) for w in hits)
    return len(hits), [{"call site": s, "syncs": c} for s, c in sites.most_common(10)]


def module_memory(model, learn, batch, device: str) -> list[dict]:
    """One step with hooks on the model's top-level modules (and their directly called methods): per module, the
    memory still held after its forward (activations kept for backward, summed over calls) and its peak above the
    memory at entry (largest over calls), MiB."""
    torch = _torch()
    stats, depth, handles = {}, [0], []

    def enter(name):
        depth[0] += 1
        if depth[0] == 1:
            torch.cuda.reset_peak_memory_stats(device)
            stats.setdefault(name, {"module": name, "calls": 0, "kept MiB": 0.0, "peak above entry MiB": 0.0})
            stats[name]["_start"] = torch.cuda.memory_allocated(device)

    def leave(name):
        depth[0] -= 1
        if depth[0] == 0:
            s, now = stats[name], torch.cuda.memory_allocated(device)
            s["calls"] += 1
            s["kept MiB"] += round((now - s["_start"]) / 2**20, 1)
            s["peak above entry MiB"] = max(
                s["peak above entry MiB"], round((torch.cuda.max_memory_allocated(device) - s["_start"]) / 2**20, 1)
            )

    def wrap(fn, name):
        def g(*a, **k):
            enter(name)
            try:
                return fn(*a, **k)
            finally:
                leave(name)

        return g

    tops = [
        (name, m)
        for name, mod in model.named_children()
        for m in (mod.children() if isinstance(mod, (torch.nn.ModuleList, torch.nn.ModuleDict)) else [mod])
    ]
    for name, mod in tops:
        handles.append(mod.register_forward_pre_hook(lambda m, a, name=name: enter(name)))
        handles.append(mod.register_forward_hook(lambda m, a, o, name=name: leave(name)))
        for meth in DIRECT:
            if callable(getattr(mod, meth, None)) and not isinstance(getattr(mod, meth), torch.nn.Module):
                setattr(mod, meth, wrap(getattr(mod, meth), name))
    try:
        learn.batch = batch
        learn.one_batch()
    finally:
        for h in handles:
            h.remove()
        for _, mod in tops:
            for meth in DIRECT:
                mod.__dict__.pop(meth, None)
    return sorted(({k: v for k, v in s.items() if k != "_start"} for s in stats.values()), key=lambda s: -s["kept MiB"])


def profile_run(preset: str, device: str, tiny: bool, top: int = 15, form: str = "fast") -> dict:
    """Two training steps at batch 8 (--tiny: one at batch 2) under torch.profiler after two warm-up steps: top kernels
    (CPU: ops) by time, launches per step; on CUDA also a step's host syncs and the memory of each top-level module.
    `form`: the model's `model.impl` ('reference' | 'fast'), or 'fast+compile' (fast, `train.compile=regional`)."""
    from torch.profiler import ProfilerActivity, profile

    from ris_nb.core import seed_everything
    from ris_nb.machine import precision_line

    cuda = device.startswith("cuda")
    cfg = paper_config(preset, device, tiny)
    seed_everything(0)
    model = model_in_form(cfg, form, device)
    bs, steps = (2, 1) if tiny else (8, 2)  # --tiny: one profiled step (parsing the trace is most of the time)
    batch = random_batch(bs, cfg.data.image_size, cfg.model.text.vocab_size).to(device)
    if cuda:
        reset_peak(device)
    learn = step_learner(model, cfg, bs)
    warm = learner_steps(learn, batch, 2, device)
    peak = peak_mb(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        profiled = learner_steps(learn, batch, steps, device)
    kernels, busy_ms = top_ops(prof, cuda, steps, top)
    counts = launch_counts(prof, cuda, steps)
    host_ms = sum(e.self_cpu_time_total for e in prof.events() if not e.is_async) / 1e3 / steps
    del prof
    syncs, sites = count_syncs(learn, batch, device) if cuda else (None, [])
    memory = module_memory(model, learn, batch, device) if cuda else []
    what = "kernels by device time" if cuda else "CPU ops by self time"
    md = [
        f"#### {cfg.name}, batch {bs} at {cfg.data.image_size} px ({precision_line(device, cfg.train.amp)})",
        "",
        f"Step {warm[-1]:.1f} ms unprofiled (second warm-up step), {statistics.mean(profiled):.1f} ms under the "
        f"profiler; per step: host self time {host_ms:.1f} ms, "
        + (f"device busy {busy_ms:.1f} ms (kernels, summed); " if cuda else "")
        + "; ".join(f"{k} {v:,}" for k, v in counts.items())
        + (f"; host-device syncs {syncs}" if cuda else "; host-device syncs n/a (CUDA only)"),
        "",
        f"Top {top} {what}, per step (of {steps} profiled step{'s' if steps > 1 else ''}):",
        "",
        md_table(kernels, ["kernel" if cuda else "op", "calls per step", "ms per step", "share"]),
    ]
    if cuda:
        md += ["", "Synchronizing calls of one step (`torch.cuda.set_sync_debug_mode('warn')`), by call site:", ""]
        md += [md_table(sites, ["call site", "syncs"]) if sites else "none"]
        md += ["", "Memory by top-level module, one step (forward hooks; `torch.cuda.max_memory_allocated`):", ""]
        md += [md_table(memory, ["module", "calls", "kept MiB", "peak above entry MiB"])]
    else:
        md += ["", "Host-device syncs and memory by module: n/a on the CPU (CUDA's allocator and sync debug mode)."]
    return {
        "batch": bs,
        "steps": steps,
        "step_ms": round(warm[-1], 2),
        "peak_mem_mb": peak,
        "counts": counts,
        "syncs": syncs,
        "host_ms": round(host_ms, 1),
        "busy_ms": round(busy_ms, 1) if cuda else None,
        "markdown": "\n".join(md),
    }


def failed_at(e: BaseException) -> str:
    """The first error of `e`'s chain (the one raised while capturing, not a later one from ending the capture), with
    the innermost frame of this checkout's code where it was raised."""
    import traceback

    chain = [e]
    while (nxt := chain[-1].__context__ or chain[-1].__cause__) is not None and len(chain) < 8:
        chain.append(nxt)
    first = chain[-1]
    for x in chain[::-1]:  # the first error's frames, else a later one's
        ours = [f for f in traceback.extract_tb(x.__traceback__) if f"{ROOT}{os.sep}ris_nb" in f.filename]
        if ours:
            break
    where = f" (at {short_site(ours[-1].filename, ours[-1].lineno)})" if ours else ""
    return f"{type(first).__name__}: {(str(first).splitlines() or [''])[0][:140]}{where}"  # a row's error: ≤ 300


def model_in_form(cfg, form: str, device: str):
    """`cfg`'s model on `device` in `form` (one of `FORMS`): its `model.impl` ('reference' | 'fast'), or
    'fast+compile' (the fast forms, compiled by regions as `train.compile=regional` does)."""
    from ris_nb.registry import build_model, model_part

    model = build_model(cfg.override({"model.impl": form.split("+")[0]})).to(device)
    return model_part("compile_regions")(model) if form.endswith("+compile") else model


def tiny_config(preset: str, device: str):
    "A tiny preset with random encoders at 64 px (the quickstart's size), on `device`."
    from ris_nb.presets import get_preset
    from ris_nb.models.encoder_builds import offline_random

    sets = {"train.device": device, "data.num_workers": 0, "data.image_size": 64, "model.text.vocab_size": 64}
    return offline_random(get_preset(preset)).override(sets)


def graphs_run(preset: str, device: str, tiny: bool, mode: str, form: str = "reference") -> dict:
    """A tiny preset's training step (forward, losses, backward, fused AdamW) at batch 32 (--tiny: 4): `eager`;
    `compile`: forward and losses under torch.compile(mode='reduce-overhead') (CUDA graphs); `capture`: the whole
    step captured in one torch.cuda.CUDAGraph and replayed. `form` as in `profile_run`."""
    from ris_nb.core import seed_everything
    from ris_nb.machine import amp_dtype

    torch = _torch()
    cfg = tiny_config(preset, device)
    seed_everything(0)
    model = model_in_form(cfg, form, device).train()
    bs = 4 if tiny else 32
    batch = random_batch(bs, 64, 64).to(device)
    dtype = amp_dtype(torch.device(device), cfg.train.amp)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True, capturable=mode == "capture")

    def amp():  # autocast's weight cache off: a captured graph must not hold casts made outside it
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.split(":")[0], dtype=dtype, cache_enabled=False)

    def loss_of(b):
        return model.losses(model(b), b)["loss"]

    f, note = loss_of, ""
    if mode == "compile":
        f = torch.compile(loss_of, mode="reduce-overhead")

    def step():  # gradients set to None before each step: a captured step allocates them in its graph's pool
        opt.zero_grad(set_to_none=True)
        if mode == "compile":
            torch.compiler.cudagraph_mark_step_begin()
        with amp():
            loss = f(batch)
        loss.backward()
        opt.step()

    warm, timed = (1, 2) if tiny else (3, 20)
    t = time.perf_counter()
    if mode == "capture":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warm):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        try:
            with torch.cuda.graph(graph):
                with amp():
                    loss = loss_of(batch)
                loss.backward()
                opt.step()
        except Exception as e:
            raise RuntimeError(f"capture failed: {failed_at(e)}") from None
        run = graph.replay
    else:
        for _ in range(warm):
            step()
        run = step
    first_s = sync(device) - t
    ms, t = [], sync(device)
    for _ in range(timed):
        run()
        t, t0 = sync(device), t
        ms.append((t - t0) * 1e3)
    if mode == "compile":
        from torch._dynamo.utils import counters

        breaks = sum(counters["graph_break"].values())
        note = f"; {counters['stats'].get('unique_graphs', 0)} graphs, {breaks} graph breaks"
    med = statistics.median(ms)
    return {
        "batch": bs,
        "steps": timed,
        "step_ms": round(med, 2),
        "samples_per_s": round(bs / med * 1e3, 2),
        "peak_mem_mb": peak_mb(device),
        "first_s": round(first_s, 1),
        "precision": {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype],
        "note": f"{warm} warm-up steps took {first_s:.1f} s" + note,
    }


# ---------------------------------------------------------------- the check processes


def msda_run(device: str, tiny: bool) -> dict:
    """magnet_paper's deformable attention alone (one MSDeformAttn: width 256, 8 heads, 4 levels, 4 points; batch 8 at
    480 px, --tiny: 2 at 64 px), forward and backward under the step's autocast, in three forms: `reference` (one
    grid_sample per level, the lesson's), `image` (one grid_sample over all levels, what training runs) and `table`
    (one embedding_bag per corner, evaluation's)."""
    torch = _torch()
    from ris_nb.models.fast import FastMSDeformAttn
    from ris_nb.models.mask2former import MSDeformAttn, reference_points

    class TableForm(FastMSDeformAttn):
        "The fast form sampling by its table under autograd too."

        def sample_stacked_image(self, *args):
            return self.sample_table(*args)

    cuda = device.startswith("cuda")
    bs, size = (2, 64) if tiny else (8, 480)
    shapes = [(size // s, size // s) for s in (4, 8, 16, 32)]
    tokens = sum(h * w for h, w in shapes)
    torch.manual_seed(0)
    attn = MSDeformAttn(256, 4, 8, 4).to(device)
    q, v = (torch.randn(bs, tokens, 256, device=device, requires_grad=True) for _ in range(2))
    ref = reference_points(shapes, device)[None].expand(bs, -1, -1)
    amp = (lambda: torch.autocast("cuda", torch.bfloat16)) if cuda else contextlib.nullcontext
    rows = {}
    for form, cls in (("reference", MSDeformAttn), ("image", FastMSDeformAttn), ("table", TableForm)):
        attn.__class__ = cls  # the same parameters in each form

        def step():
            with amp():
                y = attn(q, ref, v, shapes)
            y.float().square().mean().backward()

        step()
        if cuda:
            reset_peak(device)
        times = []
        for _ in range(3):
            t = sync(device)
            step()
            times.append((sync(device) - t) * 1e3)
        rows[form] = {"step_ms": round(statistics.median(times), 2), "peak_mem_mb": peak_mb(device)}
    return {"batch": bs, "size": size, "tokens": tokens, "forms": rows}


def _child(fn: str, kwargs: dict, result: str, threads: int | None) -> None:
    "Run `fn(**kwargs)` and write its result (or its error) to `result` as JSON."
    if threads:
        _torch().set_num_threads(threads)
    try:
        out = globals()[fn](**kwargs)
    except BaseException as e:  # any failure is a row, not a crash of the check
        import traceback

        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
    Path(result).write_text(json.dumps(out))


class Runner:
    "Each check in a process forked from a server that imported torch and ris_nb once; one deadline over them all."

    def __init__(self, budget_s: float, threads: int | None, work: Path):
        self.deadline, self.threads, self.work, self.n = time.monotonic() + budget_s, threads, work, 0
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def call(self, fn: str, limit: float, **kwargs) -> dict:
        "`fn(**kwargs)` in a new process, killed after `limit` s (or at the deadline): its result, or {'error': …}."
        limit = min(limit, self.left())
        if limit < 5:
            return {"error": "skipped: the check's time budget (--budget-s) was spent"}
        self.n += 1
        result = self.work / f"result_{self.n}.json"
        p = self.ctx.Process(target=_child, args=(fn, kwargs, str(result), self.threads))
        p.start()
        p.join(limit)
        if p.is_alive():
            p.kill()
            p.join()
            return {"error": f"timed out after {limit:.0f} s"}
        if result.exists():
            return json.loads(result.read_text())
        why = f"process ended by signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
        return {"error": why, "exitcode": p.exitcode}


# ---------------------------------------------------------------- the checks (parent side: no torch)


def loss_ends(losses: dict) -> tuple[float, float]:
    "Mean loss of the first and of the last tenth of the steps (at least one step each)."
    vals = [losses[k] for k in sorted(losses, key=int)]
    k = max(1, len(vals) // 10)
    return round(sum(vals[:k]) / k, 4), round(sum(vals[-k:]) / k, 4)


def max_diff(a: dict, b: dict, steps) -> float:
    "Largest |Δloss| of two runs over `steps` (inf where one run lacks a step)."

    def both(s):
        return str(s) in a and str(s) in b

    return max((abs(a[str(s)] - b[str(s)]) if both(s) else float("inf") for s in steps), default=0.0)


def precision_check(r: Runner, a, preset: str, precision: str, data: Path) -> dict:
    "Uninterrupted run, a run killed after step h+k (checkpoint at h), its resumption in a new process; compared."
    row = {"check": "precision", "preset": preset, "precision": precision}
    base = dict(preset=preset, precision=precision, data=str(data), device=a.device, steps=a.steps, tiny=a.tiny)
    work = r.work / f"{preset}_{precision}"
    s = r.call(
        "train_run",
        a.run_limit_s,
        out=str(work / "straight"),
        ckpt_every=a.steps,
        stop_s=None if a.tiny else a.train_s,
        **base,
    )
    if "error" in s:
        return {**row, "note": f"uninterrupted run: {s['error']}"}
    n = s["steps"]
    h = n // 2
    k = h + max(1, (n - h) // 3)
    first, last = loss_ends(s["losses"])
    row |= {
        "batch": s["batch"],
        "steps": n,
        "step_ms": s["step_ms"],
        "peak_mem_mb": s["peak_mem_mb"],
        "loss_first": first,
        "loss_last": last,
    }
    falls = "the loss fell" if last < first else "THE LOSS DID NOT FALL"
    if n < 4:
        return {**row, "note": f"{falls}; only {n} steps in the time given: too few to kill and resume"}
    killed = r.call("train_run", a.run_limit_s, out=str(work / "resumed"), ckpt_every=h, kill=k, **base)
    if killed.get("exitcode") != -signal.SIGKILL:
        return {**row, "note": f"{falls}; the run to kill did not die by SIGKILL after step {k}: {killed}"}
    res = r.call(
        "train_run",
        a.run_limit_s,
        out=str(work / "resumed"),
        ckpt_every=h,
        stop_at=n,
        compare=str(work / "straight"),
        **base,
    )
    if "error" in res:
        return {**row, "note": f"{falls}; resumed run: {res['error']}"}
    d_before = max_diff(s["losses"], res["losses"], range(1, h + 1))
    d_after = max_diff(s["losses"], res["losses"], range(h + 1, n + 1))
    dw = res["weight_diff"]
    row["resume_identical"] = d_before == 0 and d_after == 0 and dw == 0
    why = (
        ""
        if row["resume_identical"]
        else (
            "; steps 1..h differ too, so two uninterrupted runs differ (non-deterministic CUDA kernels, e.g. "
            "atomic adds "
            "in index/embedding backward): not a resume fault"
            if d_before > 0
            else "; only the resumed steps differ: a resume fault"
        )
    )
    hidden = "bf16 hidden from this process (as on a GPU without it); " if precision == "fp16" else ""
    row["note"] = (
        f"{falls}; {hidden}{s['precision_line']}; killed (SIGKILL) after step {k}, resumed from step {h} "
        f"in a new process: max |Δloss| steps 1..{h} {d_before:.3g} (two uninterrupted runs), "
        f"steps {h + 1}..{n} {d_after:.3g} "
        f"(resumed), final weights {dw:.3g}{why}"
    )
    return row


def torchrun_check(r: Runner, a, data: Path) -> dict:
    "The console script's `train` under `torchrun --standalone --nproc_per_node 1`, a few steps."
    out, steps = r.work / "torchrun", 2 if a.tiny else 20
    sets = [
        f"train.max_steps={steps}",
        "train.log_every=1",
        f"train.ckpt_every={steps}",
        f"train.eval_every={steps}",
        f"train.device={a.device}",
        "data.num_workers=0",
    ]
    sets += ["data.image_size=64", "train.batch_size=2"] if a.tiny else []
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "ris_nb",
        "train",
        "--preset",
        "magnet_tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--no-eval",
        "--set",
        *sets,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    row = {"check": "torchrun_cli", "preset": "magnet_tiny", "precision": "auto"}
    limit = min(a.run_limit_s, r.left())
    if limit < 5:
        return {**row, "note": "skipped: the check's time budget (--budget-s) was spent"}
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {**row, "note": f"timed out after {limit:.0f} s: {' '.join(cmd[1:])}"}
    wall = time.perf_counter() - t
    if p.returncode:
        return {**row, "note": f"exit code {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1][:300]}"}
    log = map(json.loads, (out / "log.jsonl").read_text().splitlines())
    losses = {str(x["step"]): x["loss"] for x in log if "loss" in x}
    first, last = loss_ends(losses)
    backend = "nccl" if a.device.startswith("cuda") else "gloo"
    return {
        **row,
        "batch": 2 if a.tiny else 8,
        "steps": len(losses),
        "loss_first": first,
        "loss_last": last,
        "note": f"torchrun --standalone --nproc_per_node 1 -m ris_nb train: {wall:.0f} s in all; "
        f"with WORLD_SIZE=1 "
        f"ris_nb makes no process group, so {backend} itself is checked by the nccl_ddp row",
    }


def ddp_check(r: Runner, a, data: Path) -> dict:
    row = {"check": "nccl_ddp", "preset": "magnet_tiny", "precision": "bf16" if a.device.startswith("cuda") else "fp32"}
    res = r.call(
        "ddp_run",
        a.run_limit_s,
        preset="magnet_tiny",
        data=str(data),
        out=str(r.work / "ddp"),
        device=a.device,
        steps=2 if a.tiny else 20,
        tiny=a.tiny,
    )
    if "error" in res:
        return {**row, "note": res["error"]}
    first, last = loss_ends(res["losses"])
    return {
        **row,
        **{k: res[k] for k in ("batch", "steps", "step_ms", "peak_mem_mb", "note")},
        "loss_first": first,
        "loss_last": last,
    }


def paper_checks(r: Runner, a, data: Path | None, evals: bool = True):
    "The rows of `paper_step` and (`evals`) `paper_eval` for each paper preset, one at a time."
    for preset in PAPERS:
        name = PAPERS[preset] if a.tiny else preset
        stand_in = f"--tiny: {name} at 64 px in {preset}'s place; " if a.tiny else ""
        res = r.call(
            "paper_step", a.run_limit_s, preset=preset, device=a.device, tiny=a.tiny, steps=3 if a.tiny else 12
        )
        yield {
            "check": "paper_step",
            "preset": name,
            "precision": "auto",
            **{k: res.get(k) for k in ("batch", "steps", "step_ms", "peak_mem_mb")},
            "note": stand_in + (res.get("note") or res.get("error", "")),
        }
        if not evals:
            continue
        res = r.call(
            "paper_eval",
            a.run_limit_s,
            preset=preset,
            device=a.device,
            tiny=a.tiny,
            data=str(data),
            out=str(r.work / f"eval_{preset}"),
        )
        yield {
            "check": "paper_eval",
            "preset": name,
            "precision": "fp32",
            "batch": res.get("batch"),
            "samples_per_s": res.get("samples_per_s"),
            "peak_mem_mb": res.get("peak_mem_mb"),
            "note": stand_in + (res.get("note") or res.get("error", "")),
        }


def verdict(ms4: float, ms8: float) -> str:
    "The batch sweep's reading: how the step time grows from batch 4 to batch 8 says what to work on first."
    q = ms8 / ms4
    what = "GPU-bound: kernels first" if q >= 1.7 else "host-bound: launches and syncs first" if q <= 1.2 else "mixed"
    return f"step time batch 8 / batch 4 = {q:.2f}: {what}"


def limit(r: Runner, a, what: str) -> float:
    "Seconds for one process of the profile mode: its own limit on a GPU (--tiny: 90), within the budget."
    return min(90.0 if a.tiny else LIMITS_S[what], r.left())


def sweep_checks(r: Runner, a, md: list):
    "Rows of the batch sweep (4, 8, 16) of each paper preset, the verdict in the batch-8 row; its table into `md`."
    table, notes = [], []
    for preset in PAPERS:
        name = PAPERS[preset] if a.tiny else preset
        stand_in = f"--tiny: {name} at 64 px in {preset}'s place; " if a.tiny else ""
        lim = limit(r, a, "sweep")
        res = r.call("sweep_run", lim, preset=preset, device=a.device, tiny=a.tiny, budget_s=max(lim - 15, 1))
        if "error" in res:
            yield {"check": "sweep", "preset": name, "precision": "auto", "note": stand_in + res["error"]}
            table.append({"preset": name, "verdict": res["error"]})
            continue
        notes.append(f"{name}: {res['note']}.")
        ms = {x["batch"]: x["step_ms"] for x in res["rows"] if x.get("step_ms")}
        v = verdict(ms[4], ms[8]) if 4 in ms and 8 in ms else "no verdict: batch 4 or 8 did not run"
        for x in res["rows"]:
            yield {
                "check": "sweep",
                "preset": name,
                "precision": "auto",
                **{k: x.get(k) for k in ("batch", "steps", "step_ms", "peak_mem_mb", "samples_per_s")},
                "note": stand_in
                + "; ".join(n for n in (x.get("note"), res["note"], v if x["batch"] == 8 else "") if n),
            }
            table.append({"preset": name, **x, "verdict": v if x["batch"] == 8 else ""})
    md += [
        "### Batch sweep",
        "",
        md_table(table, ["preset", "batch", "step_ms", "peak_mem_mb", "samples_per_s", "verdict", "note"]),
        "",
        *notes,
        "",
    ]


def profile_checks(r: Runner, a, md: list):
    "One row per paper preset from its two-step profile; the profile's tables into `md`."
    md += ["### Two-step profile", ""]
    for preset in PAPERS:
        name = PAPERS[preset] if a.tiny else preset
        stand_in = f"--tiny: {name} at 64 px in {preset}'s place; " if a.tiny else ""
        for form in profile_forms(preset, a.device, a.forms):
            yield from profile_rows(r, a, md, preset, name, stand_in, form)


def profile_forms(preset: str, device: str, only: list[str] | None = None) -> list[str]:
    """MagNet's `model.impl` forms (and, on CUDA, the fast one compiled by regions), or those of them in `only`; the
    others' one form, the reference."""
    if not preset.startswith("magnet"):
        return ["reference"]
    cuda = device.startswith("cuda")
    return [f for f in FORMS if (cuda or not f.endswith("+compile")) and (only is None or f in only)]


def profile_rows(r: Runner, a, md: list, preset: str, name: str, stand_in: str, form: str):
    "The profile row of one preset in one form; its tables into `md`."
    res = r.call("profile_run", limit(r, a, "profile"), preset=preset, device=a.device, tiny=a.tiny, form=form)
    stand_in += f"model.impl {form}; "
    if "error" in res:
        md += [f"#### {name} ({form}): {res['error']}", ""]
        yield {"check": "profile", "preset": name, "precision": "auto", "note": stand_in + res["error"]}
        return
    md += [f"##### form: {form}", "", res["markdown"], ""]
    counts = "; ".join(f"{k} {v:,}" for k, v in res["counts"].items())
    syncs = f"host-device syncs {res['syncs']}" if res["syncs"] is not None else "host-device syncs n/a (CPU)"
    busy = f"device busy {res['busy_ms']} ms, " if res["busy_ms"] is not None else ""
    yield {
        "check": "profile",
        "preset": name,
        "precision": "auto",
        **{k: res[k] for k in ("batch", "steps", "step_ms", "peak_mem_mb")},
        "note": f"{stand_in}per step under torch.profiler: {busy}host self time {res['host_ms']} ms; {counts}; "
        f"{syncs}; tables in {a.md.name}",
    }


def graphs_checks(r: Runner, a, md: list):
    """The tiny presets' step eager (MagNet in each form), then (CUDA) the reference under torch.compile's CUDA graphs
    and as one captured graph."""
    cuda = a.device.startswith("cuda")
    modes = ["eager", "capture", "compile"] if cuda else ["eager"]
    runs = [
        (m, p, f)
        for m in modes
        for p in a.presets
        for f in (profile_forms(p, a.device, a.forms) if m == "eager" else ["reference"])
    ]
    eager, table = {}, []
    for mode, preset, form in runs:
        lim = limit(r, a, "compile" if form.endswith("+compile") else mode)
        res = r.call("graphs_run", lim, preset=preset, device=a.device, tiny=a.tiny, mode=mode, form=form)
        what = {
            "eager": f"eager, model.impl {form}",
            "compile": "torch.compile(mode='reduce-overhead') over forward and losses",
            "capture": "the whole step (forward, losses, backward, fused AdamW) as one CUDA graph",
        }[mode]
        if "error" in res:
            note = f"{what}: {res['error']}"
        else:
            if (mode, form) == ("eager", "reference"):
                eager[preset] = res["step_ms"]
            baseline = (mode, form) != ("eager", "reference") and preset in eager
            gain = f"; {eager[preset] / res['step_ms']:.2f}× the eager reference (same call)" if baseline else ""
            note = f"{what}, batch {res['batch']} at 64 px, random weights: {res['note']}{gain}"
            if not cuda:
                note += "; CUDA graphs skipped: they need a CUDA device"
        row = {
            "check": "graphs",
            "preset": preset,
            "precision": res.get("precision", ""),
            **{k: res.get(k) for k in ("batch", "steps", "step_ms", "peak_mem_mb", "samples_per_s")},
            "note": note,
        }
        table.append({**row, "mode": f"{mode} ({form})" if mode == "eager" else mode})
        yield row
    md += ["### CUDA graphs", "", md_table(table, ["preset", "mode", "batch", "step_ms", "samples_per_s", "note"]), ""]


def msda_checks(r: Runner, a, md: list):
    "Deformable attention's three forms at magnet_paper's pixel-decoder shape: one row each, their table into `md`."
    name = "magnet_tiny" if a.tiny else "magnet_paper"
    res = r.call("msda_run", limit(r, a, "msda"), device=a.device, tiny=a.tiny)
    if "error" in res:
        md += [f"### Deformable attention: {res['error']}", ""]
        yield {"check": "msda", "preset": name, "precision": "auto", "note": res["error"]}
        return
    what = {
        "reference": "one grid_sample per level (the lesson's form)",
        "image": "one grid_sample over all levels (training's fast form)",
        "table": "one embedding_bag per corner",
    }
    table = []
    for form, x in res["forms"].items():
        note = (
            f"{form}: {what[form]}; one MSDeformAttn forward and backward, {res['tokens']:,} tokens at {res['size']} "
            f"px, median of 3"
        )
        row = {"check": "msda", "preset": name, "precision": "auto", "batch": res["batch"], **x, "note": note}
        table.append({**row, "form": form})
        yield row
    md += ["### Deformable attention alone", "", md_table(table, ["form", "batch", "step_ms", "peak_mem_mb"]), ""]


PROFILED = [
    ("sweep", sweep_checks),
    ("profile", profile_checks),
    ("msda", msda_checks),
    ("graphs", graphs_checks),
]

# ---------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="the same checks at toy sizes (the CPU test)")
    ap.add_argument(
        "--out",
        default=None,
        help=f"CSV to append the rows to (default: {DEFAULT_OUT.relative_to(ROOT)}, GPU rows only)",
    )
    ap.add_argument(
        "--steps", type=int, default=None, help="planned steps of each precision run (default 300; --tiny 4)"
    )
    ap.add_argument(
        "--budget-s", type=float, default=None, help="time for all checks (default 450; --profile 420; --tiny 240)"
    )
    ap.add_argument(
        "--checks",
        nargs="+",
        choices=CHECKS,
        default=None,
        help=f"which checks to run (default: {' '.join(DEFAULT_CHECKS)}; 'paper' is paper_step and paper_eval)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help=f"the profile mode: --checks {' '.join(PROFILE_CHECKS)} (paper_step: the baseline, rerun in the same "
        "call); tables also in a markdown file beside --out",
    )
    ap.add_argument("--commit", default=None, help="the commit to record (default: this checkout's, from git)")
    ap.add_argument(
        "--presets",
        nargs="+",
        choices=TINY_PRESETS,
        default=TINY_PRESETS,
        help="the presets the precision checks train (default: both)",
    )
    ap.add_argument(
        "--forms",
        nargs="+",
        choices=FORMS,
        default=None,
        help="MagNet's forms the profile and graphs checks run (default: reference, fast and, on CUDA, fast+compile)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads per check (default: torch's; --tiny 1)")
    a = ap.parse_args(argv)
    if a.profile and a.checks:
        ap.error(f"--profile runs {' '.join(PROFILE_CHECKS)}; pass either --profile or --checks")
    a.checks = PROFILE_CHECKS if a.profile else a.checks or DEFAULT_CHECKS
    a.steps = a.steps or (4 if a.tiny else 300)
    a.budget_s = a.budget_s or (240.0 if a.tiny else 420.0 if a.profile else 450.0)
    a.threads = a.threads or (1 if a.tiny else None)
    a.run_limit_s = 60.0 if a.tiny else 75.0  # one process of one check
    a.train_s = 15.0  # GPU: the uninterrupted precision run stops after this
    if a.steps < 4:
        ap.error(f"--steps {a.steps}: expected at least 4 (a checkpoint, a kill and a resume fit in them)")
    a.out = Path(a.out) if a.out else DEFAULT_OUT
    if a.device == "cuda":
        a.device = "cuda:0"
    if a.device == "cpu" and a.out.resolve() == DEFAULT_OUT:
        ap.error(f"--device cpu: {DEFAULT_OUT.relative_to(ROOT)} keeps GPU rows only; pass --out FILE")
    a.md = a.out.with_name(a.out.stem + "_profile.md")
    a.commit = a.commit or commit_id()
    return a


def commit_id() -> str:
    "This checkout's commit (short), '+changes' when ris_nb/ or tools/ differ from it; 'unknown' without git."
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "ris_nb", "tools"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty else "")


def write_rows(path: Path, rows: list[dict]) -> None:
    "Append `rows` to the CSV at `path` (header written when the file is new; a file without `commit` gains it)."
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    header = [] if new else path.read_text().splitlines()[0].split(",")
    if header == COLUMNS[:-1]:  # written before the commit column: the same rows with an empty commit
        with open(path, newline="") as f:
            old = list(csv.DictReader(f))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS)
            w.writeheader()
            w.writerows(old)
        os.replace(tmp, path)
    elif not new and header != COLUMNS:
        raise ValueError(f"{path}: its header is not {','.join(COLUMNS)}; move it away or pass another --out")
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        if new:
            w.writeheader()
        w.writerows(rows)


def append_md(path: Path, lines: list[str]) -> None:
    "Append `lines` to the markdown file at `path`."
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")


def show(row: dict, seconds: float) -> None:
    cells = [f"{row['check']:12s}", f"{row.get('preset', ''):13s}", f"{row.get('precision', ''):5s}"]
    for k, fmt in (
        ("steps", "steps {}"),
        ("step_ms", "{} ms/step"),
        ("peak_mem_mb", "peak {} MiB"),
        ("samples_per_s", "{} sentences/s"),
        ("resume_identical", "resume identical: {}"),
    ):
        if row.get(k) not in (None, ""):
            cells.append(fmt.format(row[k]))
    if row.get("loss_first") not in (None, ""):
        cells.append(f"loss {row['loss_first']} → {row['loss_last']}")
    print(" | ".join(cells) + f" | {row.get('note', '')} ({seconds:.0f} s)", flush=True)


def main(argv=None) -> int:
    a = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    r = Runner(a.budget_s, a.threads, work)
    try:
        info = r.call("device_info", 120, device=a.device)
        if "error" in info:
            raise SystemExit(f"gpu_check: {info['error']}")
        data = work / "data"
        if set(a.checks) & set(DEFAULT_CHECKS):  # the profile mode's checks use random batches
            made = r.call("synth", 120, root=str(data), n_images=24 if a.tiny else 300, size=64 if a.tiny else 128)
            if "error" in made:
                raise SystemExit(f"gpu_check: generating ShapeRefs: {made['error']}")
        precisions = ["fp32"] if a.device == "cpu" else ["bf16", "fp16"]
        stamp = {
            "device": info["device"],
            "torch": info["torch"],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": a.commit,
        }
        rows, clock = [], [time.monotonic()]

        def emit(row):  # written at once: a killed check run keeps its rows
            rows.append({**row, **stamp})
            write_rows(a.out, rows[-1:])
            show(rows[-1], time.monotonic() - clock[0])
            clock[0] = time.monotonic()

        for preset in a.presets if "precision" in a.checks else []:
            for precision in precisions:
                if precision == "bf16" and not info["bf16"]:
                    emit(
                        {
                            "check": "precision",
                            "preset": preset,
                            "precision": precision,
                            "note": "skipped: this GPU has no bf16",
                        }
                    )
                else:
                    emit(precision_check(r, a, preset, precision, data))
        if "torchrun_cli" in a.checks:
            emit(torchrun_check(r, a, data))
        if "nccl_ddp" in a.checks:
            emit(ddp_check(r, a, data))
        paper = "paper" in a.checks or "paper_step" in a.checks
        for row in paper_checks(r, a, data, evals="paper" in a.checks) if paper else []:
            emit(row)
        profiled = [(c, f) for c, f in PROFILED if c in a.checks]
        if profiled:
            append_md(
                a.md,
                [
                    f"## {stamp['date']} · {info['device']} · commit {a.commit} · torch {info['torch']}",
                    "",
                    f"`tools/gpu_check.py {' '.join(sys.argv[1:] if argv is None else argv)}`; rows in {a.out.name}.",
                    "",
                ],
            )
        for _, check in profiled:
            md = []
            for row in check(r, a, md):
                emit(row)
            append_md(a.md, md)
        print(f"{len(rows)} rows → {a.out}" + (f"; tables → {a.md}" if profiled else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
