"""Validation before anything is written: storage, encodings, dataset options, seeds, search-space ranges,
duplicate targets, affinity estimators. Every refusal is one ConfigError line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskgraph.exceptions import ConfigError, TaskGraphError
from taskgraph.search import SearchSpace, StudySpec

ROOT = Path(__file__).resolve().parents[3]
SPACE = str(ROOT / "search_spaces" / "default.toml")


def _good(**sections) -> dict:
    d = {"dataset": {"name": "planted-clusters", "options": {"n_tasks": 4, "n_clusters": 2}},
         "search": {"space": SPACE}, "budget": {"trials": 3, "epochs": 2}}
    d.update(sections)
    return d


def _refused(data: dict, key: str, match: str, tmp_path: Path, **kw) -> ConfigError:
    with pytest.raises(ConfigError, match=match) as e:
        StudySpec.from_dict(data, file="study.toml", runs_root=tmp_path / "runs", **kw)
    msg = str(e.value)
    assert "\n" not in msg and e.value.file == "study.toml" and e.value.key == key, msg
    assert f"key {key!r}" in msg and "study.toml" in msg
    assert not (tmp_path / "runs").exists()
    return e.value


# --- storage ------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///", "sqlite+pysqlite://"])
def test_in_memory_sqlite_is_refused(url, tmp_path):
    _refused(_good(storage={"url": url}), "storage.url", "in-memory SQLite database", tmp_path)
    _refused(_good(), "storage.url", "must name a database that outlives the driver", tmp_path, storage=url)


# --- files ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01binary", "name = 'caf\u00e9'\n".encode("latin-1"),
                                     bytes(range(256))], ids=["binary", "latin-1", "all-bytes"])
def test_a_non_utf8_study_file_is_one_line_naming_it(content, tmp_path):
    path = tmp_path / "study.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="must be UTF-8 text") as e:
        StudySpec.load(path, runs_root=tmp_path / "runs")
    assert "\n" not in str(e.value) and e.value.file == str(path)
    assert not (tmp_path / "runs").exists()


def test_a_non_utf8_search_space_is_one_line_naming_it(tmp_path):
    space = tmp_path / "space.toml"
    space.write_bytes(b'[params.lr]\ntype = "float"\n# \xe9t\xe9\n')
    with pytest.raises(ConfigError, match="must be UTF-8 text") as e:
        StudySpec.from_dict(_good(search={"space": str(space)}), file="study.toml", runs_root=tmp_path / "runs")
    assert e.value.file == str(space) and "\n" not in str(e.value)


# --- dataset options and seeds ----------------------------------------------------------------

BAD_OPTIONS = [
    ("n_tasks", 0, "must be an int in \\[1, 10000\\]"),
    ("n_tasks", -3, "must be an int in \\[1, 10000\\]"),
    ("n_tasks", 2**63 - 1, "must be an int in \\[1, 10000\\]"),  # used to hang
    ("n_tasks", 10_001, "must be an int in \\[1, 10000\\]"),
    ("n_tasks", 4.0, "must be an int"),
    ("n_tasks", True, "must be an int"),
    ("n_samples", 0, "must be an int in \\[10, 10000000\\]"),
    ("n_samples", -400, "must be an int in \\[10, 10000000\\]"),
    ("n_samples", 10**9, "must be an int in \\[10, 10000000\\]"),
    ("seed", -1, "must be an int in \\[0, 4294967295\\]"),
    ("seed", 2**32, "must be an int in \\[0, 4294967295\\]"),
    ("seed", 2**63, "must be an int in \\[0, 4294967295\\]"),
    ("dim", 0, "must be an int in \\[1, 100000\\]"),
    ("noise", float("nan"), "must be a finite number"),
    ("within", "high", "must be a finite number"),
    ("relation", 3, "must be a string"),
    ("rank", 40, "'rank <= dim' must hold"),  # dim defaults to 32
    ("dim", 100_000, "n_samples × dim <= 200,000,000' must hold"),  # n_samples defaults to 3000
]


@pytest.mark.parametrize(("option", "value", "match"), BAD_OPTIONS,
                         ids=[f"{o}={v!r}"[:30] for o, v, _ in BAD_OPTIONS])
def test_dataset_options_are_bounded(option, value, match, tmp_path):
    data = _good()
    data["dataset"]["options"][option] = value
    _refused(data, f"dataset.options.{option}", match, tmp_path)


def test_the_bounds_themselves_are_accepted(tmp_path):
    data = _good()
    data["dataset"]["options"].update(n_samples=10, seed=2**32 - 1, dim=8, rank=8)
    spec = StudySpec.from_dict({**data, "seed": 2**32 - 1}, file="study.toml", runs_root=tmp_path)
    assert spec.seed == 2**32 - 1 and spec.dataset_options["seed"] == 2**32 - 1


@pytest.mark.parametrize("seed", [-1, 2**32, 2**63])
def test_the_study_seed_must_fit_numpy_and_torch(seed, tmp_path):
    _refused({**_good(), "seed": seed}, "seed", "must be (>= 0|<= 4294967295)", tmp_path)


def test_train_betas_must_be_two_numbers_below_one(tmp_path):
    _refused(_good(train={"betas": [0.9]}), "train.betas", "two numbers in \\[0, 1\\)", tmp_path)
    _refused(_good(train={"betas": [0.9, 1.5]}), "train.betas", "two numbers in \\[0, 1\\)", tmp_path)


def test_bad_sampler_option_values_are_one_line(tmp_path):
    _refused(_good(search={"space": SPACE, "sampler_options": {"n_startup_trials": "x"}}),
             "search.sampler_options", "does not take these options", tmp_path)


# --- affinity -----------------------------------------------------------------------------------

def test_an_unknown_affinity_estimator_is_refused_at_load(tmp_path):
    err = _refused(_good(affinity={"estimator": "exactt"}), "affinity.estimator", "exactt", tmp_path)
    assert all(name in str(err) for name in ("exact", "first_order", "cosine")), str(err)  # the valid names


# --- search-space ranges against what training, topologies and weightings accept -----------------

def _space_refused(text: str, key: str, match: str, tmp_path: Path) -> ConfigError:
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        SearchSpace.load(path)
    assert "\n" not in str(e.value) and e.value.file == str(path) and e.value.key == key, str(e.value)
    return e.value


BAD_RANGES = [
    ('[params.batch_size]\ntype = "int"\nlow = 0\nhigh = 64\n', "params.batch_size.low", "batch_size"),
    ('[params.batch_size]\ntype = "float"\nlow = 16\nhigh = 64\n', "params.batch_size.low", "must be an int"),
    ('[params.weight_decay]\ntype = "float"\nlow = -0.001\nhigh = 0.01\n', "params.weight_decay.low", ">= 0"),
    ('[params.lr]\ntype = "float"\nlow = 0.0\nhigh = 0.1\n', "params.lr.low", "'lr' must be finite and > 0"),
    ('[params.momentum]\ntype = "float"\nlow = 0.5\nhigh = 1.0\n', "params.momentum.high", "momentum"),
    ('[params.optimizer]\ntype = "categorical"\nchoices = ["adam", "rmsprop"]\n', "params.optimizer.choices",
     "rmsprop"),
    ('[params.topology]\ntype = "categorical"\nchoices = ["mmoe"]\n'
     '[params.n_experts]\ntype = "int"\nlow = 0\nhigh = 4\ntarget = "topology.n_experts"\n',
     "params.n_experts.low", "topology 'mmoe' accepts .*'n_experts' must be an int >= 1"),
    ('[params.topology]\ntype = "categorical"\nchoices = ["hard", "branched"]\n'
     '[params.depth]\ntype = "int"\nlow = -1\nhigh = 2\ntarget = "topology.branch_depths"\n'
     'when = { topology = "branched" }\n', "params.depth.low", "branch_depths"),
    ('[params.weighting]\ntype = "categorical"\nchoices = ["dwa"]\n'
     '[params.t]\ntype = "float"\nlow = 0.0\nhigh = 2.0\ntarget = "weighting.temperature"\n',
     "params.t.low", "weighting 'dwa' accepts .*temperature"),
    ('[params.weighting]\ntype = "categorical"\nchoices = ["equal", "fixed"]\n'
     '[params.w]\ntype = "float"\nlow = -1.0\nhigh = 2.0\nper_task = true\ntarget = "weighting.weights"\n'
     'when = { weighting = "fixed" }\n', "params.w.low", "weight must be finite and >= 0"),
]


@pytest.mark.parametrize(("text", "key", "match"), BAD_RANGES, ids=[b[1] for b in BAD_RANGES])
def test_ranges_training_would_refuse_are_refused_at_load(text, key, match, tmp_path):
    _space_refused(text, key, match, tmp_path)


def test_ranges_training_accepts_load(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[params.batch_size]\ntype = "int"\nlow = 1\nhigh = 64\n'
                    '[params.optimizer]\ntype = "categorical"\nchoices = ["sgd", "adam"]\n'
                    '[params.nesterov]\ntype = "categorical"\nchoices = [true, false]\n'  # valid with sgd
                    '[params.weight_decay]\ntype = "float"\nlow = 0.0\nhigh = 0.01\n')
    assert SearchSpace.load(path).names() == ["batch_size", "optimizer", "nesterov", "weight_decay"]


def test_two_parameters_with_one_target_are_refused(tmp_path):
    err = _space_refused('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.1\n'
                         '[params.lr2]\ntype = "float"\nlow = 0.01\nhigh = 0.1\ntarget = "train.lr"\n',
                         "params.lr2.target", "one target must be set by one parameter", tmp_path)
    assert "'lr'" in str(err) and "'lr2'" in str(err) and "'train.lr'" in str(err)


def test_one_target_under_exclusive_conditions_is_accepted(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[params.optimizer]\ntype = "categorical"\nchoices = ["sgd", "adam"]\n'
                    '[params.lr_sgd]\ntype = "float"\nlow = 0.01\nhigh = 0.1\ntarget = "train.lr"\n'
                    'when = { optimizer = "sgd" }\n'
                    '[params.lr_adam]\ntype = "float"\nlow = 0.0001\nhigh = 0.01\ntarget = "train.lr"\n'
                    'when = { optimizer = "adam" }\n')
    assert SearchSpace.load(path).names() == ["optimizer", "lr_sgd", "lr_adam"]
    _space_refused(path.read_text().replace('when = { optimizer = "adam" }\n', ""), "params.lr_adam.target",
                   "both set 'train.lr'", tmp_path)


def test_every_refusal_is_the_projects_own_error():
    assert issubclass(ConfigError, TaskGraphError)


# --- what the fuzz test (test_fuzz_files.py) found ------------------------------------------------

FUZZ_FOUND = [
    # ints beyond the floats: float() raised OverflowError
    ({"budget": {"trials": 3, "epochs": 2, "wall_time_s": 2**1100}}, "budget.wall_time_s", "must be finite"),
    ({"train": {"lr": 2**1100}}, "train.lr", "must be finite"),
    ({"resources": {"cpus": 2**1100}}, "resources.cpus", "must be finite"),
    ({"affinity": {"z": 2**1100}}, "affinity.z", "must be finite"),
    ({"dataset": {"name": "planted-clusters", "options": {"n_tasks": 4, "noise": 2**1100}}},
     "dataset.options.noise", "must be a finite number"),
    # NaN passed the samplers' own checks
    ({"search": {"space": SPACE, "sampler_options": {"n_startup_trials": float("nan")}}},
     "search.sampler_options.n_startup_trials", "must be finite"),
    # [train] values of the wrong TOML type were accepted (a string is truthy) or failed in TrainConfig
    ({"train": {"nesterov": "yes"}}, "train.nesterov", "must be true or false"),
    ({"train": {"restore_best": 1}}, "train.restore_best", "must be true or false"),
    ({"train": {"batch_size": 2**63}}, "train.batch_size", "must be <= 2147483647"),
    ({"train": {"optimizer": 3}}, "train.optimizer", "must be a string"),
    # sizes no run can reach (or that overflow Ray's and torch's int64)
    ({"budget": {"trials": 2**63, "epochs": 2}}, "budget.trials", "must be <= 1000000"),
    ({"trunk": {"hidden": [10**9]}}, "trunk.hidden", "at most 64 widths in \\[1, 65536\\]"),
    ({"resources": {"concurrent": 2**63}}, "resources.concurrent", "must be <= 10000"),
]


@pytest.mark.parametrize(("sections", "key", "match"), FUZZ_FOUND, ids=[k for _, k, _ in FUZZ_FOUND])
def test_what_the_fuzzer_found_is_one_line(sections, key, match, tmp_path):
    _refused(_good(**sections), key, match, tmp_path)


FUZZ_FOUND_SPACES = [
    ('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = ' + str(2**1100) + '\n', "params.lr.high", "must be finite"),
    ('[params.batch_size]\ntype = "int"\nlow = 1\nhigh = 9223372036854775808\n', "params.batch_size.high",
     "must be <= 9007199254740992"),
    ('[params.x]\ntype = "float"\nlow = -1e308\nhigh = 1e308\ntarget = "train.weight_decay"\n', "params.x.high",
     "'high - low' must be finite"),
    ('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nstep = 0.5\n', "params.lr.step", "at most 'high - low'"),
    ('[params.topology]\ntype = "categorical"\nchoices = ["hard", "mmoe"]\n'
     '[params.h]\ntype = "categorical"\nchoices = [0, 2]\ntarget = "topology.head_hidden"\n'
     '[params.g]\ntype = "categorical"\nchoices = [nan, 1.0]\ntarget = "weighting.alpha"\n', "params.g.choices",
     "must be finite"),
    ('[params.weighting]\ntype = "categorical"\nchoices = ["equal", "fixed"]\n', "params.weighting.choices",
     "weighting 'fixed' must build with the parameters this space always gives it \\(none\\)"),
    ('[params.weighting]\ntype = "categorical"\nchoices = ["equal", "fixed"]\n'
     '[params.optimizer]\ntype = "categorical"\nchoices = ["sgd", "adam"]\n'
     '[params.w]\ntype = "float"\nlow = 0.5\nhigh = 2.0\nper_task = true\ntarget = "weighting.weights"\n'
     'when = { weighting = "fixed", optimizer = "sgd" }\n', "params.weighting.choices", "'fixed' must build"),
]


@pytest.mark.parametrize(("text", "key", "match"), FUZZ_FOUND_SPACES, ids=[b[1] for b in FUZZ_FOUND_SPACES])
def test_what_the_fuzzer_found_in_spaces_is_one_line(text, key, match, tmp_path):
    _space_refused(text, key, match, tmp_path)


def test_a_fixed_weighting_with_its_weights_loads(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[params.weighting]\ntype = "categorical"\nchoices = ["equal", "fixed"]\n'
                    '[params.w]\ntype = "float"\nlow = 0.5\nhigh = 2.0\nper_task = true\ntarget = "weighting.weights"\n'
                    'when = { weighting = "fixed" }\n')
    assert SearchSpace.load(path).names() == ["weighting", "w"]
