"""Is negative transfer real? All-in-one vs per-cluster vs single-task models.

Part 1 (planted clusters with opposed clusters): per-task test loss (MSE) of
  - one all-in-one model over every task,
  - one model per planted cluster (the ground-truth grouping),
  - one single-task model per task,
over several seeds, same trunk and budget for all. The all-in-one model must be
clearly worse than per-cluster models.

Part 2 (real data): yeast, digits, STAR: all-in-one vs single-task per task and Δm%
(lower is better; negative = the all-in-one model beats single-task models).

Usage:
    python benchmarks/negative_transfer.py                # defaults: 5 seeds, 30 epochs
    python benchmarks/negative_transfer.py --seeds 3 --epochs 20 --skip-real
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

from taskgraph.data import load_dataset, planted_clusters
from taskgraph.models import TrunkSpec
from taskgraph.training import TrainConfig, delta_m, per_task_delta, train_partition


def fmt(values) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.4f}"


def planted(seeds: int, epochs: int, n_tasks: int, n_clusters: int) -> None:
    per: dict[str, dict[str, list[float]]] = {"all-in-one": {}, "per-cluster": {}, "single-task": {}}
    t0 = time.perf_counter()
    names: tuple[str, ...] = ()
    truth = None
    for seed in range(seeds):
        data = planted_clusters(n_tasks=n_tasks, n_clusters=n_clusters, relation="opposed", seed=seed)
        names, truth = data.tasks.names, data.ground_truth
        spec = TrunkSpec("mlp", data.info["trunk_hidden"])
        cfg = TrainConfig(epochs=epochs, lr=3e-3, seed=seed)
        for label, groups in (("all-in-one", [list(names)]), ("per-cluster", data.ground_truth),
                              ("single-task", [[t] for t in names])):
            ev = train_partition(partial(spec.build, data.input_shape), data, groups, cfg)["test"]
            for t in names:
                per[label].setdefault(t, []).append(ev.losses[t])
    print(f"\n## planted clusters, relation=opposed, {n_tasks} tasks in {n_clusters} clusters {truth}")
    print(f"trunk 32→64→8 (TrunkSpec hidden=(64, 8)), Adam lr 3e-3, {epochs} epochs, seeds 0..{seeds - 1}; "
          f"test MSE mean ± sd over seeds ({time.perf_counter() - t0:.0f} s)\n")
    print("| task | all-in-one | per-cluster | single-task |")
    print("|---|---|---|---|")
    for t in names:
        print(f"| {t} | {fmt(per['all-in-one'][t])} | {fmt(per['per-cluster'][t])} | {fmt(per['single-task'][t])} |")
    means = {k: np.mean([v[t] for t in names], axis=0) for k, v in per.items()}  # per-seed task means
    print(f"| **mean** | {fmt(means['all-in-one'])} | {fmt(means['per-cluster'])} | {fmt(means['single-task'])} |")
    ratio = means["all-in-one"] / means["per-cluster"]
    print(f"\nall-in-one / per-cluster mean test loss: median {np.median(ratio):.2f}× "
          f"(per seed: {', '.join(f'{r:.2f}' for r in ratio)})")


def real(names: list[str], seeds: int, epochs: int) -> None:
    print("\n## real data: all-in-one vs single-task (test metric mean ± sd over seeds; Δ% per task, "
          "negative = all-in-one better)")
    for name in names:
        t0 = time.perf_counter()
        rows: dict[str, dict[str, list[float]]] = {}
        dms = []
        data = load_dataset(name)
        for seed in range(seeds):
            data = load_dataset(name, seed=seed)
            spec = TrunkSpec("mlp", (256, 128))
            cfg = TrainConfig(epochs=epochs, lr=1e-3, seed=seed)
            factory = partial(spec.build, data.input_shape)
            mtl = train_partition(factory, data, [list(data.tasks.names)], cfg)["test"]
            single = train_partition(factory, data, [[t] for t in data.tasks.names], cfg)["test"]
            d = per_task_delta(mtl.metrics, single.metrics, data.tasks)
            dms.append(delta_m(mtl.metrics, single.metrics, data.tasks))
            for t in data.tasks.names:
                r = rows.setdefault(t, {"mtl": [], "single": [], "delta": []})
                r["mtl"].append(mtl.metrics[t])
                r["single"].append(single.metrics[t])
                r["delta"].append(d[t])
        print(f"\n### {name}: trunk {data.input_shape[0]}→256→128, {epochs} epochs, seeds 0..{seeds - 1} "
              f"({time.perf_counter() - t0:.0f} s)\n")
        print("| task | metric | all-in-one | single-task | Δ% |")
        print("|---|---|---|---|---|")
        for t in data.tasks:
            r = rows[t.name]
            arrow = "↑" if t.higher_is_better else "↓"
            print(f"| {t.name} | {t.metric} {arrow} | {fmt(r['mtl'])} | {fmt(r['single'])} | "
                  f"{np.mean(r['delta']):+.2f} |")
        print(f"\n**Δm% = {np.mean(dms):+.2f} ± {np.std(dms, ddof=1) if len(dms) > 1 else 0:.2f}** "
              f"(per seed: {', '.join(f'{v:+.2f}' for v in dms)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--n-tasks", type=int, default=9)
    p.add_argument("--n-clusters", type=int, default=3)
    p.add_argument("--real-seeds", type=int, default=3)
    p.add_argument("--real-epochs", type=int, default=20)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads")
    planted(a.seeds, a.epochs, a.n_tasks, a.n_clusters)
    if not a.skip_real:
        real(["yeast", "digits", "star"], a.real_seeds, a.real_epochs)


if __name__ == "__main__":
    main()
