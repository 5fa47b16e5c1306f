"""The ``taskgraph`` command.

Subcommands live in their own modules and are imported only when invoked, so
``taskgraph --help`` starts fast and never imports Ray.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

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
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskgraph-mtl")
def cli() -> None:
    """taskgraph: measure task affinity, group tasks, search multi-task models."""


def main() -> None:
    """Console-script entry point: TaskGraphError becomes a one-line message, exit 2."""
    from taskgraph.exceptions import TaskGraphError

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code) from None
    except click.exceptions.Exit as e:
        raise SystemExit(e.exit_code) from None
    except TaskGraphError as e:
        click.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
