"""``taskgraph train`` and ``taskgraph datasets``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from taskgraph.cli.common import dataset_option, load_cli_dataset, log, parse_widths, print_table, show_progress

if TYPE_CHECKING:  # torch is imported when the command runs, keeping `taskgraph --help` light
    import torch


@click.command("datasets")
def datasets_cmd() -> None:
    """List the bundled datasets."""
    from taskgraph.data import DATASETS

    for name in DATASETS:
        click.echo(name)


@click.command("train")
@click.argument("dataset")
@dataset_option
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1),
              help="Epochs per model (early stopping on validation may end sooner).")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Learning rate (Adam).")
@click.option("--hidden", default=None,
              help="MLP trunk widths, e.g. 256,128 (default: the dataset's recommendation, else 256,128).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1), help="Batch size.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of every model's initialisation and batch order.")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Also train one single-task model per task and report Δm%.")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(dataset: str, options: tuple[str, ...], epochs: int, lr: float, hidden: str | None, batch_size: int,
              seed: int, baselines: bool, json_out: str | None, quiet: bool) -> None:
    """Train an all-in-one model on DATASET and print a per-task table.

    With baselines (the default) every task also gets a single-task model with
    the same trunk and budget, and the table shows Δ% per task and Δm%
    (lower is better: negative = the multi-task model beats single-task models).
    """
    import torch

    from taskgraph.models import TrunkSpec
    from taskgraph.training import TrainConfig, delta_m, per_task_delta, train_partition

    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_cli_dataset(dataset, options)
    widths = parse_widths(hidden) if hidden else tuple(data.info.get("trunk_hidden", (256, 128)))
    spec = TrunkSpec("mlp", widths)
    if len(data.input_shape) != 1:
        spec = TrunkSpec("cnn", (16, 32))
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    names = list(data.tasks.names)

    def factory() -> torch.nn.Module:
        return spec.build(data.input_shape)

    log(f"{data.name}: {len(names)} tasks, {len(data.train)} train / {len(data.val)} val / "
        f"{len(data.test)} test samples, trunk {spec.kind} {spec.hidden}")
    progress = show_progress(quiet)
    mtl = train_partition(factory, data, [names], cfg, progress=progress)["test"]
    single = train_partition(factory, data, [[n] for n in names], cfg, progress=progress)["test"] \
        if baselines else None
    rows = []
    deltas = per_task_delta(mtl.metrics, single.metrics, data.tasks) if single else {}
    for t in data.tasks:
        row = [t.name, t.metric + (" ↑" if t.higher_is_better else " ↓"), mtl.metrics[t.name]]
        if single:
            row += [single.metrics[t.name], f"{deltas[t.name]:+.2f}"]
        rows.append(row)
    cols = ["task", "metric", "all-in-one"] + (["single-task", "Δ% ↓"] if single else [])
    print_table(f"{data.name}: test metrics", cols, rows,
                caption="↓ lower is better, ↑ higher is better; Δ%: the all-in-one model against single-task, "
                        "lower is better" if single else "↓ lower is better, ↑ higher is better")
    result: dict[str, Any] = {"dataset": data.name, "all_in_one": mtl.to_dict()}
    if single:
        dm = delta_m(mtl.metrics, single.metrics, data.tasks)
        click.echo(f"Δm% = {dm:+.2f}  (lower is better; negative: the all-in-one model beats single-task models)")
        result.update(single_task=single.to_dict(), delta_m=dm)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=2)
