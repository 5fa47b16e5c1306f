"""Datasets by name, for study files and the CLI.

Example:
    >>> sorted(DATASETS)
    ['digits', 'mmoe-pair', 'planted-binary', 'planted-clusters', 'planted-unrelated', 'star', 'yeast']
    >>> load_dataset("planted-clusters", n_tasks=6, n_clusters=3, n_samples=300).tasks.names
    ('t0', 't1', 't2', 't3', 't4', 't5')
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from taskgraph.data import real, synthetic
from taskgraph.data.base import MultiTaskData
from taskgraph.exceptions import ConfigError
from taskgraph.registry import Registry

__all__ = ["DATASETS", "load_dataset"]

DATASETS: Registry[Callable[..., MultiTaskData]] = Registry("dataset")
DATASETS.register("planted-clusters", partial(synthetic.planted_clusters, relation="opposed"))
DATASETS.register("planted-unrelated", partial(synthetic.planted_clusters, relation="unrelated"))
DATASETS.register("planted-binary", partial(synthetic.planted_clusters, relation="opposed", kind="binary"))
DATASETS.register("mmoe-pair", synthetic.mmoe_pair)
DATASETS.register("yeast", real.yeast)
DATASETS.register("digits", real.digits)
DATASETS.register("star", real.star)


def load_dataset(name: str, *, file: str | None = None, key: str | None = None, **kwargs: Any) -> MultiTaskData:
    """Load a dataset by registry name; unknown names and options raise :class:`ConfigError`."""
    factory = DATASETS.get(name, file=file, key=key)
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"dataset {name!r} does not take these options {sorted(kwargs)}: {e}",
                          file=file, key=key) from e
