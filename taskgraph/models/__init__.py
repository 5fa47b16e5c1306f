"""Multi-task models: the shared-trunk protocol, trunks from config, sharing topologies."""

from taskgraph.models.base import MultiTaskModel, infer_out_features, linear_heads, resolve_device
from taskgraph.models.stages import split_stages
from taskgraph.models.topology import (
    TOPOLOGIES,
    Branched,
    CrossStitch,
    HardSharing,
    MMoE,
    TopologyModel,
    TopologySpec,
    build_model,
    make_topology,
    topology_from_dict,
)
from taskgraph.models.trunks import TrunkSpec, mlp, small_cnn

__all__ = [
    "TOPOLOGIES",
    "Branched",
    "CrossStitch",
    "HardSharing",
    "MMoE",
    "MultiTaskModel",
    "TopologyModel",
    "TopologySpec",
    "TrunkSpec",
    "build_model",
    "infer_out_features",
    "linear_heads",
    "make_topology",
    "mlp",
    "resolve_device",
    "small_cnn",
    "split_stages",
    "topology_from_dict",
]
