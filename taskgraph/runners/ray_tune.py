"""The Ray Tune runner: parallel trials, ASHA early stopping, Optuna's storage as the record.

A ``tune.Tuner`` runs the trial function (:func:`taskgraph.runners.trial.run_trial`)
with per-trial resources; :class:`StudySearcher`, a subclass of Ray's
``OptunaSearch``, asks the study's sampler for configurations (define-by-run,
so conditional parameters work) and writes every trial into the study's
storage. The subclass exists because a Tune callback runs only after
``OptunaSearch`` has closed the Optuna trial; the hook here runs before, so it
can set the user attrs, upload the artifacts, and give each trial its true
state: COMPLETE when it trained to the end, PRUNED when ASHA (Li et al.,
"A System for Massively Parallel Hyperparameter Tuning", MLSys 2020) stopped it,
FAIL with its reason when it raised.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from taskgraph.runners.common import Progress, RunSummary, open_run, summarize

__all__ = ["PRELOAD_MODULES", "RAY_ENV_DEFAULTS", "init_ray", "run_ray"]

#: environment Ray needs here: loopback only, no token auth, no usage stats
RAY_ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


#: what a trial's worker imports before its first trial (torch.optim's first optimizer imports
#: torch._dynamo, about 1.2 s); a local Ray started here has its prestarted workers import them
#: while the study is prepared, instead of each slot's first trial
PRELOAD_MODULES = ("torch", "torch._dynamo", "ray.tune", "taskgraph.runners.trial", "taskgraph.runners.stages",
                   "taskgraph.training")


def init_ray(address: str | None = None, *, num_cpus: int | None = None, preload: bool = True) -> bool:
    """Connect to Ray (the job's cluster, ``address``, or a new local instance); True if started here.

    A local instance gets ``num_cpus`` CPUs (default: Ray's count of the machine's). Ray boots
    one worker process per CPU as it starts; with ``preload`` each imports
    :data:`PRELOAD_MODULES` before it takes work (Ray's ``preload_python_modules``), so a
    trial actor placed in one skips those imports. A module that fails to import is skipped.
    """
    for k, v in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=os.environ.get("TASKGRAPH_RAY_LOGS") == "1",
             _system_config={"preload_python_modules": list(PRELOAD_MODULES)} if preload else None)
    return True


def _local_cpus(spec) -> int | None:
    """CPUs for a local Ray that runs only ``spec``: what its slots use, at most the machine's.

    Ray boots one worker per CPU and a preloaded worker holds about 0.3 GB; CPUs beyond
    ``concurrent × cpus`` would only hold idle workers.
    """
    try:
        here = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        here = os.cpu_count() or 1
    want = math.ceil(spec.concurrent * spec.cpus)
    return max(1, min(here, want)) if want > 0 else None


@contextlib.contextmanager
def _prestarted_workers():
    """Let Tune's trial actors start in the worker processes Ray has already booted.

    Ray hands an actor a prestarted (idle, never used) worker only when the actor asks for
    no runtime environment of its own. Tune gives every trial actor one: ``env_vars`` with
    ``PL_DISABLE_FORK=1``, for PyTorch Lightning, which taskgraph does not use. Without it
    each slot's first trial starts in a worker that booted while the study was prepared,
    about 3 s sooner on a 2-core machine (``docs/cluster.md``). The variable lives in a
    private module of Ray Tune; where it is missing, nothing changes. Restored on exit.
    """
    try:
        from ray.tune.execution.class_cache import DEFAULT_ENV_VARS
    except ImportError:  # another Ray: keep its defaults
        yield
        return
    saved = dict(DEFAULT_ENV_VARS)
    DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)
    try:
        yield
    finally:
        DEFAULT_ENV_VARS.clear()
        DEFAULT_ENV_VARS.update(saved)


#: a searcher whose sampler proposed only configurations the study already holds this many times in a row stops
MAX_REPEATS = 50

#: with no rung due, a running trial still sends its curve this often (the dashboard's live view)
LIVE_REPORT_S = 10.0


def report_epochs(spec) -> frozenset[int]:
    """The epochs at which ASHA decides (its rungs, as ``ASHAScheduler`` places them), below the last.

    A Tune function trial pauses at every report until the driver has handled it (about
    10 ms on a busy 2-core machine, 4-8% of a short trial's training when it reports every
    epoch), and ASHA reads only the first report at or past each rung, so a trial reports
    at these epochs and at its end, each report carrying the epochs since the one before.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> sorted(report_epochs(NS(early_stopping="asha", epochs=40, grace_epochs=1, reduction_factor=3)))
        [1, 3, 9, 27]
        >>> sorted(report_epochs(NS(early_stopping="none", epochs=40, grace_epochs=1, reduction_factor=3)))
        []
    """
    if spec.early_stopping != "asha" or spec.epochs <= spec.grace_epochs:
        return frozenset()
    g, rf, top = spec.grace_epochs, spec.reduction_factor, spec.epochs
    n = int(math.log(top / g) / math.log(rf) + 1)  # ray.tune.schedulers.async_hyperband._Bracket
    return frozenset(e for e in (math.ceil(g * rf ** k) for k in range(n)) if e < top)


def _trainable(config: dict, ctx) -> None:
    """The Tune function: one trial.

    Reports at ASHA's rungs (:func:`report_epochs`), at least every :data:`LIVE_REPORT_S`
    seconds, and at its end; each report's ``curve`` holds the ``[epoch, objective]`` pairs
    since the report before, which the searcher writes as the Optuna trial's intermediate
    values. The last report carries the record.
    """
    from ray import tune

    from taskgraph.runners.trial import run_trial

    spec = ctx.spec
    total = spec.epochs
    names = ctx.task_names
    rungs = report_epochs(spec)
    last: dict = {}
    curve: list[list[float]] = []
    sent = [time.monotonic()]

    def report(epoch, values, metrics):
        r = {"epoch": epoch, "objective": float(sum(values) / len(values))}
        r.update({f"loss.{n}": float(metrics["losses"][n]) for n in names})
        curve.append([epoch, r["objective"]])
        if epoch >= total:  # sent with the record below, so ASHA's max_t never cuts the record off
            last.update(r)
            return
        if epoch in rungs or time.monotonic() - sent[0] >= LIVE_REPORT_S:
            tune.report({**r, "curve": curve[:]})
            curve.clear()
            sent[0] = time.monotonic()

    try:
        record, model = run_trial(ctx, dict(config), report=report, threads=max(1, int(spec.cpus)))
    except Exception as e:
        failed = {"epoch": total, "objective": math.inf, "failed": 1, "fail_reason": f"{type(e).__name__}: {e}",
                  "curve": curve}
        failed.update({f"loss.{n}": math.inf for n in names})
        tune.report(failed)
        return
    import torch
    from ray.tune import Checkpoint

    final = {**last, "epoch": total, "finished": 1, "record": json.dumps(record.to_dict()), "curve": curve}
    if spec.multi_objective:
        final.update({f"loss.{n}": float(v) for n, v in zip(names, record.values)})
    final.setdefault("objective", float(sum(record.values) / len(record.values)))
    with tempfile.TemporaryDirectory() as d:
        torch.save(model.state_dict(), Path(d) / "model.pt")
        (Path(d) / "record.json").write_text(final["record"])
        tune.report(final, checkpoint=Checkpoint.from_directory(d))


def _error_text(trial) -> str:
    """One line on why a Ray trial errored (a dead worker, a raise outside the trial's own try).

    ``RayTrialError: <Ray's message>``, from the error file Tune writes for the trial before
    it tells the scheduler and the searcher (e.g. "The actor died unexpectedly ... Worker exit
    type: SYSTEM_ERROR ..." for a worker the OOM killer took).
    """
    text = ""
    try:
        if trial.error_file and Path(trial.error_file).is_file():
            # the file keeps every failure of the trial; the last one is this one
            last = Path(trial.error_file).read_text(errors="replace").rsplit("Failure # ", 1)[-1]
            text = last.split("\n", 1)[1] if "\n" in last else last
    except OSError:
        pass
    text = " ".join(text.split())
    if not text:
        return "RayTrialError: the Ray trial raised or its worker died; see the Ray logs"
    return f"RayTrialError: {text}"[:500]


class _KeepErrors:
    """Scheduler mixin: keeps each errored trial's reason for the searcher.

    Tune calls the scheduler's ``on_trial_error`` (with the trial, its error file written)
    right before the searcher's ``on_trial_complete(error=True)`` (with only the trial's id).
    """

    errors: dict[str, str]

    def on_trial_error(self, tune_controller, trial):
        self.errors[trial.trial_id] = _error_text(trial)
        super().on_trial_error(tune_controller, trial)


def _searcher_class():
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    from taskgraph.runners.storage import (
        TrialRecord,
        budget_ahead,
        find_duplicate,
        record_failure,
        record_skip,
        record_start,
        record_success,
    )
    from taskgraph.runners.trial import start_attrs

    class StudySearcher(OptunaSearch):
        """``OptunaSearch`` that records each trial's attrs, artifacts and true state in the study."""

        def __init__(self, *args, ctx, store, budget: int, errors: dict | None = None, log=print, **kwargs):
            super().__init__(*args, **kwargs)
            self._errors = {} if errors is None else errors  # trial id -> reason, filled by _KeepErrors
            self._ctx = ctx
            self._store = store
            self._budget = budget  # the study's: shared by every driver
            self._log = log
            self.numbers: dict[str, int] = {}
            self._reported: set[tuple[str, int]] = set()

        def suggest(self, trial_id):
            """A configuration the study does not hold yet, while the study's budget lasts (as the local runner).

            A trial asked for once other drivers' trials hold the budget, or one whose configuration
            the study already holds, is closed as FAIL ``skipped: ...`` (it never counts).
            """
            for _ in range(MAX_REPEATS):
                if budget_ahead(self._ot_study) >= self._budget:
                    return OptunaSearch.FINISHED
                config = super().suggest(trial_id)
                ot = self._ot_trials.get(trial_id)
                if config is None or ot is None:
                    return config
                if budget_ahead(self._ot_study, ot.number) >= self._budget:  # another driver asked first
                    del self._ot_trials[trial_id]
                    record_skip(ot, "the study's budget was already held by other drivers' trials",
                                study=self._ot_study)
                    return OptunaSearch.FINISHED
                dup = find_duplicate(self._ot_study, ot.params, number=ot.number)
                if dup is None:
                    self.numbers[trial_id] = ot.number
                    record_start(ot, start_attrs(self._ctx, ot.params))
                    return config
                del self._ot_trials[trial_id]  # ask again
                record_skip(ot, f"the sampler proposed trial {dup}'s configuration again", study=self._ot_study)
            self._log(f"ray runner: the sampler proposed only configurations the study already holds, {MAX_REPEATS} "
                      f"times in a row: the search space looks exhausted; no more trials are started")
            return OptunaSearch.FINISHED

        def __getstate__(self):
            # Tune pickles the searcher into its experiment folder (tuner.pkl, for Tuner.restore, which
            # taskgraph does not use: --resume reads the study's storage). The storage, the Optuna study
            # and its trials hold the storage URL with its password: they stay on the driver.
            state = self.__dict__.copy()
            state.update(_storage=None, _ot_study=None, _ot_trials={}, _log=None)
            return state

        def save(self, checkpoint_path):
            # the study's storage is the record a resume reads; Tune's copy of the searcher is not needed
            Path(checkpoint_path).write_bytes(b"")

        def restore(self, checkpoint_path):
            pass

        def on_trial_result(self, trial_id, result):
            # the epochs since the trial's last report (its curve), as Optuna intermediate values
            if trial_id in self._completed_trials or self._ctx.spec.multi_objective:
                return
            ot = self._ot_trials.get(trial_id)
            if ot is None:
                return
            for epoch, value in result.get("curve") or ():
                key = (trial_id, int(epoch))
                if key not in self._reported and math.isfinite(value):
                    ot.report(float(value), key[1])
                    self._reported.add(key)

        def on_trial_complete(self, trial_id, result=None, error=False):
            ot = self._ot_trials.get(trial_id)
            if ot is None or trial_id in self._completed_trials:
                return
            result = result or {}
            state, values = TrialState.PRUNED, None
            if not error:
                # when the scheduler decides STOP (ASHA's cut, or max_t reached) Tune skips on_trial_result;
                # a failed trial's report carries the curve it trained before it failed
                self.on_trial_result(trial_id, result)
            try:
                if error:
                    record_failure(ot, self._errors.pop(trial_id, "RayTrialError: the Ray trial raised or its worker "
                                                                  "died; see the Ray logs"))
                    state = TrialState.FAIL
                elif result.get("failed"):
                    record_failure(ot, str(result.get("fail_reason", "failed")))
                    state = TrialState.FAIL
                elif result.get("finished"):
                    record = TrialRecord.from_dict(json.loads(result["record"]))
                    record_success(ot, record, self._store)
                    state, values = TrialState.COMPLETE, record.values
                # else: ASHA stopped it before its last epoch -> PRUNED
            except Exception as e:  # recording must never lose the trial
                record_failure(ot, f"recording failed: {type(e).__name__}: {e}")
                state, values = TrialState.FAIL, None
            if values is not None and len(values) == 1:
                values = values[0]
            self._ot_study.tell(ot, values, state=state)
            self._completed_trials.add(trial_id)

    return StudySearcher


def _progress_callback(searcher, study, progress):
    """A Tune callback printing progress (driver-side only: it pickles to nothing)."""
    from ray import tune

    class ProgressCallback(tune.Callback):
        def __init__(self, *live):
            self.live = live

        def __getstate__(self):
            return {}

        def __setstate__(self, state):
            self.live = None

        def _done(self, trial):
            if not self.live:
                return
            s, st, pr = self.live
            number = s.numbers.get(trial.trial_id)
            if number is not None:
                pr.trial_finished(st, st.get_trials(deepcopy=False)[number])

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._done(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._done(trial)

    return ProgressCallback(searcher, study, progress)


def run_ray(spec, *, resume: bool = False, join: bool = False, address: str | None = None,
            log: Callable[[str], None] = print, console=None) -> RunSummary:
    """Run ``spec`` with Ray Tune; every trial lands in the study's Optuna storage.

    Args:
        spec: a :class:`~taskgraph.search.StudySpec`.
        resume: continue a study whose driver died.
        join: add this driver to a study others are running (RDB storage).
        address: a Ray cluster to connect to (default: the job's cluster, or a local Ray).

    Returns:
        A :class:`RunSummary` (``errors`` lists trials Ray itself reported as errored).
    """
    t0 = time.perf_counter()
    # Ray boots (its own processes, the workers it prestarts) while the study is prepared; started
    # after the preparation, its start-up competed with the first trial of every slot
    started = init_ray(address, num_cpus=_local_cpus(spec))  # num_cpus: only for a local Ray started here
    import ray

    try:
        run = open_run(spec, resume=resume, join=join, log=log)
        if run.remaining == 0:
            log(f"study {spec.name!r} already has {spec.trials} finished trial(s); nothing to run")
            return summarize(run, time.perf_counter() - t0)
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        from taskgraph.runners.samplers import make_sampler

        ctx = run.ctx
        names = ctx.task_names
        multi = spec.multi_objective
        trial_errors: dict[str, str] = {}
        searcher = _searcher_class()(
            space=spec.space.define_by_run(tasks=names, groupings=ctx.grouping_labels()),
            metric=[f"loss.{n}" for n in names] if multi else "objective",
            mode=["min"] * len(names) if multi else "min",
            sampler=make_sampler(spec.sampler, spec.sampler_options, run.sampler_seed, file=spec.file),
            study_name=spec.name, storage=run.storage, ctx=ctx, store=run.store,
            budget=spec.trials, errors=trial_errors, log=log)
        if spec.early_stopping == "asha" and spec.epochs > spec.grace_epochs:
            scheduler = type("ASHAKeepingErrors", (_KeepErrors, ASHAScheduler), {})(
                time_attr="epoch", metric="objective", mode="min", max_t=spec.epochs,
                grace_period=spec.grace_epochs, reduction_factor=spec.reduction_factor)
        else:
            scheduler = type("FIFOKeepingErrors", (_KeepErrors, FIFOScheduler), {})()
        scheduler.errors = trial_errors
        gpus = spec.gpus if spec.gpus and ray.cluster_resources().get("GPU", 0) > 0 else 0
        if spec.gpus and not gpus:
            log(f"ray runner: no GPU in the cluster; trials run on CPU ({spec.gpus} GPU per trial asked)")
        trainable = tune.with_resources(tune.with_parameters(_trainable, ctx=ctx), {"cpu": spec.cpus, "gpu": gpus})
        progress = Progress(spec, run.spec.trials - run.remaining, console=console)
        study = run.study

        log(f"ray runner: {run.remaining} trial(s), {spec.concurrent} at a time, {spec.cpus:g} CPU"
            f"{f' + {gpus:g} GPU' if gpus else ''} each, ASHA={'on' if spec.early_stopping == 'asha' else 'off'}")
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=run.remaining,
                                        max_concurrent_trials=spec.concurrent, time_budget_s=spec.wall_time_s,
                                        reuse_actors=True),  # one worker process per slot: torch imported once
            run_config=tune.RunConfig(
                name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(Path(spec.run_dir) / "ray"),
                verbose=0,
                callbacks=[_progress_callback(searcher, study, progress)],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        with _prestarted_workers():
            grid = tuner.fit()
        errors = [f"{type(e).__name__}: {e}".splitlines()[0] for e in grid.errors]
    finally:
        if started:
            ray.shutdown()
    return summarize(run, time.perf_counter() - t0, errors)
