"""One pipeline: a study's prepare stage and auto_group reach the same decision, and the study stores it."""

from __future__ import annotations

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

from taskgraph.pipeline import DEFAULT_POLICY, auto_group
from taskgraph.runners.prepare import prepare
from taskgraph.runners.trial import load_study_data
from taskgraph.search import StudySpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_prepare_and_auto_group_run_one_policy_to_one_decision(tmp_path, study_file):
    path = study_file("one-pipeline", epochs=3, n_samples=600)  # [affinity]: every = 2, check_seeds and z default
    spec = StudySpec.load(path, storage=f"sqlite:///{tmp_path / 'study.db'}", runs_root=str(tmp_path / "runs"))
    data = load_study_data(spec)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="one-pipeline", storage=storage)
    store = FileSystemArtifactStore(str(tmp_path / "artifacts"))
    (tmp_path / "artifacts").mkdir()
    prepared = prepare(spec, data, study, store, log=lambda s: None)

    stored = optuna.load_study(study_name="one-pipeline", storage=storage).user_attrs["grouping_decision"]
    assert set(stored) >= {"groups", "diff", "se", "interval", "seeds", "statement", "left_all_in_one"}
    assert stored["seeds"] == DEFAULT_POLICY.check_seeds and "lower is better" in stored["statement"]
    lo, hi = stored["interval"]
    assert lo <= stored["diff"] <= hi
    assert "all-in-one" in prepared.groupings and "single-task" in prepared.groupings

    af = spec.affinity
    policy = DEFAULT_POLICY.replace(estimator=af["estimator"], affinity_epochs=af["epochs"], every=af["every"],
                                    k=min(spec.space.grouping.k, len(data.tasks)), z=af["z"],
                                    check_seeds=af["check_seeds"], config=spec.train_config())
    trunk = spec.trunk_spec()
    result = auto_group(lambda: trunk.build(data.input_shape), data.tasks, None, None, data=data, seed=spec.seed,
                        policy=policy, check_config=spec.train_config(), out_dir=tmp_path / "auto", quiet=True)
    assert [list(g) for g in result.decision.groups] == stored["groups"]
    assert result.decision.diff == pytest.approx(stored["diff"], rel=1e-6, abs=1e-9)
    assert result.decision.se == pytest.approx(stored["se"], rel=1e-6, abs=1e-9)
