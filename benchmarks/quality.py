"""Grouping quality on real problems whose every grouping was trained: strategies against ground truth.

Two steps, both resumable:

    python benchmarks/quality.py exhaust                 # ground truth of every problem (JSONL per problem)
    python benchmarks/quality.py exhaust --problems yeast6 --backend ray
    python benchmarks/quality.py compare                 # every strategy on every problem, tables + mean
    python benchmarks/quality.py compare --strategies check:affinity:3x:z2 surrogate --problems star6

``exhaust`` trains every non-empty task subset over 10 paired seeds with early stopping
(taskgraph.evaluation.exhaust) and appends to ``benchmarks/ground_truth/<problem>.jsonl``
(resuming: a finished table trains nothing). The committed files were built 3 seeds first
(``exhaust --seeds 3 --workers 2``), then ``--seeds 5`` (seeds 3 and 4), then ``--seeds 10``
(seeds 5 to 9); digits-scarce and digits-attributes, added last, by ``exhaust --problems NAME``.
Every command ranks on the first ``--seeds`` seeds (default 10, all of them); cost is always
counted against the issue's minimal exhaustion, 3 seeds. ``rescore`` scores a ``compare
--json`` file's stored choices on them without retraining; ``replication`` asks whether the
best partition of the first ``--first`` seeds (default: half) stays best on the others.
``compare`` runs every strategy of taskgraph.evaluation.strategies (each trains what it
needs itself, on seeds the ground truth never used) and scores its partition on the
ground truth: ranks among all partitions by validation and test total, the test ratio to
the best partition and to all-in-one, the paired test difference to all-in-one in SE,
and the cost as a share of the exhaustion's optimizer steps. ``val-oracle`` is the
exhaustion's own choice on validation (every partition trained, ``--seeds`` seeds): the ceiling of
any strategy that decides on validation. Per problem and affinity
estimator, it also prints the Spearman correlation between the engine's pair affinities
and the measured pairwise transfer. ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from taskgraph.evaluation import PROBLEMS, GroundTruth, exhaust, read_records
from taskgraph.evaluation.strategies import STRATEGIES, runs_for

HERE = Path(__file__).parent / "ground_truth"
SEEDS = (0, 1, 2)  # the minimal exhaustion: every cost is a share of its steps
#: the seeds every committed table holds; commands rank on all of them unless ``--seeds`` says fewer
TABLE_SEEDS = 10
#: the real problems the project evaluates itself on (tiny4 is the test suite's)
DEFAULT_PROBLEMS = ("digits-shapes", "digits-pairs", "yeast6", "star6", "digits-planted", "yeast6b", "digits-scarce",
                    "digits-attributes")


def ground_truth(name: str, seeds: tuple[int, ...] = SEEDS) -> GroundTruth:
    p = PROBLEMS.get(name)
    return GroundTruth.from_records(read_records(HERE / f"{name}.jsonl", p), tasks=p.tasks, seeds=seeds, name=name)


def spearman(affinity: np.ndarray, transfer: np.ndarray) -> float:
    """Rank correlation of Z[j, i] (j → i) with T[i, j] (task i's gain from j), off the diagonal."""
    from scipy.stats import spearmanr

    n = len(transfer)
    off = ~np.eye(n, dtype=bool)
    z = np.asarray(affinity).T[off]
    ok = np.isfinite(z)
    return float(spearmanr(z[ok], transfer[off][ok]).statistic)


def _in_se(mean: float, se: float) -> str:
    """A paired difference in its SE; no SE when it is 0 (the best partition by validation is all-in-one)."""
    return f"{mean / se:+.1f} SE" if se else "no SE: all-in-one is the best"


def landscape_row(gt: GroundTruth) -> str:
    ls = gt.landscape()
    gv, gt_ = ls["gain"]["val"], ls["gain"]["test"]
    best = " | ".join("+".join(g) for g in ls["best"])
    return (f"{gt.name:<15} {'peaked' if ls['peaked'] else 'flat':<7} gain val {gv[0]:+.4f} ({_in_se(*gv)})  "
            f"test {gt_[0]:+.4f} ({_in_se(*gt_)})  within 2 SE of best: {ls['within_2se_of_best']:>3}"
            f"/{ls['n_partitions']}  best: {best}")


def random_row(gt: GroundTruth) -> dict:
    """The expected figures of a uniformly random partition."""
    rows = [gt.assess(p) for p in gt.partitions()]
    return {"val_rank": statistics.mean(a.val_rank for a in rows),
            "test_rank": statistics.mean(a.test_rank for a in rows),
            "ratio_to_best": statistics.mean(a.ratio_to_best for a in rows),
            "ratio_to_all_in_one": statistics.mean(a.ratio_to_all_in_one for a in rows),
            "within_noise": statistics.mean(a.within_noise_of_all_in_one for a in rows), "cost": 0.0}


def _tables(problems, seeds: tuple[int, ...]) -> dict[str, GroundTruth]:
    """Each problem's ground truth over ``seeds``, its landscape printed."""
    print(f"landscapes (gain = all-in-one − best partition by validation, paired over {len(seeds)} seeds):")
    gts = {name: ground_truth(name, seeds) for name in problems}
    for gt in gts.values():
        print("  " + landscape_row(gt))
    return gts


def _result(gt: GroundTruth, seeds: tuple[int, ...], exhaustion_steps: int) -> dict:
    """A problem's entry of the results: its landscape and the references every table shows."""
    return {"landscape": _jsonable(gt.landscape()), "exhaustion_steps": exhaustion_steps, "seeds": list(seeds),
            "strategies": {"random": random_row(gt), "val-oracle": oracle_row(gt)}, "spearman": {}}


def compare(problems, strategies, out_json: str | None, seeds: tuple[int, ...] = SEEDS) -> int:
    results: dict = {}
    for name, gt in _tables(problems, seeds).items():
        problem = PROBLEMS.get(name)
        runs = runs_for(problem)
        transfer = gt.transfer("val")
        # cost is counted against the minimal exhaustion (3 seeds), however many seeds rank
        steps = gt.steps if len(seeds) == len(SEEDS) else ground_truth(name, SEEDS).steps
        res = results[name] = _result(gt, seeds, steps)
        for s in strategies:
            t0 = time.perf_counter()
            choice = STRATEGIES[s](problem, runs)
            row = res["strategies"][s] = scored(gt, choice.groups, choice.steps, steps)
            row.update(seconds=time.perf_counter() - t0, statement=choice.info.get("statement"))
            if "affinity" in choice.info:
                res["spearman"][s] = spearman(choice.info["affinity"], transfer)
            print(f"  {name:<15} {s:<34} rank val {row['val_rank']:>3} test {row['test_rank']:>3}  "
                  f"test/best {row['ratio_to_best']:.4f}  test/aio {row['ratio_to_all_in_one']:.4f}  "
                  f"Δaio {row['diff_test']:+.4f} ({row['diff_test'] / row['se_test'] if row['se_test'] else 0:+.1f} SE)"
                  f"  cost {row['cost']:.1%}  {row['seconds']:.0f} s", file=sys.stderr, flush=True)
    return _finish(results, strategies, out_json)


def _finish(results: dict, strategies, out_json: str | None) -> int:
    _print_tables(results, ["random", "val-oracle", *strategies])
    print()
    for line in goals(results, "default" if "default" in strategies else strategies[0]):
        print(line)
    if out_json:
        Path(out_json).write_text(json.dumps(results, indent=1, default=_jsonable))
    return 0


def scored(gt: GroundTruth, groups, steps: int, exhaustion_steps: int) -> dict:
    """One strategy's choice on the ground truth: ranks, ratios, the paired test difference to all-in-one, cost."""
    a = gt.assess(groups)
    d, se = a.diff_to_all_in_one["test"]
    return {"groups": [list(g) for g in a.groups], "val_rank": a.val_rank, "test_rank": a.test_rank,
            "ratio_to_best": a.ratio_to_best, "ratio_to_all_in_one": a.ratio_to_all_in_one,
            "diff_test": d, "se_test": se, "within_noise": a.within_noise_of_all_in_one,
            "cost": steps / exhaustion_steps, "steps": steps}


def rescore(source: str, problems, seeds: tuple[int, ...], out_json: str | None) -> int:
    """Score the choices stored in a ``compare --json`` file on the ground truth over ``seeds``.

    The strategies' choices are seeded (their own networks use seeds from 1000 on), so a rerun of
    ``compare`` makes the same choices; this scores them again without retraining, on a ground truth
    of more seeds. The Spearman figures are carried over from ``source`` (its seeds' transfer).
    """
    stored = json.loads(Path(source).read_text())
    results: dict = {}
    for name, gt in _tables([n for n in problems if n in stored], seeds).items():
        old = stored[name]
        steps = old["exhaustion_steps"]
        res = results[name] = _result(gt, seeds, steps)
        res.update(spearman=old["spearman"], spearman_seeds=old.get("seeds", list(SEEDS)))
        for s, row in old["strategies"].items():
            if s in ("random", "val-oracle"):
                continue
            new = res["strategies"][s] = scored(gt, row["groups"], row["steps"], steps)
            new.update(seconds=row.get("seconds"), statement=row.get("statement"))
    strategies = [s for s in next(iter(stored.values()))["strategies"] if s not in ("random", "val-oracle")]
    return _finish(results, strategies, out_json)


def replication(name: str, seeds: tuple[int, ...], first: int = 3) -> str:
    """Does a partition's rank replicate on fresh seeds? Choose on the first ``first`` seeds, score on the rest.

    The test-best and the validation-best partitions of seeds ``0..first-1``, ranked among all partitions
    by the test total of the remaining seeds (their ratio to that table's best beside): how far the
    peaked goal's target (rank <= 10, within 1%) moves from one set of training seeds to another.
    """
    a, b = ground_truth(name, seeds[:first]), ground_truth(name, seeds[first:])
    out = []
    for split in ("test", "val"):
        groups = a.ranking(split)[0][0]
        x = b.assess(groups)
        out.append(f"{split}-best of seeds {seeds[0]}-{seeds[first - 1]}: rank {x.test_rank:>3}, "
                   f"test/best {x.ratio_to_best:.3f} on seeds {seeds[first]}-{seeds[-1]}")
    return f"{name:<15} " + ";  ".join(out)


def oracle_row(gt: GroundTruth) -> dict:
    """The exhaustion's own validation choice: the partition of lowest validation total over its seeds.

    The ceiling of any strategy that decides on validation (at 100% of the exhaustion's cost).
    """
    a = gt.assess(gt.ranking("val")[0][0])
    d, se = a.diff_to_all_in_one["test"]
    return {"groups": [list(g) for g in a.groups], "val_rank": a.val_rank, "test_rank": a.test_rank,
            "ratio_to_best": a.ratio_to_best, "ratio_to_all_in_one": a.ratio_to_all_in_one, "diff_test": d,
            "se_test": se, "within_noise": a.within_noise_of_all_in_one, "cost": 1.0}


def goals(results: dict, strategy: str = "default") -> list[str]:
    """The issue's goals for one strategy, one line each, with the validation ceiling beside them."""
    names = list(results)
    rows = {n: results[n]["strategies"][strategy] for n in names if strategy in results[n]["strategies"]}
    peaked = [n for n in names if results[n]["landscape"]["peaked"]]

    def meets(r) -> bool:
        return r["test_rank"] <= 10 and r["ratio_to_best"] <= 1.01

    ok = sum(r["within_noise"] for r in rows.values())
    hit = [n for n in peaked if n in rows and meets(rows[n])]
    ceiling = [n for n in peaked if meets(results[n]["strategies"]["val-oracle"])]
    return [f"{strategy}: test total <= all-in-one's + 1 paired SE on {ok}/{len(rows)} problems",
            f"{strategy}: on the peaked problems ({', '.join(peaked)}), rank <= 10 and within 1% of the best on "
            f"{len(hit)}/{len(peaked)} ({', '.join(hit) or 'none'}); the exhaustion's own validation choice "
            f"(val-oracle) does on {len(ceiling)}/{len(peaked)} ({', '.join(ceiling) or 'none'})",
            f"{strategy}: cost at most {max(r['cost'] for r in rows.values()):.1%} of the exhaustion's steps "
            f"(mean {statistics.mean(r['cost'] for r in rows.values()):.1%})"]


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, tuple | list):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    return o


def _print_tables(results: dict, strategies) -> None:
    names = list(results)
    print()
    print("test rank of the choice among all partitions (1 = best; mean over problems last)")
    _table(results, names, strategies, lambda r: f"{r['test_rank']:.0f}", lambda v: f"{v:.1f}", "test_rank")
    print()
    print("test total / best partition's (1.000 = best)")
    _table(results, names, strategies, lambda r: f"{r['ratio_to_best']:.3f}", lambda v: f"{v:.3f}", "ratio_to_best")
    print()
    print("test total / all-in-one's (< 1: better than all-in-one)")
    _table(results, names, strategies, lambda r: f"{r['ratio_to_all_in_one']:.3f}", lambda v: f"{v:.3f}",
           "ratio_to_all_in_one")
    print()
    print("test total − all-in-one's, in paired SE (goal: <= +1.0 everywhere; 'ok' when it holds)")
    _table(results, names, strategies,
           lambda r: ("ok " if r["within_noise"] else "NO ") + (f"{r['diff_test'] / r['se_test']:+.1f}"
                                                                if "diff_test" in r and r["se_test"] else ""),
           lambda v: f"{v:.0%} ok", "within_noise")
    print()
    print("cost: optimizer steps / the exhaustion's (goal for the default: <= 15%)")
    _table(results, names, strategies, lambda r: f"{r['cost']:.1%}", lambda v: f"{v:.1%}", "cost")
    print()
    print("Spearman(engine's pair affinity, measured pairwise transfer on validation)")
    est = sorted({s for n in names for s in results[n]["spearman"]})
    _table({n: {"strategies": {s: {"sp": results[n]["spearman"].get(s, float("nan"))} for s in est}} for n in names},
           names, est, lambda r: f"{r['sp']:+.2f}", lambda v: f"{v:+.2f}", "sp")


def _table(results, names, strategies, cell, mean_fmt, key) -> None:
    w = 14
    print(f"{'strategy':<34}" + "".join(f"{n[:w]:>{w + 1}}" for n in names) + f"{'mean':>{w + 1}}")
    for s in strategies:
        rows = [results[n]["strategies"].get(s) for n in names]
        vals = [float(r[key]) for r in rows if r is not None]
        print(f"{s:<34}" + "".join(f"{cell(r) if r else '-':>{w + 1}}" for r in rows)
              + f"{mean_fmt(statistics.mean(vals)) if vals else '-':>{w + 1}}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["exhaust", "compare", "landscape", "rescore", "replication"])
    ap.add_argument("--problems", nargs="*", default=list(DEFAULT_PROBLEMS))
    ap.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--backend", default="local", choices=["local", "ray"])
    ap.add_argument("--json", default=None, help="write every figure to this file")
    ap.add_argument("--from", dest="source", default=str(Path(__file__).parent / "quality_results.json"),
                    help="rescore: the compare --json file whose choices are scored again")
    ap.add_argument("--seeds", type=int, default=TABLE_SEEDS,
                    help="paired seeds of the ground truth: exhaust trains seeds 0..N-1 (resuming), compare and "
                         f"landscape rank on them (default {TABLE_SEEDS}; cost is always counted against 3)")
    ap.add_argument("--first", type=int, default=None,
                    help="replication: choose on seeds 0..first-1, score on the rest (default: half the seeds)")
    a = ap.parse_args(argv)
    seeds = tuple(range(a.seeds))
    if a.first is None:
        a.first = len(seeds) // 2
    import torch

    torch.set_num_threads(1)  # small networks: one thread is fastest, and steadier on a shared machine
    if a.command == "exhaust":
        for name in a.problems:
            gt = exhaust(PROBLEMS.get(name), HERE / f"{name}.jsonl", seeds=seeds, backend=a.backend,
                         workers=a.workers, progress=lambda s: print(s, file=sys.stderr, flush=True))
            print(landscape_row(gt))
        return 0
    if a.command == "landscape":
        for name in a.problems:
            print(landscape_row(ground_truth(name, seeds)))
        return 0
    if a.command == "rescore":
        return rescore(a.source, a.problems, seeds, a.json)
    if a.command == "replication":
        if not 1 <= a.first < len(seeds):
            ap.error(f"replication needs 1 <= --first < --seeds (seeds to choose on, the rest to score on), "
                     f"got --first {a.first} --seeds {len(seeds)}")
        for name in a.problems:
            print(replication(name, seeds, a.first))
        return 0
    unknown = [s for s in a.strategies if s not in STRATEGIES]
    if unknown:
        ap.error(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    return compare(a.problems, a.strategies, a.json, seeds)


if __name__ == "__main__":
    raise SystemExit(main())
