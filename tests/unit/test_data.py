from types import MappingProxyType

import numpy as np
import pytest
import torch

from taskgraph.data import MultiTaskData, MultiTaskDataset, load_dataset, mmoe_pair, planted_clusters
from taskgraph.data.base import unpack_batch
from taskgraph.exceptions import ConfigError, DataError, TaskGraphError, TaskSpecError, UnknownNameError
from taskgraph.tasks import Task, TaskSet

TS = TaskSet([Task("r"), Task("b", "binary"), Task("m", "multiclass", num_classes=3)])


def good(n=6):
    return (
        torch.randn(n, 4),
        {"r": torch.randn(n), "b": torch.tensor([0.0, 1.0] * (n // 2)), "m": torch.arange(n) % 3},
    )


def test_valid_dataset_and_batches():
    x, y = good()
    ds = MultiTaskDataset(TS, x, y)
    xb, yb, mb = ds[[1, 3]]
    assert xb.shape == (2, 4) and yb["m"].dtype == torch.int64 and mb["r"].all()
    batches = list(ds.loader(4, shuffle=True, seed=1))
    assert [b[0].shape[0] for b in batches] == [4, 2]
    again = list(ds.loader(4, shuffle=True, seed=1))
    assert torch.equal(batches[0][0], again[0][0])  # seeded shuffling


@pytest.mark.parametrize(
    "mutate, err, words",
    [
        (lambda x, y, m: y.pop("b"), DataError, ["missing", "'b'"]),
        (lambda x, y, m: y.update(z=torch.zeros(6)), TaskSpecError, ["unknown", "'z'"]),
        (lambda x, y, m: y.update(r=torch.zeros(5)), DataError, ["'r'", "'y'", "rows"]),
        (lambda x, y, m: y.update(r=torch.zeros(6, 2)), DataError, ["'r'", "shape"]),
        (lambda x, y, m: y.update(m=torch.zeros(6)), DataError, ["'m'", "integer"]),
        (lambda x, y, m: y.update(m=torch.full((6,), 3)), DataError, ["'m'", "[0, 3)"]),
        (lambda x, y, m: y.update(b=torch.full((6,), 0.5)), DataError, ["'b'", "0 or 1"]),
        (lambda x, y, m: y["r"].__setitem__(2, float("nan")), DataError, ["'r'", "finite"]),
        (lambda x, y, m: y["r"].__setitem__(2, float("inf")), DataError, ["'r'", "finite"]),
        (lambda x, y, m: x.__setitem__((3, 1), float("nan")), DataError, ["'x'", "row 3"]),
        (lambda x, y, m: m.update(r=torch.zeros(6, dtype=torch.bool)), DataError, ["'r'", "no labelled"]),
        (lambda x, y, m: m.update(r=torch.ones(6)), DataError, ["'r'", "bool"]),
    ],
)
def test_bad_input_is_named(mutate, err, words):
    x, y = good()
    m: dict = {}
    mutate(x, y, m)
    with pytest.raises(err) as e:
        MultiTaskDataset(TS, x, y, m, split="train")
    msg = str(e.value)
    assert isinstance(e.value, TaskGraphError) and "\n" not in msg
    for w in words:
        assert w in msg
    assert "train" in msg


def test_nan_where_unlabelled_is_fine():
    x, y = good()
    y["r"][0] = float("nan")
    m = {"r": torch.tensor([False] + [True] * 5)}
    ds = MultiTaskDataset(TS, x, y, m)
    assert not ds.masks["r"][0]


def test_planted_clusters_structure_and_reproducibility():
    a = planted_clusters(n_tasks=7, n_clusters=3, n_samples=200, seed=3)
    b = planted_clusters(n_tasks=7, n_clusters=3, n_samples=200, seed=3)
    assert a.ground_truth == (("t0", "t1", "t2"), ("t3", "t4"), ("t5", "t6"))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.labels["t4"], b.test.labels["t4"])
    assert sorted(t for g in a.ground_truth for t in g) == sorted(a.tasks.names)
    c = planted_clusters(n_tasks=4, n_clusters=2, kind="binary", n_samples=200)
    assert set(torch.unique(c.train.labels["t0"]).tolist()) <= {0.0, 1.0}


def test_within_cluster_labels_correlate_more_than_across():
    d = planted_clusters(n_tasks=6, n_clusters=3, relation="unrelated", n_samples=2000, seed=0)
    y = np.stack([d.train.labels[t].numpy() for t in d.tasks.names])
    c = np.corrcoef(y)
    within = np.mean([c[0, 1], c[2, 3], c[4, 5]])
    across = np.mean(np.abs([c[0, 2], c[0, 4], c[2, 4], c[1, 3]]))
    assert within > 0.5 > across


@pytest.mark.parametrize("p", [-0.5, 0.0, 0.9])
def test_mmoe_pair_correlation_tracks_p(p):
    d = mmoe_pair(correlation=p, n_samples=4000, seed=0)
    r = np.corrcoef(d.train.labels["t0"].numpy(), d.train.labels["t1"].numpy())[0, 1]
    assert abs(r - p) < 0.25


def test_generator_bad_parameters():
    with pytest.raises(DataError, match="n_clusters"):
        planted_clusters(n_tasks=2, n_clusters=3)
    with pytest.raises(DataError, match="correlation"):
        mmoe_pair(correlation=1.5)


def test_registry_errors():
    with pytest.raises(UnknownNameError, match="valid: digits"):
        load_dataset("mnist")
    with pytest.raises(ConfigError, match="does not take"):
        load_dataset("planted-clusters", colour="red")


def test_subset_tasks():
    d = planted_clusters(n_tasks=4, n_clusters=2, n_samples=200)
    s = d.subset_tasks(["t3", "t0"])
    assert s.tasks.names == ("t3", "t0") and set(s.train.labels) == {"t3", "t0"}
    with pytest.raises(TaskSpecError):
        d.subset_tasks(["t9"])


def test_split_without_labels_for_a_task_is_caught():
    x = torch.randn(40, 3)
    y = {"r": torch.randn(40)}
    m = {"r": torch.zeros(40, dtype=torch.bool)}
    m["r"][:2] = True  # only 2 labelled samples: some split will have none
    with pytest.raises(DataError, match="no labelled sample"):
        MultiTaskData.from_arrays("tiny", TaskSet([Task("r")]), x, y, m, seed=0)


def test_unpack_batch_gives_dicts_for_read_only_mappings():
    # a loader of the user's own may yield any Mapping; the Batch it becomes holds dicts of the same tensors
    x, y = torch.zeros(4, 2), torch.arange(4.0)
    mask = torch.tensor([True, False, True, True])
    for batch in ((x, MappingProxyType({"t": y})), (x, MappingProxyType({"t": y}), MappingProxyType({"t": mask}))):
        xb, ys, ms = unpack_batch(batch)
        assert type(ys) is dict and type(ms) is dict
        assert xb is x and ys["t"] is y
        assert ms["t"].tolist() == ([True] * 4 if len(batch) == 2 else mask.tolist())


@pytest.mark.slow
def test_real_datasets_load_offline():
    y = load_dataset("yeast")
    assert len(y.tasks) == 14 and y.input_shape == (103,)
    d = load_dataset("digits")
    assert len(d.tasks) == 10 and d.input_shape == (64,)
    s = load_dataset("star")
    assert len(s.tasks) == 8
    frac = float(s.train.masks["readk"].float().mean())
    assert 0.3 < frac < 0.8  # missing labels are masked, not dropped
    assert len(y.train) + len(y.val) + len(y.test) == 2417
