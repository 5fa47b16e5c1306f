"""Training on a CUDA device: every topology with every loss weighting, and the trial runner's model.

Skipped where no CUDA device is present (CI); run where there is one with
``pytest tests/unit/test_cuda_paths.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from taskgraph.data import planted_clusters
from taskgraph.models import Branched, CrossStitch, HardSharing, MMoE, TrunkSpec, build_model
from taskgraph.training import TrainConfig, fit
from taskgraph.weighting import WEIGHTINGS, make_weighting

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TOPOLOGIES = {
    "hard-grouped": (HardSharing(), {"grouping": [["t0", "t1"], ["t2", "t3"]]}),
    "branched": (Branched(branch_depths=(1,)), {"grouping": [["t0", "t1"], ["t2", "t3"]]}),
    "cross-stitch": (CrossStitch(), {}),
    "mmoe": (MMoE(n_experts=3), {}),
}
OPTIONS = {"fixed": {"weights": [1.0, 2.0, 0.5, 1.0]}}


@pytest.mark.parametrize("weighting", WEIGHTINGS.names())
@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_every_topology_and_weighting_trains_on_cuda(topology, weighting):
    data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=400, seed=0)
    torch.manual_seed(0)
    spec, extra = TOPOLOGIES[topology]
    model = build_model(spec, TrunkSpec(hidden=(16, 16)), data.tasks, data.input_shape, **extra)
    result = fit(model, data, TrainConfig(epochs=2, lr=3e-3, seed=0, device="cuda"),
                 weighting=make_weighting(weighting, **OPTIONS.get(weighting, {})))
    assert next(model.parameters()).is_cuda
    assert all(math.isfinite(v) for v in result.test.losses.values())
