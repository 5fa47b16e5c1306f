"""The ``taskgraph`` command.

Subcommands live in their own modules and are imported only when invoked, so
``taskgraph --help`` starts fast and never imports Ray.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from taskgraph.exceptions import ConfigError, TaskGraphError

# command name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "datasets": ("taskgraph.cli.train", "datasets_cmd", "List the bundled datasets."),
    "train": ("taskgraph.cli.train", "train_cmd", "Train all-in-one vs single-task on a dataset."),
    "affinity": ("taskgraph.cli.affinity", "affinity_cmd", "Measure inter-task affinity on a dataset."),
    "group": ("taskgraph.cli.grouping", "group_cmd", "Group the tasks of a dataset from measured affinity."),
    "run": ("taskgraph.cli.search", "run_cmd", "Run a study file (local Optuna or Ray Tune)."),
    "submit": ("taskgraph.cli.search", "submit_cmd", "Submit a study to a Ray cluster as a job."),
    "dashboard": ("taskgraph.cli.search", "dashboard_cmd", "Open optuna-dashboard on a study's storage."),
    "report": ("taskgraph.cli.search", "report_cmd", "Write a report of a finished study."),
}


def _available(name: str) -> bool:
    module = COMMANDS[name][0]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n in COMMANDS if _available(n)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _available(cmd_name):
            return None
        module, attr, _ = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; a TaskGraphError becomes one ``error: ...`` line and exit 1 (2 for a ConfigError)."""
        try:
            return super().invoke(ctx)
        except TaskGraphError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2 if isinstance(e, ConfigError) else 1)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


EPILOG = """\b
Results go to stdout; logs and progress to stderr (a progress bar
only on a terminal). Exit status: 0 done; 1 the run failed; 2 usage
error (a bad option or argument, or an invalid study or space file)."""


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="taskgraph-mtl")
def cli() -> None:
    """taskgraph: measure task affinity, group tasks, search multi-task models."""
    import rich
    from rich.console import Console

    # Progress bars (taskgraph.training) draw on rich's global console: send it to stderr, and
    # silence it when stderr is not a terminal, where a bar would leave a blank line per bar.
    rich.reconfigure(stderr=True, quiet=not Console(stderr=True).is_terminal)


def main() -> None:
    """Console-script entry point (``taskgraph``): exit status as in the group's epilog.

    A :class:`~taskgraph.exceptions.TaskGraphError` is one ``error: ...`` line on stderr and exit 1,
    or exit 2 when it is a :class:`~taskgraph.exceptions.ConfigError` (an invalid study file,
    search space or option); click's usage errors exit 2; Ctrl-C exits 130.
    """
    try:
        code = cli.main(standalone_mode=False)  # returns ctx.exit()'s code instead of raising
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code) from None
    except click.exceptions.Exit as e:
        raise SystemExit(e.exit_code) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)
