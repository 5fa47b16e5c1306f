"""Multi-task datasets: synthetic generators with known structure and packaged real data."""

from taskgraph.data.base import MultiTaskData, MultiTaskDataset, split_indices, unpack_batch
from taskgraph.data.registry import DATASETS, load_dataset
from taskgraph.data.synthetic import mmoe_pair, planted_clusters

__all__ = [
    "DATASETS",
    "MultiTaskData",
    "MultiTaskDataset",
    "load_dataset",
    "mmoe_pair",
    "planted_clusters",
    "split_indices",
    "unpack_batch",
]
