"""Loss weightings: registry, configuration errors, and every one through the real training loop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from taskgraph.data import planted_clusters
from taskgraph.exceptions import ConfigError, ModelError, UnknownNameError
from taskgraph.models import CrossStitch, TrunkSpec, build_model
from taskgraph.training import Callback, TrainConfig, fit
from taskgraph.weighting import WEIGHTINGS, FixedWeighting, make_weighting, weighting_from_dict

DEFAULTS = {"fixed": {"weights": [1.0, 2.0, 0.5, 1.0]}}


def test_registry_holds_every_method():
    assert WEIGHTINGS.names() == ["dwa", "equal", "famo", "fixed", "gradnorm", "pcgrad", "uncertainty"]


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_to_dict_round_trips_through_json(name):
    w = make_weighting(name, **DEFAULTS.get(name, {}))
    assert w.name == name
    assert weighting_from_dict(json.loads(json.dumps(w.to_dict()))) == w


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="unknown weighting 'nashmtl'; valid: dwa, equal, famo, fixed, "
                                               "gradnorm, pcgrad, uncertainty"):
        make_weighting("nashmtl")


def test_unknown_or_bad_parameters():
    with pytest.raises(ConfigError, match=r"takes the parameters \['temperature'\], got unknown \['temp'\]"):
        make_weighting("dwa", temp=1.0)
    with pytest.raises(ConfigError, match="'alpha' must be finite and >= 0, got -1"):
        make_weighting("gradnorm", alpha=-1)
    with pytest.raises(ConfigError, match="'temperature' must be finite and > 0"):
        make_weighting("dwa", temperature=0.0)
    with pytest.raises(ConfigError, match="with a 'weighting' key"):
        weighting_from_dict({"alpha": 1.0})


def test_fixed_weights_negative_wrong_length_or_wrong_names():
    with pytest.raises(ConfigError, match=r"finite and >= 0, got -0.5 at index 1 \[key 'weights'\]"):
        make_weighting("fixed", weights=[1.0, -0.5])
    with pytest.raises(ConfigError, match="finite and >= 0, got nan at task 'b'"):
        FixedWeighting({"a": 1.0, "b": float("nan")})
    with pytest.raises(ConfigError, match="at least one weight must be > 0"):
        FixedWeighting([0.0, 0.0])
    with pytest.raises(ConfigError, match="one weight per task, got none"):
        FixedWeighting()
    with pytest.raises(ConfigError, match=r"one weight per task \(3: \['a', 'b', 'c'\]\), got 2"):
        FixedWeighting([1.0, 2.0]).init_state(["a", "b", "c"], None)
    with pytest.raises(ConfigError, match=r"unknown \['z'\], missing \['b'\]"):
        FixedWeighting({"a": 1.0, "z": 1.0}).init_state(["a", "b"], None)


@pytest.mark.parametrize("name", ["gradnorm", "pcgrad"])
def test_gradient_weightings_need_shared_parameters(name):
    w = make_weighting(name)
    model = nn.Linear(2, 1)
    state = w.init_state(["a", "b"], model)
    out = model(torch.ones(1, 2)).sum()
    with pytest.raises(ModelError, match="must expose shared_parameters"):
        w.backward({"a": out, "b": out}, model, state, step=0, epoch=0)


class Record(Callback):
    def __init__(self):
        self.epochs = 0

    def on_epoch_end(self, state, val):
        self.epochs += 1


@pytest.mark.slow
@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_weighting_trains_a_soft_shared_model(name):
    data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=400, seed=0)
    torch.manual_seed(0)
    model = build_model(CrossStitch(), TrunkSpec(hidden=(16, 16)), data.tasks, data.input_shape)
    rec = Record()
    weighting = make_weighting(name, **DEFAULTS.get(name, {}))
    result = fit(model, data, TrainConfig(epochs=3, lr=3e-3, seed=0), weighting=weighting, callbacks=[rec])
    assert rec.epochs == 3
    assert all(math.isfinite(v) for v in result.test.losses.values())
    first = result.history[0]["val_loss"]
    assert result.val.mean_loss < sum(first.values()) / len(first)  # it learned something
