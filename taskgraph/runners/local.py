"""The local runner: Optuna alone, one trial at a time, no Ray (a laptop, debugging).

Early stopping uses Optuna's ``SuccessiveHalvingPruner`` (the synchronous
counterpart of ASHA, Li et al. 2020) on the per-epoch objective.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from taskgraph.runners.common import Progress, RunSummary, open_run, summarize

__all__ = ["run_local"]


def _pruner(spec):
    import optuna

    if spec.early_stopping == "asha" and not spec.multi_objective:
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.grace_epochs,
                                                      reduction_factor=spec.reduction_factor)
    return optuna.pruners.NopPruner()


def run_local(spec, *, resume: bool = False, join: bool = False, log: Callable[[str], None] = print,
              console=None) -> RunSummary:
    """Run ``spec`` with Optuna in this process; every trial lands in the study's storage.

    Args:
        spec: a :class:`~taskgraph.search.StudySpec`.
        resume: continue a study whose driver died (its RUNNING trials are failed and queued again).
        join: add this driver to a study others are running (several drivers on one RDB storage).
        log: where progress lines go.

    Returns:
        A :class:`RunSummary`.
    """
    import optuna

    from taskgraph.runners.storage import (
        INTERRUPTED,
        count_finished,
        record_failure,
        record_start,
        record_success,
    )
    from taskgraph.runners.trial import run_trial, start_attrs

    t0 = time.perf_counter()
    run = open_run(spec, resume=resume, join=join, pruner=_pruner(spec), log=log)
    ctx, store = run.ctx, run.store
    labels = ctx.grouping_labels()
    multi = spec.multi_objective
    if run.remaining == 0:
        log(f"study {spec.name!r} already has {spec.trials} finished trial(s); nothing to run")
        return summarize(run, time.perf_counter() - t0)
    log(f"local runner: {run.remaining} trial(s) to run, one at a time")

    def objective(trial):
        params = spec.space.suggest(trial, tasks=ctx.task_names, groupings=labels)
        record_start(trial, start_attrs(ctx, params))

        def report(epoch, values, _metrics):
            if multi or epoch >= spec.epochs:  # a trial that trained to the end is not pruned
                if not multi:
                    trial.report(values[0], epoch)
                return
            trial.report(values[0], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        try:
            record, _ = run_trial(ctx, params, report=report, threads=max(1, int(spec.cpus)))
        except optuna.TrialPruned:
            raise
        except Exception as e:
            record_failure(trial, f"{type(e).__name__}: {e}")
            raise
        except BaseException:
            record_failure(trial, f"{INTERRUPTED} the driver was interrupted")
            raise
        record_success(trial, record, store)
        return record.values if multi else record.values[0]

    progress = Progress(spec, count_finished(run.study), console=console)

    def budget(study, frozen):
        progress.trial_finished(study, frozen)
        if count_finished(study) >= spec.trials:
            study.stop()

    run.study.optimize(objective, n_trials=run.remaining, timeout=spec.wall_time_s, catch=(Exception,),
                       callbacks=[budget])
    return summarize(run, time.perf_counter() - t0)
