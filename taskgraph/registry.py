"""One registry per concept: names map to objects only at the edge (study files, CLI)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from taskgraph.exceptions import UnknownNameError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A name → object map whose misses raise :class:`UnknownNameError` listing valid names.

    Example:
        >>> r = Registry[int]("answer")
        >>> r.register("forty-two", 42)
        42
        >>> r.get("forty-two")
        42
        >>> r.get("41")
        Traceback (most recent call last):
        ...
        taskgraph.exceptions.UnknownNameError: unknown answer '41'; valid: forty-two
    """

    def __init__(self, concept: str):
        self.concept = concept
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.concept} {name!r} is registered twice")
        self._items[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            return self.register(name, obj)

        return wrap

    def get(self, name: str, *, file: str | None = None, key: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise UnknownNameError(
                f"unknown {self.concept} {name!r}; valid: {valid}", file=file, key=key
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
