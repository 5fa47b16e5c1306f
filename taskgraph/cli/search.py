"""``taskgraph run``, ``submit``, ``dashboard`` and ``report``: the search from the command line."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from taskgraph.cli.common import groups_text, log, stderr_console

if TYPE_CHECKING:  # the CLI imports the search package when a command runs, keeping `taskgraph --help` light
    from taskgraph.runners.common import RunSummary
    from taskgraph.search import StudySpec

_RUNS_HELP = "Folder for default storage and artifacts (runs/<study>/)."


def _load_spec(study_file: str, storage: str | None, artifacts: str | None, runs_root: str, trials: int | None,
               space: str | None = None) -> StudySpec:
    from taskgraph.search import StudySpec

    spec = StudySpec.load(study_file, storage=storage, artifacts=artifacts, space=space, runs_root=runs_root)
    if trials is not None:
        spec = spec.replace(trials=trials)
    return spec


def _storage_arg(spec: StudySpec) -> str:
    """The STORAGE argument that reopens this study (a short path for SQLite files)."""
    url = spec.storage.url
    if not url.startswith("sqlite:///"):
        arg = shlex.quote(spec.storage.shown)  # a password shows as ***: type it, or set TASKGRAPH_STORAGE
        return f"{arg} --artifact-dir {shlex.quote(spec.storage.artifacts)}"
    db = Path(url[len("sqlite:///"):])
    try:
        shown = os.path.relpath(db) if db.is_relative_to(Path.cwd()) else str(db)
    except ValueError:
        shown = str(db)
    arg = shlex.quote(shown)
    if Path(spec.storage.artifacts) != db.parent / "artifacts":
        arg += f" --artifact-dir {shlex.quote(spec.storage.artifacts)}"
    return arg


def _print_summary(spec: StudySpec, summary: RunSummary) -> None:
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=True)  # stdout: the run's result
    counts = ", ".join(f"{v} {k}" for k, v in summary.counts.items()) or "no trials"
    con.print(f"[bold]study {summary.study_name!r}[/]: {counts} in {summary.seconds:.0f} s")
    for e in summary.errors:
        con.print(f"[red]Ray reported an errored trial:[/] {e}")
    if not summary.best:
        con.print("[yellow]no trial completed[/]")
    elif len(summary.best) == 1:
        b = summary.best[0]
        con.print(f"[bold]best trial {b['number']}[/]: {summary.values_text(b['values'])} (lower is better)"
                  + (f", test Δm% = {b['delta_m_test']:+.2f} (lower is better)"
                     if b.get("delta_m_test") is not None else ""))
        for k, v in b["params"].items():
            con.print(f"  {k} = {v:.4g}" if isinstance(v, float) else f"  {k} = {v}")
        if b.get("groups"):
            con.print("  groups = " + groups_text(b["groups"]))
    else:
        con.print(f"[bold]Pareto front[/]: {len(summary.best)} trial(s), lower is better"
                  + (" (the first 10)" if len(summary.best) >= 10 else ""))
        for b in summary.best:
            con.print(f"  trial {b['number']}: {summary.values_text(b['values'])}"
                      + (f"; groups = {groups_text(b['groups'])}" if b.get("groups") else ""))
    con.print(f"storage: {summary.storage_url} (study {summary.study_name!r})")
    con.print(f"artifacts: {summary.artifacts_dir}")
    con.print(f"review it: [bold]taskgraph dashboard {_storage_arg(spec)}[/]  then open http://127.0.0.1:8080")
    con.print(f"report:    taskgraph report {_storage_arg(spec)}")


@click.command("run")
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["local", "ray"]), default=None,
              help="local: Optuna alone; ray: Ray Tune (default: the study file's runner.backend).")
@click.option("--resume", is_flag=True, help="Continue a study whose driver died: finished trials are kept.")
@click.option("--join", is_flag=True, help="Add this driver to a study other drivers are running (RDB storage).")
@click.option("--storage", default=None, envvar="TASKGRAPH_STORAGE", show_envvar=True,
              help="Override storage.url (any Optuna RDB URL); the variable keeps a password off the command line.")
@click.option("--artifacts", default=None, help="Override storage.artifacts (a folder).")
@click.option("--address", default=None, help="Ray cluster to connect to (ray backend; default: a local Ray).")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Override budget.trials.")
@click.option("--space", default=None, help="Override search.space (a search-space file).")
@click.option("--runs-root", default="runs", show_default=True, help=_RUNS_HELP)
def run_cmd(study_file: str, backend: str | None, resume: bool, join: bool, storage: str | None, artifacts: str | None,
            address: str | None, trials: int | None, space: str | None, runs_root: str) -> None:
    """Run the study STUDY_FILE: prepare once (affinity, groupings, baselines), then the trials.

    Every trial lands in the study's Optuna storage with its artifacts. Logs and
    one line per finished trial go to stderr; at the end the summary (the best
    configuration, where the study is, how to open the dashboard on it) goes to
    stdout. Exits 1 when no trial completed or Ray reported an errored trial.
    """
    if resume and join:
        raise click.UsageError("--resume and --join exclude each other")
    spec = _load_spec(study_file, storage, artifacts, runs_root, trials, space)
    os.environ.pop("TASKGRAPH_STORAGE", None)  # read: the Ray processes this driver starts need not inherit it
    backend = backend or spec.runner.backend
    log(f"study {spec.name!r}: {spec.data.name}, objective {spec.search.objective}, {spec.budget.trials} trials x "
        f"{spec.budget.epochs} epochs, backend {backend}, storage {spec.storage.shown}")
    # stdout carries the summary alone: what the runners, Ray Tune and the trials print goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        if backend == "ray":
            from taskgraph.runners.ray_tune import run_ray

            summary = run_ray(spec, resume=resume, join=join, address=address, log=log, console=stderr_console())
        else:
            from taskgraph.runners.local import run_local

            summary = run_local(spec, resume=resume, join=join, log=log, console=stderr_console())
    _print_summary(spec, summary)
    if summary.errors or not summary.counts.get("COMPLETE"):
        raise SystemExit(1)


@click.command("submit")
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.option("--address", envvar="RAY_ADDRESS", required=True,
              help="The cluster's dashboard address, e.g. http://HEAD:8265 (or RAY_ADDRESS).")
@click.option("--storage", default=None, envvar="TASKGRAPH_STORAGE", show_envvar=True,
              help="Storage URL the job writes to (default: the study file's, made absolute); it reaches the job "
                   "in its environment, never on its command line.")
@click.option("--artifacts", default=None, help="Artifact folder the job writes to (default: made absolute).")
@click.option("--resume", is_flag=True, help="Resume the study in the job.")
@click.option("--follow/--no-follow", default=True, show_default=True, help="Stream the job's logs until it ends.")
@click.option("--python", "python", default="python", show_default=True,
              help="The Python the cluster runs the job with (must have taskgraph's dependencies).")
@click.option("--runs-root", default="runs", show_default=True, help=_RUNS_HELP)
def submit_cmd(study_file: str, address: str, storage: str | None, artifacts: str | None, resume: bool, follow: bool,
               python: str, runs_root: str) -> None:
    """Submit STUDY_FILE to a Ray cluster as a Ray job (working_dir = this repository, no pip).

    Prints the job id (stdout), follows its logs (stderr), prints its final
    status (stdout) and exits 0 when it SUCCEEDED, else 1.
    """
    from taskgraph.runners.submit import submit, wait

    spec = _load_spec(study_file, storage, artifacts, runs_root, None)
    job = submit(spec, address, resume=resume, python=python)
    click.echo(f"submitted job {job.job_id} to {address}")
    if not follow:
        return
    status = wait(job, echo=lambda s: click.echo(s, nl=False, err=True))
    click.echo(f"job {job.job_id}: {status}")
    if status != "SUCCEEDED":
        raise SystemExit(1)


@click.command("dashboard")
@click.argument("storage", envvar="TASKGRAPH_STORAGE")
@click.option("--artifact-dir", default=None, help="The study's artifact folder (default: next to a SQLite file).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (the default keeps the dashboard on this machine).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
def dashboard_cmd(storage: str, artifact_dir: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on STORAGE (an RDB URL, a .db file or a study folder) with its artifacts.

    Says where it serves on stderr; exits 1 with one line when --host/--port cannot be
    listened on (e.g. the port is in use).
    """
    from taskgraph.runners.dashboard import serve

    serve(storage, artifact_dir=artifact_dir, host=host, port=port, echo=log)  # PortInUseError: exit 1


@click.command("report")
@click.argument("storage", envvar="TASKGRAPH_STORAGE")
@click.option("--study", "study_name", default=None, help="Which study (default: the only one in the storage).")
@click.option("--artifact-dir", default=None, help="The study's artifact folder (default: next to a SQLite file).")
@click.option("--out", default=None, help="Output folder (default: <storage folder>/report).")
def report_cmd(storage: str, study_name: str | None, artifact_dir: str | None, out: str | None) -> None:
    """Write a markdown report of a study: best configuration, Pareto front, per-task table, pictures."""
    from taskgraph.report import build_report, write_report
    from taskgraph.runners.storage import storage_from_arg

    url, default_art = storage_from_arg(storage)
    data = build_report(url, study_name=study_name, artifact_dir=artifact_dir or default_art)
    if out is None:
        out = str(Path(url[len("sqlite:///"):]).parent / "report") if url.startswith("sqlite:///") \
            else f"runs/{data.study_name}/report"
    path = write_report(data, out)
    click.echo(f"report written: {path}")
