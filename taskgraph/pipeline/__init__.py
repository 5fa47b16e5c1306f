"""The one grouping pipeline: measure affinity → propose partitions → check them → decide.

:func:`auto_group` (the Python API) and a study's prepare stage both run these stages
under one :class:`GroupingPolicy` (:data:`DEFAULT_POLICY`). See ``docs/quality.md`` for
the comparison on exhaustive ground truth that chose the policy.
"""

from taskgraph.pipeline.auto import AutoGroupResult, Candidate, auto_group
from taskgraph.pipeline.stages import (
    DEFAULT_CHECK_CONFIG,
    DEFAULT_POLICY,
    CheckedCandidate,
    Decision,
    GroupingPolicy,
    Runs,
    candidates,
    check,
    decide,
    hoa_total,
    measure,
    pairwise_networks,
    pairwise_transfer,
    propose,
    reseed_loader,
    run_policy,
    settle,
    surrogate,
    unchecked,
)

__all__ = ["DEFAULT_CHECK_CONFIG", "DEFAULT_POLICY", "AutoGroupResult", "Candidate", "CheckedCandidate", "Decision",
           "GroupingPolicy", "Runs", "auto_group", "candidates", "check", "decide", "hoa_total", "measure",
           "pairwise_networks", "pairwise_transfer", "propose",
           "reseed_loader", "run_policy", "settle", "surrogate", "unchecked"]
