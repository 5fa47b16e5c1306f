"""``taskgraph group``: group the tasks of a dataset from measured (or saved) affinity."""

from __future__ import annotations

import json
from pathlib import Path

import click

from taskgraph.cli.common import dataset_option, groups_text, load_cli_dataset, log, print_table, show_progress

# "auto" and the names of taskgraph.grouping.base.SOLVERS (a unit test keeps them equal; importing the
# registry here would import torch for `taskgraph group --help`)
SOLVER_CHOICES = ("auto", "exact", "scalable", "hierarchy", "brute")


@click.command("group")
@click.argument("dataset")
@dataset_option
@click.option("--matrix", "matrix_path", type=click.Path(exists=True, dir_okay=False),
              help="Use a saved AffinityMatrix JSON (from `taskgraph affinity`) instead of measuring.")
@click.option("-k", "--k", "k", type=click.IntRange(min=1), default=None,
              help="The most groups (default: chosen automatically).")
@click.option("--variant", type=click.Choice(["partition", "overlap"]), default="partition", show_default=True,
              help="partition: each task in one network; overlap: a task may be served by several (--no-check only).")
@click.option("--singletons", type=click.Choice(["allow", "forbid"]), default="allow", show_default=True,
              help="allow: a task alone scores 0 (no transfer); forbid: every group has two tasks or more (TAG).")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Network budget (a group network costs 1).")
@click.option("--solver", default="auto", show_default=True, type=click.Choice(SOLVER_CHOICES),
              help="auto: exact up to 20 tasks, scalable beyond; hierarchy: agglomerative; brute: all partitions.")
@click.option("--top-m", default=3, show_default=True, type=click.IntRange(min=1), help="Groupings to rank/check.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Confirm the top groupings (and the all-in-one model) with short training runs.")
@click.option("--steps", default=150, show_default=True, type=click.IntRange(min=1),
              help="Steps of the affinity run (with --no-check: plain SGD; checked: the checks' Adam).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1), help="Epochs per check run.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the affinity run (and the first of the checks' paired seeds).")
@click.option("--out-dir", default="taskgraph-grouping", show_default=True, type=click.Path(file_okay=False),
              help="Where grouping.json and the pictures go.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def group_cmd(dataset: str, options: tuple[str, ...], matrix_path: str | None, k: int | None, variant: str,
              singletons: str, budget: float | None, solver: str, top_m: int, check: bool, steps: int, epochs: int,
              seed: int, out_dir: str, quiet: bool) -> None:
    """Rank groupings of DATASET's tasks by TAG's serving score and pick one.

    Affinity is measured with TAG's exact lookahead during a short training run
    (plain SGD with --no-check, the checks' Adam otherwise), or read from --matrix.
    With --check (the default) the top groupings and the all-in-one model are
    trained over paired seeds; a grouping replaces all-in-one only when its
    validation gain is sure (lower validation loss is better).
    """
    from taskgraph.affinity import AffinityMatrix, measure_affinity
    from taskgraph.grouping import group_tasks
    from taskgraph.models import MultiTaskModel, TrunkSpec
    from taskgraph.training import TrainConfig, seed_everything

    data = load_cli_dataset(dataset, options)
    hidden = tuple(data.info.get("trunk_hidden", (256, 128)))
    spec = TrunkSpec("mlp", hidden) if len(data.input_shape) == 1 else TrunkSpec("cnn", (16, 32))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    aff_cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.0, batch_size=128, seed=seed, restore_best=False)
    log(f"{data.name}: {len(data.tasks)} tasks, trunk {spec.kind} {spec.hidden}")

    if check:
        from taskgraph.pipeline import auto_group

        if matrix_path:
            raise click.UsageError("--matrix needs --no-check (auto-grouping measures its own affinity)")
        # one policy: the affinity run trains like the checked networks (their optimizer), for --steps steps
        check_cfg = TrainConfig(epochs=epochs, lr=3e-3, batch_size=128, seed=seed, patience=5)
        result = auto_group(lambda: spec.build(data.input_shape), data.tasks, None, None, data=data, k=k,
                            variant=variant, singletons=singletons, budget=budget, top_m=top_m, solver=solver,
                            seed=seed, check_config=check_cfg,
                            affinity_config=check_cfg.replace(epochs=1, max_steps=steps, patience=None),
                            out_dir=out, quiet=quiet)
        rows = [["all-in-one" if c.affinity_rank == 0 else f"#{c.affinity_rank}", groups_text(c.grouping.groups),
                 c.grouping.score, c.val_loss, "" if c.test_loss is None else c.test_loss] for c in result.candidates]
        print_table(f"{data.name}: candidates by validation loss", ["rank", "groups", "score", "val loss ↓",
                                                                  "test loss ↓"], rows,
                    caption="↓ lower is better; score: the affinity's serving score (higher is better)")
        chosen = result.grouping
        (out / "auto_group.json").write_text(json.dumps(result.to_dict(), indent=2))
        result.matrix.save(out / "affinity.json")
    else:
        if matrix_path:
            matrix = AffinityMatrix.load(matrix_path)
        else:
            seed_everything(seed)
            model = MultiTaskModel(spec.build(data.input_shape), data.tasks, input_shape=data.input_shape)
            matrix = measure_affinity(model, data.tasks, data.train.loader(128, shuffle=True, seed=seed),
                                      steps=steps, every=2, config=aff_cfg, progress=show_progress(quiet))
            matrix.save(out / "affinity.json")
        ranked = group_tasks(matrix, k=k, variant=variant, singletons=singletons, budget=budget, top_m=top_m,
                             solver=solver)
        rows = [[f"#{i}", groups_text(g.groups), g.score, "yes" if g.optimal else ""]
                for i, g in enumerate(ranked, 1)]
        print_table(f"{data.name}: groupings by serving score", ["rank", "groups", "score ↑", "proven"], rows,
                    caption="↑ higher is better; proven: no grouping scores higher")
        chosen = ranked[0]
        chosen.plot(matrix, out / "grouping.png")
    chosen.save(out / "grouping.json")
    click.echo(f"chosen: {chosen}")
    click.echo(f"wrote {out / 'grouping.json'} and pictures in {out}")
