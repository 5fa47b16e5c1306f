"""The Ray Tune runner: parallel trials, ASHA early stopping, Optuna's storage as the record.

A ``tune.Tuner`` runs the trial function (:func:`taskgraph.runners.trial.run_trial`)
with per-trial resources and a stock scheduler (``ASHAScheduler``, Li et al.,
"A System for Massively Parallel Hyperparameter Tuning", MLSys 2020, or
``FIFOScheduler``). :class:`StudySearcher` (built by :func:`make_searcher`), a
Tune ``Searcher`` of taskgraph's own, asks the study for configurations with
Optuna's public ``study.ask``/``study.tell`` (define-by-run, so conditional
parameters work), writes each trial's curve as intermediate values and closes
it with its true state: COMPLETE when it trained to the end, PRUNED when ASHA
stopped it, FAIL with its reason when it raised. A trial whose Ray worker or
node died reaches the searcher without a result; :class:`StudyCallback`, a
public Tune ``Callback``, then records Ray's reason (``on_trial_error``) and
prints a line per finished trial.

Ctrl-C stops the driver as it stops the local runner: the running trials are
recorded FAIL ``interrupted: ...`` and the command exits 130 (Tune's own SIGINT
handler, which would keep the trials RUNNING for ``Tuner.restore``, is turned
off with its public ``TUNE_DISABLE_SIGINT_HANDLER``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from taskgraph.runners.common import Progress, RunSummary, open_run, space_of, summarize
from taskgraph.runners.trial import PRELOAD_MODULES

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.storages import BaseStorage
    from optuna.trial import TrialState
    from ray.tune import Callback
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher
    from rich.console import Console

    from taskgraph.runners.common import BudgetConfig, ResourcesConfig, StudyConfig
    from taskgraph.runners.storage import TrialHeartbeat
    from taskgraph.runners.trial import StudyContext

__all__ = ["PRELOAD_MODULES", "RAY_ENV_DEFAULTS", "check_resources", "init_ray", "make_searcher", "run_ray"]

#: environment Ray needs here: loopback only, no token auth, no usage stats
RAY_ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}

#: Tune's settings while the runner's ``Tuner.fit()`` runs (public environment variables, put back after):
#: Ctrl-C raises KeyboardInterrupt (Tune's handler would stop gracefully, keep the trials RUNNING for
#: ``Tuner.restore`` and return), and Tune's default result loggers are off: they include TensorBoard's,
#: which says to install TensorBoard when it is missing (the runner adds the JSON logger itself)
TUNE_FIT_ENV = {"TUNE_DISABLE_SIGINT_HANDLER": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


class StudySearcherLike(Protocol):
    """What the driver uses of the Tune ``Searcher`` that :func:`make_searcher` builds (its class is made there)."""

    study: optuna.Study
    numbers: dict[str, int]

    def fail(self, trial_id: str, reason: str) -> None: ...
    def interrupt(self, why: str) -> list[int]: ...




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


def _machine_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _local_cpus(resources: ResourcesConfig) -> int | None:
    """CPUs for a local Ray that runs only one study (its ``resources``): what its slots use, at most the machine's.

    Ray boots one worker per CPU and a preloaded worker holds about 0.3 GB; CPUs beyond
    ``concurrent × cpus`` would only hold idle workers.
    """
    want = math.ceil(resources.concurrent * resources.cpus)
    return max(1, min(_machine_cpus(), want)) if want > 0 else None


def check_resources(spec: StudyConfig, nodes: list[dict[str, float]], *, where: str) -> float:
    """Check that one trial's ``resources.cpus``/``gpus`` fit on one node; return the GPUs a trial gets.

    Ray places a trial on a single node, so a trial that asks for more than every node
    offers waits forever; this says so at once instead. ``gpus`` asked of a cluster without
    any GPU is not an error: the trials run on CPU (0 is returned, the run says so).

    Args:
        spec: the study (``resources.cpus``, ``resources.gpus``, ``file``).
        nodes: each alive node's resources (``ray.nodes()[i]["Resources"]``: ``{"CPU": 2.0, ...}``).
        where: the cluster, for the message (``"the local Ray (this machine)"``, an address).

    Raises:
        ConfigError: naming ``resources.cpus`` or ``resources.gpus``, what one node offers and what was asked.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> spec = NS(resources=NS(cpus=1, gpus=0.5), file="s.toml")
        >>> check_resources(spec, [{"CPU": 2.0, "GPU": 1.0}], where="here")
        0.5
        >>> from taskgraph.exceptions import ConfigError
        >>> try:
        ...     check_resources(NS(resources=NS(cpus=3, gpus=0), file="s.toml"), [{"CPU": 2.0}, {"CPU": 1.0}],
        ...                     where="here")
        ... except ConfigError as e:
        ...     print(e)
        'resources.cpus' must be at most the CPUs that one node of here offers (2); got 3: a trial runs on one \
node, and would wait forever [s.toml, key 'resources.cpus']
    """
    from taskgraph.exceptions import ConfigError

    cpus, gpus = spec.resources.cpus, spec.resources.gpus
    most = {k: max((float(n.get(k, 0)) for n in nodes), default=0.0) for k in ("CPU", "GPU")}
    if cpus > most["CPU"]:
        raise ConfigError(f"'resources.cpus' must be at most the CPUs that one node of {where} offers "
                          f"({most['CPU']:g}); got {cpus:g}: a trial runs on one node, and would wait forever",
                          file=spec.file, key="resources.cpus")
    if not gpus or most["GPU"] == 0:
        return 0.0
    if gpus > most["GPU"]:
        raise ConfigError(f"'resources.gpus' must be at most the GPUs that one node of {where} offers "
                          f"({most['GPU']:g}); got {gpus:g}: a trial runs on one node, and would wait forever",
                          file=spec.file, key="resources.gpus")
    return float(gpus)


def _cluster_nodes() -> list[dict[str, float]]:
    """Each alive node's resources, from Ray's public ``ray.nodes()``."""
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
    return [dict(n.get("Resources") or {}) for n in nodes if n.get("Alive")]


def tune_actor_env() -> dict[str, str] | None:
    """Tune's environment for every trial actor, or None where this Ray has none: the one private hook.

    Ray Tune 2.60 keeps it in a private module (imported below); the canary test in
    ``tests/unit/runners/test_ray_prestart.py`` fails when a Ray release moves or changes
    it. Everything else of Ray and Optuna that taskgraph uses is public.
    """
    try:
        from ray.tune.execution import class_cache  # private: see the docstring
    except ImportError:
        return None
    env = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    return env if isinstance(env, dict) else None


@contextlib.contextmanager
def _prestarted_workers() -> Iterator[None]:
    """Let Tune's trial actors start in the worker processes Ray has already booted.

    Ray hands an actor a prestarted (idle, never used) worker only when the actor asks for
    no runtime environment of its own. Tune gives every trial actor one (:func:`tune_actor_env`):
    ``env_vars`` with ``PL_DISABLE_FORK=1``, for PyTorch Lightning, which taskgraph does not
    use. Without it each slot's first trial starts in a worker that booted while the study
    was prepared (``docs/cluster.md`` has the figures). Where the hook is missing, nothing
    changes. Restored on exit.
    """
    env = tune_actor_env()
    if env is None:  # another Ray: keep its defaults
        yield
        return
    saved = dict(env)
    env.pop("PL_DISABLE_FORK", None)
    try:
        yield
    finally:
        env.clear()
        env.update(saved)


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the block; put back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _ctrl_c(pressed: threading.Event) -> Iterator[None]:
    """While the block runs, Ctrl-C sets ``pressed`` and raises KeyboardInterrupt (main thread only).

    The run's callback raises it again at Tune's next step while ``pressed`` is set, so an interrupt
    that lands inside code which swallows it (a library's broad ``except``) still stops the run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        pressed.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: a searcher whose sampler proposed only configurations the study already holds this many times in a row stops
MAX_REPEATS = 50

#: with no rung due, a running trial still sends its curve this often (the dashboard's live view)
LIVE_REPORT_S = 10.0


def report_epochs(budget: BudgetConfig) -> frozenset[int]:
    """The epochs at which ASHA decides (its rungs, as ``ASHAScheduler`` places them), below the last.

    ``budget``: the study's ``[budget]`` (``early_stopping``, ``epochs``, ``grace_epochs``, ``reduction_factor``).

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
    if budget.early_stopping != "asha" or budget.epochs <= budget.grace_epochs:
        return frozenset()
    g, rf, top = budget.grace_epochs, budget.reduction_factor, budget.epochs
    n = int(math.log(top / g) / math.log(rf) + 1)  # ray.tune.schedulers.async_hyperband._Bracket
    return frozenset(e for e in (math.ceil(g * rf ** k) for k in range(n)) if e < top)


def _trainable(config: dict[str, Any], ctx: StudyContext) -> None:
    """The Tune function: one trial.

    Reports at ASHA's rungs (:func:`report_epochs`), at least every :data:`LIVE_REPORT_S`
    seconds, and at its end; each report's ``curve`` holds the ``[epoch, objective]`` pairs
    since the report before, which the searcher writes as the Optuna trial's intermediate
    values. The last report carries the record and the Ray node that ran the trial.
    """
    import ray
    from ray import tune

    from taskgraph.runners.trial import run_trial

    node = ray.get_runtime_context().get_node_id()  # recorded as the trial's ray_node
    spec = ctx.spec
    total = spec.budget.epochs
    names = ctx.task_names
    rungs = report_epochs(spec.budget)
    last: dict[str, Any] = {}
    curve: list[list[float]] = []
    sent = [time.monotonic()]

    def report(epoch: int, values: list[float], metrics: dict[str, Any]) -> None:
        r: dict[str, Any] = {"epoch": epoch, "objective": float(sum(values) / len(values))}
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
        record, model = run_trial(ctx, dict(config), report=report, threads=max(1, int(spec.resources.cpus)))
    except Exception as e:
        failed: dict[str, Any] = {"epoch": total, "objective": math.inf, "failed": 1,
                                  "fail_reason": f"{type(e).__name__}: {e}", "curve": curve, "node": node}
        failed.update({f"loss.{n}": math.inf for n in names})
        tune.report(failed)
        return
    import torch
    from ray.tune import Checkpoint

    final: dict[str, Any] = {**last, "epoch": total, "finished": 1, "record": json.dumps(record.to_dict()),
                             "curve": curve, "node": node}
    if spec.multi_objective:
        final.update({f"loss.{n}": float(v) for n, v in zip(names, record.values)})
    final.setdefault("objective", float(sum(record.values) / len(record.values)))
    with tempfile.TemporaryDirectory() as d:
        torch.save(model.state_dict(), Path(d) / "model.pt")
        (Path(d) / "record.json").write_text(final["record"])
        tune.report(final, checkpoint=Checkpoint.from_directory(d))


def error_reason(trial: Trial) -> str:
    """One line on why a Ray trial errored (a dead worker or node, a raise outside the trial's own try).

    ``RayTrialError: <Ray's message>``, from the exception Tune kept for the trial: its public
    ``Trial.pickled_error_file`` (written on the driver before the callbacks run) or, once
    synced, ``Trial.get_pickled_error()``. E.g. "The actor died unexpectedly ... Worker exit
    type: SYSTEM_ERROR ..." for a worker the OOM killer took; for an exception the trial
    function raised, that exception's type and message.
    """
    import cloudpickle

    err: object = None
    loads: tuple[Callable[[], object], ...] = (lambda: Path(trial.pickled_error_file).read_bytes(),
                                               trial.get_pickled_error)
    for load in loads:
        try:
            got = load()
            err = cloudpickle.loads(got) if isinstance(got, bytes) else got
        except Exception:  # not written, or not readable: try the next
            continue
        if err is not None:
            break
    text = ""
    if err is not None:
        cause = getattr(err, "cause", None)  # a RayTaskError wraps what the trial raised
        text = f"{type(cause).__name__}: {cause}" if isinstance(cause, Exception) else str(err)
    text = " ".join(text.split())
    if not text:
        return "RayTrialError: the Ray trial raised or its worker died; see the Ray logs"
    return f"RayTrialError: {text}"[:500]


def make_searcher(study: optuna.Study, ctx: StudyContext, store: FileSystemArtifactStore, *, budget: int,
                  storage: BaseStorage | None = None, log: Callable[[str], None] = print) -> StudySearcherLike:
    """A :class:`StudySearcher` over ``study`` (built here: Ray Tune is imported only when the runner runs).

    ``storage``: the study's storage; with heartbeats (an RDB storage opened by
    :func:`~taskgraph.runners.storage.open_storage`), every trial this driver runs records its
    heartbeat, so another driver or a ``--resume`` fails and retries it only once this driver is gone.
    """
    from optuna.trial import TrialState
    from ray.tune.search import Searcher

    from taskgraph.runners.storage import (
        INTERRUPTED,
        TrialRecord,
        budget_ahead,
        fail_stale,
        find_duplicate,
        heartbeat,
        heartbeat_settings,
        others_running,
        record_failure,
        record_skip,
        record_start,
        record_success,
    )
    from taskgraph.runners.trial import start_attrs

    class StudySearcher(Searcher):
        """A Tune ``Searcher`` over Optuna's ask/tell: one Optuna trial per Tune trial, closed with its true state.

        As the local runner, it fails and queues again the trials of drivers that are gone (their
        heartbeat went stale), and once the study's budget is held it waits (``suggest`` returns
        None, Tune asks again) while other drivers' trials still run: a retry of one may fall to it.

        Attributes:
            live: Tune trial id → its Optuna trial, from :meth:`suggest` until the trial is told.
            beats: Tune trial id → the heartbeat of its Optuna trial, while it is live.
            numbers: Tune trial id → Optuna trial number, for every trial it started.
        """

        def __init__(self, study: optuna.Study, ctx: StudyContext, store: FileSystemArtifactStore, budget: int,
                     storage: BaseStorage | None, log: Callable[[str], None]) -> None:
            # everything arrives as arguments: Tune pickles this class by value (tuner.pkl), with the
            # variables its methods close over, and the storage must not travel (its URL may hold a password)
            multi = ctx.spec.multi_objective
            names = ctx.task_names
            # Tune's annotation says str; a list (one per objective) is what a multi-objective study needs
            super().__init__(metric=[f"loss.{n}" for n in names] if multi else "objective",  # type: ignore[arg-type]
                             mode=["min"] * len(names) if multi else "min")  # type: ignore[arg-type]
            self.study = study
            self.ctx = ctx
            self.store = store
            self.budget = budget  # the study's: shared by every driver
            self.log = log
            self.labels = ctx.grouping_labels()
            self.storage = storage
            self.live: dict[str, optuna.Trial] = {}
            self.beats: dict[str, TrialHeartbeat | None] = {}
            self.numbers: dict[str, int] = {}
            self.reported: set[tuple[str, int]] = set()
            self.interval = heartbeat_settings()[0]
            self.next_look = 0.0  # when suggest next looks for other drivers' stale or running trials
            self.waiting_said = False

        def start_beating(self, ot: optuna.Trial) -> TrialHeartbeat | None:
            """Record ``ot``'s heartbeat from now until it is told; returns the heartbeat."""
            return heartbeat(self.storage, self.study.study_name, ot.number).start() if self.storage else None

        def others_live(self) -> list[int]:
            """Trials of other drivers that may still end, or fail and be queued again (stale ones failed now)."""
            stale = fail_stale(self.study)
            if stale:
                self.log(f"ray runner: trial(s) {stale} lost their driver (no heartbeat for the grace period): "
                         f"marked FAIL and queued again")
            mine = {ot.number for ot in self.live.values()}
            return [n for n in others_running(self.study) if n not in mine]

        # Tune's annotation omits Searcher.FINISHED, the str that ends the search
        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
            """A configuration the study does not hold yet, while the study's budget lasts (as the local runner).

            A trial asked for once other drivers' trials hold the budget, or one whose configuration
            the study already holds, is closed as FAIL ``skipped: ...`` (it never counts).
            """
            now = time.monotonic()
            if now < self.next_look:
                return None  # waiting for other drivers' trials: Tune asks again
            others = self.others_live()
            for _ in range(MAX_REPEATS):
                if budget_ahead(self.study) >= self.budget:
                    if not others:
                        return Searcher.FINISHED
                    if not self.waiting_said:
                        self.log(f"ray runner: waiting for trial(s) {others} of other drivers to finish (or, if "
                                 f"their driver is gone, to be queued again)")
                        self.waiting_said = True
                    self.next_look = now + self.interval
                    return None
                # a trial closed here as skipped lives milliseconds: only a trial that will run gets a heartbeat
                ot = self.study.ask()
                if budget_ahead(self.study, ot.number) >= self.budget:  # another driver asked first
                    record_skip(ot, "the study's budget was already held by other drivers' trials", study=self.study)
                    return Searcher.FINISHED if not others else None
                try:
                    params = space_of(self.ctx.spec).suggest(ot, tasks=self.ctx.task_names, groupings=self.labels)
                except BaseException:
                    record_skip(ot, "no configuration was drawn", study=self.study)
                    raise
                dup = find_duplicate(self.study, params, number=ot.number)
                if dup is None:
                    self.live[trial_id] = ot
                    self.beats[trial_id] = self.start_beating(ot)
                    self.numbers[trial_id] = ot.number
                    record_start(ot, start_attrs(self.ctx, params))
                    return dict(params)
                record_skip(ot, f"the sampler proposed trial {dup}'s configuration again", study=self.study)
            self.log(f"ray runner: the sampler proposed only configurations the study already holds, {MAX_REPEATS} "
                     f"times in a row: the search space looks exhausted; no more trials are started")
            return Searcher.FINISHED

        def __getstate__(self) -> dict[str, Any]:
            # Tune pickles the search algorithm into its experiment folder (tuner.pkl, for Tuner.restore, which
            # taskgraph does not use: --resume reads the study's storage). The study and its trials hold the
            # storage URL with its password: they stay on the driver.
            state = self.__dict__.copy()
            state.update(study=None, store=None, ctx=None, log=None, live={}, storage=None, beats={})
            return state

        def save(self, checkpoint_path: str) -> None:
            # the study's storage is the record a resume reads; Tune's copy of the searcher is not needed
            Path(checkpoint_path).write_bytes(b"")

        def restore(self, checkpoint_path: str) -> None:
            pass

        def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
            """Write the epochs since the trial's last report (its ``curve``) as Optuna intermediate values."""
            ot = self.live.get(trial_id)
            if ot is None:
                return
            if self.ctx.spec.multi_objective:
                return
            for epoch, value in result.get("curve") or ():
                key = (trial_id, int(epoch))
                if key not in self.reported and math.isfinite(value):
                    ot.report(float(value), key[1])
                    self.reported.add(key)

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            """Close the trial: COMPLETE with its record, FAIL with its reason, PRUNED when ASHA stopped it.

            A trial Ray reports as errored (``error``) stays open: :meth:`fail`, called by
            :class:`StudyCallback` right after this, records Ray's reason.
            """
            ot = self.live.get(trial_id)
            if ot is None or error:
                return
            result = result or {}
            state: TrialState = TrialState.PRUNED
            values: list[float] | None = None
            # when the scheduler decides STOP (ASHA's cut, or max_t reached) Tune skips on_trial_result;
            # a failed trial's report carries the curve it trained before it failed
            self.on_trial_result(trial_id, result)
            try:
                if result.get("node"):
                    ot.set_user_attr("ray_node", str(result["node"]))
                if result.get("failed"):
                    record_failure(ot, str(result.get("fail_reason", "failed")))
                    state = TrialState.FAIL
                elif result.get("finished"):
                    record = TrialRecord.from_dict(json.loads(result["record"]))
                    record_success(ot, record, self.store)
                    state, values = TrialState.COMPLETE, record.values
                # else: ASHA stopped it before its last epoch -> PRUNED
            except Exception as e:  # recording must never lose the trial
                record_failure(ot, f"recording failed: {type(e).__name__}: {e}")
                state, values = TrialState.FAIL, None
            self.close(trial_id, state, values)

        def fail(self, trial_id: str, reason: str) -> None:
            """Close a trial still open as FAIL with ``reason`` (Ray's, or ``interrupted: ...``)."""
            ot = self.live.get(trial_id)
            if ot is None:
                return
            try:
                record_failure(ot, reason)
            except Exception as e:  # e.g. another driver closed it: tell() below skips it
                self.log(f"ray runner: trial {ot.number}: its failure could not be recorded ({type(e).__name__}: "
                         f"{e}); reason: {reason}")
            self.close(trial_id, TrialState.FAIL, None)

        def interrupt(self, why: str) -> list[int]:
            """Close every trial still open as FAIL ``interrupted: <why>``; return their numbers."""
            numbers = sorted(ot.number for ot in self.live.values())
            for trial_id in list(self.live):
                self.fail(trial_id, f"{INTERRUPTED} {why}")
            return numbers

        def close(self, trial_id: str, state: TrialState, values: list[float] | None) -> None:
            """Tell the study the trial's end (once; a trial another driver already closed is left as it is)."""
            ot = self.live.pop(trial_id)
            told: float | list[float] | None = values
            if values is not None and len(values) == 1:
                told = values[0]
            try:
                self.study.tell(ot, told, state=state, skip_if_finished=True)
            finally:
                beat = self.beats.pop(trial_id, None)
                if beat:
                    beat.stop()

    return StudySearcher(study, ctx, store, budget, storage, log)


def _study_callback(searcher: StudySearcherLike, progress: Progress,
                    pressed: threading.Event | None = None) -> Callback:
    """The run's Tune callback (driver-side only: it pickles to nothing)."""
    from ray import tune

    class StudyCallback(tune.Callback):
        """Records errored trials' reasons in the study (``on_trial_error``); prints a line per finished trial;
        stops the run at Tune's next step once Ctrl-C was pressed (``pressed``)."""

        def __init__(self, searcher: StudySearcherLike | None, progress: Progress | None,
                     pressed: threading.Event | None) -> None:
            self.searcher = searcher
            self.progress = progress
            self.pressed = pressed

        def __getstate__(self) -> dict[str, Any]:
            return {}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.searcher = self.progress = None
            self.pressed = None

        def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
            if self.pressed is not None and self.pressed.is_set():
                raise KeyboardInterrupt

        def finished(self, trial: Trial) -> None:
            if self.searcher is None or self.progress is None:
                return
            number = self.searcher.numbers.get(trial.trial_id)
            if number is not None:
                study = self.searcher.study
                self.progress.trial_finished(study, study.get_trials(deepcopy=False)[number])

        def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            self.finished(trial)

        def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            if self.searcher is not None:
                self.searcher.fail(trial.trial_id, error_reason(trial))
            self.finished(trial)

    return StudyCallback(searcher, progress, pressed)


def run_ray(spec: StudyConfig, *, resume: bool = False, join: bool = False, address: str | None = None,
            log: Callable[[str], None] = print, console: Console | None = None) -> RunSummary:
    """Run ``spec`` with Ray Tune; every trial lands in the study's Optuna storage.

    Args:
        spec: a :class:`~taskgraph.search.StudySpec`.
        resume: continue a study whose driver died.
        join: add this driver to a study others are running (RDB storage).
        address: a Ray cluster to connect to (default: the job's cluster, or a local Ray).

    Returns:
        A :class:`RunSummary` (``errors`` lists trials Ray itself reported as errored).

    Raises:
        ConfigError: ``resources.cpus``/``gpus`` above what one node of the cluster offers, before
            the study is created.
        KeyboardInterrupt: Ctrl-C; the running trials are recorded FAIL ``interrupted: ...`` first.
    """
    t0 = time.perf_counter()
    connect = address or os.environ.get("RAY_ADDRESS")
    if not connect:  # a local Ray: the machine is the cluster, checked before Ray starts
        check_resources(spec, [{"CPU": _machine_cpus()}], where="a local Ray (this machine)")
    # Ray boots (its own processes, the workers it prestarts) while the study is prepared; started
    # after the preparation, its start-up competed with the first trial of every slot
    started = init_ray(address, num_cpus=_local_cpus(spec.resources))  # num_cpus: only for a local Ray started here
    import ray

    try:
        gpus = check_resources(spec, _cluster_nodes(),
                               where=f"the Ray cluster at {connect}" if connect else "a local Ray (this machine)")
        run = open_run(spec, resume=resume, join=join, log=log)
        if run.remaining == 0:
            log(f"study {spec.name!r} already has {spec.budget.trials} finished trial(s); nothing to run")
            return summarize(run, time.perf_counter() - t0)
        from ray import tune
        from ray.tune.logger import JsonLoggerCallback
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        ctx = run.ctx
        budget, resources = spec.budget, spec.resources
        searcher = make_searcher(run.study, ctx, run.store, budget=budget.trials, storage=run.storage, log=log)
        scheduler: TrialScheduler
        if budget.early_stopping == "asha" and budget.epochs > budget.grace_epochs:
            scheduler = ASHAScheduler(time_attr="epoch", metric="objective", mode="min", max_t=budget.epochs,
                                      grace_period=budget.grace_epochs, reduction_factor=budget.reduction_factor)
        else:
            scheduler = FIFOScheduler()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
        if resources.gpus and not gpus:
            log(f"ray runner: no GPU in the cluster; trials run on CPU ({resources.gpus} GPU per trial asked)")
        trainable = tune.with_resources(tune.with_parameters(_trainable, ctx=ctx),
                                        {"cpu": resources.cpus, "gpu": gpus})
        progress = Progress(spec, run.spec.budget.trials - run.remaining, console=console)

        log(f"ray runner: {run.remaining} trial(s), {resources.concurrent} at a time, {resources.cpus:g} CPU"
            f"{f' + {gpus:g} GPU' if gpus else ''} each, ASHA={'on' if budget.early_stopping == 'asha' else 'off'}")
        pressed = threading.Event()  # Ctrl-C, seen by _ctrl_c and the run's callback
        tuner = tune.Tuner(
            trainable,
            # make_searcher's class is a Tune Searcher (made there, so that Ray is imported only when a run starts)
            tune_config=tune.TuneConfig(search_alg=cast("Searcher", searcher), scheduler=scheduler,
                                        num_samples=run.remaining, max_concurrent_trials=resources.concurrent,
                                        time_budget_s=budget.wall_time_s,
                                        reuse_actors=True),  # one worker process per slot: torch imported once
            run_config=tune.RunConfig(
                name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(Path(spec.storage.run_dir) / "ray"),
                verbose=0,
                # each trial's result.json; Tune's other default loggers are off (TUNE_FIT_ENV)
                callbacks=[_study_callback(searcher, progress, pressed),
                           JsonLoggerCallback()],  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        # Ctrl-C raises KeyboardInterrupt here instead of Tune's handler keeping the trials for Tuner.restore;
        # a variable the user set wins
        with _environ(**{k: os.environ.get(k, v) for k, v in TUNE_FIT_ENV.items()}), _prestarted_workers(), \
                _ctrl_c(pressed):
            try:
                grid = tuner.fit()
            except KeyboardInterrupt:
                stopped = searcher.interrupt("the driver was interrupted")
                log(f"ray runner: interrupted; trial(s) {stopped} recorded FAIL (interrupted)")
                raise
            except BaseException as e:
                searcher.interrupt(f"the driver stopped on {type(e).__name__}: {e}")
                raise
        left = searcher.interrupt("Tune ended the run before the trial finished")
        if left:
            log(f"ray runner: trial(s) {left} were still open when Tune ended; recorded FAIL (interrupted)")
        errors = [f"{type(e).__name__}: {e}".splitlines()[0] for e in grid.errors]
    finally:
        if started:
            ray.shutdown()
    return summarize(run, time.perf_counter() - t0, errors)
