"""Shared by the test files: the ShapeRefs folders they read, generated once per session, and one way to run the command
line in a subprocess. Scheduling for `make test` (pytest-xdist, `--dist loadgroup`): the three learning runs are most of
pytest's time, so they are collected first and grouped so that magnet_tiny's run and the lavt_tiny + sag_tiny runs start
at once on different workers, while every other test fills the gaps; started last, the longest run would leave one
worker idle at the end. Each xdist worker is its own session, so a folder is generated at most once per worker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
CLI = [sys.executable, "-m", "ris_nb"]
# `ris_nb train` arguments of a seconds-long lavt_tiny run at 64 px that logs every step and evaluates and saves
# every 2; tests add `--set` items (e.g. "train.max_steps=2")
TINY_RUN = [
    "--preset",
    "lavt_tiny",
    "--set",
    "data.image_size=64",
    "train.batch_size=4",
    "train.log_every=1",
    "train.eval_every=2",
    "train.ckpt_every=2",
    "train.device=cpu",
]


def pytest_collection_modifyitems(session, config, items):
    # stable: keeps the rest's order
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/test_learning.py") else 1)


def run(args, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run `args` one-threaded and offline, capturing text output; `check`: a non-zero exit fails with the command
    and its output's tail."""
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=ENV, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        )
    return p


def cli(*args, check_rc: int | None = None, **kw) -> subprocess.CompletedProcess:
    "`ris_nb <args>` in a subprocess; `check_rc`: assert that exit code (showing the output's tail otherwise)."
    p = run(CLI + list(args), check=False, **kw)
    if check_rc is not None:
        assert p.returncode == check_rc, f"rc {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="session")
def shaperefs_data(tmp_path_factory) -> Callable[..., Path]:
    """`get(n_images, seed, size=128, language="plain")`: a data root holding `shaperefs/` made with those settings,
    generated once per session and shared: read it only (`copy_data` it into `tmp_path` to change it)."""
    from ris_nb.data.shaperefs import ensure_shaperefs

    made: dict[tuple, Path] = {}

    def get(n_images: int, seed: int, size: int = 128, language: str = "plain") -> Path:
        key = (n_images, seed, size, language)
        if key not in made:
            root = tmp_path_factory.mktemp(f"shaperefs-{n_images}-{seed}-{size}-{language}")
            ensure_shaperefs(root / "shaperefs", *key)
            made[key] = root
        return made[key]

    return get


def copy_data(root: Path, dest: Path) -> Path:
    "A private copy of a shared data root (for a test that changes the data); returns `dest`."
    shutil.copytree(root, dest)
    return dest
