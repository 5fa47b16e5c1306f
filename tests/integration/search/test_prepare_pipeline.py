"""One pipeline: a study's prepare stage and auto_group reach the same decision, and the study stores it."""

from __future__ import annotations

import dataclasses

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


def test_the_study_files_grouping_table_reaches_the_prepare_stages_solver(tmp_path, study_file):
    """[grouping] solver = exact with a time limit too short to prove anything: the prepare stage's
    proposals come from the scalable fallback, and it says so with the bound."""
    path = study_file("solver-settings", epochs=2, n_samples=300)
    path.write_text(path.read_text() + '\n[grouping]\nsolver = "exact"\ntime_limit = 1e-6\nfallback = "scalable"\n')
    spec = StudySpec.load(path, storage=f"sqlite:///{tmp_path / 'study.db'}", runs_root=str(tmp_path / "runs"))
    assert (spec.grouping.solver, spec.grouping.time_limit, spec.grouping.fallback) == ("exact", 1e-6, "scalable")
    spec = spec.replace(affinity=dataclasses.replace(spec.affinity, check_seeds=0))  # only the proposals matter
    data = load_study_data(spec)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="solver-settings", storage=storage)
    (tmp_path / "artifacts").mkdir()
    lines: list[str] = []
    prepared = prepare(spec, data, study, FileSystemArtifactStore(str(tmp_path / "artifacts")), log=lines.append)
    assert any("the exact solver stopped at its time limit (1e-06 s); the proposals are the scalable solver's" in s
               for s in lines), lines
    assert any(label.startswith("top") for label in prepared.groupings)
