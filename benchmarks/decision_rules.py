"""Rules for leaving all-in-one, replayed on one set of check runs and scored on the ground truth.

The default policy's checks train a few candidate partitions (the affinity's proposals, single-task)
and all-in-one over paired seeds, then a rule decides. Rules differ in which candidates they look at,
how many seeds and how high a bar. Training every candidate once over 5 paired seeds lets every rule
be replayed on the same networks (a rule that looks at 3 seeds sees the first 3), so rules are
compared without the noise of separate training runs, and each rule's cost counts only the networks
it looks at::

    python benchmarks/decision_rules.py train     # per problem: candidates x 5 seeds (cached, resumable)
    python benchmarks/decision_rules.py replay    # every rule, scored on the ground truth (10, 5 and 3 seeds)
    python benchmarks/decision_rules.py crossfit  # how much early stopping on validation flatters each candidate

``train`` measures the affinity exactly as the default policy does (seed 1000), takes its first three
proposals, single-task and the proposals with groups split into single tasks, and trains every
network over the paired seeds 1000..1004 with the default policy's check training; it writes
``benchmarks/ground_truth/checks/<problem>.json``. The replayed ``default`` rule makes the default
policy's choice on every problem (``quality.py compare``'s ``default`` row, a second look included):
that checks the replay; ``no second look`` is the default before it (``default:no-second-look``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from quality import DEFAULT_PROBLEMS, ground_truth

from taskgraph.evaluation import PROBLEMS
from taskgraph.evaluation.strategies import EVAL_SEED, runs_for
from taskgraph.pipeline.stages import (
    DEFAULT_POLICY,
    CheckedCandidate,
    Decision,
    GroupingPolicy,
    candidates,
    check,
    decide,
    measure,
    propose,
    reseed_loader,
    sample_shares,
    second_look_target,
)
from taskgraph.training import Callback, seed_everything
from taskgraph.training import train as train_network

HERE = Path(__file__).parent / "ground_truth" / "checks"
SEEDS = 5


def train(name: str) -> Path:
    """Every candidate of the widest rule over ``SEEDS`` paired seeds; the JSON file written."""
    out = HERE / f"{name}.json"
    if out.exists():
        return out
    problem = PROBLEMS.get(name)
    runs = runs_for(problem)
    policy = DEFAULT_POLICY.replace(seed=EVAL_SEED, top_m=3, recombine=True, check_seeds=SEEDS)
    matrix, affinity_steps = measure(runs, policy)
    ranked = propose(matrix, policy)
    checked = check(runs, candidates(ranked, policy, runs.tasks.names), policy)
    cfg = policy.check_config(policy.config or runs.config)
    networks = {f"{'+'.join(g)}@{s}": runs.train_group(g, s, config=cfg).steps  # cached: no retraining
                for c in checked for g in c.groups for s in range(EVAL_SEED, EVAL_SEED + SEEDS)}
    HERE.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "problem": name, "seeds": list(range(EVAL_SEED, EVAL_SEED + SEEDS)), "affinity_steps": affinity_steps,
        "networks": networks,
        "candidates": [{**c.to_dict(), "val_samples": np.asarray(c.val_samples).round(9).tolist()} for c in checked],
    }))
    return out


def load(name: str) -> tuple[list[CheckedCandidate], dict]:
    raw = json.loads((HERE / f"{name}.json").read_text())
    cands = [CheckedCandidate(tuple(tuple(g) for g in c["groups"]), c["source"], tuple(c["val_totals"]),
                              tuple(c["test_totals"]), c["val_losses"], c["test_losses"],
                              np.asarray(c["val_samples"], float)) for c in raw["candidates"]]
    return cands, raw


def first(c: CheckedCandidate, k: int) -> CheckedCandidate:
    """The candidate as ``k`` paired seeds would have measured it."""
    return replace(c, val_totals=c.val_totals[:k], test_totals=c.test_totals[:k] if c.test_totals else None,
                   val_samples=None if c.val_samples is None else c.val_samples[:k])


def pick(cands: Sequence[CheckedCandidate], *sources: str, prefix: Sequence[str] = ()) -> list[CheckedCandidate]:
    return [c for c in cands if c.source in ("all-in-one", *sources) or any(c.source.startswith(p) for p in prefix)]


#: a rule: the checked candidates -> (decision, {(group, seeds used)}); seeds are the first k
Rule = Callable[[list[CheckedCandidate]], tuple[Decision, list[tuple[CheckedCandidate, int]]]]


def plain(sources: Sequence[str], seeds: int = 3, prefix: Sequence[str] = (), **policy) -> Rule:
    pol = DEFAULT_POLICY.replace(**policy)

    def rule(cands):
        shown = [first(c, seeds) for c in pick(cands, *sources, prefix=prefix)]
        return decide(shown, pol), [(c, seeds) for c in shown]
    return rule


def second_look(sources: Sequence[str], extra: int = 2, second: GroupingPolicy | None = None, **policy) -> Rule:
    """:func:`taskgraph.pipeline.settle`'s second look, replayed: when only the seeds' bar kept all-in-one,
    the best alternative and all-in-one are decided again over ``3 + extra`` seeds (``second``: that
    decision's policy)."""
    pol = DEFAULT_POLICY.replace(**policy)

    def rule(cands):
        shown = [first(c, 3) for c in pick(cands, *sources)]
        d = decide(shown, pol)
        used = [(c, 3) for c in shown]
        best = second_look_target(d, pol)
        if best is None or d.all_in_one is None:
            return d, used
        aio = d.all_in_one
        full = {c.source: c for c in cands}
        again = [first(full[aio.source], 3 + extra), first(full[best.source], 3 + extra)]
        return decide(again, second or pol), used + [(c, 3 + extra) for c in again]
    return rule


def _lowest(sources: Sequence[str]) -> Rule:
    """Like ``default`` but among the candidates that clear the bar, the lowest validation total wins."""
    base = plain(sources)

    def rule(cands):
        d, used = base(cands)
        if not d.left_all_in_one:
            return d, used
        aio = d.all_in_one
        winners = [c for c in d.candidates if c is not aio and decide([aio, c]).left_all_in_one]
        best = min(winners, key=lambda c: c.val_total)
        return decide([aio, best]), used
    return rule


RULES: dict[str, Rule] = {
    "default": second_look(["affinity #1", "single-task"]),  # the default policy: a second look of 2 seeds
    "no second look": plain(["affinity #1", "single-task"]),  # the default before the 10-seed ground truth
    "second-look:99%": second_look(["affinity #1", "single-task"], second=DEFAULT_POLICY.replace(confidence=0.99)),
    "5 seeds": plain(["affinity #1", "single-task"], seeds=5),
    "4 seeds": plain(["affinity #1", "single-task"], seeds=4),
    "top2": plain(["affinity #1", "affinity #2", "single-task"]),
    "top3": plain(["affinity #1", "affinity #2", "affinity #3", "single-task"]),
    "recombine": plain(["affinity #1", "single-task"], prefix=["affinity #1,"]),
    "top3+recombine": plain(["affinity #1", "affinity #2", "affinity #3", "single-task"], prefix=["affinity #"]),
    "lowest val (no 1-SE rule)": _lowest(["affinity #1", "single-task"]),
    "single-task only": plain(["single-task"]),
    "affinity only": plain(["affinity #1"]),
}




def cost(raw: dict, used: list[tuple[CheckedCandidate, int]], exhaustion_steps: int) -> float:
    nets = {(g, s) for c, k in used for g in c.groups for s in raw["seeds"][:k]}
    return (raw["affinity_steps"] + sum(raw["networks"][f"{'+'.join(g)}@{s}"] for g, s in nets)) / exhaustion_steps


def replay(problems: Sequence[str], truth_seeds: Sequence[int]) -> dict:
    rows: dict = {}
    for name in problems:
        cands, raw = load(name)
        gt, gt3 = ground_truth(name, tuple(truth_seeds)), ground_truth(name)
        peaked = gt.landscape()["peaked"]
        for rname, rule in RULES.items():
            d, used = rule(cands)
            a = gt.assess(d.groups)
            dt, se = a.diff_to_all_in_one["test"]
            rows.setdefault(rname, {})[name] = {
                "groups": [list(g) for g in a.groups], "test_rank": a.test_rank, "ratio_to_best": a.ratio_to_best,
                "diff_se": dt / se if se else 0.0, "ok": a.within_noise_of_all_in_one,
                "cost": cost(raw, used, gt3.steps), "peaked": peaked}
    return rows


def table(rows: dict, problems: Sequence[str], fmt: Callable[[dict], str]) -> None:
    w = 15
    print(f"{'rule':<28}" + "".join(f"{n[:w - 1]:>{w}}" for n in problems))
    for rname, per in rows.items():
        print(f"{rname:<28}" + "".join(f"{fmt(per[n]):>{w}}" for n in problems))


def summary(rows: dict, problems: Sequence[str]) -> None:
    print(f"{'rule':<28}{'ok (<= aio + 1 SE)':>20}{'peaked hits':>13}{'mean rank':>11}{'max cost':>10}")
    for rname, per in rows.items():
        ok = sum(per[n]["ok"] for n in problems)
        peaked = [n for n in problems if per[n]["peaked"]]
        hits = sum(per[n]["test_rank"] <= 10 and per[n]["ratio_to_best"] <= 1.01 for n in peaked)
        print(f"{rname:<28}{f'{ok}/{len(problems)}':>20}{f'{hits}/{len(peaked)}':>13}"
              f"{statistics.mean(per[n]['test_rank'] for n in problems):>11.1f}"
              f"{max(per[n]['cost'] for n in problems):>10.1%}")


class _EpochShares(Callback):
    """Each epoch's per-sample validation shares (see :class:`taskgraph.pipeline.GroupRun`)."""

    def __init__(self, runs, sub) -> None:
        self.runs, self.sub, self.shares = runs, sub, []

    def on_epoch_end(self, state, val) -> None:
        self.shares.append(sample_shares(state.model, self.runs.val_loader, self.sub))


def crossfit(name: str, seeds: Sequence[int] = (EVAL_SEED, EVAL_SEED + 1, EVAL_SEED + 2)) -> None:
    """How much does restoring each network's best epoch on the validation set flatter its validation total?

    Every network of all-in-one, the affinity's first proposal and single-task is trained again (same
    seeds and training as the checks) recording every epoch's per-sample validation shares. The
    validation set is split in two random halves; each half is scored at the epoch the *other* half
    chooses (cross-fitting), so no sample scores the epoch it helped choose. ``optimism`` is the
    cross-fitted total minus the usual one; the gains are all-in-one's total minus the candidate's.
    """
    raw = json.loads((HERE / f"{name}.json").read_text())
    cands = [c for c in raw["candidates"] if c["source"] in ("all-in-one", "affinity #1", "single-task")]
    runs = runs_for(PROBLEMS.get(name))
    cfg = DEFAULT_POLICY.check_config(runs.config)
    nets: dict = {}
    for c in cands:
        for g in map(tuple, c["groups"]):
            for s in seeds:
                if (g, s) not in nets:  # train_group's recipe, with the epochs recorded
                    sub = runs.tasks.subset(list(g))
                    seed_everything(s)
                    model = runs.build(sub)
                    reseed_loader(runs.train_loader, s)
                    rec = _EpochShares(runs, sub)
                    train_network(model, sub, runs.train_loader, config=cfg.replace(seed=s),
                                  val_loader=runs.val_loader, test_loader=runs.test_loader, callbacks=[rec])
                    nets[g, s] = np.array(rec.shares)
    n = next(iter(nets.values())).shape[1]
    half = np.zeros(n, bool)
    half[np.random.default_rng(0).permutation(n)[: n // 2]] = True
    gt = ground_truth(name, tuple(range(5)))
    usual, fitted = {}, {}
    for c in cands:
        u, f = [], []
        for s in seeds:
            tu, tf = np.zeros(n), np.zeros(n)
            for g in map(tuple, c["groups"]):
                sh = nets[g, s]
                tu += sh[int(np.argmin(sh.mean(1)))]
                ea, eb = int(np.argmin(sh[:, half].mean(1))), int(np.argmin(sh[:, ~half].mean(1)))
                tf += np.where(half, sh[eb], sh[ea])
            u.append(tu.mean())
            f.append(tf.mean())
        usual[c["source"]], fitted[c["source"]] = np.array(u), np.array(f)
        if not np.allclose(u, c["val_totals"][:len(seeds)], rtol=1e-6):
            raise SystemExit(f"{name} {c['source']}: the retrained totals {u} differ from the checks' "
                             f"{c['val_totals'][:len(seeds)]}")
    for c in cands:
        src = c["source"]
        d, se = gt.assess(c["groups"]).diff_to_all_in_one["test"]
        print(f"{name:<15} {src:<12} val total {usual[src].mean():.4f}  cross-fitted {fitted[src].mean():.4f}  "
              f"optimism {np.mean(fitted[src] - usual[src]):+.4f}   "
              f"gain: val {np.mean(usual['all-in-one'] - usual[src]):+.4f}"
              f"  cross-fitted {np.mean(fitted['all-in-one'] - fitted[src]):+.4f}  test (ground truth, 5 seeds) "
              f"{-d:+.4f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train", "replay", "crossfit"])
    ap.add_argument("--problems", nargs="*", default=list(DEFAULT_PROBLEMS))
    ap.add_argument("--truth-seeds", type=int, nargs="*", default=[10, 5, 3],
                    help="replay: score on the ground truth's first N seeds, one table set per N (default 10 5 3)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if a.command == "train":
        for name in a.problems:
            print(train(name), flush=True)
        return 0
    if a.command == "crossfit":
        for name in a.problems:
            crossfit(name)
        return 0
    for seeds in a.truth_seeds:
        rows = replay(a.problems, range(seeds))
        print(f"\n=== scored on the ground truth's {seeds} seeds ===")
        print("\ntest rank (1 = best of 203)")
        table(rows, a.problems, lambda r: f"{r['test_rank']}")
        print("\ntest / best partition")
        table(rows, a.problems, lambda r: f"{r['ratio_to_best']:.3f}")
        print("\ntest − all-in-one in paired SE ('NO' when above +1)")
        table(rows, a.problems, lambda r: ("ok " if r["ok"] else "NO ") + f"{r['diff_se']:+.1f}")
        print("\ncost / the 3-seed exhaustion's steps")
        table(rows, a.problems, lambda r: f"{r['cost']:.1%}")
        print()
        summary(rows, a.problems)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
