"""Recovery of planted task clusters from affinity *measured by the engine* (not given).

For each seed: generate ``planted_clusters`` data, train a small shared MLP with
TAG affinity tracking (``measure_affinity``, exact lookahead), group the tasks
from the measured matrix, and score the grouping against the planted clusters
with the adjusted Rand index (ARI; 1 = exact recovery, about 0 = chance).
Reported for k given (the planted number of clusters) and k chosen by
``choose_k`` (scalable solver, default k_max = min(n, max(8, ceil(2·√n)))), partition and overlap
variants (overlap: each task labelled by the group that serves it; k given only, and only up to 20
tasks, where it is cheap).

Planted clusters per size: 9 tasks → 3, 20 → 4, 100 → 10, 200 → 20 (else n // 5).
Beyond 20 tasks the runs use ``--big-seeds`` seeds (default 3: one seed takes about 15 s at
100 tasks and 1 minute at 200 on 2 cores, most of it choose_k's curve) and a trunk whose bottleneck
grows with the clusters (8 units per 10 clusters: the 8-unit trunk that planted_clusters
suggests for a few clusters cannot carry 20 of them: with it, even k = 20 given reaches
ARI 0.60 at 200 tasks, seed 0).

    python benchmarks/grouping_recovery.py                 # 20 seeds, 9 and 20 tasks
    python benchmarks/grouping_recovery.py --seeds 5 --tasks 9
    python benchmarks/grouping_recovery.py --tasks 100 200 --relations opposed
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from taskgraph.affinity import measure_affinity
from taskgraph.data import planted_clusters
from taskgraph.grouping import choose_k, group_tasks
from taskgraph.models import MultiTaskModel, mlp
from taskgraph.training import TrainConfig


def trunk_widths(n_clusters: int) -> tuple[int, int]:
    """The trunk's widths: planted_clusters' (64, 8) up to 10 clusters, 8 bottleneck units per 10 beyond."""
    return (64, 8 * max(1, math.ceil(n_clusters / 10)))


def run(n_tasks: int, n_clusters: int, relation: str, seeds: int, steps: int) -> list[tuple]:
    from sklearn.metrics import adjusted_rand_score

    keys = ("partition k=given", "overlap k=given", "partition k=auto") if n_tasks <= 20 else \
        ("partition k=given", "partition k=auto")
    rows: dict[str, list[float]] = {key: [] for key in keys}
    chosen_k = []
    hidden = trunk_widths(n_clusters)
    t0 = time.perf_counter()
    for seed in range(seeds):
        data = planted_clusters(n_tasks=n_tasks, n_clusters=n_clusters, relation=relation, n_samples=1500,
                                seed=seed)
        torch.manual_seed(seed)
        model = MultiTaskModel(mlp(32, hidden), data.tasks, input_shape=data.input_shape)
        m = measure_affinity(model, data.tasks, data.train.loader(128, shuffle=True, seed=seed), steps=steps,
                             every=3, config=TrainConfig(lr=0.05, optimizer="sgd", momentum=0.0, seed=seed,
                                                         device="cpu"))
        truth = data.info["cluster_of"]
        part = group_tasks(m, k=n_clusters, variant="partition")[0]
        rows["partition k=given"].append(adjusted_rand_score(truth, part.labels()))
        if "overlap k=given" in rows:
            over = group_tasks(m, k=n_clusters, variant="overlap")[0]
            rows["overlap k=given"].append(adjusted_rand_score(truth, over.labels()))
        kc = choose_k(m, variant="partition", solver="scalable")
        auto = group_tasks(m, k=kc.k, variant="partition")[0]
        chosen_k.append(kc.k)
        rows["partition k=auto"].append(adjusted_rand_score(truth, auto.labels()))
        print(f"n={n_tasks} {relation} seed {seed}: ARI " + ", ".join(f"{key} {v[-1]:.3f}" for key, v in rows.items())
              + f"; auto k={kc.k} of {kc.ks[-1]} tried ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    secs = time.perf_counter() - t0
    out = []
    for key, aris in rows.items():
        exact = sum(a > 0.999 for a in aris)
        out.append((f"{n_tasks} tasks / {n_clusters} clusters, {relation}", key, statistics.mean(aris),
                    statistics.median(aris), min(aris), f"{exact}/{len(aris)}"))
    out.append((f"{n_tasks} tasks / {n_clusters} clusters, {relation}", "chosen k (median, range)",
                statistics.median(chosen_k), min(chosen_k), max(chosen_k), f"{secs:.0f} s"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--big-seeds", type=int, default=3, help="seeds for more than 20 tasks (at most --seeds)")
    ap.add_argument("--tasks", type=int, nargs="+", default=[9, 20])
    ap.add_argument("--relations", nargs="+", default=["unrelated", "opposed"])
    ap.add_argument("--steps", type=int, default=90, help="training steps of the affinity run")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ARI of the grouping vs the planted clusters ({args.seeds} seeds, {args.big_seeds} beyond 20 "
                        f"tasks; exact TAG affinity, {args.steps} SGD steps, measured every 3)")
    for c in ("setting", "grouping", "mean ARI", "median", "min", "exact recoveries"):
        table.add_column(c)
    clusters = {9: 3, 20: 4, 100: 10, 200: 20}
    for n in args.tasks:
        seeds = args.seeds if n <= 20 else min(args.seeds, args.big_seeds)
        for rel in args.relations:
            for row in run(n, clusters.get(n, max(2, n // 5)), rel, seeds, args.steps):
                table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
