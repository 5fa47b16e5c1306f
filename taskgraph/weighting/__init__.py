"""Loss weighting strategies (one small class each)."""

from taskgraph.weighting.base import EqualWeighting, LossWeighting

__all__ = ["EqualWeighting", "LossWeighting"]
