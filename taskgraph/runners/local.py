"""The local runner: Optuna alone, one trial at a time, no Ray (a laptop, debugging).

Early stopping uses Optuna's ``SuccessiveHalvingPruner`` (the synchronous
counterpart of ASHA, Li et al. 2020) on the per-epoch objective.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskgraph.runners.common import Progress, RunSummary, StudyConfig, open_run, space_of, summarize

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial, TrialState
    from rich.console import Console

__all__ = ["run_local"]


def _pruner(spec: StudyConfig) -> optuna.pruners.BasePruner:
    import optuna

    if spec.budget.early_stopping == "asha" and not spec.multi_objective:
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.budget.grace_epochs,
                                                      reduction_factor=spec.budget.reduction_factor)
    return optuna.pruners.NopPruner()


#: a driver whose sampler proposed only configurations the study already holds this many times in a row stops
MAX_REPEATS = 50


def run_local(spec: StudyConfig, *, resume: bool = False, join: bool = False, log: Callable[[str], None] = print,
              console: Console | None = None) -> RunSummary:
    """Run ``spec`` with Optuna in this process; every trial lands in the study's storage.

    Trials are asked for one at a time (``study.ask``/``study.tell``). Before training, a
    configuration the study already holds (finished, or running on another driver) is closed
    as FAIL ``skipped: ...`` and another is asked for, and a trial asked for once the study's
    budget is held by others is closed the same way and ends this driver: skipped trials
    never count, so the budget is exact with several drivers and no configuration runs twice.

    Args:
        spec: a :class:`~taskgraph.search.StudySpec`.
        resume: continue a study; trials whose driver is gone (their heartbeat went stale; or, never watched by
            a heartbeat, left RUNNING by an older driver) are failed and queued again, a live driver's are left alone.
        join: add this driver to a study others are running (several drivers on one RDB storage).

    Every trial records its heartbeat (:func:`~taskgraph.runners.storage.heartbeat`) from ask to
    tell; the driver fails and queues again other drivers' trials whose heartbeat went stale, and
    once the budget is held it waits while other drivers' trials run, so that a retry falls to it.
        log: where progress lines go.

    Returns:
        A :class:`RunSummary`.
    """
    import optuna
    from optuna.trial import TrialState

    from taskgraph.runners.storage import (
        INTERRUPTED,
        budget_ahead,
        count_finished,
        fail_stale,
        find_duplicate,
        heartbeat,
        others_running,
        record_failure,
        record_skip,
        record_start,
        record_success,
    )
    from taskgraph.runners.trial import run_trial, start_attrs

    t0 = time.perf_counter()
    run = open_run(spec, resume=resume, join=join, pruner=_pruner(spec), log=log)
    ctx, store, study, storage = run.ctx, run.store, run.study, run.storage
    labels = ctx.grouping_labels()
    space = space_of(spec)
    multi = spec.multi_objective
    if run.remaining == 0:
        log(f"study {spec.name!r} already has {spec.budget.trials} finished trial(s); nothing to run")
        return summarize(run, time.perf_counter() - t0)
    log(f"local runner: {run.remaining} trial(s) to run, one at a time")

    def tell(trial: optuna.Trial, values: float | Sequence[float] | None = None,
             state: TrialState | None = None) -> FrozenTrial:
        """``study.tell``; a trial another driver already closed (its heartbeat was late) is left as it is."""
        frozen = study.tell(trial, values, state=state, skip_if_finished=True)
        if frozen.state != (state or TrialState.COMPLETE):
            log(f"local runner: trial {trial.number} was closed as {frozen.state.name} by another driver (its "
                f"heartbeat looked stale); its result is not stored")
        return frozen

    def train(trial: optuna.Trial, params: Mapping[str, Any]) -> FrozenTrial:
        def report(epoch: int, values: Sequence[float], _metrics: Any) -> None:
            if multi or epoch >= spec.budget.epochs:  # a trial that trained to the end is not pruned
                if not multi:
                    trial.report(values[0], epoch)
                return
            trial.report(values[0], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        try:
            record, _ = run_trial(ctx, params, report=report, threads=max(1, int(spec.resources.cpus)))
        except optuna.TrialPruned:
            return tell(trial, state=TrialState.PRUNED)
        except Exception as e:
            record_failure(trial, f"{type(e).__name__}: {e}")
            return tell(trial, state=TrialState.FAIL)
        except BaseException:  # Ctrl-C, SystemExit: the trial is closed, the driver stops (exit 130)
            record_failure(trial, f"{INTERRUPTED} the driver was interrupted")
            tell(trial, state=TrialState.FAIL)
            raise
        try:
            record_success(trial, record, store)
        except Exception as e:  # recording must never leave the trial RUNNING
            record_failure(trial, f"recording failed: {type(e).__name__}: {e}")
            return tell(trial, state=TrialState.FAIL)
        return tell(trial, record.values if multi else record.values[0])

    progress = Progress(spec, count_finished(study), console=console)
    deadline = None if spec.budget.wall_time_s is None else time.monotonic() + spec.budget.wall_time_s
    repeats = 0
    waiting_said = False
    while deadline is None or time.monotonic() < deadline:
        stale = fail_stale(study)  # trials of a driver that died are failed and queued again, here as anywhere
        if stale:
            log(f"local runner: trial(s) {stale} lost their driver (no heartbeat for the grace period): marked FAIL "
                f"and queued again")
        if budget_ahead(study) >= spec.budget.trials:
            # finished, or the rest is running on other drivers: wait while one of them may still die
            # (its trials would be queued again for this driver), stop once none is left running
            live = others_running(study)
            if not live:
                break
            if not waiting_said:
                log(f"local runner: waiting for trial(s) {live} of other drivers to finish (or, if their driver "
                    f"is gone, to be queued again)")
                waiting_said = True
            time.sleep(storage.get_heartbeat_interval() or 1)
            continue
        trial = study.ask()
        with heartbeat(storage, study.study_name, trial.number):
            if budget_ahead(study, trial.number) >= spec.budget.trials:  # another driver asked first
                record_skip(trial, "the study's budget was already held by other drivers' trials", study=study)
                continue
            try:
                params = space.suggest(trial, tasks=ctx.task_names, groupings=labels)
            except BaseException:
                record_skip(trial, "no configuration was drawn", study=study)
                raise
            dup = find_duplicate(study, params, number=trial.number)
            if dup is not None:
                record_skip(trial, f"the sampler proposed trial {dup}'s configuration again", study=study)
                repeats += 1
                if repeats >= MAX_REPEATS:
                    log(f"local runner: the sampler proposed only configurations the study already holds, "
                        f"{MAX_REPEATS} times in a row: the search space looks exhausted; stopping")
                    break
                continue
            repeats = 0
            record_start(trial, start_attrs(ctx, params))
            frozen = train(trial, params)
        progress.trial_finished(study, frozen)
    return summarize(run, time.perf_counter() - t0)
