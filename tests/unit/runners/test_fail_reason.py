"""A trial failed by another driver (its heartbeat stopped) says why, though Optuna closed it without a reason."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from taskgraph.runners.storage import fail_reason, heartbeat, recover_interrupted, retry_map

X = optuna.distributions.FloatDistribution(0, 1)


def test_a_dead_drivers_trial_names_its_retry_and_the_last_one_says_it_was_not_retried(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    numbers = [study.ask({"x": X}).number]
    for _ in range(3):  # the trial and its two retries each lose their driver
        heartbeat(storage, "s", numbers[-1]).start().stop()
        time.sleep(3.2)  # grace 2 s, and SQLite's CURRENT_TIMESTAMP has whole seconds
        recover_interrupted(study, storage, resume=False)
        if any(t.state == TrialState.WAITING for t in study.get_trials()):
            numbers.append(study.ask().number)
    done = study.ask({"x": X})
    study.tell(done, 0.5)
    trials = study.get_trials()
    retries = retry_map(trials)
    assert retries == {numbers[0]: numbers[1], numbers[1]: numbers[2]}
    lost = "driver lost: its heartbeat stopped (the driver or its node died)"
    assert [fail_reason(trials[n], retries) for n in numbers] == [
        f"{lost}; retried as trial {numbers[1]}", f"{lost}; retried as trial {numbers[2]}",
        f"{lost}; not retried (it was retried 2 times already)"]
    assert fail_reason(trials[numbers[0]]) == lost  # without the study's trials: no claim about retries
    assert fail_reason(trials[done.number], retries) is None  # COMPLETE: no reason
