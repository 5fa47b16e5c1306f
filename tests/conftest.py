"""Shared fixtures: run the CLI as a real subprocess against this checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
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


#: fixtures of the tests that run a Ray of their own (``local_ray_env``) or on the suite's Ray head (``ray_head``)
RAY_FIXTURES = ("ray_head", "local_ray_env")
#: workerinput key: the folder where each pytest-xdist worker writes the groups of the tests it collected
_GROUPS = "taskgraph_xdist_groups"
_GROUPS_DIR = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test``: ``-n 2 --dist loadgroup``) the Ray tests form one group, run one after
    another on one worker, in collection order: one Ray head per session (the worker's, stopped after its last
    test), never two Rays at once (each takes the 2 CPUs it is given, and a local Ray takes Ray's default ports),
    while the other worker runs the rest of the suite. Without xdist this changes nothing.

    The groups (every test's ``xdist_group`` mark) reach the scheduler through a file (see
    :func:`pytest_xdist_make_scheduler`): xdist's own loadgroup renames each grouped test with an ``@group``
    suffix through an attribute that pytest 9.2 no longer reads its ids from, so its groups were lost.
    """
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in RAY_FIXTURES):
            item.add_marker(pytest.mark.xdist_group("ray"))
    folder = getattr(config, "workerinput", {}).get(_GROUPS)
    if folder:  # an xdist worker under a controller that schedules by these groups
        groups = {}
        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})
            if names:
                groups[item.nodeid] = "_".join(names)
        tmp = Path(folder) / f".{config.workerinput['workerid']}.json"
        tmp.write_text(json.dumps(groups))
        tmp.replace(Path(folder) / f"{config.workerinput['workerid']}.json")


def pytest_configure(config):
    """The controller of a ``--dist loadgroup`` run: a folder for the workers' groups, removed at its end."""
    if (config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput")
            and config.getoption("dist", "no") == "loadgroup" and config.getoption("tx", None)):
        config.stash[_GROUPS_DIR] = tempfile.mkdtemp(prefix="tg-xdist-groups")


def pytest_unconfigure(config):
    if _GROUPS_DIR in config.stash:
        shutil.rmtree(config.stash[_GROUPS_DIR], ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Tell each worker where to write its tests' groups."""
    if _GROUPS_DIR in node.config.stash:
        node.workerinput[_GROUPS] = node.config.stash[_GROUPS_DIR]


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: xdist's scope scheduling with the tests of one group as one unit of work (sent to one
    worker at once, the largest unit first), every other test a unit of its own."""
    if _GROUPS_DIR not in config.stash:
        return None
    from xdist.scheduler import LoadScopeScheduling

    folder = Path(config.stash[_GROUPS_DIR])

    class GroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has collected (and written its groups)
                self.groups = {}
                for f in sorted(folder.glob("gw*.json")):
                    self.groups.update(json.loads(f.read_text()))
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)
