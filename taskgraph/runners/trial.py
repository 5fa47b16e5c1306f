"""One trial: build the model a configuration names, train it, measure it per task.

:func:`run_trial` is what both runners execute: flat parameters → a
:class:`~taskgraph.search.TrialConfig` (grouping × topology × weighting ×
training hyper-parameters) → ``build_model`` → the one training loop
(:func:`taskgraph.training.train`) → per-task validation/test losses and
metrics, Δm% against the study's single-task baselines. After every epoch it
calls ``report(epoch, value, metrics)``; a runner's reporter may stop the
trial there (Optuna's pruner raises ``TrialPruned``; Ray's ASHA stops the
actor).

The objective (lower is better in all three):

- ``val_loss``: the mean over tasks of the validation loss;
- ``delta_m``: Δm% of the validation metrics against single-task baselines
  (Maninis et al. 2019; negative: better than single-task);
- ``per_task``: each task's validation loss (a multi-objective study).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskgraph.runners.common import StudyConfig, space_of
from taskgraph.runners.storage import TrialRecord, package_versions

if TYPE_CHECKING:
    from torch import nn

    from taskgraph.data import MultiTaskData
    from taskgraph.runners.prepare import Prepared
    from taskgraph.training import Evaluation, TrainState

__all__ = ["PRELOAD_MODULES", "StudyContext", "objective_values", "run_trial", "start_attrs"]

#: what a trial's worker imports before its first trial (the first optimizer of a process imports
#: torch's compiler, about 1.2 s); a local Ray the Ray runner starts has its prestarted workers import them
#: while the study is prepared, instead of each slot's first trial
PRELOAD_MODULES = (
    "torch",
    "torch._dynamo",
    "ray.tune",
    "taskgraph.runners.trial",
    "taskgraph.runners.stages",
    "taskgraph.training",
)

Reporter = Callable[[int, list[float], dict[str, Any]], None]


@dataclass(frozen=True)
class StudyContext:
    """Everything a trial needs, as plain data (sent to Ray workers once)."""

    spec: StudyConfig  # a StudySpec without secrets
    prepared: Prepared

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.prepared.task_names

    def grouping_labels(self) -> list[str]:
        gp = space_of(self.spec).grouping
        if gp is None:
            return ["all-in-one"]
        return self.prepared.labels(gp.references, gp.top_m)


@functools.lru_cache(maxsize=2)
def _load(name: str, options_json: str, tasks: tuple[str, ...] | None, file: str | None = None) -> MultiTaskData:
    import json

    from taskgraph.runners import stages

    return stages.load_data(name, json.loads(options_json), tasks, file=file)


def load_study_data(spec: StudyConfig) -> MultiTaskData:
    """The study's data (cached per process: Ray workers load it once)."""
    import json

    # the options are a read-only mapping (nested ones too): ``default=dict`` writes each as the JSON object it holds
    options = json.dumps(dict(spec.data.options), sort_keys=True, default=dict)
    return _load(spec.data.name, options, spec.data.tasks, spec.file)


def objective_values(objective: str, losses: Mapping[str, float], metrics: Mapping[str, float], ctx: StudyContext,
                     split: str = "val") -> list[float]:
    """The objective value(s) from per-task losses and metrics of one split."""
    from taskgraph.training import delta_m

    names = ctx.task_names
    if objective == "per_task":
        return [float(losses[n]) for n in names]
    if objective == "delta_m":
        data_tasks = load_study_data(ctx.spec).tasks
        return [delta_m({n: metrics[n] for n in names}, ctx.prepared.baselines["single_task"][split]["metrics"],
                        data_tasks)]
    return [float(sum(losses[n] for n in names) / len(names))]


def start_attrs(ctx: StudyContext, params: Mapping[str, Any]) -> dict[str, Any]:
    """The user attrs known before training: what the trial is and what ran it."""
    cfg = space_of(ctx.spec).resolve(params)
    return {"grouping": cfg.grouping, "groups": ctx.prepared.groupings.get(cfg.grouping),
            "topology": cfg.topology, "topology_params": cfg.topology_params, "weighting": cfg.weighting,
            "weighting_params": cfg.weighting_params, "seed": ctx.spec.seed, "versions": package_versions()}


def run_trial(ctx: StudyContext, params: Mapping[str, Any], *, report: Reporter | None = None,
              threads: int | None = None) -> tuple[TrialRecord, nn.Module]:
    """Train and measure the configuration ``params`` names.

    Args:
        ctx: the study context.
        params: the trial's flat parameters (from :meth:`SearchSpace.suggest`).
        report: called after every epoch with ``(epoch, objective values, per-task metrics)``.
        threads: torch threads for this trial (Ray: its CPUs).

    Returns:
        ``(record, model)``: what to store, and the trained model (for checkpoints).

    Raises:
        TrainingDiverged: a loss became NaN/inf; anything a stage raises (the runner records FAIL).
    """
    import torch

    from taskgraph.runners import stages
    from taskgraph.training import Callback, per_task_delta, train

    if threads:
        torch.set_num_threads(max(1, int(threads)))
    spec = ctx.spec
    cfg = space_of(spec).resolve(params)
    data = load_study_data(spec)
    groups = ctx.prepared.groupings.get(cfg.grouping)
    if groups is None:
        raise KeyError(f"grouping {cfg.grouping!r} is not one of the study's groupings "
                       f"({', '.join(ctx.prepared.groupings)})")
    tcfg = spec.train_config(cfg.train)
    torch.manual_seed(tcfg.seed)
    model = stages.build_model(cfg.topology, cfg.topology_params, spec.trunk_spec(), data.tasks, data.input_shape,
                               groups)
    weighting = stages.make_weighting(cfg.weighting, cfg.weighting_params)
    tr, va, te = data.loaders(tcfg.batch_size, seed=tcfg.seed)

    class _Report(Callback):
        def on_epoch_end(self, state: TrainState, val: Evaluation | None) -> None:
            if report is not None and val is not None:
                vals = objective_values(spec.search.objective, val.losses, val.metrics, ctx)
                report(state.epoch + 1, vals, {"losses": val.losses, "metrics": val.metrics})

    res = train(model, data.tasks, tr, config=tcfg, val_loader=va, test_loader=te, callbacks=[_Report()],
                weighting=weighting)
    assert res.val is not None and res.test is not None
    for split, ev in (("val", res.val), ("test", res.test)):
        bad = [n for n, v in ev.losses.items() if not math.isfinite(v)]
        if bad:
            from taskgraph.training import TrainingDiverged

            raise TrainingDiverged(f"the {split} loss of task(s) {bad} is not finite after training")
    values = objective_values(spec.search.objective, res.val.losses, res.val.metrics, ctx)
    single = ctx.prepared.baselines["single_task"]
    aio = ctx.prepared.baselines["all_in_one"]
    d_val = per_task_delta(res.val.metrics, single["val"]["metrics"], data.tasks)
    d_test = per_task_delta(res.test.metrics, single["test"]["metrics"], data.tasks)
    rows = []
    for t in data.tasks:
        n = t.name
        rows.append({"task": n, "metric": t.metric, "higher_is_better": t.higher_is_better,
                     "val_loss": res.val.losses[n], "val_metric": res.val.metrics[n],
                     "test_loss": res.test.losses[n], "test_metric": res.test.metrics[n],
                     "single_task_test_metric": single["test"]["metrics"][n],
                     "all_in_one_test_metric": aio["test"]["metrics"][n],
                     "delta_pct_test": d_test[n]})
    attrs = {
        **start_attrs(ctx, params),
        "train": {k: v for k, v in tcfg.__dict__.items() if k not in ("betas",)},
        "val_loss": res.val.mean_loss, "test_loss": res.test.mean_loss,
        "delta_m_val": sum(d_val.values()) / len(d_val), "delta_m_test": sum(d_test.values()) / len(d_test),
        "val_losses": res.val.losses, "val_metrics": res.val.metrics,
        "test_losses": res.test.losses, "test_metrics": res.test.metrics,
        "best_epoch": res.best_epoch + 1, "epochs_run": len(res.history), "seconds": res.seconds,
    }
    record = TrialRecord(values=values, attrs=attrs, rows=rows,
                         grouping={"label": cfg.grouping, "groups": groups, "topology": cfg.topology,
                                   "weighting": cfg.weighting, "config": cfg.to_dict()})
    return record, model
