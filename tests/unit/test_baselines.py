"""Single-task baselines: trained once per key, cached in memory and on disk, keyed by what changes them."""

from __future__ import annotations

import json
import math

import pytest

from taskgraph.baselines import (
    Baselines,
    baseline_key,
    clear_memory_cache,
    single_task_baselines,
)
from taskgraph.data import planted_clusters
from taskgraph.exceptions import ConfigError
from taskgraph.models import HardSharing, TrunkSpec, build_model, mlp
from taskgraph.training import TrainConfig, fit, train_partition

TRUNK = TrunkSpec(hidden=(16,))
CONFIG = TrainConfig(epochs=2, seed=0)


@pytest.fixture
def data():
    return planted_clusters(n_tasks=4, n_clusters=2, n_samples=300, seed=0)


@pytest.fixture(autouse=True)
def fresh_memory():
    clear_memory_cache()
    yield
    clear_memory_cache()


def test_baselines_are_the_single_task_models(data):
    base = single_task_baselines(data, TRUNK, CONFIG)
    direct = train_partition(lambda: mlp(32, (16,)), data, [(n,) for n in data.tasks.names], CONFIG)
    assert base.test.metrics == pytest.approx(direct["test"].metrics)
    assert base.val.losses == pytest.approx(direct["val"].losses)
    assert base.delta_m(base.test, data.tasks) == 0.0


def test_cached_on_disk_and_reloaded_without_training(data, tmp_path):
    base = single_task_baselines(data, TRUNK, CONFIG, cache_dir=tmp_path)
    assert single_task_baselines(data, TRUNK, CONFIG, cache_dir=tmp_path) is base  # memory hit
    files = list(tmp_path.glob("baselines-*.json"))
    assert [f.name for f in files] == [f"baselines-{base.key}.json"]
    stamp = files[0].stat().st_mtime_ns
    clear_memory_cache()  # as a new process (a Ray worker) would start
    again = single_task_baselines(data, TRUNK, CONFIG, cache_dir=tmp_path)
    assert again is not base
    assert again == base  # same key, same evaluations, same recorded training time: read, not retrained
    assert again.seconds == base.seconds
    assert files[0].stat().st_mtime_ns == stamp
    on_disk = json.loads(files[0].read_text())
    assert on_disk["key_fields"]["trunk"] == TRUNK.to_dict()
    assert on_disk["key_fields"]["config"]["epochs"] == 2


def test_key_changes_with_seed_budget_trunk_and_data_but_not_device(data):
    key = baseline_key(data, TRUNK, CONFIG)
    assert baseline_key(data, TRUNK, CONFIG.replace(seed=1)) != key
    assert baseline_key(data, TRUNK, CONFIG.replace(epochs=3)) != key
    assert baseline_key(data, TrunkSpec(hidden=(32,)), CONFIG) != key
    other = planted_clusters(n_tasks=4, n_clusters=2, n_samples=301, seed=0)  # same name, other arrays
    assert other.name == data.name
    assert baseline_key(other, TRUNK, CONFIG) != key
    assert baseline_key(data, TRUNK, CONFIG.replace(device="cpu")) == baseline_key(
        data, TRUNK, CONFIG.replace(device="cuda"))


def test_a_corrupt_or_foreign_cache_file_is_recomputed(data, tmp_path):
    key = baseline_key(data, TRUNK, CONFIG)
    path = tmp_path / f"baselines-{key}.json"
    path.write_text("{not json")
    base = single_task_baselines(data, TRUNK, CONFIG, cache_dir=tmp_path)
    assert base.key == key
    assert Baselines.from_dict(json.loads(path.read_text())) == base


def test_delta_m_of_a_multi_task_model(data):
    base = single_task_baselines(data, TRUNK, CONFIG)
    model = build_model(HardSharing(), TRUNK, data.tasks, data.input_shape)
    result = fit(model, data, CONFIG)
    per_task = base.per_task_delta(result.test, data.tasks)
    assert set(per_task) == set(data.tasks.names)
    dm = base.delta_m(result.test, data.tasks)
    assert math.isfinite(dm)
    assert dm == pytest.approx(sum(per_task.values()) / len(per_task))
    assert math.isfinite(base.delta_m(result.val, data.tasks, split="val"))


def test_bad_input(data, tmp_path):
    with pytest.raises(ConfigError, match="'trunk_spec' must be a TrunkSpec"):
        single_task_baselines(data, mlp(32, (8,)), CONFIG)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="'cache_dir' must be a folder"):
        single_task_baselines(data, TRUNK, CONFIG, cache_dir=blocker)
    base = single_task_baselines(data, TRUNK, CONFIG)
    with pytest.raises(ConfigError, match="'split' must be 'val' or 'test'"):
        base.delta_m(base.test, data.tasks, split="train")
