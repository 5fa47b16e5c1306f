"""Entry-point modules import first in a fresh interpreter (no import cycles), and
``import taskgraph`` stays light (no Ray, no plotting)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# modules a user or a Ray worker may import first; a cycle shows only from the right start
FIRST = ["taskgraph.training", "taskgraph.weighting", "taskgraph.affinity", "taskgraph.models",
         "taskgraph.grouping", "taskgraph.search", "taskgraph.runners", "taskgraph.cli.search"]


@pytest.mark.parametrize("module", FIRST)
def test_module_imports_first(module):
    path = ROOT / module.replace(".", "/")
    if not path.is_dir() and not path.with_suffix(".py").exists():
        pytest.skip(f"{module} is not in this checkout")
    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("heavy", ["ray", "matplotlib", "optuna_dashboard"])
def test_import_taskgraph_is_light(heavy):
    code = f"import sys, taskgraph, taskgraph.training; print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert out.stdout.strip() == "False", out.stderr
