"""End-to-end checks of the engine and the CLI: DDP equivalence (gloo, 2 processes), kill -9 + exact resume,
corrupt checkpoints, the synth → train → eval → predict round trip, and bad inputs.

A command starts a process of its own only where the claim needs one (a kill, DDP ranks, torchrun, the command line
itself once): each start imports torch, transformers and timm again (≈ 8 CPU s). The others run `ris_nb.cli.main`
or `tests/ddp_worker.py`'s `main` in this process, on one thread as a subprocess would (`in_process`)."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLI, ENV, run
from ris_nb.run_folder import read_log
from ris_nb.checkpoints import load_checkpoint

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def shaperefs(shaperefs_data):
    return shaperefs_data(48, 3, 64) / "shaperefs"


@contextmanager
def in_process():
    "Within the block, torch runs on one thread, as `conftest.ENV` makes a subprocess do; the count is restored after."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cli_run(args, capsys) -> tuple[str, str]:
    "`ris_nb ARGS` in this process on one thread (`--threads 1` where the command has it): stdout and stderr; exit 0."
    from ris_nb.cli import main

    capsys.readouterr()
    threads = ["--threads", "1"] if args[0] in ("train", "eval") else []
    with in_process():
        code = main([str(a) for a in [args[0], *threads, *args[1:]]])
    out, err = capsys.readouterr()
    assert code == 0, f"ris_nb {' '.join(map(str, args))}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
    return out, err


def worker_run(data: Path, out: Path, steps: int, accum: int = 1, noise: bool = False) -> None:
    "tests/ddp_worker.py's run in this process (what it does alone, without torchrun)."
    from ddp_worker import main

    with in_process():
        main(str(data), str(out), steps, accum, noise=noise)


@pytest.fixture(scope="module")
def one_process_run(shaperefs, tmp_path_factory):
    """tests/ddp_worker.py's run in one process: batch 8, 4 steps (what DDP and gradient accumulation must reproduce),
    and the same run with a rounding-sized noise added to every step's gradients (what the comparison allows)."""
    out = tmp_path_factory.mktemp("one_process")
    worker_run(shaperefs, out / "run", 4)
    worker_run(shaperefs, out / "noise", 4, noise=True)
    return out / "run"


def losses(run_dir):
    "step -> training loss from a run's log (later lines win, as after a resume)."
    return {r["step"]: r["loss"] for r in read_log(Path(run_dir) / "log.jsonl") if "loss" in r}


# Two runs that sum the same samples in another order (a batch of 8 against 2 × 4, one rank against two) compute the
# same training up to float32 rounding, so the claim is checked where it means something:
# - the first step (same weights): its loss within u·√N of its size, and every gradient entry within u·√N·G (u =
#   2⁻²⁴, N the terms summed per step, G the step's largest gradient entry; the gaps measured on AVX2, AVX-512 and
#   ATen's default path are ≤ 0.31 of that). A gradient averaged wrong (× 2, one rank's only) is off by ≈ G.
# - later steps: Adam turns the rounding noise of gradients that are zero in exact arithmetic (attention's key biases)
#   into whole-size updates, so the gap grows with the steps by an amount that depends on the CPU's kernels (AVX-512
#   against ATen's default ones: 6.7e-5 relative at step 3). The allowance is measured in the same run: the one-process
#   run again with a noise of u·√N·G added to every gradient entry (ddp_worker's RoundingNoiseCB); each step's gap must
#   stay within AMPLIFIED × the largest gap that noise caused up to that step (measured: ≤ 1.4 of it).
AMPLIFIED = 10


def assert_same_training(a: Path, b: Path, noise: Path) -> None:
    "Runs `a` and `b` train alike: the first step to float32 rounding, later steps within `noise`'s measured drift."
    from ddp_worker import ROUNDING

    la, lb, ln = losses(a), losses(b), losses(noise)
    assert sorted(la) == sorted(lb) == sorted(ln), (la, lb, ln)
    assert abs(la[1] - lb[1]) <= ROUNDING * abs(la[1]), ("step 1's loss", la[1], lb[1])
    ga, gb = (torch.load(d / "first_grads.pt", weights_only=True) for d in (a, b))
    assert ga.keys() == gb.keys()
    scale = ROUNDING * max(g.abs().max().item() for g in ga.values())
    gaps = {k: (ga[k] - gb[k]).abs().max().item() for k in ga}
    worst = max(gaps, key=gaps.get)
    assert gaps[worst] <= scale, ("step 1's gradient", worst, gaps[worst], scale)
    drift = 0.0
    for s in sorted(la)[1:]:
        drift = max(drift, abs(la[s] - ln[s]))
        assert abs(la[s] - lb[s]) <= AMPLIFIED * drift, (s, la[s], lb[s], drift)


def test_same_training_fails_a_run_that_differs(tmp_path):
    "The comparison refuses a first-step loss or gradient off by more than rounding, and a later step past the drift."
    from ddp_worker import ROUNDING

    def recorded_run(name, loss, grad):
        "A run folder holding only what the comparison reads: its losses and first-step gradients."
        d = tmp_path / name
        d.mkdir()
        (d / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in loss.items()))
        torch.save({"w": torch.tensor([grad, 20.0])}, d / "first_grads.pt")
        return d

    a = recorded_run("a", {1: 51.4, 2: 42.5, 3: 38.35}, 1.0)
    noise = recorded_run("noise", {1: 51.4, 2: 42.5 + 3e-3, 3: 38.35 - 1e-3}, 1.0)
    assert_same_training(a, a, noise)
    near = recorded_run("near", {1: 51.4 * (1 + ROUNDING / 2), 2: 42.5 + 0.02, 3: 38.35}, 1.0 + 1e-4)
    assert_same_training(a, near, noise)
    for name, loss, grad in [
        ("step1", {1: 51.4 * (1 + 2 * ROUNDING), 2: 42.5, 3: 38.35}, 1.0),  # the forward differs
        ("grad", {1: 51.4, 2: 42.5, 3: 38.35}, 2.0),  # a gradient averaged wrong
        ("later", {1: 51.4, 2: 42.5 + 0.05, 3: 38.35}, 1.0),  # past 10 × the noise's drift at step 2
    ]:
        with pytest.raises(AssertionError):
            assert_same_training(a, recorded_run(name, loss, grad), noise)


TRAIN = [
    "--preset",
    "lavt_tiny",
    "--set",
    "data.image_size=64",
    "train.batch_size=4",
    "train.log_every=1",
    "train.eval_every=1000",
    "train.device=cpu",
]


def test_kill_9_and_resume_gives_the_same_losses(shaperefs, tmp_path, capsys):
    "The uninterrupted run and the resume in this process; the run killed with SIGKILL in a process of its own."
    steps = ["train.max_steps=14", "train.ckpt_every=4"]
    ref, crash = tmp_path / "ref", tmp_path / "crash"
    cli_run(["train", "--data", shaperefs, "--out", ref, "--no-eval"] + TRAIN + steps, capsys)
    p = subprocess.Popen(
        CLI + ["train", "--data", str(shaperefs), "--out", str(crash), "--no-eval"] + TRAIN + steps,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    log = crash / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:  # kill mid-epoch, after the step-8 checkpoint
        if log.exists() and max(losses(crash), default=0) >= 9:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done = max(losses(crash))
    assert done < 14
    out, _ = cli_run(["train", "--data", shaperefs, "--out", crash, "--no-eval"] + TRAIN + steps, capsys)
    assert "resumed from" in out
    a, b = losses(ref), losses(crash)
    assert sorted(a) == sorted(b) == list(range(1, 15))
    assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def test_train_prints_each_val_score_as_it_is_measured(shaperefs, tmp_path, capsys):
    "`ris_nb train` prints one line per validation (step, metric, minutes), where the log holds the same score."
    steps = ["train.max_steps=4", "train.eval_every=2", "train.ckpt_every=1000"]
    out, _ = cli_run(["train", "--data", shaperefs, "--out", tmp_path / "run", "--no-eval"] + TRAIN + steps, capsys)
    lines = [ln for ln in out.splitlines() if ": val oIoU " in ln]
    vals = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r.get("split") == "val"]
    assert [ln.split(":")[0] for ln in lines] == ["step 2/4", "step 4/4"] and len(vals) == 2, out
    assert all(f"val oIoU {r['oIoU']:.2f} (" in ln and ln.endswith(" min)") for ln, r in zip(lines, vals)), out


def test_corrupt_checkpoint_falls_back_to_previous(shaperefs, tmp_path, capsys):
    out = tmp_path / "run"
    cli_run(
        ["train", "--data", shaperefs, "--out", out, "--no-eval"] + TRAIN + ["train.max_steps=4", "train.ckpt_every=2"],
        capsys,
    )
    ckpts = sorted((out / "checkpoints").glob("step_*.pt"))
    assert [c.name for c in ckpts] == ["step_0000002.pt", "step_0000004.pt"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(ckpts[-1])
    with pytest.warns(UserWarning, match="falling back to the previous checkpoint"):  # pytest takes it from stderr
        stdout, _ = cli_run(
            ["train", "--data", shaperefs, "--out", out, "--no-eval"]
            + TRAIN
            + ["train.max_steps=6", "train.ckpt_every=2"],
            capsys,
        )
    assert "resumed from" in stdout
    assert "step_0000002.pt" in stdout
    assert max(losses(out)) == 6


def test_ddp_two_processes_match_one_process(shaperefs, one_process_run, tmp_path):
    worker = str(HERE / "ddp_worker.py")
    p = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            worker,
            str(shaperefs),
            str(tmp_path / "two"),
            "4",
        ]
    )
    # fit's DDP wrapper was freed and the group destroyed with its threads, not left to interpreter exit
    for r in (0, 1):
        assert f"rank {r}: 0 gloo threads after finish_distributed" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    assert sorted(losses(tmp_path / "two")) == [1, 2, 3, 4]
    assert_same_training(one_process_run, tmp_path / "two", one_process_run.parent / "noise")


def test_gradient_accumulation_matches_the_full_batch(shaperefs, one_process_run, tmp_path):
    "2 micro-batches of 4 per optimizer step log the losses of one batch of 8 (same samples, per-sample losses)."
    worker_run(shaperefs, tmp_path / "accum", 4, 2)
    assert sorted(losses(tmp_path / "accum")) == [1, 2, 3, 4]
    assert_same_training(one_process_run, tmp_path / "accum", one_process_run.parent / "noise")


def test_epochs_become_optimizer_steps(shaperefs, tmp_path):
    """train.epochs overrides max_steps: fit runs exactly `epochs` passes (per-rank drop_last, accumulation) and
    saves the count."""
    from ris_nb.presets import get_preset
    from ris_nb.training_run import fit, prepare
    from ris_nb.loaders import epochs_to_steps

    cfg = get_preset("lavt_tiny").override(
        {
            "data.root": str(shaperefs.parent),
            "data.image_size": 64,
            "train.batch_size": 8,
            "train.accum_steps": 2,
            "train.epochs": 2,
            "train.max_steps": 10_000,
            "train.log_every": 1,
            "train.eval_every": 10_000,
            "train.ckpt_every": 10_000,
            "train.out_dir": str(tmp_path),
            "train.device": "cpu",
        }
    )
    _, loaders, model, cfg = prepare(cfg, splits=["train"])
    n = len(loaders["train"].dataset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(model, loaders, cfg, resume_run=False)
    finally:
        torch.set_num_threads(threads)
    expected = epochs_to_steps(2, n, 8, 1, 2)
    assert expected == (2 * (n // 8)) // 2 and 0 < expected < 10_000
    assert max(losses(tmp_path)) == expected
    assert json.loads((tmp_path / "config.json").read_text())["train"]["max_steps"] == expected


def test_torchrun_cli_runs(shaperefs, tmp_path):
    "`ris_nb train` under torchrun: magnet_tiny, whose MG reads channels-last maps through a 1×1 convolution."
    out = tmp_path / "tr"
    p = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29518",
            "-m",
            "ris_nb",
            "train",
            "--data",
            str(shaperefs),
            "--out",
            str(out),
        ]
        + [a.replace("lavt_tiny", "magnet_tiny") for a in TRAIN]
        + ["train.max_steps=2", "train.batch_size=32"]  # from 16 per rank on, oneDNN hands vis_proj channels-last grads
    )
    assert "Grad strides do not match" not in p.stderr  # DDP's stride warning on MG's vis_proj is filtered
    assert "outlived destroy_process_group" not in p.stderr  # the group (and its gloo threads) ended before exit
    assert (out / "report.md").exists() and (out / "best.pt").exists()
    assert len([r for r in read_log(out / "log.jsonl") if "loss" in r]) == 2  # rank 0 writes, once per step


def test_cli_round_trip_synth_train_eval_predict(tmp_path, capsys):
    "`ris_nb train` as a command line (a process of its own); synth, eval and predict through the same `main`."
    data = tmp_path / "shaperefs"
    cli_run(["synth", "--out", data, "--n-images", "40", "--seed", "1", "--size", "64"], capsys)
    out = tmp_path / "run"
    run(CLI + ["train", "--data", str(data), "--out", str(out)] + TRAIN + ["train.max_steps=3", "train.eval_every=3"])
    for f in ["config.json", "log.jsonl", "curves.png", "best.pt", "report.md", "results.json", "tokenizer"]:
        assert (out / f).exists(), f
    assert "oIoU" in (out / "report.md").read_text() and "val" in (out / "report.md").read_text()
    ev, _ = cli_run(
        ["eval", "--ckpt", out / "best.pt", "--split", "testB", "--protocol", "square", "--out", tmp_path / "ev"],
        capsys,
    )
    assert "testB" in ev and (tmp_path / "ev" / "report.md").exists()
    img = tmp_path / "photo.jpg"
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(img)
    pr, _ = cli_run(
        ["predict", "--ckpt", out / "best.pt", "--image", img, "--text", "the red circle", "--out", tmp_path / "m.png"],
        capsys,
    )
    m = np.asarray(Image.open(tmp_path / "m.png"))
    assert m.shape == (50, 70) and set(np.unique(m)) <= {0, 255}
    assert (tmp_path / "m_overlay.png").exists() and "mask:" in pr


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "--preset", "lavt_huge"], "available presets"),
        (["train", "--preset", "lavt_tiny", "--set", "train.lrr=1"], "allowed keys in train"),
        (["train", "--preset", "lavt_tiny", "--set", "train.max_steps=abc"], "train.max_steps"),
        (["train", "--preset", "lavt_tiny", "--data", "/nonexistent/shaperefs"], "ris_nb synth"),
    ],
)
def test_cli_bad_inputs(args, fragment, capsys):
    "Refused in one line, exit 2 (`main` in this process: argparse's refusals exit through SystemExit)."
    from ris_nb.cli import main

    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and fragment in err, err


def cli_in_process(args, capsys) -> tuple[int, str]:
    "Run `ris_nb ARGS` in this process (no interpreter start-up): exit code and stderr."
    from ris_nb.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_cli_bad_split_and_predict_inputs(shaperefs, tmp_path, capsys):
    "Bad --split, --image, --text, a second preset in one run directory, an unwritable --out: one error line, exit 2."
    out = tmp_path / "run"
    code, err = cli_in_process(
        ["train", "--data", shaperefs, "--out", out, "--no-eval"] + TRAIN + ["train.max_steps=1"], capsys
    )
    assert code == 0, err
    ck = out / "checkpoints" / "step_0000001.pt"
    code, err = cli_in_process(["eval", "--ckpt", ck, "--split", "tset"], capsys)
    assert code == 2 and "testA" in err, err
    code, err = cli_in_process(["predict", "--ckpt", ck, "--image", tmp_path / "none.png", "--text", "x"], capsys)
    assert code == 2 and "image not found" in err, err
    (tmp_path / "notimg.png").write_text("hello")
    code, err = cli_in_process(["predict", "--ckpt", ck, "--image", tmp_path / "notimg.png", "--text", "x"], capsys)
    assert code == 2 and "not a readable image" in err, err
    code, err = cli_in_process(["predict", "--ckpt", ck, "--image", tmp_path / "notimg.png", "--text", "  "], capsys)
    assert code == 2 and "--text: empty argument" in err, err
    # another preset in the same run directory: the differing keys are named
    code, err = cli_in_process(
        ["train", "--preset", "magnet_tiny", "--data", shaperefs, "--out", out] + TRAIN[2:] + ["train.max_steps=1"],
        capsys,
    )
    assert code == 2 and "model.name" in err, err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() != 0:  # root ignores permissions
        code, err = cli_in_process(["eval", "--ckpt", ck, "--split", "val", "--out", ro / "x"], capsys)
        assert code == 2 and "not writable" in err, err


@pytest.mark.parametrize("preset", ["lavt_mini", "lavt_mg_mini", "magnet_mini", "sag_mini"])
def test_every_mini_preset_resumes_bit_identically(preset, shaperefs, tmp_path):
    "As tests/test_faults.py does for the tiny presets (packaged MobileNetV2 + MiniLM; BatchNorm statistics included)."
    from resume_check import resume_difference

    diff, straight, resumed = resume_difference(preset, shaperefs.parent, tmp_path, steps=3)
    assert straight == resumed and sorted(resumed) == [1, 2, 3]
    assert diff == 0.0, f"{preset}: max |Δ| of the final weights {diff:.3g}"


@pytest.mark.skipif(
    not __import__("ris_nb.machine").machine.cpu_native_bf16(), reason="this CPU has no native bfloat16"
)
@pytest.mark.parametrize("preset", ["lavt_tiny", "magnet_tiny"])
def test_cpu_bf16_autocast_trains_and_resumes_bit_identically(preset, shaperefs, tmp_path, capsys):
    """train.amp=bf16 on a CPU with native bf16: the step runs under autocast (losses differ from float32) and
    resumes exactly."""
    from resume_check import resume_difference

    diff, straight, resumed = resume_difference(
        preset, shaperefs.parent, tmp_path / "bf16", steps=3, extra={"train.amp": "bf16"}
    )
    assert "precision: bfloat16 autocast" in capsys.readouterr().out
    assert straight == resumed and sorted(resumed) == [1, 2, 3]
    assert diff == 0.0, f"{preset} bf16: max |Δ| of the final weights {diff:.3g}"
    _, fp32, _ = resume_difference(preset, shaperefs.parent, tmp_path / "fp32", steps=3, extra={"train.amp": "off"})
    assert fp32[1] != straight[1], "bf16 and float32 gave the same first loss: autocast did not run"


def test_cpu_without_native_bf16_falls_back_to_float32_with_a_message(shaperefs, tmp_path, capsys, monkeypatch):
    import ris_nb.machine
    from ris_nb.machine import amp_dtype, precision_line
    from ris_nb.training_run import train_tiny

    monkeypatch.setattr(ris_nb.machine, "cpu_native_bf16", lambda: False)
    assert amp_dtype("cpu", "bf16") is None and amp_dtype("cpu", "auto") is None
    assert "no native bfloat16" in precision_line("cpu", "bf16") and "falling back to float32" in precision_line(
        "cpu", "bf16"
    )
    model = train_tiny(tmp_path / "run", None, 1, "lavt_tiny", shaperefs.parent, {"train.amp": "bf16"})
    out = capsys.readouterr().out
    assert "precision: float32 (train.amp=bf16: this CPU has no native bfloat16" in out, out
    assert all(p.dtype == torch.float32 for p in model.parameters())
