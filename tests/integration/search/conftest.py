"""Fixtures of the search's integration tests: tiny study files, a real Ray head on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = str(Path(sys.executable).parent)
#: drivers beat every second and a trial silent for 5 s is an orphan, so a killed driver's trials are found fast
HEARTBEAT_ENV = {"TASKGRAPH_HEARTBEAT_S": "1", "TASKGRAPH_HEARTBEAT_GRACE_S": "5"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_study(directory: Path, name: str, *, space: str | Path = "default.toml", trials: int = 4, epochs: int = 2,
               objective: str = "val_loss", sampler: str = "tpe", extra: str = "", early: str = "asha",
               n_samples: int = 400, storage: str | None = None, check_seeds: int | None = None,
               affinity_epochs: int | None = None) -> Path:
    """Write a tiny study file (4 planted-cluster tasks, a small trunk) and return its path.

    ``check_seeds`` sets the prepare stage's paired check seeds (default: the policy's; 0 skips the
    checks where a test is about the trials, not the grouping decision). ``affinity_epochs`` sets the
    epochs of the prepare stage's affinity run (default: the budget's epochs; 1 where a test is about
    the trials and trains them long: measured, the prepare stage of a 40-epoch, 3000-sample study took
    20 s, and 11 s with 1 affinity epoch).
    """
    space_path = Path(space) if Path(space).is_absolute() else ROOT / "search_spaces" / space
    storage_block = f'[storage]\nurl = "{storage}"\n' if storage else ""
    check_line = "" if check_seeds is None else f"check_seeds = {check_seeds}\n"
    if affinity_epochs is not None:
        check_line += f"epochs = {affinity_epochs}\n"
    text = f"""
name = "{name}"
seed = 0
[dataset]
name = "planted-clusters"
options = {{ n_tasks = 4, n_clusters = 2, n_samples = {n_samples} }}
[trunk]
hidden = [16, 8]
[search]
space = "{space_path}"
objective = "{objective}"
sampler = "{sampler}"
[budget]
trials = {trials}
epochs = {epochs}
early_stopping = "{early}"
grace_epochs = 1
reduction_factor = 2
[train]
lr = 0.01
batch_size = 64
[affinity]
every = 2
{check_line}[resources]
cpus = 1
concurrent = 2
{storage_block}{extra}
"""
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def study_file(tmp_path):
    def make(name: str, **kw) -> Path:
        return tiny_study(tmp_path, name, **kw)

    return make


def ray_env(tmpdir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_TMPDIR=tmpdir, TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0",
               PATH=VENV_BIN + os.pathsep + env.get("PATH", ""), **HEARTBEAT_ENV)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RAY_ADDRESS", None)
    return env


#: the variables through which `coverage run` (patch = ["subprocess"]) starts its tracer in every Python subprocess
COVERAGE_VARS = ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG")


def _untraced(env: dict[str, str]) -> dict[str, str]:
    """``env`` without coverage's subprocess variables: for processes that run no measured code of their own (a Ray
    head, a Ray cluster helper) and would start the tracer in every raylet-spawned Python process under them (their
    workers are mostly SIGKILLed, so what they record is lost; measured: the head's tests ran about a third slower
    traced). The drivers, CLI subprocesses beside them, keep the variables and stay measured."""
    return {k: v for k, v in env.items() if k not in COVERAGE_VARS}


@pytest.fixture
def port():
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture
def cli_environ(tmp_path):
    """The environment of a CLI subprocess: this checkout on the path, Ray on loopback in a temp dir."""
    d = tmp_path / "raytmp"
    d.mkdir(exist_ok=True)
    return ray_env(str(d))


@pytest.fixture
def local_ray_env():
    """The environment of a subprocess that starts a local Ray of its own (in a short temp dir).

    Whatever it leaves running under that dir is stopped by its PIDs, also when the test fails.
    """
    tmpdir = tempfile.mkdtemp(prefix="tgray")  # short: Ray's socket paths have a length limit
    try:
        yield ray_env(tmpdir)
    finally:
        _stop(_ray_pids_under(tmpdir))
        shutil.rmtree(tmpdir, ignore_errors=True)


#: stops the suite's Ray head (set while it runs): called after the last test that uses it, and at the session's end
_HEAD_STOP: list = []


@pytest.fixture(scope="session")
def ray_head():
    """A Ray head on 127.0.0.1 with ports of its own; stopped (by its PIDs) even when a test fails.

    Yields ``{"address": "http://127.0.0.1:PORT", "gcs": "127.0.0.1:PORT", "env": {...}}``. Stopped as soon as the
    last test of the session that uses it is done (:func:`pytest_runtest_teardown`), not at the session's end: idle,
    its processes took about 6% of a core through every later test.
    """
    tmpdir = tempfile.mkdtemp(prefix="tgray")  # short: Ray's socket paths have a length limit
    env = ray_env(tmpdir)
    gcs, dash = free_port(), free_port()
    ports = [free_port() for _ in range(4)]
    cmd = [str(Path(VENV_BIN) / "ray"), "start", "--head", "--num-cpus=2", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--port={gcs}", "--include-dashboard=true",
           "--disable-usage-stats", f"--temp-dir={tmpdir}", f"--node-manager-port={ports[0]}",
           f"--object-manager-port={ports[1]}", f"--dashboard-agent-listen-port={ports[2]}",
           f"--ray-client-server-port={ports[3]}"]
    r = subprocess.run(cmd, env=_untraced(env), capture_output=True, text=True, timeout=120)

    def stop() -> None:
        _HEAD_STOP.clear()
        _stop(_ray_pids_under(tmpdir, f"127.0.0.1:{gcs}"))
        shutil.rmtree(tmpdir, ignore_errors=True)

    _HEAD_STOP[:] = [stop]
    try:
        if r.returncode != 0:
            pytest.fail(f"ray start failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        address = f"http://127.0.0.1:{dash}"
        _wait_http(address + "/api/version", 60)
        yield {"address": address, "gcs": f"127.0.0.1:{gcs}", "env": env, "tmpdir": tmpdir}
    finally:
        if _HEAD_STOP:
            stop()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the suite's Ray head once no test left to run in this session uses it."""
    if not _HEAD_STOP or "ray_head" not in getattr(item, "fixturenames", ()):
        return
    items = item.session.items
    later = items[items.index(item) + 1:] if item in items else [nextitem] if nextitem else []
    if not any("ray_head" in getattr(i, "fixturenames", ()) for i in later):
        _HEAD_STOP[0]()


def _ray_pids_under(*marks: str) -> set[int]:
    """PIDs whose command line holds one of ``marks`` (our temp dir, our GCS port), with their descendants."""
    parent: dict[int, int] = {}
    roots = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
            parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if any(m.encode() in cmd for m in marks):
            roots.add(int(p.name))
    out = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in out and pid not in out:
                out.add(pid)
                grew = True
    out.discard(os.getpid())
    return out


def _stop(pids: set[int]) -> None:
    """SIGTERM, then SIGKILL whatever still runs 3 s later: these are throwaway test processes (their temp dir is
    deleted next), and waiting out a longer grace for the slowest of them only delays the test's end."""
    for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        alive = [p for p in pids if _alive(p)]
        for p in alive:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(_alive(p) for p in alive):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_http(url: str, timeout: float) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


_STORAGES: dict = {}


def _trials_so_far(db: Path | str, name: str):
    """The study's trials, or None while the driver is still creating the storage or the study.

    ``db``: a SQLite file, or an RDB URL (a PostgreSQL study).
    """
    import optuna

    if isinstance(db, Path) and not db.exists():
        return None
    try:
        if isinstance(db, str):  # one storage per URL: polling must not open a connection pool per look
            storage = _STORAGES.get(db) or _STORAGES.setdefault(db, optuna.storages.RDBStorage(db))
        else:
            storage = f"sqlite:///{db}"
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except Exception:  # KeyError: no study yet; OperationalError: tables being created by the driver
        return None


@contextlib.contextmanager
def _driver(argv: list[str], *, env: dict, cwd: Path, keep_stderr: bool = False):
    """``python -m taskgraph ARGV`` in the background; SIGKILLed on the way out if still running."""
    proc = subprocess.Popen([sys.executable, "-m", "taskgraph", *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if keep_stderr else subprocess.DEVNULL, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def kill_mid_study():
    """Start a driver, SIGKILL it once its study has 2 finished trials and one running with its params.

    Call as ``kill_mid_study(argv, env=..., cwd=..., db=Path, name=str)``; fails the test if the
    driver ends first or the study never gets there. The driver is killed also when the test fails.
    The driver is paused (SIGSTOP) while the study is read, so the trial seen running is still
    running when the kill lands (it could otherwise finish in between).
    """
    from optuna.trial import TrialState

    def ready(ts: list) -> bool:
        # a running trial with its parameters drawn, so the resume has one to retry
        return bool(ts) and sum(t.state == TrialState.COMPLETE for t in ts) >= 2 and \
            any(t.state == TrialState.RUNNING and t.params for t in ts)

    def run(argv: list[str], *, env: dict, cwd: Path, db: Path, name: str, timeout: float = 240) -> None:
        with _driver(argv, env=env, cwd=cwd) as proc:
            deadline = time.time() + timeout
            while time.time() < deadline:
                if ready(_trials_so_far(db, name)):
                    os.kill(proc.pid, signal.SIGSTOP)
                    if ready(_trials_so_far(db, name)):
                        break
                    os.kill(proc.pid, signal.SIGCONT)
                if proc.poll() is not None:
                    pytest.fail("the driver ended before it could be killed")
                time.sleep(0.1)
            else:
                pytest.fail("the study never reached 2 finished trials")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    return run


@pytest.fixture
def kill_a_ray_trial():
    """Start a Ray driver, SIGKILL the worker process of one of its running trials, wait for the driver to end.

    Call as ``kill_a_ray_trial(argv, env=..., cwd=..., db=Path, name=str, ray_tmpdir=str)`` (``ray_tmpdir``:
    the Ray head's temp dir, whose processes are searched for a running trial's actor);
    returns the driver's exit code and its stderr.
    """
    from optuna.trial import TrialState

    def run(argv: list[str], *, env: dict, cwd: Path, db: Path, name: str, ray_tmpdir: str) -> tuple[int, str]:
        with _driver(argv, env=env, cwd=cwd, keep_stderr=True) as proc:
            victim, deadline = None, time.time() + 240
            while victim is None and time.time() < deadline and proc.poll() is None:
                ts = _trials_so_far(db, name) or []
                if any(t.state == TrialState.RUNNING for t in ts):
                    # a trial's actor (busy in its train call or between two of them): killing it kills the trial;
                    # waiting for a reported epoch as well missed every trial once the workers ran untraced
                    victim = next((pid for pid in _ray_pids_under(ray_tmpdir)
                                   if _cmdline(pid).startswith(b"ray::ImplicitFunc")), None)
                time.sleep(0.1)
            if victim is None:
                ended = "ended" if proc.poll() is not None else "ran"
                pytest.fail(f"no running trial worker found (the driver {ended}; "
                            f"trial states {[t.state.name for t in _trials_so_far(db, name) or []]})")
            os.kill(victim, signal.SIGKILL)
            _, err = proc.communicate(timeout=300)
            return proc.returncode, err

    return run


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture
def trials_so_far():
    """``trials_so_far(db, name)``: a study's trials, or None while its driver is still creating the
    storage or the study (``db``: a SQLite file or an RDB URL)."""
    return _trials_so_far


@pytest.fixture
def untraced():
    """``untraced(env)``: ``env`` without coverage's subprocess variables (see :func:`_untraced`)."""
    return _untraced


@pytest.fixture
def cmdline():
    """``cmdline(pid)``: a process's ``/proc`` command line (empty once it is gone)."""
    return _cmdline


@pytest.fixture
def two_drivers(cli):
    """Run a first driver, and once it has prepared its study a second one (``--join`` or ``--resume``); both must
    exit 0.

    Call as ``two_drivers(first_argv, second_argv, env=..., cwd=..., db=Path or URL, name=str,
    second_env=None)``; returns (the second driver's completed process, the first driver's stderr).
    The first driver is killed also when the test fails.
    """

    def run(first_argv: list[str], second_argv: list[str], *, env: dict, cwd: Path, db: Path | str, name: str,
            second_env: dict | None = None) -> tuple[subprocess.CompletedProcess, str]:
        with _driver(first_argv, env=env, cwd=cwd, keep_stderr=True) as first:
            deadline = time.time() + 240
            while time.time() < deadline and not _trials_so_far(db, name):
                time.sleep(0.2)  # join once the first driver has prepared the study
            r = cli(*second_argv, env=second_env or env, cwd=cwd, timeout=300)
            assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
            _, first_err = first.communicate(timeout=240)
            assert first.returncode == 0, first_err[-2000:]
            return r, first_err

    return run


#: a PostgreSQL server the tests may use (CI's .ci/run starts one and sets this); else each session starts its own
POSTGRES_URL_ENV = "TASKGRAPH_TEST_POSTGRES_URL"
_PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _PG_BIN_DIRS:
        if (d / name).is_file():
            return str(d / name)
    return None


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a PostgreSQL server on 127.0.0.1 with a password (its maintenance database ``postgres``).

    CI's (``$TASKGRAPH_TEST_POSTGRES_URL``, started by ``.ci/run``) when set; else a private
    cluster (Debian's ``initdb`` + ``pg_ctl``, scram-sha-256, a random password, a port of its own,
    a temporary data folder) for this session, stopped at its end. Skipped, with the reason, where
    neither the variable nor the binaries, or the psycopg driver, are there.
    """
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's default driver for postgresql://)
    except ImportError:
        pytest.skip("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    if os.environ.get(POSTGRES_URL_ENV):
        yield os.environ[POSTGRES_URL_ENV]
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip(f"no PostgreSQL: {POSTGRES_URL_ENV} is not set and initdb/pg_ctl are not installed "
                    f"(Debian: apt-get install postgresql)")
    as_user: list[str] = []
    d = Path(tempfile.mkdtemp(prefix="tgpg"))
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as the postgres user
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        import pwd

        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(d, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    import secrets

    password = "S3cretPW" + secrets.token_hex(8)
    pwfile = d / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(pwfile, pg.pw_uid, pg.pw_gid)
    port = free_port()
    data = d / "data"
    started = False
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "tg", f"--pwfile={pwfile}", "-A", "scram-sha-256",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        pwfile.unlink()
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(d / "log"), "-w", "-t", "60", "-o",
                        f"-h 127.0.0.1 -p {port} -k {d} -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120)
        started = True
        yield f"postgresql://tg:{password}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                           timeout=60)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server):
    """A fresh database of its own on the test PostgreSQL server, dropped afterwards; yields ``(url, password)``."""
    import secrets

    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server)
    name = "tg_" + secrets.token_hex(6)
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False), str(server.password)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
