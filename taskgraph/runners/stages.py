"""The one module through which the search calls the other stages.

The search composes stages built elsewhere — datasets, sharing topologies,
loss weightings, pictures, single-task baselines (the grouping stages are taskgraph.pipeline). Every
call into them goes through a small function here, so the runners, the search
space and the report depend on these signatures only.

Example:
    >>> "hard" in topology_names() and "equal" in weighting_names()
    True
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from taskgraph.exceptions import ConfigError

if TYPE_CHECKING:
    from taskgraph.affinity import AffinityMatrix
    from taskgraph.data import MultiTaskData
    from taskgraph.models import TrunkSpec
    from taskgraph.tasks import TaskSet
    from taskgraph.training import TrainConfig
    from taskgraph.weighting import LossWeighting

__all__ = [
    "build_model",
    "check_dataset",
    "check_topology_params",
    "check_weighting_params",
    "draw_graph",
    "draw_heatmap",
    "load_data",
    "make_weighting",
    "single_task_baselines",
    "topology_names",
    "weighting_names",
]


# --- datasets -------------------------------------------------------------------------------

def check_dataset(name: str, options: Mapping[str, Any], *, file: str | None, key: str) -> None:
    """Check a dataset name and its option names without loading the data."""
    from taskgraph.data import DATASETS

    factory = DATASETS.get(name, file=file, key=f"{key}.name")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for opt in options:
        if opt not in valid:
            raise ConfigError(f"dataset {name!r} takes options {', '.join(valid)}; got unknown option {opt!r}",
                              file=file, key=f"{key}.options.{opt}")


def load_data(name: str, options: Mapping[str, Any], tasks: Sequence[str] | None = None, *,
              file: str | None = None, key: str = "dataset") -> MultiTaskData:
    """Load a dataset by name (and keep only ``tasks`` when given)."""
    from taskgraph.data import load_dataset
    from taskgraph.exceptions import TaskSpecError

    data = load_dataset(name, file=file, key=f"{key}.name", **dict(options))
    if tasks:
        try:
            data = data.subset_tasks(list(tasks))
        except TaskSpecError as e:
            raise ConfigError(f"'{key}.tasks' must name tasks of {name!r}: {e}", file=file,
                              key=f"{key}.tasks") from None
    return data


# --- topologies -----------------------------------------------------------------------------

def topology_names() -> list[str]:
    """The sharing topologies a search space may name."""
    from taskgraph.models.topology import TOPOLOGIES

    return sorted(TOPOLOGIES)


def check_topology_params(name: str, params: Sequence[str], *, file: str | None, key: str) -> None:
    """Raise if topology ``name`` takes none of ``params`` (unknown parameter names)."""
    from taskgraph.models.topology import TOPOLOGIES

    _check_params("topology", name, TOPOLOGIES.get(name, file=file, key=key), params, file=file, key=key)


def build_model(topology: str, params: Mapping[str, Any], trunk_spec: TrunkSpec | nn.Module, tasks: TaskSet,
                input_shape: Sequence[int],
                groups: Sequence[Sequence[str]]) -> nn.Module:
    """The model a trial trains: ``topology`` with ``params`` over ``groups`` of ``tasks``.

    A scalar given for a tuple-valued topology field (e.g. one branch depth) becomes a 1-tuple.
    """
    import dataclasses

    from taskgraph.models.topology import TOPOLOGIES, make_topology
    from taskgraph.models.topology import build_model as _build

    cls = TOPOLOGIES.get(topology)
    kw = dict(params)
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name in kw and isinstance(f.default, tuple) and not isinstance(kw[f.name], list | tuple):
                kw[f.name] = (kw[f.name],)
    spec = make_topology(topology, **kw)
    return _build(spec, trunk_spec, tasks, input_shape, grouping=[list(g) for g in groups])


# --- weightings -----------------------------------------------------------------------------

def weighting_names() -> list[str]:
    """The loss weightings a search space may name."""
    from taskgraph.weighting import WEIGHTINGS

    return sorted(WEIGHTINGS)


def check_weighting_params(name: str, params: Sequence[str], *, file: str | None, key: str) -> None:
    """Raise if weighting ``name`` takes none of ``params`` (unknown parameter names)."""
    from taskgraph.weighting import WEIGHTINGS

    _check_params("weighting", name, WEIGHTINGS.get(name, file=file, key=key), params, file=file, key=key)


def _check_params(concept: str, name: str, factory: Any, params: Sequence[str], *, file: str | None,
                  key: str | None) -> None:
    if not params:
        return
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # pragma: no cover
        return
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    valid = [n for n in sig.parameters if n != "self"]
    for p in params:
        if p not in valid:
            raise ConfigError(f"{concept} {name!r} takes parameters {', '.join(valid) or 'none'}; "
                              f"got {p!r}", file=file, key=key)


def make_weighting(name: str, params: Mapping[str, Any]) -> LossWeighting:
    """A loss weighting strategy by name with its hyper-parameters."""
    from taskgraph.weighting import make_weighting as _make

    return _make(name, **dict(params))


# --- affinity and grouping ------------------------------------------------------------------

def draw_heatmap(matrix: AffinityMatrix, path: Path, groups: Sequence[Sequence[str]] | None = None) -> Path:
    """The affinity heatmap PNG (mean with confidence intervals), tasks ordered and framed by ``groups``."""
    matrix.heatmap(path, **({"groups": groups} if groups else {}))
    return path


def draw_graph(matrix: AffinityMatrix, path: Path, groups: Sequence[Sequence[str]] | None = None) -> Path:
    """The task-graph PNG, laid out by ``groups``."""
    from taskgraph.graph import TaskGraph

    TaskGraph.from_affinity(matrix).draw(path, groups=groups)
    return path


# --- baselines ------------------------------------------------------------------------------

def single_task_baselines(data: MultiTaskData, trunk_spec: TrunkSpec, config: TrainConfig, *,
                          cache_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Per-task val/test metrics and losses of one single-task model per task, same budget (cached)."""
    from taskgraph.baselines import single_task_baselines as _baselines

    base = _baselines(data, trunk_spec, config, cache_dir=cache_dir)
    return {"val": base.val.to_dict(), "test": base.test.to_dict()}
