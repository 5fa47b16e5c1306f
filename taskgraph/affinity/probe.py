"""Autograd plumbing shared by the affinity estimators: one batch, many lookaheads.

A :class:`Probe` is built for one batch. It runs one forward pass with a
graph, keeps the per-task losses L(now), and then answers two questions in
batches of tasks:

- :meth:`Probe.gradients`: the gradients on the shared parameters of any
  weighted sums of task losses (rows of a weight matrix; the identity gives the
  per-task gradients, a 0/1 row the summed gradient of a group of tasks), in one
  batched backward pass per chunk (``is_grads_batched``);
- :meth:`Probe.losses_at`: every task's loss at a stack of shared-parameter
  values, in one ``torch.func.vmap`` over ``torch.func.functional_call``.

Two model paths give the same numbers:

- the *stacked-heads* path, for a :class:`~taskgraph.models.base.MultiTaskModel`
  whose heads are all ``nn.Linear``: the trunk runs under ``vmap`` and the heads
  are one matrix product on the stacked features; per-task gradients reach the
  trunk as one batched vector-Jacobian product of the features;
- the *generic* path, for any model that exposes ``shared_parameters()`` and
  maps ``x`` to ``{task: prediction}``: the whole model runs under ``vmap`` with
  the shared parameters overridden (heads keep their own weights).

No side effects: forwards run on copies of the module buffers (batch-norm
statistics), and the estimators fork the random number generator, so measuring
never changes training.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from taskgraph.exceptions import AffinityError
from taskgraph.gradients import per_task_gradients
from taskgraph.tasks import TaskSet

__all__ = ["LossPlan", "Probe", "StackedLoss", "linear_heads", "shared_parameters_of", "stacked_heads"]


def shared_parameters_of(model: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    """Names and tensors of ``model.shared_parameters()``.

    Accepts ``(name, parameter)`` pairs or bare parameters (named by identity).

    Raises:
        AffinityError: no ``shared_parameters`` method, an empty result, or a
            parameter that is not one of ``model.named_parameters()``.
    """
    fn = getattr(model, "shared_parameters", None)
    if not callable(fn):
        raise AffinityError(
            f"affinity needs the model's shared parameters: {type(model).__name__} must define "
            "shared_parameters() -> iterable of (name, parameter), as MultiTaskModel does"
        )
    by_id = {id(p): n for n, p in model.named_parameters()}
    names, params = [], []
    for item in fn():
        p = item[1] if isinstance(item, tuple) else item
        if id(p) not in by_id:
            raise AffinityError(
                f"{type(model).__name__}.shared_parameters() yielded a tensor of shape {tuple(p.shape)} "
                "that is not one of model.named_parameters()"
            )
        if p.requires_grad:
            names.append(by_id[id(p)])
            params.append(p)
    if not params:
        raise AffinityError(
            f"{type(model).__name__}.shared_parameters() must yield at least one trainable parameter, got none"
        )
    return names, params


class LossPlan:
    """What :class:`StackedLoss` takes from the task set alone: built once, reused for every batch.

    The tasks grouped by kind and output width, each group's task indices, output columns and
    ``loss_scale`` (as tensors, cached per dtype and device).
    """

    def __init__(self, tasks: TaskSet):
        self.tasks = tasks
        self.n = len(tasks)
        self.offsets: list[int] = []
        col = 0
        for t in tasks:
            self.offsets.append(col)
            col += t.out_dim
        self.width = col
        by_kind: dict[tuple[str, int], list[int]] = {}
        for i, t in enumerate(tasks):
            by_kind.setdefault((t.kind, t.out_dim), []).append(i)
        self.groups = [(kind, width, idx, [tasks[i].name for i in idx]) for (kind, width), idx in by_kind.items()]
        self._tensors: dict[tuple[Any, ...], list[tuple[torch.Tensor, ...]]] = {}
        self._column_tasks: dict[torch.device, torch.Tensor] = {}

    def tensors(self, dtype: torch.dtype, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
        """Per group: ``(task indices, output columns, loss scales)`` on ``device``."""
        key = (dtype, torch.device(device))
        if key not in self._tensors:
            self._tensors[key] = [
                (torch.tensor(idx, device=device),
                 torch.tensor([self.offsets[i] + c for i in idx for c in range(width)], device=device),
                 torch.tensor([self.tasks[i].loss_scale for i in idx], dtype=dtype, device=device))
                for _, width, idx, _ in self.groups]
        return self._tensors[key]


    def column_tasks(self, device: torch.device) -> torch.Tensor:
        """``(D,)``: the index of the task each output column belongs to, on ``device``."""
        key = torch.device(device)
        if key not in self._column_tasks:
            self._column_tasks[key] = torch.tensor([i for i, t in enumerate(self.tasks) for _ in range(t.out_dim)],
                                                   device=device)
        return self._column_tasks[key]


class StackedLoss:
    """Every task's masked mean loss from one concatenated output tensor.

    ``H`` has shape ``(..., B, D)``: the heads' outputs side by side (regression
    and binary tasks one column, multiclass tasks ``num_classes`` columns, in
    task order). Equal to :meth:`taskgraph.tasks.Task.loss` per task, including
    ``loss_scale``, computed in a few vectorised operations per task kind.
    ``plan``: the task set's :class:`LossPlan` when the caller keeps one (a loss per batch
    of the same tasks then builds only the batch's targets and masks).
    """

    def __init__(self, tasks: TaskSet, ys: Mapping[str, torch.Tensor], ms: Mapping[str, torch.Tensor], *,
                 dtype: torch.dtype, device: torch.device,
                 plan: LossPlan | None = None):
        plan = plan if plan is not None else LossPlan(tasks)
        self.n, self.width, self.offsets = plan.n, plan.width, plan.offsets
        self.parts = []
        self._counts = []
        for (kind, width, where, names), (idx, cols, scale) in zip(plan.groups, plan.tensors(dtype, device)):
            mask = torch.stack([ms[n] for n in names], -1).to(device)  # (B, k)
            counts = mask.sum(0)
            self._counts.append((where, counts))
            count = counts.clamp_min(1).to(dtype)
            ys_k = [ys[n].to(device) for n in names]
            if kind == "multiclass":
                y = torch.stack(ys_k, -1).long()
                y = torch.where(mask, y, torch.zeros((), dtype=y.dtype, device=device))
            else:
                y = torch.stack(ys_k, -1).to(dtype)
                y = torch.where(mask, y, torch.zeros((), dtype=dtype, device=device))
            self.parts.append((kind, width, idx, cols, y, mask.to(dtype), scale, count))

    def labelled(self) -> np.ndarray:
        """``(n,)`` bool array: which tasks have a labelled sample in the batch."""
        out = np.zeros(self.n, dtype=bool)
        for idx, counts in self._counts:
            out[idx] = counts.cpu().numpy() > 0
        return out

    def __call__(self, H: torch.Tensor) -> torch.Tensor:
        """Losses ``(..., n)`` from outputs ``(..., B, D)``."""
        out = H.new_zeros((*H.shape[:-2], self.n))
        for kind, width, idx, cols, y, mask, scale, count in self.parts:
            h = H.index_select(-1, cols)
            if kind == "regression":
                per = (h - y) ** 2
            elif kind == "binary":
                per = F.binary_cross_entropy_with_logits(h, y.expand_as(h), reduction="none")
            else:
                h = h.unflatten(-1, (-1, width))  # (..., B, k, C)
                logp = torch.log_softmax(h, -1)
                per = -torch.gather(logp, -1, y.expand(*h.shape[:-1]).unsqueeze(-1)).squeeze(-1)
            val = (per * scale * mask).sum(-2) / count
            out = out.index_copy(-1, idx, val)
        return out

    def output_grad_sums(self, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The losses ``(n,)`` from outputs ``H`` ``(B, D)``, and each output column's batch-summed
        gradient of its task's loss, ``(D,)``: Σ_b ∂L_task(c)/∂H[b, c], in closed form (no autograd).

        Example:
            >>> import torch
            >>> from taskgraph.tasks import Task, TaskSet
            >>> tasks = TaskSet([Task("a"), Task("b", kind="binary")])
            >>> ys = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0, 1.0])}
            >>> ms = {n: torch.ones(2, dtype=torch.bool) for n in ys}
            >>> loss = StackedLoss(tasks, ys, ms, dtype=torch.float32, device=torch.device("cpu"))
            >>> H = torch.zeros(2, 2, requires_grad=True)
            >>> values, sums = loss.output_grad_sums(H.detach())
            >>> torch.allclose(sums, torch.autograd.grad(loss(H).sum(), H)[0].sum(0))
            True
        """
        out = H.new_zeros(self.n)
        grad = H.new_zeros(self.width)
        for kind, width, idx, cols, y, mask, scale, count in self.parts:
            h = H.index_select(-1, cols)
            w = scale * mask / count  # (B, k): d(per-sample loss) -> d(task loss)
            if kind == "regression":
                r = h - y
                per, g = r * r, 2.0 * r * w
            elif kind == "binary":
                per = F.binary_cross_entropy_with_logits(h, y, reduction="none")
                g = (torch.sigmoid(h) - y) * w
            else:
                h = h.unflatten(-1, (-1, width))  # (B, k, C)
                logp = torch.log_softmax(h, -1)
                per = -torch.gather(logp, -1, y.unsqueeze(-1)).squeeze(-1)
                g = ((logp.exp() - F.one_hot(y, width).to(h.dtype)) * w.unsqueeze(-1)).flatten(-2)
            out = out.index_copy(-1, idx, (per * scale * mask).sum(-2) / count)
            grad = grad.index_copy(-1, cols, g.sum(-2))
        return out, grad

    def concat(self, preds: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
        """``{task: (..., B, out)}`` (or ``(..., B)`` for one output) → ``(..., B, D)``."""
        cols = []
        for name, off, nxt in zip(names, self.offsets, [*self.offsets[1:], self.width]):
            p = preds[name]
            if nxt - off == 1 and p.shape[-1] != 1:
                p = p.unsqueeze(-1)
            cols.append(p)
        return torch.cat(cols, -1)


def linear_heads(model: nn.Module, shared_names: Sequence[str]) -> bool:
    """Whether ``model`` is a plain MultiTaskModel with ``nn.Linear`` heads whose shared parameters are its trunk's."""
    from taskgraph.models.base import MultiTaskModel

    if not isinstance(model, MultiTaskModel):
        return False
    cls = type(model)
    if any(getattr(cls, m) is not getattr(MultiTaskModel, m) for m in ("forward", "features", "heads_forward")):
        return False
    if not all(type(model.heads[n]) is nn.Linear for n in model.tasks.names):
        return False
    trunk = [f"trunk.{n}" for n, p in model.trunk.named_parameters() if p.requires_grad]
    return list(shared_names) == trunk


def stacked_heads(model: nn.Module, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The linear heads of ``names`` as one ``(D, F)`` weight and ``(D,)`` bias (None if a head has
    none), detached: the heads' outputs side by side in one matrix product (see :class:`StackedLoss`)."""
    all_heads = cast(nn.ModuleDict, model.heads)  # a MultiTaskModel's, with linear heads (see linear_heads)
    heads = [cast(nn.Linear, all_heads[n]) for n in names]
    bias = None if any(h.bias is None for h in heads) else torch.cat([h.bias for h in heads]).detach()
    return torch.cat([h.weight for h in heads]).detach(), bias


class Probe:
    """One batch's losses, batched gradients and batched lookahead losses.

    Args:
        model: a model exposing ``shared_parameters()``; ``model(x)`` → ``{task: pred}``.
        tasks: the tasks measured (their order is the matrix order); each must be a key of
            the model's output.
        x, ys, ms: the batch; tasks without a labelled sample are left out (see ``active``).

    Attributes:
        active: indices (into ``tasks``) of the tasks measured on this batch.
        skipped: ``{task: reason}`` for the others.
        base: ``(len(active),)`` losses at the current parameters.
    """

    def __init__(self, model: nn.Module, tasks: TaskSet, x: torch.Tensor, ys: Mapping[str, torch.Tensor],
                 ms: Mapping[str, torch.Tensor], *,
                 graph: bool = True):
        self.model = model
        self.names, self.params = shared_parameters_of(model)
        self.skipped: dict[str, str] = {}
        active: list[int] = []
        for i, t in enumerate(tasks):
            if t.name not in ys:
                raise AffinityError(f"the batch has no labels for task {t.name!r}; labelled: {sorted(ys)}")
            if not bool(ms[t.name].any()):
                self.skipped[t.name] = "no labelled sample"
            else:
                active.append(i)
        self.x = x
        self.stacked = linear_heads(model, self.names)
        dtype = self.params[0].dtype
        self.base = torch.empty(0, dtype=dtype, device=x.device)
        # buffers (batch-norm statistics) are cloned: forwards update the clones, never the model's
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.shared_bytes = sum(p.numel() * p.element_size() for p in self.params)
        self.param_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        self.act_bytes = 0
        if not graph:  # lookahead losses only (losses_at); no forward with a graph, no base losses
            self.active = active
            if active:
                self.tasks = tasks.subset([tasks[i].name for i in active])
                self.loss = StackedLoss(self.tasks, ys, ms, dtype=dtype, device=x.device)
                if self.stacked:
                    self.W, self.b = stacked_heads(model, self.tasks.names)
            return
        while active:
            self.tasks = tasks.subset([tasks[i].name for i in active])
            self.loss = StackedLoss(self.tasks, ys, ms, dtype=dtype, device=x.device)
            seen: dict[int, int] = {}

            def pack(t: torch.Tensor, seen: dict[int, int] = seen) -> torch.Tensor:
                st = t.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                if self.stacked:
                    self._forward_stacked()
                else:
                    self._forward_generic()
            self.act_bytes = sum(seen.values())
            bad = (~torch.isfinite(self.losses.detach())).nonzero().flatten().tolist()
            if not bad:
                break
            # forward again without them, so their non-finite values never reach a gradient
            for k in bad:
                self.skipped[self.tasks[k].name] = "non-finite loss"
            active = [i for k, i in enumerate(active) if k not in bad]
        self.active = active
        if active:
            self.base = self.losses.detach()

    # ------------------------------------------------------------------ forward
    def _forward_generic(self) -> None:
        bufs = {n: b.clone() for n, b in self.buffers.items()}
        out = functional_call(self.model, bufs, (self.x,)) if bufs else self.model(self.x)
        missing = [t for t in self.tasks.names if t not in out]
        if missing:
            raise AffinityError(f"the model's output must have a prediction per task; missing {missing}")
        self.losses = self.loss(self.loss.concat(out, self.tasks.names))

    def _forward_stacked(self) -> None:
        m = self.model
        trunk = cast(nn.Module, m.trunk)  # stacked: a MultiTaskModel (see linear_heads)
        self.W, self.b = stacked_heads(m, self.tasks.names)  # (D, F), (D,)
        bufs = {n[len("trunk."):]: b.clone() for n, b in self.buffers.items() if n.startswith("trunk.")}
        z = functional_call(trunk, bufs, (self.x,)) if bufs else trunk(self.x)
        self.z = z
        zd = z.detach().requires_grad_(True)
        H = F.linear(zd, self.W, self.b)
        self.losses = self.loss(H)
        (self.G_H,) = torch.autograd.grad(self.losses.sum(), H)  # column block i = dL_i/dH_i
        # task -> its head's columns, as a (n, D) 0/1 selector
        sel = torch.zeros(len(self.tasks), self.loss.width, dtype=z.dtype, device=z.device)
        for k, (off, nxt) in enumerate(zip(self.loss.offsets, [*self.loss.offsets[1:], self.loss.width])):
            sel[k, off:nxt] = 1
        self.sel = sel

    # ---------------------------------------------------------------- gradients
    def gradients(self, weights: torch.Tensor, *, last: bool = False) -> list[torch.Tensor]:
        """Gradients on the shared parameters of ``weights @ L`` (``weights``: (c, n_active)).

        Returns one ``(c, *param.shape)`` tensor per shared parameter.
        """
        weights = weights.to(self.base.dtype)
        if self.stacked:
            # d(w·L)/dz = Σ_i w_i (dL_i/dH restricted to head i) W
            cols = weights @ self.sel  # (c, D)
            gz = (self.G_H.unsqueeze(0) * cols.unsqueeze(1)) @ self.W  # (c, B, F)
            out = torch.autograd.grad(self.z, self.params, grad_outputs=gz, is_grads_batched=True,
                                      retain_graph=not last, allow_unused=True)
            return [torch.zeros((weights.shape[0], *p.shape), dtype=p.dtype, device=p.device) if g is None else g
                    for g, p in zip(out, self.params)]
        return list(per_task_gradients(weights @ self.losses, self.params, retain_graph=not last))

    def auto_chunk(self, budget: float = 1.0, state_bytes: int = 0, *, floor_bytes: int = 0) -> int:
        """Tasks per chunk that keep a measurement's extra memory within ``budget`` plain steps.

        A plain training step's footprint is the parameters, their gradients, the optimizer's
        state (``state_bytes``) and one forward's saved activations:
        ``plain = 2 × param_bytes + state_bytes + act_bytes``. A measurement adds one forward's
        activations (the probe's own forward) and, per task of a chunk, about one copy of the
        shared parameters (its gradient, turned into its lookahead values in place) and one
        forward's activations (its slice of the batched backward and of the lookahead
        forward). The chunk is the largest that keeps the addition within ``budget × plain``:
        ``max(1, floor((budget × plain − act_bytes) / (shared_bytes + act_bytes)))``.
        The activation bytes are counted exactly on this batch's forward (saved-tensor hooks).
        ``floor_bytes``: allow at least this much extra memory whatever the budget (the
        estimators pass a share of a CUDA device's free memory).
        """
        plain = 2 * self.param_bytes + state_bytes + self.act_bytes
        per_task = max(self.shared_bytes + self.act_bytes, 1)
        allowed = max(budget * plain, floor_bytes)
        return max(1, int((allowed - self.act_bytes) // per_task))

    @staticmethod
    def chunks(n_rows: int, chunk_size: int | None) -> Iterator[slice]:
        """Slices of at most ``chunk_size`` rows, as even as possible (9 rows by 8 → 5 + 4)."""
        k = 1 if not chunk_size else -(-n_rows // max(1, int(chunk_size)))
        size = -(-n_rows // k) if n_rows else 0
        for s in range(0, n_rows, max(size, 1)):
            yield slice(s, min(n_rows, s + size))

    # ----------------------------------------------------------------- lookahead
    @torch.no_grad()
    def losses_at(self, stacked: Sequence[torch.Tensor]) -> torch.Tensor:
        """Every active task's loss with the shared parameters set to each of ``stacked``.

        ``stacked`` holds one ``(c, *param.shape)`` tensor per shared parameter;
        returns ``(c, n_active)``. Heads keep their current weights.
        """
        c = stacked[0].shape[0]
        bufs = {n: b.unsqueeze(0).expand(c, *b.shape).clone() for n, b in self.buffers.items()}
        if self.stacked:
            pre = "trunk."
            pd = {n[len(pre):]: p for n, p in zip(self.names, stacked)}
            bd = {n[len(pre):]: b for n, b in bufs.items() if n.startswith(pre)}
            trunk, x = cast(nn.Module, self.model.trunk), self.x

            def feats(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
                z: torch.Tensor = functional_call(trunk, (p, b), (x,))
                return z

            z = vmap(feats, randomness="same")(pd, bd)  # (c, B, F)
            return self.loss(F.linear(z, self.W, self.b))
        pd = dict(zip(self.names, stacked))
        model, x, names = self.model, self.x, self.tasks.names

        def run(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
            out = functional_call(model, (p, b), (x,))
            return self.loss(self.loss.concat(out, names))

        return vmap(run, randomness="same")(pd, bufs)
