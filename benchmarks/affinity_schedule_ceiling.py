"""What a tracking schedule can reach: averages of subsets of an every-step measurement (prints tables; not a test).

One training run (planted clusters, 9 tasks, Adam, batch 256) is measured at every step three
ways at once (measuring never changes the trajectory): exact on the whole batch, exact on a
64-sample sub-batch, and the momentum drift D (both batches). Then, offline, averages over k evenly
spaced steps are compared (Spearman of the 72 off-diagonal entries) with the every-step whole-batch
average that ``affinity_speed.py --only run`` uses as its reference:

- plain averages of k whole-batch or sub-batch measurements;
- the drift control variate: mean over k steps of (Z − D) plus the mean of D over the steps
  where D was measured (every step, every 2nd, 4th, 8th).

Medians over several offsets of the evenly spaced subset. The gap between these ceilings and
what the budgeted tracker reaches shows where its time should go.

Usage:
    python benchmarks/affinity_schedule_ceiling.py                       # MLP 64→256→256→128, 220 steps
    python benchmarks/affinity_schedule_ceiling.py --hidden 64,8 --dim 32 --epochs 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", default="256,256,128")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import os

    os.environ.setdefault("COLUMNS", "140")
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from taskgraph.affinity import AffinityTracker, Schedule
    from taskgraph.cli.common import print_table
    from taskgraph.data import planted_clusters
    from taskgraph.models import MultiTaskModel, mlp
    from taskgraph.training import TrainConfig, train

    torch.set_num_threads(args.threads)
    hidden = tuple(int(w) for w in args.hidden.split(","))
    data = planted_clusters(n_tasks=9, n_clusters=3, n_samples=args.samples, dim=args.dim, seed=0)
    cfg = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=256, seed=0, device="cpu", restore_best=False)
    torch.manual_seed(0)
    model = MultiTaskModel(mlp(args.dim, hidden), data.tasks, input_shape=(args.dim,))
    full = AffinityTracker("exact", schedule=Schedule(every=1), sub_batch=None, control=1)
    sub = AffinityTracker("exact", schedule=Schedule(every=1), sub_batch=64, control=1)
    t0 = time.perf_counter()
    train(model, data.tasks, data.train.loader(256, shuffle=True, seed=0), config=cfg, callbacks=[full, sub])
    seconds = time.perf_counter() - t0
    z, zs = full.samples, sub.samples
    d, ds = np.stack(full._paired), np.stack(sub._paired)
    steps = len(z)
    off = ~np.eye(9, dtype=bool)
    ref = np.nanmean(z, 0)[off]

    def rho(m) -> float:
        return float(spearmanr(m[off], ref).statistic)

    def subsets(k: int):
        stride = max(1, steps // k)
        for start in range(0, stride, max(1, stride // 4)):
            yield np.arange(start, steps, stride)[:k]

    def cv(vals, paired, idx, every: int, start: int) -> np.ndarray:
        mean_d = np.nanmean(paired[start % every::every], 0)
        return np.nanmean(vals[idx] - paired[idx][:, None, :] + mean_d[None, None, :], 0)

    rows = []
    for k in (5, 10, 20, 40, 80):
        row = [k, f"{np.median([rho(np.nanmean(z[i], 0)) for i in subsets(k)]):.3f}",
               f"{np.median([rho(np.nanmean(zs[i], 0)) for i in subsets(k)]):.3f}"]
        for every in (1, 2, 4, 8):
            row.append(f"{np.median([rho(cv(z, d, i, every, i[0])) for i in subsets(k)]):.3f}")
        row.append(f"{np.median([rho(cv(zs, ds, i, 1, i[0])) for i in subsets(k)]):.3f}")
        rows.append(row)
    trunk = "→".join(str(w) for w in (args.dim, *hidden))
    print_table(f"Spearman with the every-step whole-batch average, {steps} steps, MLP {trunk}, 9 tasks "
                f"(run measured three ways in {seconds:.0f} s)",
                ["k steps", "whole", "sub-64", "whole+D/1", "whole+D/2", "whole+D/4", "whole+D/8", "sub-64+D/1"], rows)
    half = steps // 2
    eo = spearmanr(np.nanmean(z[0::2], 0)[off], np.nanmean(z[1::2], 0)[off]).statistic
    hh = spearmanr(np.nanmean(z[:half], 0)[off], np.nanmean(z[half:], 0)[off]).statistic
    print(f"reference's own agreement: even vs odd steps {eo:.3f}; first vs second half {hh:.3f}; "
          f"sub-64 measured at every step {rho(np.nanmean(zs, 0)):.3f}")
    print("(whole+D/e: k whole-batch measurements with the drift control variate, D averaged over every e-th step)")


if __name__ == "__main__":
    main()
