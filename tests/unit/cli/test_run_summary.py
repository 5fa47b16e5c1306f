"""The run's closing lines give every objective value, named, for multi-objective studies too."""

from __future__ import annotations

from pathlib import Path

from taskgraph.cli.search import _print_summary
from taskgraph.runners.common import RunSummary
from taskgraph.search import StudySpec


def _summary(best, names):
    return RunSummary("s", "sqlite:///s.db", "artifacts", "per_task", {"COMPLETE": len(best)}, best, 1.0, [], names)


def test_one_pareto_trial_shows_every_value_by_name_and_a_front_lists_each_trial(capsys):
    spec = StudySpec.load(Path("studies/star.toml"))
    one = [{"number": 3, "values": [0.5, 0.25], "params": {"lr": 0.01}, "groups": [["a"], ["b"]]}]
    _print_summary(spec, _summary(one, ["a", "b"]))
    out = capsys.readouterr().out
    assert "best trial 3: a=0.5000, b=0.2500 (lower is better)" in out
    front = [{"number": n, "values": [v, 1 - v], "params": {}, "groups": None} for n, v in ((1, 0.2), (4, 0.7))]
    _print_summary(spec, _summary(front, None))  # a study without metric names: value0, value1
    out = capsys.readouterr().out
    assert "Pareto front: 2 trial(s), lower is better" in out
    assert "  trial 1: value0=0.2000, value1=0.8000" in out and "  trial 4: value0=0.7000, value1=0.3000" in out
    assert _summary(one, ["a", "b"]).values_text([0.125]) == "per_task = 0.1250"
