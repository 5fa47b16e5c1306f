"""Recovery of planted task clusters from affinity *measured by the engine* (not given).

For each seed: generate ``planted_clusters`` data, train a small shared MLP with
TAG affinity tracking (``measure_affinity``, exact lookahead), group the tasks
from the measured matrix, and score the grouping against the planted clusters
with the adjusted Rand index (ARI; 1 = exact recovery, about 0 = chance).
Reported for k given (the planted number of clusters) and k chosen by
``choose_k`` (scalable solver, k_max = min(n, 8)), partition and overlap variants (overlap: each task labelled by the
group that serves it).

    python benchmarks/grouping_recovery.py                 # 20 seeds, 9 and 20 tasks
    python benchmarks/grouping_recovery.py --seeds 5 --tasks 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from taskgraph.affinity import measure_affinity
from taskgraph.data import planted_clusters
from taskgraph.grouping import choose_k, group_tasks
from taskgraph.models import MultiTaskModel, mlp
from taskgraph.training import TrainConfig


def run(n_tasks: int, n_clusters: int, relation: str, seeds: int, steps: int) -> list[tuple]:
    from sklearn.metrics import adjusted_rand_score

    rows = {key: [] for key in ("partition k=given", "overlap k=given", "partition k=auto")}
    chosen_k = []
    t0 = time.perf_counter()
    for seed in range(seeds):
        data = planted_clusters(n_tasks=n_tasks, n_clusters=n_clusters, relation=relation, n_samples=1500,
                                seed=seed)
        torch.manual_seed(seed)
        model = MultiTaskModel(mlp(32, data.info["trunk_hidden"]), data.tasks, input_shape=data.input_shape)
        m = measure_affinity(model, data.tasks, data.train.loader(128, shuffle=True, seed=seed), steps=steps,
                             every=3, config=TrainConfig(lr=0.05, optimizer="sgd", momentum=0.0, seed=seed,
                                                         device="cpu"))
        truth = data.info["cluster_of"]
        part = group_tasks(m, k=n_clusters, variant="partition")[0]
        over = group_tasks(m, k=n_clusters, variant="overlap")[0]
        kc = choose_k(m, k_max=min(n_tasks, 8), variant="partition", solver="scalable")
        auto = group_tasks(m, k=kc.k, variant="partition")[0]
        chosen_k.append(kc.k)
        rows["partition k=given"].append(adjusted_rand_score(truth, part.labels()))
        rows["overlap k=given"].append(adjusted_rand_score(truth, over.labels()))
        rows["partition k=auto"].append(adjusted_rand_score(truth, auto.labels()))
        print(f"n={n_tasks} {relation} seed {seed}: ARI partition {rows['partition k=given'][-1]:.3f}, "
              f"overlap {rows['overlap k=given'][-1]:.3f}, auto k={kc.k} {rows['partition k=auto'][-1]:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
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
    ap.add_argument("--tasks", type=int, nargs="+", default=[9, 20])
    ap.add_argument("--relations", nargs="+", default=["unrelated", "opposed"])
    ap.add_argument("--steps", type=int, default=90, help="training steps of the affinity run")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ARI of the grouping vs the planted clusters ({args.seeds} seeds, exact TAG affinity, "
                        f"{args.steps} SGD steps, measured every 3)")
    for c in ("setting", "grouping", "mean ARI", "median", "min", "exact recoveries"):
        table.add_column(c)
    clusters = {9: 3, 20: 4}
    for n in args.tasks:
        for rel in args.relations:
            for row in run(n, clusters.get(n, max(2, n // 5)), rel, args.seeds, args.steps):
                table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


if __name__ == "__main__":
    main()
