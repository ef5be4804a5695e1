"""Arguments that take effect or are refused before any work, and outputs that never replace inputs (FAULTS.md, round
4): `--set` given twice, `predict --out` onto its own image or through a link or in a lossy format, unbounded `synth`,
`predict_image` given a PIL image, an array or no text, `experiments --record` that is a folder."""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ris_nb.__main__ import main as full_main
from ris_nb.cli import build_parser, config_from_args, main, predict_image
from ris_nb.cli_checks import as_pil_image, check_mask_path, overlay_path


def train_args(*sets: str) -> argparse.Namespace:
    argv = ["train", "--preset", "lavt_tiny"]
    for s in sets:
        argv += ["--set", *s.split()]
    return build_parser().parse_args(argv)


def test_set_given_twice_keeps_both_lists():
    cfg = config_from_args(train_args("train.max_steps=7", "train.batch_size=4 train.lr=0.002"))
    assert (cfg.train.max_steps, cfg.train.batch_size, cfg.train.lr) == (7, 4, 0.002)


def test_a_key_set_twice_takes_the_last_value_and_says_so():
    with pytest.warns(UserWarning, match="train.max_steps is given more than once; the last value, 9, is used"):
        cfg = config_from_args(train_args("train.max_steps=7", "train.max_steps=9"))
    assert cfg.train.max_steps == 9


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(p)
    return p


def predict(image, out, capsys) -> tuple[int, str]:
    rc = main(["predict", "--ckpt", "missing.pt", "--image", str(image), "--text", "the red circle", "--out", str(out)])
    return rc, capsys.readouterr().err


def test_predict_refuses_to_write_its_mask_over_the_input(image, capsys):
    before = image.read_bytes()
    rc, err = predict(image, image, capsys)
    assert rc == 2 and "is the input image" in err and image.read_bytes() == before


def test_predict_refuses_an_overlay_over_the_input(tmp_path, capsys):
    photo = tmp_path / "x_overlay.png"
    Image.new("RGB", (8, 8)).save(photo)
    rc, err = predict(photo, tmp_path / "x.png", capsys)
    assert rc == 2 and "the overlay" in err and "is the input image" in err
    assert overlay_path(tmp_path / "x.png") == photo


def test_predict_refuses_a_lossy_mask(image, tmp_path, capsys):
    rc, err = predict(image, tmp_path / "mask.jpg", capsys)
    assert rc == 2 and "lossy" in err and not (tmp_path / "mask.jpg").exists()


def test_predict_refuses_to_write_through_a_link(image, tmp_path):
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"keep")
    (tmp_path / "mask.png").symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        check_mask_path(tmp_path / "mask.png", image)
    assert target.read_bytes() == b"keep"


def test_synth_refuses_an_unbounded_count_before_any_work(tmp_path, capsys):
    out = tmp_path / "shaperefs"
    rc = main(["synth", "--out", str(out), "--n-images", str(10**12)])
    assert rc == 2 and "n_images must be between 1 and 1,000,000" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_images_come_as_files_pil_images_or_arrays(image):
    arr = np.asarray(Image.open(image))
    assert as_pil_image(image).size == as_pil_image(Image.open(image)).size == as_pil_image(arr).size == (8, 8)
    assert as_pil_image(arr[..., 0]).mode == "RGB"
    with pytest.raises(ValueError, match="uint8"):
        as_pil_image(arr.astype(np.float32))
    with pytest.raises(TypeError, match="file path, a PIL image or a uint8 array"):
        as_pil_image(42)


def test_predict_image_needs_the_text_as_a_string(image):
    with pytest.raises(TypeError, match="expected the expression as a str, got NoneType"):
        predict_image(None, None, None, image, None)


def test_a_record_that_is_a_folder_is_refused_before_training(tmp_path, capsys):
    rc = full_main(["experiments", "--table", "main", "--out", str(tmp_path / "t"), "--record", str(tmp_path)])
    assert rc == 2 and "expected a .json file name" in capsys.readouterr().err and not (tmp_path / "t").exists()


# --- studies own their folders ---------------------------------------------------------------------------------------

from ris_nb.experiments import QUICK, magnet_rows  # noqa: E402
from ris_nb.study_runner import claim_study_folder, data_settings, remove_run_dir, reusable, run_one  # noqa: E402


def test_a_study_inside_another_study_is_refused(tmp_path):
    claim_study_folder(tmp_path / "main_table")
    with pytest.raises(ValueError, match="lies inside the study folder"):
        claim_study_folder(tmp_path / "main_table" / "plain" / "ablation")
    assert claim_study_folder(tmp_path / "beside").is_dir()


def test_a_row_folder_that_is_a_link_is_never_deleted_through(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "seed0").mkdir(parents=True)
    (elsewhere / "seed0" / "keep.txt").write_text("mine")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "lavt").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="symbolic link"):
        run_one(magnet_rows()[0], 0, QUICK, tmp_path / "study")
    assert (elsewhere / "seed0" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="symbolic link"):
        remove_run_dir(tmp_path / "study" / "lavt")


def test_a_run_still_training_is_not_deleted(tmp_path):
    from ris_nb.distributed import RunLockedError

    code = (
        "import sys, time; from ris_nb.distributed import run_lock\n"
        "with run_lock(sys.argv[1]): print('locked', flush=True); time.sleep(30)"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "run" / "train")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError):
            remove_run_dir(tmp_path / "run")
        assert (tmp_path / "run" / "train").is_dir()
    finally:
        p.kill()
        p.wait()


def test_a_result_made_on_other_data_is_not_reused():
    from dataclasses import replace

    r = {"row": "lavt", "seed": 0, "language": "plain", "splits": {"val": {}}, "grounding": {"n": 1}}
    assert reusable({**r, "data": data_settings(QUICK)}, QUICK)
    with pytest.warns(UserWarning, match="trained on other data"):
        assert not reusable(r, replace(QUICK, language="appearance"))  # a result of before data settings
    with pytest.warns(UserWarning, match="trained on other data"):
        assert not reusable({**r, "data": data_settings(QUICK)}, replace(QUICK, n_images=400))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_pool_process_dies_with_its_study():
    code = (
        "import os, time; from ris_nb.io import die_with_parent\n"
        "me = os.getpid(); pid = os.fork()\n"
        "if pid == 0: die_with_parent(me); time.sleep(60); os._exit(0)\n"
        "print(pid, flush=True); time.sleep(1); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    child = int(out.split()[0])
    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(child), "the pool process outlived the study"


TORCHRUN_WORKER = """import os, sys, time
from ris_nb.distributed import init_distributed
info = init_distributed("cpu")
open(os.path.join(sys.argv[1], f"pid{info.rank}"), "w").write(str(os.getpid()))
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_torchrun_workers_die_with_a_killed_agent(tmp_path):
    (tmp_path / "worker.py").write_text(TORCHRUN_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    agent = subprocess.Popen(
        [*cmd, str(tmp_path / "worker.py"), str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    pids: list[int] = []
    try:
        deadline = time.time() + 120
        while len(pids) < 2 and time.time() < deadline and agent.poll() is None:
            time.sleep(0.2)
            pids = [int(p.read_text()) for p in tmp_path.glob("pid*") if p.read_text()]
        assert len(pids) == 2, f"the two ranks did not start (agent exit code {agent.poll()})"
        agent.kill()  # SIGKILL: no handler of the agent runs
        agent.wait()
        deadline = time.time() + 15
        while any(alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in pids), "a torchrun worker outlived its killed agent"
    finally:
        agent.kill()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


@pytest.mark.parametrize(
    "flag, value",
    [("--seeds", "0"), ("--seeds", "1000"), ("--jobs", "500"), ("--steps", "100000000"), ("--scenes", "10000000")],
)
def test_study_counts_are_bounded_before_any_work(tmp_path, capsys, flag, value):
    rc = full_main(["experiments", "--out", str(tmp_path / "s"), flag, value])
    assert rc == 2 and f"{flag} {value}: expected an integer from 1 to" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["experiments", "--out", ""],
        ["train", "--preset", "lavt_tiny", "--data", " "],
        ["grade", "", "x.ipynb"],
        ["train", "--preset", "lavt_tiny", "--set", ""],
    ],
)
def test_an_empty_argument_is_refused_before_any_work(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    assert full_main(argv) == 2 and "empty argument" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_check_data_and_train_agree_on_a_folder_without_val(tmp_path, capsys):
    assert full_main(["synth", "--out", str(tmp_path / "shaperefs"), "--n-images", "3", "--size", "64"]) == 0
    capsys.readouterr()
    for argv in (
        ["check-data", "--root", str(tmp_path)],
        ["check-data", "--root", str(tmp_path), "--preset", "lavt_tiny"],
    ):
        assert full_main(argv) == 2
        assert "no refs of split(s) val" in capsys.readouterr().out
    assert full_main(["train", "--preset", "lavt_tiny", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "no 'val' split" in capsys.readouterr().err
