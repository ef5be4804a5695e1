"""Regression tests for the fault probe of issue 13: each bad input or fault gets a clear error (exit code 2 from the
CLI, no traceback) or survives with nothing lost. FAULTS.md lists them."""

import contextlib
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

from ris_nb.presets import get_preset

from conftest import ENV, TINY_RUN, cli, copy_data, run


def refused(p, *fragments):
    "The CLI refused with exit code 2, one `error:` line naming every fragment, and no traceback."
    assert p.returncode == 2, f"rc {p.returncode}\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    for f in fragments:
        assert f in p.stderr, (f, p.stderr[-3000:])


def predict_args(ckpt, folder: Path, text: str = "the red circle", image=None, out=None) -> list:
    """`ris_nb predict` arguments: `image` (default: a black 32×32 `folder/x.png`, written here), the mask to `out`
    (default: `folder/m.png`)."""
    if image is None:
        image = folder / "x.png"
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    out = folder / "m.png" if out is None else out
    return ["predict", "--ckpt", ckpt, "--image", image, "--text", text, "--out", out]


@contextlib.contextmanager
def lock_held(folder: Path, what: str = "training"):
    "Another process holding `run_lock(folder, what)` while the block runs: its `Popen`."
    code = (
        "import sys, time; from ris_nb.distributed import run_lock\n"
        "with run_lock(sys.argv[1], sys.argv[2]): print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), what], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- config (00_core)


def test_section_override_merges_into_the_section():
    cfg = get_preset("lavt_tiny")
    new = cfg.override({"train": {"max_steps": 2, "batch_size": 4}})
    assert (new.train.max_steps, new.train.batch_size) == (2, 4)
    assert new.train.lr == cfg.train.lr == 1e-3 and new.train.eval_every == cfg.train.eval_every


def test_override_refuses_a_list():
    with pytest.raises(ValueError, match="override expects a dict"):
        get_preset("lavt_tiny").override([("train.lr", 1e-4)])


@pytest.mark.parametrize(
    "updates,fragment",
    [
        ({"train.max_steps": 0}, "train.max_steps=0"),
        ({"train.max_steps": -5}, "train.max_steps=-5"),
        ({"train.eval_every": 0}, "train.eval_every=0"),
        ({"train.batch_size": -4}, "train.batch_size=-4"),
        ({"train.lr": math.inf}, "train.lr=inf"),
        ({"train.lr": math.nan}, "train.lr=nan"),
        ({"data.image_size": 50}, "data.image_size=50"),
        ({"data.image_size": 0}, "data.image_size=0"),
        ({"eval.select_metric": "accuracy"}, "eval.select_metric='accuracy'"),
    ],
)
def test_validate_config_names_the_key(updates, fragment):
    from ris_nb.registry import validate_config

    with pytest.raises(ValueError, match="expected") as e:
        validate_config(get_preset("lavt_tiny").override(updates))
    assert fragment in str(e.value), e.value


# ---------------------------------------------------------------- data files (02_shaperefs, 03_refer)


@pytest.fixture(scope="module")
def shaperefs(shaperefs_data):
    return shaperefs_data(40, 3, 64) / "shaperefs"


@pytest.fixture
def data_copy(shaperefs, tmp_path):
    "A private copy of the dataset a test may damage."
    return copy_data(shaperefs, tmp_path / "shaperefs")


def shared_pickle(depth: int) -> bytes:
    """Python-2 pickle: a non-ASCII BINSTRING, then `depth` levels of [x, x] each sharing the level below through the
    memo."""
    out = bytearray(b"\x80\x02U\x01\xe9q\x00")
    for i in range(1, depth + 1):
        out += b"](h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"eq" + bytes([i])
    return bytes(out + b".")


def test_shared_refs_pickle_does_not_hang(data_copy):
    refs = data_copy / "refs(shaperefs).p"
    refs.write_bytes(shared_pickle(40))
    assert refs.stat().st_size < 400
    code = (
        "import sys; from ris_nb.data.refer import Refer\n"
        "try: Refer(sys.argv[1], 'shaperefs', 'shaperefs')\n"
        "except ValueError as e: print('refused:', e)\n"
    )
    t0 = time.time()  # today's decoder copies 2**40 paths: hours; the fix decodes each shared list once
    p = run([sys.executable, "-c", code, data_copy.parent], check=False, timeout=60)
    assert time.time() - t0 < 60 and p.returncode == 0, p.stderr
    assert "refused:" in p.stdout and "refs(shaperefs).p" in p.stdout, p.stdout


def test_self_referencing_pickle_is_refused(tmp_path):
    from ris_nb.io import safe_load_pickle

    (tmp_path / "loop.p").write_bytes(b"\x80\x02]q\x00(h\x00U\x01\xe9e.")
    with pytest.raises(ValueError, match="loop.p: containers nested deeper"):
        safe_load_pickle(tmp_path / "loop.p")


def test_16_bit_greyscale_is_scaled_not_white(tmp_path):
    from ris_nb.io import load_image

    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    img = load_image(tmp_path / "g16.png")
    assert img.shape == (16, 16, 3) and img[..., 0].ravel().tolist() == list(range(256))


def test_huge_image_is_refused_before_decoding(tmp_path):
    from ris_nb.io import load_image

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
    from ris_nb.data.shaperefs_files import generate

    stale = tmp_path / ".shaperefs.tmp-999999999"  # a killed run's leftover (pid beyond pid_max: dead)
    (stale / "images").mkdir(parents=True)
    live = tmp_path / f".shaperefs.tmp-{os.getpid()}x"  # not ours to judge: not a pid suffix
    live.mkdir()
    with pytest.warns(UserWarning, match="interrupted run"):
        generate(tmp_path / "shaperefs", n_images=4, seed=0, size=64, verbose=False)
    assert not stale.exists() and live.exists() and (tmp_path / "shaperefs" / "meta.json").exists()


def test_synth_killed_mid_swap_restores_the_set_aside_dataset(tmp_path):
    from ris_nb.data.shaperefs_files import ensure_shaperefs, generate

    generate(tmp_path / "shaperefs", n_images=4, seed=0, size=64, verbose=False)
    (tmp_path / "shaperefs" / "mine.txt").write_text("the user's own file in the dataset folder")
    # killed between parking the old folder and renaming the new one in: only the parked copy is left
    (tmp_path / "shaperefs").rename(tmp_path / ".shaperefs.old-999999999")
    (tmp_path / ".shaperefs.tmp-999999999" / "images").mkdir(parents=True)
    with pytest.warns(UserWarning) as said:
        ensure_shaperefs(tmp_path / "shaperefs", n_images=4, seed=0, size=64)
    assert [str(w.message).split(" ")[0] for w in said] == ["restored", "removed"], [str(w.message) for w in said]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shaperefs"]
    assert (tmp_path / "shaperefs" / "mine.txt").exists()  # put back, not generated again


# ---------------------------------------------------------------- training engine (12_training)


@pytest.mark.parametrize("preset", ["lavt_tiny", "lavt_mg_tiny", "magnet_tiny", "sag_tiny"])
def test_every_tiny_preset_resumes_bit_identically(preset, shaperefs, tmp_path):
    "Crash after the step-2 checkpoint, resume into a fresh model: same weights and losses as an uninterrupted run."
    from resume_check import resume_difference

    diff, straight, resumed = resume_difference(preset, shaperefs.parent, tmp_path)
    assert straight == resumed and sorted(resumed) == [1, 2, 3, 4]
    assert diff == 0.0, f"{preset}: max |Δ| of the final weights {diff:.3g}"


def test_fit_validates_the_config_before_any_work(tmp_path):
    from ris_nb.training_run import fit

    cfg = get_preset("lavt_tiny").override(
        {"train.batch_size": -4, "train.lr": math.inf, "train.out_dir": str(tmp_path / "r")}
    )
    with pytest.raises(ValueError, match=r"train.batch_size=-4.*train.lr=inf"):
        fit(None, {}, cfg)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- the CLI (15_cli), in process: main() is the console
# script


def main(capsys, *args) -> tuple[int, str]:
    "Run `ris_nb ARGS` in this process: (exit code, stderr). An exception escaping main() (a traceback) fails the test."
    from ris_nb.__main__ import main as cli_main  # every subcommand, `course` and `experiments` included

    rc = cli_main([str(a) for a in args])
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(shaperefs, tmp_path_factory):
    "A 2-step lavt_tiny run (best.pt, checkpoints, tokenizer) on the module's ShapeRefs."
    from ris_nb.cli import main as cli_main

    out = tmp_path_factory.mktemp("runs") / "a"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert (
            cli_main(
                ["train", "--data", str(shaperefs), "--out", str(out), "--no-eval", *TINY_RUN, "train.max_steps=2"]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def other_data(shaperefs_data):
    "ShapeRefs with another seed: the same 46 words, numbered differently; and a 4-image set with another vocabulary."
    return {"remapped": shaperefs_data(40, 4, 64), "small": shaperefs_data(4, 1, 64)}


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_refused_retrain_leaves_the_tokenizer_alone(trained, other_data, capsys):
    before = snapshot(trained / "tokenizer")
    rc, err = main(
        capsys,
        "train",
        "--data",
        other_data["small"] / "shaperefs",
        "--out",
        trained,
        "--no-eval",
        *TINY_RUN,
        "train.max_steps=2",
    )
    assert rc == 2 and "different config" in err and "model.text.vocab_size" in err, err
    assert snapshot(trained / "tokenizer") == before


def test_resume_on_a_remapped_vocabulary_is_refused(trained, other_data, capsys):
    from ris_nb.data.transforms import load_tokenizer, tokenizer_fingerprint
    from ris_nb.checkpoints import load_checkpoint

    ours = tokenizer_fingerprint(load_tokenizer(trained / "tokenizer"))
    assert load_checkpoint(trained / "best.pt")["tokenizer_fingerprint"] == ours
    rc, err = main(
        capsys,
        "train",
        "--data",
        other_data["remapped"] / "shaperefs",
        "--out",
        trained,
        "--no-eval",
        *TINY_RUN,
        "train.max_steps=4",
    )
    assert rc == 2 and "tokenizer_fingerprint " + ours in err, err
    # nothing trained
    assert max(r["step"] for r in map(json.loads, (trained / "log.jsonl").read_text().splitlines())) == 2


def test_eval_and_predict_refuse_another_runs_tokenizer(trained, other_data, tmp_path, capsys):
    import shutil
    from ris_nb.presets import get_preset
    from ris_nb.data.transforms import build_tokenizer

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained / "best.pt", run / "best.pt")
    cfg = get_preset("lavt_tiny").override({"data.root": str(other_data["remapped"])})
    build_tokenizer(cfg).save_pretrained(run / "tokenizer")  # same size, other ids
    rc, err = main(capsys, "eval", "--ckpt", run / "best.pt", "--data", trained.parent, "--split", "val")
    assert rc == 2 and "tokenizer_fingerprint" in err and "another vocabulary" in err, err
    rc, err = main(capsys, *predict_args(run / "best.pt", tmp_path))
    assert rc == 2 and "tokenizer_fingerprint" in err and not (tmp_path / "m.png").exists(), err


def test_second_training_on_the_same_run_directory_is_refused(trained, shaperefs, capsys):
    with lock_held(trained) as holder:
        lines = (trained / "log.jsonl").read_text()
        rc, err = main(
            capsys, "train", "--data", shaperefs, "--out", trained, "--no-eval", *TINY_RUN, "train.max_steps=4"
        )
        assert rc == 2 and f"in use by another training (pid {holder.pid})" in err, err
        assert (trained / "log.jsonl").read_text() == lines


def test_section_override_from_the_cli_keeps_its_siblings(tmp_path):
    from ris_nb.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        [
            "train",
            "--preset",
            "lavt_tiny",
            "--out",
            str(tmp_path / "r"),
            "--set",
            'train={"max_steps": 2, "batch_size": 4}',
        ]
    )
    cfg = config_from_args(args)
    assert (cfg.train.max_steps, cfg.train.batch_size, cfg.train.lr, cfg.train.eval_every) == (2, 4, 1e-3, 100)


def test_validation_split_without_sentences_is_refused_before_training(data_copy, tmp_path, capsys):
    refs_file = data_copy / "refs(shaperefs).p"
    refs = pickle.loads(refs_file.read_bytes())
    for r in refs:
        if r["split"] == "val":
            for s in r["sentences"]:
                s["raw"] = s["sent"] = ""
    refs_file.write_bytes(pickle.dumps(refs, protocol=2))
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="empty"):
        rc, err = main(capsys, "train", "--data", data_copy, "--out", out, "--no-eval", *TINY_RUN, "train.max_steps=2")
    assert rc == 2 and "split 'val' of shaperefs has no sentences" in err, err
    assert not (out / "log.jsonl").exists() and not (out / "best.pt").exists()


def _evil_refs(path: Path, payload) -> None:
    class Evil:
        def __reduce__(self):
            return payload

    path.write_bytes(pickle.dumps([{"ref_id": 1, "x": Evil()}], protocol=2))


@pytest.mark.parametrize(
    "payload,fragment",
    [
        ((os.system, ("touch /tmp/ris_nb_fault_probe",)), "refusing to load global posix.system"),
        ((__import__("collections").OrderedDict, ()), "refusing to load global collections.OrderedDict"),
    ],
)
def test_unsafe_refs_pickle_is_one_line(payload, fragment, data_copy, tmp_path, capsys):
    _evil_refs(data_copy / "refs(shaperefs).p", payload)
    rc, err = main(capsys, "train", "--data", data_copy, "--out", tmp_path / "run", *TINY_RUN)
    assert rc == 2 and fragment in err and "refs(shaperefs).p" in err, err
    assert not Path("/tmp/ris_nb_fault_probe").exists()


@pytest.mark.parametrize(
    "setting,fragment",
    [
        ("train.max_steps=0", "train.max_steps=0: expected an integer >= 1"),
        ("train.max_steps=-5", "train.max_steps=-5"),
        ("train.eval_every=0", "train.eval_every=0"),
        ("data.image_size=50", "data.image_size=50: expected a multiple of model.vision.patch_size=4"),
        ("data.image_size=0", "data.image_size=0: expected an integer from 32 to 2048"),
        ("data.image_size=100000", "data.image_size=100000: expected an integer from 32 to 2048"),
        ("data.num_workers=1000", "data.num_workers=1000: expected an integer from 0 to 64"),
        ("eval.select_metric=accuracy", "eval.select_metric='accuracy': expected one of 'oIoU'"),
        ("train.lr=Infinity", "train.lr=inf: expected a finite number > 0"),
    ],
)
def test_bad_settings_are_refused_before_any_work(setting, fragment, shaperefs, tmp_path, capsys):
    out = tmp_path / "run"
    rc, err = main(capsys, "train", "--data", shaperefs, "--out", out, *TINY_RUN, setting)
    assert rc == 2 and fragment in err, err
    assert not out.exists()


def test_bad_data_files_are_named(data_copy, tmp_path, capsys):
    _edit_instances(data_copy, lambda inst: inst["images"][0].update(height="64"))
    rc, err = main(capsys, "train", "--data", data_copy, "--out", tmp_path / "r1", *TINY_RUN)
    assert rc == 2 and "images[0] field 'height' should be int, got '64'" in err, err
    f = data_copy / "instances.json"
    f.write_bytes(f.read_text().encode("utf-16"))
    rc, err = main(capsys, "train", "--data", data_copy, "--out", tmp_path / "r2", *TINY_RUN)
    assert rc == 2 and f"{f}: not UTF-8 text" in err, err


def test_checkpoint_with_a_non_json_config_is_named(trained, tmp_path, capsys):
    import shutil
    from ris_nb.checkpoints import load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained / "tokenizer", run / "tokenizer")
    ck = load_checkpoint(trained / "best.pt")
    ck["config"] = "lavt_tiny, lr 1e-3"
    torch.save(ck, run / "bad.pt")
    rc, err = main(capsys, "eval", "--ckpt", run / "bad.pt")
    assert rc == 2 and f"{run / 'bad.pt'}: the stored config is not JSON" in err, err


def test_output_paths_are_checked_before_any_work(trained, shaperefs, tmp_path, capsys):
    afile = tmp_path / "afile.txt"
    afile.write_text("keep me")
    rc, err = main(capsys, "train", "--data", shaperefs, "--out", afile, *TINY_RUN, "train.max_steps=2")
    assert rc == 2 and f"--out {afile} is a file" in err, err
    rc, err = main(capsys, "eval", "--ckpt", trained / "best.pt", "--out", afile)
    assert rc == 2 and f"--out {afile} is a file" in err, err
    rc, err = main(capsys, "train", "--data", afile, "--out", tmp_path / "run", *TINY_RUN)
    assert rc == 2 and f"--data {afile} is a file" in err and "synth" not in err, err
    rc, err = main(capsys, *predict_args(trained / "best.pt", tmp_path, "red", out=tmp_path))
    assert rc == 2 and "is a directory; expected a file name for the mask" in err, err
    assert afile.read_text() == "keep me" and not (tmp_path / "run").exists()


def test_train_out_inside_the_data_is_refused(shaperefs, tmp_path, capsys):
    before = sorted(p.name for p in shaperefs.iterdir())
    for out, said in (
        (shaperefs, "is inside the dataset folder"),
        (shaperefs / "images" / "run", "is inside the dataset folder"),
        (shaperefs.parent, "holds the dataset folder"),
    ):
        rc, err = main(capsys, "train", "--data", shaperefs, "--out", out, *TINY_RUN)
        assert rc == 2 and said in err and "Traceback" not in err, err
    assert sorted(p.name for p in shaperefs.iterdir()) == before and not (shaperefs / "images" / "run").exists()


def test_predict_refuses_a_huge_image(trained, tmp_path, capsys):
    Image.new("1", (20000, 10000)).save(tmp_path / "bomb.png")
    rc, err = main(capsys, *predict_args(trained / "best.pt", tmp_path, "red", image=tmp_path / "bomb.png"))
    assert rc == 2 and "bomb.png" in err and "expected at most" in err, err


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_predict_under_a_file_size_limit_keeps_the_previous_outputs(trained, tmp_path, capsys):
    import resource

    args = [str(a) for a in predict_args(trained / "best.pt", tmp_path, "red")]
    rc, err = main(capsys, *args)
    assert rc == 0, err
    before = {p.name: p.read_bytes() for p in tmp_path.glob("m*.png")}
    assert sorted(before) == ["m.png", "m_overlay.png"]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, resource.RLIM_INFINITY))  # no image fits in 16 bytes

    p = subprocess.run(
        [sys.executable, "-m", "ris_nb", *args[:-3], "blue", *args[-2:]],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert p.returncode != 0 and f"cannot write {tmp_path / 'm.png'}" in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    assert {q.name: q.read_bytes() for q in tmp_path.glob("m*.png")} == before  # nothing half-written, nothing lost
    assert not [q.name for q in tmp_path.iterdir() if ".tmp-" in q.name]


def test_disk_full_is_one_line_and_loses_nothing(shaperefs, tmp_path, capsys, monkeypatch):
    import errno
    from ris_nb.checkpoints import checkpoint_paths, load_checkpoint

    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *a, **k):
        calls.append(1)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    rc, err = main(
        capsys,
        "train",
        "--data",
        shaperefs,
        "--out",
        out,
        "--no-eval",
        *TINY_RUN,
        "train.max_steps=4",
        "train.eval_every=100",
    )
    assert rc == 2 and "No space left on device" in err, err
    assert [p.name for p in checkpoint_paths(out)] == ["step_0000002.pt"]
    assert load_checkpoint(out / "checkpoints" / "step_0000002.pt")["step"] == 2  # the checkpoint before is intact
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp file left


# ---------------------------------------------------------------- data consistency (03_refer `check_index`, 15_cli
# `check-data`, issue 36)


def _plant(ddir: Path, fault: str) -> str:
    "Plant one `fault` in the ShapeRefs copy `ddir`; return what the error must name (a file, an id, a path)."
    from ris_nb.io import safe_load_pickle

    inst = json.loads((ddir / "instances.json").read_text())
    refs = safe_load_pickle(ddir / "refs(shaperefs).p")
    anns, imgs = {a["id"]: a for a in inst["annotations"]}, {im["id"]: im for im in inst["images"]}
    ref = refs[0]
    ann, img = anns[ref["ann_id"]], imgs[ref["image_id"]]
    image_file = ddir / "images" / img["file_name"]
    if fault == "duplicate image id":
        inst["images"].append(dict(inst["images"][1], id=img["id"]))
        want = f"instances.json: 1 image id(s) used more than once: {img['id']} "
    elif fault == "duplicate annotation id":
        inst["annotations"].append(
            dict(next(a for a in inst["annotations"] if a["image_id"] != img["id"]), id=ann["id"])
        )
        want = f"instances.json: 1 annotation id(s) used more than once: {ann['id']} "
    elif fault == "duplicate ref id":
        refs[1]["ref_id"] = ref["ref_id"]
        want = f"refs(shaperefs).p: 1 ref_id(s) used more than once: {ref['ref_id']} "
    elif fault == "duplicate sentence id":
        refs[1]["sentences"][0]["sent_id"] = ref["sentences"][0]["sent_id"]
        want = f"refs(shaperefs).p: 1 sent_id(s) used more than once: {ref['sentences'][0]['sent_id']} "
    elif fault == "annotation of another image":
        other = next(a for a in inst["annotations"] if a["image_id"] != img["id"])
        ref["ann_id"] = other["id"]
        want = (
            f"ref_id {ref['ref_id']} (ann_id {other['id']} lies on image {other['image_id']}, the ref on image "
            f"{img['id']})"
        )
    elif fault == "NaN polygon":
        ann["segmentation"][0][1] = float("nan")
        want = f"with NaN, infinite or non-numeric polygon coordinates: annotation {ann['id']}"
    elif fault == "empty segmentation":
        ann["segmentation"] = [[]]
        want = f"with an empty segmentation (no polygon of 3 or more points enclosing any area): annotation {ann['id']}"
    elif fault == "polygon outside the image":
        ann["segmentation"][0][0] = img["width"] + 30
        want = f"with a polygon outside its image: annotation {ann['id']} ("
    elif fault == "RLE of another size":
        ann["segmentation"] = {"size": [img["height"], img["width"]], "counts": [5, 10]}
        want = f"annotation {ann['id']} (RLE runs cover 15 pixels, expected {img['height']} × {img['width']}"
    elif fault == "file name outside the image root":
        img["file_name"] = "../" + img["file_name"]
        want = f"image {img['id']} ('../{image_file.name}'); expected a relative path without '..'"
    elif fault == "truncated image":
        image_file.write_bytes(image_file.read_bytes()[:100])
        want = f"cannot read image {image_file}: not a readable image"
    elif fault == "image of another size":
        Image.new("RGB", (img["width"] + 1, img["height"])).save(image_file)
        want = f"{image_file}: {img['width'] + 1}×{img['height']} pixels, but"
    elif fault == "missing image":
        image_file.unlink()
        want = image_file.name
    else:
        raise KeyError(fault)
    (ddir / "instances.json").write_text(json.dumps(inst))
    (ddir / "refs(shaperefs).p").write_bytes(pickle.dumps(refs, protocol=2))
    return want


INDEX_FAULTS = [
    "duplicate image id",
    "duplicate annotation id",
    "duplicate ref id",
    "duplicate sentence id",
    "annotation of another image",
    "NaN polygon",
    "empty segmentation",
    "polygon outside the image",
    "RLE of another size",
    "file name outside the image root",
]
IMAGE_FAULTS = ["truncated image", "image of another size", "missing image"]


@pytest.mark.parametrize("fault", INDEX_FAULTS)
def test_reader_refuses_files_that_disagree(fault, data_copy):
    """Every dataset the reader opens is checked once (train, eval, predict and check-data all open it): one error
    naming file and id."""
    from ris_nb.data.refer import Refer

    want = _plant(data_copy, fault)
    with pytest.raises(ValueError) as e:
        Refer(data_copy.parent, "shaperefs", "shaperefs")
    assert want in str(e.value), str(e.value)


@pytest.mark.parametrize("fault", INDEX_FAULTS + IMAGE_FAULTS)
def test_check_data_refuses_every_planted_fault(fault, data_copy, capsys):
    from ris_nb.cli import main as cli_main

    want = _plant(data_copy, fault)
    rc = cli_main(["check-data", "--root", str(data_copy.parent), "--dataset", "shaperefs"])
    out, err = capsys.readouterr()
    assert rc == 2, out
    assert want in out, out
    assert "ris_nb check-data: error:" in err and "shaperefs/shaperefs" in err and "Traceback" not in err, err


def test_check_data_passes_a_valid_dataset(shaperefs, capsys):
    from ris_nb.cli import main as cli_main

    assert cli_main(["check-data", "--root", str(shaperefs.parent), "--dataset", "shaperefs"]) == 0
    out = capsys.readouterr().out
    assert "[ok] shaperefs / shaperefs" in out and "error:" not in out and "warning:" not in out, out
    assert "everything required is in place: " in out and "images decoded" in out, out
    assert (
        cli_main(
            ["check-data", "--root", str(shaperefs.parent), "--dataset", "shaperefs", "--quick", "--splits", "val"]
        )
        == 0
    )
    assert cli_main(["check-data", "--root", str(shaperefs.parent), "--dataset", "shaperefs", "--splits", "tset"]) == 2
    assert "no refs of split(s) tset" in capsys.readouterr().out


def test_refcoco_quirks_are_counted_warnings_not_errors(data_copy):
    """A polygon of two points and one 1.5 px outside its image (both in RefCOCO's own files): opened, each a counted
    warning."""
    from ris_nb.data.refer import Refer

    def edit(inst):
        a, b = inst["annotations"][0], inst["annotations"][1]
        a["segmentation"].append([1, 1, 3, 1])
        w = next(im["width"] for im in inst["images"] if im["id"] == b["image_id"])
        b["segmentation"][0][0] = w + 1.5

    _edit_instances(data_copy, edit)
    with pytest.warns(UserWarning) as record:
        refer = Refer(data_copy.parent, "shaperefs", "shaperefs")
    text = " | ".join(str(w.message) for w in record)
    assert (
        "1 polygon(s) with fewer than 3 points in 1 annotation(s)" in text and "skipped when drawing the masks" in text
    ), text
    assert "reach up to 1.5 px outside their image" in text and "clipped to the image" in text, text
    assert refer.mask(next(iter(refer.anns))).any()


def test_the_index_is_checked_once_per_dataset(data_copy, monkeypatch):
    from ris_nb.data import refer as R
    from ris_nb.data import refer_files as RF  # read_refer runs check_index (appendix 91b)

    calls = []
    real = RF.check_index
    monkeypatch.setattr(RF, "check_index", lambda *a, **k: calls.append(1) or real(*a, **k))
    for split in ("train", "val", "testA"):
        R.RefDataset(data_copy.parent, "shaperefs", "shaperefs", split)
    assert len(calls) <= 1, calls  # 0 when another test of this process opened the same files
    before = len(calls)
    # other files: checked again
    _edit_instances(data_copy, lambda inst: inst["categories"].append(dict(id=999, name="new")))
    R.Refer(data_copy.parent, "shaperefs", "shaperefs")
    assert len(calls) == before + 1, calls


def test_pycocotools_never_sees_nan_or_overlong_runs():
    """pycocotools takes the process down on NaN polygon coordinates (segfault or memory): refused first (in a child
    process, so a crash shows as one)."""
    code = (
        "from ris_nb.data.refer import segmentation_to_mask\n"
        "for seg in ([[2.0, float('nan'), 8.0, 2.0, 8.0, 8.0]], [[2, 2, float('inf'), 2, 8, 8]], {'size': [4, "
        "4], 'counts': [100]}):\n"
        "    try: segmentation_to_mask(seg, 16, 16) if isinstance(seg, list) else segmentation_to_mask(seg, 4, 4)\n"
        "    except ValueError as e: print('refused:', e)\n"
    )
    p = run([sys.executable, "-c", code], check=False, timeout=120)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    assert (
        p.stdout.count("refused:") == 3
        and "NaN or infinite coordinates" in p.stdout
        and "RLE runs cover 100 pixels" in p.stdout
    ), p.stdout


# ---- the API and the CLI at their edges (issue 36)
# ------------------------------------------------------------------------
def test_api_names_wrong_argument_types():
    from ris_nb.evaluate import evaluate
    from ris_nb.training_run import prepare

    with pytest.raises(TypeError, match=r"cfg='lavt_tiny': expected a ris_nb Config, e.g. get_preset\('lavt_tiny'\)"):
        prepare("lavt_tiny")
    with pytest.raises(TypeError, match="loader: expected a DataLoader"):
        evaluate(torch.nn.Linear(2, 2), None)
    with pytest.raises(TypeError, match="model: expected a torch nn.Module"):
        evaluate("best.pt", [])


def test_predict_out_format_pil_cannot_write_is_refused_first(tmp_path):
    from ris_nb.cli_checks import check_mask_path

    with pytest.raises(ValueError, match="not an image format PIL can write"):
        check_mask_path(tmp_path / "mask.psd")
    assert check_mask_path(tmp_path / "mask.png") == tmp_path / "mask.png"


def test_refused_start_leaves_no_lock_only_folder(tmp_path):
    from ris_nb.distributed import run_lock

    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with run_lock(run):
            raise RuntimeError("refused before anything was written")
    assert not run.exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path / "kept"):
            raise RuntimeError("an existing folder is the user's")
    assert (tmp_path / "kept").is_dir()


def test_cli_interrupt_is_one_line(monkeypatch, capsys):
    import ris_nb.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_presets", interrupted, raising=False)
    parser = cli.build_parser()
    args = parser.parse_args(["presets"])
    args.func = interrupted
    monkeypatch.setattr(cli, "build_parser", lambda *_: type("P", (), {"parse_args": lambda self, a: args})())
    assert cli.main(["presets"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ris_nb presets: interrupted"], err


def test_cli_output_into_a_closed_pipe_is_quiet():
    "`ris_nb … | head -1`: the reader leaves; no 'Broken pipe' error line, exit 1."
    r, w = os.pipe()
    os.close(r)
    p = subprocess.run(
        [sys.executable, "-m", "ris_nb", "presets"], stdout=w, stderr=subprocess.PIPE, text=True, timeout=120
    )
    os.close(w)
    assert p.returncode == 1 and "Broken pipe" not in p.stderr, (p.returncode, p.stderr)


def test_run_folder_edge_cases(tmp_path, shaperefs_data):
    """A shorter re-run of a finished run, a vocabulary below the tokenizer's, a cut-off log line, a killed run's
    temp file."""
    import warnings as _w
    from ris_nb.distributed import stale_temp_files
    from ris_nb.evaluate import evaluate
    from ris_nb.training_run import fit, prepare
    from ris_nb.run_folder import read_log

    data = shaperefs_data(40, 0, 64)
    cfg = get_preset("lavt_tiny").override(
        {
            "data.root": str(data),
            "data.image_size": 64,
            "train.batch_size": 8,
            "train.max_steps": 4,
            "train.eval_every": 4,
            "train.ckpt_every": 2,
            "data.test_splits": [],
            "train.out_dir": str(tmp_path / "run"),
        }
    )
    _, loaders, model, c = prepare(cfg)
    fit(model, loaders, c, evaluate=evaluate)  # validation writes the log's val line
    shorter = c.override({"train.max_steps": 2})
    with pytest.raises(ValueError, match="already at step 4, past train.max_steps=2"):
        fit(model, loaders, shorter, evaluate=evaluate)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["max_steps"] == 4  # untouched
    with pytest.raises(ValueError, match="model.text.vocab_size=5: expected at least"):
        prepare(cfg.override({"model.text.vocab_size": 5}))
    log = tmp_path / "run" / "log.jsonl"
    log.write_text(log.read_text()[:-20])  # killed while writing its last line
    assert len(read_log(log)) >= 1
    dead = tmp_path / "run" / "checkpoints" / ".step_0000006.tmp-999999999.pt"
    dead.write_bytes(b"half")
    assert stale_temp_files(tmp_path / "run") == [dead]
    with _w.catch_warnings(record=True):
        _w.simplefilter("always")
        fit(model, loaders, c.override({"train.max_steps": 6}), evaluate=evaluate)  # resumes past the cut line
    assert not dead.exists() and read_log(log)[-1]["step"] == 6


def test_predict_text_without_visible_or_known_words(tmp_path, shaperefs_data):
    "Zero-width spaces are refused; words the model never saw give a warning, not a silent mask."
    from ris_nb.cli import predict_image
    from ris_nb.training_run import prepare

    data = shaperefs_data(20, 0, 64)
    cfg = get_preset("lavt_tiny").override({"data.root": str(data), "data.image_size": 64, "data.test_splits": []})
    tok, _, model, cfg = prepare(cfg, splits=["train"])
    img = next((data / "shaperefs" / "images").iterdir())
    with pytest.raises(ValueError, match="no visible character"):
        predict_image(cfg, tok, model.eval(), img, "\u200b\u200b")
    with pytest.warns(UserWarning, match="none of the words .* is in the model's vocabulary"):
        predict_image(cfg, tok, model, img, "zebra quokka")


def test_run_folder_with_a_file_where_a_folder_goes(tmp_path):
    from ris_nb.run_folder import read_run_dir

    (tmp_path / "checkpoints").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="checkpoints is a file"):
        read_run_dir(tmp_path, get_preset("lavt_tiny"), {})


def test_course_names_a_broken_notebook_and_writes_nothing(tmp_path):
    import shutil as _sh
    from ris_nb.course_files import make_course

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _sh.copy(Path(__file__).parents[1] / "nbs" / "01_metrics.ipynb", nbs)
    (nbs / "broken.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.ipynb is not a notebook"):
        make_course(nbs, tmp_path / "course", verbose=False)
    assert not (tmp_path / "course").exists()


@pytest.mark.parametrize(
    "saved_data", [{"root": "data"}, {"root": ".", "dataset": "data"}], ids=["relative root", "dataset folder itself"]
)
def test_eval_of_a_run_trained_on_data_given_relatively_asks_for_data(
    trained, tmp_path, capsys, monkeypatch, saved_data
):
    """A run trained with `--data data` from another folder stores root 'data' (or '.', dataset 'data' when `data` is
    the dataset folder itself, a root that exists anywhere): eval from elsewhere names the root, the folder it looked
    from, and --data."""
    import shutil
    from ris_nb.checkpoints import load_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(trained / "tokenizer", run / "tokenizer")
    ck = load_checkpoint(trained / "best.pt")
    saved = json.loads(ck["config"])
    saved["data"].update(saved_data)
    ck["config"] = json.dumps(saved)
    torch.save(ck, run / "best.pt")
    monkeypatch.chdir(tmp_path)  # no data/ here
    rc, err = main(capsys, "eval", "--ckpt", run / "best.pt")
    assert rc == 2 and "'data'" in err and str(tmp_path) in err and "--data" in err and "synth" not in err, err
    assert not (run / "report.md").exists()


def test_predict_follows_the_exif_orientation(trained, tmp_path, capsys):
    """A photo stored sideways with EXIF orientation 6 (shown upright, 64 wide × 40 high): the mask has the shown
    size (was: the stored one)."""
    upright = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate the stored image 90° clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "photo.jpg", exif=exif.tobytes())
    assert Image.open(tmp_path / "photo.jpg").size == (40, 64)
    rc, err = main(
        capsys, *predict_args(trained / "best.pt", tmp_path, image=tmp_path / "photo.jpg", out=tmp_path / "mask.png")
    )
    assert rc == 0, err
    assert Image.open(tmp_path / "mask.png").size == (64, 40)


def test_predict_names_a_directory_and_warns_in_one_line(trained, tmp_path):
    """--image a folder: 'is a directory' (was: 'image not found'); a warning is one `ris_nb predict: warning:` line
    (was: file:line and the warn call's source)."""
    (tmp_path / "photos.png").mkdir()
    p = cli(*predict_args(trained / "best.pt", tmp_path, image=tmp_path / "photos.png"))
    refused(p, f"image {tmp_path / 'photos.png'} is a directory; expected an image file")
    p = cli(*predict_args(trained / "best.pt", tmp_path, "zebra quokka"), check_rc=0)
    lines = [l for l in p.stderr.splitlines() if "none of the words" in l]
    assert len(lines) == 1 and lines[0].startswith("ris_nb predict: warning: none of the words"), p.stderr
    assert "warnings.warn" not in p.stderr and "UserWarning" not in p.stderr, p.stderr


def test_batch_larger_than_the_training_set_is_refused_before_any_file(shaperefs, tmp_path, capsys):
    """Refused before config.json and tokenizer/ are written (was: written first, so the corrected command met 'a
    different config')."""
    out = tmp_path / "run"
    rc, err = main(
        capsys,
        "train",
        "--data",
        shaperefs,
        "--out",
        out,
        "--no-eval",
        *TINY_RUN,
        "train.batch_size=100000",
        "train.max_steps=2",
    )
    assert (
        rc == 2 and "train.batch_size=100000: expected at most" in err and "the training items of one epoch" in err
    ), err
    assert not out.exists()
    rc, err = main(capsys, "train", "--data", shaperefs, "--out", out, "--no-eval", *TINY_RUN, "train.max_steps=1")
    assert rc == 0, err


# ---- the fault probe of issue 36, second pass (tools/fault_probe.py)
# ------------------------------------------------------
@pytest.mark.parametrize("w,h", [(64, 10**8), (10**9, 10**9)])
def test_declared_image_size_beyond_what_load_image_reads_is_refused_first(w, h, data_copy, tmp_path):
    """instances.json declaring a 64 × 10⁸ or 10⁹ × 10⁹ image: refused when the files are opened, by train and
    check-data alike"""
    (
        "(was: train drew 6.4 GB masks for two minutes, then stopped with the run folder written; check-data was "
        "killed for "
    )
    "memory, exit 137, or crashed in pycocotools, exit 139)."
    from ris_nb.data.refer import Refer

    def edit(inst):
        inst["images"][0].update(width=w, height=h)

    _edit_instances(data_copy, edit)
    want = (
        f"images[0] (image id {json.loads((data_copy / 'instances.json').read_text())['images'][0]['id']}) "
        f"declares {w} × {h}"
    )
    with pytest.raises(ValueError, match="pixels; expected at most 67,108,864") as e:
        Refer(data_copy.parent, "shaperefs", "shaperefs")
    assert want in str(e.value), e.value
    p = cli("check-data", "--root", data_copy.parent, "--dataset", "shaperefs")  # a child process: a crash shows
    refused(p, "ris_nb check-data: error:")
    assert want in p.stdout, p.stdout[-2000:]
    out = tmp_path / "run"
    p = cli("train", "--data", data_copy, "--out", out, "--no-eval", *TINY_RUN, "train.max_steps=1")
    refused(p, want)
    assert not out.exists()


@pytest.mark.parametrize(
    "train_text,val_text", [("\u200b\u200b", "\ufeff \u200b"), ("?!...", "...")], ids=["invisible", "punctuation only"]
)
def test_sentences_without_a_word_are_blank_for_training_and_check_data(
    data_copy, tmp_path, capsys, train_text, val_text
):
    """Sentences of zero-width spaces or of punctuation only ('?!...') are dropped with the warning blank ones get,
    and a val"""
    (
        "split of nothing else is refused by train and check-data alike (was: trained on `[CLS][SEP]` or `[CLS] ? "
        "! . . . [SEP]`; "
    )
    "check-data passed; a val of '...' selected best.pt)."
    from ris_nb.cli import main as cli_main
    from ris_nb.data.refer import RefDataset
    from ris_nb.io import safe_load_pickle

    f = data_copy / "refs(shaperefs).p"
    refs = safe_load_pickle(f)
    first = next(r for r in refs if r["split"] == "train")
    for s in first["sentences"]:
        s["raw"] = s["sent"] = train_text
    f.write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.warns(UserWarning, match=f"dropped 1 empty sentence group.*ref_id {first['ref_id']} has empty 'raw'"):
        ds = RefDataset(data_copy.parent, "shaperefs", "shaperefs", "train")
    assert all(r["ref_id"] != first["ref_id"] for r, _ in ds.refs)
    assert cli_main(["check-data", "--root", str(data_copy.parent), "--dataset", "shaperefs"]) == 0
    out = capsys.readouterr().out
    assert f"sentence(s) of split 'train' with blank 'raw' text: ref_id {first['ref_id']}" in out, out
    for r in refs:
        if r["split"] == "val":
            for s in r["sentences"]:
                s["raw"] = s["sent"] = val_text
    f.write_bytes(pickle.dumps(refs, protocol=2))
    assert cli_main(["check-data", "--root", str(data_copy.parent), "--dataset", "shaperefs"]) == 2
    out = capsys.readouterr().out
    assert "split 'val' has no sentence with visible 'raw' text" in out, out
    rc, err = main(capsys, "train", "--data", data_copy, "--out", tmp_path / "run", *TINY_RUN, "train.max_steps=1")
    assert rc == 2 and "split 'val'" in err and "refs(shaperefs).p" in err, err
    assert not (tmp_path / "run").exists()


def test_fit_names_wrong_argument_types_before_writing(tmp_path, shaperefs_data):
    """fit('best.pt', loaders, cfg) and fit(model, loaders, 'lavt_tiny'): a TypeError naming the argument, nothing
    written"""
    "(was: AttributeError \"'str' object has no attribute 'to'\" after `.lock` and `config.json` were written)."
    from torch.utils.data import DataLoader
    from ris_nb.training_run import fit, prepare

    data = shaperefs_data(12, 0, 64)
    cfg = get_preset("lavt_tiny").override(
        {
            "data.root": str(data),
            "data.image_size": 64,
            "train.batch_size": 2,
            "data.test_splits": [],
            "train.out_dir": str(tmp_path / "run"),
        }
    )
    _, loaders, model, cfg = prepare(cfg)
    with pytest.raises(TypeError, match="model: expected a torch nn.Module"):
        fit("best.pt", loaders, cfg)
    with pytest.raises(TypeError, match=r"cfg='lavt_tiny': expected a ris_nb Config, e.g. get_preset\('lavt_tiny'\)"):
        fit(model, loaders, "lavt_tiny")
    with pytest.raises(TypeError, match="loaders: expected a dict of split name → DataLoader"):
        fit(model, None, cfg)
    with pytest.raises(TypeError, match="loaders: .* got list"):
        fit(model, [loaders["train"]], cfg)
    with pytest.raises(TypeError, match="cbs=3: expected a list of Callback"):
        fit(model, {"train": DataLoader([1])}, cfg, cbs=3)
    assert not (tmp_path / "run").exists()


def test_a_run_folder_given_as_checkpoint_names_its_checkpoint(trained, tmp_path, capsys):
    """eval/predict --ckpt RUN_DIR: 'is a directory', pointing at RUN_DIR/best.pt (was: 'truncated or corrupt
    (IsADirectoryError …)')."""
    rc, err = main(capsys, "eval", "--ckpt", trained, "--out", tmp_path / "ev")
    assert (
        rc == 2
        and f"checkpoint {trained} is a directory; expected a checkpoint file, e.g. {trained / 'best.pt'}" in err
    ), err
    assert "corrupt" not in err, err
    rc, err = main(capsys, *predict_args(tmp_path, tmp_path, image=tmp_path / "x.png"))
    assert rc == 2 and "is a directory; expected a checkpoint file, such as best.pt or checkpoints/step_*.pt" in err, (
        err
    )


def test_checkpoint_errors_say_why_not_torchs_advice(trained, tmp_path, capsys):
    """A checkpoint holding code: 'refusing to load the code it holds (… GLOBAL posix.system …)'; a random file: the
    unpickler's"""
    (
        "reason (was: both 'truncated or corrupt (UnpicklingError: Weights only load failed. In PyTorch 2.6, we "
        "changed the "
    )
    "default value of the `weights_only` argument in `torch.load` fr)', torch's advice cut mid-word)."

    class Code:
        def __reduce__(self):
            return (os.system, ("touch /tmp/ris_nb_fault_probe_ckpt",))

    torch.save({"model": Code(), "config": "{}"}, tmp_path / "code.pt")
    rc, err = main(capsys, "eval", "--ckpt", tmp_path / "code.pt", "--out", tmp_path / "ev")
    assert rc == 2 and "refusing to load the code it holds (Trying to load unsupported GLOBAL posix.system" in err, err
    assert "weights_only" not in err and not Path("/tmp/ris_nb_fault_probe_ckpt").exists(), err
    (tmp_path / "rand.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    rc, err = main(capsys, "eval", "--ckpt", tmp_path / "rand.pt", "--out", tmp_path / "ev")
    assert rc == 2 and "is truncated or corrupt (UnpicklingError:" in err and "weights_only" not in err, err


# ---- round 3 (checkpoints, resume, run folders, experiments; issue 47)


def _run_copy(trained: Path, dst: Path) -> Path:
    "A private copy of the module's trained run a test may damage (its lock left out)."
    import shutil

    shutil.copytree(trained, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def test_resume_with_every_checkpoint_unreadable_is_refused_and_best_pt_kept(trained, shaperefs, tmp_path, capsys):
    """Every step checkpoint unreadable: refused, naming them and what to do (was: 'falling back to the previous
    checkpoint'"""
    "when there was none, training again from step 0, best.pt replaced by a worse model)."
    run = _run_copy(trained, tmp_path / "run")
    for p in (run / "checkpoints").glob("step_*.pt"):
        p.write_bytes(p.read_bytes()[:100])
    best = (run / "best.pt").read_bytes()
    rc, err = main(capsys, "train", "--data", shaperefs, "--out", run, "--no-eval", *TINY_RUN, "train.max_steps=4")
    assert rc == 2 and "cannot be resumed: none of its 1 step checkpoint(s) is readable (step_0000002.pt" in err, err
    assert f"delete the run folder {run}" in err and "falling back" not in err, err
    assert (run / "best.pt").read_bytes() == best


def test_resume_checks_best_pt_and_model_only_files_in_checkpoints(trained, shaperefs, tmp_path, capsys):
    """A truncated best.pt is named when resuming (was: at the final evaluation, on every re-run); moved away, the
    run goes on and"""
    "writes a new one. A best.pt copied into checkpoints/ is named as model-only (was: KeyError: 'optimizer')."
    import shutil

    run = _run_copy(trained, tmp_path / "run")
    shutil.copy(run / "best.pt", run / "checkpoints" / "step_0000003.pt")
    rc, err = main(capsys, "train", "--data", shaperefs, "--out", run, "--no-eval", *TINY_RUN, "train.max_steps=4")
    assert rc == 2 and "step_0000003.pt is not a resumable checkpoint (no 'optimizer', 'scheduler')" in err, err
    (run / "checkpoints" / "step_0000003.pt").unlink()
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:1000])
    rc, err = main(capsys, "train", "--data", shaperefs, "--out", run, "--no-eval", *TINY_RUN, "train.max_steps=4")
    assert rc == 2 and f"{run / 'best.pt'} is truncated or corrupt" in err and "move it away" in err, err
    (run / "best.pt").unlink()
    rc, err = main(capsys, "train", "--data", shaperefs, "--out", run, "--no-eval", *TINY_RUN, "train.max_steps=4")
    from ris_nb.checkpoints import load_checkpoint

    assert rc == 0 and load_checkpoint(run / "best.pt")["step"] == 4, err


def test_swapped_image_files_are_refused_on_resume_and_a_copy_is_not(trained, shaperefs, tmp_path, capsys):
    "The run pins a fingerprint of its image files (names, sizes, a sample of bytes): swapped images refuse the resume"
    "(was: accepted, the fingerprint covered refs and instances only); an exact copy of the data is accepted."
    import shutil

    run, data = _run_copy(trained, tmp_path / "run"), tmp_path / "d" / "shaperefs"
    shutil.copytree(shaperefs, data)
    files = sorted((data / "images").iterdir(), key=lambda p: p.stat().st_size)
    a, b = files[0], files[-1]
    ba, bb = a.read_bytes(), b.read_bytes()
    a.write_bytes(bb)
    b.write_bytes(ba)
    rc, err = main(capsys, "train", "--data", data, "--out", run, "--no-eval", *TINY_RUN, "train.max_steps=4")
    assert rc == 2 and "images_fingerprint names_sizes" in err, err
    a.write_bytes(ba)
    b.write_bytes(bb)
    rc, err = main(capsys, "train", "--data", data, "--out", run, "--no-eval", *TINY_RUN, "train.max_steps=4")
    assert rc == 0, err


def test_data_changed_under_a_running_training_stops_it_before_saving(data_copy, tmp_path):
    "Image files rewritten while training runs (`ris_nb synth` into its folder): it stops before the next validation or"
    "checkpoint, naming the change (was: finished on the new pixels under the old masks, exit 0)."
    from ris_nb.train import Callback
    from ris_nb.training_run import fit, prepare
    from ris_nb.checkpoints import checkpoint_paths

    cfg = get_preset("lavt_tiny").override(
        {
            "data.root": str(data_copy.parent),
            "data.image_size": 64,
            "train.batch_size": 4,
            "train.max_steps": 4,
            "train.eval_every": 2,
            "train.ckpt_every": 2,
            "train.device": "cpu",
            "data.test_splits": [],
            "train.out_dir": str(tmp_path / "run"),
        }
    )

    class Rewrite(Callback):
        order = 0

        def after_step(self):
            if self.learn.step == 3:
                for p in sorted((data_copy / "images").iterdir())[:20]:
                    p.write_bytes(p.read_bytes() + b"\0" * 7)

    _, loaders, model, cfg = prepare(cfg)
    with pytest.raises(ValueError, match="changed while it trained") as e:
        fit(model, loaders, cfg, cbs=[Rewrite()])
    assert "it stops at step 4" in str(e.value) and "images_fingerprint" in str(e.value), e.value
    assert [p.name for p in checkpoint_paths(tmp_path / "run")] == ["step_0000002.pt"]


def _record_offset(path: Path, name_end: str) -> tuple[int, int]:
    """Byte offset and size of the data of the largest zip record whose name ends with `name_end` (a tensor of a
    checkpoint)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max(
            (i for i in z.infolist() if i.filename.endswith(name_end) or "/data/" in i.filename),
            key=lambda i: i.file_size,
        )
    raw = path.read_bytes()
    n, m = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + n + m, info.file_size


def test_flipped_bytes_and_zip_bombs_in_a_checkpoint_are_refused(trained, tmp_path, capsys):
    """64 bytes flipped inside a tensor of best.pt: refused by the records' CRC-32 (was: evaluated silently, 5.71 vs
    5.72);"""
    "a record declaring 16 MiB in a few kB: refused before it is inflated (was: inflated first)."
    import shutil
    import zipfile

    run = _run_copy(trained, tmp_path / "run")
    raw = bytearray((run / "best.pt").read_bytes())
    off, size = _record_offset(run / "best.pt", "")
    raw[off + size // 2 : off + size // 2 + 64] = bytes(b ^ 0xFF for b in raw[off + size // 2 : off + size // 2 + 64])
    (run / "best.pt").write_bytes(bytes(raw))
    rc, err = main(capsys, "eval", "--ckpt", run / "best.pt", "--data", trained.parent, "--out", tmp_path / "ev")
    assert rc == 2 and f"checkpoint {run / 'best.pt'} is corrupt (Bad CRC-32" in err, err
    bomb = tmp_path / "bomb.pt"
    shutil.copy(trained / "best.pt", bomb)
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("best/data/999", bytes(16 << 20))
    rc, err = main(capsys, "eval", "--ckpt", bomb, "--data", trained.parent, "--out", tmp_path / "ev2")
    assert rc == 2 and f"checkpoint {bomb}: its records declare" in err and "best/data/999, 16,777,216 bytes" in err, (
        err
    )


def test_weights_files_of_another_width_truncated_or_holding_code_are_named(trained, tmp_path, capsys):
    "A checkpoint of another width: the file, the first keys and shapes (was: 'Error(s) in loading state_dict' alone);"
    (
        "truncated or code-holding model.vision.weights / model.sag.entity_weights files: the file named (was: "
        "torch's error)."
    )
    from ris_nb.models.encoder_builds import read_state_dict
    from ris_nb.models.image_entities import load_entity_model
    from ris_nb.checkpoints import load_checkpoint

    ck = load_checkpoint(trained / "best.pt")
    k = next(k for k, v in ck["model"].items() if v.ndim == 2)
    ck["model"][k] = torch.zeros(ck["model"][k].shape[0] + 1, ck["model"][k].shape[1])
    run = _run_copy(trained, tmp_path / "run")
    torch.save(ck, run / "best.pt")
    rc, err = main(capsys, "eval", "--ckpt", run / "best.pt", "--data", trained.parent, "--out", tmp_path / "ev")
    assert (
        rc == 2 and f"checkpoint {run / 'best.pt'} does not fit preset 'lavt_tiny' (1 shape mismatch(es): {k} (" in err
    ), err
    cut = tmp_path / "cut.pt"
    cut.write_bytes((trained / "best.pt").read_bytes()[:3000])

    class Code:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"state_dict": Code()}, tmp_path / "code.pt")
    for f, why in ((cut, "is truncated or corrupt"), (tmp_path / "code.pt", "refusing to load the code it holds")):
        with pytest.raises(ValueError, match="weights file") as e:
            read_state_dict(f)
        assert str(f) in str(e.value) and why in str(e.value), e.value
        with pytest.raises(ValueError, match="entity weights") as e:
            load_entity_model(f)
        assert str(f) in str(e.value) and why in str(e.value), e.value


def test_writes_past_a_file_size_limit_name_the_file_and_leave_nothing(tmp_path):
    """`ulimit -f` (or a full disk) at a checkpoint or at curves.png: one error naming the file (was: a C++ 'enforce
    fail'"""
    "traceback, or no file named); no 0-byte curves.png and no temp file left."
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 30)))
    code = (
        "import resource, sys, torch\nresource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
        "from ris_nb.checkpoints import save_checkpoint\nfrom ris_nb.run_curves import save_curves\n"
        "from pathlib import Path\nd = Path(sys.argv[1])\n"
        "for f in (lambda: save_checkpoint({'w': torch.zeros(10000)}, d / 'ck.pt'),\n"
        "          lambda: save_curves(d / 'log.jsonl', d / 'curves.png')):\n"
        "    try: f(); print('no error')\n    except OSError as e: print('OSError', e)\n"
    )
    p = run([sys.executable, "-c", code, tmp_path], check=False, timeout=300)
    lines = p.stdout.splitlines()
    assert len(lines) == 2, p.stdout + p.stderr
    assert f"cannot write {tmp_path / 'ck.pt'}: torch.save failed" in lines[0] and "file size limit" in lines[0], lines
    assert f"cannot write {tmp_path / 'curves.png'}" in lines[1] and "ulimit -f" in lines[1], lines
    assert sorted(q.name for q in tmp_path.iterdir()) == ["log.jsonl"]


def test_pretrain_entities_refuses_a_negative_n_val(shaperefs, tmp_path, capsys):
    "`pretrain-entities --n-val -5`: refused (was: exit 0, printing nan)."
    rc, err = main(
        capsys, "pretrain-entities", "--data", shaperefs, "--out", tmp_path / "e.pt", "--n-val", "-5", "--steps", "1"
    )
    assert rc == 2 and "n_val=-5 (--n-val): expected an integer >= 0" in err and not (tmp_path / "e.pt").exists(), err


def test_experiments_name_unreadable_results_and_refuse_a_second_study(tmp_path):
    "A cut-off result.json: named and that run done again; an empty meta.json: named, with what to do (both were a bare"
    (
        "JSON error); a second study into the same --out: refused by the folder's run lock (was: one deleted the "
        "other's runs)."
    )
    from ris_nb.experiments import QUICK
    from ris_nb.study_design import study_data
    from ris_nb.study_runner import finished, run_study

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "result.json").write_text('{"row": "sag", "con')
    with pytest.warns(UserWarning, match=r"result.json: not valid JSON .*running it again"):
        assert finished(tmp_path / "r", get_preset("lavt_tiny")) is None
    d = tmp_path / "study" / "data" / "shaperefs"
    d.mkdir(parents=True)
    (d / "meta.json").write_text("")
    (d / "refs(shaperefs).p").write_bytes(b"")
    with pytest.raises(ValueError, match=r"meta.json: not valid JSON .*delete"):
        study_data(tmp_path / "study", QUICK)
    with lock_held(tmp_path / "study", "study") as holder:
        with pytest.raises(ValueError, match=f"in use by another study \\(pid {holder.pid}\\)"):
            run_study(tmp_path / "study", only="magnet", seeds=1, budget=QUICK, progress=False)


# ---- round 3 (CLI, data reading, tokenizers, course, demo) — issue 47
# ---------------------------------------------------
def test_a_run_tokenizer_with_auto_map_is_refused_without_a_prompt(trained, tmp_path):
    """tokenizer/tokenizer_config.json with `auto_map` (code beside it): one error line naming the file; nothing
    asked, nothing"""
    "run (was: transformers asked 'Do you wish to run the custom code? [y/N]', and `y` ran the .py)."
    run = _run_copy(trained, tmp_path / "run")
    f = run / "tokenizer" / "tokenizer_config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}))
    marker = tmp_path / "ran"
    (run / "tokenizer" / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\nfrom transformers import PreTrainedTokenizerFast as EvilTokenizer\n"
    )
    p = cli("eval", "--ckpt", run / "best.pt", "--out", tmp_path / "ev", input="y\n")
    refused(p, f"{f}: has an 'auto_map' entry")
    assert (
        "Do you wish" not in p.stdout + p.stderr
        and not marker.exists()
        and not (tmp_path / "ev" / "report.md").exists()
    )
    p = cli(*predict_args(run / "best.pt", tmp_path), input="y\n")
    refused(p, "auto_map")
    assert "Do you wish" not in p.stdout + p.stderr and not (tmp_path / "m.png").exists()
    from ris_nb.data.transforms import load_tokenizer

    with pytest.raises(ValueError, match="auto_map"):
        load_tokenizer(run / "tokenizer")
    assert not marker.exists()


def test_eval_of_another_split_writes_beside_the_runs_report(trained, tmp_path, capsys):
    "`eval --split testA` with the default --out: report_testA.md / results_testA.json beside the run's own report"
    "(was: the run's report.md and results.json replaced by a testA-only report)."
    run = _run_copy(trained, tmp_path / "run")
    (run / "report.md").write_text("the run's report")
    (run / "results.json").write_text("{}")
    rc, err = main(capsys, "eval", "--ckpt", run / "best.pt", "--split", "testA")
    assert rc == 0, err
    assert (run / "report.md").read_text() == "the run's report" and (run / "results.json").read_text() == "{}"
    assert "testA" in (run / "report_testA.md").read_text() and "testA" in json.loads(
        (run / "results_testA.json").read_text()
    )


def test_course_into_a_student_folder_keeps_the_students_work(tmp_path, capsys):
    "A second `ris_nb course` into a student folder: refused unless --update; --update adds what is missing and never"
    "overwrites an edited notebook (was: exit 0, the student's notebooks overwritten)."
    import shutil as _sh

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _sh.copy(Path(__file__).parents[1] / "nbs" / "01_metrics.ipynb", nbs)
    out = tmp_path / "course"
    rc, err = main(capsys, "course", "--nbs", nbs, "--out", out)
    assert rc == 0, err
    nb = out / "01_metrics.ipynb"
    edited = nb.read_text().replace("raise NotImplementedError()", "return 42  # my answer")
    assert edited != nb.read_text()
    nb.write_text(edited)
    rc, err = main(capsys, "course", "--nbs", nbs, "--out", out)
    assert rc == 2 and f"--out {out} is not empty" in err and "--update" in err, err
    assert nb.read_text() == edited
    _sh.copy(Path(__file__).parents[1] / "nbs" / "03_refer.ipynb", nbs)
    rc, err = main(capsys, "course", "--nbs", nbs, "--out", out, "--update")
    assert rc == 0, err
    assert nb.read_text() == edited and (out / "03_refer.ipynb").exists()


def test_a_polygon_too_small_to_draw_is_refused_by_train_and_check_data(data_copy, tmp_path, capsys):
    """A 0.02 px² polygon encloses area but draws no pixel: train's geometry check refuses it as check-data does,
    with the"""
    "same line (was: passed train's check and trained on an empty mask; only check-data caught it)."
    from ris_nb.cli import main as cli_main
    from ris_nb.data.refer import Refer
    from ris_nb.io import safe_load_pickle

    inst = json.loads((data_copy / "instances.json").read_text())
    ref = next(r for r in safe_load_pickle(data_copy / "refs(shaperefs).p") if r["split"] == "train")
    ann = next(a for a in inst["annotations"] if a["id"] == ref["ann_id"])
    ann["segmentation"] = [[10.1, 10.1, 10.3, 10.1, 10.3, 10.3]]
    (data_copy / "instances.json").write_text(json.dumps(inst))
    want = f"whose polygons cover no pixel (too small or too thin to draw): annotation {ann['id']}"
    with pytest.raises(ValueError, match=r"cover no pixel") as e:
        Refer(data_copy.parent, "shaperefs", "shaperefs")
    assert want in str(e.value), e.value
    assert cli_main(["check-data", "--root", str(data_copy.parent), "--dataset", "shaperefs"]) == 2
    assert want in capsys.readouterr().out
    rc, err = main(
        capsys, "train", "--data", data_copy, "--out", tmp_path / "run", "--no-eval", *TINY_RUN, "train.max_steps=1"
    )
    assert rc == 2 and want in err and not (tmp_path / "run").exists(), err


def test_predict_says_when_a_long_text_is_cut(trained, tmp_path):
    """`predict --text` of 504 words: one warning line naming how many tokens the model reads (was: cut to 20 tokens
    silently)."""
    p = cli(*predict_args(trained / "best.pt", tmp_path, "the red circle " * 168), check_rc=0)
    lines = [l for l in p.stderr.splitlines() if "tokens" in l]
    assert len(lines) == 1 and lines[0].startswith(
        "ris_nb predict: warning: --text has 506 tokens (504 words); the model reads only the first 20"
    ), p.stderr


def test_data_and_path_errors_are_one_clear_line(data_copy, trained, tmp_path, capsys):
    "check-data at a symlink loop, --root a file, predict --image /dev/zero, synth --seed -1, a 3-image ShapeRefs,"
    "a 200,000-deep or 5,000-digit instances.json, one image file of two sizes: one line naming the file and what was "
    (
        "expected (was: a bare errno, 'not found', 'unknown split', a RecursionError traceback, Python's int-limit "
        "advice, a "
    )
    "failure mid-training after config.json and tokenizer/ were written)."
    import shutil
    from ris_nb.io import read_json

    loop = tmp_path / "loop" / "shaperefs"
    shutil.copytree(data_copy, loop)
    first = sorted((loop / "images").iterdir())[0]
    first.unlink()
    first.symlink_to(first.name)
    from ris_nb.cli import main as cli_main

    assert cli_main(["check-data", "--root", str(loop.parent), "--dataset", "shaperefs"]) == 2
    assert f"{first}: Too many levels of symbolic links; expected an image file" in capsys.readouterr().out
    rc, err = main(capsys, "check-data", "--root", data_copy / "instances.json")
    assert rc == 2 and "instances.json is a file; expected a folder" in err, err
    rc, err = main(capsys, *predict_args(trained / "best.pt", tmp_path, image="/dev/zero"))
    assert rc == 2 and "image /dev/zero is not a regular file" in err, err
    rc, err = main(capsys, "synth", "--seed", "-1", "--out", tmp_path / "neg")
    assert rc == 2 and "--seed -1: expected an integer >= 0" in err and not (tmp_path / "neg").exists(), err
    assert main(capsys, "synth", "--n-images", "3", "--size", "64", "--out", tmp_path / "three" / "shaperefs")[0] == 0
    rc, err = main(
        capsys,
        "train",
        "--data",
        tmp_path / "three" / "shaperefs",
        "--out",
        tmp_path / "r3",
        *TINY_RUN,
        "train.max_steps=1",
    )
    assert rc == 2 and "has no 'val' split: it holds 3 image(s)" in err and "from 4 images on" in err, err
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="deep.json: JSON nested too deeply"):
        read_json(tmp_path / "deep.json")
    (tmp_path / "long.json").write_text('{"height": ' + "9" * 5000 + "}")
    with pytest.raises(ValueError, match="long.json: holds a number too long to read") as e:
        read_json(tmp_path / "long.json")
    assert "set_int_max_str_digits" not in str(e.value)
    inst = json.loads((data_copy / "instances.json").read_text())
    inst["images"][1].update(file_name=inst["images"][0]["file_name"], width=32, height=48)
    (data_copy / "instances.json").write_text(json.dumps(inst))
    rc, err = main(
        capsys, "train", "--data", data_copy, "--out", tmp_path / "rdup", "--no-eval", *TINY_RUN, "train.max_steps=1"
    )
    assert (
        rc == 2
        and "image file(s) named by image entries of different sizes" in err
        and not (tmp_path / "rdup").exists()
    ), err


def test_a_data_error_in_a_loader_worker_is_one_line(data_copy, tmp_path, capsys):
    "data.num_workers=2 and an image of another size than instances.json says: the worker's one line (was: a 25-line"
    "worker traceback inside the error line)."
    for f in sorted((data_copy / "images").iterdir()):
        Image.new("RGB", (32, 32)).save(f)
    rc, err = main(
        capsys,
        "train",
        "--data",
        data_copy,
        "--out",
        tmp_path / "run",
        "--no-eval",
        *TINY_RUN,
        "train.max_steps=1",
        "data.num_workers=2",
    )
    lines = [l for l in err.splitlines() if l.strip()]
    assert (
        rc == 2
        and "differs from instances.json" in lines[-1]
        and "Traceback" not in err
        and "DataLoader worker" not in err
    ), err


# ---------------------------------------------------------------- round 5 leftovers (issue 70): paths, environment,
# inputs, the official config


@pytest.mark.parametrize("flag", ["--out", "--data"])
def test_quoted_tilde_loop_and_dangling_link_are_named(flag, shaperefs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    for bad, said in (
        ("~/x", "'~' was not expanded"),
        (tmp_path / "loop1", "symbolic link loop"),
        (tmp_path / "loop1" / "run", "symbolic link loop"),
        (tmp_path / "dangling", "which does not exist"),
    ):
        data, out = (shaperefs, bad) if flag == "--out" else (bad, tmp_path / "run")
        rc, err = main(capsys, "train", "--data", data, "--out", out, *TINY_RUN)
        assert rc == 2 and f"error: {flag} {bad}" in err and said in err, err
    assert not (tmp_path / "~").exists() and not (tmp_path / "nothing").exists()


def test_environment_errors_are_one_line():
    from ris_nb.io import environment_error

    e = ModuleNotFoundError("No module named 'PIL'", name="PIL")
    assert environment_error(e).endswith("install it: pip install pillow")
    assert "cannot import a package" in environment_error(ImportError("broken"))
    torch_oom = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 417000000000 bytes. Error code 12"
    )
    assert "out of memory (it tried to allocate 417000000000 bytes)" in environment_error(torch_oom)
    assert environment_error(MemoryError()).startswith("out of memory; ")
    fds = RuntimeError("Too many open files. Communication with the workers is no longer possible. …")
    assert "set data.num_workers=0" in environment_error(fds)
    assert "PYTHONWARNINGS" in environment_error(DeprecationWarning("old"))
    assert environment_error(RuntimeError("a bug")) is None and environment_error(KeyError("k")) is None


def test_data_workers_past_the_open_file_limit_are_refused_before_they_hang():
    """Under `ulimit -n 32`, 2 loader workers hung the run (the main process could not accept their batches): refused
    in one line before any loader starts; a soft limit below the hard one is raised instead."""
    code = (
        "import resource, sys\nfrom ris_nb.io import check_open_files\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (32, int(sys.argv[1])))\n"
        "try:\n    check_open_files(2)\nexcept OSError as e:\n    print(e)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\ncheck_open_files(0)\n"
    )
    hard = subprocess.run([sys.executable, "-c", code, "32"], capture_output=True, text=True, env=ENV, timeout=120)
    assert hard.returncode == 0, hard.stderr
    assert hard.stdout.splitlines() == [
        "data.num_workers=2 needs about 144 open files, and this process may open 32 (ulimit -n); "
        "set data.num_workers=0, or raise the limit (ulimit -n 4096)",
        "32",
    ]
    soft = subprocess.run([sys.executable, "-c", code, "4096"], capture_output=True, text=True, env=ENV, timeout=120)
    assert soft.returncode == 0 and soft.stdout.split() == ["144"], soft.stdout + soft.stderr


def test_a_warning_made_an_error_and_memory_run_out_are_one_line(trained, tmp_path, capsys, monkeypatch):
    import ris_nb.cli

    def oom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(ris_nb.cli, "predict_image", oom)
    rc, err = main(capsys, *predict_args(trained / "best.pt", tmp_path))
    assert rc == 2 and "error: out of memory" in err and "Traceback" not in err, err
    monkeypatch.undo()
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        rc, err = main(capsys, *predict_args(trained / "best.pt", tmp_path, text="xyzzy plugh"))
    assert rc == 2 and "turned into an error by PYTHONWARNINGS=error" in err and "Traceback" not in err, err


def test_predict_out_of_memory_after_the_mask_says_the_mask_was_written(trained, tmp_path, capsys, monkeypatch):
    "Memory or disk run out on the overlay, the mask already on disk: the one line says the mask was written."
    import ris_nb.cli

    real, calls = ris_nb.cli.write_atomic, []

    def second_fails(path, write, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise MemoryError()
        return real(path, write, *a, **k)

    monkeypatch.setattr(ris_nb.cli, "write_atomic", second_fails)
    rc, err = main(capsys, *predict_args(trained / "best.pt", tmp_path))
    mask, overlay = tmp_path / "m.png", tmp_path / "m_overlay.png"
    assert rc == 2 and mask.exists() and not overlay.exists() and "Traceback" not in err, err
    assert "error: out of memory" in err and f"the mask {mask} was written, the overlay {overlay} was not" in err, err


def test_an_older_checkpoint_is_named_with_the_keys_its_config_lacked(trained, shaperefs, tmp_path):
    """A checkpoint of an older ris_nb (no version recorded, config keys it lacked): loading it says so in one warning
    naming how many keys were filled and with what; the demo's loader the same."""
    import shutil
    import warnings

    from ris_nb.demo import load_checkpoint_run
    from ris_nb.run_folder import load_run

    ck = torch.load(trained / "best.pt", weights_only=False)
    ck.pop("ris_nb_version", None), ck.pop("ris_nb_commit", None)
    cfg = json.loads(ck["config"])
    del cfg["model"]["mg"]["vision_grad"], cfg["train"]["compile"]
    ck["config"] = json.dumps(cfg)
    torch.save(ck, tmp_path / "best.pt")
    shutil.copytree(trained / "tokenizer", tmp_path / "tokenizer")
    for load in (load_run, load_checkpoint_run):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            load(tmp_path / "best.pt")
        lines = [str(w.message) for w in said if "recorded no version" in str(w.message)]
        assert len(lines) == 1 and "\n" not in lines[0], [str(w.message) for w in said]
        assert "2 config keys it lacks (model.mg.vision_grad=True, train.compile='none') take" in lines[0], lines[0]
        assert "evaluate it with that version" in lines[0]
    from ris_nb.demo import DemoApp

    app = DemoApp(shaperefs.parent, tmp_path / "runs")  # the demo shows it beside each mask of that checkpoint
    app.load_with_language(str(tmp_path / "best.pt"))
    assert "recorded no version" in app.load_note and "2 config keys it lacks" in app.load_note, app.load_note


def ris_env(args: list, **env: str) -> subprocess.CompletedProcess:
    "`ris_nb ARGS` in a subprocess with `env` added to the tests' environment."
    cmd = [sys.executable, "-m", "ris_nb", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**ENV, **env}, timeout=600)


@pytest.mark.parametrize("backend, said", [("nosuch", "MPLBACKEND='nosuch' is not a matplotlib backend")])
def test_a_bad_mplbackend_is_refused_before_training(backend, said, shaperefs, tmp_path):
    p = ris_env(["train", "--data", shaperefs, "--out", tmp_path / "run", *TINY_RUN], MPLBACKEND=backend)
    assert p.returncode == 2 and said in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_missing_package_names_what_to_install(shaperefs, tmp_path):
    fake = tmp_path / "hide" / "pycocotools"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pycocotools'\", name='pycocotools')"
    )
    path = os.pathsep.join([str(tmp_path / "hide"), ENV.get("PYTHONPATH", "")])
    p = ris_env(["train", "--data", shaperefs, "--out", tmp_path / "run", "--no-eval", *TINY_RUN], PYTHONPATH=path)
    assert p.returncode == 2 and "pip install pycocotools" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]


def test_animated_and_multipage_images_say_frame_one(tmp_path):
    from ris_nb.io import load_image

    a, b = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    for name in ("a.gif", "a.png", "a.tif"):
        a.save(tmp_path / name, save_all=True, append_images=[b])
        with pytest.warns(UserWarning, match="holds 2 frames"):
            assert load_image(tmp_path / name)[0, 0, 0] > 200  # the first frame: red
    a.save(tmp_path / "one.png")
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        load_image(tmp_path / "one.png")


def test_text_that_is_not_utf8_is_named(trained, tmp_path, capsys):
    rc, err = main(capsys, *predict_args(trained / "best.pt", tmp_path, text="the r\udce9d circle"))
    assert rc == 2 and "is not UTF-8" in err and "Traceback" not in err, err


@pytest.mark.parametrize("n, said", [(0, "expected an integer >= 1"), (10**5, "expected at most")])
def test_threads_out_of_range_are_refused(n, said):
    from ris_nb.machine import set_threads

    with pytest.raises(ValueError, match=said):
        set_threads(n)


def test_official_config_strings_are_refused_by_name():
    from ris_nb.official import magnet_config, sag_config

    with pytest.raises(ValueError, match=r"official MagNet config swin: embed_dim='128'"):
        magnet_config({"swin": {"embed_dim": "128"}})
    with pytest.raises(ValueError, match=r"official MagNet config: image_size='480'"):
        magnet_config({"image_size": "480"})
    assert magnet_config({"swin": {"mlp_ratio": 4}}).model.vision.mlp_ratio == 4.0  # an int where a float is: fine
    assert magnet_config({"swin": {"qkv_bias": True, "ape": False}})  # the official config's switches: not numbers
    with pytest.raises(ValueError, match=r"official SaG config: img_num_embeds='8', lr='fast', info_txt_l2='no'"):
        sag_config({}, {"args": {"img_num_embeds": "8", "lr": "fast", "info_txt_l2": "no"}})


def test_train_writes_who_wrote_the_run_folder(trained):
    from ris_nb.distributed import written_by

    by = json.loads((trained / "written_by.json").read_text())
    assert by == written_by() and by["ris_nb_version"]
