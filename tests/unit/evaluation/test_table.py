"""The ground-truth table: partitions, totals, ranks and paired standard errors, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from taskgraph.evaluation import GroundTruth, all_subsets, set_partitions
from taskgraph.exceptions import TaskGraphError

BELL = [1, 1, 2, 5, 15, 52, 203, 877]


@pytest.mark.parametrize("n", range(1, 8))
def test_set_partitions_are_every_partition_once(n):
    items = [f"t{i}" for i in range(n)]
    parts = list(set_partitions(items))
    assert len(parts) == BELL[n] and len(set(parts)) == BELL[n]
    for p in parts:
        assert sorted(t for g in p for t in g) == items  # covers every task exactly once
        assert all(g for g in p)


def _records(loss, tasks=("a", "b", "c"), seeds=(0, 1, 2)):
    """Records whose val and test loss of task t in subset s for seed k is loss(t, s, k)."""
    return [{"subset": list(s), "seed": k, "val": {t: loss(t, s, k) for t in s},
             "test": {t: loss(t, s, k) + 0.01 for t in s}, "steps": 7}
            for k in seeds for s in all_subsets(tasks)]


def test_totals_ranks_and_paired_errors_by_hand():
    # a and b help each other (0.2 lower each when together); c is hurt by any company (+0.3)
    def loss(t, s, k):
        base = 1.0 + 0.05 * k
        if t in ("a", "b") and {"a", "b"} <= set(s):
            base -= 0.2 + 0.01 * k
        if t == "c" and len(s) > 1:
            base += 0.3
        return base

    gt = GroundTruth.from_records(_records(loss), tasks=("a", "b", "c"), seeds=(0, 1, 2))
    best, best_total = gt.ranking("val")[0]
    assert best == (("a", "b"), ("c",))
    assert best_total == pytest.approx(np.mean([3 + 0.15 * k - 2 * (0.2 + 0.01 * k) for k in range(3)]))
    assert gt.rank(best) == 1 and gt.rank([["a"], ["b"], ["c"]], "test") == 3  # after ab|c (2.6) and abc (2.9)
    assert gt.steps == 7 * 7 * 3
    a = gt.assess([["c"], ["b", "a"]])
    # versus all-in-one: per seed, all-in-one loses 0.3 on c; the difference is exactly -0.3 each seed
    d, se = a.diff_to_all_in_one["val"]
    assert d == pytest.approx(-0.3) and se == pytest.approx(0.0, abs=1e-12)
    assert a.ratio_to_best == pytest.approx(1.0) and a.within_noise_of_all_in_one
    ls = gt.landscape()
    assert ls["best"] == best and ls["n_partitions"] == 5
    assert ls["gain"]["val"][0] == pytest.approx(0.3)
    t = gt.transfer()
    assert t[0, 1] == pytest.approx(np.mean([(0.2 + 0.01 * k) / (1 + 0.05 * k) for k in range(3)]))
    assert t[2, 0] < 0 and t[0, 2] == 0.0 and np.all(np.diag(t) == 0)


def test_paired_standard_error_is_the_sd_of_per_seed_differences():
    noise = {0: 0.0, 1: 0.1, 2: -0.05}

    def loss(t, s, k):
        return 1.0 + (noise[k] if len(s) == 3 else 0.0) + (0.02 * k if len(s) == 1 else 0.0)

    gt = GroundTruth.from_records(_records(loss), tasks=("a", "b", "c"), seeds=(0, 1, 2))
    d, se = gt.assess([["a"], ["b"], ["c"]]).diff_to_all_in_one["val"]
    per_seed = np.array([3 * 0.02 * k - 3 * noise[k] for k in range(3)])
    assert d == pytest.approx(per_seed.mean())
    assert se == pytest.approx(per_seed.std(ddof=1) / math.sqrt(3))


def test_overlapping_choice_serves_each_task_by_its_best_group():
    def loss(t, s, k):
        return {"a": 1.0 - 0.1 * ("b" in s), "b": 1.0 - 0.1 * ("c" in s), "c": 1.0}[t]

    gt = GroundTruth.from_records(_records(loss), tasks=("a", "b", "c"), seeds=(0, 1, 2))
    served = gt.served([["a", "b"], ["b", "c"]])
    assert served == {"a": ("a", "b"), "b": ("b", "c"), "c": ("b", "c")}
    assert gt.served_total([["a", "b"], ["b", "c"]]) == pytest.approx([2.8] * 3)


def test_missing_records_and_bad_partitions_are_refused():
    recs = _records(lambda t, s, k: 1.0)
    with pytest.raises(TaskGraphError, match="every subset must be trained for every seed; 1 missing"):
        GroundTruth.from_records(recs[1:], tasks=("a", "b", "c"), seeds=(0, 1, 2))
    gt = GroundTruth.from_records(recs, tasks=("a", "b", "c"), seeds=(0, 1, 2))
    with pytest.raises(TaskGraphError, match="cover each task exactly once"):
        gt.total([["a", "b"]])
