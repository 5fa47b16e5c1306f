import pytest
import torch
from torch import nn

from taskgraph.exceptions import ModelError
from taskgraph.models import MultiTaskModel, TrunkSpec, mlp, resolve_device, small_cnn
from taskgraph.tasks import Task, TaskSet

TS = TaskSet([Task("a"), Task("c", "multiclass", num_classes=5)])


def test_mlp_model_outputs_and_shared_parameters():
    m = MultiTaskModel(mlp(10, (16, 8)), TS, input_shape=(10,))
    out = m(torch.randn(3, 10))
    assert out["a"].shape == (3, 1) and out["c"].shape == (3, 5)
    shared = dict(m.shared_parameters())
    assert set(shared) == {"trunk.0.weight", "trunk.0.bias", "trunk.2.weight", "trunk.2.bias"}
    heads = {n for t in TS.names for n, _ in m.task_parameters(t)}
    assert heads.isdisjoint(shared)
    assert sum(p.numel() for p in m.parameters()) == (10 * 16 + 16 + 16 * 8 + 8) + (8 + 1) + (8 * 5 + 5)


def test_any_user_trunk_works_cnn():
    m = MultiTaskModel(small_cnn(1, (4, 8), 12), TS, input_shape=(1, 28, 28))
    out = m(torch.randn(2, 1, 28, 28))
    assert out["c"].shape == (2, 5)


def test_trunk_errors():
    with pytest.raises(ModelError, match="input_shape"):
        MultiTaskModel(mlp(10, (4,)), TS, input_shape=(7,))
    with pytest.raises(ModelError, match=r"\(batch, features\)"):
        MultiTaskModel(nn.Conv2d(1, 2, 3), TS, input_shape=(1, 8, 8))
    with pytest.raises(ModelError, match="no trainable parameters"):
        MultiTaskModel(nn.Flatten(), TS, input_shape=(4,))
    with pytest.raises(ModelError, match=r"missing heads \['c'\]"):
        MultiTaskModel(mlp(4, (4,)), TS, heads={"a": nn.Linear(4, 1)})


def test_trunk_spec_round_trip_and_build():
    s = TrunkSpec("mlp", (32, 8))
    assert TrunkSpec.from_dict(s.to_dict()) == s
    assert isinstance(s.build((5,)), nn.Sequential)
    with pytest.raises(ModelError, match="flat inputs"):
        s.build((1, 28, 28))
    with pytest.raises(ModelError, match="'kind'"):
        TrunkSpec("transformer")


def test_device_is_chosen_at_run_time():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
