"""The checkpoints shipped inside the package (`ris_nb/assets/checkpoints`, `load_shipped` in appendix 97): 30 MB at
most in all, plain data that `torch.load(weights_only=True)` reads, listed as package data, and each one's recorded val
scores measured again by `ris_nb.evaluate.evaluate` on data generated afresh from its recipe (the REFER files' SHA-256
must be those it was trained on)."""

import configparser
import fnmatch
from pathlib import Path

import pytest
import torch

from ris_nb.shipped import DATA_RECIPE, SHIPPED_KEYS, load_shipped, read_shipped, shipped_dir, shipped_names

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 30_000_000
EXPECTED = ["lavt_tiny", "magnet_tiny", "sag_tiny"]  # 06_lavt, 07_mask_grounding, 09_magnet and 11_sag load these


def test_the_course_checkpoints_are_shipped_and_small():
    assert shipped_names() == EXPECTED
    sizes = {p.name: p.stat().st_size for p in shipped_dir().rglob("*") if p.is_file()}
    assert sum(sizes.values()) <= MAX_BYTES, f"shipped checkpoints take {sum(sizes.values()):,} bytes: {sizes}"


@pytest.mark.parametrize("name", EXPECTED)
def test_a_shipped_checkpoint_is_plain_data_with_its_recipe(name):
    raw = torch.load(shipped_dir() / f"{name}.pt", map_location="cpu", weights_only=True)
    ck = read_shipped(name)
    assert set(SHIPPED_KEYS) <= set(raw) and set(DATA_RECIPE) | {"fingerprint"} <= set(ck["data"])
    assert {"steps", "batch_size", "seed", "command"} <= set(ck["train"])
    assert {str(t.dtype) for t in ck["state_dict"].values() if t.is_floating_point()} == {"torch.float16"}
    assert {"oIoU", "mIoU", "n"} <= set(ck["scores"]["val"])


def test_setup_ships_them_as_package_data():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    patterns = cfg["DEFAULT"]["package_data"].split()
    pkg = ROOT / "ris_nb"
    for p in shipped_dir().rglob("*"):
        if p.is_file():
            rel = p.relative_to(pkg).as_posix()
            assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), f"{rel} matches no package_data in settings.ini"


def test_an_unknown_name_is_named():
    with pytest.raises(FileNotFoundError, match="shipped: lavt_tiny, magnet_tiny, sag_tiny"):
        read_shipped("lavt_huge")


# lavt_tiny and magnet_tiny only in `make test-all`: `make test`'s notebook step scores both on every val sentence
# (06_lavt, 09_magnet: oIoU within 0.1 of the recorded one, oIoU and mIoU printed as saved); sag_tiny here in both.
MEASURED_IN_NOTEBOOKS = {"lavt_tiny", "magnet_tiny"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in MEASURED_IN_NOTEBOOKS else n for n in EXPECTED]
)
def test_the_recorded_val_score_is_measured_again(name, shaperefs_data):
    from ris_nb.evaluate import evaluate

    sh = load_shipped(name)
    d = sh.data
    root = shaperefs_data(d["n_images"], d["seed"], d["size"], d["language"])  # generated afresh this session
    loader = sh.loaders(["val"], folder=root)["val"]  # refuses data whose SHA-256 differ from the recorded
    got = evaluate(sh.model, loader, protocol=sh.cfg.eval.protocol, progress=False)["overall"]
    want = sh.scores["val"]
    assert got["n"] == want["n"]
    for k in ("oIoU", "mIoU", "P@0.5"):
        assert abs(got[k] - want[k]) <= 0.1, f"{name}: val {k} {got[k]:.2f}, recorded {want[k]:.2f}"
