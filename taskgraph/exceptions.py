"""The exceptions taskgraph raises.

Every error a user can cause derives from :class:`TaskGraphError`, so one
``except TaskGraphError`` catches them all. Messages follow one rule: say what
must hold, then what was found, then where (task and field, or file and key).
"""

from __future__ import annotations

__all__ = [
    "AffinityError",
    "ConfigError",
    "DataError",
    "GroupingError",
    "ModelError",
    "SearchError",
    "StorageError",
    "TaskGraphError",
    "TaskSpecError",
    "UnknownNameError",
]


class TaskGraphError(Exception):
    """Root of every error taskgraph raises on bad input or a failed run."""


class TaskSpecError(TaskGraphError, ValueError):
    """A task or task set is malformed: unknown, duplicate or missing names, bad kind."""


class DataError(TaskGraphError, ValueError):
    """Features or labels violate what the task set demands (shape, dtype, NaN, lengths)."""


class ModelError(TaskGraphError, ValueError):
    """A model does not fit the task set or the protocol (heads, shared parameters)."""


class AffinityError(TaskGraphError, ValueError):
    """Affinity cannot be measured as asked (no shared parameters, bad schedule, ...)."""


class GroupingError(TaskGraphError, ValueError):
    """A grouping problem or a grouping is invalid (matrix, k, budget, names)."""


class ConfigError(TaskGraphError, ValueError):
    """A configuration value (study file, search space, CLI option) is invalid.

    Carries the file and the key where it was found, when known.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        where = ""
        if file is not None or key is not None:
            parts = [p for p in (file, f"key {key!r}" if key else None) if p]
            where = f" [{', '.join(parts)}]"
        super().__init__(message + where)
        self.file = file
        self.key = key


class UnknownNameError(ConfigError, KeyError):
    """A name looked up in a registry does not exist; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class SearchError(TaskGraphError):
    """A search could not run (empty space, no trial finished, ...)."""


class StorageError(TaskGraphError):
    """A study storage or cluster address cannot be reached or is inconsistent."""
