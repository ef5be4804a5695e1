"""One entry point: `python -m ris_nb` (the module `ris_nb.__main__`, built last in 99_app) runs the `ris_nb` command
with every subcommand, and the CLI sits on top of the modules whose subcommands it collects: none of them imports
`ris_nb.cli`."""

import ast
import re
from pathlib import Path

import pytest

from conftest import cli

PKG = Path(__file__).resolve().parents[1] / "ris_nb"
EVERY = {"synth", "train", "eval", "predict", "presets", "check-data", "pretrain-entities", "experiments", "course"}


def test_python_m_ris_nb_lists_every_subcommand():
    out = cli("--help", check_rc=0).stdout
    listed = set(re.findall(r"^    (\S+)", out.split("COMMAND")[-1], re.M))
    assert EVERY <= listed, (EVERY - listed, out)


def test_python_m_ris_nb_runs_a_subcommand_of_a_later_module(capsys):
    """`ris_nb.__main__.main`, what `python -m ris_nb` runs (in a process of its own: the test above), runs the
    subcommands of modules built after the CLI."""
    from ris_nb.__main__ import main

    for name in ("experiments", "course"):
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0 and capsys.readouterr().out.startswith(f"usage: ris_nb {name}"), name


def imports_of(path: Path) -> set[str]:
    "Modules `path` imports (relative ones as `ris_nb.<name>`)."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ("ris_nb." + (node.module or "")).rstrip(".") if node.level else node.module
            out |= {base} | ({f"{base}.{a.name}" for a in node.names} if base == "ris_nb" else set())
    return out


def test_no_module_below_the_entry_point_imports_the_cli():
    users = [
        p.name
        for p in PKG.rglob("*.py")
        if p.name not in ("cli.py", "__main__.py", "_modidx.py")
        if "ris_nb.cli" in imports_of(p)
    ]
    assert not users, f"modules that import ris_nb.cli (it should sit on top): {users}"
    # the later subcommands: `experiments` (study_runner), `course` and `grade` (grading, 98e)
    assert {"ris_nb.cli", "ris_nb.study_runner", "ris_nb.grading"} <= imports_of(PKG / "__main__.py")
