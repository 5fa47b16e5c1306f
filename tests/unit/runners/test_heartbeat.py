"""Dead-driver detection on a real SQLite study: Optuna's heartbeat decides which RUNNING trials are orphans."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from taskgraph.exceptions import ConfigError
from taskgraph.runners.storage import (
    HEARTBEAT_MARK,
    budget_ahead,
    count_finished,
    fail_reason,
    heartbeat,
    heartbeat_settings,
    interrupted_numbers,
    others_running,
    recover_interrupted,
    retry_map,
)

X = optuna.distributions.FloatDistribution(0, 1)


def _recover_past_grace(study, storage, **kw) -> list[int]:
    """``recover_interrupted`` once a heartbeat has gone stale: called until it fails a trial, for at most 3.2 s (the
    grace is 2 s, and SQLite's CURRENT_TIMESTAMP has whole seconds: a beat is stale 2 to 3 s after it was recorded;
    a fixed 3.2 s wait cost 0.7 s more on average). Before the grace it fails nothing and changes nothing."""
    deadline = time.monotonic() + 3.2
    while True:
        last = time.monotonic() >= deadline  # the last call comes 3.2 s after the beat at the earliest, as before
        failed = recover_interrupted(study, storage, **kw)
        if failed or last:
            return failed
        time.sleep(0.1)


def test_a_beating_trial_is_left_alone_and_a_silent_one_is_failed_and_retried_once(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    done = study.ask({"x": X})
    study.tell(done, 0.5)
    live, dead = study.ask({"x": X}), study.ask({"x": X})
    beat_live = heartbeat(storage, "s", live.number).start()
    heartbeat(storage, "s", dead.number).start().stop()  # its driver beat once, then died
    assert study.trials[live.number].system_attrs[HEARTBEAT_MARK] == 1
    assert others_running(study) == [live.number, dead.number]  # both are watched by a heartbeat
    assert _recover_past_grace(study, storage) == [dead.number]
    trials = study.get_trials()
    assert trials[live.number].state == TrialState.RUNNING  # a live driver is never disturbed
    assert trials[dead.number].state == TrialState.FAIL
    assert interrupted_numbers(trials) == {dead.number}
    assert count_finished(study) == 1 and budget_ahead(study) == 2  # the dead trial holds nothing
    assert recover_interrupted(study, storage) == []  # idempotent
    retry = study.ask()  # its configuration comes first
    assert retry.suggest_float("x", 0, 1) == dead.params["x"] and retry.user_attrs["retry_of"] == dead.number
    study.tell(retry, 0.25)
    assert study.tell(live, 0.75).state == TrialState.COMPLETE  # the live driver finishes untouched
    beat_live.stop()
    assert count_finished(study) == 3


def test_a_trial_whose_driver_died_three_times_counts_as_failed(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    first = study.ask({"x": X})
    numbers = [first.number]
    for _ in range(3):  # the trial and its two retries each lose their driver
        heartbeat(storage, "s", numbers[-1]).start().stop()
        assert _recover_past_grace(study, storage, resume=False) == [numbers[-1]]
        waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
        if len(numbers) == 3:
            assert waiting == []  # MAX_RETRY = 2 retries: no third
            break
        numbers.append(study.ask().number)
    assert count_finished(study) == 1  # the last one counts: the configuration failed, not only its drivers
    trials = study.get_trials()
    assert interrupted_numbers(trials) == set(numbers[:2])
    # each says why, though Optuna closed it without a reason: its retry, or that there was none
    retries = retry_map(trials)
    assert retries == {numbers[0]: numbers[1], numbers[1]: numbers[2]}
    lost = "driver lost: its heartbeat stopped (the driver or its node died)"
    assert [fail_reason(trials[n], retries) for n in numbers] == [
        f"{lost}; retried as trial {numbers[1]}", f"{lost}; retried as trial {numbers[2]}",
        f"{lost}; not retried (it was retried 2 times already)"]
    assert fail_reason(trials[numbers[0]]) == lost  # without the study's trials: no claim about retries
    done = study.ask({"x": X})
    assert fail_reason(study.tell(done, 0.5), retries) is None  # not failed: no reason


def test_the_live_driver_can_still_tell_a_trial_another_driver_failed(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask({"x": X})
    heartbeat(storage, "s", trial.number).start().stop()
    assert _recover_past_grace(study, storage, resume=False) == [trial.number]
    frozen = study.tell(trial, 1.0, skip_if_finished=True)  # what the local runner does: no ValueError
    assert frozen.state == TrialState.FAIL


@pytest.mark.parametrize(("interval", "grace", "match"), [
    ("0", "60", "TASKGRAPH_HEARTBEAT_S must be a whole number of seconds >= 1; got '0'"),
    ("ten", "60", "TASKGRAPH_HEARTBEAT_S must be a whole number"),
    ("10", "10", "TASKGRAPH_HEARTBEAT_GRACE_S must exceed TASKGRAPH_HEARTBEAT_S"),
])
def test_heartbeat_settings_refuse_what_cannot_work(monkeypatch, interval, grace, match):
    monkeypatch.setenv("TASKGRAPH_HEARTBEAT_S", interval)
    monkeypatch.setenv("TASKGRAPH_HEARTBEAT_GRACE_S", grace)
    with pytest.raises(ConfigError, match=match):
        heartbeat_settings()


def test_a_retry_does_not_inherit_the_dead_trials_artifacts(storage, tmp_path):
    """A driver killed after its trial uploaded artifacts, before the trial was told: the retry starts clean."""
    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

    from taskgraph.runners.storage import ARTIFACT_LINK_PREFIX

    store = FileSystemArtifactStore(str(tmp_path))
    study = optuna.create_study(storage=storage, study_name="s")
    dead = study.ask({"x": X})
    f = tmp_path / "per_task.csv"
    f.write_text("task,loss\nt0,0.5\n")
    upload_artifact(artifact_store=store, file_path=str(f), study_or_trial=dead, storage=storage)
    # canary: Optuna links an artifact to its trial by a system attr with this prefix (the retry drops those)
    assert any(k.startswith(ARTIFACT_LINK_PREFIX) for k in study.trials[dead.number].system_attrs)
    heartbeat(storage, "s", dead.number).start().stop()
    assert _recover_past_grace(study, storage) == [dead.number]
    retry = study.ask()
    assert retry.user_attrs["retry_of"] == dead.number
    assert get_all_artifact_meta(study.trials[retry.number], storage=storage) == []
    assert [m.filename for m in get_all_artifact_meta(study.trials[dead.number], storage=storage)] == ["per_task.csv"]
