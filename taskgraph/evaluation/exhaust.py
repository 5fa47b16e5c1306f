"""Ground truth by exhaustion (Standley et al., ICML 2020): every task subset, every seed.

For a :class:`~taskgraph.evaluation.problems.Problem` of n <= 7 tasks, :func:`exhaust`
trains one hard-sharing network (the problem's trunk, one head per task) for every
non-empty subset of the tasks (2^n - 1) and every seed. Seed ``s`` fixes the trunk's
initialisation and the training batch order for every subset, so any two subsets are
compared *paired* over seeds. Each network stops early on its mean validation loss
with the best epoch restored (the problem's ``config.patience``).

One JSON line per (subset, seed) is appended to a JSONL file as each network finishes,
so an interrupted build resumes where it stopped; a line written for another problem
definition (its fingerprint differs) is refused. The networks train in a local process
pool or as Ray tasks (``backend="ray"``: the natural distributed job).

Example (a few seconds, so skipped in doctests):
    >>> from taskgraph.evaluation import PROBLEMS, exhaust
    >>> table = exhaust(PROBLEMS.get("tiny4"), "tiny4.jsonl", seeds=(0, 1, 2))  # doctest: +SKIP
    >>> table.partitions()[0]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from taskgraph.evaluation.problems import Problem
from taskgraph.evaluation.table import GroundTruth
from taskgraph.exceptions import ConfigError, TaskGraphError
from taskgraph.grouping.partitions import all_subsets
from taskgraph.models import MultiTaskModel
from taskgraph.training import fit, seed_everything

__all__ = ["all_subsets", "exhaust", "read_records", "train_subset"]

_Job = tuple[tuple[str, ...], int]  # (subset, seed)
_OnResult = Callable[[dict[str, Any]], None]


def train_subset(problem: Problem, subset: Sequence[str], seed: int, *,
                 threads: int | None = 1) -> dict[str, Any]:
    """Train the problem's hard-sharing network on ``subset`` with ``seed``; one record.

    Returns:
        ``{"problem", "fingerprint", "subset", "seed", "val", "test", "val_metric", "test_metric",
        "best_epoch", "epochs", "steps", "seconds"}`` (losses and metrics per task).
    """
    import torch

    data = problem.data().subset_tasks(list(subset))
    config = problem.config.replace(seed=int(seed))
    before = torch.get_num_threads()
    if threads:
        # small networks train faster on one thread, and a busy machine's spinning OpenMP pool stalls
        torch.set_num_threads(threads)
    try:
        seed_everything(config.seed)  # the trunk is built first: the same initialisation for every subset
        model = MultiTaskModel(problem.trunk.build(data.input_shape), data.tasks, input_shape=data.input_shape)
        res = fit(model, data, config)
    finally:
        torch.set_num_threads(before)
    assert res.val is not None and res.test is not None  # fit always evaluates both splits
    return {"problem": problem.name, "fingerprint": problem.fingerprint(), "subset": list(subset), "seed": int(seed),
            "val": res.val.losses, "test": res.test.losses, "val_metric": res.val.metrics,
            "test_metric": res.test.metrics, "best_epoch": res.best_epoch, "epochs": len(res.history),
            "steps": res.steps, "seconds": round(res.seconds, 3)}


def read_records(path: str | Path, problem: Problem | None = None) -> list[dict[str, Any]]:
    """The complete records of a ground-truth JSONL file (a torn last line is skipped).

    Raises:
        TaskGraphError: a line belongs to another problem definition (fingerprint mismatch).
    """
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # the build was killed while writing: that network trains again
                continue
            raise TaskGraphError(f"{path}:{i}: every line must be a JSON record, got {line[:60]!r}") from None
        if problem is not None and rec.get("fingerprint") != problem.fingerprint():
            raise TaskGraphError(
                f"{path}:{i}: the record's problem fingerprint must be {problem.fingerprint()} "
                f"({problem.name}), got {rec.get('fingerprint')}: the problem's definition changed; "
                f"write to a new file")
        out.append(rec)
    return out


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a killed build left half-written, so the next record starts a line."""
    if not path.exists():
        return
    blob = path.read_bytes()
    if blob and not blob.endswith(b"\n"):
        path.write_bytes(blob[: blob.rfind(b"\n") + 1])


def _local_pool(jobs: Sequence[_Job], problem: Problem, workers: int, on_result: _OnResult) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(train_subset, problem, s, seed) for s, seed in jobs]
        for f in as_completed(futures):
            on_result(f.result())


def _ray_tasks(jobs: Sequence[_Job], problem: Problem, workers: int, on_result: _OnResult,
               address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(train_subset)
    pending = [remote.remote(problem, s, seed) for s, seed in jobs]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        on_result(ray.get(done[0]))


def exhaust(problem: Problem, path: str | Path, *, seeds: Iterable[int] = (0, 1, 2), backend: str = "local",
            workers: int | None = None, address: str | None = None,
            progress: Callable[[str], None] | None = None) -> GroundTruth:
    """Train every (subset, seed) not yet in ``path``; return the full :class:`GroundTruth`.

    Args:
        problem: the problem (at most 7 tasks).
        path: the JSONL file (created, or resumed when it exists).
        seeds: the paired seeds (at least 2 for a standard error; 3 or more advised).
        backend: ``"local"`` (a process pool; ``workers=1`` trains in this process) or ``"ray"``
            (Ray tasks on the connected cluster, or a new local Ray with ``workers`` CPUs).
        workers: parallel trainings (default: the CPUs this process may use).
        address: the Ray cluster to run on (default: ``RAY_ADDRESS``, else a new local Ray).
        progress: called with one line per finished network.

    Raises:
        ConfigError: bad backend or seeds.
        TaskGraphError: the file holds another problem's records.
    """
    seeds = tuple(int(s) for s in seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"exhaust: 'seeds' must hold at least 2 distinct seeds, got {list(seeds)}", key="seeds")
    if backend not in ("local", "ray"):
        raise ConfigError(f"exhaust: 'backend' must be 'local' or 'ray', got {backend!r}", key="backend")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {(tuple(r["subset"]), r["seed"]) for r in read_records(path, problem)}
    _drop_torn_tail(path)
    jobs = [(s, seed) for seed in seeds for s in all_subsets(problem.tasks) if (s, seed) not in done]
    total, t0 = len(done) + len(jobs), time.perf_counter()
    if jobs:
        workers = workers or len(os.sched_getaffinity(0))
        with path.open("a", encoding="utf-8") as fh:
            def on_result(rec: dict[str, Any]) -> None:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                done.add((tuple(rec["subset"]), rec["seed"]))
                if progress:
                    progress(f"{problem.name}: {len(done)}/{total} {'+'.join(rec['subset'])} seed {rec['seed']} "
                             f"({rec['epochs']} epochs, {time.perf_counter() - t0:.0f} s)")

            if backend == "ray":
                _ray_tasks(jobs, problem, workers, on_result, address)
            elif workers == 1:
                for s, seed in jobs:
                    on_result(train_subset(problem, s, seed))
            else:
                _local_pool(jobs, problem, workers, on_result)
    return GroundTruth.from_records(read_records(path, problem), tasks=problem.tasks, seeds=seeds,
                                    name=problem.name)
