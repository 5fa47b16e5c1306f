"""The study's storage: open it, create or resume the study, record trials and artifacts.

Only the runners touch the Optuna storage and the artifact store, and only
through these functions, so the local runner and the Ray Tune runner record
trials identically: params, values and intermediate values by Optuna; user
attrs (grouping, topology, weighting, seed, package versions, per-task
metrics) and artifacts (per-task metrics CSV, grouping JSON) here.

Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> storage = open_storage(f"sqlite:///{d}/s.db")
    >>> type(storage).__name__
    'RDBStorage'
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import platform
import re
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Self

from taskgraph.exceptions import StorageError

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.storages import BaseStorage, RDBStorage
    from optuna.trial import FrozenTrial

    from taskgraph.runners.common import StudyConfig

__all__ = [
    "HEARTBEAT_MARK",
    "PREPARING",
    "PrepareBeat",
    "INTERRUPTED",
    "SKIPPED",
    "TrialHeartbeat",
    "TrialRecord",
    "artifact_store",
    "budget_ahead",
    "count_finished",
    "create_or_load_study",
    "driver_seed",
    "fail_reason",
    "fail_stale",
    "find_duplicate",
    "heartbeat",
    "heartbeat_settings",
    "in_memory_sqlite",
    "interrupted_numbers",
    "mask_url",
    "open_storage",
    "open_study",
    "others_running",
    "package_versions",
    "preparer_alive",
    "record_failure",
    "record_skip",
    "record_start",
    "record_success",
    "retry_map",
    "recover_interrupted",
    "scrub",
    "state_counts",
    "storage_from_arg",
    "trial_id",
]

#: fail_reason prefix of trials whose driver died; they do not count against the budget
INTERRUPTED = "interrupted:"
#: fail_reason prefix of trials that never trained (a configuration the study already holds, or a
#: trial asked for after other drivers spent the budget); they do not count against the budget
SKIPPED = "skipped:"
#: system attr a trial gets when its driver starts recording its heartbeat (:class:`TrialHeartbeat`)
HEARTBEAT_MARK = "taskgraph:heartbeat"
#: a trial whose driver died this many times is not retried again: it counts as FAIL
MAX_RETRY = 2


#: the keys of a URL's query that may carry a password (libpq's, MySQL drivers')
_SECRET_QUERY_KEYS = ("password", "passwd", "pwd")
#: ``scheme://user:PASSWORD@`` in a string SQLAlchemy cannot parse
_USERINFO = re.compile(r"(://[^/?#@:\s]*:)[^/?#@\s]*@")


def mask_url(url: str) -> str:
    """``url`` as it may be printed, logged or stored: its password replaced by ``***``.

    Uses SQLAlchemy's ``URL.render_as_string(hide_password=True)``; a password passed as a
    query parameter (``?password=...``) is hidden too. A URL without a password is returned
    unchanged (character for character), and one SQLAlchemy cannot parse has whatever stands
    between ``user:`` and ``@`` hidden.

    Example:
        >>> mask_url("postgresql://optuna:s3cret@db:5432/studies")
        'postgresql://optuna:***@db:5432/studies'
        >>> mask_url("sqlite:////tmp/study.db")
        'sqlite:////tmp/study.db'
    """
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:  # not a URL SQLAlchemy parses: hide the userinfo's password by pattern
        return _USERINFO.sub(r"\1***@", url)
    secret_query = {k: "***" for k in u.query if k.lower() in _SECRET_QUERY_KEYS}
    if u.password is None and not secret_query:
        return url
    if secret_query:
        u = u.update_query_dict(secret_query)
    return u.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def _secrets(url: str) -> list[str]:
    """The password(s) ``url`` holds, raw and percent-decoded, longest first."""
    from urllib.parse import unquote

    out: list[str] = []
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        out += [str(u.password)] if u.password is not None else []
        out += [str(v) for k, v in u.query.items() if k.lower() in _SECRET_QUERY_KEYS]
    except Exception:
        pass
    m = _USERINFO.search(url)
    if m:
        raw = url[m.end(1):m.end() - 1]
        out += [raw, unquote(raw)]
    for k, v in re.findall(r"[?&](\w+)=([^&#\s]*)", url):
        if k.lower() in _SECRET_QUERY_KEYS:
            out += [v, unquote(v)]
    return sorted({s for s in out if s}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with ``url``'s password replaced by ``***`` where it stands as a password (for messages quoting a URL).

    Only whole occurrences are replaced: the full ``url`` (by :func:`mask_url`'s form), and each
    password where it stands as one: ``:PASSWORD@`` (a URL's userinfo) or ``password=PASSWORD``
    (a query or a libpq connection string). A short password (``p``) thus never blanks the same
    letters elsewhere in the text.

    Example:
        >>> scrub("psycopg.OperationalError: postgresql://u:p@h/db: no pg_hba entry", "postgresql://u:p@h/db")
        'psycopg.OperationalError: postgresql://u:***@h/db: no pg_hba entry'
    """
    secrets = _secrets(url)
    if not secrets:
        return text
    text = text.replace(url, mask_url(url))
    alternatives = "|".join(re.escape(s) for s in secrets)  # longest first: a prefix never wins over the whole
    text = re.sub(rf"(:)(?:{alternatives})(@)", r"\1***\2", text)
    keys = "|".join(_SECRET_QUERY_KEYS)
    return re.sub(rf"(?i)(\b(?:{keys})\s*=\s*['\"]?)(?:{alternatives})(?=$|[&'\"\s;,)#])", r"\1***", text)


def in_memory_sqlite(url: str) -> bool:
    """True for a SQLite URL whose database lives in memory (``sqlite://``, ``sqlite:///:memory:``, ``mode=memory``).

    Such a study vanishes when its driver exits, and no dashboard, report or second driver can open it.

    Example:
        >>> in_memory_sqlite("sqlite://"), in_memory_sqlite("sqlite:///:memory:"), in_memory_sqlite("sqlite:///a.db")
        (True, True, False)
    """
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:
        return False
    if not u.drivername.startswith("sqlite"):
        return False
    db = u.database or ""
    return db in ("", ":memory:") or "mode=memory" in db or u.query.get("mode") == "memory"


def open_storage(url: str, *, file: str | None = None, key: str | None = "storage.url") -> RDBStorage:
    """An Optuna ``RDBStorage`` on ``url``; an unreachable storage is a :class:`StorageError`.

    A SQLite file's folder is created when missing. This is the one place a storage URL's
    password is used; every message shows the URL with it masked (:func:`mask_url`).
    """
    import optuna

    shown = mask_url(url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(_where(f"the storage {shown!r} must be a writable SQLite path: {e.strerror}",
                                          file, key)) from None
    try:
        return _rdb_storage(optuna, url)
    except Exception as e:  # sqlalchemy/driver errors: unreachable host, bad credentials, missing driver
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(_where(f"the storage {shown!r} must be reachable; got {type(e).__name__}: "
                                  f"{scrub(msg, url)}", file, key)) from None


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: 10 and 60, or ``TASKGRAPH_HEARTBEAT_S`` / ``_GRACE_S``.

    A driver records each running trial's heartbeat every interval; a RUNNING trial whose
    last heartbeat is older than the grace period belongs to a driver that is gone.

    Example:
        >>> heartbeat_settings() if "TASKGRAPH_HEARTBEAT_S" not in os.environ else (10, 60)
        (10, 60)
    """
    from taskgraph.exceptions import ConfigError

    out = []
    for name, default in (("TASKGRAPH_HEARTBEAT_S", 10), ("TASKGRAPH_HEARTBEAT_GRACE_S", 60)):
        raw = os.environ.get(name, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"the environment variable {name} must be a whole number of seconds >= 1; got {raw!r}")
        out.append(value)
    interval, grace = out
    if grace <= interval:
        raise ConfigError(f"TASKGRAPH_HEARTBEAT_GRACE_S must exceed TASKGRAPH_HEARTBEAT_S (a live driver beats "
                          f"once per interval); got grace {grace} s, interval {interval} s")
    return interval, grace


#: the system-attr key prefix of Optuna's artifact links (``optuna.artifacts.upload_artifact`` writes one per
#: artifact; a canary test checks it): a retry must not inherit its dead trial's artifacts
ARTIFACT_LINK_PREFIX = "artifacts:"


class _RetryStale:
    """Optuna's ``RetryHeartbeatStaleTrialCallback`` whose retry also carries ``retry_of`` (a user attr).

    Called by ``optuna.storages.fail_stale_trials`` for each trial it failed: the trial's
    configuration is queued again (WAITING) at most :data:`MAX_RETRY` times. The retry starts
    without the dead trial's artifact links (Optuna's callback copies every system attr, so a
    trial killed after uploading its artifacts, before it was told, would hand them on and the
    retry would show two sets).
    """

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning: the class is public, stable since 2.8
            from optuna.storages import RetryHeartbeatStaleTrialCallback

            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        import copy

        t = copy.deepcopy(trial)
        t.user_attrs = {**trial.user_attrs, "retry_of": trial.number}
        t.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith(ARTIFACT_LINK_PREFIX)}
        self._retry(study, t)


def _rdb_storage(optuna: ModuleType, url: str, attempts: int = 5) -> RDBStorage:
    """``RDBStorage(url)`` with heartbeats, retried when another driver is creating the same schema right now.

    Two drivers that open a new storage at once can both find the schema missing
    and one then fails creating it ("table ... already exists", or a UNIQUE
    constraint on the schema's version row); the schema is complete a moment
    later, so opening again succeeds.
    """
    import time

    from sqlalchemy.exc import IntegrityError

    interval, grace = heartbeat_settings()
    # ask/tell drivers record heartbeats themselves (TrialHeartbeat); Optuna warns on every ask that it
    # expects study.optimize, which is not true of this project
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning for heartbeat_interval
                storage: RDBStorage = optuna.storages.RDBStorage(
                    url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=interval, grace_period=grace,
                    heartbeat_stale_trial_callback=_RetryStale())
                return storage
        except Exception as e:
            racing = isinstance(e, IntegrityError) or "already exists" in str(e) or "database is locked" in str(e)
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # several processes (a driver, the dashboard, a report) share the file
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def _where(msg: str, file: str | None, key: str | None) -> str:
    parts = [p for p in (file, f"key {key!r}" if key else None) if p]
    return msg + (f" [{', '.join(parts)}]" if parts else "")


def storage_from_arg(arg: str) -> tuple[str, str | None]:
    """``STORAGE`` of the CLI → (RDB URL, default artifact folder or None).

    Accepts an RDB URL, a ``.db`` file, or a study folder holding ``study.db``.
    """
    if "://" in arg:
        if in_memory_sqlite(arg):
            raise StorageError(f"STORAGE must be a database that outlives a process; {arg!r} is an in-memory "
                               f"SQLite database, which holds no study")
        if arg.startswith("sqlite:///"):
            p = Path(arg[len("sqlite:///"):])
            return arg, str(p.parent / "artifacts")
        return arg, None
    p = Path(arg)
    if p.is_dir():
        p = p / "study.db"
    if not p.is_file():
        raise StorageError(f"STORAGE must be an RDB URL, a SQLite .db file or a folder holding study.db; "
                           f"nothing at {arg!r}")
    return f"sqlite:///{p.resolve()}", str(p.resolve().parent / "artifacts")


def artifact_store(directory: str | Path) -> FileSystemArtifactStore:
    """An ``optuna.artifacts.FileSystemArtifactStore`` in ``directory`` (created)."""
    from optuna.artifacts import FileSystemArtifactStore

    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"the artifact folder {str(d)!r} must be writable: {e.strerror}") from None
    return FileSystemArtifactStore(str(d))


def package_versions() -> dict[str, str]:
    """Versions of what a trial's result depends on (read once per process: every trial stores them)."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> tuple[tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version

    out = [("python", platform.python_version())]
    for pkg in ("taskgraph-mtl", "torch", "optuna", "ray", "numpy"):
        try:
            out.append((pkg, version(pkg)))
        except PackageNotFoundError:
            continue
    return tuple(out)


def metric_names(objective: str, task_names: Iterable[str]) -> list[str]:
    """What the study's objective values are, for the dashboard (lower is better for all of them).

    Example:
        >>> metric_names("per_task", ["a", "b"])
        ['val_loss[a]', 'val_loss[b]']
        >>> metric_names("delta_m", ["a", "b"])
        ['val_delta_m_pct']
    """
    if objective == "per_task":
        return [f"val_loss[{t}]" for t in task_names]
    return ["val_delta_m_pct" if objective == "delta_m" else "val_loss"]


def open_study(spec: StudyConfig, storage: BaseStorage, *, n_tasks: int, resume: bool, join: bool = False,
               sampler: optuna.samplers.BaseSampler | None = None, pruner: optuna.pruners.BasePruner | None = None,
               task_names: Sequence[str] | None = None) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when resuming/joining (its definition must match the file); → (study, created).

    Creation is atomic (the storage's unique study name): of several drivers started at the
    same moment on a new study exactly one creates it (``created`` True) and the others load
    that one. A new study names its objective values (Optuna's ``set_metric_names``), so the
    dashboard shows ``val_loss`` rather than "Objective 0"; ``task_names`` name the per-task values.

    Raises:
        StorageError: the study exists and neither ``resume`` nor ``join`` was asked, or
            the stored study was made from a different study definition.
    """
    import optuna
    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    directions = [StudyDirection[d.upper()] if isinstance(d, str) else d for d in spec.directions(n_tasks)]
    try:
        storage.create_new_study(directions=directions, study_name=spec.name)
        created = True
    except DuplicatedStudyError:
        created = False
    if not created and not (resume or join):
        raise StorageError(
            f"study {spec.name!r} already exists in {spec.storage.shown}; pass --join to add a driver to it "
            f"while it runs, --resume to continue it (trials whose driver is gone are run again; a live driver is "
            f"left alone), or give the study another 'name' [{spec.file}, key 'name']")
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)
    if not created:
        stored = study.user_attrs.get("fingerprint")
        if stored is not None and stored != spec.fingerprint():
            raise StorageError(
                f"study {spec.name!r} in {spec.storage.shown} was made from a different study definition "
                f"(fingerprint {stored} != {spec.fingerprint()}); resume with the same file or rename the study "
                f"[{spec.file}, key 'name']")
    else:
        study.set_user_attr("fingerprint", spec.fingerprint())
        study.set_metric_names(metric_names(spec.search.objective, task_names or [f"task{i}" for i in range(n_tasks)]))
        study.set_user_attr("config", spec.to_dict())
        study.set_user_attr("versions", package_versions())
    return study, created


def create_or_load_study(spec: StudyConfig, storage: BaseStorage, *, n_tasks: int, resume: bool, join: bool = False,
                         sampler: optuna.samplers.BaseSampler | None = None,
                         pruner: optuna.pruners.BasePruner | None = None,
                         task_names: Sequence[str] | None = None) -> optuna.Study:
    """:func:`open_study`'s study alone."""
    return open_study(spec, storage, n_tasks=n_tasks, resume=resume, join=join, sampler=sampler, pruner=pruner,
                      task_names=task_names)[0]


def trial_id(storage: BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` of study ``study_name`` (public storage API only)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


class _Beat:
    """Calls :meth:`beat` at once and then every ``interval`` seconds in a daemon thread until stopped
    (a context manager too). A failing beat (a busy or briefly unreachable database) is tried again
    next interval."""

    interval: float
    _thread_name = "taskgraph-beat"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        raise NotImplementedError

    def _first(self) -> None:
        self.beat()

    def start(self) -> Self:
        """Beat now, then keep beating in a daemon thread; returns self."""
        if self._thread is None:
            self._first()
            self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a busy or briefly unreachable database: beat again next interval
                continue

    def stop(self) -> None:
        """Stop beating; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TrialHeartbeat(_Beat):
    """Records a running trial's heartbeat in the storage every interval, in a background thread, until stopped.

    A driver wraps each trial it runs, from just after ``study.ask()`` to just after
    ``study.tell()``; a RUNNING trial whose heartbeat is older than the storage's grace period
    (:func:`heartbeat_settings`) then belongs to a dead driver, and ``--resume`` or any other
    driver fails and retries it (``optuna.storages.fail_stale_trials``) while the trials of
    live drivers are left alone. Starting marks the trial (system attr :data:`HEARTBEAT_MARK`)
    and records a first heartbeat at once. A storage without heartbeats makes this a no-op.

    Example:
        >>> import tempfile, optuna
        >>> storage = open_storage(f"sqlite:///{tempfile.mkdtemp()}/s.db")
        >>> study = optuna.create_study(storage=storage, study_name="s")
        >>> trial = study.ask()
        >>> with heartbeat(storage, "s", trial.number):
        ...     _ = study.tell(trial, 1.0)
        >>> study.trials[0].system_attrs[HEARTBEAT_MARK] == heartbeat_settings()[0]  # its interval, in seconds
        True
    """

    def __init__(self, storage: BaseStorage, study_name: str, number: int):
        super().__init__()
        # a storage with heartbeats (an RDBStorage: Optuna's heartbeat interface) when ``interval`` is set
        self.storage: Any = storage
        self.number = number
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self.interval = float(interval or 0)
        self._mark = interval  # stored as the storage gives it (a whole number of seconds)
        self._id = trial_id(storage, study_name, number) if interval else None
        self._thread_name = f"taskgraph-heartbeat-{number}"

    def start(self) -> Self:
        """Mark the trial and record its first heartbeat, then keep beating in a daemon thread; returns self.
        A storage without heartbeats: nothing."""
        return self if self._id is None else super().start()

    def _first(self) -> None:
        self.storage.set_trial_system_attr(self._id, HEARTBEAT_MARK, self._mark)
        self.beat()

    def beat(self) -> None:
        self.storage.record_heartbeat(self._id)


#: study user attr of the driver running the prepare stage: ``{"beat": unix seconds, "host", "pid"}``
PREPARING = "taskgraph:preparing"


class PrepareBeat(_Beat):
    """The prepare stage's heartbeat: the study user attr :data:`PREPARING` refreshed every interval.

    The prepare stage runs once per study, for minutes; a driver that joins or resumes the study
    meanwhile waits for it while the beat is fresh (:func:`preparer_alive`), and prepares itself
    when the beat is older than the grace period (the preparing driver died). The times are the
    drivers' own clocks (unix seconds): drivers on several machines need clocks that agree to well
    within the grace period (60 s by default).

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> with PrepareBeat(study):
        ...     preparer_alive(study)
        True
    """

    _thread_name = "taskgraph-prepare-beat"

    def __init__(self, study: optuna.Study, interval: float | None = None):
        import socket

        super().__init__()
        self.study = study
        self.interval = float(interval if interval is not None else heartbeat_settings()[0])
        self._mark = {"host": socket.gethostname(), "pid": os.getpid()}

    def beat(self) -> None:
        import time

        self.study.set_user_attr(PREPARING, {**self._mark, "beat": time.time()})


def preparer_alive(study: optuna.Study, grace: float | None = None) -> bool:
    """Whether a driver is running ``study``'s prepare stage now: its :class:`PrepareBeat` is at most
    ``grace`` seconds old (default: :func:`heartbeat_settings`' grace period)."""
    import time

    mark = study.user_attrs.get(PREPARING)
    if not isinstance(mark, dict) or not isinstance(mark.get("beat"), int | float):
        return False
    return time.time() - float(mark["beat"]) <= float(grace if grace is not None else heartbeat_settings()[1])


def heartbeat(storage: BaseStorage, study_name: str, number: int) -> TrialHeartbeat:
    """A :class:`TrialHeartbeat` for trial ``number``: use it as ``with heartbeat(storage, name, number): ...``."""
    return TrialHeartbeat(storage, study_name, number)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for its public, long-stable heartbeat helpers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def fail_stale(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of ``study`` whose driver stopped beating, each queued again (:class:`_RetryStale`).

    Safe at any time, from any driver: a trial with a fresh heartbeat is never touched.
    Returns the numbers of the trials failed now.
    """
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
              if HEARTBEAT_MARK in t.system_attrs}
    if not before:
        return []
    with _quiet():
        fail_stale_trials(study)
    # failed here, not by its own driver (which gives every FAIL a fail_reason); retried unless MAX_RETRY was reached
    return sorted(t.number for t in study.get_trials(deepcopy=False)
                  if t.number in before and t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs)


def recover_interrupted(study: optuna.Study, storage: BaseStorage, *, resume: bool = True) -> list[int]:
    """Fail the RUNNING trials whose driver is gone and queue their configurations again; → their numbers.

    A trial with heartbeats (:class:`TrialHeartbeat`) is failed only once its heartbeat is older
    than the grace period (``optuna.storages.fail_stale_trials`` with a retry callback), so a
    live driver is never disturbed. With ``resume``, a RUNNING trial that never had a heartbeat
    (its driver recorded none: an older taskgraph, or a runner without heartbeats) and started
    over an interval ago is taken to be dead, as the user said by resuming: it gets
    ``fail_reason = "interrupted: ..."`` and its configuration is enqueued with ``retry_of``.
    """
    import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    marked = fail_stale(study)
    if not resume:
        return marked
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)() or 0
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if HEARTBEAT_MARK in t.system_attrs or (t.datetime_start and
                                                (now - t.datetime_start).total_seconds() < interval):
            continue  # monitored by its heartbeat, or so new that its driver may not have marked it yet
        tid = trial_id(storage, study.study_name, t.number)
        try:
            storage.set_trial_user_attr(tid, "fail_reason",
                                        f"{INTERRUPTED} its driver stopped before the trial finished; "
                                        f"re-run by --resume")
            storage.set_trial_state_values(tid, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # it finished meanwhile
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        marked.append(t.number)
    return sorted(marked)


def fail_reason(t: FrozenTrial, retries: Mapping[int, int] | None = None) -> str | None:
    """Why FAIL trial ``t`` failed, in one line: its ``fail_reason`` user attr, else (a trial failed by
    another driver because its heartbeat stopped: Optuna closes it, and a finished trial takes no more
    attributes) a reason said here, with the trial that retried it when ``retries`` (``{retry_of: number}``
    over the study's trials) knows one. None for a trial that did not fail.

    Example:
        >>> import optuna
        >>> t = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
        ...                               system_attrs={HEARTBEAT_MARK: True})
        >>> fail_reason(t, {t.number: 7})
        'driver lost: its heartbeat stopped (the driver or its node died); retried as trial 7'
        >>> fail_reason(t, {}).split("; ")[1]
        'not retried (it was retried 2 times already)'
    """
    from optuna.trial import TrialState

    if t.state != TrialState.FAIL:
        return None
    given = t.user_attrs.get("fail_reason")
    if given:
        return str(given)
    if HEARTBEAT_MARK not in t.system_attrs:
        return None
    again = (retries or {}).get(t.number)
    tail = f"retried as trial {again}" if again is not None else (
        f"not retried (it was retried {MAX_RETRY} times already)" if retries is not None else "")
    return "driver lost: its heartbeat stopped (the driver or its node died)" + (f"; {tail}" if tail else "")


def retry_map(trials: Iterable[FrozenTrial]) -> dict[int, int]:
    """``{retry_of: number}``: which trial re-ran the configuration of a trial whose driver died."""
    return {int(t.user_attrs["retry_of"]): t.number for t in trials if "retry_of" in t.user_attrs}


def interrupted_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of the FAIL trials whose driver died: retried by the heartbeat's callback, or ``interrupted:``."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    out: set[int] = set()
    with _quiet():
        for t in trials:
            out.update(RetryHeartbeatStaleTrialCallback.retry_history(t))
            if t.state == TrialState.FAIL and str(t.user_attrs.get("fail_reason", "")).startswith(INTERRUPTED):
                out.add(t.number)
    return out


def _counts(t: FrozenTrial, interrupted: set[int]) -> bool:
    """Whether finished trial ``t`` counts against the budget (it trained, or tried to)."""
    from optuna.trial import TrialState

    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and t.number not in interrupted and not str(
        t.user_attrs.get("fail_reason", "")).startswith(SKIPPED)


def state_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials per state name, skipped trials (FAIL ``skipped:``, never trained) apart as ``SKIPPED``."""
    out: dict[str, int] = {}
    for t in trials:
        skipped = t.state.name == "FAIL" and str(t.user_attrs.get("fail_reason", "")).startswith(SKIPPED)
        name = "SKIPPED" if skipped else t.state.name
        out[name] = out.get(name, 0) + 1
    order = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING", "SKIPPED")
    return {k: out[k] for k in sorted(out, key=lambda k: order.index(k) if k in order else len(order))}


def count_finished(study: optuna.Study) -> int:
    """Trials that count against the budget: COMPLETE, PRUNED, and FAIL that neither a dead driver nor a skip made."""
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    return sum(_counts(t, interrupted) for t in trials)


def budget_ahead(study: optuna.Study, number: int | None = None) -> int:
    """The budget that trials numbered below ``number`` (all, when None) hold: counted ones and RUNNING ones.

    Trial numbers are handed out by the storage in the order trials are created, whichever
    driver creates them; so with several drivers on one study, the trial whose ``number``
    finds ``budget_ahead(study, number) >= trials`` is one too many, and its driver stops
    (:func:`record_skip`) instead of training it: the budget stays exact. (Optuna's
    ``MaxTrialsCallback`` counts finished trials only, after the fact, and only inside
    ``study.optimize``: drivers running trials side by side would overshoot.)
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    n = 0
    for t in trials:
        if number is not None and t.number >= number:
            continue
        n += t.state == TrialState.RUNNING or _counts(t, interrupted)
    return n


def others_running(study: optuna.Study, mine: int | None = None) -> list[int]:
    """Numbers of the study's RUNNING trials other than ``mine`` that a heartbeat watches (or just asked for).

    Each of them will finish, or be failed and queued again once its driver's heartbeat is
    stale; a RUNNING trial without heartbeats, started over an interval ago, is not listed
    (nothing would ever end it but a ``--resume``).
    """
    import datetime

    from optuna.trial import TrialState

    interval = heartbeat_settings()[0]
    now = datetime.datetime.now()
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number != mine and (HEARTBEAT_MARK in t.system_attrs or t.datetime_start is None
                                     or (now - t.datetime_start).total_seconds() < interval)]


def find_duplicate(study: optuna.Study, params: Mapping[str, Any], *, number: int) -> int | None:
    """The number of another trial of ``study`` with exactly ``params``, counted or RUNNING; None if there is none.

    A trial whose driver died (``interrupted:``) or that was skipped does not hold its
    configuration: its retry may run it.
    """
    from optuna.trial import TrialState

    want = dict(params)
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    for t in trials:
        if t.number == number or not (t.state == TrialState.RUNNING or _counts(t, interrupted)):
            continue
        if t.params == want:
            return t.number
    return None


def record_skip(trial: optuna.Trial, reason: str, *, study: optuna.Study | None = None) -> None:
    """Close ``trial`` (never trained) as FAIL with ``fail_reason = "skipped: <reason>"``; it does not count.

    ``study``: tell it through this study (the local runner's and the searcher's), else through its own.
    """
    from optuna.trial import TrialState

    trial.set_user_attr("fail_reason", f"{SKIPPED} {reason}")
    (study or trial.study).tell(trial, state=TrialState.FAIL)


def driver_seed(seed: int, *, n_trials: int, nonce: int | None = None) -> int:
    """The sampler seed of a driver: the study's ``seed`` for the first driver of a new study, else derived.

    A resumed driver (``n_trials`` already in the storage) or a joining one (``nonce``: its own
    random number) that seeded its sampler with the study's seed would replay the first
    driver's draws (TPE's random start-up trials first); deriving the seed from what the
    storage holds and the driver's nonce gives every driver and every resume draws of its own,
    and a resume of a given storage the same ones each time.

    Example:
        >>> driver_seed(7, n_trials=0)
        7
        >>> driver_seed(7, n_trials=4) != driver_seed(7, n_trials=5) != 7
        True
    """
    if n_trials == 0 and nonce is None:
        return seed
    import hashlib

    digest = hashlib.sha256(f"taskgraph-driver:{seed}:{n_trials}:{nonce}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class TrialRecord:
    """What a finished trial produced, ready to store.

    Attributes:
        values: the objective value(s).
        attrs: user attrs (JSON-safe).
        rows: one dict per task for the per-task metrics CSV.
        grouping: ``{"label": ..., "groups": [[...]]}`` for the grouping JSON artifact.
    """

    values: list[float]
    attrs: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    grouping: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "attrs": self.attrs, "rows": self.rows, "grouping": self.grouping}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        return cls(list(d["values"]), dict(d["attrs"]), list(d["rows"]), dict(d["grouping"]))


def _set_attrs(trial: optuna.Trial, storage: BaseStorage | None, attrs: Mapping[str, Any]) -> None:
    if storage is None:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return
    tid = trial_id(storage, trial.study.study_name, trial.number)
    for k, v in attrs.items():
        storage.set_trial_user_attr(tid, k, v)


def record_start(trial: optuna.Trial, attrs: Mapping[str, Any], *, storage: BaseStorage | None = None) -> None:
    """Set the attrs known when a trial starts (grouping, topology, weighting, seed, versions)."""
    _set_attrs(trial, storage, attrs)


def record_failure(trial: optuna.Trial, reason: str, *, storage: BaseStorage | None = None) -> None:
    """Store why a trial failed (one line) as the user attr ``fail_reason``."""
    _set_attrs(trial, storage, {"fail_reason": reason.strip().splitlines()[0][:500] if reason.strip() else "failed"})


def record_success(trial: optuna.Trial, record: TrialRecord, store: FileSystemArtifactStore, *,
                   storage: BaseStorage | None = None) -> None:
    """Set a finished trial's user attrs and upload its per-task CSV and grouping JSON."""
    from optuna.artifacts import upload_artifact

    _set_attrs(trial, storage, record.attrs)
    with tempfile.TemporaryDirectory() as d:
        csv_path = Path(d) / f"trial{trial.number}_per_task.csv"
        _write_csv(csv_path, record.rows)
        json_path = Path(d) / f"trial{trial.number}_grouping.json"
        json_path.write_text(json.dumps(record.grouping, indent=2))
        for p, mime in ((csv_path, "text/csv"), (json_path, "application/json")):
            upload_artifact(artifact_store=store, file_path=str(p), study_or_trial=trial, storage=storage,
                            mimetype=mime)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
