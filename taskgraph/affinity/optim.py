"""The optimizer's update rule, applied to many gradients at once, without side effects.

This is the one module of the affinity engine that reads an optimizer. Given
the shared parameters θ, a stack of gradients ``(c, *θ.shape)`` (one per task,
or per group of tasks) and a live ``torch.optim`` optimizer, it returns the
``c`` parameter values the optimizer *would* produce if it stepped from its
current state with each gradient alone: θ_{s|i} = update(θ, g_i, state).
The optimizer, its state and the parameters are never modified.

Closed forms (vectorised over the leading task axis) follow PyTorch's own
update rules exactly:

- ``SGD``: weight decay (L2), momentum with dampening, Nesterov, ``maximize``;
  an empty momentum buffer is initialised with the gradient, as torch does.
- ``Adam`` / ``AdamW``: L2 or decoupled weight decay, ``exp_avg`` and
  ``exp_avg_sq`` from the state (zeros before the first step), the step count
  plus one for the bias corrections, ``amsgrad``, ``maximize``.

Other element-wise optimizers of ``torch.optim`` (RMSprop, Adagrad, Adamax,
NAdam, RAdam, Adadelta) are handled by running the optimizer's own ``step``
once on a *shadow* copy: parameters and state are stacked along a new leading
task axis, so one step computes every task's update (exact, because these
rules act element by element).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    >>> opt = torch.optim.SGD([w], lr=0.1)
    >>> grads = [torch.tensor([[1.0, 0.0], [0.0, 2.0]])]  # two tasks
    >>> lookahead_parameters(opt, [w], grads)[0].double().round(decimals=4).tolist()
    [[0.9, -1.0], [1.0, -1.2]]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from taskgraph.exceptions import AffinityError

__all__ = ["SUPPORTED_OPTIMIZERS", "lookahead_parameters", "momentum_step", "update_directions"]

_SHADOW_OK = ("RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta")
SUPPORTED_OPTIMIZERS = ("SGD", "Adam", "AdamW", *_SHADOW_OK)


#: one of an optimizer's param_groups (its hyper-parameters and "params"), and one parameter's state
Group = dict[str, Any]
State = dict[str, Any]
#: a closed-form update rule: (θ, stacked gradients, group, state) -> stacked θ after one step
Rule = Callable[[torch.Tensor, torch.Tensor, Group, State], torch.Tensor]


def param_groups_of(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> list[Group | None]:
    """The optimizer's param group of each tensor in ``params`` (None for one it does not update).

    Raises:
        AffinityError: it updates none of them.
    """
    where: dict[int, Group] = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            where[id(p)] = g
    out = [where.get(id(p)) for p in params]
    if all(g is None for g in out):
        raise AffinityError(
            f"the optimizer ({type(optimizer).__name__}) must update the model's shared parameters, "
            f"but none of the {len(params)} shared parameters is in its param_groups"
        )
    return out


def _scalar(v: Any) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


def _sgd(p: torch.Tensor, g: torch.Tensor, group: Group, state: State) -> torch.Tensor:
    # torch.optim.SGD's single-tensor steps, batched over the leading axis; works in place on g
    lr, wd = _scalar(group["lr"]), _scalar(group["weight_decay"])
    mom, damp = _scalar(group["momentum"]), _scalar(group["dampening"])
    d = g.neg_() if group.get("maximize", False) else g
    if wd != 0:
        d.add_(p, alpha=wd)
    if mom != 0:
        buf = state.get("momentum_buffer")
        if buf is None:  # torch starts the buffer at the gradient itself
            if group["nesterov"]:
                d.mul_(1 + mom)
        elif group["nesterov"]:
            d.add_(torch.add(buf * mom, d, alpha=1 - damp), alpha=mom)
        else:
            d.mul_(1 - damp).add_(buf, alpha=mom)
    return d.mul_(-lr).add_(p)


def _adam(p: torch.Tensor, g: torch.Tensor, group: Group, state: State, decoupled: bool) -> torch.Tensor:
    # torch.optim.Adam/AdamW's single-tensor steps, batched over the leading axis; works in place
    # on g and allocates one more (c, *shape) buffer for the second moment
    lr, wd, eps = _scalar(group["lr"]), _scalar(group["weight_decay"]), _scalar(group["eps"])
    beta1, beta2 = (_scalar(b) for b in group["betas"])
    if group.get("maximize", False):
        g.neg_()
    base = p
    if wd != 0:
        if decoupled:
            base = p * (1 - lr * wd)
        else:
            g.add_(p, alpha=wd)
    step = _scalar(state["step"]) + 1 if "step" in state else 1.0
    exp_avg = state.get("exp_avg")
    exp_avg_sq = state.get("exp_avg_sq")
    v = torch.mul(g, g).mul_(1 - beta2) if exp_avg_sq is None else \
        torch.addcmul(exp_avg_sq * beta2, g, g, value=1 - beta2)
    m = g.mul_(1 - beta1) if exp_avg is None else g.lerp_(exp_avg, beta1)
    if group.get("amsgrad", False) and state.get("max_exp_avg_sq") is not None:
        torch.maximum(v, state["max_exp_avg_sq"], out=v)
    bc1 = 1 - beta1**step
    bc2_sqrt = math.sqrt(1 - beta2**step)
    denom = v.sqrt_().div_(bc2_sqrt).add_(eps)
    return m.div_(denom).mul_(-lr / bc1).add_(base)


def _closed_form(optimizer: torch.optim.Optimizer) -> Rule | None:
    name = type(optimizer).__name__
    if isinstance(optimizer, torch.optim.SGD) and name == "SGD":
        return lambda p, g, grp, st: _sgd(p, g, grp, st)
    if isinstance(optimizer, torch.optim.Adam) and name in ("Adam", "AdamW"):
        return lambda p, g, grp, st: _adam(p, g, grp, st, bool(grp.get("decoupled_weight_decay", name == "AdamW")))
    return None


def _shadow_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                 groups: Sequence[Group | None]) -> list[torch.Tensor]:
    """Run the optimizer's own ``step`` once on stacked copies of parameters and state."""
    name = type(optimizer).__name__
    if name not in _SHADOW_OK:
        raise AffinityError(
            f"the lookahead needs an element-wise optimizer; supported: {', '.join(SUPPORTED_OPTIMIZERS)}; "
            f"got {name}"
        )
    shadows: list[torch.Tensor] = []
    shadow_groups: dict[int, tuple[Group, list[tuple[torch.Tensor, torch.Tensor]]]] = {}
    for p, g, grp in zip(params, grads, groups):
        c = g.shape[0]
        s = p.detach().unsqueeze(0).expand(c, *p.shape).clone()
        if grp is None:
            shadows.append(s)
            continue
        s.grad = g.detach().clone()
        shadows.append(s)
        shadow_groups.setdefault(id(grp), ({k: v for k, v in grp.items() if k != "params"}, []))[1].append((p, s))
    # the element-wise optimizers of _SHADOW_OK take their param groups alone (their defaults are keywords)
    clone = type(optimizer)([{**hp, "params": [s for _, s in pairs]}  # type: ignore[call-arg]
                             for hp, pairs in shadow_groups.values()])
    for _, pairs in shadow_groups.values():
        for p, s in pairs:
            st: State = {}
            for k, v in optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape:
                    st[k] = v.detach().unsqueeze(0).expand_as(s).clone()
                elif isinstance(v, torch.Tensor):
                    st[k] = v.detach().clone()
                else:
                    st[k] = v
            if st:
                clone.state[s] = st
    with torch.no_grad():
        clone.step()
    return [s.detach() for s in shadows]


@torch.no_grad()
def lookahead_parameters(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                         grads: Sequence[torch.Tensor], *, inplace: bool = False) -> list[torch.Tensor]:
    """The parameters one optimizer step would give, for each of a stack of gradients.

    Args:
        optimizer: the live optimizer; read, never modified.
        params: the parameters to look ahead on (the shared ones).
        grads: one tensor per parameter, shape ``(c, *param.shape)``.
        inplace: may overwrite ``grads`` (saves one copy of them: peak memory ≈ the
            gradients plus one parameter's second moment, for Adam).

    Returns:
        One tensor per parameter, ``(c, *param.shape)``: θ after a step with gradient c.
        A parameter the optimizer does not hold is returned unchanged (it would not move).

    Raises:
        AffinityError: none of ``params`` is in the optimizer, or the optimizer's rule
            is not element-wise (see :data:`SUPPORTED_OPTIMIZERS`).
    """
    groups = param_groups_of(optimizer, params)
    rule = _closed_form(optimizer)
    if rule is None:
        return _shadow_step(optimizer, params, grads, groups)
    out: list[torch.Tensor] = []
    for p, g, grp in zip(params, grads, groups):
        if grp is None:
            out.append(p.detach().unsqueeze(0).expand_as(g))
        else:
            out.append(rule(p.detach(), g if inplace else g.clone(), grp, optimizer.state.get(p, {})))
    return out


def _adam_momentum_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                        groups: Sequence[Group | None]) -> list[torch.Tensor] | None:
    # Adam/AdamW with a zero gradient in three foreach operations over all parameters of a group
    # (four with decoupled weight decay):
    # m' = β1 m, v' = β2 v, θ' = base − lr/(1 − β1^t) · m' / (√v' / √(1 − β2^t) + ε), the same
    # formula as _adam with g = 0 (equal up to rounding). None where that shortcut does not
    # apply (no state yet, AMSGrad, L2 weight decay in the gradient).
    name = type(optimizer).__name__
    if not (isinstance(optimizer, torch.optim.Adam) and name in ("Adam", "AdamW")):
        return None
    out: list[torch.Tensor | None] = [None] * len(params)
    by_key: dict[tuple[int, float], list[int]] = {}
    for k, (p, grp) in enumerate(zip(params, groups)):
        if grp is None:
            out[k] = p.detach()
            continue
        st = optimizer.state.get(p, {})
        decoupled = bool(grp.get("decoupled_weight_decay", name == "AdamW"))
        wd = _scalar(grp["weight_decay"])
        if grp.get("amsgrad", False) or "exp_avg" not in st or (wd != 0 and not decoupled):
            return None
        by_key.setdefault((id(grp), _scalar(st["step"])), []).append(k)
    for (_, step), idx in by_key.items():
        grp = groups[idx[0]]
        assert grp is not None  # only parameters in a group were keyed above
        lr, wd, eps = _scalar(grp["lr"]), _scalar(grp["weight_decay"]), _scalar(grp["eps"])
        beta1, beta2 = (_scalar(b) for b in grp["betas"])
        ps = [params[k].detach() for k in idx]
        states = [optimizer.state[params[k]] for k in idx]
        step += 1
        # c·√v + ε = c·(√v + ε/c) with c = √β2 / √(1 − β2^t): the constant moves into addcdiv's scalar
        c = math.sqrt(beta2) / math.sqrt(1 - beta2**step)
        denom = torch._foreach_sqrt([s["exp_avg_sq"] for s in states])
        torch._foreach_add_(denom, eps / c)
        base = torch._foreach_mul(ps, 1 - lr * wd) if wd != 0 else ps
        m = torch._foreach_addcdiv(base, [s["exp_avg"] for s in states], denom, -lr * beta1 / ((1 - beta1**step) * c))
        for k, q in zip(idx, m):
            out[k] = q
    return out  # type: ignore[return-value]


@torch.no_grad()
def momentum_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], *,
                  groups: Sequence[Group | None] | None = None) -> list[torch.Tensor]:
    """The parameters one optimizer step with a zero gradient would give: where momentum alone goes.

    The values of ``lookahead_parameters(optimizer, params, zeros)`` (without the leading
    axis; equal up to rounding); for Adam/AdamW a few ``torch._foreach_*`` operations over all the parameters at
    once, which is what makes the tracker's momentum-drift control variate cheap.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> opt = torch.optim.Adam([w], lr=0.1)
        >>> w.sum().backward(); opt.step()  # w: 1 -> 0.9
        >>> [round(v, 4) for v in momentum_step(opt, [w])[0].tolist()]  # Adam's moments alone go on
        [0.833, 0.833, 0.833]

    ``groups``: ``param_groups_of(optimizer, params)`` when the caller keeps it.
    """
    groups = param_groups_of(optimizer, params) if groups is None else groups
    fast = _adam_momentum_step(optimizer, params, groups)
    if fast is not None:
        return fast
    zeros = [torch.zeros((1, *p.shape), dtype=p.dtype, device=p.device) for p in params]
    return [q[0] for q in lookahead_parameters(optimizer, params, zeros, inplace=True)]


def update_directions(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                      grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Δ_i = θ_{s|i} − θ: the step the optimizer would take with each gradient (``(c, *shape)``)."""
    new = lookahead_parameters(optimizer, params, grads)
    return [n - p.detach() for n, p in zip(new, params)]
