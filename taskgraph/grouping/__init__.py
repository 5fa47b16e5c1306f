"""Grouping: from an affinity matrix to groups of tasks that avoid negative transfer.

- :mod:`~taskgraph.grouping.objective`: TAG's serving score, the partition variant,
  singletons and Standley's cost budget (:class:`Objective`, :class:`GroupingProblem`).
- Solvers behind one interface (:class:`GroupingSolver`, registry :data:`SOLVERS`):
  ``exact`` (column generation + MILP, provable optimum up to ~22 tasks), ``brute``
  (TAG's enumeration), ``scalable`` (clustering + local search, 20-200+ tasks),
  ``hierarchy`` (cuts of an agglomerative tree).
- :class:`Grouping`: the immutable result; :func:`group_tasks` ranks groupings;
  :func:`choose_k` picks k; :func:`hierarchy` builds the tree for branched sharing.
  The whole flow (affinity → groups → check runs) is :func:`taskgraph.pipeline.auto_group`.

Example:
    >>> import numpy as np
    >>> Z = np.array([[0, .9, -.5, -.5], [.9, 0, -.5, -.5], [-.5, -.5, 0, .8], [-.5, -.5, .8, 0]])
    >>> group_tasks(Z, names=("a", "b", "c", "d"), k=2)[0].groups
    (('a', 'b'), ('c', 'd'))
"""

from __future__ import annotations

from taskgraph.grouping.objective import GroupingProblem, Objective, as_problem
from taskgraph.grouping.value import Grouping

from taskgraph.grouping.base import SOLVERS, GroupingSolver, make_solver  # isort: skip
from taskgraph.grouping.brute import BruteForceSolver
from taskgraph.grouping.exact import ExactSolver
from taskgraph.grouping.hierarchy import HierarchySolver, TaskHierarchy, hierarchy
from taskgraph.grouping.scalable import ScalableSolver

from taskgraph.grouping.api import KChoice, choose_k, group_tasks  # isort: skip

__all__ = [
    "SOLVERS",
    "BruteForceSolver",
    "ExactSolver",
    "Grouping",
    "GroupingProblem",
    "GroupingSolver",
    "HierarchySolver",
    "KChoice",
    "Objective",
    "ScalableSolver",
    "TaskHierarchy",
    "as_problem",
    "choose_k",
    "group_tasks",
    "hierarchy",
    "make_solver",
]
