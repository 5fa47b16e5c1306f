"""Loss weighting strategies, one small class each, called by the training loop through one interface."""

from taskgraph.weighting.base import EqualWeighting, LossWeighting
from taskgraph.weighting.dwa import DynamicWeightAverage
from taskgraph.weighting.famo import FAMO
from taskgraph.weighting.fixed import FixedWeighting
from taskgraph.weighting.gradnorm import GradNorm
from taskgraph.weighting.pcgrad import PCGrad, pcgrad_project
from taskgraph.weighting.registry import WEIGHTINGS, make_weighting, weighting_from_dict
from taskgraph.weighting.uncertainty import UncertaintyWeighting

__all__ = [
    "FAMO",
    "WEIGHTINGS",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FixedWeighting",
    "GradNorm",
    "LossWeighting",
    "PCGrad",
    "UncertaintyWeighting",
    "make_weighting",
    "pcgrad_project",
    "weighting_from_dict",
]
