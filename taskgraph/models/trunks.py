"""Trunks from configuration: an MLP and a small CNN.

Users may bring any ``nn.Module``; these cover the study files and benchmarks.

Example:
    >>> trunk = mlp(64, (256, 256, 128))
    >>> sum(p.numel() for p in trunk.parameters())
    115328
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from taskgraph.exceptions import ModelError

__all__ = ["TrunkSpec", "mlp", "small_cnn"]


def mlp(in_features: int, hidden: Sequence[int] = (256, 256, 128), *, dropout: float = 0.0,
        activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``Linear → act`` for each width in ``hidden`` (the last layer's activation kept)."""
    if in_features < 1 or not hidden or any(h < 1 for h in hidden):
        raise ModelError(f"mlp: widths must be >= 1 and hidden non-empty, got "
                         f"in_features={in_features}, hidden={tuple(hidden)}")
    layers: list[nn.Module] = []
    prev = in_features
    for h in hidden:
        layers += [nn.Linear(prev, h), activation()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        prev = h
    return nn.Sequential(*layers)


def small_cnn(in_channels: int = 1, channels: Sequence[int] = (16, 32), out_features: int = 64) -> nn.Sequential:
    """Conv(3×3)-ReLU-MaxPool stages, then global average pooling and a linear layer."""
    layers: list[nn.Module] = []
    prev = in_channels
    for c in channels:
        layers += [nn.Conv2d(prev, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        prev = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, out_features), nn.ReLU()]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class TrunkSpec:
    """A trunk described by data, so a trial's configuration fully describes its model.

    Attributes:
        kind: ``"mlp"`` or ``"cnn"``.
        hidden: MLP widths, or CNN channels.
        out_features: CNN output width (MLP: the last hidden width).
        dropout: MLP dropout.
    """

    kind: str = "mlp"
    hidden: tuple[int, ...] = (256, 256, 128)
    out_features: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "cnn"):
            raise ModelError(f"TrunkSpec: 'kind' must be 'mlp' or 'cnn', got {self.kind!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def build(self, input_shape: Sequence[int]) -> nn.Module:
        if self.kind == "mlp":
            if len(input_shape) != 1:
                raise ModelError(f"TrunkSpec(kind='mlp') needs flat inputs, got shape {tuple(input_shape)}")
            return mlp(int(input_shape[0]), self.hidden, dropout=self.dropout)
        if len(input_shape) != 3:
            raise ModelError(f"TrunkSpec(kind='cnn') needs (C, H, W) inputs, got {tuple(input_shape)}")
        return small_cnn(int(input_shape[0]), self.hidden, self.out_features)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "hidden": list(self.hidden), "out_features": self.out_features,
                "dropout": self.dropout}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrunkSpec:
        return cls(kind=d.get("kind", "mlp"), hidden=tuple(d.get("hidden", (256, 256, 128))),
                   out_features=int(d.get("out_features", 64)), dropout=float(d.get("dropout", 0.0)))
