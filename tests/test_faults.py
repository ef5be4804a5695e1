"""Regression tests for the fault probe of issue 13: each bad input or fault gets a clear error (exit code 2 from the CLI,
no traceback) or survives with nothing lost. FAULTS.md lists them."""
import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ris_nb.core import get_preset, validate_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
CLI = [sys.executable, "-m", "ris_nb.cli"]


def cli(*args, check_rc=None, **kw):
    p = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=ENV, timeout=600, **kw)
    if check_rc is not None:
        assert p.returncode == check_rc, f"rc {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


def refused(p, *fragments):
    "The CLI refused with exit code 2, one `error:` line naming every fragment, and no traceback."
    assert p.returncode == 2, f"rc {p.returncode}\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    for f in fragments: assert f in p.stderr, (f, p.stderr[-3000:])


# ---------------------------------------------------------------- config (00_core)

def test_section_override_merges_into_the_section():
    cfg = get_preset("lavt_tiny")
    new = cfg.override({"train": {"max_steps": 2, "batch_size": 4}})
    assert (new.train.max_steps, new.train.batch_size) == (2, 4)
    assert new.train.lr == cfg.train.lr == 1e-3 and new.train.eval_every == cfg.train.eval_every


def test_override_refuses_a_list():
    with pytest.raises(ValueError, match="override expects a dict"):
        get_preset("lavt_tiny").override([("train.lr", 1e-4)])


@pytest.mark.parametrize("updates,fragment", [
    ({"train.max_steps": 0}, "train.max_steps=0"), ({"train.max_steps": -5}, "train.max_steps=-5"),
    ({"train.eval_every": 0}, "train.eval_every=0"), ({"train.batch_size": -4}, "train.batch_size=-4"),
    ({"train.lr": math.inf}, "train.lr=inf"), ({"train.lr": math.nan}, "train.lr=nan"),
    ({"data.image_size": 50}, "data.image_size=50"), ({"data.image_size": 0}, "data.image_size=0"),
    ({"eval.select_metric": "accuracy"}, "eval.select_metric='accuracy'"),
])
def test_validate_config_names_the_key(updates, fragment):
    with pytest.raises(ValueError, match="expected") as e:
        validate_config(get_preset("lavt_tiny").override(updates))
    assert fragment in str(e.value), e.value
