"""Data-loader workers and a shared memory (`/dev/shm`) too small for their batches: refused in one line, before any
worker starts (issue 70)."""

import re
import shutil
import subprocess
import sys
from collections import namedtuple

import pytest

import ris_nb.io as io
from conftest import TINY_RUN

Usage = namedtuple("Usage", "total used free")


def test_train_refuses_workers_a_small_shared_memory_cannot_serve(shaperefs_data, tmp_path, monkeypatch, capsys):
    from ris_nb.cli import main

    real = shutil.disk_usage
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: Usage(1 << 14, 0, 1 << 14) if p == "/dev/shm" else real(p))
    data = shaperefs_data(40, 3, 64)
    args = ["train", "--data", data / "shaperefs", "--out", tmp_path / "run", *TINY_RUN, "data.num_workers=2"]
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.num_workers=2 needs about" in err[0] and "/dev/shm has 16 KiB free" in err[0], err
    assert not (tmp_path / "run" / "checkpoints").exists()


def can_mount_tmpfs() -> bool:
    "A private mount namespace where a tmpfs can be mounted: root on Linux with `unshare`."
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    p = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"], capture_output=True)
    return p.returncode == 0


@pytest.mark.slow  # a process of its own (≈ 10 CPU s); make test: the same line in-process, above
@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs a private mount namespace (root, unshare) to shrink /dev/shm")
def test_a_real_16_kib_dev_shm_is_named_without_a_traceback(shaperefs_data, tmp_path):
    data = shaperefs_data(40, 3, 64)
    run = [sys.executable, "-m", "ris_nb", "train", "--data", data / "shaperefs", "--out", tmp_path / "run", *TINY_RUN]
    cmd = " ".join(f"'{a}'" for a in [*run, "data.num_workers=2"])
    p = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs /dev/shm && exec {cmd}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr[-2000:]
    line = (
        r"ris_nb train: error: data.num_workers=2 needs about [\d.]+ MiB of shared memory for its batches, and "
        r"/dev/shm has 16 KiB free; set data.num_workers=0, or give /dev/shm more room \(docker run --shm-size=1g\)"
    )
    assert re.fullmatch(line, p.stderr.strip()), p.stderr[-2000:]  # one line: no traceback, no "Exception ignored"
