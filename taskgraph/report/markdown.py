"""Render a :class:`~taskgraph.report.data.ReportData` as markdown with PNG pictures."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from taskgraph.grouping.plot import new_figure, save_figure
from taskgraph.report.data import ReportData

__all__ = ["render_markdown", "write_report"]


def _f(v: Any, fmt: str = ".4f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, fmt) if math.isfinite(v) else str(v)
    return _cell(str(v))


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (grouping labels contain '|')."""
    return text.replace("|", "\\|").replace("\n", " ")


def _groups(groups: Sequence[Sequence[str]] | None) -> str:
    if not groups:
        return "—"
    return " ".join("{" + ", ".join(g) + "}" for g in groups)


def _optuna_figure(plot: Callable[..., Any], path: Path, **kwargs: Any) -> Path:
    """Draw one of Optuna's own matplotlib plots (``optuna.visualization.matplotlib``) into ``path``."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # the matplotlib backend is marked experimental
        ax = plot(**kwargs)
    fig = ax.figure
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path


def _plot_history(data: ReportData, path: Path) -> Path | None:
    done = [t for t in data.trials if t.state == "COMPLETE" and t.values]
    if not done or data.multi_objective or data.study is None:
        return None
    from optuna.visualization.matplotlib import plot_optimization_history

    return _optuna_figure(plot_optimization_history, path, study=data.study,
                          target_name=f"{data.objective} (lower is better)")


def _plot_pareto(data: ReportData, path: Path) -> Path | None:
    done = [t for t in data.trials if t.state == "COMPLETE" and t.values]
    if not data.multi_objective or not done or len(data.task_names) < 2 or data.study is None:
        return None
    from optuna.visualization.matplotlib import plot_pareto_front

    names = [f"val loss {t}" for t in data.task_names[:2]]
    return _optuna_figure(plot_pareto_front, path, study=data.study, targets=lambda t: (t.values[0], t.values[1]),
                          target_names=names)


def _plot_per_task(data: ReportData, path: Path) -> Path | None:
    rows = [r for r in data.per_task if r["delta_pct"] is not None]
    if not rows:
        return None
    fig, ax = new_figure(figsize=(max(4, 0.6 * len(rows) + 2), 3.5))
    ax.bar([r["task"] for r in rows], [r["delta_pct"] for r in rows],
           color=["C2" if r["delta_pct"] < 0 else "C3" for r in rows])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("Δ% vs single-task (test; < 0 better)")
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path


def render_markdown(data: ReportData, pictures: dict[str, str]) -> str:
    """The report's markdown; ``pictures`` maps a picture's role to its file name."""
    cfg = data.config
    out = [f"# Study `{data.study_name}`", ""]
    out.append(f"- dataset: `{cfg.get('dataset', '?')}` {cfg.get('dataset_options', {})}, "
               f"{len(data.task_names)} tasks: {', '.join(data.task_names)}")
    out.append(f"- objective: `{data.objective}` ({', '.join(data.directions)}), sampler `{cfg.get('sampler', '?')}`, "
               f"budget {cfg.get('trials', '?')} trials × {cfg.get('epochs', '?')} epochs")
    out.append(f"- storage: `{data.storage_url}`")
    out.append("- trials: " + ", ".join(f"{v} {k}" for k, v in data.counts.items()))
    out.append("")
    if not data.best:
        out += ["No trial completed.", ""]
    elif not data.multi_objective:
        b = data.best[0]
        out += ["## Best configuration", "", f"Trial {b.number}: {data.objective} = {_f(b.value(0))} (lower is better)"
                + (f", test Δm% = {b.delta_m_test:+.2f} (lower is better)" if b.delta_m_test is not None else ""),
                ""]
        out += ["| parameter | value |", "|---|---|"]
        out += [f"| {k} | {_f(v, '.4g')} |" for k, v in b.params.items()]
        out += [f"| groups | {_groups(b.groups)} |", ""]
    else:
        out += ["## Pareto front", "", f"{len(data.best)} non-dominated trial(s) over the per-task validation "
                "losses (lower is better).", ""]
        out.append("| trial | " + " | ".join(data.task_names) + " | grouping | topology | weighting |")
        out.append("|---" * (len(data.task_names) + 4) + "|")
        for t in data.best:
            out.append(f"| {t.number} | " + " | ".join(_f(v) for v in (t.values or ())) +
                       f" | {_groups(t.groups)} | {t.topology} | {t.weighting} |")
        out.append("")
    if data.per_task:
        title = "best trial" if not data.multi_objective else f"trial {data.best[0].number}" if data.best else "best"
        out += [f"## Per task (test split): {title} vs single-task and all-in-one", "",
                "Δ% = (−1)^higher_is_better · (best − single) / single · 100, lower is better; negative: the "
                "searched model beats the single-task model.", "",
                "| task | metric | single-task | all-in-one | " + title + " | Δ% |", "|---|---|---|---|---|---|"]
        for r in data.per_task:
            arrow = "" if r["higher_is_better"] is None else (" ↑" if r["higher_is_better"] else " ↓")
            out.append(f"| {r['task']} | {r['metric']}{arrow} | {_f(r['single_task'])} | {_f(r['all_in_one'])} | "
                       f"{_f(r['best'])} | {_f(r['delta_pct'], '+.2f')} |")
        out.append("")
    if data.groupings:
        out += ["## Groupings searched", "", "| label | groups | grouping score |", "|---|---|---|"]
        out += [f"| {_cell(lb)} | {_groups(g)} | {_f(data.scores.get(lb))} |" for lb, g in data.groupings.items()]
        out.append("")
    if data.decision and data.decision.get("statement"):
        # how sure the prepare stage's checks were (docs/quality.md): the paired difference to all-in-one
        out += ["## Grouping decision (the prepare stage's checks)", "", str(data.decision["statement"]), ""]
    pics = [(role, name) for role, name in pictures.items()]
    if pics:
        out += ["## Pictures", ""]
        out += [f"![{role}]({name})" for role, name in pics]
        out.append("")
    out += ["## Trials", "", "↓ lower is better.", "",
            "| # | state | value(s) ↓ | grouping | topology | weighting | test Δm% ↓ | note |",
            "|---|---|---|---|---|---|---|---|"]
    for t in data.trials:
        vals = ", ".join(_f(v) for v in t.values) if t.values else "—"
        note = _cell(t.fail_reason or "")
        out.append(f"| {t.number} | {t.state} | {vals} | {_cell(t.grouping or '—')} | {t.topology or '—'} | "
                   f"{t.weighting or '—'} | {_f(t.delta_m_test, '+.2f')} | {note} |")
    out.append("")
    return "\n".join(out)


def write_report(data: ReportData, out_dir: str | Path) -> Path:
    """Write ``report.md`` and its pictures into ``out_dir``; return the markdown file's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pictures: dict[str, str] = {}
    for role, fn, name in (("optimisation history", _plot_history, "history.png"),
                           ("Pareto front", _plot_pareto, "pareto.png"),
                           ("per-task Δ% of the best trial", _plot_per_task, "per_task.png")):
        if fn(data, out / name) is not None:
            pictures[role] = name
    for filename, path in data.study_artifacts:
        if filename.endswith(".png"):
            shutil.copyfile(path, out / filename)
            pictures[filename.removesuffix(".png").replace("_", " ")] = filename
    md = out / "report.md"
    md.write_text(render_markdown(data, pictures))
    return md

