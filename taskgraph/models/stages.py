"""Split a trunk into stages, and make fresh copies of it, for branched and soft-sharing topologies.

A *stage* starts at a layer with weights of its own kind — ``nn.Linear``,
``nn.Conv1d/2d/3d`` — and runs up to the next one, so the activations, pooling,
dropout and flattening that follow a layer belong to its stage. Layers before
the first such layer join the first stage. Nested ``nn.Sequential`` containers
are flattened first. Only ``nn.Sequential`` trunks can be split (a module with
its own ``forward`` hides its order of operations).

Example:
    >>> from taskgraph.models.trunks import mlp
    >>> stages = split_stages(mlp(8, (16, 16, 4)))
    >>> [len(s) for s in stages]
    [2, 2, 2]
    >>> [type(s[0]).__name__ for s in stages]
    ['Linear', 'Linear', 'Linear']
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from torch import nn

from taskgraph.exceptions import ModelError
from taskgraph.models.trunks import TrunkSpec

__all__ = ["STAGE_STARTS", "stage_factory", "split_stages", "trunk_factory"]

#: layer types that open a new stage
STAGE_STARTS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _flatten(module: nn.Sequential) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in module:
        out.extend(_flatten(m) if isinstance(m, nn.Sequential) else [m])
    return out


def split_stages(trunk: nn.Module) -> list[nn.Sequential]:
    """The trunk's stages, each an ``nn.Sequential`` sharing the trunk's layer objects.

    Args:
        trunk: an ``nn.Sequential`` (nested ones are flattened).

    Returns:
        One ``nn.Sequential`` per stage, in order; running them in sequence is running the trunk.

    Raises:
        ModelError: the trunk is not an ``nn.Sequential``, or has no Linear/Conv layer.
    """
    if not isinstance(trunk, nn.Sequential):
        raise ModelError(f"splitting a trunk into stages needs an nn.Sequential, got {type(trunk).__name__}; "
                         "write the trunk as nn.Sequential or use a TrunkSpec")
    layers = _flatten(trunk)
    stages: list[list[nn.Module]] = []
    pending: list[nn.Module] = []
    for m in layers:
        if isinstance(m, STAGE_STARTS):
            stages.append([*pending, m])  # layers before the first stage start join it
            pending = []
        elif stages:
            stages[-1].append(m)
        else:
            pending.append(m)
    if not stages:
        raise ModelError(f"a trunk needs at least one of {[c.__name__ for c in STAGE_STARTS]} to be split into "
                         f"stages, got layers {[type(m).__name__ for m in layers]}")
    return [nn.Sequential(*s) for s in stages]


def trunk_factory(trunk: TrunkSpec | nn.Module, input_shape: Sequence[int]) -> Callable[[], nn.Module]:
    """A function returning a new trunk each call.

    A :class:`TrunkSpec` is built anew (fresh random initialisation from torch's
    global generator); a module is deep-copied (every copy starts from its weights).
    """
    if isinstance(trunk, TrunkSpec):
        shape = tuple(input_shape)
        return lambda: trunk.build(shape)
    if isinstance(trunk, nn.Module):
        return lambda: copy.deepcopy(trunk)
    raise ModelError(f"a trunk must be a TrunkSpec or an nn.Module, got {type(trunk).__name__}")


def stage_factory(trunk: TrunkSpec | nn.Module, input_shape: Sequence[int]) -> Callable[[], list[nn.Sequential]]:
    """A function returning a new trunk split into stages each call (see :func:`trunk_factory`)."""
    make = trunk_factory(trunk, input_shape)
    split_stages(make())  # fail early, with the trunk's own message
    return lambda: split_stages(make())
