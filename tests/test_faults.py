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


# ---------------------------------------------------------------- data files (02_refer, 03_shaperefs)

@pytest.fixture(scope="module")
def shaperefs(tmp_path_factory):
    from ris_nb.data.shaperefs import generate
    out = tmp_path_factory.mktemp("data") / "shaperefs"
    generate(out, n_images=40, seed=3, size=64, verbose=False)
    return out


@pytest.fixture
def data_copy(shaperefs, tmp_path):
    "A private copy of the dataset a test may damage."
    import shutil
    dst = tmp_path / "shaperefs"
    shutil.copytree(shaperefs, dst)
    return dst


def shared_pickle(depth: int) -> bytes:
    "Python-2 pickle: a non-ASCII BINSTRING, then `depth` levels of [x, x] each sharing the level below through the memo."
    out = bytearray(b"\x80\x02U\x01\xe9q\x00")
    for i in range(1, depth + 1): out += b"](h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"eq" + bytes([i])
    return bytes(out + b".")


def test_shared_refs_pickle_does_not_hang(data_copy):
    refs = data_copy / "refs(shaperefs).p"
    refs.write_bytes(shared_pickle(40))
    assert refs.stat().st_size < 400
    code = ("import sys; from ris_nb.data.refer import Refer\n"
            "try: Refer(sys.argv[1], 'shaperefs', 'shaperefs')\n"
            "except ValueError as e: print('refused:', e)\n")
    t0 = time.time()   # today's decoder copies 2**40 paths: hours; the fix decodes each shared list once
    p = subprocess.run([sys.executable, "-c", code, str(data_copy.parent)], capture_output=True, text=True, env=ENV, timeout=60)
    assert time.time() - t0 < 60 and p.returncode == 0, p.stderr
    assert "refused:" in p.stdout and "refs(shaperefs).p" in p.stdout, p.stdout


def test_self_referencing_pickle_is_refused(tmp_path):
    from ris_nb.data.refer import safe_load_pickle
    (tmp_path / "loop.p").write_bytes(b"\x80\x02]q\x00(h\x00U\x01\xe9e.")
    with pytest.raises(ValueError, match="loop.p: containers nested deeper"):
        safe_load_pickle(tmp_path / "loop.p")


def test_16_bit_greyscale_is_scaled_not_white(tmp_path):
    from ris_nb.data.refer import load_image
    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    img = load_image(tmp_path / "g16.png")
    assert img.shape == (16, 16, 3) and img[..., 0].ravel().tolist() == list(range(256))


def test_huge_image_is_refused_before_decoding(tmp_path):
    from ris_nb.data.refer import load_image
    Image.new("1", (20000, 10000)).save(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match=r"bomb.png.*200,000,000 pixels|bomb.png.*exceeds limit"):
        load_image(tmp_path / "bomb.png")


def _edit_instances(ddir: Path, fn) -> None:
    inst = json.loads((ddir / "instances.json").read_text())
    fn(inst)
    (ddir / "instances.json").write_text(json.dumps(inst))


def test_height_as_string_is_named(data_copy):
    from ris_nb.data.refer import Refer
    _edit_instances(data_copy, lambda inst: inst["images"][0].update(height="64"))
    with pytest.raises(ValueError, match=r"instances.json: images\[0\] field 'height' should be int, got '64' \(str\)"):
        Refer(data_copy.parent, "shaperefs", "shaperefs")


def test_utf16_instances_names_the_file(data_copy):
    from ris_nb.data.refer import Refer
    f = data_copy / "instances.json"
    f.write_bytes(f.read_text().encode("utf-16"))
    with pytest.raises(ValueError, match=r"instances.json: not UTF-8 text \(it looks like UTF-16\)"):
        Refer(data_copy.parent, "shaperefs", "shaperefs")


def test_synth_refuses_a_huge_size(tmp_path):
    p = cli("synth", "--out", tmp_path / "s", "--n-images", 1, "--size", 100000)
    refused(p, "size must be between 64 and 1024", "100000")
    assert not any(tmp_path.iterdir())


def test_synth_removes_stale_temp_folders(tmp_path):
    from ris_nb.data.shaperefs import generate
    stale = tmp_path / ".shaperefs.tmp-999999999"       # a killed run's leftover (pid beyond pid_max: dead)
    (stale / "images").mkdir(parents=True)
    live = tmp_path / f".shaperefs.tmp-{os.getpid()}x"  # not ours to judge: not a pid suffix
    live.mkdir()
    with pytest.warns(UserWarning, match="interrupted run"):
        generate(tmp_path / "shaperefs", n_images=4, seed=0, size=64, verbose=False)
    assert not stale.exists() and live.exists() and (tmp_path / "shaperefs" / "meta.json").exists()


# ---------------------------------------------------------------- training engine (12_training)

@pytest.mark.parametrize("preset", ["lavt_tiny", "lavt_mg_tiny", "magnet_tiny", "sag_tiny"])
def test_every_tiny_preset_resumes_bit_identically(preset, shaperefs, tmp_path):
    "Crash after the step-2 checkpoint, resume into a fresh model: same weights and losses as an uninterrupted run."
    from resume_check import resume_difference
    diff, straight, resumed = resume_difference(preset, shaperefs.parent, tmp_path)
    assert straight == resumed and sorted(resumed) == [1, 2, 3, 4]
    assert diff == 0.0, f"{preset}: max |Δ| of the final weights {diff:.3g}"
