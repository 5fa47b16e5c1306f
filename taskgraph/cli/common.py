"""Helpers shared by CLI commands: dataset options, tables, where output goes.

The conventions every command follows:

- results (tables, the chosen grouping, the best trial, files written) go to **stdout**;
- logs and progress go to **stderr** (:func:`log`, :func:`stderr_console`), and a progress
  bar is drawn only when stderr is a terminal, so a piped or redirected run has no bar
  remnants or blank lines;
- exit status 0 on success, 1 when the run failed (a :class:`~taskgraph.exceptions.TaskGraphError`
  other than a configuration error, a failed trial, a failed job), 2 for a usage error (a bad
  option or argument, or an invalid study or search-space file).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from taskgraph.exceptions import ConfigError

if TYPE_CHECKING:  # the data package is imported when a command runs, keeping `taskgraph --help` light
    from taskgraph.data import MultiTaskData


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["n_tasks=9", "relation=opposed"]`` → ``{"n_tasks": 9, "relation": "opposed"}``.

    Example:
        >>> parse_options(["n_tasks=9", "relation=opposed", "noise=0.5"])
        {'n_tasks': 9, 'relation': 'opposed', 'noise': 0.5}
    """
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


def load_cli_dataset(name: str, pairs: Sequence[str]) -> MultiTaskData:
    """The dataset ``name`` with the ``--option`` pairs, checked (types, sizes, seeds) before any data is made.

    A bad name or option is a usage error (exit 2), named after the argument or option.
    """
    from taskgraph.data import load_dataset
    from taskgraph.search.study import check_dataset_options

    try:
        options = parse_options(pairs)
        check_dataset_options(name, options, key="--option", sep=" ")
    except ConfigError as e:
        raise click.BadParameter(_without_key(e), param_hint="'--option'") from None
    try:
        return load_dataset(name, key="DATASET", **options)
    except ConfigError as e:
        raise click.BadParameter(_without_key(e), param_hint="'DATASET'") from None


def _without_key(e: ConfigError) -> str:
    """The message without its ``[key ...]`` suffix (click names the parameter itself)."""
    text = str(e)
    return text.removesuffix(f" [key {e.key!r}]") if e.file is None and e.key else text


def parse_widths(value: str) -> tuple[int, ...]:
    """``"256,128"`` → ``(256, 128)``; anything else is a usage error."""
    try:
        widths = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"must be comma-separated ints like 256,128, got {value!r}") from None
    if any(w < 1 for w in widths):
        raise click.BadParameter(f"every width must be >= 1, got {value!r}")
    return widths


dataset_option = click.option(
    "--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
    help="Dataset option, e.g. -o n_tasks=9 -o relation=unrelated (repeatable).",
)


def stderr_console() -> Console:
    """A console on stderr for logs and progress (never markup-highlighted numbers)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def log(message: str) -> None:
    """One log line on stderr, printed as is (no markup): what runners receive as ``log``."""
    click.echo(message, err=True)


def show_progress(quiet: bool) -> bool:
    """Whether to draw progress bars: not with ``--quiet``, and only when stderr is a terminal."""
    return not quiet and stderr_console().is_terminal


def groups_text(groups: Sequence[Sequence[str]]) -> str:
    """``[["a", "b"], ["c"]]`` → ``"{a, b} | {c}"``.

    Example:
        >>> groups_text([["a", "b"], ["c"]])
        '{a, b} | {c}'
    """
    return " | ".join("{" + ", ".join(g) + "}" for g in groups)


def make_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], *,
               caption: str | None = None, compact: bool = False) -> Table:
    """A table that stays readable at 80 columns and when piped.

    Light borders, and a cell that does not fit is folded onto the next line, never cut to
    ``…``. ``compact`` drops the cell padding (one space between columns). Floats show 4 decimals.
    """
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True,
                  padding=(0, 0) if compact else (0, 1), title_justify="left", caption_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right", overflow="fold")
    for r in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r])
    return table


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], *,
                caption: str | None = None) -> None:
    """Print :func:`make_table` on stdout (a result); piped, its lines carry no trailing padding.

    A table wider than the console is printed compact first (no cell padding), and folds cells only
    when even that does not fit.
    """
    console = Console(highlight=False)
    table = make_table(title, columns, rows, caption=caption)
    if Measurement.get(console, console.options.update_width(10_000), table).maximum > console.width:
        table = make_table(title, columns, rows, caption=caption, compact=True)
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))
