"""A griffe extension for the API reference: doctests titled ``Example:`` render as examples.

The package's docstrings title their doctests ``Example:``; Google style (griffe's parser)
knows that section as ``Examples:`` and would otherwise render the doctest as markdown text.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_TITLE = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.M)


class ExampleSections(griffe.Extension):
    """Rename each docstring's ``Example:`` section title to ``Examples:`` before it is parsed."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and not obj.is_alias:
            obj.docstring.value = _TITLE.sub(r"\1Examples:", obj.docstring.value)
