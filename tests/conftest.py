"""Shared fixtures: run the CLI as a real subprocess against this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)  # small models: one thread is faster and leaves a core to subprocesses


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout first on the path, Ray on loopback."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 300, cwd: str | Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m taskgraph ARGS`` and capture its output (text)."""
    return subprocess.run([sys.executable, "-m", "taskgraph", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env or cli_env())


@pytest.fixture
def cli():
    return run_cli
