"""Auto-grouping in one call: measure affinity, rank groupings, confirm them with short training runs.

:func:`auto_group` trains the user's model with TAG affinity tracking (Fifty et
al., NeurIPS 2021), builds the task graph, ranks the top groupings by the
serving score (Standley et al., ICML 2020), then trains each candidate — one
hard-shared network per group, plus the all-in-one model as a reference —
for a short run and keeps the one with the lowest validation loss. Affinity
alone can mislead (Azorin et al. 2023, "It's a Match! — A Benchmark of
Task Affinity Scores for Joint Learning"), which is why the checks decide.

Example (a few seconds, so skipped in doctests):
    >>> import taskgraph
    >>> from taskgraph.models import mlp
    >>> data = taskgraph.planted_clusters(n_tasks=4, n_clusters=2, n_samples=1200, seed=0)
    >>> tr, va, te = data.loaders(128)
    >>> result = taskgraph.auto_group(lambda: mlp(32, (64, 8)), data.tasks, tr, va, test_loader=te,
    ...                               input_shape=data.input_shape, quiet=True)  # doctest: +SKIP
    >>> result.grouping.groups  # doctest: +SKIP
    (('t0', 't1'), ('t2', 't3'))
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from taskgraph.exceptions import GroupingError
from taskgraph.grouping.api import group_tasks
from taskgraph.grouping.objective import Objective
from taskgraph.grouping.value import Grouping
from taskgraph.tasks import TaskSet

__all__ = ["DEFAULT_AFFINITY_CONFIG", "DEFAULT_CHECK_CONFIG", "AutoGroupResult", "Candidate", "auto_group",
           "check_grouping"]


def _config(**kw):
    from taskgraph.training import TrainConfig

    return TrainConfig(**kw)


#: the affinity run: plain SGD makes TAG's lookahead the real update and its step measurable
DEFAULT_AFFINITY_CONFIG = _config(epochs=3, optimizer="sgd", lr=0.05, momentum=0.0, batch_size=128, seed=0)
#: the short check runs of the candidates
DEFAULT_CHECK_CONFIG = _config(epochs=10, lr=3e-3, batch_size=128, seed=0)


@dataclass(frozen=True)
class Candidate:
    """A grouping and what its short training run measured.

    Attributes:
        grouping: the grouping (the all-in-one reference has one group of every task).
        val_losses: each task's validation loss, from the network of its serving group.
        test_losses: the same on the test loader (None without one).
        affinity_rank: 1-based rank by serving score (0: the all-in-one reference added for comparison).
        seconds: the wall time of the check run.
    """

    grouping: Grouping
    val_losses: Mapping[str, float]
    test_losses: Mapping[str, float] | None
    affinity_rank: int
    seconds: float

    @property
    def val_loss(self) -> float:
        """Mean validation loss over tasks."""
        return float(np.mean(list(self.val_losses.values())))

    @property
    def test_loss(self) -> float | None:
        return None if self.test_losses is None else float(np.mean(list(self.test_losses.values())))

    def to_dict(self) -> dict:
        return {"grouping": self.grouping.to_dict(), "val_losses": dict(self.val_losses),
                "test_losses": None if self.test_losses is None else dict(self.test_losses),
                "val_loss": self.val_loss, "test_loss": self.test_loss, "affinity_rank": self.affinity_rank,
                "seconds": self.seconds}


@dataclass(frozen=True, eq=False)
class AutoGroupResult:
    """What :func:`auto_group` found, with its evidence.

    Attributes:
        grouping: the chosen grouping (lowest validation loss among the checked candidates).
        candidates: every checked candidate, best validation loss first.
        matrix: the measured :class:`~taskgraph.affinity.AffinityMatrix` (mean, stderr, CIs).
        graph: the :class:`~taskgraph.graph.TaskGraph`.
        hierarchy: the agglomerative task tree (:class:`~taskgraph.grouping.hierarchy.TaskHierarchy`).
        pictures: ``{"affinity": png, "grouping": png, "hierarchy": png}`` paths.
        seconds: ``{"affinity": s, "grouping": s, "checks": s}`` wall times.
    """

    grouping: Grouping
    candidates: tuple[Candidate, ...]
    matrix: Any
    graph: Any
    hierarchy: Any
    pictures: Mapping[str, Path] = field(default_factory=dict)
    seconds: Mapping[str, float] = field(default_factory=dict)

    @property
    def all_in_one(self) -> Candidate | None:
        return next((c for c in self.candidates if c.affinity_rank == 0), None)

    @property
    def alternatives(self) -> tuple[Candidate, ...]:
        """The checked candidates other than the chosen one."""
        return tuple(c for c in self.candidates if c.grouping != self.grouping)

    def summary(self) -> str:
        """A plain-text table of the candidates."""
        lines = ["rank  val loss   test loss  score     groups"]
        for c in self.candidates:
            test = "" if c.test_loss is None else f"{c.test_loss:.4f}"
            tag = "all-in-one" if c.affinity_rank == 0 else f"#{c.affinity_rank}"
            lines.append(f"{tag:<5} {c.val_loss:<10.4f} {test:<10} {c.grouping.score:<9.4g} "
                         + " | ".join("{" + ", ".join(g) + "}" for g in c.grouping.groups))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"grouping": self.grouping.to_dict(), "candidates": [c.to_dict() for c in self.candidates],
                "matrix": self.matrix.to_dict(), "pictures": {k: str(v) for k, v in self.pictures.items()},
                "seconds": dict(self.seconds)}


def _first_input_shape(loader) -> tuple[int, ...]:
    from taskgraph.data.base import unpack_batch

    x, _, _ = unpack_batch(next(iter(loader)))
    return tuple(x.shape[1:])


def check_grouping(grouping: Grouping, build: Callable[[TaskSet], nn.Module], tasks: TaskSet, train_loader,
                   val_loader, *, test_loader=None, config=None, progress: bool = False) -> tuple[dict, dict | None]:
    """Train one network per group and read each task's losses from its serving group's network.

    Args:
        grouping: the grouping to check.
        build: makes a fresh multi-task model for a sub-task-set (same seed for every group).
        tasks: all tasks; the loaders carry labels for all of them (extra labels are ignored).
        config: the short run's :class:`~taskgraph.training.TrainConfig`.

    Returns:
        ``(val_losses, test_losses)`` per task (test None without a test loader).
    """
    from taskgraph.training import TrainConfig, seed_everything, train

    config = config or TrainConfig(epochs=5)
    val: dict[str, float] = {}
    test: dict[str, float] | None = {} if test_loader is not None else None
    for gi, group in enumerate(grouping.groups):
        served = [t for t in group if grouping.serving_group(t) == group]
        if not served:
            continue
        sub = tasks.subset(list(group))
        seed_everything(config.seed)
        model = build(sub)
        res = train(model, sub, train_loader, config=config, val_loader=val_loader, test_loader=test_loader,
                    progress=progress, description=f"check group {gi + 1}/{grouping.n_groups}")
        for t in served:
            val[t] = res.val.losses[t]
            if test is not None:
                test[t] = res.test.losses[t]
    order = list(grouping.names)
    return {t: val[t] for t in order}, None if test is None else {t: test[t] for t in order}


def auto_group(
    model: nn.Module | Callable[[], nn.Module],
    tasks: TaskSet,
    train_loader,
    val_loader,
    *,
    test_loader=None,
    data=None,
    input_shape=None,
    budget: float | None = None,
    k: int | None = None,
    variant: str = "partition",
    singletons: str = "allow",
    top_m: int = 3,
    estimator: str = "exact",
    every: int | None = 2,
    affinity_config=None,
    check_config=None,
    include_all_in_one: bool = True,
    solver: str = "auto",
    out_dir: str | Path | None = None,
    quiet: bool = False,
) -> AutoGroupResult:
    """Measure affinity, rank groupings, confirm the top ones with short training runs.

    Args:
        model: a :class:`~taskgraph.models.MultiTaskModel` (trunk + one head per task; it is
            copied, never trained in place) or a trunk factory ``() -> nn.Module``.
        tasks: the tasks (the matrix and groupings use their order).
        train_loader, val_loader: yield ``(x, {task: y}[, {task: mask}])`` with every task's labels.
        test_loader: optional; candidates' test losses are then reported too.
        data: a :class:`~taskgraph.data.MultiTaskData` whose loaders replace missing ones.
        input_shape: per-sample input shape for a trunk factory (default: from data or a batch).
        budget: Standley's network budget: a group network costs 1, a lone-task network 1
            (see :class:`~taskgraph.grouping.objective.Objective`); None: no budget.
        k: the most groups (None: :func:`~taskgraph.grouping.api.choose_k`).
        variant: ``"partition"`` (default: each check network trains disjoint tasks) or ``"overlap"``.
        singletons: ``"allow"`` (a task alone scores 0, no transfer) or ``"forbid"`` (TAG).
        top_m: how many ranked groupings to check by training.
        estimator, every: the affinity estimator and measuring period (steps).
        affinity_config: :class:`~taskgraph.training.TrainConfig` of the affinity run (default
            :data:`DEFAULT_AFFINITY_CONFIG`: 3 epochs of plain SGD, lr 0.05, so the lookahead step
            is large enough to measure).
        check_config: the check runs' config (default :data:`DEFAULT_CHECK_CONFIG`: 10 epochs of Adam, lr 3e-3).
        include_all_in_one: also check the one-network-for-all reference.
        solver: grouping solver (``"auto"``: exact up to 20 tasks, scalable beyond).
        out_dir: where the PNGs go (default: a new temporary directory).
        quiet: no progress output.

    Returns:
        An :class:`AutoGroupResult`.

    Raises:
        GroupingError: bad grouping parameters; AffinityError / ModelError from the stages.
    """
    from rich.console import Console

    from taskgraph.affinity import measure_affinity
    from taskgraph.affinity.plots import heatmap
    from taskgraph.graph import TaskGraph
    from taskgraph.grouping.hierarchy import hierarchy
    from taskgraph.models import MultiTaskModel
    from taskgraph.training import seed_everything

    console = Console(stderr=True, quiet=quiet)
    if data is not None and (train_loader is None or val_loader is None or test_loader is None):
        cfg = affinity_config or DEFAULT_AFFINITY_CONFIG
        d_tr, d_va, d_te = data.loaders(cfg.batch_size, seed=cfg.seed)
        train_loader = train_loader or d_tr
        val_loader = val_loader or d_va
        test_loader = test_loader or d_te
    if train_loader is None or val_loader is None:
        raise GroupingError("auto_group: train_loader and val_loader are required (or give data=)")
    if not isinstance(top_m, int) or top_m < 1:
        raise GroupingError(f"auto_group: top_m must be an int >= 1, got {top_m!r}")
    Objective(variant=variant, singletons=singletons, budget=budget)  # validate early
    affinity_config = affinity_config or DEFAULT_AFFINITY_CONFIG
    check_config = check_config or DEFAULT_CHECK_CONFIG

    if isinstance(model, MultiTaskModel):
        if tuple(model.task_names) != tuple(tasks.names):
            raise GroupingError(f"auto_group: the model's tasks {list(model.task_names)} must be the task set's "
                                f"{list(tasks.names)}")
        template = copy.deepcopy(model)

        def build(sub: TaskSet) -> nn.Module:
            return MultiTaskModel(copy.deepcopy(template.trunk), sub,
                                  heads={t: copy.deepcopy(template.heads[t]) for t in sub.names})

        seed_everything(affinity_config.seed)
        probe_model = copy.deepcopy(template)
    elif callable(model):
        shape = tuple(input_shape) if input_shape is not None else (
            data.input_shape if data is not None else _first_input_shape(train_loader))

        def build(sub: TaskSet) -> nn.Module:
            return MultiTaskModel(model(), sub, input_shape=shape)

        seed_everything(affinity_config.seed)
        probe_model = build(tasks)
    else:
        raise GroupingError(f"auto_group: 'model' must be a MultiTaskModel or a trunk factory, got "
                            f"{type(model).__name__}")

    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="taskgraph-auto-"))
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    console.log(f"[bold]1/3[/] measuring {estimator} affinity between {len(tasks)} tasks")
    t0 = time.perf_counter()
    matrix = measure_affinity(probe_model, tasks, train_loader, estimator=estimator, every=every,
                              config=affinity_config, progress=not quiet)
    seconds["affinity"] = time.perf_counter() - t0
    graph = TaskGraph.from_affinity(matrix)

    console.log(f"[bold]2/3[/] ranking groupings ({variant}, k={'auto' if k is None else k}, top {top_m})")
    t0 = time.perf_counter()
    ranked = group_tasks(matrix, k=k, variant=variant, singletons=singletons, budget=budget, top_m=top_m,
                         solver=solver)
    tree = hierarchy(matrix)
    seconds["grouping"] = time.perf_counter() - t0
    for i, g in enumerate(ranked, 1):
        console.log(f"  #{i} score {g.score:.4g}: {g}")

    console.log(f"[bold]3/3[/] checking {len(ranked) + include_all_in_one} candidates with short training runs")
    t0 = time.perf_counter()
    todo: list[tuple[Grouping, int]] = [(g, i) for i, g in enumerate(ranked, 1)]
    if include_all_in_one:
        one = Grouping.from_groups(matrix, [list(tasks.names)], objective=Objective(variant=variant),
                                   solver="all-in-one")
        if all(g.key() != one.key() for g, _ in todo):
            todo.append((one, 0))
    candidates = []
    for g, rank in todo:
        t1 = time.perf_counter()
        val, test = check_grouping(g, build, tasks, train_loader, val_loader, test_loader=test_loader,
                                   config=check_config, progress=not quiet)
        c = Candidate(g, val, test, rank, time.perf_counter() - t1)
        console.log(f"  {'all-in-one' if rank == 0 else f'#{rank}'}: val loss {c.val_loss:.4f}"
                    + ("" if c.test_loss is None else f", test loss {c.test_loss:.4f}"))
        candidates.append(c)
    seconds["checks"] = time.perf_counter() - t0
    candidates.sort(key=lambda c: c.val_loss)
    chosen = candidates[0].grouping

    pictures = {
        "affinity": Path(heatmap(matrix, out / "affinity.png")),
        "grouping": out / "grouping.png",
        "hierarchy": out / "hierarchy.png",
    }
    chosen.plot(matrix, pictures["grouping"])
    tree.plot(pictures["hierarchy"])
    console.log(f"[bold green]chosen[/]: {chosen}  (pictures in {out})")
    return AutoGroupResult(chosen, tuple(candidates), matrix, graph, tree, pictures, seconds)
