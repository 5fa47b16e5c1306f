"""Judging groupings on real data: exhaustive ground truth, and strategies scored against it.

- :class:`Problem` / :data:`PROBLEMS`: a dataset, up to 7 tasks, a trunk and a protocol;
- :func:`exhaust`: train every task subset over paired seeds (JSONL, resumable; local or Ray);
- :class:`GroundTruth`: every partition's totals, ranks, ratios and paired standard errors;
- :mod:`taskgraph.evaluation.strategies`: grouping strategies, each returning a partition and
  its cost in training steps, compared on the same tables by ``benchmarks/quality.py``.

See ``docs/quality.md``.
"""

from taskgraph.evaluation.exhaust import exhaust, read_records, train_subset
from taskgraph.evaluation.problems import MAX_TASKS, PROBLEMS, Problem
from taskgraph.evaluation.table import Assessment, GroundTruth
from taskgraph.grouping.partitions import all_subsets, canonical, set_partitions

__all__ = ["MAX_TASKS", "PROBLEMS", "Assessment", "GroundTruth", "Problem", "all_subsets", "canonical", "exhaust",
           "read_records", "set_partitions", "train_subset"]
