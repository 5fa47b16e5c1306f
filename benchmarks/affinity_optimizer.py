"""Which optimizer should the affinity run step with? Adam, SGD with momentum, plain SGD.

TAG's lookahead Z_{i→j} is one step of the optimizer *with its state*. Under Adam (and SGD
with momentum) most of that step is the state's own move (the moments of every task's past
gradients), the same whatever the source task i, so the sources of one target look alike.
This benchmark measures that on the README demo's data (6 tasks in 3 planted clusters,
the demo's trunk and batch size) and compares each optimizer's affinity with the
**measured pairwise transfer** (every single-task and pair network trained to early stopping
with the demo's Adam, paired seeds):

- ``sources alike``: per target j, the spread of Z_{·→j} over the sources divided by its mean
  magnitude, median over targets (small: the sources look alike);
- ``within`` / ``across``: the mean symmetrised affinity S = (Z_ij + Z_ji)/2 of the planted
  pairs and of the other pairs;
- ``certain +/−``: pairs whose 95% interval of S lies above / below 0;
- ``Spearman``: S against the measured symmetric transfer T_ij + T_ji over the 15 pairs;
- ``first proposal``: the affinity's first partition (automatic k).

Usage:
    python benchmarks/affinity_optimizer.py            # about 2 minutes on 2 cores
    python benchmarks/affinity_optimizer.py --seeds 1  # quicker, transfer over one seed
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from scipy import stats

from taskgraph.affinity import measure_affinity
from taskgraph.data import load_dataset
from taskgraph.grouping import group_tasks
from taskgraph.models import MultiTaskModel, TrunkSpec
from taskgraph.training import TrainConfig, fit, seed_everything

OPTIONS = {"n_tasks": 6, "n_clusters": 3, "n_samples": 1500}  # studies/quickstart.toml
TRUNK = TrunkSpec(hidden=(64, 8))
TRAIN = TrainConfig(epochs=40, lr=3e-3, batch_size=128, patience=5, device="cpu")
MEASURE = {
    "adam (the demo's training)": TRAIN.replace(epochs=4, patience=None),
    "sgd, momentum 0.9, lr 0.05": TRAIN.replace(epochs=4, patience=None, optimizer="sgd", lr=0.05, momentum=0.9),
    "plain sgd, lr 0.05": TRAIN.replace(epochs=4, patience=None, optimizer="sgd", lr=0.05, momentum=0.0),
}


def transfer(data, seeds: int) -> np.ndarray:
    """T[i, j] = (L_i({i}) − L_i({i, j})) / L_i({i}) on validation, mean over paired seeds."""
    names = data.tasks.names
    out = np.zeros((seeds, len(names), len(names)))

    def val(group, seed):
        sub = data.subset_tasks(list(group))
        seed_everything(seed)
        model = MultiTaskModel(TRUNK.build(sub.input_shape), sub.tasks, input_shape=sub.input_shape)
        return fit(model, sub, TRAIN.replace(seed=seed)).val.losses

    for s in range(seeds):
        alone = {t: val((t,), s)[t] for t in names}
        for a, b in itertools.combinations(range(len(names)), 2):
            pair = val((names[a], names[b]), s)
            out[s, a, b] = (alone[names[a]] - pair[names[a]]) / alone[names[a]]
            out[s, b, a] = (alone[names[b]] - pair[names[b]]) / alone[names[b]]
    return out.mean(0)


def row(label: str, data, cfg: TrainConfig, truth: np.ndarray, planted: set[frozenset[str]]) -> str:
    names = data.tasks.names
    tr, _, _ = data.loaders(cfg.batch_size, seed=0)
    seed_everything(0)
    model = MultiTaskModel(TRUNK.build(data.input_shape), data.tasks, input_shape=data.input_shape)
    m = measure_affinity(model, data.tasks, tr, estimator="exact", every=2, config=cfg.replace(seed=0))
    z = np.asarray(m.mean)
    off = ~np.eye(len(names), dtype=bool)
    alike = np.median([np.std(z[off[:, j], j]) / np.mean(np.abs(z[off[:, j], j])) for j in range(len(names))])
    s = (z + z.T) / 2
    half = (np.asarray(m.ci_high) - np.asarray(m.ci_low)) / 2
    h = np.sqrt(half**2 + half.T**2) / 2  # the symmetrised entry's half-width, the two treated as independent
    pairs = list(itertools.combinations(range(len(names)), 2))
    within = [s[a, b] for a, b in pairs if frozenset((names[a], names[b])) in planted]
    across = [s[a, b] for a, b in pairs if frozenset((names[a], names[b])) not in planted]
    plus = sum(s[a, b] - h[a, b] > 0 for a, b in pairs)
    minus = sum(s[a, b] + h[a, b] < 0 for a, b in pairs)
    rho = stats.spearmanr([s[a, b] for a, b in pairs], [truth[a, b] + truth[b, a] for a, b in pairs]).statistic
    first = group_tasks(m, variant="partition")[0]
    shown = " | ".join("+".join(g) for g in first.groups)
    return (f"{label:<28} {alike:>8.3f} {np.mean(within):>+9.4f} {np.mean(across):>+9.4f} "
            f"{plus:>3d}/{minus:<3d} {rho:>+8.2f}  {shown}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="paired seeds of the measured transfer")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_dataset("planted-clusters", **OPTIONS)
    planted = {frozenset(p) for g in data.ground_truth for p in itertools.combinations(g, 2)}
    truth = transfer(data, args.seeds)
    print(f"planted clusters: {' | '.join('+'.join(g) for g in data.ground_truth)}; measured transfer over "
          f"{args.seeds} paired seed(s): planted pairs {np.mean([truth[a, b] for a, b in _idx(data, planted)]):+.3f}, "
          f"other pairs {np.mean([truth[a, b] for a, b in _idx(data, planted, other=True)]):+.3f} (mean T_ij)")
    print(f"{'affinity run':<28} {'alike':>8} {'within':>9} {'across':>9} {'+/−':>7} {'Spearman':>8}  first proposal")
    for label, cfg in MEASURE.items():
        print(row(label, data, cfg, truth, planted))
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


def _idx(data, planted, other: bool = False) -> list[tuple[int, int]]:
    names = data.tasks.names
    return [(a, b) for a, b in itertools.permutations(range(len(names)), 2)
            if (frozenset((names[a], names[b])) in planted) != other]


if __name__ == "__main__":
    raise SystemExit(main())
