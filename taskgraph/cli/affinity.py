"""``taskgraph affinity DATASET``: measure inter-task affinity and draw it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from taskgraph.cli.common import (
    dataset_option,
    load_cli_dataset,
    log,
    parse_widths,
    print_table,
    show_progress,
)

if TYPE_CHECKING:  # the affinity package (torch) is imported when the command runs, keeping `--help` light
    from taskgraph.affinity import AffinityMatrix

# the names of taskgraph.affinity.ESTIMATORS (a unit test keeps them equal; importing the registry here
# would import torch for `taskgraph affinity --help`)
ESTIMATOR_CHOICES = ("exact", "first_order", "cosine")


def matrix_rows(matrix: AffinityMatrix) -> tuple[int, list[list[str]]]:
    """The table of an :class:`~taskgraph.affinity.AffinityMatrix` for the console: ``(exponent, rows)``.

    Every mean is shown as ``mean × 10^-exponent`` with one decimal (the largest |mean| lands in
    [1, 10)), so a cell is at most 6 characters and 9 tasks fit in 80 columns; ``*`` marks a
    confidence interval that excludes 0 and ``–`` an unmeasured pair. The intervals themselves
    are in ``affinity.json``.
    """
    import numpy as np

    finite = np.abs(matrix.mean[np.isfinite(matrix.mean)])
    top = float(finite.max()) if finite.size else 0.0
    exponent = -math.floor(math.log10(top)) if top > 0 else 0
    return exponent, matrix.summary_rows(lambda m, h: f"{m * 10.0 ** exponent:+.1f}")


@click.command("affinity")
@click.argument("dataset")
@dataset_option
@click.option("--estimator", default="exact", show_default=True, type=click.Choice(ESTIMATOR_CHOICES),
              help="exact: TAG's lookahead (one extra forward per task); first_order: its gradient-product "
                   "approximation; cosine: gradient cosine similarity.")
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=1),
              help="Training steps to measure over.")
@click.option("--every", type=click.IntRange(min=1), default=None,
              help="Measure every N-th step (default: a wall-time budget, see --budget).")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Share of wall time spent measuring (default 0.2 when --every is not given).")
@click.option("--start", default=0, show_default=True, type=click.IntRange(min=0),
              help="First step that may be measured.")
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "adamw", "sgd"]),
              help="Optimizer of the training run (the lookahead uses its update).")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Learning rate.")
@click.option("--hidden", default="256,128", show_default=True,
              help="MLP trunk widths, comma-separated (image data always gets a small CNN).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1), help="Batch size.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the initialisation and batch order.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="affinity-out", show_default=True,
              help="Folder for heatmap.png, graph.png, affinity.json, graph.json, graph.graphml.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def affinity_cmd(dataset: str, options: tuple[str, ...], estimator: str, steps: int, every: int | None,
                 budget: float | None, start: int, optimizer: str, lr: float, hidden: str, batch_size: int, seed: int,
                 out_dir: str, quiet: bool) -> None:
    """Train on DATASET while measuring task affinity Z(i→j); print and draw it.

    Z(i→j) > 0: a step on task i's gradient lowers task j's loss. The table (stdout)
    shows each mean, scaled by the power of ten in its title; * marks entries whose
    confidence interval excludes zero (the intervals are in affinity.json).
    Negative-transfer edges (interval entirely below zero) are listed.
    """
    import torch

    from taskgraph.affinity import make_estimator, measure_affinity
    from taskgraph.graph import TaskGraph
    from taskgraph.models import MultiTaskModel, TrunkSpec
    from taskgraph.training import TrainConfig, seed_everything

    est = make_estimator(estimator)
    data = load_cli_dataset(dataset, options)
    spec = TrunkSpec("mlp", parse_widths(hidden)) if len(data.input_shape) == 1 else TrunkSpec("cnn", (16, 32))
    cfg = TrainConfig(lr=lr, optimizer=optimizer, batch_size=batch_size, seed=seed, restore_best=False)
    seed_everything(seed)
    model = MultiTaskModel(spec.build(data.input_shape), data.tasks, input_shape=data.input_shape)
    loader = data.train.loader(batch_size, shuffle=True, seed=seed)
    log(f"{data.name}: {len(data.tasks)} tasks, {len(data.train)} train samples, trunk {spec.kind} "
        f"{spec.hidden}, {optimizer} lr={lr}, estimator {est.name}, {steps} steps")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    matrix = measure_affinity(model, data.tasks, loader, estimator=est, steps=steps, every=every, budget=budget,
                              start=start, config=cfg, progress=show_progress(quiet))
    graph = TaskGraph.from_affinity(matrix)
    sched = matrix.schedule
    exponent, rows = matrix_rows(matrix)
    scale = f" ×10^-{exponent}" if exponent > 0 else (f" ×10^{-exponent}" if exponent < 0 else "")
    print_table(f"{data.name}: Z(i→j){scale}, row i helps column j", ["i \\ j", *matrix.names], rows,
                caption=f"* {matrix.confidence:.0%} CI excludes 0 ({sched.get('measured_steps')} measured steps; "
                        f"intervals in affinity.json)")
    neg = graph.negative_edges()
    click.echo("negative transfer (CI below 0): " + (", ".join(f"{a}→{b}" for a, b in neg) or "none"))
    mutual = graph.mutual_pairs()
    click.echo("mutually helpful pairs: " + (", ".join(f"{a}–{b}" for a, b in mutual) or "none"))
    if sched.get("skipped"):
        click.echo(f"skipped (task: reason → steps): {sched['skipped']}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [matrix.save(out / "affinity.json"), matrix.heatmap(out / "heatmap.png"),
             graph.draw(out / "graph.png"), graph.save_json(out / "graph.json"),
             graph.save_graphml(out / "graph.graphml")]
    click.echo("wrote " + ", ".join(str(f) for f in files))
