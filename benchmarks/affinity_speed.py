"""Affinity engine speed, memory and tracked-run cost (prints tables; not a test).

Usage:
    python benchmarks/affinity_speed.py                  # everything, allocator as started
    python benchmarks/affinity_speed.py --allocator tcmalloc   # re-runs itself under LD_PRELOAD tcmalloc
    python benchmarks/affinity_speed.py --only mlp --sizes 4,9

Tables:
1. MLP trunk 64→256→256→128, linear heads, batch 256, n tasks: median ms per step of a plain
   training step (Adam), the naive reference (deepcopy + optimizer.step() per task), the exact
   vectorised estimator and the first-order estimator, with ratios.
2. The same for a small CNN trunk on 1×28×28 inputs at n = 9.
3. Peak tensor memory (torch profiler, bytes allocated above the level before the call) of one
   plain step and one exact measurement at n = 40 for several chunk sizes.
4. What the tracker's pieces cost per step (n = 9, MLP and CNN): the momentum-drift control
   variate (from the training step's losses, as inside train(), and with two forwards) and one
   exact measurement on the whole batch and on a 64-sample sub-batch, as multiples of a plain step.
5. A whole training run with the default tracking schedule (and other sub-batch/budget pairs,
   --run-variants) against the same run untracked (wall-time ratio) and against exact
   measurement on the whole batch at every step of the same run (Spearman of the off-diagonal
   entries; tracking does not change the trajectory, so it is the same run); medians over
   --run-repeats repeats, plus the reference's own noise ceiling; and both against the
   population, the every-step averages of --run-population other batch orders from the same
   start (what the affinities are, apart from one run's batches).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def allocator() -> str:
    pre = os.environ.get("LD_PRELOAD", "")
    return "tcmalloc (LD_PRELOAD " + pre + ")" if "tcmalloc" in pre else "glibc malloc"


#: where the tables run (``--device``)
DEVICE = "cpu"


def _sync() -> None:
    if DEVICE.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


#: trunk, input shape and batch size of each model kind
KINDS = {
    "mlp": ("MLP 64→256→256→128, batch 256", 256),
    "cnn": ("small CNN (16, 32)→64 on 1×28×28, batch 256", 256),
    "mlp-large": ("MLP 512→2048→2048→1024 (7 M parameters), batch 4096", 4096),
}


def setup(kind: str, n: int, seed: int = 0):
    import torch

    from taskgraph.models import MultiTaskModel, mlp, small_cnn
    from taskgraph.tasks import Task, TaskSet

    torch.manual_seed(seed)
    tasks = TaskSet([Task(f"t{i}", "regression" if i % 3 else "binary") for i in range(n)])
    if kind == "mlp":
        trunk, shape = mlp(64, (256, 256, 128)), (64,)
    elif kind == "mlp-large":
        trunk, shape = mlp(512, (2048, 2048, 1024)), (512,)
    else:
        trunk, shape = small_cnn(1, (16, 32), 64), (1, 28, 28)
    bs = KINDS[kind][1]
    model = MultiTaskModel(trunk, tasks, input_shape=shape).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(bs, *shape, device=DEVICE)
    ys = {t.name: (torch.randn(bs, device=DEVICE) if t.kind == "regression"
                   else (torch.rand(bs, device=DEVICE) > 0.5).float()) for t in tasks}
    ms = {t.name: torch.ones(bs, dtype=torch.bool, device=DEVICE) for t in tasks}

    def plain():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        torch.stack([t.loss(out[t.name], ys[t.name], ms[t.name]) for t in tasks]).sum().backward()
        opt.step()

    for _ in range(3):  # non-trivial Adam state
        plain()
    return model, opt, tasks, (x, ys, ms), plain


def speed_row(kind: str, n: int, repeats: int) -> list:
    from taskgraph.affinity import ExactLookahead, FirstOrder, naive_lookahead

    model, opt, tasks, batch, plain = setup(kind, n)
    exact, fo = ExactLookahead(), FirstOrder()
    t_plain = median_ms(plain, repeats * 2)
    t_naive = median_ms(lambda: naive_lookahead(model, opt, batch, tasks), max(3, repeats // (1 + n // 10)), 1)
    t_exact = median_ms(lambda: exact.measure(model, opt, batch, tasks), repeats)
    t_fo = median_ms(lambda: fo.measure(model, opt, batch, tasks), repeats)
    return [n, f"{t_plain:.2f}", f"{t_naive:.1f}", f"{t_exact:.1f}", f"{t_fo:.1f}",
            f"{t_naive / t_plain:.1f}x", f"{t_exact / t_plain:.1f}x", f"{t_fo / t_plain:.1f}x",
            f"{t_naive / t_exact:.2f}x", f"{t_exact / t_fo:.2f}x"]


def speed_table(kind: str, sizes, repeats: int) -> None:
    from taskgraph.cli.common import print_table

    rows = [speed_row(kind, n, repeats) for n in sizes]
    title = f"{KINDS[kind][0]}, Adam, median ms per step; {DEVICE}" + \
        (f" ({_gpu_name()}, TF32 off)" if DEVICE.startswith("cuda") else f", {allocator()}")
    print_table(title, ["n", "plain", "naive", "exact", "1st-ord", "nv/pl", "ex/pl", "fo/pl", "nv/ex", "ex/fo"],
                rows)


def drift_rows(kind: str, n: int, repeats: int) -> list[list[str]]:
    import torch

    from taskgraph.affinity import ExactLookahead, momentum_drift
    from taskgraph.affinity.drift import StepDrift

    model, opt, tasks, batch, plain = setup(kind, n)
    x, ys, ms = batch
    with torch.no_grad():
        out = model(x)
        base = torch.stack([t.loss(out[t.name], ys[t.name], ms[t.name]) for t in tasks])
    drift = StepDrift(model, tasks)  # built once per run, as the tracker does
    sub = (x[:64], {k: v[:64] for k, v in ys.items()}, {k: v[:64] for k, v in ms.items()})
    exact = ExactLookahead()
    t_plain = median_ms(plain, repeats * 4)
    parts = [("drift from the step's losses (train())",
              lambda: drift(opt, batch, base)),
             ("… with its proxy control variate (the tracker)",
              lambda: drift.measure(opt, batch, base, proxy=True)),
             ("drift, two forwards (own loop)", lambda: momentum_drift(model, opt, batch, tasks)),
             ("exact, whole batch", lambda: exact.measure(model, opt, batch, tasks)),
             ("exact, 64-sample sub-batch", lambda: exact.measure(model, opt, sub, tasks)),
             ("exact, gradients on 64, losses on the batch (tracker)",
              lambda: exact.measure(model, opt, sub, tasks, eval_batch=batch))]
    rows = [[KINDS[kind][0], "plain training step", f"{t_plain:.2f}", "1.00"]]
    for label, fn in parts:
        t = median_ms(fn, repeats * 4)
        rows.append(["", label, f"{t:.2f}", f"{t / t_plain:.2f}"])
    return rows


def drift_table(n: int, repeats: int) -> None:
    """What the tracker's pieces cost per step, against a plain training step (the budget's currency)."""
    from taskgraph.cli.common import print_table

    rows = [r for kind in ("mlp", "cnn") for r in drift_rows(kind, n, repeats)]
    print_table(f"Tracker costs per step, n={n}, Adam, median ms; {DEVICE}, {allocator()}",
                ["model", "", "ms", "/ plain step"], rows)


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name()


def peak_bytes(fn) -> int:
    """Peak of (allocated − freed) tensor bytes during ``fn`` (CPU profiler memory events; on CUDA the
    allocator's peak above the level before the call)."""
    import torch
    from torch.profiler import profile

    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    with profile(profile_memory=True) as p:
        fn()
    events = []
    for e in p.events():
        if e.name == "[memory]":
            events.append((e.time_range.start, e.cpu_memory_usage))
        elif e.self_cpu_memory_usage:
            events.append((e.time_range.start, e.self_cpu_memory_usage))
    events.sort()
    cur = peak = 0
    for _, b in events:
        cur += b
        peak = max(peak, cur)
    return peak


def memory_table(n: int) -> None:
    from taskgraph.affinity import ExactLookahead
    from taskgraph.cli.common import print_table

    model, opt, tasks, batch, plain = setup("mlp", n)
    state = sum(p.numel() * p.element_size() for p in model.parameters()) * 2  # params + grads
    state += sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if hasattr(v, "numel"))
    plain()
    p_plain = peak_bytes(plain)
    rows = [["plain step", "-", f"{p_plain / 2**20:.2f}", "1.00x", f"{(state + p_plain) / 2**20:.2f}", "1.00x", ""]]
    for c in (None, 1, 2, 4, 10, n):
        est = ExactLookahead(chunk_size=c)
        est.measure(model, opt, batch, tasks)
        pk = peak_bytes(lambda est=est: est.measure(model, opt, batch, tasks))
        t = median_ms(lambda est=est: est.measure(model, opt, batch, tasks), 5, 1)
        if c is None:
            from taskgraph.affinity.probe import Probe

            c = f"auto={est.chunk_for(Probe(model, tasks, *batch), opt)}"
        rows.append([f"exact, chunk {c}" + (" (default)" if c.__class__ is str else ""), c, f"{pk / 2**20:.2f}",
                     f"{pk / p_plain:.2f}x", f"{(state + pk) / 2**20:.2f}", f"{(state + pk) / (state + p_plain):.2f}x",
                     f"{t:.1f}"])
    print_table(f"Peak tensor memory at n={n} (MiB above the level before the call; 'with state' adds params, "
                f"grads, Adam state = {state / 2**20:.2f} MiB); {allocator()}",
                ["", "chunk", "peak MiB", "ratio", "with state MiB", "ratio", "ms"], rows)


def tracked_run_table(n: int, epochs: int, samples: int, variants: list[tuple[int | None, float, int | None, float]],
                      repeats: int, hidden: tuple[int, ...] = (256, 256, 128), dim: int = 64, lr: float = 1e-3,
                      population: int = 4) -> None:
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from taskgraph.affinity import (
        DEFAULT_BUDGET,
        DEFAULT_CONTROL,
        DEFAULT_CONTROL_SHARE,
        DEFAULT_SUB_BATCH,
        AffinityTracker,
        Schedule,
    )
    from taskgraph.cli.common import print_table
    from taskgraph.data import planted_clusters
    from taskgraph.models import MultiTaskModel, mlp
    from taskgraph.training import TrainConfig, train

    data = planted_clusters(n_tasks=n, n_clusters=3, n_samples=samples, dim=dim, seed=0)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=256, seed=0, device=DEVICE, restore_best=False)
    torch.manual_seed(0)
    base = MultiTaskModel(mlp(dim, hidden), data.tasks, input_shape=(dim,))

    def run(callbacks, shuffle: int = 0):
        model = copy.deepcopy(base)
        t = time.perf_counter()
        res = train(model, data.tasks, data.train.loader(256, shuffle=True, seed=shuffle), config=cfg,
                    callbacks=callbacks)
        return time.perf_counter() - t, res.steps

    def every_step(shuffle: int = 0):
        # exact measurement on the whole batch at every step of the run with this batch order
        tracker = AffinityTracker("exact", schedule=Schedule(every=1), sub_batch=None, control=None)
        seconds, steps = run([tracker], shuffle)
        return tracker, seconds, steps

    # the reference (measuring never changes the trajectory, so every run below is the same run)
    full, t_full, steps = every_step()
    ref = full.matrix().mean
    off = ~np.eye(n, dtype=bool)
    s = full.samples
    ceil_eo = spearmanr(np.nanmean(s[0::2], 0)[off], np.nanmean(s[1::2], 0)[off]).statistic
    half = len(s) // 2
    ceil_h = spearmanr(np.nanmean(s[:half], 0)[off], np.nanmean(s[half:], 0)[off]).statistic
    # the population: the every-step average over other batch orders of the same start (what the
    # affinities are, rather than what this one run's batches made of them)
    pop = None
    if population:
        pop = np.mean([every_step(k)[0].matrix().mean for k in range(1, population + 1)], 0)
    run([])  # warm-up
    rows = []
    for sub, budget, control, share in variants:
        label = f"sub-batch {sub or 'all'}, budget {budget}, control {control or 'off'}"
        if control and share != DEFAULT_CONTROL_SHARE:
            label += f" (share {share})"
        if (sub, budget, control, share) == (DEFAULT_SUB_BATCH, DEFAULT_BUDGET, DEFAULT_CONTROL,
                                             DEFAULT_CONTROL_SHARE):
            label += " (default)"
        ratios, rhos, counts, drifts, pops = [], [], [], [], []
        for r in range(repeats):
            tp = run([])[0]  # untracked and tracked runs interleaved: same load conditions
            tr = AffinityTracker("exact", schedule=Schedule(budget=budget), sub_batch=sub, seed=r, control=control,
                                 control_share=share)
            tt = run([tr])[0]
            ratios.append(tt / tp - 1)
            mean = tr.matrix().mean
            rhos.append(spearmanr(mean[off], ref[off]).statistic)
            if pop is not None:
                pops.append(spearmanr(mean[off], pop[off]).statistic)
            counts.append(len(tr.steps))
            drifts.append(len(tr._drifts))
        rows.append([label, f"{statistics.median(ratios):+.1%}", " ".join(f"{x:+.0%}" for x in ratios),
                     f"{statistics.median(counts):.0f}", f"{statistics.median(drifts):.0f}",
                     f"{statistics.median(rhos):.3f}",
                     " ".join(f"{x:.2f}" for x in rhos),
                     f"{statistics.median(pops):.3f}" if pops else "-"])
    trunk = "→".join(str(w) for w in (dim, *hidden))
    print_table(f"Training run, n={n} planted clusters (dim {dim}), MLP {trunk}, Adam lr {lr:g}, {steps} steps; "
                f"median over {repeats} repeats (overhead = tracked / untracked wall time − 1, each pair run "
                f"back to back); every-step exact reference run took {t_full:.2f} s; {allocator()}",
                ["schedule", "overhead", "repeats", "measured steps", "drift steps", "Spearman vs every step",
                 "repeats", f"vs population ({population} orders)"], rows)
    print(f"noise ceiling of the reference itself (Spearman of its off-diagonal means): even steps vs odd steps "
          f"{ceil_eo:.3f}; first half vs second half {ceil_h:.3f}")
    if pop is not None:
        print(f"the every-step reference of this run against the population (every-step averages of {population} "
              f"other batch orders from the same start): Spearman {spearmanr(ref[off], pop[off]).statistic:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4,9,20,40")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["mlp", "cnn", "mlp-large", "memory", "drift", "run"], action="append",
                    help="tables to print (default: mlp, cnn, memory, drift, run; mlp-large is meant for a GPU)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:k] (CUDA timings synchronise around each call)")
    ap.add_argument("--allocator", choices=["as-started", "tcmalloc", "glibc"], default="as-started")
    ap.add_argument("--run-epochs", type=int, default=4)
    ap.add_argument("--run-samples", type=int, default=20000)
    ap.add_argument("--run-repeats", type=int, default=3)
    ap.add_argument("--run-hidden", default="256,256,128", help="trunk widths of the tracked run")
    ap.add_argument("--run-dim", type=int, default=64, help="input dimension of the tracked run's data")
    ap.add_argument("--run-lr", type=float, default=1e-3)
    ap.add_argument("--run-population", type=int, default=4,
                    help="batch orders of the population reference (every-step exact each; 0: none)")
    ap.add_argument("--run-variants", default="64:0.2:1,all:0.2:1,64:0.2:off",
                    help="tracked-run schedules as sub_batch:budget:control[:control_share] ('all' = whole "
                         "batch, 'off' = no control variate; share default: the tracker's)")
    args = ap.parse_args()
    if args.allocator != "as-started":
        want = args.allocator == "tcmalloc"
        if want != ("tcmalloc" in os.environ.get("LD_PRELOAD", "")):
            env = dict(os.environ)
            env["LD_PRELOAD"] = TCMALLOC if want else ""
            if want and not Path(TCMALLOC).exists():
                sys.exit(f"{TCMALLOC} not found: apt-get install libtcmalloc-minimal4")
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
    import torch

    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(args.threads)
    if DEVICE.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator: {allocator()}, device {DEVICE}")
    os.environ.setdefault("COLUMNS", "140")
    only = set(args.only or ["mlp", "cnn", "memory", "drift", "run"])
    sizes = [int(s) for s in args.sizes.split(",")]
    if "mlp" in only:
        speed_table("mlp", sizes, args.repeats)
    if "cnn" in only:
        speed_table("cnn", [9], args.repeats)
    if "mlp-large" in only:
        speed_table("mlp-large", sizes, args.repeats)
    if "memory" in only:
        memory_table(max(sizes))
    if "drift" in only:
        drift_table(9, args.repeats)
    if "run" in only:
        from taskgraph.affinity import DEFAULT_CONTROL_SHARE

        variants = [(None if f[0] == "all" else int(f[0]), float(f[1]), None if f[2] == "off" else int(f[2]),
                     float(f[3]) if len(f) > 3 else DEFAULT_CONTROL_SHARE)
                    for f in (v.split(":") for v in args.run_variants.split(","))]
        tracked_run_table(9, args.run_epochs, args.run_samples, variants, args.run_repeats,
                          tuple(int(w) for w in args.run_hidden.split(",")), args.run_dim, args.run_lr,
                          args.run_population)


if __name__ == "__main__":
    main()
