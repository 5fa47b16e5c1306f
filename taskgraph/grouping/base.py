"""The grouping-solver interface and the ``SOLVERS`` registry.

A solver is an immutable strategy: hyper-parameters typed in ``__init__``, one
method :meth:`GroupingSolver.solve` that takes a validated
:class:`~taskgraph.grouping.objective.GroupingProblem` and returns up to
``top_m`` distinct :class:`~taskgraph.grouping.value.Grouping` values, best
first. Names map to solver classes only at the edge, through :data:`SOLVERS`.

Example:
    >>> SOLVERS.names()
    ['brute', 'exact', 'hierarchy', 'scalable']
    >>> make_solver("exact").name
    'exact'
    >>> make_solver("simplex")
    Traceback (most recent call last):
    ...
    taskgraph.exceptions.UnknownNameError: unknown grouping solver 'simplex'; valid: brute, exact, hierarchy, scalable
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from taskgraph.exceptions import GroupingError
from taskgraph.grouping.objective import GroupingProblem
from taskgraph.grouping.value import Grouping
from taskgraph.registry import Registry

__all__ = ["SOLVERS", "GroupingSolver", "make_solver"]


class GroupingSolver(ABC):
    """Finds the best groupings of a :class:`GroupingProblem`.

    Contract: every returned grouping satisfies the problem (cover, k, variant,
    singletons, budget); the list is sorted by score, best first, without two equal
    groupings; ``optimal=True`` only on a grouping whose score is proven best; and
    ``bound``, when set, is an upper bound on every feasible score. Solvers hold no
    state between calls.
    """

    name: ClassVar[str] = ""

    @abstractmethod
    def solve(self, problem: GroupingProblem, *, top_m: int = 1) -> list[Grouping]:
        """Up to ``top_m`` distinct feasible groupings, best first (at least one).

        Raises:
            GroupingError: the problem is outside what this solver handles (e.g. too large).
        """

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


SOLVERS: Registry[type[GroupingSolver]] = Registry("grouping solver")


def make_solver(name: str, **params: Any) -> GroupingSolver:
    """The solver registered as ``name``, built with ``params``.

    Raises:
        UnknownNameError: no such solver (the message lists the valid ones).
        GroupingError: parameters the solver does not take.
    """
    _load()
    cls = SOLVERS.get(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise GroupingError(f"solver {name!r}: bad parameters {sorted(params)}: {e}") from None


def check_top_m(top_m: int) -> int:
    if isinstance(top_m, bool) or not isinstance(top_m, int) or top_m < 1:
        raise GroupingError(f"top_m must be an int >= 1, got {top_m!r}")
    return top_m


def _load() -> None:
    # importing the modules registers the solvers
    import taskgraph.grouping.brute
    import taskgraph.grouping.exact
    import taskgraph.grouping.hierarchy
    import taskgraph.grouping.scalable  # noqa: F401
