"""Sharing topologies × loss weightings: Δm% against cached single-task baselines, and the cost per step.

Part 1 — Δm% (lower is better; negative = the multi-task model beats the
single-task models; see taskgraph.training.delta_m) on the test split for

  rows:    all-in-one (hard, one group), single-task (hard, singleton groups: the
           noise floor of Δm%), hard sharing by the known grouping, branched
           (root → known groups → tasks, groups split after the first stage),
           cross-stitch (one column per task), MMoE (4 experts);
  columns: equal, uncertainty, GradNorm, PCGrad weighting;

on planted clusters with opposed clusters (the known grouping is the planted
one, ``data.ground_truth``) and on yeast (the known grouping is its correlated
label blocks, docs/DATASETS: 1–2, 3–4, 5–8, 10–11, 12–13, then 9 and 14 alone).
Each cell is mean ± sd over seeds; a seed sets the data split (and, for planted
clusters, the generated data), the initialisation and the shuffling. Single-task
baselines come from taskgraph.baselines.single_task_baselines (trained once per
seed and reused by every cell).

Part 2 — each weighting's median wall time per training step (forward, weighting
backward, optimizer step) relative to equal weighting, measured in the same run
on the same model and batches.

Usage:
    python benchmarks/topologies.py                       # defaults: 2 seeds, about 10 min on 2 busy cores
    python benchmarks/topologies.py --seeds 5 --planted-epochs 40 --yeast-epochs 30
    python benchmarks/topologies.py --datasets planted --weightings equal pcgrad --timing-steps 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from taskgraph.baselines import single_task_baselines
from taskgraph.data import load_dataset
from taskgraph.models import Branched, CrossStitch, HardSharing, MMoE, TrunkSpec, build_model
from taskgraph.training import TrainConfig, fit, task_losses
from taskgraph.weighting import make_weighting

WEIGHTINGS = ("equal", "uncertainty", "gradnorm", "pcgrad")
TIMED = ("equal", "fixed", "uncertainty", "dwa", "gradnorm", "pcgrad", "famo")
YEAST_BLOCKS = (("c1", "c2"), ("c3", "c4"), ("c5", "c6", "c7", "c8"), ("c10", "c11"), ("c12", "c13"),
                ("c9",), ("c14",))

# row label -> (spec, which grouping to pass: None / "known" / "single", weightings it runs with)
ROWS = {
    "all-in-one": (HardSharing(), None, WEIGHTINGS),
    "single-task": (HardSharing(), "single", ("equal",)),
    "hard (known groups)": (HardSharing(), "known", WEIGHTINGS),
    "branched (1 shared stage)": (Branched(branch_depths=(1,)), "known", WEIGHTINGS),
    "cross-stitch (per task)": (CrossStitch(), None, WEIGHTINGS),
    "mmoe (4 experts)": (MMoE(n_experts=4), None, WEIGHTINGS),
}


def dataset(name: str, seed: int):
    """(data, known grouping, trunk, train config) for one seed."""
    if name == "planted":
        data = load_dataset("planted-clusters", seed=seed)
        return data, data.ground_truth, TrunkSpec("mlp", tuple(data.info.get("trunk_hidden", (64, 8))))
    data = load_dataset("yeast", seed=seed)
    return data, YEAST_BLOCKS, TrunkSpec("mlp", (128, 64))


def fmt(values) -> str:
    a = np.asarray(values, dtype=float)
    sd = a.std(ddof=1) if a.size > 1 else 0.0
    return f"{a.mean():+.2f} ± {sd:.2f}"


def quality(name: str, seeds: int, epochs: int, lr: float, weightings, rows, cache_dir) -> None:
    results: dict[tuple[str, str], list[float]] = {}
    base_seconds = []
    t0 = time.perf_counter()
    trunk = None
    for seed in range(seeds):
        data, known, trunk = dataset(name, seed)
        cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed)
        base = single_task_baselines(data, trunk, cfg, cache_dir=cache_dir)
        base_seconds.append(base.seconds)
        for label in rows:
            spec, which, allowed = ROWS[label]
            grouping = {None: None, "known": known, "single": [[t] for t in data.tasks.names]}[which]
            for w in weightings:
                if w not in allowed:
                    continue
                torch.manual_seed(seed)
                model = build_model(spec, trunk, data.tasks, data.input_shape, grouping=grouping)
                res = fit(model, data, cfg, weighting=make_weighting(w))
                results.setdefault((label, w), []).append(base.delta_m(res.test, data.tasks))
    metric = data.tasks[0].metric
    print(f"\n## {data.name}: Δm% on test {metric} vs single-task baselines (mean ± sd over seeds 0..{seeds - 1})")
    print(f"{len(data.tasks)} tasks; trunk MLP {data.input_shape[0]}→{'→'.join(map(str, trunk.hidden))}; "
          f"Adam lr {lr}, {epochs} epochs, batch 256, best validation epoch kept; known groups "
          f"{[list(g) for g in known]}; baselines trained in {np.mean(base_seconds):.0f} s per seed; "
          f"total {time.perf_counter() - t0:.0f} s\n")
    print("| topology | " + " | ".join(weightings) + " |")
    print("|---|" + "---|" * len(weightings))
    for label in rows:
        cells = [fmt(results[(label, w)]) if (label, w) in results else "—" for w in weightings]
        print(f"| {label} | " + " | ".join(cells) + " |")


def timing(steps: int, weightings, batch_size: int = 256) -> None:
    """Median time per step per weighting, relative to equal, for two models; weightings interleaved."""
    cases = [("planted all-in-one, 9 tasks, MLP 32→64→8", "planted", None, HardSharing()),
             ("planted cross-stitch, 9 columns", "planted", None, CrossStitch()),
             ("yeast all-in-one, 14 tasks, MLP 103→128→64", "yeast", None, HardSharing())]
    print(f"\n## time per training step relative to equal weighting (median of {steps} steps, batch {batch_size}, "
          f"{torch.get_num_threads()} threads)\n")
    print("| model | " + " | ".join(weightings) + " | equal (ms/step) |")
    print("|---|" + "---|" * (len(weightings) + 1))
    for label, name, grouping, spec in cases:
        data, _, trunk = dataset(name, 0)
        x_all, ys_all, ms_all = data.train[list(range(len(data.train)))]
        setups = {}
        for w in weightings:
            torch.manual_seed(0)
            model = build_model(spec, trunk, data.tasks, data.input_shape, grouping=grouping)
            weighting = make_weighting(w, **({"weights": [1.0] * len(data.tasks)} if w == "fixed" else {}))
            state = weighting.init_state(data.tasks.names, model)
            params = list(model.parameters()) + list(weighting.extra_parameters(state))
            setups[w] = (model, weighting, state, torch.optim.Adam(params, lr=1e-3))
        times: dict[str, list[float]] = {w: [] for w in weightings}
        g = torch.Generator().manual_seed(0)
        for step in range(steps + 3):
            idx = torch.randint(0, x_all.shape[0], (batch_size,), generator=g)
            x, ys, ms = x_all[idx], {k: v[idx] for k, v in ys_all.items()}, {k: v[idx] for k, v in ms_all.items()}
            for w in weightings:  # interleaved, so load changes hit every weighting alike
                model, weighting, state, opt = setups[w]
                t = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                losses = task_losses(model, data.tasks, x, ys, ms)
                weighting.backward(losses, model, state, step=step, epoch=0)
                opt.step()
                if step >= 3:  # warm-up steps are not timed
                    times[w].append(time.perf_counter() - t)
        eq = statistics.median(times["equal"])
        cells = [f"{statistics.median(times[w]) / eq:.2f}×" for w in weightings]
        print(f"| {label} | " + " | ".join(cells) + f" | {eq * 1e3:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--datasets", nargs="+", default=["planted", "yeast"], choices=["planted", "yeast"])
    p.add_argument("--weightings", nargs="+", default=list(WEIGHTINGS))
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--planted-epochs", type=int, default=25)
    p.add_argument("--yeast-epochs", type=int, default=8)
    p.add_argument("--timing-steps", type=int, default=30, help="0 skips the timing part")
    p.add_argument("--cache-dir", default=None, help="folder for cached single-task baselines (default: memory)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 by default: on a shared 2-core machine, 2 threads of tiny models "
                        "spin-wait and run 5-10x slower)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    alloc = "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "glibc malloc"
    print(f"torch {torch.__version__}, {a.threads} threads, {alloc}")
    t0 = time.perf_counter()
    for name in a.datasets:
        epochs, lr = (a.planted_epochs, 3e-3) if name == "planted" else (a.yeast_epochs, 1e-3)
        quality(name, a.seeds, epochs, lr, a.weightings, a.rows, a.cache_dir)
    if a.timing_steps:
        timing(a.timing_steps, [w for w in TIMED])
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
