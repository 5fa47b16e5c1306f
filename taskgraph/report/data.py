"""The data of a study report, read once from the storage into frozen values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskgraph.exceptions import StorageError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["ReportData", "TrialRow", "build_report"]


@dataclass(frozen=True)
class TrialRow:
    """One trial as the report shows it."""

    number: int
    state: str
    values: tuple[float, ...] | None
    params: dict[str, Any]
    grouping: str | None
    groups: list[list[str]] | None
    topology: str | None
    weighting: str | None
    delta_m_test: float | None
    test_metrics: dict[str, Any] | None
    fail_reason: str | None
    seconds: float | None

    def value(self, i: int = 0) -> float:
        """Objective value ``i`` of a trial that has values (a COMPLETE one)."""
        if self.values is None:
            raise ValueError(f"trial {self.number} ({self.state}) has no objective values")
        return self.values[i]


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows (no rendering decisions).

    Attributes:
        study_name, storage_url, objective: which study, where (its password masked), optimising what.
        directions: Optuna directions (one per task for ``per_task``).
        task_names: the study's tasks.
        counts: trials per state.
        trials: every trial.
        best: the best trial (single objective) or the Pareto front (multi-objective).
        per_task: one dict per task: metric, single-task, all-in-one and best test metric, Δ% of best.
        groupings: ``{label: groups}`` the search chose from, with ``scores``.
        study_artifacts: ``(filename, path on disk)`` of the study-level artifacts.
        study: the loaded Optuna study (for Optuna's own plots; None when the data was built by hand).
    """

    study_name: str
    storage_url: str
    objective: str
    directions: tuple[str, ...]
    task_names: tuple[str, ...]
    counts: dict[str, int]
    trials: tuple[TrialRow, ...]
    best: tuple[TrialRow, ...]
    per_task: tuple[dict[str, Any], ...]
    groupings: dict[str, list[list[str]]]
    scores: dict[str, float | None]
    study_artifacts: tuple[tuple[str, str], ...]
    config: dict[str, Any]
    study: Any = field(default=None, compare=False, repr=False)
    decision: dict[str, Any] | None = None  #: the prepare stage's grouping decision (user attr grouping_decision)

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1


def _row(t: FrozenTrial, retries: Mapping[int, int] | None = None) -> TrialRow:
    from taskgraph.runners.storage import fail_reason

    ua = t.user_attrs
    dur = t.duration.total_seconds() if t.duration is not None else None
    return TrialRow(number=t.number, state=t.state.name, values=tuple(t.values) if t.values else None,
                    params=dict(t.params), grouping=ua.get("grouping"), groups=ua.get("groups"),
                    topology=ua.get("topology"), weighting=ua.get("weighting"), delta_m_test=ua.get("delta_m_test"),
                    test_metrics=ua.get("test_metrics"), fail_reason=fail_reason(t, retries), seconds=dur)


def build_report(storage_url: str, *, study_name: str | None = None, artifact_dir: str | None = None) -> ReportData:
    """Read a study from its storage into a :class:`ReportData`.

    Raises:
        StorageError: no such study, or several and none chosen.
    """
    import os

    import optuna
    from optuna.artifacts import get_all_artifact_meta

    from taskgraph.runners.storage import mask_url, open_storage, retry_map, state_counts

    storage = open_storage(storage_url, key=None)
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name is None:
        if len(names) != 1:
            raise StorageError(f"--study must name one of the storage's studies ({', '.join(names) or 'none'})")
        study_name = names[0]
    elif study_name not in names:
        raise StorageError(f"--study must name one of the storage's studies ({', '.join(names)}); "
                           f"got {study_name!r}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    ua = study.user_attrs
    cfg = dict(ua.get("config", {}))
    if "storage_url" in cfg:  # a study stored before passwords were masked
        cfg["storage_url"] = mask_url(str(cfg["storage_url"]))
    trials = study.get_trials(deepcopy=False)
    retries = retry_map(trials)
    rows = tuple(_row(t, retries) for t in trials)
    counts = state_counts(trials)
    try:
        best_trials = study.best_trials
    except ValueError:
        best_trials = []
    if len(study.directions) == 1 and best_trials:
        best_trials = [study.best_trial]
    best = tuple(_row(t, retries) for t in best_trials)
    tasks = tuple(ua.get("task_names", ()))
    base = ua.get("baselines", {})
    single = base.get("single_task", {}).get("test", {}).get("metrics", {})
    aio = base.get("all_in_one", {}).get("test", {}).get("metrics", {})
    top = best[0] if best else None
    per_task = []
    info = {d["name"]: d for d in ua.get("task_info", [])}
    for n in tasks:
        hib = info.get(n, {}).get("higher_is_better")
        metric = info.get(n, {}).get("metric", "")
        b = (top.test_metrics or {}).get(n) if top else None
        s = single.get(n)
        delta = None
        if b is not None and s not in (None, 0) and hib is not None and math.isfinite(s):
            delta = (-1.0 if hib else 1.0) * (b - s) / abs(s) * 100.0
        per_task.append({"task": n, "metric": metric, "higher_is_better": hib, "single_task": s,
                         "all_in_one": aio.get(n), "best": b, "delta_pct": delta})
    arts = []
    if artifact_dir:
        for m in get_all_artifact_meta(study, storage=storage):
            path = os.path.join(artifact_dir, m.artifact_id)
            if os.path.isfile(path):
                arts.append((m.filename, path))
    return ReportData(study_name=study_name, storage_url=mask_url(storage_url), objective=cfg.get("objective", "?"),
                      directions=tuple(d.name.lower() for d in study.directions), task_names=tasks,
                      counts={k: v for k, v in counts.items() if v}, trials=rows, best=best,
                      per_task=tuple(per_task), groupings=dict(ua.get("groupings", {})),
                      scores=dict(ua.get("grouping_scores", {})), study_artifacts=tuple(arts), config=cfg,
                      study=study, decision=ua.get("grouping_decision"))
