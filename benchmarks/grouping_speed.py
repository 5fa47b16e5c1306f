"""Wall time and objective value per grouping solver, n = 9 .. 200 tasks, random and planted matrices.

Matrices: *random* Z ~ N(0, 1); *planted* blocks (k clusters: +0.5 within,
-0.3 across, plus N(0, 0.3²) noise). Variant: overlap (TAG's serving score),
singletons forbidden. Times are medians over ``--repeats`` runs (one run for
n >= 100); "gap" is (best value any solver found - value) / |best|. Goals
checked in the last column:

- n = 9, k = 3: the exact optimum in < 0.5 s, with TAG-style brute force
  (every combination of <= 3 of the 502 candidate groups) timed in the same run;
- n = 20: the exact optimum in < 30 s;
- n = 100: the scalable solver in < 10 s, within 1% of the best value any solver
  finds given 10× the scalable solver's time ("scalable ×10": the same solver with
  many more restarts and a time limit of 10× the measured default time).

    python benchmarks/grouping_speed.py              # everything (a few minutes)
    python benchmarks/grouping_speed.py --max-n 40   # quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from taskgraph.grouping import (
    BruteForceSolver,
    ExactSolver,
    GroupingProblem,
    HierarchySolver,
    ScalableSolver,
)

SIZES = [(9, 3), (20, 3), (40, 5), (100, 10), (200, 20)]


def matrix(kind: str, n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.normal(size=(n, n))
    lab = np.arange(n) * k // n
    return np.where(lab[:, None] == lab[None, :], 0.5, -0.3) + 0.3 * rng.normal(size=(n, n))


def timed(solver, problem, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = solver.solve(problem)[0]
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    # warm the imports (scipy.optimize, scipy.cluster) so the first timing is not an import
    ScalableSolver(restarts=1, kicks=0).solve(GroupingProblem.from_array(matrix("random", 6, 2, 0), k=2))
    ExactSolver().solve(GroupingProblem.from_array(matrix("random", 6, 2, 0), k=2))

    table = Table(title=f"grouping solvers, overlap variant (cpus: {os.cpu_count()}, "
                        f"median of {args.repeats} runs below n=100)")
    for c in ("n", "k", "matrix", "solver", "seconds", "value", "gap to best", "proven", "note"):
        table.add_column(c, justify="left" if c in ("matrix", "solver", "note") else "right")
    for n, k in SIZES:
        if n > args.max_n:
            continue
        for kind in ("random", "planted"):
            p = GroupingProblem.from_array(matrix(kind, n, k, args.seed), k=k)
            reps = args.repeats if n < 100 else 1
            rows = []
            if n <= 20:
                rows.append(("exact", *timed(ExactSolver(), p, reps)))
            if n <= 9:
                rows.append(("brute (TAG-style)", *timed(BruteForceSolver(), p, 1)))
            t_s, g_s = timed(ScalableSolver(seed=0), p, reps)
            rows.append(("scalable", t_s, g_s))
            rows.append(("hierarchy", *timed(HierarchySolver(), p, reps)))
            if 20 < n <= 100:
                long = ScalableSolver(restarts=10_000, kicks=4, seed=1, time_limit=10 * t_s)
                rows.append(("scalable ×10", *timed(long, p, 1)))
            best = max(g.score for _, _, g in rows)
            times = {name: t for name, t, _ in rows}
            for name, t, g in rows:
                gap = (best - g.score) / max(abs(best), 1e-12)
                note = ""
                if name == "exact" and n == 9:
                    note = f"goal < 0.5 s: {'met' if t < 0.5 else 'MISSED'}"
                if name.startswith("brute"):
                    note = f"brute / exact = {t / times['exact']:.0f}×"
                if name == "exact" and n == 20:
                    note = f"goal < 30 s: {'met' if t < 30 else 'MISSED'}"
                if name == "scalable" and n == 100:
                    ok = t < 10 and gap <= 0.01
                    note = f"goal < 10 s and gap <= 1%: {'met' if ok else 'MISSED'}"
                if name == "scalable" and g.bound is not None:
                    note += f" bound gap {g.gap:.1%}" if not note else ""
                table.add_row(str(n), str(k), kind, name, f"{t:.3f}", f"{g.score:.4f}", f"{gap:.2%}",
                              "yes" if g.optimal else "", note)
            table.add_section()
            Console().print(f"done n={n} {kind}", style="dim")
    Console().print(table)


if __name__ == "__main__":
    main()
