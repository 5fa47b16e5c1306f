"""Affinity during training: the :class:`AffinityTracker` callback and :func:`measure_affinity`.

The tracker measures Z_{i→j} (see :mod:`taskgraph.affinity.estimators`) at the
start of scheduled training steps — before the step, on the step's own batch,
with the optimizer's state as it is then — and keeps every per-step sample.
:meth:`AffinityTracker.matrix` averages them into an
:class:`~taskgraph.affinity.matrix.AffinityMatrix` with standard errors and
confidence intervals. Measuring never changes training: parameters, optimizer
state, buffers and the random number stream are left as they were, so a run
with tracking follows the same trajectory as one without.

Schedules (:class:`Schedule`):

- ``Schedule(every=k)``: steps ``start, start + k, ...`` (deterministic);
- ``Schedule(budget=f)`` (the default, f = 0.2): the time spent measuring stays
  within ``f`` × the wall time of the rest of the run, so the run costs about
  ``1 + f`` times as much whatever the number of tasks, the model or the
  machine. Measured steps spread evenly over the run, each in the middle of the
  stretch of training that pays for it (never at the very first step, whose
  fresh optimizer state makes its affinities unlike the rest of the run); within
  :func:`~taskgraph.training.train` at least one step is measured by the middle
  of the run.

With your own training loop, call :meth:`AffinityTracker.measure` (always
measures) or :meth:`AffinityTracker.maybe_measure` (applies the schedule)
before ``optimizer.step()``::

    tracker = AffinityTracker("exact", tasks=tasks, schedule=Schedule(every=5))
    for step, batch in enumerate(loader):
        tracker.maybe_measure(model, optimizer, batch, step=step)
        ...  # forward, backward, optimizer.step()
    matrix = tracker.matrix()

Example:
    >>> from taskgraph.data import planted_clusters
    >>> from taskgraph.models import MultiTaskModel, mlp
    >>> from taskgraph.training import TrainConfig
    >>> data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=400, seed=0)
    >>> model = MultiTaskModel(mlp(32, (32,)), data.tasks, input_shape=(32,))
    >>> loader = data.train.loader(64, shuffle=True)
    >>> m = measure_affinity(model, data.tasks, loader, steps=10, every=2, config=TrainConfig(lr=1e-2))
    >>> m.names, int(m.n_samples.max())
    (('t0', 't1', 't2', 't3'), 5)
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from taskgraph.affinity.drift import StepDrift, momentum_drift
from taskgraph.affinity.estimators import AffinityEstimator, AffinityStep, make_estimator
from taskgraph.affinity.matrix import AffinityMatrix
from taskgraph.data.base import unpack_batch
from taskgraph.exceptions import AffinityError
from taskgraph.tasks import TaskSet
from taskgraph.training import Callback, TrainConfig, TrainState, train

__all__ = ["DEFAULT_BUDGET", "DEFAULT_CONTROL", "DEFAULT_CONTROL_SHARE", "DEFAULT_SUB_BATCH", "AffinityTracker",
           "Schedule", "measure_affinity"]

#: default share of the run's wall time spent measuring (see :class:`Schedule`)
DEFAULT_BUDGET = 0.2
#: default samples of the step's batch a measurement takes gradients on (None: all; see :class:`AffinityTracker`)
DEFAULT_SUB_BATCH = None
#: default period of the momentum-drift control variate (see :class:`AffinityTracker`)
DEFAULT_CONTROL = 1
#: default most of a budget schedule's time the drift control variate may use (see :class:`AffinityTracker`)
DEFAULT_CONTROL_SHARE = 0.6


@dataclass(frozen=True)
class Schedule:
    """Which training steps the tracker measures.

    Attributes:
        every: measure steps ``start, start + every, ...``; exclusive with ``budget``.
        budget: measure when (time measuring so far + half of one more measurement) ≤
            budget × (the rest of the run's wall time): evenly spaced measurements, each in
            the middle of the stretch that pays for it; the default when ``every`` is not given.
        start: no measurement before this step (skip the first, unsettled steps).
        max_samples: stop measuring after this many samples (None: no cap).

    Raises:
        AffinityError: both or bad values.
    """

    every: int | None = None
    budget: float | None = None
    start: int = 0
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if self.every is not None and self.budget is not None:
            raise AffinityError(f"Schedule: give 'every' or 'budget', not both; got every={self.every}, "
                                f"budget={self.budget}")
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            raise AffinityError(f"Schedule: 'every' must be an int >= 1, got {self.every!r}")
        if self.budget is not None and not (isinstance(self.budget, int | float) and 0 < self.budget
                                            and math.isfinite(self.budget)):
            raise AffinityError(f"Schedule: 'budget' must be a finite number > 0, got {self.budget!r}")
        if not isinstance(self.start, int) or self.start < 0:
            raise AffinityError(f"Schedule: 'start' must be an int >= 0, got {self.start!r}")
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 1):
            raise AffinityError(f"Schedule: 'max_samples' must be an int >= 1 or None, got {self.max_samples!r}")
        if self.every is None and self.budget is None:
            object.__setattr__(self, "budget", DEFAULT_BUDGET)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"every": self.every} if self.every is not None else {"budget": self.budget}
        d["start"] = self.start
        if self.max_samples is not None:
            d["max_samples"] = self.max_samples
        return d


class AffinityTracker(Callback):
    """Measure inter-task affinity on a schedule during training.

    Args:
        estimator: a name in :data:`~taskgraph.affinity.estimators.ESTIMATORS`
            (``"exact"``, ``"first_order"``, ``"cosine"``) or an estimator instance.
        schedule: which steps to measure (default: a 20% wall-time budget).
        tasks: the tasks in matrix order (default: the training run's task set).
        confidence: level of the matrix's confidence intervals.
        chunk_size: tasks per batched lookahead (when ``estimator`` is a name; default:
            chosen from a memory budget, see :class:`~taskgraph.affinity.estimators.AffinityEstimator`).
        sub_batch: take the per-task gradients on a random subset of this many samples of the
            step's batch (default None: the whole batch). The ``exact`` estimator still
            evaluates every loss on the whole batch (``eval_batch`` of
            :meth:`~taskgraph.affinity.estimators.AffinityEstimator.measure`): gradients from a
            part and losses on the whole agree in expectation with both on the whole batch, while
            both on the same few samples would overstate how much tasks agree
            (``benchmarks/affinity_schedule_ceiling.py``). The batched backward then runs on the
            sub-batch, so each measurement is cheaper (``benchmarks/affinity_speed.py --only
            drift``), but its gradients are noisier; on the benchmark runs the whole batch ranked
            task pairs better for the same budget. The other estimators use the sub-batch for
            everything. The subset is drawn with the tracker's own generator (``seed``), never
            the global one.
        seed: seed of the sub-batch generator.
        control: every ``control``-th step (from ``schedule.start``; under a budget schedule only
            while the drift has used at most ``control_share`` of the budget), and at every measured step on
            the same sub-batch, measure the optimizer's momentum drift D_j (the change of task j's
            loss under a step with a zero gradient, :func:`~taskgraph.affinity.drift.momentum_drift`;
            no backward; inside ``train()`` one forward from the step's own losses,
            :class:`~taskgraph.affinity.drift.StepDrift`) and use it as a control variate: the
            matrix averages Z_{i→j} − D_j over the measured steps and adds D_j averaged over all drift steps. With a
            momentum optimizer most of every lookahead is the shared momentum, so Z's step-to-step
            swings are mostly D's and the corrected average is much closer to the every-step average
            for the same number of full measurements. With linear heads each drift also gives
            the proxy P_{i→j} of what the source task's own gradient adds
            (:meth:`~taskgraph.affinity.drift.StepDrift.measure`; no extra forward), a second
            control variate: the matrix also subtracts β × (P at the measured steps − P averaged
            over all drift steps), β the least-squares slope of the measured steps' Z − D on P
            (:attr:`proxy_beta`). None: off (plain average). Only for estimators that use the
            optimizer; its time counts against the budget. Default 1.
        control_share: under a budget schedule, the most of the budget the drift may use (the
            full measurements get the rest); in (0, 1). Default 0.6: on the benchmark run a drift at
            more steps ranks task pairs better than another full measurement would
            (``benchmarks/affinity_speed.py --only run``).

    Attributes:
        steps: the training steps measured, in order.
        skipped: ``{task: {reason: count}}`` over measured steps.
        seconds: wall time spent measuring.
        proxy_beta: the slope of the proxy control variate in the last :meth:`matrix` (None: not used).

    Raises:
        UnknownNameError: unknown estimator name.
    """

    def __init__(self, estimator: str | AffinityEstimator = "exact", *, schedule: Schedule | None = None,
                 tasks: TaskSet | None = None, confidence: float = 0.95, chunk_size: int | None = None,
                 sub_batch: int | None = DEFAULT_SUB_BATCH, seed: int = 0,
                 control: int | None = DEFAULT_CONTROL, control_share: float = DEFAULT_CONTROL_SHARE):
        kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
        if sub_batch is not None and (not isinstance(sub_batch, int) or isinstance(sub_batch, bool) or sub_batch < 1):
            raise AffinityError(f"AffinityTracker: 'sub_batch' must be an int >= 1 or None, got {sub_batch!r}")
        self.sub_batch = sub_batch
        self.seed = seed
        if control is not None and (not isinstance(control, int) or isinstance(control, bool) or control < 1):
            raise AffinityError(f"AffinityTracker: 'control' must be an int >= 1 or None, got {control!r}")
        if not (isinstance(control_share, int | float) and 0 < control_share < 1):
            raise AffinityError(f"AffinityTracker: 0 < 'control_share' < 1 must hold, got {control_share!r}")
        self.control_share = float(control_share)
        self.estimator = make_estimator(estimator, **kwargs)
        self.control = control if self.estimator.uses_optimizer else None
        self.schedule = schedule or Schedule()
        if not 0 < confidence < 1:
            raise AffinityError(f"AffinityTracker: 0 < confidence < 1 must hold, got {confidence}")
        self.confidence = confidence
        self.tasks = tasks
        self.reset()

    def reset(self) -> None:
        """Forget every sample (a new run starts)."""
        self.steps: list[int] = []
        self._samples: list[np.ndarray] = []
        self.skipped: dict[str, Counter[str]] = {}
        self.seconds = 0.0
        self._t0: float | None = None
        self._cost: float | None = None
        self._seen = 0
        self._gen = torch.Generator().manual_seed(self.seed)
        self._drift_seconds = 0.0
        self._drift_cost: float | None = None
        self._paired: list[np.ndarray] = []  # drift on each measured step, on the batch its losses were taken on
        self._drifts: list[np.ndarray] = []  # drift on every drift step (measured ones included)
        self._proxies: list[np.ndarray | None] = []  # the drift's (n, n) proxy, aligned with _drifts
        self._paired_proxies: list[np.ndarray | None] = []  # aligned with _paired
        self.proxy_beta: float | None = None
        self._measured_step: int | None = None
        self._step_drift: StepDrift | None = None
        self._first_step: int | None = None
        self._total_steps: int | None = None

    # ----------------------------------------------------------- training loop
    def on_train_begin(self, state: TrainState) -> None:
        """Take the run's task set unless one was given; samples of earlier runs are kept (see reset)."""
        if self.tasks is None:
            self.tasks = state.tasks
        self._t0 = time.perf_counter()
        self._first_step = None
        self._total_steps = state.total_steps

    def on_step_begin(self, state: TrainState, batch: Sequence[Any]) -> None:
        # the drift of unmeasured steps waits for on_losses, which brings the step's own losses
        self.maybe_measure(state.model, state.optimizer, batch, step=state.step, drift=False)

    def on_losses(self, state: TrainState, batch: Sequence[Any], losses: Mapping[str, torch.Tensor]) -> None:
        """The drift control variate of an unmeasured step, from the step's own losses (one forward)."""
        if self.tasks is None or self._measured_step == state.step or not self._drift_due(state.step):
            return
        base = None
        if all(n in losses for n in self.tasks.names):
            base = torch.stack([losses[n].detach() for n in self.tasks.names])
        self._drift(state.model, state.optimizer, batch, base)

    def _drift_of(self, model: nn.Module) -> StepDrift:
        # what the drift needs from the model and the tasks, looked up once (the drift runs at most steps)
        if self.tasks is None:
            raise AffinityError("AffinityTracker: the task set is unknown; pass tasks= when used outside train()")
        if self._step_drift is None or self._step_drift.model is not model or self._step_drift.tasks is not self.tasks:
            self._step_drift = StepDrift(model, self.tasks)
        return self._step_drift

    def _drift_at(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Sequence[Any],
                  base: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray | None]:
        drift = self._drift_of(model)
        if base is None or drift.random():
            return momentum_drift(model, optimizer, batch, drift.tasks), None
        return drift.measure(optimizer, batch, base, proxy=True)

    # ------------------------------------------------------------ own loops
    def due(self, step: int) -> bool:
        """Whether the schedule measures ``step`` now."""
        s = self.schedule
        if step < s.start or (s.max_samples is not None and len(self._samples) >= s.max_samples):
            return False
        if s.every is not None:
            return (step - s.start) % s.every == 0
        if self._first_step is None:
            self._first_step = step
        if self._t0 is None:
            return False
        rest = time.perf_counter() - self._t0 - self.seconds
        cost = self._cost
        if cost is None:  # before the first measurement: a prior of n/2 plain steps at the step time so far
            seen = step - self._first_step
            if seen < 1 or rest <= 0:
                return self._overdue(step)
            cost = 0.5 * max(1, len(self.tasks) if self.tasks is not None else 1) * rest / seen
        # the middle of the stretch that pays for this measurement
        assert s.budget is not None  # a Schedule without 'every' has a budget (see Schedule.__post_init__)
        return self.seconds + 0.5 * cost <= s.budget * rest or self._overdue(step)

    def _overdue(self, step: int) -> bool:
        # nothing measured yet and half of a known-length run gone: measure now
        s, total = self.schedule, self._total_steps
        return not self._samples and total is not None and step >= s.start + max(0, total - s.start) // 2

    def maybe_measure(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Sequence[Any], *,
                      step: int | None = None, drift: bool = True) -> AffinityStep | None:
        """Measure if the schedule says so (``step`` defaults to a call counter).

        ``drift=False`` leaves an unmeasured step's drift control variate to the caller
        (:meth:`on_losses` in :func:`~taskgraph.training.train`).
        """
        step = self._seen if step is None else step
        self._seen = step + 1
        if self._t0 is None:
            self._t0 = time.perf_counter()
        if self.due(step):
            self._measured_step = step
            return self.measure(model, optimizer, batch, step=step)
        if drift and self._drift_due(step):
            # on the batch the paired drifts see: the whole one when the lookahead losses are taken on it
            self._drift(model, optimizer, batch if self.estimator.evaluates_losses else self._subset(batch), None)
        return None

    def _drift(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Sequence[Any],
               base: torch.Tensor | None) -> None:
        t = time.perf_counter()
        d, p = self._drift_at(model, optimizer, batch, base)
        self._drifts.append(d)
        self._proxies.append(p)
        dt = time.perf_counter() - t
        self.seconds += dt
        self._drift_seconds += dt
        self._drift_cost = dt if self._drift_cost is None else 0.5 * self._drift_cost + 0.5 * dt

    def _drift_due(self, step: int) -> bool:
        # every `control` steps; under a budget schedule the drift may use at most `control_share` of the budget
        s = self.schedule
        if self.control is None or step < s.start or (step - s.start) % self.control:
            return False
        if s.budget is None or self._drift_cost is None or self._t0 is None:
            return True
        rest = time.perf_counter() - self._t0 - self.seconds
        return self._drift_seconds + self._drift_cost <= self.control_share * s.budget * rest

    def measure(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Sequence[Any], *,
                step: int | None = None) -> AffinityStep:
        """Measure now, on ``batch``, before the optimizer steps; keep the sample.

        Raises:
            AffinityError: no task set known (give ``tasks=``), or the estimator's errors.
        """
        if self.tasks is None:
            raise AffinityError("AffinityTracker: the task set is unknown; pass tasks= when used outside train()")
        t = time.perf_counter()
        sub = self._subset(batch)
        if sub is not batch and self.estimator.evaluates_losses:
            # gradients on the sub-batch, every loss on the whole batch (unbiased; see measure)
            out = self.estimator.measure(model, optimizer, sub, self.tasks, eval_batch=batch)
            sub = batch
        else:
            out = self.estimator.measure(model, optimizer, sub, self.tasks)
        if self.control is not None:
            # the estimator's losses at θ are this drift's base: one forward
            base = torch.as_tensor(out.losses)
            d, p = self._drift_at(model, optimizer, sub, base)
            self._paired.append(d)
            self._drifts.append(d)
            self._paired_proxies.append(p)
            self._proxies.append(p)
        dt = time.perf_counter() - t
        self.seconds += dt
        self._cost = dt if self._cost is None else 0.5 * self._cost + 0.5 * dt
        self._samples.append(out.values)
        self.steps.append(self._seen - 1 if step is None else step)
        for task, reason in out.skipped.items():
            self.skipped.setdefault(task, Counter())[reason] += 1
        return out

    def _subset(self, batch: Sequence[Any]) -> Sequence[Any]:
        """``batch`` restricted to ``sub_batch`` random samples (``batch`` itself when not larger)."""
        x, ys, ms = unpack_batch(batch)
        if self.sub_batch is None or x.shape[0] <= self.sub_batch:
            return batch
        idx = torch.randperm(x.shape[0], generator=self._gen)[: self.sub_batch].to(x.device)
        return x[idx], {k: v[idx] for k, v in ys.items()}, {k: v[idx] for k, v in ms.items()}

    # ------------------------------------------------------------------ result
    def _proxy_correction(self, rest: np.ndarray) -> tuple[float, np.ndarray | None]:
        # the second control variate: β × (P_s − mean P over every drift step), with β the
        # least-squares slope of the measured steps' Z − D on their P, within each task pair
        # (off the diagonal); None when a drift step has no proxy or fewer than 2 steps measured
        if len(self._paired_proxies) < 2 or any(p is None for p in self._proxies):
            return 0.0, None
        paired = np.stack(self._paired_proxies)  # type: ignore[arg-type]
        off = ~np.eye(paired.shape[1], dtype=bool)
        rc = rest - np.nanmean(rest, 0)
        pc = paired - np.nanmean(paired, 0)
        ok = np.isfinite(rc) & np.isfinite(pc) & off
        den = float(np.sum(pc[ok] ** 2))
        if not den > 0:
            return 0.0, None
        beta = float(np.sum(rc[ok] * pc[ok]) / den)
        centred = paired - np.nanmean(np.stack(self._proxies), 0)  # type: ignore[arg-type]
        return beta, np.nan_to_num(centred, nan=0.0)

    @property
    def samples(self) -> np.ndarray:
        """``(S, n, n)`` per-step values measured so far."""
        n = len(self.tasks) if self.tasks is not None else 0
        return np.stack(self._samples) if self._samples else np.empty((0, n, n))

    def matrix(self, *, keep_samples: bool = True) -> AffinityMatrix:
        """The mean matrix with standard errors and confidence intervals.

        With ``control`` on, the matrix's samples are the control-variate corrected ones,
        Z_s − D_s + mean(D) (:attr:`samples` keeps the raw values); the interval then
        describes the corrected average and leaves out the (small) uncertainty of mean(D).

        Raises:
            AffinityError: nothing was measured yet.
        """
        if not self._samples or self.tasks is None:
            raise AffinityError(
                "AffinityTracker.matrix: no step was measured; train longer, lower Schedule.start or "
                "measure with every=1"
            )
        sched = {**self.schedule.to_dict(), "sub_batch": self.sub_batch, "measured_steps": len(self.steps),
                 "seconds": round(self.seconds, 4)}
        if self.skipped:
            sched["skipped"] = {t: dict(c) for t, c in self.skipped.items()}
        samples = self.samples
        self.proxy_beta = None
        if self.control is not None and self._paired:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a task never labelled: NaN mean
                mean_drift = np.nanmean(np.stack(self._drifts), 0)
                paired = np.stack(self._paired)[:, None, :]
                beta, proxy = self._proxy_correction(samples - paired)
            samples = samples - paired + mean_drift[None, None, :]
            sched["control"] = {"every": self.control, "drift_steps": len(self._drifts)}
            if proxy is not None:
                samples = samples - beta * proxy
                self.proxy_beta = beta
                sched["control"]["proxy_beta"] = round(beta, 6)
        return AffinityMatrix.from_samples(self.tasks.names, samples, confidence=self.confidence,
                                           estimator=self.estimator.name, schedule=sched,
                                           keep_samples=keep_samples)


def measure_affinity(model: nn.Module, tasks: TaskSet, train_loader: Iterable[Any], *,
                     estimator: str | AffinityEstimator = "exact", steps: int | None = None,
                     every: int | None = None, budget: float | None = None,
                     start: int = 0, config: TrainConfig | None = None, confidence: float = 0.95,
                     chunk_size: int | None = None, sub_batch: int | None = DEFAULT_SUB_BATCH,
                     control: int | None = DEFAULT_CONTROL, progress: bool = False) -> AffinityMatrix:
    """Train ``model`` (in place) with an :class:`AffinityTracker` and return its matrix.

    Args:
        model: exposes ``shared_parameters()``, maps ``x`` to ``{task: pred}``.
        tasks: the tasks, in matrix order.
        train_loader: yields ``(x, {task: y}[, {task: mask}])``.
        estimator: ``"exact"`` (TAG lookahead), ``"first_order"``, ``"cosine"`` or an instance.
        steps: train this many optimizer steps (None: ``config.epochs`` epochs).
        every: measure every ``every``-th step; exclusive with ``budget``.
        budget: wall-time share for measuring (default 0.2 when ``every`` is None).
        start: first step that may be measured.
        config: how to train (optimizer, learning rate, ...); default ``TrainConfig()``.
        sub_batch: samples of each measured batch used (None: all); see :class:`AffinityTracker`.
        control: period of the momentum-drift control variate (None: off); see :class:`AffinityTracker`.

    Returns:
        The :class:`~taskgraph.affinity.matrix.AffinityMatrix`.

    Raises:
        AffinityError: bad schedule, no shared parameters, nothing measured.
        UnknownNameError: unknown estimator name.
    """
    config = config or TrainConfig()
    schedule = Schedule(every=every, budget=budget, start=start)
    tracker = AffinityTracker(estimator, schedule=schedule, tasks=tasks, confidence=confidence,
                              chunk_size=chunk_size, sub_batch=sub_batch,
                              control=control)
    if steps is not None:
        if not isinstance(steps, int) or steps < 1:
            raise AffinityError(f"measure_affinity: 'steps' must be an int >= 1 or None, got {steps!r}")
        try:
            per_epoch = max(1, len(cast(Sized, train_loader)))  # a DataLoader of an IterableDataset raises
        except TypeError:
            per_epoch = steps
        config = config.replace(max_steps=steps, epochs=max(1, math.ceil(steps / per_epoch)))
    train(model, tasks, train_loader, config=config, callbacks=[tracker], progress=progress,
          description="measuring affinity")
    return tracker.matrix()
