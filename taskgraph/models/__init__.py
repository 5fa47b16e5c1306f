"""Multi-task models: the shared-trunk protocol, trunks from config, sharing topologies."""

from taskgraph.models.base import MultiTaskModel, infer_out_features, linear_heads, resolve_device
from taskgraph.models.trunks import TrunkSpec, mlp, small_cnn

__all__ = [
    "MultiTaskModel",
    "TrunkSpec",
    "infer_out_features",
    "linear_heads",
    "mlp",
    "resolve_device",
    "small_cnn",
]
