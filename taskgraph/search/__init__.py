"""Search spaces and study files: what a search explores and how it runs.

- :class:`SearchSpace` (``search_spaces/*.toml``): distributions with conditional
  and per-task parameters, sampled define-by-run by Optuna or Ray Tune.
- :class:`StudySpec` (``studies/*.toml``): dataset, trunk, space, budget,
  objective, storage, resources, sampler; validated before anything is written.
"""

from taskgraph.search.space import REFERENCES, Param, SearchSpace, TrialConfig
from taskgraph.search.study import OBJECTIVES, SAMPLERS, StudySpec, make_sampler

__all__ = ["OBJECTIVES", "REFERENCES", "SAMPLERS", "Param", "SearchSpace", "StudySpec", "TrialConfig", "make_sampler"]
