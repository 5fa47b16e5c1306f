"""Helpers shared by CLI commands: dataset options, tables."""

from __future__ import annotations

from collections.abc import Sequence

import click

from taskgraph.exceptions import ConfigError


def parse_options(pairs: Sequence[str]) -> dict:
    """``["n_tasks=9", "relation=opposed"]`` → ``{"n_tasks": 9, "relation": "opposed"}``."""
    import tomllib

    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--option must look like KEY=VALUE, got {p!r}", key="--option")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            out[k.strip()] = v
    return out


def load_cli_dataset(name: str, pairs: Sequence[str]):
    """The dataset ``name`` with the ``--option`` pairs, checked (types, sizes, seeds) before any data is made."""
    from taskgraph.data import load_dataset
    from taskgraph.search.study import check_dataset_options

    options = parse_options(pairs)
    check_dataset_options(name, options, key="--option", sep=" ")
    return load_dataset(name, key="DATASET", **options)


def parse_widths(value: str) -> tuple[int, ...]:
    """``"256,128"`` → ``(256, 128)``; anything else is a usage error."""
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"must be comma-separated ints like 256,128, got {value!r}") from None


dataset_option = click.option(
    "--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
    help="Dataset option, e.g. -o n_tasks=9 -o relation=unrelated (repeatable).",
)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r])
    Console().print(table)
