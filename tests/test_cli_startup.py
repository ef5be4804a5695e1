"""`ris_nb --help`, `ris_nb presets` and a pipeline command's `--help` start without importing torch: the entry point
lists the later modules' subcommands from one table (`ris_nb.__main__.LATER`) and imports a module only for a command
of its own. The timing is in `bench/bench_cli_startup.py`, not here."""

import contextlib
import io
import re
import sys

import pytest
from conftest import run

from ris_nb import cli
from ris_nb.__main__ import LATER, build_parser, commands


def imported(*args: str) -> tuple[set[str], str]:
    "(modules `python -X importtime -m ris_nb ARGS` imports, its stdout)."
    p = run([sys.executable, "-X", "importtime", "-m", "ris_nb", *args])
    names = {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    return names, p.stdout


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["train", "--help"]])
def test_the_light_commands_never_import_torch(args):
    names, out = imported(*args)
    assert "ris_nb.cli" in names, sorted(names)  # the check reads the real import list
    ours = sorted(n for n in names if n.startswith("ris_nb"))
    assert "torch" not in names, f"ris_nb {' '.join(args)} imports torch; its ris_nb modules: {ours}"
    assert out.strip()


def test_presets_lists_the_package_presets():
    names, out = imported("presets")
    assert {"magnet_tiny", "lavt_tiny", "sag_tiny", "magnet_paper"} <= set(out.split()), out


def test_a_later_command_imports_its_module_and_torch():
    "The check can fail: `experiments` is built by `ris_nb.study_runner`, which imports torch."
    names, out = imported("experiments", "--help")
    assert {"ris_nb.study_runner", "torch"} <= names
    assert out.startswith("usage: ris_nb experiments")


def test_the_listing_is_the_full_parsers():
    "`ris_nb --help` from the table reads exactly as the parser with every module imported (same lines, same order)."
    assert cli.build_parser(commands()).format_help() == build_parser().format_help()


def options(parser, name: str) -> set[str]:
    "The long options `parser`'s subcommand `name` lists in its help, `--help` left out."
    buf = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(buf):
        parser.parse_args([name, "--help"])
    return set(re.findall(r"--[a-z][\w-]*", buf.getvalue())) - {"--help"}


@pytest.mark.parametrize("name", list(LATER))
def test_a_later_command_gets_its_own_parser(name):
    assert options(cli.build_parser(commands(name)), name), f"{name}: only its help line, none of its options"
    assert not options(cli.build_parser(commands("train")), name), f"{name}: its module imported for another command"
