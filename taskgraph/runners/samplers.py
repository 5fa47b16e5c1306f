"""Optuna samplers by name: the one place the runners build a study's sampler.

It sits in the runners (which use it) rather than in the search package (which validates a
study file's sampler with it), so imports run one way: search -> runners.

Example:
    >>> type(make_sampler("random", {}, 0)).__name__
    'RandomSampler'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from taskgraph.exceptions import ConfigError

if TYPE_CHECKING:
    import optuna

__all__ = ["SAMPLERS", "make_sampler"]


def _samplers() -> dict[str, Callable[..., optuna.samplers.BaseSampler]]:
    import optuna

    return {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "gp": optuna.samplers.GPSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "nsgaii": optuna.samplers.NSGAIISampler,
        "qmc": optuna.samplers.QMCSampler,
    }


#: sampler names a study may use
SAMPLERS = ("tpe", "random", "gp", "cmaes", "nsgaii", "qmc")


def make_sampler(name: str, options: Mapping[str, Any], seed: int, *,
                 file: str | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``name`` with ``options`` and ``seed``."""
    from taskgraph.registry import Registry

    reg: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("sampler")
    for n, cls in _samplers().items():
        reg.register(n, cls)
    cls = reg.get(name, file=file, key="search.sampler")
    try:
        return cls(seed=seed, **dict(options))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"sampler {name!r} does not take these options {sorted(options)}: {e}",
                          file=file, key="search.sampler_options") from None
