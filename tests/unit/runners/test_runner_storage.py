"""Storage helpers on a real SQLite study: resume bookkeeping, artifacts, CLI storage arguments."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from taskgraph.exceptions import StorageError
from taskgraph.runners.prepare import Prepared, grouping_label
from taskgraph.runners.storage import (
    TrialRecord,
    artifact_store,
    count_finished,
    open_storage,
    record_failure,
    record_success,
    recover_interrupted,
    storage_from_arg,
)


@pytest.fixture
def storage(tmp_path, fast_heartbeat):
    return open_storage(f"sqlite:///{tmp_path / 'sub' / 's.db'}")  # the folder is created


@pytest.fixture
def study(storage):
    return optuna.create_study(storage=storage, study_name="s")


def test_recover_interrupted_fails_unwatched_running_trials_once_and_requeues_their_params(study, storage):
    done = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(done, 1.0)
    pruned = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(pruned, state=TrialState.PRUNED)
    failed = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    record_failure(failed, "TrainingDiverged: loss became non-finite\nsecond line")
    study.tell(failed, state=TrialState.FAIL)
    running = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # no heartbeat: an older driver's
    assert count_finished(study) == 3
    assert recover_interrupted(study, storage) == []  # just asked for: its driver may not have marked it yet
    time.sleep(1.1)  # one heartbeat interval
    assert recover_interrupted(study, storage, resume=False) == []  # only a resume takes it for dead
    assert recover_interrupted(study, storage) == [running.number]
    trials = study.get_trials()
    assert trials[running.number].state == TrialState.FAIL
    assert trials[running.number].user_attrs["fail_reason"].startswith("interrupted:")
    assert trials[failed.number].user_attrs["fail_reason"] == "TrainingDiverged: loss became non-finite"
    assert count_finished(study) == 3  # the interrupted trial does not count
    assert recover_interrupted(study, storage) == []  # idempotent
    retry = study.ask()  # the queued copy comes first, with the same params
    assert retry.suggest_float("x", 0, 1) == trials[running.number].params["x"]
    assert retry.user_attrs["retry_of"] == running.number


def test_record_success_sets_attrs_and_uploads_two_artifacts(study, storage, tmp_path):
    store = artifact_store(tmp_path / "art")
    trial = study.ask()
    rec = TrialRecord(values=[0.5], attrs={"grouping": "all-in-one", "val_loss": 0.5},
                      rows=[{"task": "a", "val_loss": 0.25}, {"task": "b", "val_loss": 0.75}],
                      grouping={"label": "all-in-one", "groups": [["a", "b"]]})
    assert TrialRecord.from_dict(rec.to_dict()) == rec
    record_success(trial, rec, store)
    study.tell(trial, 0.5)
    t = study.get_trials()[0]
    assert t.user_attrs["grouping"] == "all-in-one"
    metas = {m.filename: m for m in get_all_artifact_meta(t, storage=storage)}
    assert set(metas) == {"trial0_per_task.csv", "trial0_grouping.json"}
    text = (tmp_path / "art" / metas["trial0_per_task.csv"].artifact_id).read_text()
    assert text.splitlines() == ["task,val_loss", "a,0.25", "b,0.75"]


def test_storage_arguments(tmp_path):
    db = tmp_path / "x" / "study.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    url, art = storage_from_arg(str(tmp_path / "x"))
    assert url == f"sqlite:///{db}" and art == str(tmp_path / "x" / "artifacts")
    assert storage_from_arg(str(db))[0] == url
    assert storage_from_arg("postgresql://u@h/db") == ("postgresql://u@h/db", None)
    with pytest.raises(StorageError, match="STORAGE must be"):
        storage_from_arg(str(tmp_path / "none.db"))
    with pytest.raises(StorageError, match="must be reachable") as e:
        open_storage("postgresql://u:p@127.0.0.1:1/db", file="s.toml")
    assert "s.toml" in str(e.value) and "storage.url" in str(e.value)


def test_prepared_labels_and_round_trip():
    p = Prepared(("a", "b", "c"), {"all-in-one": [["a", "b", "c"]], "single-task": [["a"], ["b"], ["c"]],
                                   grouping_label(1, [["a", "b"], ["c"]]): [["a", "b"], ["c"]]},
                 {"top1:a+b|c": 0.3}, {}, None, 1.0)
    assert grouping_label(1, [["a", "b"], ["c"]]) == "top1:a+b|c"
    assert p.labels(["all-in-one"], 1) == ["all-in-one", "top1:a+b|c"]
    assert p.labels(["single-task", "all-in-one"], 0) == ["single-task", "all-in-one"]
    assert Prepared.from_attrs(p.to_attrs()) == p
