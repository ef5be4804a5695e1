"""One scoring path (issue 71): `ris_nb.evaluate.score_splits` scores a trained model's splits for every caller: the
end of `ris_nb train` (`evaluate_run`), `ris_nb eval`, and a study's runs (`ris_nb.experiments`, trained or
re-scored); `ris_nb eval` prints what a direct call returns; no other module scores with `evaluate` itself. And
`fit(*prepare(cfg))`, the notebooks' path, runs each check once and keeps `prepare`'s training loader."""

import ast
import sys
from collections import Counter
from pathlib import Path

import pytest

import ris_nb.data.transforms as transforms
import ris_nb.distributed as distributed
import ris_nb.evaluate as EV
import ris_nb.fingerprints as fingerprints
import ris_nb.io as io
import ris_nb.loaders as loaders
import ris_nb.registry as registry
import ris_nb.run_folder as run_folder

from conftest import TINY_RUN
from test_run_once import count_everywhere, count_refers_and_train_loaders

PACKAGE = Path(EV.__file__).parent
METRICS = ["oIoU", "mIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9"]  # the report's columns after the split


@pytest.fixture
def scorers(monkeypatch) -> list[str]:
    "The name of each function that called `score_splits`, in order."
    callers, real = [], EV.score_splits

    def recorded(*a, **k):
        callers.append(sys._getframe(1).f_code.co_name)
        return real(*a, **k)

    monkeypatch.setattr(EV, "score_splits", recorded)
    # a module that imported the name holds its own reference: record there too (every module that imports it)
    for name, mod in list(sys.modules.items()):
        if name.startswith("ris_nb.") and mod is not EV and getattr(mod, "score_splits", None) is real:
            monkeypatch.setattr(mod, "score_splits", recorded)
    return callers


def tiny_config(data: Path, out: Path):
    from ris_nb.presets import get_preset

    over = {
        "data.root": str(data),
        "data.image_size": 64,
        "train.batch_size": 4,
        "train.max_steps": 2,
        "train.eval_every": 2,
        "train.ckpt_every": 2,
        "train.out_dir": str(out),
        "train.device": "cpu",
    }
    return get_preset("lavt_tiny").override(over)


def test_train_eval_and_a_study_score_through_one_function(shaperefs_data, tmp_path, scorers, capsys):
    from ris_nb.cli import main
    from ris_nb.data.transforms import make_dataloaders
    from ris_nb.experiments import rescore, train_and_score
    from ris_nb.loaders import make_eval_loader

    data, run = shaperefs_data(40, 3, 64), tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *TINY_RUN, "train.max_steps=2"]) == 0
    assert scorers == ["evaluate_run"], scorers
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run / "best.pt"), "--split", "val", "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert scorers == ["evaluate_run", "_run_eval"], scorers
    # the numbers `ris_nb eval` printed are those of a direct call on the checkpoint
    cfg, tok, model = run_folder.load_run(run / "best.pt")
    loader = make_eval_loader(make_dataloaders(cfg, tok, splits=["val"])["val"], cfg, distributed.DistInfo())
    direct = EV.score_splits(model, cfg, {"val": loader})["val"]["overall"]
    row = next(line for line in printed.splitlines() if line.startswith("| val |"))
    assert [c.strip() for c in row.split("|")[2 : 2 + len(METRICS)]] == [f"{direct[m]:.2f}" for m in METRICS], row
    # a study's run, trained then re-scored from its checkpoint
    study = tmp_path / "study"
    train_and_score(tiny_config(data, study / "train"), grounding=False)
    rescore(tiny_config(data, study / "again"), study, grounding=False)
    assert (
        scorers
        == ["evaluate_run", "_run_eval", "test_train_eval_and_a_study_score_through_one_function"] + ["_scores"] * 2
    ), scorers


def test_no_module_scores_a_split_by_itself():
    """Only `ris_nb.evaluate` calls `evaluate` (a run passes it to `fit`/`TrainingRun` as its validation, uncalled)."""
    calls = [
        f"{p.relative_to(PACKAGE.parent)}:{n.lineno}"
        for p in sorted(PACKAGE.rglob("*.py"))
        if p.name != "evaluate.py"
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "evaluate"
    ]
    assert not calls, f"call score_splits (ris_nb.evaluate) instead of evaluate: {calls}"


def test_fit_after_prepare_checks_once(shaperefs_data, tmp_path, monkeypatch):
    """`tok, loaders, model, cfg = prepare(cfg); fit(model, loaders, cfg)`: every check on the way runs once, the
    REFER index is read once, and the training DataLoader `prepare` made is the one trained on."""
    import torch

    from ris_nb.training_run import fit, prepare

    checks = [
        (registry, "validate_config"),
        (transforms, "check_config_arg"),
        (loaders, "check_loaders"),
        (loaders, "resolve_epochs"),  # `prepare` sizes `train.epochs` for this process's ranks; `fit` keeps it
        (io, "check_open_files"),  # once for the run's loaders, not once a loader
        (fingerprints, "run_fingerprints"),
        (run_folder, "read_run_dir"),
        (distributed, "run_lock"),
    ]
    calls = Counter()
    for module, name in checks:
        count_everywhere(monkeypatch, module, name, calls)
    count_refers_and_train_loaders(monkeypatch, calls)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, dls, model, cfg = prepare(tiny_config(shaperefs_data(40, 3, 64), tmp_path / "run"), splits=["train", "val"])
        fit(model, dls, cfg, evaluate=EV.evaluate)
    finally:
        torch.set_num_threads(threads)
    once = [name for _, name in checks] + ["Refer", "train DataLoader"]
    assert {k: calls[k] for k in once} == dict.fromkeys(once, 1), calls
    assert (tmp_path / "run" / "best.pt").exists()  # validated with the `evaluate` it was given
