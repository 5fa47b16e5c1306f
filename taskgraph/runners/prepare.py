"""The study-level prepare stage: run once per study, before any trial.

It trains the all-in-one model while measuring inter-task affinity, ranks
groupings from the affinity (the grouping stage), trains single-task
baselines with the same budget (for Δm%), and stores all of it in the study:
user attrs ``prepared``, ``groupings``, ``baselines``, ``affinity``, and the
artifacts ``affinity_heatmap.png``, ``task_graph.png``, ``groupings.json``.
A resumed study reads them back instead of measuring again.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    from taskgraph.data import MultiTaskData
    from taskgraph.pipeline import GroupingPolicy
    from taskgraph.runners.common import StudyConfig

__all__ = ["Prepared", "grouping_label", "prepare", "study_policy"]


def grouping_label(rank: int, groups: Iterable[Iterable[str]]) -> str:
    """A grouping's categorical label: ``top1:t0+t1|t2``."""
    return f"top{rank}:" + "|".join("+".join(g) for g in groups)


@dataclass(frozen=True)
class Prepared:
    """The study-level facts trials need (plain data, picklable for Ray).

    Attributes:
        task_names: the study's tasks, in order.
        groupings: ``{label: [[task, ...], ...]}`` — references first, then ranked proposals.
        scores: the grouping stage's score of each proposed label (None for references).
        baselines: ``{"single_task": {"val": ..., "test": ...}, "all_in_one": {...}}`` per-task
            ``losses``/``metrics`` dicts.
        affinity: the affinity matrix as a dict (None when not measured).
        seconds: wall time of the stage.
    """

    task_names: tuple[str, ...]
    groupings: dict[str, list[list[str]]]
    scores: dict[str, float | None]
    baselines: dict[str, Any]
    affinity: dict[str, Any] | None
    seconds: float

    def labels(self, references: Iterable[str], top_m: int) -> list[str]:
        """The grouping parameter's choices: the given references, then up to ``top_m`` proposals."""
        refs = [r for r in references if r in self.groupings]
        proposed = [lb for lb in self.groupings if lb.startswith("top")][:top_m]
        return refs + proposed

    def to_attrs(self) -> dict[str, Any]:
        return {"task_names": list(self.task_names), "groupings": self.groupings, "grouping_scores": self.scores,
                "baselines": self.baselines, "affinity": self.affinity, "prepare_seconds": self.seconds}

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> Prepared:
        return cls(tuple(a["task_names"]), dict(a["groupings"]), dict(a["grouping_scores"]), dict(a["baselines"]),
                   a.get("affinity"), float(a.get("prepare_seconds", 0.0)))


def _space_grouping(spec: StudyConfig) -> tuple[int, int]:
    """The search space's grouping parameter: ``(top_m, k)``; ``(0, 1)`` without one."""
    gp = spec.search.loaded.grouping if spec.search.loaded is not None else None
    return (gp.top_m, gp.k) if gp is not None else (0, 1)


def study_policy(spec: StudyConfig, n_tasks: int) -> GroupingPolicy:
    """The study's :class:`~taskgraph.pipeline.GroupingPolicy`: the default policy with what the study
    file sets (``[affinity]``: estimator, epochs, every, check_seeds, z, extra_seeds and the affinity run's optimizer,
    lr and momentum; the search space's grouping ``k``; ``[train]``; ``seed``). No checks when the space
    proposes no groupings (``top_m = 0``)."""
    from taskgraph.pipeline import DEFAULT_POLICY

    top_m, k = _space_grouping(spec)
    af = spec.affinity
    train_cfg = spec.train_config()
    extra = {} if af.extra_seeds is None else {"extra_seeds": af.extra_seeds}
    return DEFAULT_POLICY.replace(estimator=af.estimator, affinity_epochs=af.epochs, every=af.every,
                                  k=min(k, n_tasks), z=af.z, check_seeds=af.check_seeds if top_m else 0,
                                  seed=spec.seed, config=train_cfg, affinity_config=af.config(train_cfg), **extra)


def prepare(spec: StudyConfig, data: MultiTaskData, study: optuna.Study, store: FileSystemArtifactStore, *,
            log: Callable[[str], None] = print) -> Prepared:
    """Measure, propose, check and baseline once; store in ``study``; return what trials need.

    The grouping stages are :mod:`taskgraph.pipeline`'s, under the study's
    :class:`~taskgraph.pipeline.GroupingPolicy` (:func:`study_policy`: the ``[affinity]`` table):
    the same code path as :func:`~taskgraph.pipeline.auto_group`.
    The decision (the chosen partition, its paired difference to all-in-one with its interval)
    is stored as the study's user attr ``grouping_decision``.

    Args:
        spec: the :class:`~taskgraph.search.StudySpec`.
        data: the study's loaded ``MultiTaskData`` (task subset applied).
        study: the Optuna study (its user attrs hold the results).
        store: the artifact store for the study-level pictures and JSON.
        log: where progress lines go.
    """
    from taskgraph.runners.storage import PrepareBeat

    attrs = study.user_attrs
    if attrs.get("prepared"):
        return Prepared.from_attrs(attrs)
    # other drivers that join or resume the study meanwhile wait for this one while it beats
    with PrepareBeat(study):
        return _prepare(spec, data, study, store, log)


def _prepare(spec: StudyConfig, data: MultiTaskData, study: optuna.Study, store: FileSystemArtifactStore,
             log: Callable[[str], None]) -> Prepared:
    import torch
    from optuna.artifacts import upload_artifact

    from taskgraph.pipeline import Runs, candidates, check, measure, propose, settle
    from taskgraph.runners import stages

    t0 = time.perf_counter()
    # the same threads as a trial: small models train much faster on one thread than on an
    # oversubscribed pool (OpenMP workers spin while they wait for a core)
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    names = tuple(data.tasks.names)
    trunk = spec.trunk_spec()
    top_m, _ = _space_grouping(spec)
    train_cfg = spec.train_config()
    policy = study_policy(spec, len(names))
    runs = Runs.from_data(lambda: trunk.build(data.input_shape), data, train_cfg)
    log(f"prepare: all-in-one model with {policy.estimator} affinity on {len(names)} tasks ...")
    matrix, _ = measure(runs, policy)
    groupings: dict[str, list[list[str]]] = {"all-in-one": [list(names)], "single-task": [[n] for n in names]}
    scores: dict[str, float | None] = {"all-in-one": None, "single-task": None}
    decision = None
    if top_m:
        seen = {json.dumps(sorted(sorted(g) for g in v)) for v in groupings.values()}
        # the search's choices: the space's top_m proposals; the checks: the policy's first top_m
        # the study file's [grouping] solver, its time limit and its fallback at that limit
        ranked = propose(matrix, policy.replace(top_m=top_m), solver=spec.grouping.make_solver(len(names)))
        if "timed out" in ranked[0].solver:
            bound = "no bound proven" if ranked[0].bound is None else f"a proven bound of {ranked[0].bound:.4g}"
            log(f"prepare: the exact solver stopped at its time limit ({spec.grouping.time_limit or 'default'} s); "
                f"the proposals are the scalable solver's (best score {ranked[0].score:.4g}, {bound})")
        for r in ranked:
            key = json.dumps(sorted(sorted(g) for g in r.groups))
            if key in seen:
                continue
            seen.add(key)
            label = grouping_label(sum(lb.startswith("top") for lb in groupings) + 1, r.groups)
            groupings[label] = [list(g) for g in r.groups]
            scores[label] = float(r.score) if math.isfinite(r.score) else None
        if policy.check_seeds:
            cands = candidates(ranked[:policy.top_m], policy, names)
            log(f"prepare: checking {len(cands)} candidates and all-in-one over {policy.check_seeds} paired seeds ...")
            decision, _ = settle(runs, check(runs, cands, policy, log=log), policy, log=log)
            log(f"prepare: {decision.statement()}")
    aio = runs.train_group(names, policy.seed)
    all_in_one = {"val": aio.val.to_dict(), "test": None if aio.test is None else aio.test.to_dict()}
    log("prepare: single-task baselines ...")
    single = stages.single_task_baselines(data, trunk, train_cfg,
                                          cache_dir=Path(spec.storage.run_dir).parent / "_baselines")
    affinity = matrix.to_dict()
    with tempfile.TemporaryDirectory() as d:
        # framed by the decision's partition, else the affinity's first proposal
        shown = decision.groups if decision is not None else (ranked[0].groups if top_m else None)
        files = [(stages.draw_heatmap(matrix, Path(d) / "affinity_heatmap.png", shown), "image/png"),
                 (stages.draw_graph(matrix, Path(d) / "task_graph.png", shown), "image/png")]
        mp = Path(d) / "affinity.json"
        mp.write_text(json.dumps(affinity, indent=1))
        files.append((mp, "application/json"))
        gpath = Path(d) / "groupings.json"
        gpath.write_text(json.dumps({"groupings": groupings, "scores": scores,
                                     "decision": None if decision is None else decision.to_dict()}, indent=2))
        files.append((gpath, "application/json"))
        for p, mime in files:
            upload_artifact(artifact_store=store, file_path=str(p), study_or_trial=study, mimetype=mime)
    prepared = Prepared(names, groupings, scores, {"single_task": single, "all_in_one": all_in_one},
                        affinity, time.perf_counter() - t0)
    study.set_user_attr("task_info", [{"name": t.name, "kind": t.kind, "metric": t.metric,
                                       "higher_is_better": t.higher_is_better} for t in data.tasks])
    if decision is not None:
        study.set_user_attr("grouping_decision", {k: v for k, v in decision.to_dict().items() if k != "candidates"})
    for key, value in prepared.to_attrs().items():
        study.set_user_attr(key, value)
    study.set_user_attr("prepared", True)
    log(f"prepare: done in {prepared.seconds:.1f} s; {len(groupings)} groupings to search")
    return prepared
