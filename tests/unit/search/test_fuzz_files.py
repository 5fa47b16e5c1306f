"""Fuzzing the study and search-space loaders with mutations of the shipped files (hypothesis).

Each generated file goes through :meth:`StudySpec.load`, what ``taskgraph run`` calls (through
``cli.search._load_spec``) before it opens data or storage. Every file must be either

- refused with one line of the project's own error (a :class:`TaskGraphError` naming the file), or
- accepted and valid: what the runners then do with the spec (JSON config, fingerprint, pickling,
  the sampler, the trunk, the training config and weighting of sampled trials, the grouping solver)
  works, and every number is finite;

nothing is written under the working directory (the default ``runs/`` folder) by the loader, and
no file takes over 5 s (hypothesis' deadline). The mutations: keys removed, renamed or added, lines
duplicated, values of the wrong type, out of range, negative, zero, huge (2**63, 10**30), NaN and
infinities, unknown names; files truncated, non-UTF-8 bytes inserted, binary files. A deterministic
sweep beside the random mutations sets every key of every shipped file to each edge value in turn
(what a random mutation of one field reaches only by luck).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import pickle
import shutil
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from taskgraph.exceptions import TaskGraphError
from taskgraph.runners.samplers import make_sampler
from taskgraph.search import StudySpec
from taskgraph.weighting import make_weighting

ROOT = Path(__file__).resolve().parents[3]
STUDIES = {p.name: p.read_text() for p in sorted((ROOT / "studies").glob("*.toml"))}
SPACES = {p.name: p.read_text() for p in sorted((ROOT / "search_spaces").glob("*.toml"))}
#: examples per test, each a distinct file (a repeat is rejected before it is loaded): >= 1,000 in the two
EXAMPLES = 520
FUZZ = settings(max_examples=EXAMPLES, deadline=5000, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

WEIRD = [0, -1, 1, 2, 3, -(2**31), 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30, 2**1100,
         0.0, -0.0, 0.5, -0.5, 1e-300, 1e308, -1e308, math.nan, math.inf, -math.inf, True, False,
         "", "x", " ", "exactt", "EXACT", "sgd", "adam", "tpe", "nsgaii", "per_task", "delta_m", "exact",
         "scalable", "hierarchy", "brute", "raise", "mlp", "cnn", "hard", "mmoe", "gradnorm", "fixed", "all-in-one",
         "../nowhere.toml", "../search_spaces/default.toml", "sqlite://", "sqlite:///:memory:", "study.db",
         "postgresql://u:pw@127.0.0.1:1/db", "sqlite:///runs/x/study.db", "caf\u00e9", "a\nb", "t0", "c1",
         [], [0], [1, 2], [-1], [0.5, 0.999], [1.0, 2.0], ["a"], ["t0", "t0"], ["t0", "t99"], [[1]], [math.nan],
         [2**63], {}, {"x": 1}, {"n_tasks": 2**63}, {"topology": "hard"}, {"weighting": ["gradnorm", "nope"]}]
#: the values most likely to break a loader: sizes at and past the integer widths, zero, negatives, NaN, infinities
#: (the worst first: hypothesis draws the first ones more often)
EDGES = [2**1100, math.nan, 2**63, math.inf, -1, 0, 2**63 - 1, -(2**1100), -(2**63), 10**30, 2**53 + 1, 2**31,
         -math.inf, 0.0, -1.0, 1e308, -1e308, 1e-320]
KEYS = ["name", "seed", "trials", "epochs", "lr", "type", "low", "high", "log", "step", "choices", "target",
        "when", "per_task", "top_m", "k", "references", "estimator", "every", "solver", "time_limit", "fallback",
        "cpus", "gpus", "concurrent", "url", "artifacts", "space", "objective", "sampler", "hidden", "options",
        "tasks", "n_tasks", "n_samples", "dim", "rank", "batch_size", "weight_decay", "grad_clip", "bugdet", "x"]


# --- a small TOML writer (the generated dicts back to text) -----------------------------------------

def _key(k: str) -> str:
    return json.dumps(k, ensure_ascii=False)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"


def to_toml(d: dict, prefix: tuple[str, ...] = ()) -> str:
    """TOML text of a parsed document (tables as [headers], scalars, arrays and inline tables)."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in d.items():
        if isinstance(v, dict):
            path = (*prefix, k)
            out += "\n[" + ".".join(_key(p) for p in path) + "]\n" + to_toml(v, path)
    return out


# --- mutations ------------------------------------------------------------------------------------

def _paths(d, prefix=()) -> list[tuple]:
    """Every key path of a parsed document (into tables and arrays)."""
    out = []
    items = d.items() if isinstance(d, dict) else enumerate(d)
    for k, v in items:
        out.append((*prefix, k))
        if isinstance(v, dict | list):
            out.extend(_paths(v, (*prefix, k)))
    return out


def _parent(d, path):
    for p in path[:-1]:
        d = d[p]
    return d


def _new_value(draw, old):
    """A replacement for ``old``: mostly an edge of its own type (a number's sizes, NaN and infinities; a
    string's unknown names), else a value of another type."""
    if draw(st.integers(0, 3)) == 0:
        return copy.deepcopy(draw(st.sampled_from(WEIRD)))
    if isinstance(old, int | float) and not isinstance(old, bool):
        return draw(st.sampled_from(EDGES)) if draw(st.integers(0, 2)) else draw(st.one_of(st.integers(), st.floats()))
    if isinstance(old, str):
        return draw(st.one_of(st.sampled_from([w for w in WEIRD if isinstance(w, str)]),
                              st.text(st.characters(codec="utf-8"), max_size=8)))
    if isinstance(old, list):
        return [_new_value(draw, x) for x in old] if old and draw(st.booleans()) else copy.deepcopy(
            draw(st.sampled_from([w for w in WEIRD if isinstance(w, list)])))
    return copy.deepcopy(draw(st.sampled_from(WEIRD)))


@st.composite
def mutated_document(draw, text: str) -> dict:
    """A parsed file with 1-4 structural mutations (removed, renamed or added keys, changed values)."""
    doc = tomllib.loads(text)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 4]))):  # mostly one: the first refusal hides the others
        paths = _paths(doc)
        kind = draw(st.sampled_from(["value", "remove", "rename", "value", "add", "value"]))
        if not paths:
            kind = "add"
        if kind == "add":
            tables = [()] + [p for p in paths if isinstance(_parent(doc, (*p, 0)), dict)]
            where = draw(st.sampled_from(tables))
            _parent(doc, (*where, 0))[draw(st.sampled_from(KEYS))] = copy.deepcopy(draw(st.sampled_from(WEIRD)))
            continue
        if kind == "value":  # mostly a leaf: a number, a string, a boolean
            leaves = [p for p in paths if not isinstance(_parent(doc, (*p, 0)), dict)]
            path = draw(st.sampled_from(leaves or paths))
        else:
            path = draw(st.sampled_from(paths))
        parent, last = _parent(doc, path), path[-1]
        if kind == "remove":
            del parent[last]
        elif kind == "rename" and isinstance(parent, dict):
            new = draw(st.sampled_from([last + "s", last[:-1], last.upper(), "_" + last, *KEYS]))
            parent[new] = parent.pop(last)
        else:
            parent[last] = _new_value(draw, parent[last])
    return doc


@st.composite
def mutated_file(draw, texts: dict[str, str]) -> bytes:
    """A shipped file, mutated: structurally, and/or as text (duplicated or dropped lines, truncation,
    non-UTF-8 bytes), or replaced by binary."""
    name = draw(st.sampled_from(sorted(texts)))
    text = texts[name]
    if draw(st.integers(0, 9)) < 9:
        text = to_toml(draw(mutated_document(text)))
    data = text.encode()
    kind = draw(st.sampled_from(["none"] * 10 + ["duplicate", "drop", "truncate", "bytes", "binary"]))
    lines = data.splitlines(keepends=True) or [b""]
    if kind == "duplicate":
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(draw(st.integers(0, len(lines))), lines[i])
        data = b"".join(lines)
    elif kind == "drop":
        del lines[draw(st.integers(0, len(lines) - 1))]
        data = b"".join(lines)
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif kind == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif kind == "binary":
        data = draw(st.binary(max_size=512))
    return data


# --- the check ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _workspace(tmp: Path):
    """An input folder (studies/ and search_spaces/, as shipped) and an empty working directory."""
    inp, work = tmp / "in", tmp / "work"
    for d in (inp, work):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(ROOT / "studies", inp / "studies")
    shutil.copytree(ROOT / "search_spaces", inp / "search_spaces")
    work.mkdir()
    with contextlib.chdir(work):
        yield inp, work


def _check_valid(spec: StudySpec) -> None:
    """What the runners do with an accepted spec before and during its trials must work."""
    d = spec.to_dict()
    json.dumps(d, allow_nan=False)  # every number finite; stored as the study's config
    assert len(spec.fingerprint()) == 16
    assert pickle.loads(pickle.dumps(spec.without_secrets())).fingerprint() == spec.fingerprint()
    b = spec.budget
    assert 1 <= b.grace_epochs <= b.epochs and b.trials >= 1 and b.reduction_factor >= 2
    assert spec.resources.cpus > 0 and spec.resources.concurrent >= 1 and spec.resources.gpus >= 0
    assert "://" in spec.storage.url and not spec.storage.url.startswith("sqlite://:")
    spec.trunk_spec()
    make_sampler(spec.sampler, spec.sampler_options, spec.seed, file=spec.file)
    n = spec.data.options.get("n_tasks", 4) if spec.data.tasks is None else len(spec.data.tasks)
    spec.grouping.make_solver(n)
    tasks = spec.data.tasks or tuple(f"t{i}" for i in range(3))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        cfg = spec.space.resolve(spec.space.suggest(trial, tasks=tasks, groupings=("all-in-one", "single-task")))
        spec.train_config(cfg.train)
        make_weighting(cfg.weighting, **cfg.weighting_params)
        study.tell(trial, 0.0)


def _run(load: Callable[[Path], StudySpec], inp: Path, work: Path, path: Path, data: bytes, outcomes: dict) -> None:
    path.write_bytes(data)
    t0 = time.perf_counter()
    try:
        spec = load(path)
    except TaskGraphError as e:
        msg = str(e)
        assert "\n" not in msg and msg.strip(), f"a refusal must be one line: {msg!r}"
        assert getattr(e, "file", None) is not None and Path(e.file).name in msg, f"must name the file: {msg}"
        outcomes["refused"] = outcomes.get("refused", 0) + 1
    else:
        _check_valid(spec)
        outcomes["accepted"] = outcomes.get("accepted", 0) + 1
    seconds = time.perf_counter() - t0
    outcomes["slowest"] = max(outcomes.get("slowest", 0.0), seconds)
    assert seconds < 5, f"loading and checking one file took {seconds:.1f} s"
    assert not any(work.iterdir()), f"the loader wrote {sorted(p.name for p in work.iterdir())}"
    outcomes.setdefault("files", set()).add(data)


@pytest.fixture(scope="module")
def quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def test_fuzzed_study_files(tmp_path, quiet_optuna):
    outcomes: dict = {}
    with _workspace(tmp_path) as (inp, work):
        @FUZZ
        @given(mutated_file(STUDIES))
        def fuzz(data: bytes) -> None:
            assume(data not in outcomes.setdefault("files", set()))
            _run(StudySpec.load, inp, work, inp / "studies" / "fuzzed.toml", data, outcomes)

        fuzz()
    print(f"study files: {len(outcomes['files'])} distinct, {outcomes.get('accepted', 0)} accepted, "
          f"{outcomes.get('refused', 0)} refused, slowest {outcomes['slowest']:.2f} s")
    assert len(outcomes["files"]) >= EXAMPLES and outcomes.get("accepted", 0) >= 10 and outcomes["refused"]


def test_fuzzed_search_space_files(tmp_path, quiet_optuna):
    outcomes: dict = {}
    with _workspace(tmp_path) as (inp, work):
        study = inp / "studies" / "uses_fuzzed_space.toml"
        study.write_text(STUDIES["quickstart.toml"].replace("default.toml", "fuzzed.toml"))

        @FUZZ
        @given(mutated_file(SPACES))
        def fuzz(data: bytes) -> None:
            assume(data not in outcomes.setdefault("files", set()))
            _run(lambda _p: StudySpec.load(study), inp, work, inp / "search_spaces" / "fuzzed.toml", data, outcomes)

        fuzz()
    print(f"search-space files: {len(outcomes['files'])} distinct, {outcomes.get('accepted', 0)} accepted, "
          f"{outcomes.get('refused', 0)} refused, slowest {outcomes['slowest']:.2f} s")
    assert len(outcomes["files"]) >= EXAMPLES and outcomes.get("accepted", 0) >= 10 and outcomes["refused"]


# --- a sweep: every leaf of every shipped file, set to every edge value, one at a time ---------------

SWEEP_VALUES = [2**1100, math.nan, math.inf, 2**63, -1, 0, "", "exactt", []]


def _single_mutations(text: str):
    """The shipped file with one leaf (a value that is no table) set to each of SWEEP_VALUES, and removed."""
    doc = tomllib.loads(text)
    for path in _paths(doc):
        if isinstance(_parent(doc, (*path, 0)), dict):
            continue
        for v in [*SWEEP_VALUES, _REMOVE]:
            mutated = tomllib.loads(text)
            parent = _parent(mutated, path)
            if v is _REMOVE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(v)
            yield to_toml(mutated).encode()


_REMOVE = object()


@pytest.mark.parametrize("kind", ["study", "space"])
def test_every_key_of_the_shipped_files_at_every_edge(kind, tmp_path, quiet_optuna):
    """Deterministic: what a random mutation finds only by luck (one field at one edge) is tried for every field."""
    outcomes: dict = {}
    with _workspace(tmp_path) as (inp, work):
        study = inp / "studies" / "uses_fuzzed_space.toml"
        study.write_text(STUDIES["quickstart.toml"].replace("default.toml", "fuzzed.toml"))
        texts = STUDIES if kind == "study" else SPACES
        files = dict.fromkeys(m for t in texts.values() for m in _single_mutations(t))  # distinct, in order
        failures = []
        for data in files:
            try:
                if kind == "study":
                    _run(StudySpec.load, inp, work, inp / "studies" / "fuzzed.toml", data, outcomes)
                else:
                    _run(lambda _p: StudySpec.load(study), inp, work, inp / "search_spaces" / "fuzzed.toml", data,
                         outcomes)
            except Exception as e:  # collected: every failing file is reported, not only the first
                failures.append(f"{type(e).__name__}: {str(e)[:300]}\n{data.decode(errors='replace')}")
    print(f"{kind} sweep: {len(files)} files, {outcomes.get('accepted', 0)} accepted, "
          f"{outcomes.get('refused', 0)} refused, {len(failures)} failed, slowest {outcomes.get('slowest', 0):.2f} s")
    assert not failures, f"{len(failures)} of {len(files)} files failed; the first:\n" + "\n---\n".join(failures[:3])
    assert len(files) >= 400 and outcomes.get("accepted", 0) >= 10
