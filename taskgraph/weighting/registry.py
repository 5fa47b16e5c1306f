"""Loss weightings by name, for study files, search spaces and the CLI.

=================  ===================================  ==================================
name               class                                paper
=================  ===================================  ==================================
``equal``          :class:`EqualWeighting`              —
``fixed``          :class:`FixedWeighting`              scalarisation (Xin et al. 2022)
``uncertainty``    :class:`UncertaintyWeighting`        Kendall et al. CVPR 2018
``gradnorm``       :class:`GradNorm`                    Chen et al. ICML 2018
``dwa``            :class:`DynamicWeightAverage`        Liu et al. CVPR 2019
``pcgrad``         :class:`PCGrad`                      Yu et al. NeurIPS 2020
``famo``           :class:`FAMO`                        Liu et al. NeurIPS 2023
=================  ===================================  ==================================

Example:
    >>> make_weighting("gradnorm", alpha=0.5)
    GradNorm(alpha=0.5, lr=0.025, min_weight=0.001)
    >>> from taskgraph.exceptions import ConfigError, UnknownNameError
    >>> try:
    ...     make_weighting("gradnorm", beta=1.0)
    ... except ConfigError as e:
    ...     print(e)
    weighting 'gradnorm' takes the parameters ['alpha', 'lr', 'min_weight'], got unknown ['beta'] [key 'beta']
    >>> try:
    ...     make_weighting("nash")
    ... except UnknownNameError as e:
    ...     print(e)
    unknown weighting 'nash'; valid: dwa, equal, famo, fixed, gradnorm, pcgrad, uncertainty [key 'weighting']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from taskgraph.exceptions import ConfigError
from taskgraph.registry import Registry
from taskgraph.weighting.base import EqualWeighting, LossWeighting
from taskgraph.weighting.dwa import DynamicWeightAverage
from taskgraph.weighting.famo import FAMO
from taskgraph.weighting.fixed import FixedWeighting
from taskgraph.weighting.gradnorm import GradNorm
from taskgraph.weighting.pcgrad import PCGrad
from taskgraph.weighting.uncertainty import UncertaintyWeighting

__all__ = ["WEIGHTINGS", "make_weighting", "weighting_from_dict"]

#: weighting name -> class
WEIGHTINGS: Registry[type[LossWeighting]] = Registry("weighting")
for _cls in (EqualWeighting, FixedWeighting, UncertaintyWeighting, GradNorm, DynamicWeightAverage, PCGrad, FAMO):
    WEIGHTINGS.register(_cls.name, _cls)


def make_weighting(name: str, *, file: str | None = None, **params: Any) -> LossWeighting:
    """The weighting registered as ``name``, built with its hyper-parameters.

    Args:
        name: a key of :data:`WEIGHTINGS`.
        file: the study/search-space file the name came from (for error messages).
        params: the weighting's hyper-parameters (its dataclass fields); lists become tuples.

    Raises:
        UnknownNameError: an unknown name (the message lists the valid ones).
        ConfigError: a parameter the weighting does not take, or a value it rejects.
    """
    cls = WEIGHTINGS.get(name, file=file, key="weighting")
    fields: list[str] = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
    extra = sorted(set(params) - set(fields))
    if extra:
        raise ConfigError(f"weighting {name!r} takes the parameters {fields}, got unknown {extra}",
                          file=file, key=extra[0])
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    try:
        return cls(**params)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"weighting {name!r}: bad parameters {params}: {e}", file=file) from e


def weighting_from_dict(d: Mapping[str, Any], *, file: str | None = None) -> LossWeighting:
    """Inverse of :meth:`LossWeighting.to_dict`: ``{"weighting": name, **params}``.

    Raises:
        ConfigError: no ``"weighting"`` key; as :func:`make_weighting` otherwise.
    """
    if not isinstance(d, Mapping) or "weighting" not in d:
        raise ConfigError(f"a weighting must be a mapping with a 'weighting' key naming one of "
                          f"{', '.join(WEIGHTINGS.names())}, got {d!r}", file=file, key="weighting")
    params = dict(d)
    return make_weighting(params.pop("weighting"), file=file, **params)
