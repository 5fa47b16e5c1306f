"""Study files: shipped ones load; bad ones fail with one line naming file, key and expectation."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from pathlib import Path

import pytest

from taskgraph.exceptions import ConfigError
from taskgraph.grouping import ExactSolver, ScalableSolver
from taskgraph.search import StudySpec
from taskgraph.search.study import FLAT

ROOT = Path(__file__).resolve().parents[3]
STUDIES = sorted((ROOT / "studies").glob("*.toml"))
SPACE = str(ROOT / "search_spaces" / "default.toml")


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_shipped_studies_load(path, tmp_path):
    spec = StudySpec.load(path, runs_root=tmp_path)
    assert spec.trials >= 1 and spec.epochs >= 1
    assert spec.storage_url == f"sqlite:///{tmp_path.resolve() / spec.name / 'study.db'}"
    assert spec.artifacts_dir == str(tmp_path.resolve() / spec.name / "artifacts")


def test_names_of_the_issue_ship():
    assert {p.stem for p in STUDIES} >= {"quickstart", "planted-clusters", "yeast", "star"}


def _good() -> dict:
    return {"dataset": {"name": "planted-clusters", "options": {"n_tasks": 4, "n_clusters": 2}},
            "search": {"space": SPACE}, "budget": {"trials": 3, "epochs": 2}}


def test_defaults_and_overrides(tmp_path):
    spec = StudySpec.from_dict(_good(), file="s.toml", default_name="s", runs_root=tmp_path,
                               storage="postgresql://u@h/db")
    assert spec.name == "s" and spec.objective == "val_loss" and spec.sampler == "tpe"
    assert spec.storage_url == "postgresql://u@h/db"
    assert spec.directions(4) == ("minimize",)
    spec2 = StudySpec.from_dict({**_good(), "search": {"space": SPACE, "objective": "per_task"},
                                 "budget": {"trials": 2, "epochs": 2, "early_stopping": "none"}})
    assert spec2.directions(3) == ("minimize",) * 3
    assert spec.fingerprint() != spec2.fingerprint()
    cfg = spec.train_config({"lr": 0.01})
    assert cfg.lr == 0.01 and cfg.epochs == 2


def _set(d: dict, dotted: str, value) -> dict:
    *path, last = dotted.split(".")
    cur = d
    for p in path:
        cur = cur.setdefault(p, {})
    if value is _DEL:
        del cur[last]
    else:
        cur[last] = value
    return d


class _Deleted:
    """The key is removed: a sentinel whose repr is the same in every process (pytest-xdist's workers must
    collect the same test ids)."""

    def __repr__(self) -> str:
        return "<deleted>"


_DEL = _Deleted()

BAD = [
    ("dataset.name", _DEL, "dataset.name", "is required"),
    ("dataset.name", 3, "dataset.name", "must be a string"),
    ("dataset.name", "mnist", "dataset.name", "unknown dataset 'mnist'; valid:"),
    ("dataset.options.n_taks", 4, "dataset.options.n_taks", "takes options"),
    ("budget.trials", "ten", "budget.trials", "must be an int"),
    ("budget.trials", 0, "budget.trials", "must be >= 1"),
    ("budget.grace_epochs", 5, "budget.grace_epochs", "<= 'budget.epochs'"),
    ("budget.wall_time_s", -1, "budget.wall_time_s", "must be > 0"),
    ("search.objective", "accuracy", "search.objective", "must be one of val_loss, delta_m, per_task"),
    ("search.sampler", "annealing", "search.sampler", "unknown sampler 'annealing'; valid:"),
    ("search.space", "nowhere.toml", "search.space", "must point to a search-space file"),
    ("search", _DEL, "search", "is required"),
    ("trunk.hidden", [], "trunk.hidden", "must not be empty"),
    ("trunk.kind", "transformer", "trunk.kind", "must be one of mlp, cnn"),
    ("train.lr", -1.0, "train.lr", "'lr' must be finite and > 0"),
    ("train.epochs", 3, "train.epochs", "set by the study"),
    ("storage.url", "study.db", "storage.url", "must be an Optuna RDB URL"),
    ("resources.cpus", 0, "resources.cpus", "must be > 0"),
    ("runner.backend", "slurm", "runner.backend", "must be one of local, ray"),
    ("bugdet", {"trials": 3}, "bugdet", "unknown key"),
    ("grouping.solver", "greedy", "grouping.solver", "must be one of auto, exact, scalable, hierarchy"),
    ("grouping.time_limit", 0, "grouping.time_limit", "must be > 0.0"),
    ("grouping.time_limit", "1m", "grouping.time_limit", "must be a number"),
    ("grouping.fallback", "retry", "grouping.fallback", "must be one of scalable, raise"),
    ("grouping.timelimit", 5, "grouping.timelimit", "unknown key"),
]


@pytest.mark.parametrize(("dotted", "value", "key", "expect"), BAD, ids=[f"{b[0]}={b[1]!r}"[:40] for b in BAD])
def test_bad_study_names_file_key_and_expectation(dotted, value, key, expect):
    with pytest.raises(ConfigError) as e:
        StudySpec.from_dict(_set(_good(), dotted, value), file="study.toml")
    msg = str(e.value)
    assert "\n" not in msg
    assert expect in msg, msg
    assert e.value.file == "study.toml" and e.value.key == key, msg
    assert "study.toml" in msg and repr(key) in msg


def test_a_bad_search_space_file_is_named(tmp_path):
    space = tmp_path / "bad_space.toml"
    space.write_text('[params.lr]\ntype = "float"\nlow = 1.0\nhigh = 0.1\n')
    d = _good()
    d["search"]["space"] = str(space)
    with pytest.raises(ConfigError) as e:
        StudySpec.from_dict(d, file="study.toml")
    assert e.value.file == str(space) and e.value.key == "params.lr.high"


# --- the typed sections -----------------------------------------------------------------------------

def test_sections_are_frozen_and_hold_no_mutable_tables(tmp_path):
    spec = StudySpec.from_dict({**_good(), "train": {"lr": 0.01, "betas": [0.9, 0.99]}}, file="s.toml",
                               runs_root=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.budget.trials = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.budget = spec.budget  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.data.options["n_tasks"] = 9  # type: ignore[index]
    assert spec.train.overrides["betas"] == (0.9, 0.99) and spec.trunk.hidden == (256, 128)
    # the mapping view (what the flat readers of before index) gives plain values
    assert spec.train["betas"] == [0.9, 0.99] and spec.trunk["hidden"] == [256, 128]
    assert pickle.loads(pickle.dumps(spec)) == spec and hash(spec) == hash(pickle.loads(pickle.dumps(spec)))


def test_flat_attributes_read_through_to_the_sections(tmp_path):
    spec = StudySpec.from_dict(_good(), file="s.toml", runs_root=tmp_path)
    for flat, (section, attr) in FLAT.items():
        got, want = getattr(spec, flat), getattr(getattr(spec, section), attr)
        assert got == want or (isinstance(want, Mapping) and got == dict(want)), flat
    assert spec.dataset == "planted-clusters" and spec.dataset_options == {"n_tasks": 4, "n_clusters": 2}
    assert type(spec.dataset_options) is dict  # a plain copy, as before (it is JSON-dumped)
    with pytest.raises(AttributeError):
        spec.trials = 3  # type: ignore[misc]


def test_replace_by_flat_name_is_validated_by_its_section(tmp_path):
    spec = StudySpec.from_dict(_good(), file="study.toml", runs_root=tmp_path)
    fewer = dataclasses.replace(spec, trials=2)  # how the CLI's --trials applies
    assert fewer.trials == fewer.budget.trials == 2 and spec.trials == 3 and fewer.data == spec.data
    assert spec.replace(concurrent=4).resources.concurrent == 4
    with pytest.raises(ConfigError, match="'budget.trials' must be >= 1, got 0") as e:
        dataclasses.replace(spec, trials=0)
    assert e.value.file == "study.toml" and e.value.key == "budget.trials"
    with pytest.raises(TypeError, match="no field or flat attribute 'trails'"):
        spec.replace(trails=2)


def test_grouping_settings_reach_the_solver(tmp_path):
    spec = StudySpec.from_dict({**_good(), "grouping": {"solver": "exact", "time_limit": 30, "fallback": "raise"}},
                               file="s.toml", runs_root=tmp_path)
    slv = spec.grouping.make_solver(14)
    assert isinstance(slv, ExactSolver) and (slv.time_limit, slv.fallback) == (30.0, "raise")
    assert spec.grouping.solver_params() == {"time_limit": 30.0, "fallback": "raise"}
    auto = StudySpec.from_dict({**_good(), "grouping": {"time_limit": 5}}, file="s.toml", runs_root=tmp_path)
    assert isinstance(auto.grouping.make_solver(30), ScalableSolver) and auto.grouping.make_solver(30).time_limit == 5
    assert spec.to_dict()["grouping"] == {"solver": "exact", "time_limit": 30.0, "fallback": "raise"}


@pytest.mark.parametrize(("table", "key", "match"), [
    ({"solver": "hierarchy", "time_limit": 5}, "grouping.time_limit", "applies to the exact and scalable solvers"),
    ({"solver": "scalable", "fallback": "raise"}, "grouping.fallback", "applies to the exact solver"),
])
def test_grouping_settings_the_solver_does_not_take_are_refused(table, key, match, tmp_path):
    with pytest.raises(ConfigError, match=match) as e:
        StudySpec.from_dict({**_good(), "grouping": table}, file="study.toml", runs_root=tmp_path)
    assert e.value.key == key and e.value.file == "study.toml"


def test_the_fingerprint_keeps_its_value_for_default_grouping_settings(tmp_path):
    base = StudySpec.from_dict(_good(), file="s.toml", runs_root=tmp_path)
    timed = StudySpec.from_dict({**_good(), "grouping": {"solver": "auto", "time_limit": 60}}, file="s.toml",
                                runs_root=tmp_path)
    other = StudySpec.from_dict({**_good(), "grouping": {"solver": "scalable"}}, file="s.toml", runs_root=tmp_path)
    assert base.fingerprint() == timed.fingerprint() != other.fingerprint()
