"""What both runners share: the study configuration they take, opening a study for a run, progress lines,
the run summary.

The runners take the study's typed sections (:class:`StudyConfig`: ``search``, ``budget``,
``storage``, ``resources``, ``trunk``, ...), as :class:`taskgraph.search.StudySpec` holds them.
They are described here as protocols, not imported: ``taskgraph.search`` sits above the runners
(it validates a study file with their samplers, stages and storage helpers), and imports run one way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial
    from rich.console import Console

    from taskgraph.grouping.base import GroupingSolver
    from taskgraph.models import TrunkSpec
    from taskgraph.runners.trial import StudyContext
    from taskgraph.training import TrainConfig

__all__ = ["AffinityConfig", "BudgetConfig", "DatasetConfig", "GroupingParamConfig", "GroupingSolverConfig",
           "Progress", "ResourcesConfig", "RunSummary", "SearchConfig", "SpaceConfig", "StorageConfig",
           "StudyConfig", "StudyRun", "TrialConfigLike", "TrunkConfig", "check_topologies_build", "open_run",
           "space_of", "summarize", "wait_for_prepare"]


class GroupingParamConfig(Protocol):
    """The search space's grouping parameter (a :class:`taskgraph.search.space.Param`): its choices' sources."""

    @property
    def references(self) -> tuple[str, ...]: ...
    @property
    def top_m(self) -> int: ...
    @property
    def k(self) -> int: ...


class TrialConfigLike(Protocol):
    """A trial's resolved configuration (:class:`taskgraph.search.TrialConfig`)."""

    @property
    def grouping(self) -> str: ...
    @property
    def topology(self) -> str: ...
    @property
    def topology_params(self) -> dict[str, Any]: ...
    @property
    def weighting(self) -> str: ...
    @property
    def weighting_params(self) -> dict[str, Any]: ...
    @property
    def train(self) -> dict[str, Any]: ...
    def to_dict(self) -> dict[str, Any]: ...


class SpaceConfig(Protocol):
    """The loaded search space (:class:`taskgraph.search.SearchSpace`): its parameters, file and sampling."""

    @property
    def params(self) -> Sequence[Any]: ...
    @property
    def file(self) -> str | None: ...
    @property
    def grouping(self) -> GroupingParamConfig | None: ...
    def suggest(self, trial: Any, *, tasks: Sequence[str], groupings: Sequence[str]) -> dict[str, Any]: ...
    def resolve(self, params: Mapping[str, Any]) -> TrialConfigLike: ...


class DatasetConfig(Protocol):
    """``[dataset]`` (:class:`taskgraph.search.DatasetSection`)."""

    @property
    def name(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def tasks(self) -> tuple[str, ...] | None: ...


class SearchConfig(Protocol):
    """``[search]`` (:class:`taskgraph.search.SearchSection`)."""

    @property
    def space(self) -> str: ...
    @property
    def objective(self) -> str: ...
    @property
    def sampler(self) -> str: ...
    @property
    def sampler_options(self) -> Mapping[str, Any]: ...
    @property
    def loaded(self) -> SpaceConfig | None: ...


class BudgetConfig(Protocol):
    """``[budget]`` (:class:`taskgraph.search.BudgetSection`)."""

    @property
    def trials(self) -> int: ...
    @property
    def epochs(self) -> int: ...
    @property
    def wall_time_s(self) -> float | None: ...
    @property
    def early_stopping(self) -> str: ...
    @property
    def grace_epochs(self) -> int: ...
    @property
    def reduction_factor(self) -> int: ...


class StorageConfig(Protocol):
    """``[storage]`` (:class:`taskgraph.search.StorageSection`): ``url`` may hold a password, ``shown`` does not."""

    @property
    def url(self) -> str: ...
    @property
    def artifacts(self) -> str: ...
    @property
    def run_dir(self) -> str: ...
    @property
    def shown(self) -> str: ...


class ResourcesConfig(Protocol):
    """``[resources]`` (:class:`taskgraph.search.ResourcesSection`): per trial."""

    @property
    def cpus(self) -> float: ...
    @property
    def gpus(self) -> float: ...
    @property
    def concurrent(self) -> int: ...


class TrunkConfig(Protocol):
    """``[trunk]`` (:class:`taskgraph.search.TrunkSection`)."""

    @property
    def kind(self) -> str: ...
    @property
    def hidden(self) -> tuple[int, ...]: ...


class AffinityConfig(Protocol):
    """The study's ``[affinity]`` table (the prepare stage's policy)."""

    @property
    def estimator(self) -> str: ...
    @property
    def epochs(self) -> int: ...
    @property
    def every(self) -> int: ...
    @property
    def check_seeds(self) -> int: ...
    @property
    def z(self) -> float | None: ...
    @property
    def extra_seeds(self) -> int | None: ...
    def config(self, train: TrainConfig) -> TrainConfig | None: ...


class GroupingSolverConfig(Protocol):
    """The study's ``[grouping]`` table (the prepare stage's solver)."""

    @property
    def solver(self) -> str: ...
    @property
    def time_limit(self) -> float | None: ...
    def make_solver(self, n_tasks: int) -> GroupingSolver: ...


class StudyConfig(Protocol):
    """What the runners read of a validated study (:class:`taskgraph.search.StudySpec`)."""

    @property
    def name(self) -> str: ...
    @property
    def file(self) -> str | None: ...
    @property
    def seed(self) -> int: ...
    @property
    def data(self) -> DatasetConfig: ...
    @property
    def search(self) -> SearchConfig: ...
    @property
    def budget(self) -> BudgetConfig: ...
    @property
    def storage(self) -> StorageConfig: ...
    @property
    def resources(self) -> ResourcesConfig: ...
    @property
    def trunk(self) -> TrunkConfig: ...
    @property
    def affinity(self) -> AffinityConfig: ...
    @property
    def grouping(self) -> GroupingSolverConfig: ...
    @property
    def multi_objective(self) -> bool: ...
    def directions(self, n_tasks: int) -> tuple[str, ...]: ...
    def trunk_spec(self) -> TrunkSpec: ...
    def train_config(self, overrides: Mapping[str, Any] | None = None, *,
                     epochs: int | None = None) -> TrainConfig: ...
    def without_secrets(self) -> StudyConfig: ...
    def fingerprint(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...


def space_of(spec: StudyConfig) -> SpaceConfig:
    """The study's loaded search space (a validated study always holds one)."""
    space = spec.search.loaded
    if space is None:  # pragma: no cover - StudySpec.load always loads it
        raise TypeError(f"study {spec.name!r} holds no loaded search space")
    return space


@dataclass
class StudyRun:
    """A study opened for running: storage, artifact store, study, prepared facts, remaining budget."""

    spec: StudyConfig
    storage: RDBStorage
    store: FileSystemArtifactStore
    study: optuna.Study
    ctx: StudyContext
    remaining: int
    recovered: list[int] = field(default_factory=list)
    sampler_seed: int = 0


def open_run(spec: StudyConfig, *, resume: bool, join: bool = False, pruner: optuna.pruners.BasePruner | None = None,
             log: Callable[[str], None] = print) -> StudyRun:
    """Validate the data, open the storage, create/resume the study and run the prepare stage.

    The data (task names included) is loaded *before* the storage is touched, so
    a study file that fails validation writes nothing.
    """
    import optuna

    from taskgraph.runners.prepare import prepare
    from taskgraph.runners.samplers import make_sampler
    from taskgraph.runners.storage import (
        artifact_store,
        count_finished,
        driver_seed,
        open_storage,
        open_study,
        others_running,
        recover_interrupted,
    )
    from taskgraph.runners.trial import StudyContext, load_study_data

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_study_data(spec)
    check_topologies_build(spec, data)
    # the sampler's options are checked before anything is written
    make_sampler(spec.search.sampler, spec.search.sampler_options, spec.seed, file=spec.file)
    storage = open_storage(spec.storage.url, file=spec.file)
    store = artifact_store(spec.storage.artifacts)
    # creation is atomic: of drivers started together on a new study one creates it, the others join it
    study, created = open_study(spec, storage, n_tasks=len(data.tasks), resume=resume, join=join, pruner=pruner,
                                task_names=list(data.tasks.names))
    n_before = 0 if created else len(study.get_trials(deepcopy=False))
    # a driver of a study that already holds trials, or one of several, draws its own configurations
    nonce = int.from_bytes(os.urandom(4), "little") if join and not created else None
    seed = driver_seed(spec.seed, n_trials=n_before, nonce=nonce)
    study.sampler = make_sampler(spec.search.sampler, spec.search.sampler_options, seed, file=spec.file)
    recovered = recover_interrupted(study, storage, resume=resume) if not created else []
    if recovered:
        log(f"{'resume' if resume else 'join'}: trial(s) {recovered} were left running by a driver that is gone: "
            f"marked FAIL and queued again")
    live = others_running(study) if not created else []
    if live:
        log(f"{'resume' if resume else 'join'}: trial(s) {live} are running on a live driver (or one gone less than "
            f"the heartbeat's grace period ago): left to it")
    if not created:
        study = wait_for_prepare(study, storage, log, join=join)
    prepared = prepare(spec, data, study, store, log=log)
    ctx = StudyContext(spec.without_secrets(), prepared)  # trials never open the storage: no password in them
    remaining = spec.budget.trials - count_finished(study)
    if seed != spec.seed:
        log(f"{'join' if nonce is not None else 'resume'}: the sampler's seed is {seed}, derived from the study's "
            f"seed {spec.seed}, its {n_before} trial(s){' and this driver' if nonce is not None else ''}, so it "
            f"does not replay earlier draws")
    return StudyRun(spec, storage, store, study, ctx, max(0, remaining), recovered, seed)


def check_topologies_build(spec: StudyConfig, data: Any) -> None:
    """Each end of every topology parameter's range (each choice) builds on the study's trunk and data.

    What a topology accepts can depend on the trunk (a branched split at most as deep as the
    trunk has stages), which the search space alone does not know; so each value is built
    here, on all the study's tasks in one group, before the storage is touched.

    Raises:
        ConfigError: naming the search-space file and the parameter's ``low``/``high``/``choices``.
    """
    from taskgraph.exceptions import ConfigError, TaskGraphError
    from taskgraph.runners import stages

    space = space_of(spec)
    topo = next((p for p in space.params if p.name == "topology"), None)
    names = topo.choices if topo is not None else ("hard",)
    groups = [list(data.tasks.names)]
    trunk = spec.trunk_spec()
    for p in space.params:
        head, _, rest = p.target.partition(".")
        if head != "topology" or not rest or p.per_task:
            continue
        allowed = next((a for parent, a in p.when if parent == "topology"), names)
        if p.type == "categorical":
            values = [("choices", v) for v in p.choices]
        else:
            cast = int if p.type == "int" else float
            values = [("low", cast(p.low)), ("high", cast(p.high))]
        for where, v in values:
            for name in allowed:
                try:
                    stages.build_model(name, {rest: v}, trunk, data.tasks, data.input_shape, groups)
                except TaskGraphError as e:
                    msg = str(e).rsplit(" [", 1)[0] if isinstance(e, ConfigError) and e.key else str(e)
                    key = f"params.{p.name}.{where}"
                    raise ConfigError(f"{key!r} must be a value topology {name!r} accepts on the study's trunk "
                                      f"({spec.trunk.kind} {list(spec.trunk.hidden)}); got {v!r}: {msg}",
                                      file=space.file, key=key) from None


def wait_for_prepare(study: optuna.Study, storage: RDBStorage, log: Callable[[str], None], *, join: bool,
                   timeout_s: float = 3600.0) -> optuna.Study:
    """A driver that joins or resumes a study waits for another driver's prepare stage instead of repeating it.

    It waits while that driver's :class:`~taskgraph.runners.storage.PrepareBeat` is fresh. When the
    study is not prepared and nobody beats (the preparing driver died, or none began), this driver
    prepares it: at once on ``--resume``; on ``--join`` after one grace period, which leaves the
    study's first driver time to begin. Returns the study as last read.
    """
    import optuna

    from taskgraph.runners.storage import PREPARING, heartbeat_settings, preparer_alive

    grace = heartbeat_settings()[1]
    t0 = time.monotonic()
    said = False
    while not study.user_attrs.get("prepared"):
        if not preparer_alive(study, grace) and (not join or time.monotonic() - t0 > grace):
            if said or study.user_attrs.get(PREPARING):
                log(f"{'join' if join else 'resume'}: the driver preparing the study is gone (no beat for over "
                    f"{grace} s): preparing it here")
            break
        if time.monotonic() - t0 > timeout_s:
            from taskgraph.exceptions import SearchError

            raise SearchError(f"--join: study {study.study_name!r} was not prepared by its first driver within "
                              f"{timeout_s:.0f} s; start it without --join")
        if not said:
            log(f"{'join' if join else 'resume'}: waiting for the first driver to finish the prepare stage ...")
            said = True
        time.sleep(min(2.0, grace / 2))
        study = optuna.load_study(study_name=study.study_name, storage=storage)
    return study


class Progress:
    """One line per finished trial: how many are done, its outcome, the best so far."""

    def __init__(self, spec: StudyConfig, done: int, *, console: Console | None = None):
        from rich.console import Console

        self.spec = spec
        self.done = done
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.t0 = time.perf_counter()

    def trial_finished(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        from optuna.trial import TrialState

        self.done += 1
        name = self.spec.search.objective
        if frozen.state == TrialState.COMPLETE:
            vals = ", ".join(f"{v:.4f}" for v in frozen.values)
            what = f"[green]COMPLETE[/] {name}={vals}"
        elif frozen.state == TrialState.PRUNED:
            what = f"[yellow]PRUNED[/] at epoch {frozen.last_step}"
        else:
            from taskgraph.runners.storage import fail_reason

            what = f"[red]FAIL[/] {fail_reason(frozen) or ''}"
        best = ""
        if len(study.directions) == 1:
            try:
                b = study.best_trial
                best = f" | best so far: trial {b.number} {name}={b.value:.4f}"
            except ValueError:
                best = " | no complete trial yet"
        else:
            best = f" | Pareto front: {len(study.best_trials)} trial(s)"
        ua = frozen.user_attrs
        label = f"{ua.get('grouping', '?')}, {ua.get('topology', '?')}/{ua.get('weighting', '?')}"
        self.console.print(f"[{self.done}/{self.spec.budget.trials}] trial {frozen.number} {what} ({label})"
                           f"{best}  [{time.perf_counter() - self.t0:.0f} s]")


@dataclass(frozen=True)
class RunSummary:
    """What a run left in the storage."""

    study_name: str
    storage_url: str  # password masked
    artifacts_dir: str
    objective: str
    counts: dict[str, int]
    best: list[dict[str, Any]]
    seconds: float
    errors: list[str] = field(default_factory=list)
    metric_names: list[str] | None = None  # the study's objective names (one per value), when set

    def values_text(self, values: Sequence[float]) -> str:
        """``objective = v`` for one value; ``name=v, ...`` (the study's metric names) for several."""
        if len(values) == 1:
            return f"{self.objective} = {values[0]:.4f}"
        names = self.metric_names if self.metric_names and len(self.metric_names) == len(values) else \
            [f"value{i}" for i in range(len(values))]
        return ", ".join(f"{n}={v:.4f}" for n, v in zip(names, values, strict=True))


def summarize(run: StudyRun, seconds: float, errors: list[str] | None = None) -> RunSummary:
    from taskgraph.runners.storage import state_counts

    study = run.study
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(trials)
    best: list[dict[str, Any]] = []
    try:
        bests = study.best_trials
    except ValueError:
        bests = []
    for b in bests[:10]:
        best.append({"number": b.number, "values": b.values, "params": b.params,
                     "groups": b.user_attrs.get("groups"), "delta_m_test": b.user_attrs.get("delta_m_test")})
    if len(study.directions) == 1 and bests:
        best = best[:1]
    spec = run.spec
    return RunSummary(study.study_name, spec.storage.shown, spec.storage.artifacts, spec.search.objective, counts,
                      best, seconds, list(errors or []), study.metric_names)
