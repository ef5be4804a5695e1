"""One `ris_nb train` starts its run once (issue 49), through one `TrainingRun.start`: during a fresh run, and again
during a resumed one, every start-up step (config validation, rank set-up, lock, REFER index, tokenizer and data,
run-folder check, fingerprints, seeding, the open-file limit, the train split's DataLoader) runs once. Each step is
counted by a wrapper put in place of the function wherever `ris_nb` holds it, and each of the run's own steps by a
wrapper put on `TrainingRun`."""

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import ris_nb.core as core
import ris_nb.distributed as distributed
import ris_nb.data.transforms as transforms
import ris_nb.io as io
import ris_nb.registry as registry
import ris_nb.loaders as loaders
import ris_nb.run_folder as run_folder
import ris_nb.training_run as training_run
from ris_nb.data.refer import Refer

from conftest import TINY_RUN

STEPS = [
    (registry, "validate_config"),
    (transforms, "check_config_arg"),
    (loaders, "check_loaders"),
    (distributed, "init_distributed"),
    (training_run, "run_fingerprints"),
    (distributed, "run_lock"),
    (run_folder, "read_run_dir"),
    (loaders, "resolve_epochs"),
    (io, "check_open_files"),
    (core, "seed_everything"),
]
RUN_STEPS = ["start", "_prepare", "_check", "_train", "load_best"]  # `TrainingRun`'s: the one start and what it calls


@pytest.fixture(scope="module")
def shaperefs(tmp_path_factory):
    from ris_nb.data.shaperefs_files import generate

    out = tmp_path_factory.mktemp("data") / "shaperefs"
    generate(out, n_images=40, seed=3, size=64, verbose=False)
    return out


def count_refers_and_train_loaders(monkeypatch, calls: Counter) -> None:
    "Count REFER indexes read (`Refer`) and training DataLoaders built (`train DataLoader`) into `calls`."
    refer_init, loader_init = Refer.__init__, torch.utils.data.DataLoader.__init__

    def refer(self, *a, **k):
        calls["Refer"] += 1
        refer_init(self, *a, **k)

    def loader(self, dataset, *a, **k):
        if getattr(getattr(dataset, "base", None), "split", None) == "train":
            calls["train DataLoader"] += 1
        loader_init(self, dataset, *a, **k)

    monkeypatch.setattr(Refer, "__init__", refer)
    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", loader)


def count_everywhere(monkeypatch, module, name: str, calls: Counter) -> None:
    "Replace `module.name` by a counting wrapper in every `ris_nb` module that imported it."
    original = getattr(module, name)

    def counted(*a, **k):
        # `DataGuardCB` hashes the files anew on purpose
        calls[name + (" again (data guard)" if k.get("fresh") else "")] += 1
        return original(*a, **k)

    for mod in [m for n, m in list(sys.modules.items()) if n == "ris_nb" or n.startswith("ris_nb.")]:
        if getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, counted)


def count_method(monkeypatch, cls, name: str, calls: Counter) -> None:
    "Replace the method `cls.name` by a counting wrapper."
    original = getattr(cls, name)

    def counted(self, *a, **k):
        calls[f"{cls.__name__}.{name}"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(cls, name, counted)


def counted_train(monkeypatch, capsys, *args) -> Counter:
    "Run `ris_nb train ARGS` in this process, counting each start-up step; the exit code must be 0."
    from ris_nb.cli import main

    calls = Counter()
    for module, name in STEPS:
        count_everywhere(monkeypatch, module, name, calls)
    for name in RUN_STEPS:
        count_method(monkeypatch, training_run.TrainingRun, name, calls)
    count_refers_and_train_loaders(monkeypatch, calls)
    torch_load = torch.load

    def load(f, *a, **k):
        calls[f"torch.load {Path(f).name}"] += 1
        return torch_load(f, *a, **k)

    monkeypatch.setattr(torch, "load", load)
    rc = main([str(a) for a in args])
    assert rc == 0, capsys.readouterr().err
    monkeypatch.undo()
    return calls


ONCE = [
    "validate_config",
    "check_config_arg",
    "check_loaders",
    "init_distributed",
    "run_fingerprints",
    "run_lock",
    "read_run_dir",
    "resolve_epochs",
    "check_open_files",
    "Refer",
    "train DataLoader",
    *(f"TrainingRun.{m}" for m in RUN_STEPS),
]


def test_a_fresh_and_a_resumed_train_start_once(shaperefs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    fresh = counted_train(
        monkeypatch, capsys, "train", "--data", shaperefs, "--out", out, *TINY_RUN, "train.max_steps=2"
    )
    assert {k: fresh[k] for k in ONCE} == dict.fromkeys(ONCE, 1), fresh
    # seeded twice, on purpose: cfg.seed before the model is built (the same initial weights on every rank), then
    # cfg.seed + rank as training starts (each rank's own dropout and token masks); neither is a repeat of the other
    assert fresh["seed_everything"] == 2, fresh
    # the run reads its folder once, through `read_run_dir`
    assert fresh["torch.load best.pt"] == 1, fresh  # the final evaluation's weights (and their step)
    assert not any(k.startswith("torch.load step_") for k in fresh), fresh

    resumed = counted_train(
        monkeypatch, capsys, "train", "--data", shaperefs, "--out", out, *TINY_RUN, "train.max_steps=4"
    )
    assert {k: resumed[k] for k in ONCE} == dict.fromkeys(ONCE, 1), resumed
    assert resumed["seed_everything"] == 2, resumed
    assert resumed["torch.load step_0000002.pt"] == 1, resumed  # the checkpoint resumed, read once
    # best.pt twice, two different files' worth: the run's old one, checked before any work (a damaged one is named
    # then), and the one training leaves, whose weights the final evaluation scores
    assert resumed["torch.load best.pt"] == 2, resumed
    log = (out / "log.jsonl").read_text()
    assert '"step": 4' in log and '"step": 3' in log
