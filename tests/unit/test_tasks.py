import numpy as np
import pytest
import torch

from taskgraph.exceptions import TaskGraphError, TaskSpecError
from taskgraph.tasks import Task, TaskSet


def test_defaults_follow_kind():
    assert Task("r").metric == "mse" and not Task("r").higher_is_better
    assert Task("b", "binary").metric == "accuracy" and Task("b", "binary").higher_is_better
    assert Task("m", "multiclass", num_classes=4).out_dim == 4


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"name": ""}, "name"),
        ({"name": "a", "kind": "ranking"}, "kind"),
        ({"name": "a", "metric": "bleu"}, "metric"),
        ({"name": "a", "metric": "auc"}, "metric"),  # auc is for binary tasks
        ({"name": "a", "kind": "multiclass"}, "num_classes"),
        ({"name": "a", "num_classes": 3}, "num_classes"),
        ({"name": "a", "loss_scale": -1.0}, "loss_scale"),
    ],
)
def test_bad_task_names_the_field(kwargs, field):
    with pytest.raises(TaskSpecError, match=field) as e:
        Task(**kwargs)
    assert isinstance(e.value, TaskGraphError)


def test_empty_and_duplicate_task_sets():
    with pytest.raises(TaskSpecError, match="at least one"):
        TaskSet([])
    with pytest.raises(TaskSpecError, match=r"duplicates: \['a'\]"):
        TaskSet([Task("a"), Task("b"), Task("a")])


def test_unknown_names():
    ts = TaskSet([Task("a"), Task("b")])
    with pytest.raises(TaskSpecError, match="unknown task name 'z'"):
        ts["z"]
    with pytest.raises(TaskSpecError, match=r"\['x'\]"):
        ts.subset(["a", "x"])


def test_masked_loss_ignores_unlabelled_samples_even_nan():
    t = Task("r")
    pred = torch.tensor([[1.0], [2.0], [3.0]], requires_grad=True)
    y = torch.tensor([1.0, float("nan"), 5.0])
    m = torch.tensor([True, False, True])
    loss = t.loss(pred, y, m)
    assert loss.item() == pytest.approx((0 + 4) / 2)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1].item() == 0.0


def test_loss_with_no_label_is_zero_not_nan():
    t = Task("b", "binary")
    loss = t.loss(torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0


def test_metrics():
    b = Task("b", "binary", metric="auc")
    assert b.score(np.array([0.1, 0.9, 0.4, 0.8]), np.array([0.0, 1.0, 0.0, 1.0])) == 1.0
    a = Task("b2", "binary")
    assert a.score(np.array([-1.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0])) == pytest.approx(2 / 3)
    m = Task("m", "multiclass", num_classes=3)
    assert m.score(np.eye(3), np.array([0, 1, 1])) == pytest.approx(2 / 3)
    r = Task("r", metric="mae")
    assert r.score(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 1.0


def test_round_trip():
    ts = TaskSet([Task("a"), Task("m", "multiclass", num_classes=3, metric="error_rate")])
    assert TaskSet.from_dict(ts.to_dict()) == ts
