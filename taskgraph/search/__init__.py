"""Search spaces and study files: what a search explores and how it runs.

- :class:`SearchSpace` (``search_spaces/*.toml``): distributions with conditional
  and per-task parameters, sampled define-by-run by Optuna or Ray Tune.
- :class:`StudySpec` (``studies/*.toml``): one frozen, validated section per
  table (dataset, trunk, search, budget, train, affinity, grouping, storage,
  resources, runner); validated before anything is written.
"""

from taskgraph.search.space import REFERENCES, Param, SearchSpace, TrialConfig
from taskgraph.search.study import (
    OBJECTIVES,
    SAMPLERS,
    AffinitySection,
    BudgetSection,
    DatasetSection,
    GroupingSection,
    ResourcesSection,
    RunnerSection,
    SearchSection,
    StorageSection,
    StudySpec,
    TrainSection,
    TrunkSection,
    make_sampler,
)

__all__ = ["OBJECTIVES", "REFERENCES", "SAMPLERS", "AffinitySection", "BudgetSection", "DatasetSection",
           "GroupingSection", "Param", "ResourcesSection", "RunnerSection", "SearchSection", "SearchSpace",
           "StorageSection", "StudySpec", "TrainSection", "TrialConfig", "TrunkSection", "make_sampler"]
