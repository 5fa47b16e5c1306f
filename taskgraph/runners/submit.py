"""Submit a study to a Ray cluster as a Ray job, and follow it.

The job runs ``python -m taskgraph run STUDY --backend ray`` on the cluster
with a staged copy of this repository (without ``.venv``, ``runs`` and
``.git``) plus the study and search-space files as its ``runtime_env``
working_dir and the local ``RAY_*``/``TUNE_*`` variables. The storage URL travels
in the job's environment (``TASKGRAPH_STORAGE``), not on its command line, which
Ray prints in its logs and job list; a password in it is masked wherever
taskgraph prints or stores the URL (see docs/cluster.md for keeping it off the
cluster entirely with a ``.pgpass`` file). No
``pip``/``conda`` goes into the runtime_env: the cluster's Python must already
have taskgraph's dependencies. Storage and artifact paths are made absolute
here, so a job on this machine's head writes where the submitter expects.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from taskgraph.exceptions import StorageError
from taskgraph.runners.storage import scrub

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

    from taskgraph.runners.common import StudyConfig

__all__ = ["EXCLUDES", "STORAGE_ENV", "SubmittedJob", "job_command", "repo_root", "submit", "wait"]

#: the environment variable ``taskgraph run --storage`` falls back to (keeps a password off command lines)
STORAGE_ENV = "TASKGRAPH_STORAGE"

#: what never travels with a job's working_dir
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", "*.egg-info",
            "build", "dist", "out"]
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def repo_root() -> Path:
    """The checkout holding this package (the job's working_dir)."""
    return Path(__file__).resolve().parents[2]


@dataclass
class SubmittedJob:
    """A job submitted to a Ray cluster: the client that submitted it, its id, the cluster's address."""

    client: JobSubmissionClient
    job_id: str
    address: str


def _client(address: str) -> JobSubmissionClient:
    for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}.items():
        os.environ.setdefault(k, v)
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"the Ray cluster at --address {address!r} must be reachable (its dashboard, e.g. "
                           f"http://HEAD:8265); got {type(e).__name__}: {msg}") from None


def _stage(spec: StudyConfig, directory: Path) -> Path:
    """Copy the repository (minus EXCLUDES) and the study + space files into ``directory``."""
    import fnmatch
    import shutil

    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if any(fnmatch.fnmatch(n, pat.split("/")[-1]) for pat in EXCLUDES)}

    work = directory / "repo"
    shutil.copytree(repo_root(), work, ignore=ignore)
    job = work / "_taskgraph_job"
    job.mkdir()
    if spec.file is None:  # pragma: no cover - a study submitted as a job was loaded from its file
        raise TypeError(f"study {spec.name!r} was not loaded from a file: it has none to submit")
    shutil.copyfile(spec.file, job / "study.toml")
    shutil.copyfile(spec.search.space, job / "space.toml")
    return work


def job_command(spec: StudyConfig, *, resume: bool = False, python: str = "python") -> tuple[str, dict[str, str]]:
    """The job's entrypoint (a shell command line) and environment.

    The storage URL, which may hold a password, goes into the environment
    (:data:`STORAGE_ENV`), never into the entrypoint that Ray prints in logs and job lists.
    """
    args = [python, "-m", "taskgraph", "run", "_taskgraph_job/study.toml", "--space", "_taskgraph_job/space.toml",
            "--backend", "ray", "--artifacts", spec.storage.artifacts, "--runs-root",
            str(Path(spec.storage.run_dir).parent)]
    if resume:
        args.append("--resume")
    env = {k: v for k, v in os.environ.items() if k.startswith(("RAY_", "TUNE_")) and k != "RAY_ADDRESS"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env["PYTHONUNBUFFERED"] = "1"
    env[STORAGE_ENV] = spec.storage.url  # read by `taskgraph run` as --storage
    return " ".join(shlex.quote(a) for a in args), env


def submit(spec: StudyConfig, address: str, *, resume: bool = False, python: str = "python") -> SubmittedJob:
    """Submit ``spec`` (a validated StudySpec) as a Ray job; returns the job handle.

    The job's working_dir is a staged copy of this repository plus the study file
    and its search space (so a study file may live anywhere).
    """
    import tempfile

    client = _client(address)
    entrypoint, env = job_command(spec, resume=resume, python=python)
    with tempfile.TemporaryDirectory(prefix="taskgraph-job-") as d:
        runtime_env = {"working_dir": str(_stage(spec, Path(d))), "excludes": EXCLUDES, "env_vars": env}
        try:
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                       submission_id=f"taskgraph-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StorageError(f"the Ray cluster at {address!r} refused the job: {type(e).__name__}: "
                               f"{scrub(msg, spec.storage.url)}") from None
    return SubmittedJob(client, job_id, address)


def wait(job: SubmittedJob, *, echo: Callable[[str], None] | None = None, poll_s: float = 1.0,
         timeout_s: float | None = None) -> str:
    """Follow the job's logs (through ``echo``) until it ends; return its final status name."""
    client = job.client
    shown = 0
    t0 = time.monotonic()
    while True:
        status = str(client.get_job_status(job.job_id).value)
        if echo is not None:
            logs = client.get_job_logs(job.job_id)
            if len(logs) > shown:
                echo(logs[shown:])
                shown = len(logs)
        if status in _TERMINAL:
            return status
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            return status
        time.sleep(poll_s)
