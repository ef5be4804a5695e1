"""The code passes ruff's checks (settings in pyproject.toml; `make lint`): no undefined name, no unused import outside
the exported notebooks' import cells, no name defined twice, no syntax error."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINTED = ["ris_nb", "tests", "bench", "tools"]


def test_ruff_check_passes():
    if importlib.util.find_spec("ruff") is None:
        pytest.fail(f"ruff is not installed in {sys.prefix}: it is a dev requirement (settings.ini); run `make venv`")
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *LINTED],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, f"ruff check found problems:\n{res.stdout}{res.stderr}"
