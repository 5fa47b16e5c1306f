"""Typed access to a parsed TOML table, with errors that name the file and the key.

Every study and search-space field is read through :class:`Table`, so a wrong
type, a missing key or an unknown key becomes one :class:`ConfigError` line:
what must hold, what was found, and where (file and dotted key).

Example:
    >>> t = Table({"lr": 0.1, "name": "x"}, file="s.toml", prefix="train")
    >>> t.float("lr", low=0.0)
    0.1
    >>> t.int("epochs")
    Traceback (most recent call last):
    ...
    taskgraph.exceptions.ConfigError: 'train.epochs' is required (an int) [s.toml, key 'train.epochs']
"""

from __future__ import annotations

import builtins
import math
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, overload

from taskgraph.exceptions import ConfigError

__all__ = ["MISSING", "FrozenMap", "Table", "freeze", "read_toml", "thaw"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error is a :class:`ConfigError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"a TOML file must exist at this path, found nothing at {str(p)!r}", file=str(p))
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"the file must be valid TOML: {e}", file=str(p)) from None
    except UnicodeDecodeError as e:  # binary, or text in another encoding
        raise ConfigError(f"the file must be UTF-8 text (TOML); byte {e.object[e.start]:#04x} at offset {e.start} "
                          f"is not", file=str(p)) from None
    except OSError as e:
        raise ConfigError(f"the file must be readable: {e.strerror}", file=str(p)) from None


def _type_name(v: object) -> str:
    return {bool: "a boolean", int: "an int", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


class Table:
    """A TOML table read with checks; ``prefix`` is its dotted key inside the file."""

    def __init__(self, data: Mapping[str, Any], *, file: str | None, prefix: str = ""):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{prefix or 'the file'!r} must be a table, got {_type_name(data)}",
                              file=file, key=prefix or None)
        self.data = dict(data)
        self.file = file
        self.prefix = prefix
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str | None, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=self.key(name) if name else (self.prefix or None))

    def raw(self, name: str, default: Any = MISSING, *, expect: str = "a value") -> Any:
        self._used.add(name)
        if name not in self.data:
            if default is MISSING:
                raise self.error(name, f"{self.key(name)!r} is required ({expect})")
            return default
        return self.data[name]

    def str(self, name: builtins.str, default: Any = MISSING, *,
            choices: Iterable[builtins.str] | None = None) -> builtins.str:
        v = self.raw(name, default, expect="a string")
        if v is default and default is not MISSING:
            return str(v)
        if not isinstance(v, str):
            raise self.error(name, f"{self.key(name)!r} must be a string, got {_type_name(v)} {v!r}")
        if "\x00" in v:  # no name, path or URL holds one (the OS refuses it in a path)
            raise self.error(name, f"{self.key(name)!r} must not contain a NUL character, got {v!r}")
        if choices is not None:
            valid = list(choices)
            if v not in valid:
                raise self.error(name, f"{self.key(name)!r} must be one of {', '.join(valid)}; got {v!r}")
        return v

    def bool(self, name: builtins.str, default: Any = MISSING) -> builtins.bool:
        v = self.raw(name, default, expect="true or false")
        if not isinstance(v, bool):
            raise self.error(name, f"{self.key(name)!r} must be true or false, got {_type_name(v)} {v!r}")
        return v

    @overload
    def int(self, name: builtins.str, default: None, *, low: builtins.int | None = None,
            high: builtins.int | None = None) -> builtins.int | None: ...

    @overload
    def int(self, name: builtins.str, default: builtins.int = ..., *, low: builtins.int | None = None,
            high: builtins.int | None = None) -> builtins.int: ...

    def int(self, name: builtins.str, default: Any = MISSING, *, low: builtins.int | None = None,
            high: builtins.int | None = None) -> builtins.int | None:
        v = self.raw(name, default, expect="an int")
        if v is None and default is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(name, f"{self.key(name)!r} must be an int, got {_type_name(v)} {v!r}")
        self._range(name, v, low, high)
        return v

    @overload
    def float(self, name: builtins.str, default: None, *, low: builtins.float | None = None,
              high: builtins.float | None = None, strict_low: builtins.bool = False) -> builtins.float | None: ...

    @overload
    def float(self, name: builtins.str, default: builtins.float = ..., *, low: builtins.float | None = None,
              high: builtins.float | None = None, strict_low: builtins.bool = False) -> builtins.float: ...

    def float(self, name: builtins.str, default: Any = MISSING, *, low: builtins.float | None = None,
              high: builtins.float | None = None, strict_low: builtins.bool = False) -> builtins.float | None:
        v = self.raw(name, default, expect="a number")
        if v is None and default is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(name, f"{self.key(name)!r} must be a number, got {_type_name(v)} {v!r}")
        try:
            v = float(v)
        except OverflowError:  # an int beyond the floats
            raise self.error(name, f"{self.key(name)!r} must be finite, got {v!r}") from None
        if not math.isfinite(v):
            raise self.error(name, f"{self.key(name)!r} must be finite, got {v!r}")
        if strict_low and low is not None and v <= low:
            raise self.error(name, f"{self.key(name)!r} must be > {low}, got {v!r}")
        self._range(name, v, None if strict_low else low, high)
        return v

    def _range(self, name: builtins.str, v: builtins.float, low: builtins.float | None,
               high: builtins.float | None) -> None:
        if low is not None and v < low:
            raise self.error(name, f"{self.key(name)!r} must be >= {low}, got {v!r}")
        if high is not None and v > high:
            raise self.error(name, f"{self.key(name)!r} must be <= {high}, got {v!r}")

    @overload
    def list(self, name: builtins.str, default: None, *, of: type | tuple[type, ...] | None = None,
             nonempty: builtins.bool = False) -> builtins.list[Any] | None: ...

    @overload
    def list(self, name: builtins.str, default: builtins.list[Any] = ..., *,
             of: type | tuple[type, ...] | None = None, nonempty: builtins.bool = False) -> builtins.list[Any]: ...

    def list(self, name: builtins.str, default: Any = MISSING, *, of: type | tuple[type, ...] | None = None,
             nonempty: builtins.bool = False) -> builtins.list[Any] | None:
        v = self.raw(name, default, expect="an array")
        if v is None and default is None:
            return None
        if not isinstance(v, list):
            raise self.error(name, f"{self.key(name)!r} must be an array, got {_type_name(v)} {v!r}")
        if nonempty and not v:
            raise self.error(name, f"{self.key(name)!r} must not be empty")
        if of is not None:
            kinds = of if isinstance(of, tuple) else (of,)
            for i, item in enumerate(v):
                if isinstance(item, bool) and bool not in kinds or not isinstance(item, kinds):
                    want = "/".join(t.__name__ for t in kinds)
                    raise self.error(name, f"{self.key(name)}[{i}] must be {want}, got {_type_name(item)} "
                                           f"{item!r}")
        return v

    def table(self, name: builtins.str, *, required: builtins.bool = False) -> Table:
        v = self.raw(name, MISSING if required else {}, expect="a table")
        if not isinstance(v, Mapping):
            raise self.error(name, f"{self.key(name)!r} must be a table, got {_type_name(v)} {v!r}")
        return Table(v, file=self.file, prefix=self.key(name))

    def check_unknown(self, extra_allowed: Iterable[builtins.str] = ()) -> None:
        """Raise on keys nobody read: a typo must not be silently ignored."""
        allowed = self._used | set(extra_allowed)
        unknown = [k for k in self.data if k not in allowed]
        if unknown:
            valid = ", ".join(sorted(allowed)) or "none"
            raise self.error(unknown[0], f"unknown key {self.key(unknown[0])!r}; valid keys here: {valid}")


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable, picklable mapping (a frozen value's table; ``MappingProxyType`` does not pickle).

    Example:
        >>> m = FrozenMap({"a": [1, 2]})
        >>> m["a"], dict(m) == {"a": (1, 2)}
        ((1, 2), True)
    """

    __slots__ = ("_d",)
    _d: dict[str, Any]

    def __init__(self, data: Mapping[str, Any] = ()):  # type: ignore[assignment]
        object.__setattr__(self, "_d", {k: freeze(v) for k, v in dict(data).items()})

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._d.items(), key=lambda kv: kv[0])))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMap is read-only")

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        return FrozenMap, (self._d,)


def freeze(v: Any) -> Any:
    """``v`` with every table a :class:`FrozenMap` and every array a tuple (recursively)."""
    if isinstance(v, Mapping) and not isinstance(v, FrozenMap):
        return FrozenMap(v)
    if isinstance(v, list | tuple):
        return tuple(freeze(x) for x in v)
    return v


def thaw(v: Any) -> Any:
    """The plain, JSON-safe form of a frozen value: tables as dicts, arrays as lists (recursively)."""
    if isinstance(v, Mapping):
        return {k: thaw(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [thaw(x) for x in v]
    return v
