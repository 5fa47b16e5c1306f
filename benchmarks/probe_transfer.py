"""Does feature transfer between single-task networks predict the measured pairwise transfer?

An estimator outside the gradient family, after Taskonomy (Zamir et al., CVPR 2018): train one
single-task network per task (the problem's trunk and protocol, as the default policy's checks
do), then fit a linear head for task i on the frozen trunk features of task j's network. The
probe's validation loss L_i(j) against i's own features L_i(i) gives

    P[i, j] = (L_i(i) − L_i(j)) / L_i(i)     (≤ 0 mostly: a task's own features serve it best)

and the benchmark reports, per quality problem and seed, the Spearman correlation of P with the
exhaustion's measured transfer T[i, j] = (L_i({i}) − L_i({i, j})) / L_i({i}) (the same
statistic as ``benchmarks/quality.py``'s Spearman table) and the test rank of the partition
the grouping solver takes from P centred per task (each task's median source at 0).

Usage:
    python benchmarks/probe_transfer.py                     # the five problems, 2 seeds: ~3 minutes
    python benchmarks/probe_transfer.py --problems yeast6 --seeds 1000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from quality import DEFAULT_PROBLEMS, ground_truth, spearman

from taskgraph.affinity import AffinityMatrix
from taskgraph.data.base import unpack_batch
from taskgraph.evaluation import PROBLEMS
from taskgraph.evaluation.strategies import runs_for
from taskgraph.grouping import group_tasks
from taskgraph.pipeline import DEFAULT_POLICY, reseed_loader
from taskgraph.training import seed_everything, train


def collect(loader):
    """A loader's whole split: x, {task: y}, {task: mask}."""
    xs, ys, ms = [], {}, {}
    for batch in loader:
        x, y, m = unpack_batch(batch)
        xs.append(x)
        for k in y:
            ys.setdefault(k, []).append(y[k])
            ms.setdefault(k, []).append(m[k])
    return torch.cat(xs), {k: torch.cat(v) for k, v in ys.items()}, {k: torch.cat(v).bool() for k, v in ms.items()}


def probe_loss(task, f_train, y_train, m_train, f_val, y_val, m_val, steps: int = 300) -> float:
    """Validation loss of a linear head for ``task`` fitted on frozen (standardised) features."""
    torch.manual_seed(0)
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    f_train, f_val = (f_train - mu) / sd, (f_val - mu) / sd
    head = torch.nn.Linear(f_train.shape[1], task.out_dim)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        task.per_sample_loss(head(f_train[m_train]), y_train[m_train]).mean().backward()
        opt.step()
    with torch.no_grad():
        return float(task.per_sample_loss(head(f_val[m_val]), y_val[m_val]).mean())


def probe_matrix(problem, seed: int) -> np.ndarray:
    """P[i, j] for one seed (single-task networks trained as the default policy's checks train them)."""
    runs = runs_for(problem)
    cfg = DEFAULT_POLICY.check_config(runs.config).replace(seed=seed)
    x_tr, y_tr, m_tr = collect(runs.train_loader)
    x_va, y_va, m_va = collect(runs.val_loader)
    feats = {}
    for t in problem.tasks:
        sub = runs.tasks.subset([t])
        seed_everything(cfg.seed)
        model = runs.build(sub)
        reseed_loader(runs.train_loader, cfg.seed)
        train(model, sub, runs.train_loader, config=cfg, val_loader=runs.val_loader)
        model.eval()
        with torch.no_grad():
            feats[t] = (model.trunk(x_tr), model.trunk(x_va))
    tasks = {t.name: t for t in runs.tasks}
    n = len(problem.tasks)
    loss = np.zeros((n, n))
    for i, ti in enumerate(problem.tasks):
        for j, tj in enumerate(problem.tasks):
            loss[i, j] = probe_loss(tasks[ti], feats[tj][0], y_tr[ti], m_tr[ti], feats[tj][1], y_va[ti], m_va[ti])
    own = np.diag(loss)[:, None]
    return (own - loss) / own


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="*", default=list(DEFAULT_PROBLEMS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[1000, 1001])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    print(f"{'problem':<15} {'seed':>5} {'Spearman':>9} {'rank':>5}  partition from P (centred per task)")
    means = []
    for name in args.problems:
        problem, gt = PROBLEMS.get(name), ground_truth(name)
        transfer = gt.transfer("val")
        n = len(problem.tasks)
        off = ~np.eye(n, dtype=bool)
        for seed in args.seeds:
            p = probe_matrix(problem, seed)
            rho = spearman(p.T, transfer)  # spearman() reads affinity as source → target: Z[j, i] vs T[i, j]
            means.append(rho)
            centred = p - np.array([np.median(p[i, off[i]]) for i in range(n)])[:, None]
            scale = np.array([np.std(p[i, off[i]]) for i in range(n)])[:, None] + 1e-12
            a = (centred / scale).T * 0.01
            np.fill_diagonal(a, 0.0)
            m = AffinityMatrix(tuple(problem.tasks), a, np.full((n, n), 1e-4), np.full((n, n), 10))
            groups = group_tasks(m, variant="partition", singletons="allow")[0].groups
            shown = " | ".join("+".join(g) for g in groups)
            print(f"{name:<15} {seed:>5} {rho:>+9.2f} {gt.rank(groups, 'test'):>5}  {shown}", flush=True)
    print(f"mean Spearman {np.mean(means):+.2f} over {len(means)} (problem, seed) ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
