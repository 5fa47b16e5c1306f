"""A driver that joins or resumes a study waits for a live driver's prepare stage, and takes over a dead one's."""

from __future__ import annotations

import threading
import time

import optuna

from taskgraph.runners.common import wait_for_prepare
from taskgraph.runners.storage import PREPARING, PrepareBeat, preparer_alive


def _study(storage, name):
    return optuna.create_study(storage=storage, study_name=name)


def test_a_resuming_driver_waits_for_a_live_preparer_and_takes_over_from_a_dead_one(storage):
    lines: list[str] = []
    # a live preparer (here a thread of this process) beats until it has prepared the study
    study = _study(storage, "live")
    beat = PrepareBeat(study, interval=0.5).start()

    def finish() -> None:
        time.sleep(2.5)  # longer than the grace period (2 s): only the beat keeps the waiter waiting
        study.set_user_attr("prepared", True)
        beat.stop()

    threading.Thread(target=finish).start()
    t0 = time.monotonic()
    seen = wait_for_prepare(study, storage, lines.append, join=False)
    assert seen.user_attrs.get("prepared") is True and time.monotonic() - t0 >= 2.0
    assert lines == ["resume: waiting for the first driver to finish the prepare stage ..."]

    # a preparer that died: its beat goes stale, and the resuming driver prepares the study itself
    lines.clear()
    dead = _study(storage, "dead")
    PrepareBeat(dead, interval=0.5).start().stop()
    assert preparer_alive(dead)
    time.sleep(2.5)
    assert not preparer_alive(dead) and PREPARING in dead.user_attrs
    seen = wait_for_prepare(dead, storage, lines.append, join=False)
    assert not seen.user_attrs.get("prepared")
    assert lines == ["resume: the driver preparing the study is gone (no beat for over 2 s): preparing it here"]

    # nobody ever began: --resume prepares at once and says nothing; --join first gives a starting driver
    # one grace period to begin
    lines.clear()
    never = _study(storage, "never")
    t0 = time.monotonic()
    wait_for_prepare(never, storage, lines.append, join=False)
    assert time.monotonic() - t0 < 1.0 and lines == []
    wait_for_prepare(never, storage, lines.append, join=True)
    assert time.monotonic() - t0 >= 2.0
    assert lines[0] == "join: waiting for the first driver to finish the prepare stage ..."
