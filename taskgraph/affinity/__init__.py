"""Inter-task affinity: estimators, the tracker callback and the AffinityMatrix value.

See ``docs/affinity.md``. The public names:

- :func:`measure_affinity` — train with tracking, return an :class:`AffinityMatrix`;
- :class:`AffinityTracker` / :class:`Schedule` — the callback, also for your own loop;
- :data:`ESTIMATORS` — ``"exact"`` (TAG lookahead), ``"first_order"``, ``"cosine"``;
- :func:`group_lookahead` — group→task lookahead for scoring candidate groups;
- :func:`naive_lookahead` — the slow reference definition.
"""

from typing import Any

from taskgraph.affinity.estimators import (
    ESTIMATORS,
    AffinityEstimator,
    AffinityStep,
    ExactLookahead,
    FirstOrder,
    GradientCosine,
    group_lookahead,
    make_estimator,
    momentum_drift,
)
from taskgraph.affinity.matrix import AffinityMatrix
from taskgraph.affinity.reference import naive_lookahead
from taskgraph.gradients import flat_per_task_gradients, per_task_gradients

# The tracker builds on the training loop, which itself imports the loss
# weightings, which use this package's gradients: load it on first use.
_LAZY = {"DEFAULT_BUDGET", "DEFAULT_CONTROL", "DEFAULT_CONTROL_SHARE", "DEFAULT_SUB_BATCH", "AffinityTracker",
         "Schedule", "measure_affinity"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from taskgraph.affinity import tracker

        return getattr(tracker, name)
    raise AttributeError(f"module 'taskgraph.affinity' has no attribute {name!r}")

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_CONTROL",
    "DEFAULT_CONTROL_SHARE",
    "DEFAULT_SUB_BATCH",
    "ESTIMATORS",
    "AffinityEstimator",
    "AffinityMatrix",
    "AffinityStep",
    "AffinityTracker",
    "ExactLookahead",
    "FirstOrder",
    "GradientCosine",
    "Schedule",
    "flat_per_task_gradients",
    "group_lookahead",
    "momentum_drift",
    "make_estimator",
    "measure_affinity",
    "naive_lookahead",
    "per_task_gradients",
]
