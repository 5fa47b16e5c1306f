"""Grouping strategies, each a function of a problem that returns a partition and its cost.

Every strategy trains what it needs itself (never reading the ground truth) and returns
a :class:`Choice`: the partition, the optimizer steps it trained, its wall time and
details. ``benchmarks/quality.py`` scores every strategy's choice against the same
exhaustive ground truth. :data:`STRATEGIES` names them:

- ``default``: :data:`taskgraph.pipeline.DEFAULT_POLICY`, run by the pipeline exactly as
  ``auto_group`` and a study's prepare stage run it (with its second look: ``extra_seeds=2``);
  ``default:no-second-look``: the default before it had one (``extra_seeds=0``), and
  ``default:second-look``: the same as ``default`` (the row it was chosen from). The other
  ``default:`` variants were measured against the default without a second look and keep
  ``extra_seeds=0``, so their stored rows reproduce: ``default:mean-noise``: the
  validation set's noise counted by the mean's standard error (the former default) instead of
  Yuen's trimmed test; ``default:seeds-only``: without the validation set's noise test;
  ``default:recombine``: also checking each proposal with some groups split into single tasks
  (no extra training, more candidates); ``default:sgd-affinity``: its affinity run stepping with
  plain SGD (lr 0.05, 3 epochs) instead of the checked networks' optimizer; ``default:top2``: the
  affinity's first two partitions checked instead of one;
- ``all-in-one``, ``single-task``: the two references (no training to decide);
- ``affinity:<estimator>:<optimizer>``: the affinity's first partition (TAG's serving
  score) from one all-in-one run: ``exact`` (TAG lookahead), ``first_order``, ``cosine``;
  with the problem's own optimizer (``study``) or plain SGD at lr 0.05 (``sgd``), over the
  first epochs; ``late``: measured over 2 epochs on the all-in-one network trained to early
  stopping (the converged network's transfer rather than the first epochs' conflict);
- ``group-lookahead``: TAG's higher-order score: the lookahead with each candidate group's
  summed gradient, every partition scored by the sum of its tasks' scores;
- ``surrogate``: :func:`taskgraph.pipeline.surrogate` (Li et al. 2023) on 2n random subsets;
- ``pairwise``: every single-task and pair network trained once, combined by Standley et al.'s
  higher-order approximation (a task's loss in a group: the mean of its pair losses there);
- ``check:<proposer>:<seeds>x[:seeds|:z2]``: the check-run policies of
  :mod:`taskgraph.pipeline`: the proposer's top partitions (``affinity`` top 2, ``affinity1``
  top 1, ``surrogate``, ``both``, ``sgd-affinity``; ``+single``: the single-task partition
  too) and all-in-one trained over paired seeds; all-in-one is left only when the 95%
  t-intervals of the validation gain exclude 0 with the seeds' error and with the
  validation set's noise added (``:seeds``: the seeds' alone; ``:z2``: fixed bars of 2 SE
  instead of the t quantiles; ``argmin`` with one seed: the lowest validation total wins,
  the former default). These train every checked network with
  the problem's own protocol (40 epochs, patience 5); the default caps them at 30 epochs with
  patience 3. ``race:``: every candidate trains one seed, only the best and all-in-one the rest.

Example (trains networks, so skipped in doctests):
    >>> from taskgraph.evaluation import PROBLEMS
    >>> choice = STRATEGIES["surrogate"](PROBLEMS.get("tiny4"))  # doctest: +SKIP
    >>> choice.groups, choice.steps  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from taskgraph.affinity import group_lookahead
from taskgraph.data.base import Batch
from taskgraph.evaluation.problems import Problem
from taskgraph.grouping.partitions import Partition, all_subsets, canonical, set_partitions
from taskgraph.pipeline.stages import (
    DEFAULT_POLICY,
    Decision,
    GroupingPolicy,
    Runs,
    candidates,
    check,
    decide,
    hoa_total,
    measure,
    pairwise_networks,
    pairwise_transfer,
    propose,
    run_policy,
    surrogate,
)
from taskgraph.training import Callback, TrainConfig, TrainState, seed_everything, train

__all__ = ["EVAL_SEED", "STRATEGIES", "Choice", "runs_for"]

#: every strategy's networks use seeds from here on: never the ground truth's (0, 1, 2)
EVAL_SEED = 1000

#: what a strategy's body returns: the groups, the optimizer steps it trained, details
_Outcome = tuple[Iterable[Iterable[str]], int, dict[str, Any]]


@dataclass(frozen=True)
class Choice:
    """A strategy's partition and what deciding it cost.

    Attributes:
        groups: the partition (canonical).
        steps: optimizer steps of every network the strategy trained.
        seconds: wall time.
        info: strategy-specific details (the decision's statement, the proposals, ...).
    """

    groups: Partition
    steps: int
    seconds: float
    info: Mapping[str, Any] = field(default_factory=dict)


def runs_for(problem: Problem) -> Runs:
    """The pipeline's :class:`~taskgraph.pipeline.Runs` over a problem: its trunk, data and protocol."""
    data = problem.data()
    return Runs.from_data(lambda: problem.trunk.build(data.input_shape), data, problem.config)


def _timed(fn: Callable[[Problem, Runs], _Outcome]) -> Callable[[Problem, Runs | None], Choice]:
    def run(problem: Problem, runs: Runs | None = None) -> Choice:
        runs = runs or runs_for(problem)
        t0 = time.perf_counter()
        groups, steps, info = fn(problem, runs)
        return Choice(canonical(groups, order=problem.tasks), int(steps), time.perf_counter() - t0, info)

    return run


def _all_in_one(problem: Problem, runs: Runs) -> _Outcome:
    return [problem.tasks], 0, {}


def _single_task(problem: Problem, runs: Runs) -> _Outcome:
    return [[t] for t in problem.tasks], 0, {}


_SGD = dict(optimizer="sgd", lr=0.05, momentum=0.0)


def _affinity(problem: Problem, runs: Runs, *, estimator: str, optimizer: str) -> _Outcome:
    cfg = runs.config if optimizer == "study" else runs.config.replace(**_SGD)
    epochs = 5 if optimizer == "study" else 3
    policy = GroupingPolicy(estimator=estimator, affinity_epochs=epochs, top_m=1, config=cfg, seed=EVAL_SEED)
    matrix, steps = measure(runs, policy)
    top = propose(matrix, policy)[0]
    return top.groups, steps, {"score": float(top.score), "affinity": np.asarray(matrix.mean)}


def _late_affinity(problem: Problem, runs: Runs, *, estimator: str) -> _Outcome:
    """The affinity of the *trained* all-in-one network: trained to early stopping with the problem's
    protocol, then measured at every step of 2 more epochs (a fresh optimizer of the same kind): the
    transfer a converged shared network reaches, not the first epochs' gradient conflict."""
    from taskgraph.affinity import measure_affinity
    from taskgraph.models import MultiTaskModel
    from taskgraph.training import fit

    data = problem.data()
    cfg = runs.config.replace(seed=EVAL_SEED)
    seed_everything(cfg.seed)
    model = MultiTaskModel(problem.trunk.build(data.input_shape), data.tasks, input_shape=data.input_shape)
    res = fit(model, data, cfg)
    tr, _, _ = data.loaders(cfg.batch_size, seed=cfg.seed)
    late = cfg.replace(epochs=2, patience=None)
    matrix = measure_affinity(model, data.tasks, tr, estimator=estimator, every=1, config=late)
    top = propose(matrix, GroupingPolicy(top_m=1))[0]
    return top.groups, res.steps + 2 * len(tr), {"score": float(top.score), "affinity": np.asarray(matrix.mean)}


class _GroupLookahead(Callback):
    """Accumulates TAG's group→task lookahead for every subset at every ``every``-th step."""

    def __init__(self, groups: Iterable[Iterable[str]], every: int = 2) -> None:
        self.groups, self.every = [list(g) for g in groups], every
        self.samples: list[np.ndarray] = []

    def on_step_begin(self, state: TrainState, batch: Batch) -> None:
        if state.step % self.every == 0:
            self.samples.append(group_lookahead(state.model, state.optimizer, batch, state.tasks, self.groups))


def _group_lookahead(problem: Problem, runs: Runs) -> _Outcome:
    subsets = all_subsets(problem.tasks)
    cb = _GroupLookahead(subsets)
    cfg = runs.config.replace(epochs=5, patience=None, seed=EVAL_SEED)
    seed_everything(cfg.seed)
    model = runs.build(runs.tasks)
    res = train(model, runs.tasks, runs.train_loader, config=cfg, callbacks=[cb])
    z = np.nanmean(np.stack(cb.samples), axis=0)  # (subsets, tasks)
    row = {s: i for i, s in enumerate(subsets)}
    col = {t: i for i, t in enumerate(problem.tasks)}

    def score(p: Partition) -> float:
        return float(sum(z[row[g], col[t]] for g in p for t in g))

    best = max(set_partitions(problem.tasks), key=score)
    return best, res.steps, {"score": float(score(best))}


def _pairwise(problem: Problem, runs: Runs) -> _Outcome:
    """Pairwise transfer, combined by Standley et al.'s higher-order approximation (HOA).

    Every single-task and every pair network trains once (seed 1000, the problem's protocol);
    task i's loss in a group of two or more is predicted as the mean of its losses in the pairs
    it forms with the group's other tasks, and the partition of lowest predicted validation
    total is taken (all partitions are enumerated: n <= 7).
    """
    policy = GroupingPolicy(seed=EVAL_SEED, check_epochs=None, check_patience=None)  # the problem's own protocol
    matrix = pairwise_transfer(runs, policy)
    trained = {g: runs.train_group(g, EVAL_SEED) for g, _ in pairwise_networks(runs.tasks.names, policy)}  # cached
    losses = {frozenset(g): r.val.losses for g, r in trained.items()}
    best = min(set_partitions(problem.tasks), key=lambda p: hoa_total(losses, p))
    alone = np.array([losses[frozenset((t,))][t] for t in matrix.names])
    transfer = np.nan_to_num(matrix.mean) / alone[None, :]  # [j, i]: task i's gain from j, relative to i alone
    return best, sum(r.steps for r in trained.values()), {"predicted": hoa_total(losses, best),
                                                          "affinity": transfer}


def _surrogate(problem: Problem, runs: Runs) -> _Outcome:
    ranked, info = surrogate(runs, seed=EVAL_SEED)
    return ranked[0], info["steps"], {"subsets": len(info["subsets"])}


def _check(problem: Problem, runs: Runs, *, proposer: str, seeds: int, z: float | None = None, top_m: int = 2,
           epochs: int | None = None, z_samples: float | None = None, single: bool = False,
           finalists: int | None = None, patience: int | None = None, samples: bool = True) -> _Outcome:
    """A check-run policy: proposals from ``proposer``, paired checks, the z rule."""
    cfg = runs.config if epochs is None else runs.config.replace(epochs=epochs, patience=patience)
    proposals: list[tuple[Any, str]] = []
    steps = 0
    used: set[tuple[tuple[str, ...], int, TrainConfig]] = set()
    if proposer in ("affinity", "both", "sgd-affinity"):
        acfg = runs.config.replace(**_SGD) if proposer == "sgd-affinity" else runs.config
        policy = GroupingPolicy(top_m=top_m, config=acfg, affinity_epochs=3 if proposer == "sgd-affinity" else 5,
                                seed=EVAL_SEED)
        matrix, st = measure(runs, policy)
        steps += st
        proposals += [(g.groups, f"affinity #{i}") for i, g in enumerate(propose(matrix, policy), 1)]
    if proposer in ("surrogate", "both"):
        ranked, info = surrogate(runs, seed=EVAL_SEED, top_m=top_m)
        used |= {(s, EVAL_SEED, runs.config) for s in info["subsets"]}
        proposals += [(g, f"surrogate #{i}") for i, g in enumerate(ranked, 1)]
    policy = GroupingPolicy(check_seeds=seeds, z=z, config=cfg, seed=EVAL_SEED, z_samples=z_samples, samples=samples,
                            references=("single-task",) if single else (), finalists=finalists,
                            check_epochs=None, check_patience=None)  # cfg as given
    proposals += candidates([], policy, problem.tasks)  # the policy's references (single-task)
    checked = check(runs, proposals, policy)
    decision = decide(checked, policy)
    seeds_used = range(policy.seed, policy.seed + seeds)
    used |= {(g, s, cfg) for c in checked for g in c.groups for s in list(seeds_used)[:len(c.val_totals)]}
    steps += sum(runs.train_group(g, s, config=c).steps for g, s, c in used)  # cached: no retraining; each network once
    return decision.groups, steps, _decision_info(decision)


def _decision_info(decision: Decision) -> dict[str, Any]:
    return {"statement": decision.statement(), "diff": decision.diff, "se": decision.se,
            "left_all_in_one": decision.left_all_in_one}


def _default(problem: Problem, runs: Runs, **changes: Any) -> _Outcome:
    """The pipeline's :data:`~taskgraph.pipeline.DEFAULT_POLICY`, exactly as ``auto_group`` runs it
    (``changes``: a variant of it)."""
    decision, _, _, steps = run_policy(runs, DEFAULT_POLICY.replace(seed=EVAL_SEED, **changes))
    return decision.groups, steps, _decision_info(decision)


def _default_sgd_affinity(problem: Problem, runs: Runs, **changes: Any) -> _Outcome:
    """The default policy with its affinity measured by plain SGD (lr 0.05, 3 epochs) instead of the
    checked networks' own optimizer."""
    acfg = runs.config.replace(**_SGD, epochs=3, patience=None)
    return _default(problem, runs, affinity_config=acfg, **changes)


STRATEGIES: dict[str, Callable[..., Choice]] = {
    "default": _timed(_default),
    "default:no-second-look": _timed(partial(_default, extra_seeds=0)),
    "default:mean-noise": _timed(partial(_default, sample_test="mean", extra_seeds=0)),
    "default:seeds-only": _timed(partial(_default, samples=False, extra_seeds=0)),
    "default:recombine": _timed(partial(_default, recombine=True, extra_seeds=0)),
    "default:sgd-affinity": _timed(partial(_default_sgd_affinity, extra_seeds=0)),
    "default:top2": _timed(partial(_default, top_m=2, extra_seeds=0)),
    "default:second-look": _timed(partial(_default, extra_seeds=2)),
    "default:pairwise": _timed(partial(_default, estimator="pairwise", extra_seeds=0)),
    "default:pairwise:no-single": _timed(partial(_default, estimator="pairwise", references=(), extra_seeds=0)),
    "all-in-one": _timed(_all_in_one),
    "single-task": _timed(_single_task),
    "affinity:exact:study": _timed(partial(_affinity, estimator="exact", optimizer="study")),
    "affinity:exact:sgd": _timed(partial(_affinity, estimator="exact", optimizer="sgd")),
    "affinity:first_order:study": _timed(partial(_affinity, estimator="first_order", optimizer="study")),
    "affinity:cosine:study": _timed(partial(_affinity, estimator="cosine", optimizer="study")),
    "affinity:exact:late": _timed(partial(_late_affinity, estimator="exact")),
    "affinity:cosine:late": _timed(partial(_late_affinity, estimator="cosine")),
    "group-lookahead": _timed(_group_lookahead),
    "surrogate": _timed(_surrogate),
    "pairwise": _timed(_pairwise),
    "check:sgd-affinity:1x10ep:argmin": _timed(partial(_check, proposer="sgd-affinity", seeds=1, z=0.0, top_m=3,
                                                       epochs=10)),
    "check:affinity:3x": _timed(partial(_check, proposer="affinity", seeds=3)),
    "check:affinity:3x:seeds": _timed(partial(_check, proposer="affinity", seeds=3, samples=False)),
    "check:surrogate:3x": _timed(partial(_check, proposer="surrogate", seeds=3)),
    "check:affinity1+single:3x": _timed(partial(_check, proposer="affinity", seeds=3, top_m=1, single=True)),
    "check:affinity1+single:3x:seeds": _timed(partial(_check, proposer="affinity", seeds=3, top_m=1, single=True,
                                                      samples=False)),
    "check:affinity1+single:3x:z2": _timed(partial(_check, proposer="affinity", seeds=3, top_m=1, single=True,
                                                   z=2.0, z_samples=2.0)),
    "race:affinity+single:3x": _timed(partial(_check, proposer="affinity", seeds=3, single=True, finalists=1)),
}
