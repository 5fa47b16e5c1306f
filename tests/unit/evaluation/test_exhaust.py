"""Ground truth by exhaustion on a tiny 4-task problem: every subset × seed, paired, resumable."""

from __future__ import annotations

import json

import pytest

from taskgraph.evaluation import PROBLEMS, GroundTruth, Problem, exhaust, read_records, train_subset
from taskgraph.exceptions import ConfigError, TaskGraphError

TINY = PROBLEMS.get("tiny4")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("gt") / "tiny4.jsonl"
    return path, exhaust(TINY, path, seeds=(0, 1, 2), workers=1)


def test_every_subset_and_seed_is_trained_once(built):
    path, gt = built
    recs = read_records(path, TINY)
    keys = [(tuple(r["subset"]), r["seed"]) for r in recs]
    assert len(keys) == 15 * 3 == len(set(keys))
    assert isinstance(gt, GroundTruth) and len(gt.partitions()) == 15
    assert all(r["fingerprint"] == TINY.fingerprint() and r["steps"] > 0 for r in recs)
    # early stopping restores the best epoch: the recorded validation loss is the lowest seen
    assert all(0 <= r["best_epoch"] < r["epochs"] <= TINY.config.epochs for r in recs)


def test_a_record_is_the_network_trained_again(built):
    """Seed s fixes initialisation and batch order: retraining one (subset, seed) gives its record."""
    path, _ = built
    rec = next(r for r in read_records(path) if r["subset"] == ["t0", "t2"] and r["seed"] == 1)
    again = train_subset(TINY, ("t0", "t2"), 1)
    assert again["val"] == pytest.approx(rec["val"], abs=1e-6) and again["steps"] == rec["steps"]


def test_an_interrupted_build_resumes_without_retraining(built, tmp_path):
    path, gt = built
    lines = path.read_text().splitlines()
    part = tmp_path / "part.jsonl"
    part.write_text("\n".join(lines[:20]) + "\n" + lines[20][:30])  # killed while writing line 21
    resumed = exhaust(TINY, part, seeds=(0, 1, 2), workers=1)
    recs = read_records(part, TINY)
    assert len(recs) == 45 and len({(tuple(r["subset"]), r["seed"]) for r in recs}) == 45
    assert [json.loads(x) for x in part.read_text().splitlines()[:20]] == [json.loads(x) for x in lines[:20]]
    assert resumed.ranking("val")[0][0] == gt.ranking("val")[0][0]


def test_records_of_another_problem_definition_are_refused(built, tmp_path):
    path, _ = built
    changed = Problem("tiny4", TINY.dataset, TINY.tasks, TINY.trunk, TINY.config.replace(lr=0.5),
                      options=dict(TINY.options))
    with pytest.raises(TaskGraphError, match="fingerprint must be"):
        exhaust(changed, path, seeds=(0, 1, 2), workers=1)


def test_bad_arguments_are_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="at least 2 distinct seeds"):
        exhaust(TINY, tmp_path / "x.jsonl", seeds=(0,))
    with pytest.raises(ConfigError, match="'backend' must be 'local' or 'ray'"):
        exhaust(TINY, tmp_path / "x.jsonl", backend="slurm")
    with pytest.raises(ConfigError, match="number of tasks <= 7"):
        Problem("big", "planted-clusters", tuple(f"t{i}" for i in range(8)), TINY.trunk, TINY.config)
    assert not (tmp_path / "x.jsonl").exists()
