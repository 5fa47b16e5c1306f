"""Auto-grouping in one call: the pipeline's stages on the user's model and loaders.

:func:`auto_group` measures TAG affinity (Fifty et al., NeurIPS 2021) on the all-in-one
network, ranks partitions by the serving score (Standley et al., ICML 2020), trains
each proposal's group networks and the all-in-one network over paired seeds, and
leaves all-in-one only when the paired validation gain exceeds its noise
(:func:`taskgraph.pipeline.decide`), looking again with two more seeds when only the
seeds' bar held a gain back (:func:`taskgraph.pipeline.settle`). Affinity alone can mislead (Azorin et al. 2023,
"It's a Match!"), which is why the checks decide; the result says how sure it is.

Example (a few seconds, so skipped in doctests):
    >>> import taskgraph
    >>> from taskgraph.models import mlp
    >>> data = taskgraph.planted_clusters(n_tasks=4, n_clusters=2, n_samples=1200, seed=0)
    >>> tr, va, te = data.loaders(128)
    >>> result = taskgraph.auto_group(lambda: mlp(32, (64, 8)), data.tasks, tr, va, test_loader=te,
    ...                               input_shape=data.input_shape, quiet=True)  # doctest: +SKIP
    >>> result.grouping.groups  # doctest: +SKIP
    (('t0', 't1'), ('t2', 't3'))
    >>> print(result.decision.statement())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from taskgraph.data.base import MultiTaskData, unpack_batch
from taskgraph.exceptions import GroupingError
from taskgraph.graph import TaskGraph
from taskgraph.grouping.base import SOLVERS
from taskgraph.grouping.hierarchy import hierarchy
from taskgraph.grouping.objective import Objective
from taskgraph.grouping.value import Grouping
from taskgraph.models import MultiTaskModel
from taskgraph.pipeline.stages import (
    DEFAULT_CHECK_CONFIG,
    DEFAULT_POLICY,
    CheckedCandidate,
    Decision,
    GroupingPolicy,
    Groups,
    Runs,
    candidates,
    check,
    measure,
    propose,
    settle,
    unchecked,
)
from taskgraph.tasks import TaskSet
from taskgraph.training import TrainConfig

__all__ = ["AutoGroupResult", "Candidate", "auto_group"]


@dataclass(frozen=True)
class Candidate:
    """A checked grouping and what its paired check runs measured.

    Attributes:
        grouping: the grouping (the all-in-one reference has one group of every task).
        val_losses: each task's validation loss (mean over the check seeds), from its group's network.
        test_losses: the same on the test loader (None without one).
        affinity_rank: 1-based rank by serving score (0: the all-in-one reference; -1: another
            reference, such as single-task).
        val_totals: per check seed, the sum of the task validation losses.
        test_totals: per check seed, the sum of the task test losses (None without a test loader).
        source: where the candidate came from (``"affinity #1"``, ``"single-task"``, ``"all-in-one"``).
    """

    grouping: Grouping
    val_losses: Mapping[str, float]
    test_losses: Mapping[str, float] | None
    affinity_rank: int
    val_totals: tuple[float, ...] = ()
    test_totals: tuple[float, ...] | None = None
    source: str = ""

    @property
    def val_loss(self) -> float:
        """Mean validation loss over tasks."""
        return float(np.mean(list(self.val_losses.values())))

    @property
    def test_loss(self) -> float | None:
        return None if self.test_losses is None else float(np.mean(list(self.test_losses.values())))

    def to_dict(self) -> dict[str, Any]:
        return {"grouping": self.grouping.to_dict(), "val_losses": dict(self.val_losses),
                "test_losses": None if self.test_losses is None else dict(self.test_losses),
                "val_loss": self.val_loss, "test_loss": self.test_loss, "affinity_rank": self.affinity_rank,
                "val_totals": list(self.val_totals), "source": self.source,
                "test_totals": None if self.test_totals is None else list(self.test_totals)}


@dataclass(frozen=True, eq=False)
class AutoGroupResult:
    """What :func:`auto_group` found, with its evidence.

    Attributes:
        grouping: the chosen grouping.
        decision: the :class:`~taskgraph.pipeline.Decision`: the paired difference between the
            choice and all-in-one with its interval, and why.
        candidates: every checked candidate, best validation loss first.
        matrix: the measured :class:`~taskgraph.affinity.AffinityMatrix` (mean, stderr, CIs).
        graph: the :class:`~taskgraph.graph.TaskGraph`.
        hierarchy: the agglomerative task tree (:class:`~taskgraph.grouping.hierarchy.TaskHierarchy`).
        pictures: ``{"affinity": png, "grouping": png, "hierarchy": png}`` paths.
        seconds: ``{"affinity": s, "grouping": s, "checks": s}`` wall times.
        steps: optimizer steps trained (affinity run and check networks).
    """

    grouping: Grouping
    decision: Decision
    candidates: tuple[Candidate, ...]
    matrix: Any
    graph: Any
    hierarchy: Any
    pictures: Mapping[str, Path] = field(default_factory=dict)
    seconds: Mapping[str, float] = field(default_factory=dict)
    steps: int = 0

    @property
    def k(self) -> int:
        """How many groups the chosen grouping has."""
        return self.grouping.n_groups

    @property
    def all_in_one(self) -> Candidate | None:
        return next((c for c in self.candidates if c.affinity_rank == 0), None)

    @property
    def alternatives(self) -> tuple[Candidate, ...]:
        """The checked candidates other than the chosen one."""
        return tuple(c for c in self.candidates if c.grouping != self.grouping)

    def summary(self) -> str:
        """A plain-text table of the candidates and how sure the choice is (lower losses are better)."""
        lines = ["candidate    seeds val loss   test loss  score     groups   (mean task loss; lower is better)"]
        for c in self.candidates:
            test = "" if c.test_loss is None else f"{c.test_loss:.4f}"
            tag = c.source or ("all-in-one" if c.affinity_rank == 0 else f"#{c.affinity_rank}")
            lines.append(f"{tag:<12} {len(c.val_totals):<5} {c.val_loss:<10.4f} {test:<10} {c.grouping.score:<9.4g} "
                         + " | ".join("{" + ", ".join(g) + "}" for g in c.grouping.groups))
        lines.append(self.decision.statement())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"grouping": self.grouping.to_dict(), "k": self.k, "decision": self.decision.to_dict(),
                "candidates": [c.to_dict() for c in self.candidates], "matrix": self.matrix.to_dict(),
                "pictures": {k: str(v) for k, v in self.pictures.items()}, "seconds": dict(self.seconds),
                "steps": self.steps}


def _first_input_shape(loader: Iterable[Any]) -> tuple[int, ...]:
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise GroupingError("train_loader: a loader must yield at least one batch, got an empty one") from None
    x, _, _ = unpack_batch(batch)
    return tuple(x.shape[1:])


def _builder(model: nn.Module | Callable[[], nn.Module], tasks: TaskSet, input_shape: Sequence[int] | None,
             data: MultiTaskData | None, train_loader: Iterable[Any]) -> Callable[[TaskSet], nn.Module]:
    if isinstance(model, MultiTaskModel):
        if tuple(model.task_names) != tuple(tasks.names):
            raise GroupingError(f"auto_group: the model's tasks {list(model.task_names)} must be the task set's "
                                f"{list(tasks.names)}")
        template = copy.deepcopy(model)

        def build(sub: TaskSet) -> nn.Module:
            return MultiTaskModel(copy.deepcopy(template.trunk), sub,
                                  heads={t: copy.deepcopy(template.heads[t]) for t in sub.names})

        return build
    if callable(model):
        shape = tuple(input_shape) if input_shape is not None else (
            data.input_shape if data is not None else _first_input_shape(train_loader))
        return lambda sub: MultiTaskModel(model(), sub, input_shape=shape)
    raise GroupingError(f"auto_group: 'model' must be a MultiTaskModel or a trunk factory, got {type(model).__name__}")


def auto_group(
    model: nn.Module | Callable[[], nn.Module],
    tasks: TaskSet,
    train_loader: Iterable[Any] | None,
    val_loader: Iterable[Any] | None,
    *,
    test_loader: Iterable[Any] | None = None,
    data: MultiTaskData | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    policy: GroupingPolicy | None = None,
    budget: float | None = None,
    k: int | None = None,
    variant: str = "partition",
    singletons: str = "allow",
    top_m: int | None = None,
    estimator: str | None = None,
    every: int | None = None,
    affinity_config: TrainConfig | None = None,
    check_config: TrainConfig | None = None,
    check_seeds: int | None = None,
    solver: str = "auto",
    out_dir: str | Path | None = None,
    quiet: bool = False,
) -> AutoGroupResult:
    """Measure affinity, propose partitions, check them over paired seeds, decide with evidence.

    Args:
        model: a :class:`~taskgraph.models.MultiTaskModel` (trunk + one head per task; it is
            copied, never trained in place) or a trunk factory ``() -> nn.Module``.
        tasks: the tasks (the matrix and groupings use their order).
        train_loader: yields ``(x, {task: y}[, {task: mask}])`` with every task's labels. A
            loader's own batch size is the one every run uses (None: made from ``data``).
        val_loader: the same for validation, which decides (None: made from ``data``).
        test_loader: optional; candidates' test losses are then reported too (never used to decide).
        data: a :class:`~taskgraph.data.MultiTaskData` whose loaders replace missing ones.
        input_shape: per-sample input shape for a trunk factory (default: from data or a batch).
        seed: the first of the paired check seeds (and the affinity run's seed).
        policy: the whole :class:`~taskgraph.pipeline.GroupingPolicy` (default
            :data:`~taskgraph.pipeline.DEFAULT_POLICY`); the arguments below override its fields.
        budget: Standley's network budget (see :class:`~taskgraph.grouping.objective.Objective`).
        k: the most groups of a proposal (None: chosen from the affinity).
        variant: ``"partition"`` (each task in one network; the only variant checks can decide).
        singletons: ``"allow"`` (a task alone scores 0, no transfer) or ``"forbid"`` (TAG).
        top_m: how many proposals to check.
        estimator: the affinity estimator (default: the policy's), or ``"pairwise"``: every single-task
            and pair network trained once and the partitions ranked by their predicted validation total
            (:func:`~taskgraph.pipeline.pairwise_transfer`; n(n + 1)/2 networks, for a handful of tasks).
        every: the affinity measuring period in steps (default: the policy's).
        affinity_config: the affinity run's training (default: ``check_config`` for the policy's
            ``affinity_epochs``: the networks' own optimizer, so the lookahead is their update).
        check_config: every checked network's training (default
            :data:`~taskgraph.pipeline.DEFAULT_CHECK_CONFIG`: Adam, early stopping on validation).
        check_seeds: paired seeds per checked network (>= 2 for an interval; 0: no checks).
        solver: grouping solver (``"auto"``: exact up to 20 tasks, scalable beyond).
        out_dir: where the PNGs go (default: a new temporary directory).
        quiet: no progress output.

    Returns:
        An :class:`AutoGroupResult`; ``result.decision.statement()`` says how sure the choice is.

    Raises:
        GroupingError: bad grouping parameters or input, checked before any training.
        AffinityError: measuring or reading the affinity fails (raised by the stages).
        ModelError: a group's network cannot be built (raised by the stages).
    """
    from rich.console import Console

    from taskgraph.affinity.plots import heatmap  # on use: drawing pulls in matplotlib

    console = Console(stderr=True, quiet=quiet)
    if variant != "partition":
        raise GroupingError(f"auto_group: 'variant' must be 'partition' (check runs train each task in one "
                            f"network), got {variant!r}")
    Objective(variant=variant, singletons=singletons, budget=budget)  # validate early
    if top_m is not None and (not isinstance(top_m, int) or top_m < 1):
        raise GroupingError(f"auto_group: top_m must be an int >= 1, got {top_m!r}")
    policy = policy or DEFAULT_POLICY
    changes: dict[str, Any] = {"seed": seed}
    for key, value in (("top_m", top_m), ("estimator", estimator), ("every", every), ("check_seeds", check_seeds),
                       ("affinity_config", affinity_config)):
        if value is not None:
            changes[key] = value
    if k is not None:
        changes["k"] = k
    policy = policy.replace(**changes)
    config = check_config or policy.config or DEFAULT_CHECK_CONFIG
    if data is not None and (train_loader is None or val_loader is None or test_loader is None):
        d_tr, d_va, d_te = data.loaders(config.batch_size, seed=seed)
        train_loader = train_loader or d_tr
        val_loader = val_loader or d_va
        test_loader = test_loader or d_te
    if train_loader is None or val_loader is None:
        raise GroupingError("auto_group: train_loader and val_loader are required (or give data=)")
    if k is not None and not (isinstance(k, int) and 1 <= k <= len(tasks)):
        raise GroupingError(f"auto_group: 1 <= k <= {len(tasks)} (the number of tasks) must hold, got k={k!r}")
    if solver != "auto":
        SOLVERS.get(solver, key="solver")
    runs = Runs(_builder(model, tasks, input_shape, data, train_loader), tasks, train_loader, val_loader,
                test_loader, config)
    runs.validate()
    loader_bs = getattr(getattr(train_loader, "batch_sampler", None), "batch_size", None) or getattr(
        train_loader, "batch_size", None)
    if loader_bs is not None and loader_bs != config.batch_size:
        console.log(f"note: the train loader's batch size {loader_bs} is the one every run uses "
                    f"(the config's batch_size {config.batch_size} applies only to loaders made from data=)")
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="taskgraph-auto-"))
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    console.log(f"[bold]1/3[/] measuring {policy.estimator} affinity between {len(tasks)} tasks")
    t0 = time.perf_counter()
    matrix, steps = measure(runs, policy, progress=not quiet)
    seconds["affinity"] = time.perf_counter() - t0
    graph = TaskGraph.from_affinity(matrix)

    console.log(f"[bold]2/3[/] ranking partitions (k={'auto' if policy.k is None else policy.k}, top {policy.top_m})")
    t0 = time.perf_counter()
    ranked = propose(matrix, policy, singletons=singletons, budget=budget, solver=solver)
    tree = hierarchy(matrix)
    seconds["grouping"] = time.perf_counter() - t0
    for i, g in enumerate(ranked, 1):
        console.log(f"  #{i} score {g.score:.4g}: {g}")

    t0 = time.perf_counter()
    by_key = {g.key(): (g, i) for i, g in enumerate(ranked, 1)}
    objective = Objective(variant="partition", singletons=singletons)
    if policy.check_seeds == 0:
        checked: list[CheckedCandidate] = []
        decision = unchecked(ranked[0].groups)
    else:
        console.log(f"[bold]3/3[/] checking {len(ranked)} proposals{', single-task' * bool(policy.references)} "
                    f"and all-in-one over {policy.check_seeds} paired seeds")
        checked = check(runs, candidates(ranked, policy, tasks.names), policy, progress=not quiet,
                        log=console.log)
        decision, looked = settle(runs, checked, policy, progress=not quiet, log=console.log)
        checked = list({c.groups: c for c in looked}.values())  # a second look's candidates replace their first
    seconds["checks"] = time.perf_counter() - t0

    def grouping_of(groups: Groups) -> tuple[Grouping, int]:
        g = Grouping.from_groups(matrix, [list(x) for x in groups], objective=objective,
                                 solver="all-in-one" if len(groups) == 1 else "given")
        return by_key.get(g.key(), (g, 0 if len(groups) == 1 else -1))

    checked_rows = []
    for c in sorted(checked, key=lambda c: c.val_total):
        g, rank = grouping_of(c.groups)
        checked_rows.append(Candidate(g, c.val_losses, c.test_losses, rank, c.val_totals, c.test_totals, c.source))
    chosen = grouping_of(decision.groups)[0]
    pictures = {"affinity": Path(heatmap(matrix, out / "affinity.png", groups=chosen.groups)),
                "grouping": out / "grouping.png", "hierarchy": out / "hierarchy.png"}
    chosen.plot(matrix, pictures["grouping"])
    tree.plot(pictures["hierarchy"])
    console.log(f"[bold green]chosen[/]: {chosen}  (pictures in {out})")
    console.log(decision.statement())
    return AutoGroupResult(chosen, decision, tuple(checked_rows), matrix, graph, tree, pictures, seconds,
                           steps + runs.steps)
