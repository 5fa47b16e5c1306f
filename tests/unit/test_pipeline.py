"""The one grouping pipeline: paired runs, the decision rule and its statement, input checked first."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taskgraph.data import planted_clusters
from taskgraph.exceptions import ConfigError, GroupingError
from taskgraph.models import mlp
from taskgraph.pipeline import CheckedCandidate, GroupingPolicy, Runs, check, decide, reseed_loader
from taskgraph.training import TrainConfig

AIO = (("a", "b", "c"),)
SPLIT = (("a", "b"), ("c",))


def cand(groups, totals, source):
    return CheckedCandidate(groups, source, tuple(totals), None, {"a": 0.0, "b": 0.0, "c": 0.0}, None)


def test_all_in_one_is_kept_unless_the_paired_gain_clears_the_t_interval():
    aio = cand(AIO, [1.00, 1.10, 0.90], "all-in-one")
    # lower on average by 0.02 but with per-seed differences -0.05, +0.01, -0.02: SE 0.0173 -> 1.15 SE
    noisy = cand(SPLIT, [0.95, 1.11, 0.88], "affinity #1")
    d = decide([aio, noisy])  # the default: 95% t quantiles (4.30 SE with 3 seeds)
    assert d.chosen is aio and not d.left_all_in_one  # without per-sample shares: the seeds' noise alone
    assert d.diff == pytest.approx(-0.02) and d.se == pytest.approx(np.std([-0.05, 0.01, -0.02], ddof=1) / math.sqrt(3))
    assert "kept all-in-one" in d.reason and "affinity #1" in d.reason and "not by 4.30 SE of the seeds" in d.reason
    assert d.statement().startswith("chosen {a, b, c} (all-in-one); the best alternative, {a, b} | {c} (affinity #1)")
    # the same evidence clears a bar of one SE
    assert decide([aio, noisy], GroupingPolicy(z=1.0, z_samples=1.0)).chosen is noisy
    # a consistent gain (paired differences -0.1, -0.11, -0.09) leaves all-in-one, whatever the spread of totals
    clear = cand(SPLIT, [0.90, 0.99, 0.81], "affinity #2")
    d = decide([aio, noisy, clear])
    assert d.chosen is clear and d.left_all_in_one
    lo, hi = d.interval
    assert lo < d.diff < hi < 0  # the 95% interval excludes 0
    s = d.statement()
    assert "lower is better" in s and "3 paired seeds" in s and f"{d.diff:+.4f}" in s


def test_among_candidates_that_clear_the_bar_the_lowest_validation_total_wins():
    aio = cand(AIO, [1.0, 1.0, 1.0], "all-in-one")
    a = cand(SPLIT, [0.80, 0.81, 0.79], "affinity #1")
    b = cand((("a",), ("b", "c")), [0.70, 0.72, 0.71], "affinity #2")
    assert decide([aio, a, b]).chosen is b
    assert [c.source for c in decide([aio, a, b]).candidates] == ["affinity #2", "affinity #1", "all-in-one"]


def test_policy_values_are_validated():
    with pytest.raises(ConfigError, match="'check_seeds' must be an int >= 0"):
        GroupingPolicy(check_seeds=-1)
    with pytest.raises(ConfigError, match="'z' must be finite and >= 0"):
        GroupingPolicy(z=float("nan"))
    with pytest.raises(ConfigError, match="'top_m' must be an int >= 1"):
        GroupingPolicy(top_m=0)
    with pytest.raises(ConfigError, match="'z_samples' must be finite and >= 0, or None"):
        GroupingPolicy(z_samples=-1.0)
    with pytest.raises(ConfigError, match="'references' may hold only 'single-task'"):
        GroupingPolicy(references=("pairs",))
    with pytest.raises(ConfigError, match="'finalists' must be an int >= 1 or None"):
        GroupingPolicy(finalists=0)
    with pytest.raises(ConfigError, match="'check_patience' must be an int >= 1 or None"):
        GroupingPolicy(check_patience=0)
    cfg = GroupingPolicy(check_epochs=30, check_patience=3).check_config(TrainConfig(epochs=40, patience=5))
    assert (cfg.epochs, cfg.patience) == (30, 3)
    assert GroupingPolicy().check_config(TrainConfig(epochs=8)).epochs == 8  # a cap, never more epochs


def test_reseeding_gives_every_run_the_same_batch_order():
    data = planted_clusters(n_tasks=2, n_clusters=1, n_samples=200, seed=0)
    loader = data.train.loader(16, shuffle=True, seed=0)

    def order():
        return torch.cat([x[:, 0] for x, _, _ in loader])

    reseed_loader(loader, 5)
    first = order()
    assert not torch.equal(order(), first)  # without reseeding the generator moves on
    reseed_loader(loader, 5)
    assert torch.equal(order(), first)


def _runs(n_samples=300):
    data = planted_clusters(n_tasks=3, n_clusters=1, n_samples=n_samples, seed=0)
    return Runs.from_data(lambda: mlp(32, (8,)), data, TrainConfig(epochs=2, lr=1e-2, batch_size=64, device="cpu"))


def test_checked_networks_are_paired_and_trained_once_per_group_and_seed():
    runs = _runs()
    policy = GroupingPolicy(check_seeds=2)
    names = runs.tasks.names
    checked = check(runs, [([names[:2], names[2:]], "x"), ([names[2:], names[:2]], "same partition")], policy)
    assert [c.source for c in checked] == ["all-in-one", "x"]  # all-in-one added, the duplicate dropped
    assert len(runs._cache) == 2 * 3  # (all-in-one, {t0,t1}, {t2}) × 2 seeds
    # a check's numbers do not depend on what trained before it (same seed: same init and batch order)
    fresh = _runs()
    alone = check(fresh, [([names[:2], names[2:]], "x")], policy)
    assert alone[1].val_totals == pytest.approx(checked[1].val_totals, abs=1e-7)


def test_bad_input_is_refused_before_any_training():
    runs = _runs()
    with pytest.raises(GroupingError, match="must be a partition of the tasks"):
        check(runs, [([["t0", "t1"]], "incomplete")], GroupingPolicy(check_seeds=2))
    assert not runs._cache
    data = planted_clusters(n_tasks=3, n_clusters=1, n_samples=300, seed=0)
    other = planted_clusters(n_tasks=2, n_clusters=1, n_samples=300, seed=0)
    tr, va, _ = other.loaders(64)
    bad = Runs(lambda sub: None, data.tasks, tr, va)
    with pytest.raises(GroupingError, match=r"train_loader: every batch must carry a label for each task; task\(s\) "
                                            r"\['t2'\] missing"):
        bad.validate()


def test_a_gain_that_only_a_few_validation_samples_show_does_not_count():
    """Consistent over seeds, but carried by one of 200 validation samples: within the set's own noise."""
    n = 200
    base = np.full((3, n), 0.5)
    lucky = base.copy()
    lucky[:, 0] -= 12.0  # one sample much better, one a little worse, every seed: the totals drop by 0.05
    lucky[:, 1] += 2.0
    lucky += np.array([[0.001], [0.0], [-0.001]])  # tiny seed noise: the seeds alone would say 100 SE
    aio = CheckedCandidate(AIO, "all-in-one", tuple(base.mean(1)), None, {}, None, base)
    cand_ = CheckedCandidate(SPLIT, "affinity #1", tuple(lucky.mean(1)), None, {}, None, lucky)
    d = decide([aio, cand_], GroupingPolicy(z=2.0, z_samples=1.0, sample_test="mean"))
    assert d.chosen is aio and d.diff == pytest.approx(-0.05)
    se = math.sqrt(np.var([0.001, 0, -0.001], ddof=1) / 3 + np.var([-12, 2] + [0] * 198, ddof=1) / n)
    assert d.se == pytest.approx(se) and 0.05 < se  # under 1 SE once the set's noise counts
    assert "with the validation set's" in d.reason
    # the default trimmed test: the typical sample does not move at all, so nothing clears
    d = decide([aio, cand_], GroupingPolicy(z=2.0))
    assert d.chosen is aio and "typical validation sample" in d.reason and "trimmed mean" in d.reason
    # the seeds alone would have left all-in-one
    assert decide([aio, cand_], GroupingPolicy(z=2.0, samples=False)).chosen is cand_
    # the same gain spread over every sample clears the bar
    even = base - 0.05 + np.array([[0.001], [0.0], [-0.001]])
    spread = CheckedCandidate(SPLIT, "affinity #1", tuple(even.mean(1)), None, {}, None, even)
    assert decide([aio, spread], GroupingPolicy(z=2.0, z_samples=2.0)).chosen is spread


def test_a_race_trains_losers_one_seed_and_never_chooses_them():
    runs = _runs()
    names = runs.tasks.names
    policy = GroupingPolicy(check_seeds=3, finalists=1, z=0.0, samples=False)
    cands = [([names[:2], names[2:]], "a"), ([names[:1], names[1:]], "b"), ([[t] for t in names], "single-task")]
    checked = check(runs, cands, policy)
    seeds = {c.source: len(c.val_totals) for c in checked}
    assert seeds["all-in-one"] == 3 and sorted(seeds.values()) == [1, 1, 3, 3]
    finalist = next(c for c in checked if c.source != "all-in-one" and len(c.val_totals) == 3)
    first_seed = {c.source: c.val_totals[0] for c in checked if c.source != "all-in-one"}
    assert first_seed[finalist.source] == min(first_seed.values())  # the best on the first seed went on
    assert decide(checked, policy).chosen.source in ("all-in-one", finalist.source)


def test_within_one_standard_error_of_the_best_the_fewest_networks_win():
    aio = cand(AIO, [1.0, 1.0, 1.0], "all-in-one")
    pairs = cand(SPLIT, [0.80, 0.82, 0.78], "affinity #1")  # two networks
    single = cand((("a",), ("b",), ("c",)), [0.79, 0.83, 0.775], "single-task")  # three; lower by 0.0017 ± 0.006
    d = decide([aio, pairs, single])
    assert d.chosen is pairs and "fewest networks within 1 SE of the best (single-task)" in d.reason
    clearly = cand((("a",), ("b",), ("c",)), [0.70, 0.72, 0.68], "single-task")  # lower by 0.1 every seed
    assert decide([aio, pairs, clearly]).chosen is clearly


def test_heavy_tailed_sample_noise_does_not_hide_a_gain_every_typical_sample_shows():
    """Better by 0.02 on every sample but two, which swing by ±9 (confidently wrong labels): the
    mean's standard error drowns the gain, Yuen's trimmed test does not."""
    from scipy import stats

    n, rng = 300, np.random.default_rng(0)
    base = 0.5 + 0.01 * rng.standard_normal((3, n))
    better = base - 0.02 + 0.01 * rng.standard_normal((1, n))  # per-sample scatter, the same in every seed
    better[:, 0] += 9.0
    better[:, 1] -= 9.0
    seed_noise = np.array([[0.0005], [0.0], [-0.0005]])
    better += seed_noise
    aio = CheckedCandidate(AIO, "all-in-one", tuple(base.mean(1)), None, {}, None, base)
    cand_ = CheckedCandidate(SPLIT, "affinity #1", tuple(better.mean(1)), None, {}, None, better)
    assert decide([aio, cand_], GroupingPolicy(sample_test="mean")).chosen is aio
    d = decide([aio, cand_])
    assert d.chosen is cand_ and "trimmed mean" in d.reason
    per = (better - base).mean(0)
    w = np.asarray(stats.mstats.winsorize(per, limits=(0.2, 0.2)), float)
    # Yuen's statistic by hand: trimmed mean / (winsorized SD / ((1 - 2 * 0.2) sqrt(n)))
    t = stats.trim_mean(per, 0.2) / (w.std(ddof=1) / (0.6 * math.sqrt(n)))
    assert f"the typical validation sample by {-t:.1f} SE" in d.reason
    assert GroupingPolicy(sample_test="trimmed", trim=0.1).trim == 0.1
    with pytest.raises(ConfigError, match="'sample_test' must be 'mean' or 'trimmed'"):
        GroupingPolicy(sample_test="median")
    with pytest.raises(ConfigError, match="0 <= 'trim' < 0.5 must hold"):
        GroupingPolicy(trim=0.5)


def test_a_study_can_measure_affinity_with_its_own_optimizer_and_the_prepare_stage_uses_it(tmp_path):
    import tomllib
    from pathlib import Path

    from taskgraph.pipeline import measure
    from taskgraph.runners.prepare import study_policy
    from taskgraph.search import StudySpec

    base = tomllib.loads(Path("studies/quickstart.toml").read_text())
    base["search"]["space"] = str(Path("search_spaces/default.toml").resolve())
    spec = StudySpec.from_dict(base, file="quickstart.toml", runs_root=tmp_path)
    policy = study_policy(spec, 6)
    assert policy.affinity_config is not None
    assert (policy.affinity_config.optimizer, policy.affinity_config.lr, policy.affinity_config.momentum) == \
        ("sgd", 0.05, 0.0)
    assert policy.affinity_config.epochs == spec.affinity.epochs == 4 and policy.affinity_config.patience is None
    assert policy.config is not None and policy.config.optimizer == "adam"  # the checks keep the study's training

    # without the keys the affinity run is the study's own training, and the fingerprint is as before them
    keys = ("optimizer", "lr", "momentum")
    plain = {**base, "affinity": {k: v for k, v in base["affinity"].items() if k not in keys}}
    spec2 = StudySpec.from_dict(plain, file="quickstart.toml", runs_root=tmp_path)
    assert study_policy(spec2, 6).affinity_config is None
    assert "optimizer" not in spec2.affinity.to_dict() and spec.affinity.to_dict()["optimizer"] == "sgd"
    assert spec.fingerprint() != spec2.fingerprint()

    # the measurement really steps with it: one step of plain SGD from the same start differs from Adam's
    runs = _runs()
    sgd = GroupingPolicy(affinity_epochs=1, every=1, affinity_config=spec.affinity.config(runs.config))
    adam = GroupingPolicy(affinity_epochs=1, every=1)
    assert not np.allclose(measure(runs, sgd)[0].mean, measure(runs, adam)[0].mean)

    for key, value, must in (("optimizer", "lbfgs", "must be one of adam, adamw, sgd"),
                             ("lr", -1.0, "'affinity.lr'"), ("momentum", 1.5, "'affinity.momentum'")):
        bad = {**base, "affinity": {**base["affinity"], key: value}}
        with pytest.raises(ConfigError, match=must) as err:
            StudySpec.from_dict(bad, file="quickstart.toml", runs_root=tmp_path)
        assert err.value.key == f"affinity.{key}"

    # the pairwise proposer is a study's choice too (the same policy as auto_group's)
    pw = StudySpec.from_dict({**base, "affinity": {**base["affinity"], "estimator": "pairwise"}},
                             file="quickstart.toml", runs_root=tmp_path)
    assert study_policy(pw, 6).estimator == "pairwise"
    with pytest.raises(ConfigError, match="valid: cosine, exact, first_order, pairwise") as err:
        StudySpec.from_dict({**base, "affinity": {**base["affinity"], "estimator": "pairwyse"}},
                            file="quickstart.toml", runs_root=tmp_path)
    assert err.value.key == "affinity.estimator"


def test_a_study_sets_the_second_look_and_its_fingerprint_is_unchanged_without_the_key(tmp_path):
    import tomllib
    from pathlib import Path

    from taskgraph.runners.prepare import study_policy
    from taskgraph.search import StudySpec

    base = tomllib.loads(Path("studies/quickstart.toml").read_text())
    base["search"]["space"] = str(Path("search_spaces/default.toml").resolve())
    assert "extra_seeds" not in base["affinity"]
    spec = StudySpec.from_dict(base, file="quickstart.toml", runs_root=tmp_path)
    assert study_policy(spec, 6).extra_seeds == 2  # the default policy's second look
    assert "extra_seeds" not in spec.affinity.to_dict()  # a study that does not set it keeps its fingerprint
    off = StudySpec.from_dict({**base, "affinity": {**base["affinity"], "extra_seeds": 0}},
                              file="quickstart.toml", runs_root=tmp_path)
    assert study_policy(off, 6).extra_seeds == 0 and off.fingerprint() != spec.fingerprint()
    for value, must in ((-1, "'affinity.extra_seeds'"), (1.5, "must be an int")):
        with pytest.raises(ConfigError, match=must) as err:
            StudySpec.from_dict({**base, "affinity": {**base["affinity"], "extra_seeds": value}},
                                file="quickstart.toml", runs_root=tmp_path)
        assert err.value.key == "affinity.extra_seeds"


def test_a_second_look_adds_seeds_only_for_the_closest_alternative_when_all_in_one_was_kept():
    from taskgraph.pipeline import settle

    runs = _runs()
    names = runs.tasks.names
    single = [[t] for t in names]
    # an impossible bar keeps all-in-one whatever the gain: the second look's conditions alone decide
    base = GroupingPolicy(check_seeds=2, z=1e6, samples=False, extra_seeds=0)
    assert GroupingPolicy().extra_seeds == 2  # the default looks twice
    checked = check(runs, [(single, "single-task")], base)
    ahead = checked[1].val_total < checked[0].val_total
    decision, every = settle(runs, checked, base)  # extra_seeds = 0: decide() alone
    assert decision.seeds == 2 and len(every) == 2 and "second look" not in decision.reason
    assert ahead  # on this data single-task is ahead on validation, and kept out only by the bar
    decision, every = settle(runs, checked, base.replace(extra_seeds=1))
    assert decision.seeds == 3 and [len(c.val_totals) for c in every] == [2, 2, 3, 3]
    assert decision.reason.endswith("(a second look: 1 more paired seeds for single-task and all-in-one)")
    assert {(g, s) for (g, cfg), _ in runs._cache.items() for s in [cfg.seed]} >= {
        (tuple(names), 2), *((t, 2) for t in [(n,) for n in names])}
    # the seeds already trained are reused (the cache), and their totals are the first look's
    assert every[2].source == "all-in-one" and every[2].val_totals[:2] == pytest.approx(checked[0].val_totals)
    assert every[3].val_totals[:2] == pytest.approx(checked[1].val_totals)
    # all-in-one behind: nothing to look at again
    behind = [checked[0], cand(checked[1].groups, [t + 10 for t in checked[0].val_totals], "worse")]
    assert settle(runs, behind, base.replace(extra_seeds=1))[0].seeds == 2


def test_pairwise_transfer_is_the_single_and_pair_networks_and_the_checks_reuse_them():
    from taskgraph.grouping.partitions import set_partitions
    from taskgraph.pipeline import hoa_total, pairwise_networks, run_policy

    runs = _runs()
    names = runs.tasks.names
    policy = GroupingPolicy(estimator="pairwise", check_seeds=2, seed=3, extra_seeds=0)  # no second look to count
    decision, matrix, ranked, steps = run_policy(runs, policy)
    cfg = policy.check_config(runs.config)
    nets = pairwise_networks(names, policy)
    assert len(nets) == 3 + 3 and all(s == 3 for _, s in nets)
    loss = {frozenset(g): runs.train_group(g, 3, config=cfg).val.losses for g, _ in nets}  # cached
    # Z[j, i]: task i's validation loss alone minus its loss beside j, one seed: no standard errors
    a, b = names[0], names[2]
    assert matrix.mean[2, 0] == pytest.approx(loss[frozenset([a])][a] - loss[frozenset([a, b])][a])
    assert matrix.estimator == "pairwise" and np.isnan(matrix.stderr).all() and np.isnan(np.diag(matrix.mean)).all()
    # the first proposal is the partition of lowest predicted validation total (Standley's HOA)
    predicted = {p: hoa_total(loss, p) for p in set_partitions(names)}
    assert hoa_total(loss, ranked[0].groups) == pytest.approx(min(predicted.values()))
    # every network trained once: the checks' seed-3 single-task networks are the measurement's
    assert steps == runs.steps == sum(r.steps for r in runs._cache.values())
    assert len(runs._cache) == len(nets | {(g, s) for c in decision.candidates for g in c.groups for s in (3, 4)})


def test_auto_group_runs_the_pairwise_estimator_end_to_end(tmp_path):
    from taskgraph.pipeline import auto_group

    data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=300, seed=0)
    r = auto_group(lambda: mlp(32, (8,)), data.tasks, None, None, data=data, estimator="pairwise", check_seeds=2,
                   check_config=TrainConfig(epochs=2, lr=1e-2, batch_size=64, device="cpu"), quiet=True,
                   out_dir=tmp_path)
    assert r.matrix.estimator == "pairwise" and np.isnan(r.matrix.stderr).all()
    assert all(p.exists() and p.stat().st_size > 0 for p in r.pictures.values())
    # the proposal (here it may be the single-task partition itself: then checked once, as the proposal)
    assert {c.source for c in r.candidates} >= {"all-in-one", "pairwise #1"} and "lower is better" in r.summary()
