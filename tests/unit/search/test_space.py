"""Search spaces: shipped files load; conditionals and per-task params hold; bad files fail with file + key."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from taskgraph.exceptions import ConfigError
from taskgraph.search import SearchSpace

ROOT = Path(__file__).resolve().parents[3]
SPACES = sorted((ROOT / "search_spaces").glob("*.toml"))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_load(path):
    space = SearchSpace.load(path)
    assert space.params
    assert len(set(space.names())) == len(space.names())


def _sample(space, n=60, tasks=("a", "b", "c"), groupings=("all-in-one", "single-task")):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.suggest(trial, tasks=tasks, groupings=groupings))
        study.tell(trial, 0.0)
    return out


def test_conditional_params_only_when_their_parent_matches():
    space = SearchSpace.load(ROOT / "search_spaces" / "default.toml")
    samples = _sample(space)
    assert {s["topology"] for s in samples} >= {"hard", "branched"}
    for s in samples:
        assert ("branch_depth" in s) == (s["topology"] == "branched")
        assert ("n_experts" in s) == (s["topology"] == "mmoe")
        assert 1e-3 <= s["lr"] <= 3e-2
        assert s["grouping"] in ("all-in-one", "single-task")


def test_per_task_params_and_resolve():
    space = SearchSpace.from_dict({"params": {
        "topology": {"type": "categorical", "choices": ["hard", "branched"]},
        "depth": {"type": "int", "low": 1, "high": 2, "target": "topology.branch_depths",
                  "when": {"topology": "branched"}},
        "head_hidden": {"type": "int", "low": 0, "high": 8, "target": "topology.head_hidden", "per_task": False},
        "lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
    }})
    for s in _sample(space, n=20):
        cfg = space.resolve(s)
        assert cfg.train["lr"] == s["lr"]
        assert cfg.topology == s["topology"]
        assert ("branch_depths" in cfg.topology_params) == (s["topology"] == "branched")
    # a per-task parameter becomes {task: value}; only a consumer that takes such a mapping may be its
    # target (fixed loss weights do; a topology's head_hidden does not, and is refused at load)
    per = SearchSpace.from_dict({"params": {
        "weighting": {"type": "categorical", "choices": ["fixed"]},
        "w": {"type": "float", "low": 0.5, "high": 2.0, "target": "weighting.weights", "per_task": True}}})
    s = _sample(per, n=1, tasks=("x", "y"))[0]
    assert set(s) == {"weighting", "w.x", "w.y"}
    assert per.resolve(s).weighting_params["weights"] == {"x": s["w.x"], "y": s["w.y"]}
    with pytest.raises(ConfigError, match="topology 'hard' accepts for 'head_hidden'"):
        SearchSpace.from_dict({"params": {
            "topology": {"type": "categorical", "choices": ["hard"]},
            "hh": {"type": "int", "low": 0, "high": 4, "target": "topology.head_hidden", "per_task": True}}})


def test_a_space_is_picklable_for_ray_and_suggests_after_the_round_trip():
    import pickle

    space = pickle.loads(pickle.dumps(SearchSpace.load(ROOT / "search_spaces" / "default.toml")))
    study = optuna.create_study()
    t = study.ask()
    values = space.suggest(t, tasks=("a",), groupings=("all-in-one",))
    assert "lr" in t.params and values["lr"] == t.params["lr"]


BAD = [
    ({}, "params", "is required"),
    ({"params": {"lr": {"low": 0.1, "high": 1.0}}}, "params.lr.type", "is required"),
    ({"params": {"lr": {"type": "float", "low": "small", "high": 1.0}}}, "params.lr.low", "must be a number"),
    ({"params": {"lr": {"type": "float", "low": 1.0, "high": 0.1}}}, "params.lr.high", "'low < high' must hold"),
    ({"params": {"lr": {"type": "float", "low": 0.1, "high": 0.1}}}, "params.lr.high", "empty or inverted"),
    ({"params": {"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "params.lr.low", "low > 0"),
    ({"params": {"lr": {"type": "gaussian", "low": 0.0, "high": 0.1}}}, "params.lr.type", "must be one of"),
    ({"params": {"topology": {"type": "categorical", "choices": ["hard", "star"]}}}, "params.topology.choices",
     "unknown topology 'star'; valid:"),
    ({"params": {"weighting": {"type": "categorical", "choices": ["magic"]}}}, "params.weighting.choices",
     "unknown weighting 'magic'; valid:"),
    ({"params": {"topology": {"type": "categorical", "choices": []}}}, "params.topology.choices", "must not be empty"),
    ({"params": {"x": {"type": "float", "low": 0.0, "high": 1.0}}}, "params.x.target", "is required"),
    ({"params": {"x": {"type": "float", "low": 0.0, "high": 1.0, "target": "model.x"}}}, "params.x.target",
     "'target' must be"),
    ({"params": {"lr": {"type": "float", "low": 0.1, "high": 1.0, "when": {"topology": "hard"}}}}, "params.lr.when",
     "declared before"),
    ({"params": {"topology": {"type": "categorical", "choices": ["hard"]},
                 "d": {"type": "int", "low": 1, "high": 2, "target": "topology.branch_depths",
                       "when": {"topology": "branched"}}}}, "params.d.when", "must hold choices of 'topology'"),
    ({"params": {"topology": {"type": "categorical", "choices": ["hard"]},
                 "d": {"type": "int", "low": 1, "high": 2, "target": "topology.n_experts"}}}, "params.d.target",
     "topology 'hard' takes parameters"),
    ({"params": {"lr": {"type": "float", "low": 0.1, "high": 1.0, "lgo": True}}}, "params.lr.lgo", "unknown key"),
    ({"params": {"grouping": {"type": "grouping", "references": ["everything"]}}}, "params.grouping.references",
     "may hold"),
]


@pytest.mark.parametrize(("data", "key", "expect"), BAD, ids=[b[1] + ":" + b[2][:12] for b in BAD])
def test_bad_space_names_file_key_and_expectation(data, key, expect):
    with pytest.raises(ConfigError) as e:
        SearchSpace.from_dict(data, file="space.toml")
    msg = str(e.value)
    assert "\n" not in msg
    assert expect in msg
    assert e.value.file == "space.toml" and e.value.key == key, msg


def test_bad_toml_syntax_names_the_file(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("[params.lr\ntype = 'float'")
    with pytest.raises(ConfigError, match="valid TOML") as e:
        SearchSpace.load(p)
    assert e.value.file == str(p)


@pytest.mark.parametrize(("target", "choice", "low", "high", "where"), [
    ("n_experts", "mmoe", 2, 10**8, "high"),
    ("head_hidden", "mmoe", 0, 10**7, "high"),
    ("head_hidden", "hard", 0, 65_537, "high"),
    ("branch_depths", "branched", 65, 70, "low"),
])
def test_topology_sizes_beyond_what_builds_in_memory_are_refused_at_load(target, choice, low, high, where):
    import time

    data = {"params": {"topology": {"type": "categorical", "choices": [choice]},
                       "x": {"type": "int", "low": low, "high": high, "target": f"topology.{target}"}}}
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"'params\.x\.{where}' must lie in \[\d+, \d+\] for 'topology\.{target}' "
                                          rf".*reasonable memory.*got \d+ \[space\.toml, key 'params\.x\.{where}'\]"):
        SearchSpace.from_dict(data, file="space.toml")
    assert time.perf_counter() - t0 < 5


def test_topology_sizes_at_their_bounds_load():
    from taskgraph.search.space import TOPOLOGY_BOUNDS

    space = SearchSpace.from_dict({"params": {
        "topology": {"type": "categorical", "choices": ["mmoe"]},
        "n_experts": {"type": "int", "low": 1, "high": TOPOLOGY_BOUNDS["n_experts"][1], "target": "topology.n_experts"},
        "head_hidden": {"type": "categorical", "choices": [0, TOPOLOGY_BOUNDS["head_hidden"][1]],
                        "target": "topology.head_hidden"},
    }}, file="space.toml")
    assert [p.name for p in space.params] == ["topology", "n_experts", "head_hidden"]
