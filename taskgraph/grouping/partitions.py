"""Set partitions of a few tasks: enumeration and a canonical form.

Example:
    >>> len(list(set_partitions("abcdef")))  # Bell(6)
    203
    >>> canonical([["c", "a"], ["b"]], order="abc")
    (('a', 'c'), ('b',))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import combinations

__all__ = ["Partition", "all_subsets", "canonical", "set_partitions"]

Partition = tuple[tuple[str, ...], ...]


def set_partitions(items: Sequence[str]) -> Iterator[Partition]:
    """Every partition of ``items`` into non-empty groups (Bell(n) of them), each canonical.

    Example:
        >>> len(list(set_partitions("abcdef")))
        203
        >>> list(set_partitions("ab"))
        [(('a', 'b'),), (('a',), ('b',))]
    """
    items = list(items)
    if not items:
        yield ()
        return
    first, rest = items[0], items[1:]
    for sub in set_partitions(rest):
        for i in range(len(sub)):
            yield canonical([*sub[:i], (first, *sub[i]), *sub[i + 1:]], order=items)
        yield canonical([(first,), *sub], order=items)


def canonical(groups: Iterable[Iterable[str]], *, order: Sequence[str]) -> Partition:
    """Groups with tasks in ``order`` and groups sorted by their first task."""
    pos = {t: i for i, t in enumerate(order)}
    gs = [tuple(sorted(g, key=pos.__getitem__)) for g in groups]
    return tuple(sorted(gs, key=lambda g: pos[g[0]]))


def all_subsets(tasks: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``tasks`` (in task order), smallest first.

    Example:
        >>> all_subsets(["a", "b", "c"])
        [('a',), ('b',), ('c',), ('a', 'b'), ('a', 'c'), ('b', 'c'), ('a', 'b', 'c')]
    """
    return [c for r in range(1, len(tasks) + 1) for c in combinations(tasks, r)]
