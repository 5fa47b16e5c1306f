"""The CLI in-process (click's CliRunner) on real data and a real SQLite study."""

from __future__ import annotations

from pathlib import Path

import pytest
import rich
from click.testing import CliRunner

from taskgraph.cli import cli

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _keep_rich_console():
    """The group's callback reconfigures rich's global console (stderr, quiet when not a terminal): undo it."""
    saved = dict(rich.get_console().__dict__)
    yield
    rich.get_console().__dict__.update(saved)


@pytest.fixture
def invoke():
    """``invoke(*args, env=...)`` → click's ``Result`` (``stdout`` and ``stderr`` apart), 80 columns by default."""

    def run(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(cli, list(args), env={"COLUMNS": "80", **(env or {})})

    return run


def tiny_study(directory: Path, name: str = "tiny", *, trials: int = 2) -> Path:
    """A study file small enough to run in a few seconds (3 planted tasks, 1 epoch, no grouping checks)."""
    path = directory / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
seed = 0
[dataset]
name = "planted-clusters"
options = {{ n_tasks = 3, n_clusters = 2, n_samples = 150 }}
[trunk]
hidden = [16, 8]
[search]
space = "{ROOT / 'search_spaces' / 'default.toml'}"
objective = "val_loss"
sampler = "random"
[budget]
trials = {trials}
epochs = 1
early_stopping = "none"
[train]
lr = 0.01
batch_size = 64
[affinity]
every = 2
check_seeds = 0
[resources]
cpus = 1
concurrent = 1
""")
    return path


@pytest.fixture(scope="session")
def make_study():
    """:func:`tiny_study`, for tests and module-scoped fixtures."""
    return tiny_study
