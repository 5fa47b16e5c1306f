"""The pairwise strategy (Standley et al.'s higher-order approximation) against the networks it trained."""

from __future__ import annotations

import numpy as np
import pytest

from taskgraph.evaluation import PROBLEMS
from taskgraph.evaluation.strategies import EVAL_SEED, STRATEGIES, runs_for
from taskgraph.grouping.partitions import all_subsets, set_partitions
from taskgraph.pipeline import hoa_total


def test_pairwise_takes_the_lowest_predicted_total_of_its_own_networks():
    problem = PROBLEMS.get("tiny4")
    runs = runs_for(problem)
    choice = STRATEGIES["pairwise"](problem, runs)
    # the strategy's own networks (cached by the Runs: nothing trains again)
    trained = {frozenset(s): runs.train_group(s, EVAL_SEED) for s in all_subsets(problem.tasks) if len(s) <= 2}
    assert len(trained) == 4 + 6 and choice.steps == sum(r.steps for r in trained.values()) > 0
    losses = {s: r.val.losses for s, r in trained.items()}
    totals = {p: hoa_total(losses, p) for p in set_partitions(problem.tasks)}
    assert len(totals) == 15 and hoa_total(losses, choice.groups) == pytest.approx(min(totals.values()))
    # exact where every group has one or two tasks: the networks' own validation losses
    for p, total in totals.items():
        if max(map(len, p)) <= 2:
            assert total == pytest.approx(sum(trained[frozenset(g)].val.losses[t] for g in p for t in g))
    # the transfer it reports: [j, i] = task i's relative gain from training with j
    z, names = choice.info["affinity"], problem.tasks
    i, j = names.index("t1"), names.index("t3")
    alone, pair = losses[frozenset(["t1"])]["t1"], losses[frozenset(["t1", "t3"])]["t1"]
    assert z[j, i] == pytest.approx((alone - pair) / alone) and np.all(np.diag(z) == 0)
