"""Runners: a study file → trials in an Optuna storage (local Optuna, or Ray Tune).

- :func:`run_local`: Optuna alone, one trial at a time.
- :func:`run_ray`: Ray Tune ``Tuner`` + a Tune ``Searcher`` over Optuna's ask/tell writing into the same storage,
  ASHA early stopping, per-trial resources, checkpoints.
- :func:`submit`: the same study as a Ray job on a cluster.

Ray is imported only when the Ray runner or submission runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_local": "taskgraph.runners.local",
    "run_ray": "taskgraph.runners.ray_tune",
    "submit": "taskgraph.runners.submit",
    "RunSummary": "taskgraph.runners.common",
    "StudyContext": "taskgraph.runners.trial",
    "run_trial": "taskgraph.runners.trial",
    "prepare": "taskgraph.runners.prepare",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskgraph.runners' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
