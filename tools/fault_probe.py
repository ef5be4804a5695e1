"""Fault probe of issue 36: try every class of bad data, bad setting and misuse as a user would, and classify what
happens.

It generates a small ShapeRefs, trains one tiny run, then builds corrupted copies in a temporary folder and runs the
`ris_nb` CLI (or a few lines of the Python API) on each. It prints one row per case: the exit code, the first line of
stderr that matters, and a verdict:

- `clear`: the expected refusal, exit 2, one `ris_nb <command>: error:` line naming what it should, no traceback, no
  file left;
- `works`: the case is not an error and the command did the right thing;
- `unclear`: a traceback, a crash, a message that names nothing, or the wrong advice;
- `wrong`: a silent wrong result (exit 0 where it should refuse) or a file left behind.

    OMP_NUM_THREADS=1 python tools/fault_probe.py                 # every case (a few minutes on 2 busy cores)
    OMP_NUM_THREADS=1 python tools/fault_probe.py -k seed tokenizer   # only cases whose name holds one of these words
    OMP_NUM_THREADS=1 python tools/fault_probe.py --smoke   # the data, the tiny run and `SMOKE_GROUPS`' three cases
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
RIS = [sys.executable, "-m", "ris_nb"]  # the whole command: course and experiments included
TINY = ["train.max_steps=2", "train.batch_size=4", "data.image_size=64", "train.eval_every=2"]


@dataclass
class Row:
    case: str
    rc: int | str
    line: str
    verdict: str
    note: str = ""


def unique_tag() -> str:
    "A `sleep` argument no other process holds (from os.urandom: a seeded `random` repeats its draws)."
    return f"3000.{int.from_bytes(os.urandom(6), 'big'):015d}"


def run(args: list, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    "Run `ris_nb args` (a list of str/Path) and capture its output."
    return subprocess.run(
        RIS + [str(a) for a in args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout
    )


def train(
    data: Path, out: Path, *sets: str, cwd: Path | None = None, no_eval: bool = True
) -> subprocess.CompletedProcess:
    "`ris_nb train` of lavt_tiny for 2 steps on `data` into `out`, with extra `--set` values."
    return run(
        [
            "train",
            "--preset",
            "lavt_tiny",
            "--data",
            data,
            "--out",
            out,
            *(["--no-eval"] if no_eval else []),
            "--set",
            *TINY,
            *sets,
        ],
        cwd=cwd,
    )


def first_line(stderr: str) -> str:
    "The `error:` line if there is one, else the last line of a traceback, else the first non-empty line."
    lines = [l for l in stderr.splitlines() if l.strip()]
    for l in lines:
        if ": error:" in l:
            return l
    if any(l.startswith("Traceback") for l in lines):
        return lines[-1]
    return lines[0] if lines else ""


def refusal(p: subprocess.CompletedProcess, *names: str, left: Path | None = None) -> tuple[str, str]:
    """Verdict for a case that must be refused: clear only with exit 2, one error line naming every one of `names`,
    `left` absent."""
    line = first_line(p.stderr)
    if "Traceback" in p.stderr or p.returncode not in (0, 2):
        return "unclear", "traceback or crash"
    if p.returncode == 0:
        return "wrong", "exit 0: accepted silently"
    if left is not None and left.exists():
        return "wrong", f"{left.name} left behind"
    missing = [n for n in names if n not in line]
    if missing:
        return "unclear", f"does not name {missing}"
    if sum(": error:" in l for l in p.stderr.splitlines()) != 1:
        return "unclear", "more than one error line"
    return "clear", ""


def success(p: subprocess.CompletedProcess, ok: bool = True, why: str = "") -> tuple[str, str]:
    "Verdict for a case that must work: exit 0, no traceback, and the case's own check `ok`."
    if "Traceback" in p.stderr or p.returncode != 0:
        return "unclear", f"exit {p.returncode}"
    return ("works", "") if ok else ("wrong", why)


# ---------------------------------------------------------------- corrupted copies of the dataset


def load_files(ddir: Path) -> tuple[dict, list]:
    from ris_nb.io import safe_load_pickle

    return json.loads((ddir / "instances.json").read_text()), safe_load_pickle(ddir / "refs(shaperefs).p")


def save_files(ddir: Path, inst: dict, refs: list) -> None:
    (ddir / "instances.json").write_text(json.dumps(inst))
    (ddir / "refs(shaperefs).p").write_bytes(pickle.dumps(refs, protocol=2))


def plant(ddir: Path, fault: str) -> list[str]:
    "Plant `fault` in the dataset copy `ddir` (an image and a ref of the train split); return what an error must name."
    inst, refs = load_files(ddir)
    anns, imgs = {a["id"]: a for a in inst["annotations"]}, {im["id"]: im for im in inst["images"]}
    ref = next(r for r in refs if r["split"] == "train")
    ann, img = anns[ref["ann_id"]], imgs[ref["image_id"]]
    other = next(a for a in inst["annotations"] if a["image_id"] != img["id"])
    image_file = ddir / "images" / img["file_name"]
    if fault == "duplicate image id":
        inst["images"].append(dict(next(i for i in inst["images"] if i["id"] != img["id"]), id=img["id"]))
        want = ["image id", str(img["id"])]
    elif fault == "duplicate annotation id":
        inst["annotations"].append(dict(other, id=ann["id"]))
        want = ["annotation id", str(ann["id"])]
    elif fault == "duplicate ref id":
        refs[1]["ref_id"] = refs[0]["ref_id"]
        want = ["ref_id", str(refs[0]["ref_id"])]
    elif fault == "duplicate sentence id":
        refs[1]["sentences"][0]["sent_id"] = refs[0]["sentences"][0]["sent_id"]
        want = ["sent_id", str(refs[0]["sentences"][0]["sent_id"])]
    elif fault == "ann_id of another image":
        ref["ann_id"] = other["id"]
        want = [f"ref_id {ref['ref_id']}", f"ann_id {other['id']}"]
    elif fault == "empty segmentation []":
        ann["segmentation"] = []
        want = ["empty segmentation", f"annotation {ann['id']}"]
    elif fault == "empty polygon [[]]":
        ann["segmentation"] = [[]]
        want = ["empty segmentation", f"annotation {ann['id']}"]
    elif fault == "NaN polygon":
        ann["segmentation"][0][1] = float("nan")
        want = ["NaN", f"annotation {ann['id']}"]
    elif fault == "inf polygon":
        ann["segmentation"][0][0] = float("inf")
        want = ["infinite", f"annotation {ann['id']}"]
    elif fault == "polygon outside the image":
        ann["segmentation"][0] = [x + 3 * img["width"] for x in ann["segmentation"][0]]
        want = ["outside", f"annotation {ann['id']}"]
    elif fault == "truncated image":
        image_file.write_bytes(image_file.read_bytes()[:200])
        want = [image_file.name]
    elif fault == "missing image":
        image_file.unlink()
        want = [image_file.name]
    elif fault == "declared image 64 x 10^8 px":
        img["height"] = 10**8
        want = [f"image id {img['id']}", "pixels; expected at most"]
    elif fault == "declared image 10^9 x 10^9 px":
        img["height"] = img["width"] = 10**9
        want = [f"image id {img['id']}", "pixels; expected at most"]
    elif fault == "zero-width-space sentences of a ref":
        for s in ref["sentences"]:
            s["raw"] = s["sent"] = "\u200b\u200b"
        want = []  # training drops them with a warning; check-data warns
    elif fault == "every val sentence blank":
        for r in refs:
            if r["split"] == "val":
                for s in r["sentences"]:
                    s["raw"] = s["sent"] = "\u200b"
        want = ["val"]
    elif fault == "refs directory instead of file":
        (ddir / "refs(shaperefs).p").unlink()
        (ddir / "refs(shaperefs).p").mkdir()
        want = ["refs(shaperefs).p", "directory"]
        return want
    else:
        raise KeyError(fault)
    save_files(ddir, inst, refs)
    return want


DATA_FAULTS = [
    "duplicate image id",
    "duplicate annotation id",
    "duplicate ref id",
    "duplicate sentence id",
    "ann_id of another image",
    "empty segmentation []",
    "empty polygon [[]]",
    "NaN polygon",
    "inf polygon",
    "polygon outside the image",
    "truncated image",
    "missing image",
    "refs directory instead of file",
    "declared image 64 x 10^8 px",
    "declared image 10^9 x 10^9 px",
    "zero-width-space sentences of a ref",
    "every val sentence blank",
]
# not an error: dropped, with a warning
WARN_FAULTS = {"zero-width-space sentences of a ref": "dropped 1 empty sentence group"}


# ---------------------------------------------------------------- the cases


class Probe:
    def __init__(self, tmp: Path, data: bool = True):
        self.tmp, self.rows = tmp, []
        self.base = tmp / "data" / "shaperefs"
        if not data:
            return  # the grading cases need no dataset nor run
        from ris_nb.data.shaperefs_files import generate

        generate(self.base, n_images=80, seed=0, size=64, verbose=False)
        p = train(self.base, tmp / "run0", no_eval=False)
        assert p.returncode == 0, p.stderr[-2000:]
        self.run0 = tmp / "run0"

    def copy_data(self, name: str) -> Path:
        dst = self.tmp / "cases" / name.replace(" ", "_").replace("/", "_") / "shaperefs"
        shutil.copytree(self.base, dst)
        return dst

    def copy_run(self, name: str) -> Path:
        dst = self.tmp / "runs" / name.replace(" ", "_")
        shutil.copytree(self.run0, dst, ignore=shutil.ignore_patterns(".lock"))
        return dst

    def add(self, case: str, p, verdict_note: tuple[str, str]) -> None:
        rc = p.returncode if hasattr(p, "returncode") else p[0]
        line = first_line(p.stderr) if hasattr(p, "stderr") else p[1]
        self.rows.append(Row(case, rc, line, *verdict_note))
        print(f"{len(self.rows)}. {case}: {verdict_note[0]} {verdict_note[1]}", file=sys.stderr, flush=True)  # progress

    # -- data: train and check-data on each planted fault
    def data_faults(self) -> None:
        for fault in DATA_FAULTS:
            ddir = self.copy_data(fault)
            want = plant(ddir, fault)
            out = ddir.parent / "run"
            p = train(ddir, out)
            if fault in WARN_FAULTS:
                self.add(f"train: {fault}", p, success(p, WARN_FAULTS[fault] in p.stderr, "no warning"))
                p = run(["check-data", "--root", ddir.parent, "--dataset", "shaperefs"])
                self.add(
                    f"check-data: {fault}", p, success(p, "warning:" in p.stdout and "blank" in p.stdout, "no warning")
                )
                continue
            image_fault = fault in ("truncated image", "missing image")
            # an image that cannot be read is found when training reads it (decoding every image up front is
            # check-data's job)
            self.add(f"train: {fault}", p, refusal(p, *want, left=None if image_fault else out))
            p = run(["check-data", "--root", ddir.parent, "--dataset", "shaperefs"])
            v = refusal(p, "shaperefs")
            if v[0] == "clear" and not all(w in p.stdout for w in want):
                v = ("unclear", f"listing does not name {want}")
            self.add(f"check-data: {fault}", p, v)

    def check_data_valid(self) -> None:
        p = run(["check-data", "--root", self.base.parent, "--dataset", "shaperefs"])
        self.add(
            "check-data: the valid dataset", p, success(p, "everything required is in place" in p.stdout, "no ok line")
        )

    # -- tokenizer folders of a trained run
    def tokenizer_faults(self) -> None:
        for kind in ("empty", "truncated"):
            run_dir = self.copy_run(f"tok_{kind}")
            tok = run_dir / "tokenizer"
            if kind == "empty":
                for f in tok.iterdir():
                    f.unlink()
                want = [str(tok)]
            else:
                f = tok / "tokenizer.json"
                f.write_text(f.read_text()[: len(f.read_text()) // 2])
                want = ["tokenizer.json"]
            p = run(["eval", "--ckpt", run_dir / "best.pt", "--data", self.base, "--out", run_dir / "ev"])
            self.add(f"eval: {kind} tokenizer folder", p, refusal(p, *want, left=run_dir / "ev" / "report.md"))
            img = next((self.base / "images").iterdir())
            p = run(
                [
                    "predict",
                    "--ckpt",
                    run_dir / "best.pt",
                    "--image",
                    img,
                    "--text",
                    "the red circle",
                    "--out",
                    run_dir / "m.png",
                ]
            )
            self.add(f"predict: {kind} tokenizer folder", p, refusal(p, *want, left=run_dir / "m.png"))

    def ckpt_folder(self) -> None:
        p = run(["eval", "--ckpt", self.run0, "--out", self.tmp / "ev_dir"])
        v = refusal(p, "is a directory", "best.pt")
        self.add(
            "eval: --ckpt a run folder", p, ("unclear", "says corrupt") if "corrupt" in first_line(p.stderr) else v
        )
        import torch

        class Code:
            def __reduce__(self):
                return (os.system, ("true",))

        torch.save({"model": Code(), "config": "{}"}, self.tmp / "code.pt")
        p = run(["eval", "--ckpt", self.tmp / "code.pt", "--out", self.tmp / "ev_code"])
        v = refusal(p, "posix.system")
        self.add(
            "eval: a checkpoint holding code",
            p,
            ("unclear", "torch's advice, no reason") if "weights_only" in first_line(p.stderr) else v,
        )

    # -- config values (item 3)
    def config_faults(self) -> None:
        cases = [
            ("window_size too big", "model.vision.window_size=100", "model.vision.window_size=100"),
            ("device=mps (none here)", "train.device=mps", "mps"),
            ("device=tpu", "train.device=tpu", "train.device='tpu'"),
            ("vocab_size below the tokenizer", "model.text.vocab_size=5", "model.text.vocab_size=5"),
            ("max_tokens over 512", "data.max_tokens=5000", "data.max_tokens=5000"),
            ("ce_weights of length 3", "model.lavt.ce_weights=[0.5,0.5,0.5]", "model.lavt.ce_weights"),
            ("ce_weights with NaN", "model.lavt.ce_weights=[NaN,1.0]", "model.lavt.ce_weights"),
            ("ce_weights a number", "model.lavt.ce_weights=1.0", "model.lavt.ce_weights"),
            ("21-digit seed", "seed=123456789012345678901", "seed=123456789012345678901"),
            ("negative seed", "seed=-1", "seed=-1"),
            ("batch_size over the training set", "train.batch_size=100000", "train.batch_size=100000"),
            ("image_size 100000", "data.image_size=100000", "data.image_size=100000"),
        ]
        for name, setting, fragment in cases:
            out = self.tmp / "cfg" / name.replace(" ", "_")
            p = train(self.base, out, setting)
            self.add(f"train: {name}", p, refusal(p, fragment, left=out))

    # -- runs and checkpoints
    def eval_relative_data(self) -> None:
        a, b = self.tmp / "elsewhere_a", self.tmp / "elsewhere_b"
        shutil.copytree(self.base, a / "data" / "shaperefs")
        b.mkdir()
        p = train(Path("data"), Path("run"), cwd=a)
        assert p.returncode == 0, p.stderr[-2000:]
        p = run(["eval", "--ckpt", a / "run" / "best.pt"], cwd=b)
        v = refusal(p, "--data", left=a / "run" / "report.md")
        if v[0] == "clear" and "synth" in first_line(p.stderr):
            v = ("unclear", "advises synth")
        self.add("eval: relative --data from another folder", p, v)
        p = run(["eval", "--ckpt", a / "run" / "best.pt", "--data", a / "data"], cwd=b)
        self.add("eval: the same with --data", p, success(p, "oIoU" in p.stdout, "no table"))
        # `--data dsfolder`: the dataset folder itself
        shutil.copytree(self.base, a / "dsfolder")
        p = train(Path("dsfolder"), Path("run2"), cwd=a)
        assert p.returncode == 0, p.stderr[-2000:]
        p = run(["eval", "--ckpt", a / "run2" / "best.pt"], cwd=b)
        self.add(
            "eval: relative dataset folder from another folder", p, refusal(p, "--data", left=a / "run2" / "report.md")
        )

    def truncated_log(self) -> None:
        run_dir = self.copy_run("cut_log")
        log = run_dir / "log.jsonl"
        log.write_text(log.read_text()[:-15])
        p = train(self.base, run_dir, "train.max_steps=4", "train.eval_every=4")
        from ris_nb.run_folder import read_log

        steps = [r.get("step") for r in read_log(log)]
        self.add(
            "train: resume after a cut last line of log.jsonl",
            p,
            success(p, steps and steps[-1] == 4, f"log steps {steps}"),
        )

    def shorter_rerun(self) -> None:
        run_dir = self.copy_run("shorter")
        before = (run_dir / "config.json").read_text()
        p = train(self.base, run_dir, "train.max_steps=1")
        v = refusal(p, "train.max_steps=1")
        if (run_dir / "config.json").read_text() != before:
            v = ("wrong", "config.json rewritten")
        self.add("train: rerun a finished run with fewer steps", p, v)

    def checkpoints_file(self) -> None:
        for name in ("checkpoints", "tokenizer"):
            out = self.tmp / f"{name}_file"
            out.mkdir()
            (out / name).write_text("a file")
            p = train(self.base, out)
            v = refusal(p, f"{name} is a file")
            if v[0] == "clear" and (out / "config.json").exists():
                v = ("wrong", "config.json written first")
            self.add(f"train: {name} is a file", p, v)

    def stale_temp(self) -> None:
        run_dir = self.copy_run("stale")
        dead = run_dir / "checkpoints" / ".step_0000009.tmp-999999999.pt"
        dead.write_bytes(b"half")
        p = train(self.base, run_dir, "train.max_steps=3", "train.eval_every=3")
        self.add("train: a dead process's checkpoint temp file", p, success(p, not dead.exists(), "temp file left"))

    def refused_start(self) -> None:
        ddir = self.copy_data("refused_start")
        plant(ddir, "duplicate ref id")
        out = self.tmp / "refused_run"
        p = train(ddir, out)
        v = refusal(p, "ref_id")
        if out.exists():
            v = ("wrong", f"left {sorted(x.name for x in out.iterdir())}")
        self.add("train: refused start (no .lock-only folder)", p, v)

    # -- predict
    def predict_cases(self) -> None:
        img = next((self.base / "images").iterdir())
        ck = self.run0 / "best.pt"
        out = self.tmp / "pred"
        p = run(["predict", "--ckpt", ck, "--image", img, "--text", "the red circle", "--out", out / "x.psd"])
        self.add("predict: --out x.psd", p, refusal(p, ".psd", left=out / "x.psd"))
        p = run(["predict", "--ckpt", ck, "--image", img, "--text", "\u200b\u200b", "--out", out / "zw.png"])
        self.add("predict: zero-width-space sentence", p, refusal(p, "no visible character", left=out / "zw.png"))
        p = run(["predict", "--ckpt", ck, "--image", img, "--text", "zebra quokka", "--out", out / "unk.png"])
        self.add(
            "predict: no word in the vocabulary", p, success(p, "warning: none of the words" in p.stderr, "no warning")
        )
        p = run(["predict", "--ckpt", ck, "--image", img, "--text", "the red circle", "--out", out / "ok.png"])
        self.add("predict: a good sentence", p, success(p, (out / "ok.png").exists(), "no mask"))

    # -- course
    def course_invalid(self) -> None:
        nbs = self.tmp / "nbs"
        nbs.mkdir()
        shutil.copy(REPO / "nbs" / "01_metrics.ipynb", nbs)
        (nbs / "02_broken.ipynb").write_text("{not json")
        out = self.tmp / "course"
        p = run(["course", "--nbs", nbs, "--out", out])
        self.add("course: a folder with an invalid notebook", p, refusal(p, "02_broken.ipynb", left=out))

    # -- signals
    def interrupt(self, sig: signal.Signals) -> None:
        out = self.tmp / f"sig_{sig.name}"
        args = RIS + [
            "train",
            "--preset",
            "lavt_tiny",
            "--data",
            str(self.base),
            "--out",
            str(out),
            "--no-eval",
            "--set",
            *TINY,
            "train.max_steps=60",
            "train.ckpt_every=5",
        ]
        args = [a for a in args if not a.startswith("train.eval_every=")] + ["train.eval_every=1000"]
        # SIGINT at default, as a terminal's foreground job has it (a probe started in the background inherits it
        # ignored, and `train` rightly keeps ignoring it)
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        t0 = time.time()
        while time.time() - t0 < 300 and not list((out / "checkpoints").glob("step_*.pt")):
            time.sleep(0.2)
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        rc = proc.returncode
        if sig == signal.SIGINT:
            lines = [l for l in err.splitlines() if l.strip() and not l.startswith(("precision:",))]
            ok = (
                rc == 130
                and "Traceback" not in err
                and any("interrupted; run the same command again" in l for l in lines)
            )
            self.rows.append(
                Row(
                    "train: Ctrl-C",
                    rc,
                    first_line(err) or (lines[-1] if lines else ""),
                    "clear" if ok else "unclear",
                    "" if ok else f"{len(lines)} stderr lines",
                )
            )
        else:
            ok = rc == -signal.SIGTERM and "Traceback" not in err
            self.rows.append(
                Row(
                    "train: SIGTERM", rc, first_line(err), "works" if ok else "unclear", "" if ok else "unexpected exit"
                )
            )
        p = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600)
        from ris_nb.run_folder import read_log

        left = [x.name for x in (out / "checkpoints").iterdir() if x.name.startswith(".")]
        steps = [r.get("step") for r in read_log(out / "log.jsonl") if "loss" in r]
        good = not left and steps and steps[-1] == 60
        self.add(
            f"train: rerun after {'Ctrl-C' if sig == signal.SIGINT else 'SIGTERM'}",
            p,
            success(p, good, f"temp files {left}, last step {steps[-1:]}"),
        )

    # -- pipes
    def closed_pipe(self) -> None:
        cmd = (
            " ".join(map(str, RIS))
            + f" eval --ckpt {self.run0 / 'best.pt'} --out {self.tmp / 'pipe'} | head -1 >/dev/null"
        )
        p = subprocess.run(
            ["bash", "-c", cmd + "; exit ${PIPESTATUS[0]}"], capture_output=True, text=True, env=ENV, timeout=600
        )
        bad = "Broken pipe" in p.stderr or "Traceback" in p.stderr or p.returncode not in (0, 1)
        self.rows.append(Row("eval ... | head -1", p.returncode, first_line(p.stderr), "unclear" if bad else "works"))

    # -- the Python API
    def api_cases(self) -> None:
        setup = (
            "import torch\nfrom ris_nb.presets import get_preset\nfrom ris_nb.training_run import prepare\nfrom "
            "ris_nb.evaluate import evaluate\n"
            f"cfg = get_preset('lavt_tiny').override({{'data.root': {str(self.base.parent)!r}, "
            f"'data.image_size': 64, 'data.test_splits': []}})\n"
            f"OUT = cfg.override({{'train.out_dir': {str(self.tmp / 'api_run')!r}}})\n"
        )
        cases = [
            ("prepare('lavt_tiny')", "prepare('lavt_tiny')", "TypeError", "cfg="),
            ("prepare(cfg, splits='val')", "prepare(cfg, splits='val')", "TypeError", "splits='val'"),
            ("evaluate(model, None)", "evaluate(torch.nn.Linear(2, 2), None)", "TypeError", "loader"),
            ("evaluate('best.pt', loader)", "evaluate('best.pt', [])", "TypeError", "model"),
            (
                "fit(model, loaders, 'lavt_tiny')",
                "from ris_nb.training_run import fit; fit(torch.nn.Linear(2, 2), {}, 'lavt_tiny')",
                "TypeError",
                "cfg=",
            ),
            (
                "fit('best.pt', loaders, cfg)",
                "from ris_nb.training_run import fit; t, L, m, c = prepare(OUT); fit('best.pt', L, c)",
                "TypeError",
                "model",
            ),
            (
                "fit(model, None, cfg)",
                "from ris_nb.training_run import fit; fit(torch.nn.Linear(2, 2), None, OUT)",
                "TypeError",
                "loaders",
            ),
            (
                "fit(model, loaders, cfg, cbs=3)",
                (
                    "from ris_nb.training_run import fit; fit(torch.nn.Linear(2, 2), {'train': "
                    "torch.utils.data.DataLoader([1])}, OUT, cbs=3)"
                ),
                "TypeError",
                "cbs",
            ),
        ]
        for name, code, kind, fragment in cases:
            body = (
                setup + f"try:\n    {code}\nexcept Exception as e:\n    print(f'RAISED {{type(e).__name__}}: {{e}}')\n"
            )
            p = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, env=ENV, timeout=600)
            line = next((l for l in p.stdout.splitlines() if l.startswith(("RAISED", "SPLITS"))), first_line(p.stderr))
            if (self.tmp / "api_run").exists():
                v = ("wrong", f"left {sorted(x.name for x in (self.tmp / 'api_run').iterdir())}")
            elif line.startswith(f"RAISED {kind}") and fragment in line:
                v = ("clear", "")
            else:
                v = ("unclear", "wrong exception or message")
            self.rows.append(Row(f"API: {name}", p.returncode, line, *v))
            shutil.rmtree(self.tmp / "api_run", ignore_errors=True)

    # ---- round 3 (checkpoints, resume, run folders, experiments)
    def r3_resume(self) -> None:
        run_dir = self.copy_run("every_ckpt_cut")
        for f in (run_dir / "checkpoints").glob("step_*.pt"):
            f.write_bytes(f.read_bytes()[:100])
        best = (run_dir / "best.pt").read_bytes()
        p = train(self.base, run_dir, "train.max_steps=4")
        v = refusal(p, "none of its", "step_0000002.pt", "delete the run folder")
        if (run_dir / "best.pt").read_bytes() != best:
            v = ("wrong", "best.pt replaced")
        self.add("train: resume with every step checkpoint unreadable", p, v)
        run_dir = self.copy_run("best_cut")
        (run_dir / "best.pt").write_bytes((run_dir / "best.pt").read_bytes()[:2000])
        p = train(self.base, run_dir, "train.max_steps=4")
        self.add(
            "train: resume with a truncated best.pt", p, refusal(p, "best.pt is truncated or corrupt", "move it away")
        )
        run_dir = self.copy_run("best_in_ckpts")
        shutil.copy(run_dir / "best.pt", run_dir / "checkpoints" / "step_0000003.pt")
        p = train(self.base, run_dir, "train.max_steps=4")
        self.add(
            "train: best.pt copied into checkpoints/", p, refusal(p, "step_0000003.pt is not a resumable checkpoint")
        )

    def r3_data_changed(self) -> None:
        ddir = self.copy_data("swapped images")
        run_dir = ddir.parent / "run"
        assert train(ddir, run_dir).returncode == 0
        files = sorted((ddir / "images").iterdir(), key=lambda f: f.stat().st_size)
        a, b = files[0], files[-1]
        ba, bb = a.read_bytes(), b.read_bytes()
        a.write_bytes(bb)
        b.write_bytes(ba)
        p = train(ddir, run_dir, "train.max_steps=4")
        self.add("train: resume after image files were swapped", p, refusal(p, "images_fingerprint"))
        a.write_bytes(ba)
        b.write_bytes(bb)
        # a copy: other folder, other mtimes
        moved = self.tmp / "cases" / "moved_data" / "shaperefs"
        shutil.copytree(ddir, moved)
        p = train(moved, run_dir, "train.max_steps=4")
        self.add("train: resume on an exact copy of the data", p, success(p))
        ddir = self.copy_data("synth under train")
        out = ddir.parent / "run"
        args = RIS + [
            "train",
            "--preset",
            "lavt_tiny",
            "--data",
            str(ddir),
            "--out",
            str(out),
            "--set",
            *TINY,
            "train.max_steps=400",
            "train.ckpt_every=5",
            "train.eval_every=5",
        ]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        t0 = time.time()
        while time.time() - t0 < 300 and not list((out / "checkpoints").glob("step_*.pt")):
            time.sleep(0.2)
        s = run(["synth", "--out", ddir, "--n-images", "80", "--seed", "7", "--size", "64"])
        if s.returncode != 0:  # synth refuses an existing folder: the same change by hand
            from ris_nb.data.shaperefs_files import generate

            generate(self.tmp / "cases" / "seed7" / "shaperefs", n_images=80, seed=7, size=64, verbose=False)
            shutil.copytree(self.tmp / "cases" / "seed7" / "shaperefs", ddir, dirs_exist_ok=True)
        _, err = proc.communicate(timeout=600)
        p = subprocess.CompletedProcess(args, proc.returncode, "", err)
        self.add(
            "train: synth with another seed into the data folder of a running train",
            p,
            refusal(p, "changed while it trained"),
        )

    def r3_checkpoint_bytes(self) -> None:
        import struct
        import zipfile
        import torch

        run_dir = self.copy_run("flipped")
        with zipfile.ZipFile(run_dir / "best.pt") as z:
            info = max(z.infolist(), key=lambda i: i.file_size)
        raw = bytearray((run_dir / "best.pt").read_bytes())
        n, m = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
        at = info.header_offset + 30 + n + m + info.file_size // 2
        raw[at : at + 64] = bytes(x ^ 0xFF for x in raw[at : at + 64])
        (run_dir / "best.pt").write_bytes(bytes(raw))
        p = run(["eval", "--ckpt", run_dir / "best.pt", "--data", self.base, "--out", run_dir / "ev"])
        self.add(
            "eval: 64 bytes flipped inside a tensor of best.pt",
            p,
            refusal(p, "best.pt", "CRC-32", left=run_dir / "ev" / "report.md"),
        )
        run_dir = self.copy_run("bomb")
        with zipfile.ZipFile(run_dir / "best.pt", "a", zipfile.ZIP_DEFLATED) as z:
            z.writestr("best/data/999", bytes(256 << 20))
        p = run(["eval", "--ckpt", run_dir / "best.pt", "--data", self.base, "--out", run_dir / "ev"])
        self.add(
            "eval: a best.pt whose record inflates to 256 MiB",
            p,
            refusal(p, "best.pt", "records declare", "best/data/999"),
        )
        run_dir = self.copy_run("wider")
        ck = torch.load(run_dir / "best.pt", weights_only=True)
        k = next(k for k, t in ck["model"].items() if t.ndim == 2)
        ck["model"][k] = torch.zeros(ck["model"][k].shape[0] + 1, ck["model"][k].shape[1])
        torch.save(ck, run_dir / "best.pt")
        p = run(["eval", "--ckpt", run_dir / "best.pt", "--data", self.base, "--out", run_dir / "ev"])
        self.add("eval: a checkpoint of another width", p, refusal(p, "best.pt", "does not fit", k))

    def r3_weights_files(self) -> None:
        import torch

        class Code:
            def __reduce__(self):
                return (os.system, ("true",))

        cut, code = self.tmp / "w_cut.pt", self.tmp / "w_code.pt"
        cut.write_bytes((self.run0 / "best.pt").read_bytes()[:3000])
        torch.save({"state_dict": Code()}, code)
        for kind, f, why in (
            ("truncated", cut, "truncated or corrupt"),
            ("code-holding", code, "refusing to load the code"),
        ):
            out = self.tmp / "r3w" / f"vision_{f.stem}"
            p = train(self.base, out, f"model.vision.weights={f}")
            self.add(f"train: {kind} model.vision.weights", p, refusal(p, str(f), why, left=out))
            out = self.tmp / "r3w" / f"entity_{f.stem}"
            p = run(
                [
                    "train",
                    "--preset",
                    "sag_tiny",
                    "--data",
                    self.base,
                    "--out",
                    out,
                    "--no-eval",
                    "--set",
                    *TINY,
                    f"model.sag.entity_weights={f}",
                ]
            )
            self.add(f"train: {kind} model.sag.entity_weights", p, refusal(p, str(f), why, left=out))

    def r3_disk_full(self) -> None:
        import resource

        limit = (self.run0 / "best.pt").stat().st_size // 2
        out = self.tmp / "ulimit_run"
        p = subprocess.run(
            RIS + ["train", "--preset", "lavt_tiny", "--data", str(self.base), "--out", str(out), "--set", *TINY],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
        )
        v = refusal(p, "cannot write", "ulimit -f")
        left = [f.name for f in out.rglob("*") if f.name.startswith(".") and ".tmp-" in f.name]
        if (out / "curves.png").exists() and (out / "curves.png").stat().st_size == 0:
            v = ("wrong", "0-byte curves.png")
        elif left:
            v = ("wrong", f"left {left}")
        self.add(f"train: ulimit -f {limit} bytes (checkpoints cannot be written)", p, v)
        out = self.tmp / "ulimit_step"  # the first large write is a step checkpoint: it, not a figure, is named
        p = subprocess.run(
            RIS
            + ["train", "--preset", "lavt_tiny", "--data", str(self.base), "--out", str(out), "--no-eval"]
            + ["--set", *TINY, "train.max_steps=4", "train.ckpt_every=1", "train.eval_every=100"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
        )
        v = refusal(p, "cannot write", "step_0000001.pt", "ulimit -f")
        left = [f.name for f in out.rglob("*") if f.name.startswith(".") and ".tmp-" in f.name]
        self.add(f"train: ulimit -f {limit} bytes at a step checkpoint", p, ("wrong", f"left {left}") if left else v)

    def r3_n_val(self) -> None:
        p = run(
            ["pretrain-entities", "--data", self.base, "--out", self.tmp / "ent.pt", "--n-val", "-5", "--steps", "1"]
        )
        self.add("pretrain-entities --n-val -5", p, refusal(p, "n_val=-5", left=self.tmp / "ent.pt"))

    def r3_experiments(self) -> None:
        toy = [
            "experiments",
            "--quick",
            "--seeds",
            "1",
            "--steps",
            "2",
            "--scenes",
            "40",
            "--only",
            "magnet",
            "--jobs",
            "1",
        ]
        out = self.tmp / "study"
        assert run(toy + ["--out", out]).returncode == 0
        res = out / "lavt" / "seed0" / "result.json"
        res.write_text(res.read_text()[:100])
        p = run(toy + ["--out", out])
        ok = "result.json: not valid JSON" in p.stderr and json.loads(res.read_text())["row"] == "lavt"
        self.add("experiments: re-run over a cut-off result.json", p, success(p, ok, "not named or not redone"))
        meta = out / "data" / "shaperefs" / "meta.json"
        meta.write_text("")
        p = run(toy + ["--out", out])
        self.add("experiments: an empty meta.json", p, refusal(p, "meta.json", "delete"))
        out2 = self.tmp / "study2"
        first = subprocess.Popen(
            RIS + [str(a) for a in toy + ["--out", out2]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        t0 = time.time()
        while time.time() - t0 < 120 and not ((out2 / ".lock").exists() and (out2 / ".lock").read_text().strip()):
            time.sleep(0.1)
        p = run(toy + ["--out", out2])
        first.communicate(timeout=600)
        v = refusal(p, "in use by another study")
        if first.returncode != 0:
            v = ("wrong", f"the first study failed (exit {first.returncode})")
        self.add("experiments: two studies into one --out", p, v)


# ---- round 3 (CLI, data reading, tokenizers, course, demo) — issue 47
# ----------------------------------------------------
def r3b_cli_cases(self: Probe) -> None:
    "Tokenizer code, eval beside the run's report, course over a student's work, long --text, odd paths and arguments."
    run_dir = self.copy_run("r3b_auto_map")
    f = run_dir / "tokenizer" / "tokenizer_config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "auto_map": {"AutoTokenizer": ["evil.Tok", None]}}))
    marker = self.tmp / "r3b_ran"
    (run_dir / "tokenizer" / "evil.py").write_text(
        f"open({str(marker)!r}, 'w')\nfrom transformers import PreTrainedTokenizerFast as Tok\n"
    )
    p = subprocess.run(
        RIS + ["eval", "--ckpt", str(run_dir / "best.pt"), "--out", str(self.tmp / "r3b_ev")],
        input="y\n",
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    v = refusal(p, "tokenizer_config.json", "auto_map")
    if marker.exists() or "Do you wish" in p.stdout + p.stderr:
        v = ("wrong", "asked, or ran the tokenizer's code")
    self.add("eval: a run tokenizer with auto_map", p, v)
    run_dir = self.copy_run("r3b_eval_split")
    report = (run_dir / "report.md").read_text()
    p = run(["eval", "--ckpt", run_dir / "best.pt", "--split", "testA"])
    self.add(
        "eval --split testA into the run folder",
        p,
        success(
            p,
            (run_dir / "report.md").read_text() == report and (run_dir / "report_testA.md").exists(),
            "the run's report.md replaced",
        ),
    )
    nbs, out = self.tmp / "r3b_nbs", self.tmp / "r3b_course"
    nbs.mkdir()
    shutil.copy(REPO / "nbs" / "01_metrics.ipynb", nbs)
    run(["course", "--nbs", nbs, "--out", out])
    nb = out / "01_metrics.ipynb"
    nb.write_text(nb.read_text().replace("raise NotImplementedError()", "return 42  # mine"))
    edited = nb.read_text()
    p = run(["course", "--nbs", nbs, "--out", out])
    v = refusal(p, "is not empty", "--update")
    if nb.read_text() != edited:
        v = ("wrong", "the student's notebook overwritten")
    self.add("course: again into a student folder", p, v)
    p = run(["course", "--nbs", nbs, "--out", out, "--update"])
    self.add(
        "course --update keeps an edited notebook",
        p,
        success(p, nb.read_text() == edited, "the student's notebook overwritten"),
    )
    img = next((self.base / "images").iterdir())
    p = run(
        [
            "predict",
            "--ckpt",
            self.run0 / "best.pt",
            "--image",
            img,
            "--text",
            "the red circle " * 168,
            "--out",
            self.tmp / "r3b_long.png",
        ]
    )
    self.add(
        "predict: --text of 504 words", p, success(p, "warning: --text has 506 tokens" in p.stderr, "cut silently")
    )
    p = run(
        [
            "predict",
            "--ckpt",
            self.run0 / "best.pt",
            "--image",
            "/dev/zero",
            "--text",
            "the red circle",
            "--out",
            self.tmp / "r3b_z.png",
        ]
    )
    self.add(
        "predict: --image /dev/zero", p, refusal(p, "/dev/zero", "not a regular file", left=self.tmp / "r3b_z.png")
    )
    p = run(["synth", "--seed", "-1", "--out", self.tmp / "r3b_neg"])
    self.add("synth --seed -1", p, refusal(p, "--seed -1", left=self.tmp / "r3b_neg"))
    p = run(["check-data", "--root", self.base / "instances.json"])
    self.add("check-data --root a file", p, refusal(p, "is a file; expected a folder"))
    three = self.tmp / "r3b_three" / "shaperefs"
    run(["synth", "--n-images", "3", "--size", "64", "--out", three])
    p = train(three, self.tmp / "r3b_three_run")
    self.add(
        "train on a 3-image ShapeRefs",
        p,
        refusal(p, "no 'val' split", "from 4 images on", left=self.tmp / "r3b_three_run"),
    )


def r3b_data_cases(self: Probe) -> None:
    """Word-less sentences, a polygon drawing no pixel, one file of two sizes, deep or long-number JSON, symlink
    loops, worker errors."""
    ddir = self.copy_data("r3b punctuation")
    inst, refs = load_files(ddir)
    for r in refs:
        if r["split"] == "val":
            for s_ in r["sentences"]:
                s_["raw"] = s_["sent"] = "?!..."
    save_files(ddir, inst, refs)
    p = train(ddir, ddir.parent / "run")
    self.add("train: every val sentence punctuation only", p, refusal(p, "split 'val'", left=ddir.parent / "run"))
    p = run(["check-data", "--root", ddir.parent, "--dataset", "shaperefs"])
    v = refusal(p, "shaperefs")
    if v[0] == "clear" and "split 'val' has no sentence with visible 'raw' text" not in p.stdout:
        v = ("unclear", "not listed")
    self.add("check-data: every val sentence punctuation only", p, v)
    ddir = self.copy_data("r3b sliver")
    inst, refs = load_files(ddir)
    ann = next(a for a in inst["annotations"] if a["id"] == next(r for r in refs if r["split"] == "train")["ann_id"])
    ann["segmentation"] = [[10.1, 10.1, 10.3, 10.1, 10.3, 10.3]]
    save_files(ddir, inst, refs)
    want = f"cover no pixel (too small or too thin to draw): annotation {ann['id']}"
    p = train(ddir, ddir.parent / "run")
    self.add("train: a 0.02 px² polygon", p, refusal(p, want, left=ddir.parent / "run"))
    p = run(["check-data", "--root", ddir.parent, "--dataset", "shaperefs"])
    v = refusal(p, "shaperefs")
    if v[0] == "clear" and want not in p.stdout:
        v = ("unclear", "not the same line as train's")
    self.add("check-data: a 0.02 px² polygon", p, v)
    ddir = self.copy_data("r3b two sizes")
    inst, refs = load_files(ddir)
    inst["images"][1].update(file_name=inst["images"][0]["file_name"], width=32, height=48)
    save_files(ddir, inst, refs)
    p = train(ddir, ddir.parent / "run")
    self.add("train: one image file of two sizes", p, refusal(p, "of different sizes", left=ddir.parent / "run"))
    for name, text, want in (
        ("200,000-deep instances.json", "[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ("5,000-digit number in instances.json", None, "number too long"),
    ):
        ddir = self.copy_data(f"r3b {name}")
        f = ddir / "instances.json"
        f.write_text(text if text is not None else f.read_text().replace('"height":64', '"height":' + "9" * 5000, 1))
        p = train(ddir, ddir.parent / "run")
        v = refusal(p, "instances.json", want, left=ddir.parent / "run")
        if v[0] == "clear" and "set_int_max_str_digits" in p.stderr:
            v = ("unclear", "Python's advice")
        self.add(f"train: {name}", p, v)
    ddir = self.copy_data("r3b symlink loop")
    first = sorted((ddir / "images").iterdir())[0]
    first.unlink()
    first.symlink_to(first.name)
    p = run(["check-data", "--root", ddir.parent, "--dataset", "shaperefs"])
    v = refusal(p, "shaperefs")
    if v[0] == "clear" and f"{first.name}: Too many levels of symbolic links" not in p.stdout:
        v = ("unclear", "no report of the loop")
    self.add("check-data: an image that is a symlink loop", p, v)
    ddir = self.copy_data("r3b worker error")
    from PIL import Image

    for f in sorted((ddir / "images").iterdir()):
        Image.new("RGB", (32, 32)).save(f)
    p = train(ddir, ddir.parent / "run", "data.num_workers=2")
    v = refusal(p, "differs from instances.json")
    if v[0] == "clear" and ("DataLoader worker" in p.stderr or "Original Traceback" in p.stderr):
        v = ("unclear", "a worker's traceback")
    self.add("train: data error with data.num_workers=2", p, v)


Probe.r3b_cli_cases, Probe.r3b_data_cases = r3b_cli_cases, r3b_data_cases
R3B_GROUPS = ["r3b_cli_cases", "r3b_data_cases"]


# ---- grading: students who try to subvert `ris_nb grade` -------------------------------------------------------
GRADE_KEY = "kiwi"
GRADE_RIGHT = {"sol-double": "def double(x): return 2 * x", "sol-think": f"think_q1 = {GRADE_KEY!r}"}
GRADE_WRONG = {"sol-double": "def double(x): return 2 * x + 1", "sol-think": "think_q1 = 'apple'"}
HOSTILE = {  # case → the code a student puts in place of an answer (its other answers wrong)
    "patches ris_nb.exercise_checks (module and __code__)": (
        "sol-double",
        "import ris_nb.exercise_checks as c\n"
        "for n in ('check_function', 'check_choice', 'compare'):\n"
        "    f = getattr(c, n)\n"
        "    getattr(f, '__wrapped__', f).__code__ = (lambda *a, **k: None).__code__\n"
        "    setattr(c, n, lambda *a, **k: None)\ndef double(x): return x",
    ),
    "rebinds check_choice and check_function": (
        "sol-double",
        "check_function = check_choice = lambda *a, **k: None\ndef double(x): return x",
    ),
    "scans frames and gc for the key": (
        "sol-think",
        "import gc, re, sys\nf, seen = sys._getframe(), set()\n"
        "while f is not None:\n"
        "    seen |= {v for v in [*f.f_locals.values(), *f.f_globals.values()] if isinstance(v, str)}\n"
        "    f = f.f_back\nseen |= {o for o in gc.get_objects() if isinstance(o, str)}\n"
        'keys = sorted({k for s in seen for k in re.findall(r"key\\s*=\\s*[\'\\"](\\w+)", s)})\n'
        "think_q1 = keys[0] if keys else 'apple'",
    ),
    "answers with a str subclass whose == is always True": (
        "sol-think",
        "class Sly(str):\n"
        "    __eq__ = __ne__ = lambda s, o: True\n    __hash__ = str.__hash__\n    strip = lower = lambda s, *a: s\n"
        "think_q1 = Sly('apple')",
    ),
    "calls os._exit(0)": ("sol-double", "import os\nos._exit(0)"),
    "raises SystemExit": ("sol-double", "raise SystemExit(0)"),
    "raises KeyboardInterrupt": ("sol-double", "raise KeyboardInterrupt"),
    "writes files (relative and ../)": (
        "sol-double",
        "open('mine.txt', 'w').write('x')\nopen('../escape.txt', 'w').write('x')\ndef double(x): return x",
    ),
}


def _grading_lesson(tmp: Path) -> tuple[dict, Callable[..., Path]]:
    "A tiny lesson (a function to write, a think question with a hidden key) and a writer of student copies."
    from ris_nb.course import to_student

    def cell(cid, kind, src):
        return {
            "cell_type": kind,
            "id": cid,
            "metadata": {},
            "source": src,
            **({"outputs": [], "execution_count": None} if kind == "code" else {}),
        }

    teacher = {
        "cells": [
            cell("ex", "markdown", "## Exercises\n\n### Write it yourself: double"),
            cell(
                "sol-double", "code", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"
            ),
            cell(
                "chk-double",
                "code",
                "import torch\nfrom ris_nb.exercise_checks import check_function\n"
                "check_function(double, lambda x: 2 * x, lambda g: (torch.randn(3, generator=g),))",
            ),
            cell("think", "markdown", "### Think: the fruit"),
            cell(
                "sol-think", "code", f"think_q1 = None\n### BEGIN SOLUTION\nthink_q1 = {GRADE_KEY!r}\n### END SOLUTION"
            ),
            cell(
                "chk-think",
                "code",
                "from ris_nb.exercise_checks import check_choice\n"
                "check_choice(think_q1, 'Q1')\n### BEGIN HIDDEN TESTS\n"
                f"check_choice(think_q1, 'Q1', key={GRADE_KEY!r})\n### END HIDDEN TESTS",
            ),
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }

    def student(name: str, answers: dict, edit: Callable | None = None) -> Path:
        nb = to_student(json.loads(json.dumps(teacher)), backend="own", lesson="lesson")
        for c in nb["cells"]:
            c["source"] = answers.get(c["id"], c["source"])
        if edit:
            edit(nb)
        path = tmp / "students" / name.replace(" ", "_").replace("/", "_") / "lesson.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(nb))
        return path

    return teacher, student


def _grades(csv_path: Path) -> dict[str, list[tuple[str, bool, str]]]:
    import csv

    rows = list(csv.DictReader(csv_path.open())) if csv_path.exists() else []
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["notebook"], []).append((r["check"], r["passed"] == "True", r["message"]))
    return out


def grading_cases(self: Probe) -> None:
    "Hostile students beside honest ones; a hang, lost ids, another lesson, broken markers, reads, writes, kills."
    teacher, student = _grading_lesson(self.tmp / "grading")
    t_path = self.tmp / "grading" / "teacher" / "lesson.ipynb"
    t_path.parent.mkdir(parents=True)
    t_path.write_text(json.dumps(teacher))
    hostile = {case: student(case, {**GRADE_WRONG, cell_id: code}) for case, (cell_id, code) in HOSTILE.items()}
    wrong, right = student("honest wrong", GRADE_WRONG), student("honest right", GRADE_RIGHT)
    out = self.tmp / "grading" / "grades.csv"
    p = run(["grade", t_path, *hostile.values(), wrong, right, "--csv", out])
    g = _grades(out)

    def passes(path):
        return [ok for _, ok, _ in g.get(str(path), [])]

    honest_ok = (
        passes(right) == [True, True]
        and passes(wrong) == [False, False]
        and "not the expected answer" in g[str(wrong)][1][2]
    )
    for case, path in hostile.items():
        rows = g.get(str(path), [])
        passed = [c for c, ok, _ in rows if ok]
        why = f"passed {passed}" if passed else "the honest students' grades changed" if not honest_ok else "no rows"
        v = ("works", "") if rows and not passed and honest_ok else ("wrong", why)
        if p.returncode != 0 or "Traceback" in p.stderr:
            v = ("unclear", f"exit {p.returncode}")
        self.add(f"grade: a student who {case}", p, v)
    writer = hostile["writes files (relative and ../)"].parent
    escaped = (writer.parent / "escape.txt").exists() or (writer / "mine.txt").exists()
    self.add(
        "grade: relative writes stay in the scratch copy", p, ("wrong", "written outside") if escaped else ("works", "")
    )
    hang = student("hangs", {**GRADE_WRONG, "sol-double": "while True: pass"})
    p = run(["grade", t_path, hang, wrong, "--timeout", "5", "--csv", out])
    g = _grades(out)
    ok = all("timed out after 5 s" in m for _, _, m in g.get(str(hang), [])) and (
        g.get(str(wrong)) or [("", False, "")] * 2
    )[1][2].endswith("expected answer")
    self.add("grade: a notebook that hangs (--timeout 5)", p, success(p, ok, "not stopped, or the next one affected"))
    deleted = student("deleted check", GRADE_RIGHT, lambda nb: nb["cells"].pop(5))

    def drop_ids(nb: dict) -> None:
        nb["nbformat_minor"] = 4
        for c in nb["cells"]:
            c.pop("id")

    no_ids = student("nbformat 4.4", GRADE_RIGHT, drop_ids)
    p = run(["grade", t_path, deleted, no_ids, "--csv", out])
    g = _grades(out)
    ok = [(c, ok) for c, ok, _ in g.get(str(deleted), [])] == [("chk-double", True), ("chk-think", False)] and g[
        str(deleted)
    ][1][2].startswith("missing: ")
    self.add("grade: a check cell deleted", p, success(p, ok, "not reported missing"))
    self.add("grade: cell ids lost (nbformat 4.4)", p, success(p, passes(no_ids) == [True, True], "not matched"))
    other = student("other lesson", GRADE_RIGHT, lambda nb: nb["metadata"].update(ris_nb={"lesson": "another"}))
    p = run(["grade", t_path, other, "--csv", out])
    self.add("grade: a notebook of another lesson", p, refusal(p, "is a copy of lesson 'another', not 'lesson'"))
    junk = self.tmp / "grading" / "junk.ipynb"
    junk.write_text("{not json")
    p = run(["grade", t_path, junk, "--csv", out])
    self.add("grade: a student file that is not a notebook", p, refusal(p, "junk.ipynb is not a notebook"))
    broken = json.loads(json.dumps(teacher))
    broken["cells"][4]["source"] = broken["cells"][4]["source"].replace("### END SOLUTION", "")
    b_path = self.tmp / "grading" / "broken" / "lesson.ipynb"
    b_path.parent.mkdir()
    b_path.write_text(json.dumps(broken))
    p = run(["grade", b_path, right, "--csv", out])
    where = "lesson.ipynb, cell 4 (id sol-think)"
    self.add("grade: teacher's BEGIN SOLUTION without END", p, refusal(p, where, "without 'END SOLUTION'"))
    p = run(["course", "--nbs", b_path.parent, "--out", self.tmp / "grading" / "course"])
    self.add("course: BEGIN SOLUTION without END", p, refusal(p, where, left=self.tmp / "grading" / "course"))
    # contained only where the kernel has Landlock (FAULTS.md): else the student's process has the teacher's rights
    steal = f"import re\nthink_q1 = re.findall(r\"key='(\\w+)'\", open({str(t_path)!r}).read())[0]"
    reader = student("reads the teacher file", {**GRADE_WRONG, "sol-think": steal})
    p = run(["grade", t_path, reader, "--csv", out])
    stolen = [ok for c, ok, _ in _grades(out).get(str(reader), []) if c == "chk-think"] == [True]
    self.add(
        "grade: a student reading the teacher's notebook by its path",
        p,
        ("wrong", "not contained: no Landlock") if stolen else success(p),
    )
    target = self.tmp / "grading" / "absolute.txt"
    writer = student("writes by absolute path", {**GRADE_WRONG, "sol-think": f"open({str(target)!r}, 'w').write('x')"})
    p = run(["grade", t_path, writer, "--csv", out])
    self.add(
        "grade: a student writing by absolute path",
        p,
        ("wrong", "not contained: no Landlock") if target.exists() else success(p),
    )
    kill = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"
    killer = student("kills the grader", {**GRADE_WRONG, "sol-double": kill})
    p = run(["grade", t_path, killer, "--csv", out])
    self.add(
        "grade: a student killing the grading process",
        p,
        ("unclear", "not contained: grading killed, no CSV") if p.returncode == -9 else success(p),
    )


Probe.grading_cases = grading_cases


# ---- round 5 (issue 70): student folders that would stop or fool grading, processes that would outlive it
def _procs(tag: str) -> list[int]:
    "Processes whose command line holds `tag`."
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            out += [int(d)] if tag.encode() in Path(f"/proc/{d}/cmdline").read_bytes() else []
        except OSError:
            pass
    return out


def _scratch_of(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"ris_nb_grade*_{pid}-*"))


def _grader_stopped(self: Probe, t_path: Path, student, how: signal.Signals) -> None:
    "A grader stopped by `how` while a student's setsid() child runs leaves none of it (SIGKILL: after the next start)."
    tag = unique_tag()
    nb = student(f"forks then spins {how.name}", {**GRADE_RIGHT, "sol-double": _fork(tag) + "while True: pass"})
    cmd = [*RIS, "grade", str(t_path), str(nb), "--csv", str(self.tmp / "grading" / f"{how.name}.csv")]
    # SIGINT as a terminal's foreground job has it: a background job of a script inherits it ignored, and a grader
    # started so rightly ignores it (it then ends at the student's time limit, 300 s, leaving nothing)
    g = subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    t0 = time.monotonic()
    while not _procs(tag) and g.poll() is None and time.monotonic() - t0 < 300:
        time.sleep(0.2)
    g.send_signal(how)
    case = f"grade: the grader stopped by {how.name} while a student's setsid() child runs"
    try:
        _, err = g.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # a row, not the end of the probe
        g.kill()
        g.communicate()
        self.add(case, (-1, ""), ("wrong", "still running 120 s later"))
        err = ""
    else:
        if how == signal.SIGKILL:
            nxt = student(f"next {how.name}", GRADE_RIGHT)
            run(["grade", t_path, nxt, "--csv", self.tmp / "grading" / "next.csv"])
        time.sleep(0.5)
        left = [f"process {p}" for p in _procs(tag)] + [f.name for f in _scratch_of(g.pid)]
        self.add(case, (g.returncode, first_line(err)), ("wrong", f"left {left[:3]}") if left else ("works", ""))
    for pid in _procs(tag):
        os.kill(pid, signal.SIGKILL)


def _fork(tag: str) -> str:
    return f"import subprocess\nsubprocess.Popen(['setsid', 'sleep', '{tag}'])\n"


def r5_grading_cases(self: Probe) -> None:
    "Links, FIFOs, devices, deep trees, forking, memory, file size and a stopped grader (issue 70)."
    teacher, student = _grading_lesson(self.tmp / "grading")
    t_path = self.tmp / "grading" / "teacher" / "lesson.ipynb"
    t_path.parent.mkdir(parents=True, exist_ok=True)
    t_path.write_text(json.dumps(teacher))
    out = self.tmp / "grading" / "r5.csv"
    linked = self.tmp / "grading" / "linked" / "lesson.ipynb"
    linked.parent.mkdir()
    linked.symlink_to(t_path)
    right = student("r5 right", GRADE_RIGHT)
    p = run(["grade", t_path, linked, right, "--csv", out])
    g = _grades(out)
    v = refusal(p, "linked/lesson.ipynb is a symbolic link")
    if any(ok for _, ok, _ in g.get(str(linked), [])):
        v = ("wrong", "the teacher's notebook graded through the link")
    self.add("grade: a student notebook that is a symbolic link to the teacher's", p, v)
    fifo = self.tmp / "grading" / "fifo.ipynb"
    os.mkfifo(fifo)
    for case, nb, name in (("a FIFO", fifo, "is a FIFO"), ("/dev/zero", Path("/dev/zero"), "/dev/zero is a device")):
        try:
            p = run(["grade", t_path, nb, right, "--csv", out], timeout=300)
            v = refusal(p, name)
            if [ok for _, ok, _ in _grades(out).get(str(right), [])] != [True, True]:
                v = ("wrong", "the honest student not graded")
        except subprocess.TimeoutExpired:
            p, v = (-1, "hung for 300 s"), ("wrong", "grading blocked")
        self.add(f"grade: a student notebook that is {case}", p, v)
    old = self.tmp / "grading" / "v3" / "lesson.ipynb"
    old.parent.mkdir()
    old.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}))
    p = run(["grade", t_path, old, "--csv", out])
    self.add("grade: an nbformat-3 notebook", p, refusal(p, "is an nbformat 3 notebook", "nbconvert"))
    messy = student("r5 messy folder", GRADE_RIGHT)
    os.mkfifo(messy.parent / "pipe")
    socket.socket(socket.AF_UNIX).bind(str(messy.parent / "sock"))
    fd = os.open(messy.parent, os.O_RDONLY)
    for _ in range(1000):  # one level at a time: os.makedirs recurses
        os.mkdir("d", dir_fd=fd)
        fd, up = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(up)
    os.close(fd)
    p = run(["grade", t_path, messy, right, "--csv", out])
    g = _grades(out)
    ok = [o for _, o, _ in g.get(str(messy), [])] == [True, True] and "a FIFO" in g[str(messy)][0][2]
    ok = ok and [o for _, o, _ in g.get(str(right), [])] == [True, True]
    self.add("grade: a FIFO, a socket and 1,000 nested folders beside a notebook", p, success(p, ok, "not graded"))
    subprocess.run(["rm", "-rf", str(messy.parent / "d")], check=True)  # shutil.rmtree recurses too deep
    tag = unique_tag()
    forker = student("r5 forks", {**GRADE_RIGHT, "sol-double": _fork(tag) + GRADE_RIGHT["sol-double"]})
    p = run(["grade", t_path, forker, "--csv", out])
    left = _procs(tag)
    self.add("grade: a student's setsid() grandchild", p, success(p, not left, f"still running: {left}"))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    for how in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        _grader_stopped(self, t_path, student, how)


Probe.r5_grading_cases = r5_grading_cases


def r5_budget_cases(self: Probe) -> None:
    "A student over the memory or file-size budget; a MemoryError in a cell that is not a check (issue 70)."
    teacher, student = _grading_lesson(self.tmp / "budget")
    t_path = self.tmp / "budget" / "teacher" / "lesson.ipynb"
    t_path.parent.mkdir(parents=True)
    t_path.write_text(json.dumps(teacher))
    out = self.tmp / "budget" / "r5.csv"

    def contained(attempt: str, error: str) -> str:  # the think answer is right only when `attempt` raised `error`
        return f"try:\n    {attempt}\n    think_q1 = 'apple'\nexcept {error}:\n    think_q1 = {GRADE_KEY!r}"

    hog = student("r5 memory", {**GRADE_RIGHT, "sol-think": contained("x = bytearray(4 << 30)", "MemoryError")})
    big = student(
        "r5 file", {**GRADE_RIGHT, "sol-think": contained("open('f', 'wb').write(bytes(2 << 20))", "OSError")}
    )
    right = student("r5 budget right", GRADE_RIGHT)
    p = run(["grade", t_path, hog, big, right, "--csv", out, "--file-gib", "0.001"])
    g = _grades(out)
    ok = all([o for _, o, _ in g.get(str(s), [])] == [True, True] for s in (hog, big, right))
    case = "grade: a student allocating 4 GiB, one writing 2 MiB under --file-gib 0.001"
    self.add(case, p, success(p, ok, str(g)[:200]))
    fill = "import time\nfor i in range(100):\n    open(f'f{i}', 'wb').write(bytes(1 << 20))\ntime.sleep(60)\n"
    filler = student("r5 fills its folder", {**GRADE_RIGHT, "sol-double": fill + GRADE_RIGHT["sol-double"]})
    p = run(["grade", t_path, filler, "--csv", out, "--disk-gib", "0.01"])
    msg = str(_grades(out).get(str(filler)))
    ok = "its folder holds over 10 MiB" in msg
    self.add("grade: a student writing 100 MiB under --disk-gib 0.01", p, success(p, ok, msg[:120]))
    hidden = student("r5 hidden", {**GRADE_RIGHT, "sol-double": "x = bytearray(1 << 40)\n" + GRADE_RIGHT["sol-double"]})
    p = run(["grade", t_path, hidden, "--csv", out])
    msg = (_grades(out).get(str(hidden)) or [("", False, "")])[0][2]
    v = (
        success(p)
        if "MemoryError" in msg
        else ("unclear", f"the check says {msg[:60]!r}, not the MemoryError before it")
    )
    self.add("grade: a student's MemoryError in a cell before a check", p, v)


Probe.r5_budget_cases = r5_budget_cases
GRADING_GROUPS = ["grading_cases", "r5_grading_cases", "r5_budget_cases"]


def r5_upgrade_cases(self: Probe) -> None:
    "A run written by an older ris_nb (no version record, config keys it lacked): eval says so, resume names the gap."
    import torch

    def older(run_dir: Path, section: str, key: str) -> list:
        for f in [run_dir / "best.pt", *(run_dir / "checkpoints").glob("step_*.pt")]:
            ck = torch.load(f, weights_only=False)
            written = [ck.pop(k, None) for k in ("ris_nb_version", "ris_nb_commit")]
            cfg = json.loads(ck["config"])
            del cfg["model"][section][key]
            ck["config"] = json.dumps(cfg)
            torch.save(ck, f)
        return written

    run_dir = self.copy_run("older_version")
    written = older(run_dir, "mg", "vision_grad")  # a key this run kept at the value older versions ran with
    self.add(
        "train: a checkpoint records the ris_nb version and commit",
        (0, f"{written}"),
        ("works", "") if written[0] else ("wrong", "no version recorded"),
    )
    p = run(["eval", "--ckpt", run_dir / "best.pt", "--data", self.base, "--out", run_dir / "ev"])
    said = [l for l in p.stderr.splitlines() if "recorded no version" in l]
    self.add("eval: a checkpoint of an older version", p, success(p, len(said) == 1, "the version gap not named"))
    run_dir = self.copy_run("older_refine")
    older(run_dir, "lavt", "refine")  # this run's value (16) is not what older versions ran with (0)
    p = train(self.base, run_dir, "train.max_steps=4")
    self.add(
        "train: resume a run of an older version", p, refusal(p, "recorded no version", "model.lavt.refine", "--out")
    )


Probe.r5_upgrade_cases = r5_upgrade_cases


def run_env(args: list, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    "`ris_nb args` with `env` added to the probe's environment."
    cmd = RIS + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**ENV, **env}, timeout=timeout)


def r5_env_cases(self: Probe) -> None:
    """Paths (a quoted ~, link loops, dangling links, --out in images/), the environment (missing packages, warnings
    made errors, MPLBACKEND, --threads), odd inputs (animated images, text not UTF-8), official configs (issue 70)."""
    from PIL import Image

    out = self.tmp / "r5e"
    out.mkdir()
    (out / "loop1").symlink_to(out / "loop2")
    (out / "loop2").symlink_to(out / "loop1")
    (out / "dangling").symlink_to(out / "nothing")
    for case, args, names, left in (
        ("--out '~/x' (quoted)", ["--data", self.base, "--out", "~/x"], ["'~' was not expanded"], out / "~"),
        ("--out a symbolic link loop", ["--data", self.base, "--out", out / "loop1"], ["link loop"], None),
        ("--data a symbolic link loop", ["--data", out / "loop1", "--out", out / "r1"], ["link loop"], out / "r1"),
        (
            "--out a dangling link",
            ["--data", self.base, "--out", out / "dangling"],
            ["does not exist"],
            out / "nothing",
        ),
        ("--data a dangling link", ["--data", out / "dangling", "--out", out / "r2"], ["does not exist"], out / "r2"),
        ("--out inside images/", ["--data", self.base, "--out", self.base / "images" / "r"], ["inside"], None),
        ("--threads 100000", ["--data", self.base, "--out", out / "r3", "--threads", "100000"], ["--threads"], None),
    ):
        p = run(["train", "--preset", "lavt_tiny", *args, "--no-eval", "--set", *TINY], cwd=out)
        self.add(f"train: {case}", p, refusal(p, *names, left=left))
    import resource

    p = subprocess.run(
        [*RIS, "train", "--preset", "lavt_tiny", "--data", str(self.base), "--out", str(out / "fds"), "--no-eval"]
        + ["--set", *TINY, "data.num_workers=2"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32)),
    )
    self.add("train: ulimit -n 32 with 2 data workers", p, refusal(p, "data.num_workers=0", "ulimit -n"))
    shm = subprocess.run(["unshare", "-m", "true"], capture_output=True) if shutil.which("unshare") else None
    if shm is not None and shm.returncode == 0:  # a private mount namespace (root): a 16 KiB /dev/shm for this run only
        cmd = [*RIS, "train", "--preset", "lavt_tiny", "--data", self.base, "--out", out / "shm", "--no-eval", "--set"]
        cmd = " ".join(shlex.quote(str(a)) for a in [*cmd, *TINY, "data.num_workers=2"])
        mount = "mount -t tmpfs -o size=16k tmpfs /dev/shm && exec "
        p = subprocess.run(["unshare", "-m", "sh", "-c", mount + cmd], capture_output=True, text=True, env=ENV)
        self.add("train: a 16 KiB /dev/shm with 2 data workers", p, refusal(p, "/dev/shm has 16 KiB free"))
    img, ck = next((self.base / "images").iterdir()), self.run0 / "best.pt"
    p = run_env(
        ["train", "--preset", "lavt_tiny", "--data", self.base, "--out", out / "mpl", "--set", *TINY],
        MPLBACKEND="nosuch",
    )
    self.add("train: MPLBACKEND=nosuch", p, refusal(p, "MPLBACKEND='nosuch'", left=out / "mpl"))
    hide = out / "hide" / "pycocotools"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pycocotools'\", name='pycocotools')"
    )
    p = run_env(
        ["train", "--preset", "lavt_tiny", "--data", self.base, "--out", out / "pcc", "--set", *TINY],
        PYTHONPATH=str(hide.parent),
    )
    self.add("train: pycocotools missing", p, refusal(p, "pip install pycocotools"))
    pred = ["predict", "--ckpt", ck, "--image", img, "--out", out / "w.png", "--text"]
    p = run_env([*pred, "zebra quokka"], PYTHONWARNINGS="error")
    self.add("predict: PYTHONWARNINGS=error", p, refusal(p, "PYTHONWARNINGS"))
    p = run(["predict", "--ckpt", ck, "--image", img, "--out", out / "u.png", "--text", "the r\udce9d circle"])
    self.add("predict: --text with a byte that is not UTF-8", p, refusal(p, "not UTF-8", left=out / "u.png"))
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    for name in ("anim.gif", "anim.png", "pages.tif"):
        frames[0].save(out / name, save_all=True, append_images=frames[1:])
        p = run(["predict", "--ckpt", ck, "--image", out / name, "--text", "the red circle", "--out", out / "a.png"])
        self.add(f"predict: {name} of 2 frames", p, success(p, "holds 2 frames" in p.stderr, "frame 1 used unsaid"))
    code = "from ris_nb.official import magnet_config\nmagnet_config({'swin': {'embed_dim': '128'}})"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    line = first_line(p.stderr)
    v = ("clear", "") if "embed_dim='128'" in line and "expected numbers" in line else ("unclear", "key not named")
    self.add("official: a string where the MagNet config holds a number", p, v if p.returncode else ("wrong", "built"))
    by = self.run0 / "written_by.json"
    said = json.loads(by.read_text()) if by.exists() else {}
    self.add("train: the run folder records who wrote it", (0, str(said)), ("works", "") if said else ("wrong", "none"))


Probe.r5_env_cases = r5_env_cases


# ---------------------------------------------------------------- round 4: arguments that vanish, outputs over inputs,
# studies


def r4_cli_cases(self: Probe) -> None:
    "`--set` twice, `predict --out` over its input / lossy / through a link, unbounded counts."
    img = next((self.base / "images").iterdir())
    ck, out = self.run0 / "best.pt", self.tmp / "r4"
    out.mkdir(exist_ok=True)
    p = train(self.base, out / "twice", "--set", "train.lr=0.002")
    cfg = json.loads((out / "twice" / "config.json").read_text()) if (out / "twice" / "config.json").exists() else {}
    both = cfg.get("train", {}).get("lr") == 0.002 and cfg.get("train", {}).get("max_steps") == 2
    self.add("train: --set given twice", p, success(p, both, "one of the two --set lists lost"))
    p = train(self.base, out / "twice_key", "train.max_steps=1")
    said = "train.max_steps is given more than once; the last value, 1, is used" in p.stderr
    self.add("train: one key set twice", p, success(p, said, "no warning that the last value is used"))
    photo = out / "photo.png"
    shutil.copy(img, photo)
    before = photo.read_bytes()
    p = run(["predict", "--ckpt", ck, "--image", photo, "--text", "the red circle", "--out", photo])
    v = refusal(p, "is the input image")
    self.add("predict: --out is --image", p, v if photo.read_bytes() == before else ("wrong", "the input was replaced"))
    shutil.copy(img, out / "x_overlay.png")
    p = run(
        ["predict", "--ckpt", ck, "--image", out / "x_overlay.png", "--text", "the red circle", "--out", out / "x.png"]
    )
    self.add("predict: overlay would replace --image", p, refusal(p, "the overlay", left=out / "x.png"))
    p = run(["predict", "--ckpt", ck, "--image", img, "--text", "the red circle", "--out", out / "mask.jpg"])
    self.add("predict: --out mask.jpg", p, refusal(p, "lossy", left=out / "mask.jpg"))
    (out / "target.png").write_bytes(b"keep")
    (out / "link.png").symlink_to(out / "target.png")
    p = run(["predict", "--ckpt", ck, "--image", img, "--text", "the red circle", "--out", out / "link.png"])
    v = refusal(p, "symbolic link")
    self.add(
        "predict: --out a symbolic link", p, v if (out / "target.png").read_bytes() == b"keep" else ("wrong", "target")
    )
    p = run(["synth", "--out", out / "huge", "--n-images", "1000000000000"], timeout=60)
    self.add("synth: --n-images 10^12", p, refusal(p, "1,000,000", left=out / "huge"))
    for flag, v in (("--seeds", "1000"), ("--jobs", "500"), ("--steps", "100000000")):
        p = run(["experiments", "--out", out / f"study{flag}", flag, v], timeout=120)
        self.add(f"experiments: {flag} {v}", p, refusal(p, flag, left=out / f"study{flag}"))


def r4_study_cases(self: Probe) -> None:
    "A study inside another study's folder; a row folder that is a link; a --record that is a folder."
    out = self.tmp / "r4s"
    (out / "table").mkdir(parents=True)
    (out / "table" / "main_table.json").write_text("{}")
    p = run(["experiments", "--out", out / "table" / "plain" / "ablation", "--quick", "--seeds", "1"], timeout=120)
    self.add(
        "experiments: --out inside another study",
        p,
        refusal(p, "inside the study folder", left=out / "table" / "plain"),
    )
    (out / "elsewhere" / "seed0").mkdir(parents=True)
    (out / "elsewhere" / "seed0" / "keep.txt").write_text("mine")
    (out / "study").mkdir()
    (out / "study" / "lavt").symlink_to(out / "elsewhere")
    p = run(
        [
            "experiments",
            "--out",
            out / "study",
            "--only",
            "magnet",
            "--rows",
            "lavt",
            "--quick",
            "--seeds",
            "1",
            "--jobs",
            "1",
        ],
        timeout=600,
    )
    kept = (out / "elsewhere" / "seed0" / "keep.txt").exists()
    self.add(
        "experiments: a row folder that is a link", p, refusal(p, "symbolic link") if kept else ("wrong", "deleted")
    )
    p = run(["experiments", "--table", "main", "--out", out / "main", "--record", out], timeout=120)
    self.add("experiments: --record a folder", p, refusal(p, "--record", left=out / "main"))


Probe.r4_cli_cases, Probe.r4_study_cases = r4_cli_cases, r4_study_cases
R4_GROUPS = ["r4_cli_cases", "r4_study_cases"]


# `--smoke` (tests/test_scripts_run.py): the probe's whole path (data, tiny run, cases, table, verdicts) on three cases
SMOKE_GROUPS = ["check_data_valid", "ckpt_folder"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "-k", nargs="*", default=None, help="run only the groups whose method name holds one of these words"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--smoke", action="store_true", help=f"only {', '.join(SMOKE_GROUPS)} (seconds)")
    args = ap.parse_args(argv)
    groups = [
        "data_faults",
        "check_data_valid",
        "tokenizer_faults",
        "ckpt_folder",
        "config_faults",
        "eval_relative_data",
        "truncated_log",
        "shorter_rerun",
        "checkpoints_file",
        "stale_temp",
        "refused_start",
        "predict_cases",
        "course_invalid",
        "interrupt_int",
        "interrupt_term",
        "closed_pipe",
        "api_cases",
        # ---- round 3 (checkpoints, resume, run folders, experiments)
        "r3_resume",
        "r3_data_changed",
        "r3_checkpoint_bytes",
        "r3_weights_files",
        "r3_disk_full",
        "r3_n_val",
        "r3_experiments",
    ]
    groups += R3B_GROUPS  # round 3 (CLI, data reading, tokenizers, course, demo)
    groups += GRADING_GROUPS  # students who try to subvert `ris_nb grade`
    # round 4: --set twice, outputs over inputs, studies' folders
    groups += R4_GROUPS
    groups += ["r5_upgrade_cases", "r5_env_cases"]  # round 5 (issue 70): older runs, paths, environment, inputs
    if args.k:
        groups = [g for g in groups if any(k in g for k in args.k)]
    if args.smoke:
        groups = SMOKE_GROUPS
    tmp = Path(tempfile.mkdtemp(prefix="ris_nb_fault_probe_"))
    t0 = time.time()
    try:
        probe = Probe(tmp, data=not all(g in GRADING_GROUPS for g in groups))
        for g in groups:
            if g.startswith("interrupt_"):
                probe.interrupt(signal.SIGINT if g.endswith("int") else signal.SIGTERM)
            else:
                getattr(probe, g)()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    print("| case | exit | first line of stderr | verdict |\n|---|---|---|---|")
    for r in probe.rows:
        line = r.line.replace(str(tmp), "<tmp>").replace("|", "\\|")
        line = line if len(line) <= 150 else line[:147] + "..."
        print(f"| {r.case} | {r.rc} | {line} | {r.verdict}{' (' + r.note + ')' if r.note else ''} |")
    counts = {v: sum(r.verdict == v for r in probe.rows) for v in ("clear", "works", "unclear", "wrong")}
    print(f"\n{len(probe.rows)} cases in {time.time() - t0:.0f} s: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return 1 if counts["unclear"] or counts["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
