"""The Ray runner's searcher and its error reasons on a real SQLite study (Tune's Searcher API, no Ray cluster)."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace as NS

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

pytest.importorskip("ray.tune")

from ray.tune.search import Searcher

from taskgraph.runners.ray_tune import error_reason, make_searcher
from taskgraph.runners.storage import TrialRecord, artifact_store, open_storage
from taskgraph.search.space import SearchSpace

URL_SECRET = "s3cr3t-in-the-url"


@pytest.fixture
def storage(tmp_path, fast_heartbeat):
    return open_storage(f"sqlite:///{tmp_path / URL_SECRET / 's.db'}")


def _ctx(space: dict, *, multi: bool = False):
    """What the searcher reads of a study context: the space, the tasks, the groupings (one here)."""
    spec = NS(search=NS(loaded=SearchSpace.from_dict(space)), multi_objective=multi, seed=0)
    return NS(spec=spec, task_names=("a", "b"),
              prepared=NS(groupings={"all-in-one": [["a", "b"]]}), grouping_labels=lambda: ["all-in-one"])


LR = {"params": {"lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}}
ONE_CHOICE = {"params": {"weighting": {"type": "categorical", "choices": ["equal"]}}}


def _searcher(tmp_path, storage, space=LR, *, budget=3, name="s", logs=None):
    study = optuna.create_study(storage=storage, study_name=name, sampler=optuna.samplers.RandomSampler(seed=0))
    s = make_searcher(study, _ctx(space), artifact_store(tmp_path / "art"), budget=budget, storage=storage,
                      log=(logs.append if logs is not None else print))
    return s, study


def _record(value: float) -> dict:
    rec = TrialRecord(values=[value], attrs={"val_loss": value}, rows=[{"task": "a", "val_loss": value}],
                      grouping={"label": "all-in-one", "groups": [["a", "b"]]})
    return {"epoch": 3, "finished": 1, "record": json.dumps(rec.to_dict()), "curve": [[3, value]], "node": "n1"}


def test_each_tune_trial_is_one_optuna_trial_closed_with_its_true_state(tmp_path, storage):
    s, study = _searcher(tmp_path, storage, budget=4)
    ids = ["t0", "t1", "t2", "t3"]
    configs = [s.suggest(i) for i in ids]
    assert all(set(c) == {"lr"} for c in configs) and len({c["lr"] for c in configs}) == 4
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.RUNNING] * 4
    assert trials[0].user_attrs["grouping"] == "all-in-one" and "versions" in trials[0].user_attrs

    s.on_trial_result("t0", {"curve": [[1, 0.9], [2, 0.8]]})
    s.on_trial_complete("t0", _record(0.7))  # trained to the end
    s.on_trial_result("t1", {"curve": [[1, 1.5]]})
    s.on_trial_complete("t1", {"epoch": 2, "curve": [[2, 1.4]]})  # ASHA stopped it: no record
    s.on_trial_complete("t2", {"epoch": 1, "failed": 1, "fail_reason": "TrainingDiverged: loss is nan\nmore",
                               "curve": [[1, float("nan")]]})
    s.on_trial_complete("t3", {**_record(0.5), "record": "{not json"})  # recording fails: the trial is not lost
    t0, t1, t2, t3 = study.get_trials()
    assert (t0.state, t0.values, t0.intermediate_values) == (TrialState.COMPLETE, [0.7], {1: 0.9, 2: 0.8, 3: 0.7})
    assert t0.user_attrs["ray_node"] == "n1"
    assert {m.filename for m in get_all_artifact_meta(t0, storage=storage)} == {"trial0_per_task.csv",
                                                                               "trial0_grouping.json"}
    assert (t1.state, t1.intermediate_values) == (TrialState.PRUNED, {1: 1.5, 2: 1.4})
    assert (t2.state, t2.user_attrs["fail_reason"]) == (TrialState.FAIL, "TrainingDiverged: loss is nan")
    assert t3.state == TrialState.FAIL and t3.user_attrs["fail_reason"].startswith("recording failed: JSONDecodeError")
    assert s.suggest("t4") == Searcher.FINISHED  # the budget (4) is held by the four counted trials
    s.on_trial_complete("t0", _record(0.1))  # told once: a second call changes nothing
    assert study.get_trials()[0].values == [0.7]


def test_a_trial_ray_reports_errored_stays_open_until_the_callback_gives_rays_reason(tmp_path, storage):
    s, study = _searcher(tmp_path, storage)
    s.suggest("t0")
    s.on_trial_complete("t0", error=True)  # Tune calls the searcher before its callbacks' on_trial_error
    assert study.get_trials()[0].state == TrialState.RUNNING
    s.fail("t0", "RayTrialError: The actor died unexpectedly before finishing this task.")
    t = study.get_trials()[0]
    assert (t.state, t.user_attrs["fail_reason"]) == (TrialState.FAIL, "RayTrialError: The actor died unexpectedly "
                                                                        "before finishing this task.")


def test_ctrl_c_closes_the_live_trials_as_interrupted_and_they_do_not_count(tmp_path, storage):
    s, study = _searcher(tmp_path, storage, budget=2)
    s.suggest("t0")
    s.suggest("t1")
    s.on_trial_complete("t0", _record(0.4))
    assert s.interrupt("the driver was interrupted") == [1]
    t0, t1 = study.get_trials()
    assert t0.state == TrialState.COMPLETE
    assert (t1.state, t1.user_attrs["fail_reason"]) == (TrialState.FAIL, "interrupted: the driver was interrupted")
    assert s.live == {} and s.interrupt("again") == []
    from taskgraph.runners.storage import count_finished

    assert count_finished(study) == 1


def test_a_repeated_configuration_is_skipped_and_an_exhausted_space_ends_the_search(tmp_path, storage, monkeypatch):
    from taskgraph.runners import ray_tune

    monkeypatch.setattr(ray_tune, "MAX_REPEATS", 5)  # each draw is a SQLite write or three: keep the test fast
    logs: list[str] = []
    s, study = _searcher(tmp_path, storage, ONE_CHOICE, budget=5, logs=logs)
    assert s.suggest("t0") == {"weighting": "equal"}
    assert s.suggest("t1") == Searcher.FINISHED  # the only configuration is running: every draw repeats it
    trials = study.get_trials()
    assert len(trials) == 1 + 5
    assert all(t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "skipped: the sampler proposed "
               "trial 0's configuration again" for t in trials[1:])
    assert any("search space looks exhausted" in line for line in logs)


def test_other_drivers_trials_hold_the_budget_and_a_late_asker_is_skipped(tmp_path, storage):
    s, study = _searcher(tmp_path, storage, budget=1)
    other = optuna.load_study(study_name="s", storage=storage)
    theirs = other.ask()  # another driver's running trial holds the only slot of the budget
    assert s.suggest("t0") is None  # Tune asks again later: the other driver's trial may still be retried here
    other.tell(theirs, 1.0)
    s.next_look = 0.0
    assert s.suggest("t0") == Searcher.FINISHED
    assert len(study.get_trials()) == 1


def test_the_searcher_tune_pickles_holds_no_storage_url(tmp_path, storage):
    s, _ = _searcher(tmp_path, storage)
    s.suggest("t0")
    import cloudpickle  # what Tune pickles the search algorithm with (tuner.pkl)

    blob = cloudpickle.dumps(s)
    assert URL_SECRET.encode() not in blob
    assert pickle.loads(blob).live == {}


def test_error_reason_reads_the_exception_tune_kept_for_the_trial(tmp_path):
    import cloudpickle
    from ray.exceptions import RayTaskError

    missing = NS(pickled_error_file=str(tmp_path / "none.pkl"), get_pickled_error=lambda: None)
    assert error_reason(missing) == "RayTrialError: the Ray trial raised or its worker died; see the Ray logs"
    actor = tmp_path / "actor.pkl"
    actor.write_bytes(cloudpickle.dumps(RuntimeError("The actor died unexpectedly\n\tclass_name: ImplicitFunc")))
    assert error_reason(NS(pickled_error_file=str(actor), get_pickled_error=lambda: None)) == \
        "RayTrialError: The actor died unexpectedly class_name: ImplicitFunc"
    task = RayTaskError("train", "Traceback ...", KeyError("grouping 'x'"))
    synced = NS(pickled_error_file=None, get_pickled_error=lambda: task)  # read back from the trial's storage
    assert error_reason(synced) == "RayTrialError: KeyError: \"grouping 'x'\""
