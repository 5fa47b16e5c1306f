"""Inter-task affinity: estimators, the tracker callback and the AffinityMatrix value."""

from taskgraph.affinity.gradients import flat_per_task_gradients, per_task_gradients
from taskgraph.affinity.matrix import AffinityMatrix

__all__ = ["AffinityMatrix", "flat_per_task_gradients", "per_task_gradients"]
