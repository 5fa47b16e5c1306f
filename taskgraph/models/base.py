"""The multi-task model protocol: a shared trunk and one head per task.

:class:`MultiTaskModel` wraps any ``nn.Module`` trunk the user brings (MLP,
CNN, ...) and adds one head per task. It names its *shared* parameters — the
ones every task's gradient reaches — which is what affinity estimators and
gradient-based loss weightings operate on.

Example:
    >>> import torch
    >>> from taskgraph.tasks import Task, TaskSet
    >>> from taskgraph.models.trunks import mlp
    >>> tasks = TaskSet([Task("a"), Task("b", "multiclass", num_classes=3)])
    >>> model = MultiTaskModel(mlp(8, (16,)), tasks, input_shape=(8,))
    >>> out = model(torch.randn(5, 8))
    >>> out["a"].shape, out["b"].shape
    (torch.Size([5, 1]), torch.Size([5, 3]))
    >>> [n for n, _ in model.shared_parameters()]
    ['trunk.0.weight', 'trunk.0.bias']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from taskgraph.exceptions import ModelError
from taskgraph.tasks import TaskSet

__all__ = ["MultiTaskModel", "infer_out_features", "linear_heads", "resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → CUDA when present, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def infer_out_features(trunk: nn.Module, input_shape: Sequence[int]) -> int:
    """The trunk's flattened output width, from one forward pass on zeros."""
    was_training = trunk.training
    trunk.eval()
    try:
        p = next(trunk.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
        with torch.no_grad():
            out = trunk(torch.zeros((2, *input_shape), device=dev))
    except Exception as e:  # the user's module rejected the input shape
        raise ModelError(
            f"trunk {type(trunk).__name__} failed on input_shape {tuple(input_shape)}: {e}"
        ) from e
    finally:
        trunk.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"trunk {type(trunk).__name__} must return one tensor (batch, features), got "
                         f"{type(out).__name__}; return the shared features only (heads are added per task)")
    if out.ndim != 2:
        raise ModelError(
            f"trunk output must be (batch, features), got shape {tuple(out.shape)}; "
            "end the trunk with nn.Flatten()"
        )
    return int(out.shape[1])


def linear_heads(tasks: TaskSet, in_features: int, hidden: int | None = None) -> nn.ModuleDict:
    """One head per task: linear, or a one-hidden-layer MLP when ``hidden`` is set."""
    heads: dict[str, nn.Module] = {}
    for t in tasks:
        if hidden:
            heads[t.name] = nn.Sequential(
                nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, t.out_dim)
            )
        else:
            heads[t.name] = nn.Linear(in_features, t.out_dim)
    return nn.ModuleDict(heads)


class MultiTaskModel(nn.Module):
    """A shared trunk feeding one head per task (hard parameter sharing).

    Args:
        trunk: any module mapping a batch of inputs to ``(B, F)`` features.
        tasks: the task set; one head per task.
        heads: optional ``{task: module}``; default linear heads.
        input_shape: per-sample input shape, needed to infer F when heads are built here.
        head_hidden: hidden width of default heads (None: linear heads).

    Raises:
        ModelError: heads that do not match the task names, or a trunk without parameters.
    """

    def __init__(
        self,
        trunk: nn.Module,
        tasks: TaskSet,
        *,
        heads: Mapping[str, nn.Module] | nn.ModuleDict | None = None,
        input_shape: Sequence[int] | None = None,
        head_hidden: int | None = None,
    ):
        super().__init__()
        self.tasks = tasks
        self.trunk = trunk
        if heads is None:
            if input_shape is None:
                raise ModelError("MultiTaskModel: give 'heads' or 'input_shape' to build heads")
            heads = linear_heads(tasks, infer_out_features(trunk, input_shape), head_hidden)
        missing = [n for n in tasks.names if n not in heads]
        extra = sorted(set(heads) - set(tasks.names))
        if missing or extra:
            raise ModelError(
                f"MultiTaskModel: one head per task must exist; missing heads {missing}, "
                f"heads for unknown tasks {extra}"
            )
        self.heads = heads if isinstance(heads, nn.ModuleDict) else nn.ModuleDict(dict(heads))
        if not any(True for _ in self.shared_parameters()):
            raise ModelError("MultiTaskModel: the trunk has no trainable parameters to share")

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.tasks.names

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z: torch.Tensor = self.trunk(x)
        return z

    def heads_forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: self.heads[n](z) for n in self.tasks.names}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads_forward(self.features(x))

    def shared_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(qualified name, parameter)`` for every trainable trunk parameter."""
        for n, p in self.trunk.named_parameters():
            if p.requires_grad:
                yield f"trunk.{n}", p

    def task_parameters(self, task: str) -> Iterator[tuple[str, nn.Parameter]]:
        for n, p in self.heads[task].named_parameters():
            yield f"heads.{task}.{n}", p
