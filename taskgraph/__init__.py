"""taskgraph: AutoML for multi-task learning.

Measure inter-task gradient affinity during training, build a task graph,
group tasks to avoid negative transfer, and search sharing topologies and loss
weightings with Optuna inside Ray Tune.

``import taskgraph`` stays light: torch is imported, but Ray, optuna-dashboard
and plotting libraries are imported only when a feature that needs them runs.
Public names are resolved lazily from their modules.

Example:
    >>> import taskgraph
    >>> data = taskgraph.load_dataset("planted-clusters", n_tasks=4, n_clusters=2, n_samples=300)
    >>> data.tasks.names
    ('t0', 't1', 't2', 't3')
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # core
    "Task": "taskgraph.tasks",
    "TaskSet": "taskgraph.tasks",
    "TaskGraphError": "taskgraph.exceptions",
    "MultiTaskData": "taskgraph.data",
    "MultiTaskDataset": "taskgraph.data",
    "load_dataset": "taskgraph.data",
    "planted_clusters": "taskgraph.data",
    "mmoe_pair": "taskgraph.data",
    "MultiTaskModel": "taskgraph.models",
    "TrunkSpec": "taskgraph.models",
    "TrainConfig": "taskgraph.training",
    "Callback": "taskgraph.training",
    "train": "taskgraph.training",
    "fit": "taskgraph.training",
    "evaluate": "taskgraph.training",
    "delta_m": "taskgraph.training",
    "train_partition": "taskgraph.training",
    # affinity (issue: affinity engine)
    "AffinityMatrix": "taskgraph.affinity",
    "AffinityTracker": "taskgraph.affinity",
    "measure_affinity": "taskgraph.affinity",
    "TaskGraph": "taskgraph.graph",
    # topologies, weighting, baselines
    "build_model": "taskgraph.models",
    "make_topology": "taskgraph.models",
    "make_weighting": "taskgraph.weighting",
    "single_task_baselines": "taskgraph.baselines",
    # grouping (issue: grouping)
    "Grouping": "taskgraph.grouping",
    "group_tasks": "taskgraph.grouping",
    "auto_group": "taskgraph.pipeline",
    "GroupingPolicy": "taskgraph.pipeline",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskgraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
