"""The one training loop, per-task evaluation, single-task baselines and Δm%.

Everything that trains a model in taskgraph goes through :func:`train`:
affinity tracking, early stopping and reporting hang on it as
:class:`Callback` objects; loss weightings plug in as
:class:`~taskgraph.weighting.base.LossWeighting` objects. The loop never
branches on a method's name.

Δm% convention (Maninis et al. 2019; as reported by Nash-MTL and FAMO, lower is
better)::

    Δm% = 100/T · Σ_t (−1)^{h_t} · (M_t − B_t) / B_t

with ``M_t`` the multi-task model's metric on task t, ``B_t`` the single-task
baseline's and ``h_t`` = 1 when higher is better. **Negative Δm% means the
multi-task model beats the single-task models**; positive means negative transfer.

Example:
    >>> from taskgraph.data import planted_clusters
    >>> from taskgraph.models import MultiTaskModel, mlp
    >>> data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=400, seed=0)
    >>> model = MultiTaskModel(mlp(32, (32,)), data.tasks, input_shape=data.input_shape)
    >>> result = fit(model, data, TrainConfig(epochs=2, seed=0))
    >>> sorted(result.test.metrics)
    ['t0', 't1', 't2', 't3']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.optimizer import ParamsT

from taskgraph.data.base import Batch, MultiTaskData, unpack_batch
from taskgraph.exceptions import ConfigError, TaskGraphError
from taskgraph.models.base import MultiTaskModel, resolve_device
from taskgraph.tasks import TaskSet
from taskgraph.weighting.base import EqualWeighting, LossWeighting

__all__ = [
    "Callback",
    "OPTIMIZERS",
    "Evaluation",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingDiverged",
    "build_optimizer",
    "delta_m",
    "evaluate",
    "fit",
    "per_task_delta",
    "seed_everything",
    "task_losses",
    "train",
    "train_partition",
]

#: the optimizers :class:`TrainConfig` accepts
OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULERS = ("none", "cosine", "step")


class TrainingDiverged(TaskGraphError):
    """A task's loss became NaN or infinite during training."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, schedule, budget, seed.

    Attributes:
        epochs: passes over the training loader (>= 1).
        lr: learning rate (> 0).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        momentum: SGD's momentum, 0 <= momentum < 1.
        nesterov: SGD's Nesterov momentum (needs ``optimizer="sgd"`` and momentum > 0).
        weight_decay: L2 (SGD/Adam) or decoupled (AdamW), >= 0.
        betas: Adam's.
        scheduler: ``"none"``, ``"cosine"`` (to 0 over the run) or ``"step"`` (×0.1 at 2/3).
        batch_size: training batch size.
        max_steps: stop after this many optimizer steps (None: no cap).
        grad_clip: clip the global gradient norm (None: no clipping).
        seed: seeds torch, numpy and the loader's shuffling.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...
        restore_best: keep the weights of the epoch with the best mean validation loss.
        patience: stop when the mean validation loss has not improved for this many epochs
            (early stopping; None: run every epoch). Needs a validation loader.
    """

    epochs: int = 20
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: str = "none"
    batch_size: int = 256
    max_steps: int | None = None
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    restore_best: bool = True
    patience: int | None = None

    def __post_init__(self) -> None:
        def bad(key: str, must: str, got: object) -> NoReturn:
            raise ConfigError(f"TrainConfig: {must}, got {got!r}", key=key)

        if not isinstance(self.epochs, int) or self.epochs < 1:
            bad("epochs", "'epochs' must be an int >= 1", self.epochs)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", "'lr' must be finite and > 0", self.lr)
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"'optimizer' must be one of {', '.join(OPTIMIZERS)}", self.optimizer)
        if self.scheduler not in _SCHEDULERS:
            bad("scheduler", f"'scheduler' must be one of {', '.join(_SCHEDULERS)}", self.scheduler)
        if self.weight_decay < 0:
            bad("weight_decay", "'weight_decay' must be >= 0", self.weight_decay)
        if not 0 <= self.momentum < 1:
            bad("momentum", "0 <= 'momentum' < 1 must hold", self.momentum)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            bad("batch_size", "'batch_size' must be an int >= 1", self.batch_size)
        if self.max_steps is not None and self.max_steps < 1:
            bad("max_steps", "'max_steps' must be >= 1 or None", self.max_steps)
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            bad("grad_clip", "'grad_clip' must be finite and > 0, or None", self.grad_clip)
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            bad("patience", "'patience' must be an int >= 1 or None", self.patience)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            bad("nesterov", "nesterov needs optimizer 'sgd' with momentum > 0", self.nesterov)

    def replace(self, **changes: Any) -> TrainConfig:
        from dataclasses import replace

        return replace(self, **changes)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy (CPU runs are then reproducible)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds legacy global users


def build_optimizer(params: ParamsT, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over ``params``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.nesterov)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def _build_scheduler(opt: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> LRScheduler | None:
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, (2 * total_steps) // 3), gamma=0.1)
    return None


@dataclass
class TrainState:
    """What changes during a run; callbacks read it (and may set ``stop``)."""

    model: nn.Module
    tasks: TaskSet
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    weighting: LossWeighting
    weighting_state: Any = None
    scheduler: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    step: int = 0
    epoch: int = 0
    stop: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    #: optimizer steps the run plans (epochs × batches per epoch, capped by ``max_steps``); None when
    #: the loader has no length and no ``max_steps`` is set. Early stopping may end the run sooner.
    total_steps: int | None = None


class Callback:
    """Hooks into :func:`train`. Override what you need; all default to nothing."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_step_begin(self, state: TrainState, batch: Batch) -> None:
        """Before the step's forward pass; parameters and optimizer state are pre-step."""

    def on_losses(self, state: TrainState, batch: Batch, losses: Mapping[str, torch.Tensor]) -> None:
        """After the step's forward pass, before its backward: ``losses`` are the per-task loss
        tensors of the step (part of the autograd graph: detach what you keep); parameters and
        optimizer state are still pre-step."""

    def on_step_end(self, state: TrainState, batch: Batch, losses: Mapping[str, float]) -> None: ...

    def on_epoch_end(self, state: TrainState, val: Evaluation | None) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


@dataclass(frozen=True)
class Evaluation:
    """Per-task losses and metrics on one split (labelled samples only)."""

    losses: dict[str, float]
    metrics: dict[str, float]
    counts: dict[str, int]

    @property
    def mean_loss(self) -> float:
        return float(np.mean(list(self.losses.values())))

    def to_dict(self) -> dict[str, Any]:
        return {"losses": self.losses, "metrics": self.metrics, "counts": self.counts}


def task_losses(model: nn.Module, tasks: TaskSet, x: torch.Tensor, ys: Mapping[str, torch.Tensor],
                ms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masked mean loss of each task on one batch."""
    out = model(x)
    return {t.name: t.loss(out[t.name], ys[t.name], ms[t.name]) for t in tasks}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], tasks: TaskSet, *,
             device: torch.device | str | None = None) -> Evaluation:
    """Per-task mean loss and metric over a whole loader; unlabelled samples ignored."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was = model.training
    model.eval()
    preds: dict[str, list[torch.Tensor]] = {t: [] for t in tasks.names}
    labels: dict[str, list[torch.Tensor]] = {t: [] for t in tasks.names}
    try:
        for batch in loader:
            x, ys, ms = unpack_batch(batch)
            out = model(x.to(dev))
            for t in tasks:
                m = ms[t.name].to(dev)
                preds[t.name].append(out[t.name][m].float().cpu())
                labels[t.name].append(ys[t.name].to(dev)[m].cpu())
    finally:
        model.train(was)
    losses, metrics, counts = {}, {}, {}
    for t in tasks:
        p = torch.cat(preds[t.name]) if preds[t.name] else torch.empty(0)
        y = torch.cat(labels[t.name]) if labels[t.name] else torch.empty(0)
        counts[t.name] = int(y.shape[0])
        losses[t.name] = float(t.loss(p, y)) if y.numel() else float("nan")
        metrics[t.name] = t.score(p.numpy(), y.numpy())
    return Evaluation(losses, metrics, counts)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: per-epoch history, final validation/test evaluations."""

    history: list[dict[str, Any]]
    val: Evaluation | None
    test: Evaluation | None
    best_epoch: int
    steps: int
    seconds: float


def _to(batch: object, device: torch.device) -> Batch:
    x, ys, ms = unpack_batch(batch)
    if x.device == device:
        return x, ys, ms
    return (x.to(device), {k: v.to(device) for k, v in ys.items()},
            {k: v.to(device) for k, v in ms.items()})


def train(
    model: nn.Module,
    tasks: TaskSet,
    train_loader: Iterable[Any],
    *,
    config: TrainConfig = TrainConfig(),
    val_loader: Iterable[Any] | None = None,
    test_loader: Iterable[Any] | None = None,
    callbacks: Sequence[Callback] = (),
    weighting: LossWeighting | None = None,
    progress: bool = False,
    description: str = "training",
) -> TrainResult:
    """Train ``model`` on ``tasks``; evaluate per task on validation and test.

    Args:
        model: maps ``x`` to ``{task: prediction}`` (e.g. a :class:`MultiTaskModel`).
        tasks: the tasks to train; every one must have a head in ``model``.
        train_loader: yields ``(x, {task: y}, {task: mask})`` (masks optional).
        config: optimizer, schedule, budget and seed.
        val_loader: evaluated per task after each epoch and at the end.
        test_loader: evaluated per task at the end.
        callbacks: hooks (affinity tracking, reporting, early stopping).
        weighting: how per-task losses become gradients (default: equal weights).
        progress: show a progress bar.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TrainingDiverged: a task's loss became NaN/inf (names the task and step).
    """
    device = resolve_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"TrainConfig.device: {config.device!r} needs a CUDA build of torch and a visible GPU, "
                          f"and torch.cuda.is_available() is False here (use 'auto' or 'cpu')", key="device")
    model.to(device)
    seed_everything(config.seed)
    weighting = weighting or EqualWeighting()
    wstate = weighting.init_state(tasks.names, model)
    params = list(model.parameters()) + list(weighting.extra_parameters(wstate))
    opt = build_optimizer(params, config)
    try:
        per_epoch = len(cast(Sized, train_loader))  # a loader of an IterableDataset has no length
        known = True
    except TypeError:
        per_epoch, known = config.max_steps or 1000, bool(config.max_steps)
    total = per_epoch * config.epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    state = TrainState(model=model, tasks=tasks, optimizer=opt, config=config, weighting=weighting,
                       weighting_state=wstate, scheduler=_build_scheduler(opt, config, total),
                       device=device, total_steps=total if known else None)
    best: tuple[float, int, dict[str, torch.Tensor] | None] = (math.inf, -1, None)
    best_loss, best_epoch = math.inf, -1
    t0 = time.perf_counter()
    bar = _Progress(total, description) if progress else None
    model.train()
    for cb in callbacks:
        cb.on_train_begin(state)
    try:
        for epoch in range(config.epochs):
            state.epoch = epoch
            sums = dict.fromkeys(tasks.names, 0.0)
            nb = 0
            for batch in train_loader:
                batch = _to(batch, device)
                for cb in callbacks:
                    cb.on_step_begin(state, batch)
                x, ys, ms = batch
                opt.zero_grad(set_to_none=True)
                losses = task_losses(model, tasks, x, ys, ms)
                values = {k: float(v.detach()) for k, v in losses.items()}
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise TrainingDiverged(
                        f"loss of task(s) {bad} became non-finite at step {state.step} "
                        f"(epoch {epoch}); lower 'lr' or check the data"
                    )
                for cb in callbacks:
                    cb.on_losses(state, batch, losses)
                weighting.backward(losses, model, wstate, step=state.step, epoch=epoch)
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
                if state.scheduler is not None:
                    state.scheduler.step()
                state.step += 1
                nb += 1
                for k, v in values.items():
                    sums[k] += v
                for cb in callbacks:
                    cb.on_step_end(state, batch, values)
                if bar:
                    bar.advance(float(np.mean(list(values.values()))))
                if state.stop or (config.max_steps and state.step >= config.max_steps):
                    break
            epoch_losses = {k: v / max(nb, 1) for k, v in sums.items()}
            weighting.on_epoch_end(wstate, epoch_losses, epoch)
            val = evaluate(model, val_loader, tasks, device=device) if val_loader is not None else None
            record = {"epoch": epoch, "step": state.step, "train_loss": epoch_losses}
            if val is not None:
                record["val_loss"] = val.losses
                record["val_metric"] = val.metrics
                if val.mean_loss < best_loss:
                    best_loss, best_epoch = val.mean_loss, epoch
                    if config.restore_best:
                        best = (val.mean_loss, epoch,
                                {k: v.detach().clone() for k, v in model.state_dict().items()})
            state.history.append(record)
            for cb in callbacks:
                cb.on_epoch_end(state, val)
            if config.patience is not None and val is not None and epoch - best_epoch >= config.patience:
                state.stop = True
            if state.stop or (config.max_steps and state.step >= config.max_steps):
                break
    finally:
        if bar:
            bar.close()
    if best[2] is not None:
        model.load_state_dict(best[2])
    for cb in callbacks:
        cb.on_train_end(state)
    val = evaluate(model, val_loader, tasks, device=device) if val_loader is not None else None
    test = evaluate(model, test_loader, tasks, device=device) if test_loader is not None else None
    return TrainResult(state.history, val, test, best[1] if best[2] is not None else state.epoch,
                       state.step, time.perf_counter() - t0)


class _Progress:
    """A rich progress bar that shows the running mean training loss."""

    def __init__(self, total: int, description: str):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                           transient=True)
        self._p.start()
        self._id = self._p.add_task(description, total=total, loss=float("nan"))

    def advance(self, loss: float) -> None:
        self._p.update(self._id, advance=1, loss=loss)

    def close(self) -> None:
        self._p.stop()


def fit(model: nn.Module, data: MultiTaskData, config: TrainConfig = TrainConfig(), **kwargs: Any) -> TrainResult:
    """:func:`train` on a :class:`MultiTaskData`'s fixed splits (shuffle seeded by ``config.seed``)."""
    tr, va, te = data.loaders(config.batch_size, seed=config.seed)
    return train(model, data.tasks, tr, config=config, val_loader=va, test_loader=te, **kwargs)


def train_partition(
    trunk_factory: Callable[[], nn.Module],
    data: MultiTaskData,
    groups: Sequence[Sequence[str]],
    config: TrainConfig = TrainConfig(),
    *,
    weighting: LossWeighting | None = None,
    progress: bool = False,
) -> dict[str, Evaluation]:
    """Train one hard-shared model per group; merge each task's val/test evaluation.

    ``[[all tasks]]`` is the all-in-one model; singletons give single-task baselines.
    Each group's model is built right after seeding with ``config.seed``.

    Returns:
        ``{"val": Evaluation, "test": Evaluation}`` over all tasks of ``groups``.
    """
    merged: dict[str, dict[str, dict[str, Any]]] = {"val": {"l": {}, "m": {}, "c": {}},
                                                    "test": {"l": {}, "m": {}, "c": {}}}
    for i, group in enumerate(groups):
        sub = data.subset_tasks(list(group))
        seed_everything(config.seed)
        model = MultiTaskModel(trunk_factory(), sub.tasks, input_shape=data.input_shape)
        res = fit(model, sub, config, weighting=weighting, progress=progress,
                  description=f"group {i + 1}/{len(groups)}")
        for split, ev in (("val", res.val), ("test", res.test)):
            assert ev is not None
            merged[split]["l"].update(ev.losses)
            merged[split]["m"].update(ev.metrics)
            merged[split]["c"].update(ev.counts)
    order = [t for g in groups for t in g]
    return {
        s: Evaluation({t: d["l"][t] for t in order}, {t: d["m"][t] for t in order},
                      {t: d["c"][t] for t in order})
        for s, d in merged.items()
    }


def per_task_delta(mtl: Mapping[str, float], single: Mapping[str, float], tasks: TaskSet) -> dict[str, float]:
    """Each task's (−1)^{higher_is_better}·(M − B)/B·100 (negative = MTL better)."""
    out = {}
    for name in mtl:
        t = tasks[name]
        b = single[name]
        if b == 0 or not math.isfinite(b):
            raise TaskGraphError(f"delta_m: the single-task baseline of task {name!r} must be "
                                 f"finite and non-zero, got {b}")
        sign = -1.0 if t.higher_is_better else 1.0
        out[name] = sign * (mtl[name] - b) / abs(b) * 100.0
    return out


def delta_m(mtl: Mapping[str, float], single: Mapping[str, float], tasks: TaskSet) -> float:
    """Δm% over the tasks of ``mtl`` (lower is better; negative = MTL beats single-task).

    Example:
        >>> from taskgraph.tasks import Task, TaskSet
        >>> ts = TaskSet([Task("r"), Task("c", "binary")])
        >>> round(delta_m({"r": 0.9, "c": 0.8}, {"r": 1.0, "c": 0.8}, ts), 6)
        -5.0
    """
    return float(np.mean(list(per_task_delta(mtl, single, tasks).values())))
