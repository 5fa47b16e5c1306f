"""What a tracking schedule can reach: averages of subsets of an every-step measurement (prints tables; not a test).

One training run (planted clusters, 9 tasks, Adam, batch 256) is measured at every step several
ways at once (measuring never changes the trajectory): exact on the whole batch; exact with the
gradients on 64 random samples and the losses on the whole batch (the tracker's sub_batch=64);
exact with gradients and losses on the same 64 samples; and the momentum drift D. Then, offline,
averages over k evenly
spaced steps are compared (Spearman of the 72 off-diagonal entries) with the every-step whole-batch
average that ``affinity_speed.py --only run`` uses as its reference:

- plain averages of k measurements of each kind;
- the drift control variate: mean over k steps of (Z − D) plus the mean of D over the steps
  where D was measured (every step, every 2nd, 4th, 8th).

Medians over several offsets of the evenly spaced subset. The gap between these ceilings and
what the budgeted tracker reaches shows where its time should go. A second table compares
subsets whose first measurement is step 0 (the optimizer's fresh state) with ones that start
later in the first stride.

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

    from taskgraph.affinity import AffinityTracker, ExactLookahead, Schedule
    from taskgraph.cli.common import print_table
    from taskgraph.data import planted_clusters
    from taskgraph.models import MultiTaskModel, mlp
    from taskgraph.training import Callback, TrainConfig, train

    class SubOnly(Callback):
        """Exact with gradients and losses on the same 64 random samples (biased; for comparison)."""

        def __init__(self):
            self.values, self.gen, self.est = [], torch.Generator().manual_seed(1), ExactLookahead()

        def on_step_begin(self, state, batch):
            x, ys, ms = batch
            i = torch.randperm(x.shape[0], generator=self.gen)[:64]
            part = (x[i], {k: v[i] for k, v in ys.items()}, {k: v[i] for k, v in ms.items()})
            self.values.append(self.est.measure(state.model, state.optimizer, part, state.tasks).values)

    torch.set_num_threads(args.threads)
    hidden = tuple(int(w) for w in args.hidden.split(","))
    data = planted_clusters(n_tasks=9, n_clusters=3, n_samples=args.samples, dim=args.dim, seed=0)
    cfg = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=256, seed=0, device="cpu", restore_best=False)
    torch.manual_seed(0)
    model = MultiTaskModel(mlp(args.dim, hidden), data.tasks, input_shape=(args.dim,))
    full = AffinityTracker("exact", schedule=Schedule(every=1), sub_batch=None, control=1)
    sub = AffinityTracker("exact", schedule=Schedule(every=1), sub_batch=64, control=1)  # 64 -> the batch
    only = SubOnly()
    t0 = time.perf_counter()
    train(model, data.tasks, data.train.loader(256, shuffle=True, seed=0), config=cfg, callbacks=[full, sub, only])
    seconds = time.perf_counter() - t0
    z, zs, zo = full.samples, sub.samples, np.stack(only.values)
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
               f"{np.median([rho(np.nanmean(zs[i], 0)) for i in subsets(k)]):.3f}",
               f"{np.median([rho(np.nanmean(zo[i], 0)) for i in subsets(k)]):.3f}"]
        for every in (1, 2, 4, 8):
            row.append(f"{np.median([rho(cv(z, d, i, every, i[0])) for i in subsets(k)]):.3f}")
        row.append(f"{np.median([rho(cv(zs, ds, i, 1, i[0])) for i in subsets(k)]):.3f}")
        rows.append(row)
    trunk = "→".join(str(w) for w in (args.dim, *hidden))
    print_table(f"Spearman with the every-step whole-batch average, {steps} steps, MLP {trunk}, 9 tasks "
                f"(run measured at every step in {seconds:.0f} s)",
                ["k steps", "whole", "64→batch", "64 only", "whole+D/1", "whole+D/2", "whole+D/4", "whole+D/8",
                 "64→batch+D/1"], rows)
    # the same control-variate averages with the first measurement at step 0 (a fresh optimizer state)
    # or one stride in (the tracker's schedule never measures the first step)
    rows = []
    for k in (4, 6, 10):
        stride = max(1, steps // k)
        row = [k]
        for every in (1, 2, 4):
            at0 = np.arange(0, steps, stride)[:k]
            later = [np.arange(start, steps, stride)[:k] for start in range(1, stride, max(1, stride // 8))]
            row += [f"{rho(cv(z, d, at0, every, 0)):.3f}",
                    f"{np.median([rho(cv(z, d, i, every, i[0])) for i in later]):.3f}"]
        rows.append(row)
    print_table("The first step: control-variate averages of k whole-batch measurements, first one at step 0 "
                "vs later in the first stride (median over offsets)",
                ["k steps", "D/1 from 0", "D/1 later", "D/2 from 0", "D/2 later", "D/4 from 0", "D/4 later"], rows)
    half = steps // 2
    eo = spearmanr(np.nanmean(z[0::2], 0)[off], np.nanmean(z[1::2], 0)[off]).statistic
    hh = spearmanr(np.nanmean(z[:half], 0)[off], np.nanmean(z[half:], 0)[off]).statistic
    print(f"reference's own agreement: even vs odd steps {eo:.3f}; first vs second half {hh:.3f}; every step "
          f"measured with 64 only {rho(np.nanmean(zo, 0)):.3f}, with 64→batch {rho(np.nanmean(zs, 0)):.3f}")
    print("(whole: the whole batch; 64→batch: gradients on 64 random samples, losses on the whole batch (the "
          "tracker's sub_batch=64); 64 only: gradients and losses on the same 64 samples; whole+D/e: k whole-batch "
          "measurements with the drift control variate, D averaged over every e-th step)")


if __name__ == "__main__":
    main()
