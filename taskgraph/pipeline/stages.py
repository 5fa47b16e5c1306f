"""The one grouping pipeline: measure affinity → propose groupings → check them → decide.

:func:`~taskgraph.pipeline.auto_group` and a study's prepare stage
(:func:`taskgraph.runners.prepare.prepare`) both run these stage functions, under one
:class:`GroupingPolicy`:

1. :func:`measure` trains the all-in-one network while measuring TAG affinity, with the
   policy's optimizer settings (the same training the user's networks get);
2. :func:`propose` ranks partitions by the serving score of the affinity (Fifty et al.
   2021; Standley et al. 2020) and keeps the top ones;
3. :func:`check` trains every candidate's group networks and the all-in-one network over
   the same *paired* seeds: seed s gives every network the same trunk initialisation and
   the same batch order (the training loader is re-seeded per run), each stopped early
   on validation with its best epoch restored;
4. :func:`decide` leaves all-in-one only for a candidate whose paired validation gain
   over all-in-one exceeds ``z`` paired standard errors, and says how sure it is
   (:class:`Decision`: the paired difference with its t-interval).

Affinity scores alone can mislead (Azorin et al. 2023); the checks decide, and the rule
makes "no better than all-in-one" the answer unless the evidence says otherwise.

Example (a few seconds, so skipped in doctests):
    >>> from taskgraph.data import planted_clusters
    >>> from taskgraph.models import mlp
    >>> data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=600, seed=0)
    >>> runs = Runs.from_data(lambda: mlp(32, (32,)), data)
    >>> decision, matrix, proposals, steps = run_policy(runs, GroupingPolicy(check_seeds=2))  # doctest: +SKIP
    >>> print(decision.statement())  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any, NamedTuple, NoReturn, Protocol

import numpy as np
import torch
from torch import nn

from taskgraph.affinity import AffinityMatrix, measure_affinity
from taskgraph.data.base import MultiTaskData, unpack_batch
from taskgraph.exceptions import ConfigError, GroupingError
from taskgraph.grouping import group_tasks
from taskgraph.grouping.base import GroupingSolver
from taskgraph.grouping.partitions import canonical, set_partitions
from taskgraph.grouping.value import Grouping
from taskgraph.models import MultiTaskModel
from taskgraph.tasks import TaskSet
from taskgraph.training import Evaluation, TrainConfig, seed_everything, train

__all__ = ["DEFAULT_POLICY", "CheckedCandidate", "Decision", "GroupingPolicy", "Runs", "check", "decide",
           "hoa_total", "measure", "pairwise_networks", "pairwise_transfer", "propose", "reseed_loader",
           "run_policy", "second_look_target", "settle"]

Groups = tuple[tuple[str, ...], ...]


class _Proposal(Protocol):
    """What :func:`candidates` reads of a proposal (a :class:`~taskgraph.grouping.value.Grouping`)."""

    @property
    def groups(self) -> Sequence[Sequence[str]]: ...


@dataclass(frozen=True)
class GroupingPolicy:
    """How the pipeline measures, proposes, checks and decides (one value for every caller).

    Attributes:
        estimator: the affinity estimator (``"exact"``: TAG's lookahead; any name of
            :data:`taskgraph.affinity.ESTIMATORS`), or ``"pairwise"``: the measured transfer of
            every single-task and pair network (:func:`pairwise_transfer`, one seed).
        affinity_epochs: epochs of the all-in-one run that measures affinity.
        every: measure affinity every ``every`` steps.
        top_m: how many partitions the affinity proposes for checking.
        k: the most groups a proposal may have (None: chosen from the affinity).
        seed: the first paired seed (the check runs use ``seed .. seed + check_seeds − 1``; the
            affinity run uses ``seed``).
        check_seeds: paired seeds per checked network (0: no checks, the affinity's first
            proposal is taken without evidence and the decision says so; 1: no standard error,
            any gain leaves all-in-one).
        z: leave all-in-one only when the paired validation gain exceeds ``z`` standard errors of
            the seeds (SD of the per-seed differences / √S); None: the two-sided ``confidence``
            t quantile with S − 1 degrees of freedom (4.30 for 3 seeds at 95%).
        references: candidates checked beside the affinity's proposals: ``"single-task"``.
        recombine: with the single-task reference, also check every proposal with some of its
            groups split into single tasks (their networks are trained anyway: no extra cost).
        check_epochs: the checked networks train at most this many epochs (None: the config's).
        check_patience: they stop after this many epochs without a better validation loss
            (None: the config's ``patience``).
        finalists: race the checks: every candidate trains with the first seed, and only the
            ``finalists`` best of them (and all-in-one) with the rest (None: every candidate
            trains with every seed).
        z_samples: also require the gain to exceed ``z_samples`` standard errors that count the
            validation set's own sampling noise beside the seeds'; None: the ``confidence`` t
            quantile with the Welch-Satterthwaite degrees of freedom. Fixed multiples of 1 or 2
            with the seeds' 2 chose, on one quality problem, a partition whose validation gain
            did not carry to test (docs/quality.md).
        samples: count the validation set's noise at all (False: the seeds' test alone).
        sample_test: how the validation set's noise is counted. ``"trimmed"`` (the default):
            Yuen's test on the per-sample differences (their ``trim``-trimmed mean and its
            winsorized standard error): the typical validation sample must favour the candidate,
            so neither a gain carried by a few samples nor heavy-tailed losses (a few confidently
            wrong samples, whose swings drown a mean's standard error) decide. ``"mean"``: the
            standard error of the mean per-sample difference is added to the seeds' in quadrature
            and the gain must clear that (on one quality problem, one validation sample's swings
            kept all-in-one although it was 8.6 times worse on test; docs/quality.md).
        trim: the share trimmed from each end for ``sample_test="trimmed"`` (0.2: Wilcox's default).
        extra_seeds: a second look: when all-in-one was kept although the best alternative is ahead on
            validation (and passes the validation set's noise test), that alternative and all-in-one train
            ``extra_seeds`` more paired seeds and the decision is made again over all of them (0: none;
            the default 2 was chosen on the 10-seed ground truth, docs/quality.md "Ten seeds").
        confidence: the level of the reported t-interval.
        config: every checked network's training (None: the caller's); its ``patience``
            stops each network early on validation.
        affinity_config: the affinity run's training (None: the checked networks' training for
            ``affinity_epochs`` epochs, so the lookahead is the update those networks take).
    """

    estimator: str = "exact"
    affinity_epochs: int = 5
    every: int = 2
    top_m: int = 1
    k: int | None = None
    check_seeds: int = 3
    seed: int = 0
    z: float | None = None
    z_samples: float | None = None
    samples: bool = True
    recombine: bool = False
    sample_test: str = "trimmed"
    trim: float = 0.2
    references: tuple[str, ...] = ("single-task",)
    finalists: int | None = None
    check_epochs: int | None = 30
    check_patience: int | None = 3
    extra_seeds: int = 2
    confidence: float = 0.95
    config: TrainConfig | None = None
    affinity_config: TrainConfig | None = None

    def __post_init__(self) -> None:
        def bad(key: str, must: str, got: object) -> NoReturn:
            raise ConfigError(f"GroupingPolicy: {must}, got {got!r}", key=key)

        if not isinstance(self.affinity_epochs, int) or self.affinity_epochs < 1:
            bad("affinity_epochs", "'affinity_epochs' must be an int >= 1", self.affinity_epochs)
        if not isinstance(self.every, int) or self.every < 1:
            bad("every", "'every' must be an int >= 1", self.every)
        if not isinstance(self.top_m, int) or self.top_m < 1:
            bad("top_m", "'top_m' must be an int >= 1", self.top_m)
        if self.k is not None and (not isinstance(self.k, int) or self.k < 1):
            bad("k", "'k' must be an int >= 1 or None", self.k)
        if not isinstance(self.check_seeds, int) or self.check_seeds < 0:
            bad("check_seeds", "'check_seeds' must be an int >= 0 (0: no checks; a paired standard error needs 2)",
                self.check_seeds)
        if self.z is not None and not (self.z >= 0 and math.isfinite(self.z)):
            bad("z", "'z' must be finite and >= 0, or None", self.z)
        object.__setattr__(self, "references", tuple(self.references))
        if any(r != "single-task" for r in self.references):
            bad("references", "'references' may hold only 'single-task'", self.references)
        for key in ("check_epochs", "check_patience"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or v < 1):
                bad(key, f"'{key}' must be an int >= 1 or None", v)
        if self.finalists is not None and (not isinstance(self.finalists, int) or self.finalists < 1):
            bad("finalists", "'finalists' must be an int >= 1 or None", self.finalists)
        if self.z_samples is not None and not (self.z_samples >= 0 and math.isfinite(self.z_samples)):
            bad("z_samples", "'z_samples' must be finite and >= 0, or None", self.z_samples)
        if self.sample_test not in ("mean", "trimmed"):
            bad("sample_test", "'sample_test' must be 'mean' or 'trimmed'", self.sample_test)
        if not (isinstance(self.trim, float | int) and 0 <= self.trim < 0.5):
            bad("trim", "0 <= 'trim' < 0.5 must hold", self.trim)
        if not 0 < self.confidence < 1:
            bad("confidence", "0 < 'confidence' < 1 must hold", self.confidence)
        if not isinstance(self.extra_seeds, int) or isinstance(self.extra_seeds, bool) or self.extra_seeds < 0:
            bad("extra_seeds", "'extra_seeds' must be an int >= 0", self.extra_seeds)

    def replace(self, **changes: Any) -> GroupingPolicy:
        return replace(self, **changes)

    def check_config(self, base: TrainConfig) -> TrainConfig:
        """The checked networks' training: ``base`` with the policy's epoch cap and patience."""
        epochs = base.epochs if self.check_epochs is None else min(base.epochs, self.check_epochs)
        patience = base.patience if self.check_patience is None else self.check_patience
        return base.replace(epochs=epochs, patience=patience)


#: the checked networks' training unless the caller gives one: Adam, early stopping on validation
DEFAULT_CHECK_CONFIG = TrainConfig(epochs=40, lr=3e-3, batch_size=128, patience=5)

#: the policy ``auto_group`` and the study's prepare stage use unless told otherwise (see docs/quality.md
#: for the comparison that chose it)
DEFAULT_POLICY = GroupingPolicy()


# --- paired training runs -------------------------------------------------------------------------

def reseed_loader(loader: object, seed: int) -> None:
    """Re-seed a DataLoader's own shuffling generators (sampler and batch sampler), when it has any.

    A loader without a generator of its own shuffles from torch's global generator, which
    :func:`~taskgraph.training.train` seeds with the run's seed; one with its own generator would
    otherwise continue where the previous run left it, so two runs with one seed would see
    different batch orders.
    """
    seen: set[int] = set()
    for obj in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        while obj is not None and id(obj) not in seen:
            seen.add(id(obj))
            gen = getattr(obj, "generator", None)
            if isinstance(gen, torch.Generator):
                gen.manual_seed(int(seed))
            obj = getattr(obj, "sampler", None)


class GroupRun(NamedTuple):
    """One trained network's evaluations.

    Attributes:
        val: the per-task validation :class:`~taskgraph.training.Evaluation`.
        test: the per-task test :class:`~taskgraph.training.Evaluation` (None without a test loader).
        steps: its optimizer steps.
        val_samples: each validation sample's share of the summed task losses, shape ``(N,)``:
            ``Σ_t m_t(i)·l_t(i)·N/n_t`` (``m_t`` the label mask, ``n_t`` the task's labelled count), so
            its mean is the sum over tasks of the mean validation losses. The decision reads the
            validation set's sampling noise from it.
    """

    val: Evaluation
    test: Evaluation | None
    steps: int
    val_samples: np.ndarray


@torch.no_grad()
def sample_shares(model: nn.Module, loader: Iterable[Any], tasks: TaskSet) -> np.ndarray:
    """Each sample's share of the summed per-task mean losses (see :class:`GroupRun`), in loader order."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    losses: dict[str, list[torch.Tensor]] = {t.name: [] for t in tasks}
    masks: dict[str, list[torch.Tensor]] = {t.name: [] for t in tasks}
    try:
        for batch in loader:
            x, ys, ms = unpack_batch(batch)
            out = model(x.to(dev))
            for t in tasks:
                m = ms[t.name].to(dev).bool()
                y = torch.where(m, ys[t.name].to(dev), torch.zeros_like(ys[t.name].to(dev)))
                losses[t.name].append(t.per_sample_loss(out[t.name], y).float().cpu())
                masks[t.name].append(m.cpu())
    finally:
        model.train(was)
    total: np.ndarray | None = None
    for t in tasks:
        labelled = torch.cat(masks[t.name]).numpy()
        v = np.where(labelled, torch.cat(losses[t.name]).numpy(), 0.0) * (len(labelled) / max(1, int(labelled.sum())))
        total = v if total is None else total + v
    return np.asarray(total, dtype=float)


@dataclass(frozen=True, eq=False)
class Runs:
    """What the pipeline trains with: a model builder, the tasks, the loaders and the training.

    Attributes:
        build: ``build(sub_taskset) -> nn.Module``, a fresh network for some tasks (the trunk is
            built first, so one seed gives every subset the same trunk initialisation).
        tasks: every task.
        train_loader: the training loader.
        val_loader: the validation loader (the checks decide on it).
        test_loader: the test loader (optional; reported, never used to decide).
        config: the training of every checked network (its ``seed`` is replaced per run).
    """

    build: Callable[[TaskSet], nn.Module]
    tasks: TaskSet
    train_loader: Any
    val_loader: Any
    test_loader: Any = None
    config: TrainConfig = DEFAULT_CHECK_CONFIG
    _cache: dict[tuple[tuple[str, ...], TrainConfig], GroupRun] = field(default_factory=dict, repr=False)

    @classmethod
    def from_data(cls, trunk: Callable[[], nn.Module], data: MultiTaskData, config: TrainConfig | None = None) -> Runs:
        """Runs over a :class:`~taskgraph.data.MultiTaskData`'s splits with a trunk factory."""
        config = config or DEFAULT_CHECK_CONFIG
        tr, va, te = data.loaders(config.batch_size, seed=config.seed)
        return cls(lambda sub: MultiTaskModel(trunk(), sub, input_shape=data.input_shape), data.tasks, tr, va, te,
                   config)

    def validate(self) -> None:
        """Check the loaders against the tasks before any training: every batch must carry a label
        for every task (the training loader's first batch; the validation and test loaders, which
        decide, are read whole), and the labelled entries of the evaluation loaders must be finite
        (a NaN label would give every candidate a NaN loss).

        Raises:
            GroupingError: a loader is empty, lacks a task's labels or has a non-finite label.
            DataError: a batch is malformed (see :func:`~taskgraph.data.base.unpack_batch`).
        """
        for name, loader in (("train_loader", self.train_loader), ("val_loader", self.val_loader),
                             ("test_loader", self.test_loader)):
            if loader is None:
                continue
            seen = 0
            for i, batch in enumerate(loader):
                seen += 1
                _, ys, ms = unpack_batch(batch)
                missing = [t for t in self.tasks.names if t not in ys]
                if missing:
                    raise GroupingError(f"{name}: every batch must carry a label for each task; task(s) {missing} "
                                        f"missing (the batch has {sorted(ys)})")
                if name == "train_loader":
                    break
                for t in self.tasks.names:
                    y = ys[t][ms[t]] if t in ms else ys[t]
                    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
                        raise GroupingError(f"{name}: every labelled entry must be finite; task {t!r} has a NaN or "
                                            f"infinite label in batch {i} (mask it out instead)")
            if not seen:
                raise GroupingError(f"{name}: a loader must yield at least one batch, got an empty one")

    def train_group(self, group: Sequence[str], seed: int, *, config: TrainConfig | None = None,
                    progress: bool = False) -> GroupRun:
        """Train one network on ``group`` with ``seed`` (cached per group, seed and config).

        The seed fixes the trunk's initialisation (the model is built right after seeding) and the
        training batch order (the loader is re-seeded), so networks of one seed are paired.
        """
        cfg = (config or self.config).replace(seed=int(seed))
        key = (tuple(group), cfg)
        if key in self._cache:
            return self._cache[key]
        sub = self.tasks.subset(list(group))
        seed_everything(cfg.seed)
        model = self.build(sub)
        reseed_loader(self.train_loader, cfg.seed)
        res = train(model, sub, self.train_loader, config=cfg, val_loader=self.val_loader,
                    test_loader=self.test_loader, progress=progress, description=f"{'+'.join(group)} seed {seed}")
        assert res.val is not None  # a validation loader is always given
        reseed_loader(self.val_loader, 0)  # a shuffling validation loader: the same order for every network
        seed_everything(0)
        out = GroupRun(res.val, res.test, res.steps, sample_shares(model, self.val_loader, sub))
        self._cache[key] = out
        return out

    @property
    def steps(self) -> int:
        """Optimizer steps of every network trained so far (each (group, seed) once)."""
        return sum(v.steps for v in self._cache.values())


# --- stage 1: affinity --------------------------------------------------------------------------

def measure(runs: Runs, policy: GroupingPolicy = DEFAULT_POLICY, *,
            progress: bool = False) -> tuple[AffinityMatrix, int]:
    """Train the all-in-one network with affinity tracking; ``(matrix, steps)``.

    The run uses the checked networks' training (``runs.config``: the same optimizer and
    learning rate) for ``policy.affinity_epochs`` epochs, so the lookahead is the update the
    networks really take. With ``policy.estimator == "pairwise"`` the matrix is
    :func:`pairwise_transfer`'s and ``steps`` is 0: its networks train through ``runs`` (the
    checks reuse them) and :func:`checked_steps` counts them.
    """
    if policy.estimator == "pairwise":
        return pairwise_transfer(runs, policy, progress=progress), 0
    if policy.affinity_config is not None:
        cfg = policy.affinity_config.replace(seed=policy.seed)
    else:
        cfg = (policy.config or runs.config).replace(epochs=policy.affinity_epochs, patience=None, seed=policy.seed)
    seed_everything(cfg.seed)
    model = runs.build(runs.tasks)
    reseed_loader(runs.train_loader, cfg.seed)
    steps = len(runs.train_loader) * cfg.epochs if hasattr(runs.train_loader, "__len__") else 0
    matrix = measure_affinity(model, runs.tasks, runs.train_loader, estimator=policy.estimator, every=policy.every,
                              config=cfg, progress=progress)
    return matrix, steps


def hoa_total(losses: Mapping[frozenset[str], Mapping[str, float]], groups: Iterable[Iterable[str]]) -> float:
    """A partition's total predicted from single-task and pair losses (Standley et al.'s HOA).

    ``losses[frozenset(s)][t]``: task t's loss in the network of subset s (every single and pair).
    A task alone scores its single-task loss; in a group of two or more, the mean of its losses in
    the pairs it forms with the group's other tasks (exact for pairs).

    Example:
        >>> L = {frozenset("a"): {"a": 1.0}, frozenset("b"): {"b": 2.0}, frozenset("c"): {"c": 3.0},
        ...      frozenset("ab"): {"a": 0.5, "b": 1.5}, frozenset("ac"): {"a": 1.5, "c": 2.0},
        ...      frozenset("bc"): {"b": 2.5, "c": 3.5}}
        >>> hoa_total(L, [["a", "b"], ["c"]])   # 0.5 + 1.5 + 3.0
        5.0
        >>> hoa_total(L, [["a", "b", "c"]])     # a: (0.5+1.5)/2, b: (1.5+2.5)/2, c: (2.0+3.5)/2
        5.75
    """
    total = 0.0
    for g in map(list, groups):
        for t in g:
            others = [j for j in g if j != t]
            total += (float(losses[frozenset((t,))][t]) if not others
                      else float(np.mean([losses[frozenset((t, j))][t] for j in others])))
    return total


def pairwise_networks(names: Sequence[str], policy: GroupingPolicy) -> set[tuple[tuple[str, ...], int]]:
    """The ``(group, seed)`` networks :func:`pairwise_transfer` trains: every single task and pair."""
    singles = [(t,) for t in names]
    pairs = [canonical([[a, b]], order=names)[0] for a, b in combinations(names, 2)]
    return {(g, policy.seed) for g in singles + pairs}


def pairwise_transfer(runs: Runs, policy: GroupingPolicy = DEFAULT_POLICY, *,
                      progress: bool = False) -> AffinityMatrix:
    """Measured transfer between every two tasks: ``Z[j, i] = L_i({i}) − L_i({i, j})``.

    Every single-task and every pair network trains once, with seed ``policy.seed`` and the
    checked networks' training (:meth:`GroupingPolicy.check_config`), so the checks reuse the
    single-task networks and any pair a proposal keeps. ``L_i(G)`` is task i's validation loss
    in group G's network. Oriented like an affinity (row: the source j, column: the task i
    it helps), in loss units, so the serving score of a group (the mean over its other
    members, :mod:`taskgraph.grouping.objective`) is Standley et al.'s higher-order
    approximation of the loss the group saves, and a partition's score the total saved:
    :func:`propose` then ranks partitions by their predicted validation total. One seed:
    the matrix has no standard errors. It trains n(n + 1)/2 networks: meant for a handful
    of tasks (the quality problems' six: docs/quality.md).
    """
    names = runs.tasks.names
    cfg = policy.check_config(policy.config or runs.config)
    trained = {g: runs.train_group(g, seed, config=cfg, progress=progress)
               for g, seed in sorted(pairwise_networks(names, policy), key=lambda x: (len(x[0]), x[0]))}
    n = len(names)
    mean = np.full((n, n), np.nan)
    for i, ti in enumerate(names):
        alone = trained[(ti,)].val.losses[ti]
        for j, tj in enumerate(names):
            if i != j:
                mean[j, i] = alone - trained[canonical([[ti, tj]], order=names)[0]].val.losses[ti]
    count = np.ones((n, n), dtype=int) - np.eye(n, dtype=int)
    return AffinityMatrix(names, mean, np.full((n, n), np.nan), count, estimator="pairwise",
                          schedule={"networks": len(trained), "seed": policy.seed})


# --- stage 2: proposals -------------------------------------------------------------------------

def propose(matrix: AffinityMatrix, policy: GroupingPolicy = DEFAULT_POLICY, *, singletons: str = "allow",
            budget: float | None = None, solver: str | GroupingSolver = "auto") -> list[Grouping]:
    """The affinity's top partitions (:class:`~taskgraph.grouping.value.Grouping`), best first.

    ``solver``: a solver name or instance (a study's ``[grouping]`` table builds one with its time
    limit and fallback). A :func:`pairwise_transfer` matrix scores partitions by the loss they
    save, so with ``policy.k`` None any number of groups is allowed (no elbow to find: a lone
    task saves nothing and costs nothing in the score)."""
    k = len(matrix.names) if policy.k is None and matrix.estimator == "pairwise" else policy.k
    return group_tasks(matrix, k=k, top_m=policy.top_m, variant="partition", singletons=singletons,
                       budget=budget, solver=solver)


def surrogate(runs: Runs, *, m: int | None = None, seed: int = 0, config: TrainConfig | None = None,
              top_m: int = 3) -> tuple[list[Groups], dict[str, Any]]:
    """Propose partitions from short runs on random task subsets (after Li et al. 2023).

    Trains one network on each of ``m`` random subsets (default ``2n``; each task joins a
    subset with probability 1/2), then fits, for each task i, its validation loss as a
    linear function of which other tasks share its network:
    ``L_i(S) ≈ b_i + Σ_{j ∈ S, j ≠ i} θ_ij`` (ridge, on losses relative to the task's mean).
    A negative ``θ_ij`` says task j helps task i. Every partition's total is then predicted
    (exhaustively up to 8 tasks; beyond, from the grouping solver on ``−θ``) and the
    ``top_m`` lowest are returned.

    Returns:
        ``(partitions, info)`` with ``info = {"theta": (n, n) array, "subsets": [...], "steps": int}``.
    """
    names = list(runs.tasks.names)
    n = len(names)
    m = 2 * n if m is None else m
    rng = np.random.default_rng(seed)
    subsets: list[tuple[str, ...]] = []
    for _ in range(50 * m):
        if len(subsets) >= m:
            break
        pick = tuple(t for t in names if rng.random() < 0.5)
        if pick and pick not in subsets:
            subsets.append(pick)
    losses: dict[tuple[str, ...], dict[str, float]] = {}
    steps = 0
    for s in subsets:
        run = runs.train_group(s, seed, config=config)
        losses[s] = run.val.losses
        steps += run.steps
    theta = np.zeros((n, n))
    base = np.zeros(n)
    for i, ti in enumerate(names):
        rows = [(s, losses[s][ti]) for s in subsets if ti in s]
        if not rows:
            base[i] = math.nan
            continue
        y = np.array([r[1] for r in rows])
        scale = float(np.mean(y)) or 1.0
        X = np.array([[1.0] + [float(tj in s) for j, tj in enumerate(names) if j != i] for s, _ in rows])
        lam = 0.1 * np.eye(X.shape[1])
        lam[0, 0] = 0.0
        coef = np.linalg.solve(X.T @ X + lam, X.T @ (y / scale))
        base[i] = coef[0] * scale
        theta[i, [j for j in range(n) if j != i]] = coef[1:] * scale

    def predicted(groups: Groups) -> float:
        return float(sum(base[names.index(t)] + sum(theta[names.index(t), names.index(u)] for u in g if u != t)
                         for g in groups for t in g))

    if n <= 8:
        ranked = sorted(set_partitions(names), key=predicted)[:top_m]
    else:
        z = -theta.T / np.maximum(np.abs(base), 1e-12)[None, :]
        ranked = [tuple(tuple(g) for g in gr.groups)
                  for gr in group_tasks(z, names=names, k=None, top_m=top_m, variant="partition", singletons="allow")]
    return ranked, {"theta": theta, "base": base, "subsets": subsets, "steps": steps}


# --- stages 3 and 4: checks and the decision ----------------------------------------------------

@dataclass(frozen=True)
class CheckedCandidate:
    """A partition and what its paired check runs measured.

    Attributes:
        groups: the partition.
        source: where it came from (``"all-in-one"``, ``"affinity #1"``, ...).
        val_totals: per seed, the sum over tasks of each task's validation loss in its group's network.
        test_totals: the same on the test loader (None without one).
        val_losses: per task, the validation loss's mean over seeds.
        test_losses: the same on the test loader (None without one).
        val_samples: ``(seeds, N)`` each validation sample's share of the total per seed (see
            :class:`GroupRun`); None when not measured.
    """

    groups: Groups
    source: str
    val_totals: tuple[float, ...]
    test_totals: tuple[float, ...] | None
    val_losses: Mapping[str, float]
    test_losses: Mapping[str, float] | None
    val_samples: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def val_total(self) -> float:
        return float(np.mean(self.val_totals))

    @property
    def test_total(self) -> float | None:
        return None if self.test_totals is None else float(np.mean(self.test_totals))

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [list(g) for g in self.groups], "source": self.source, "val_totals": list(self.val_totals),
                "test_totals": None if self.test_totals is None else list(self.test_totals),
                "val_losses": dict(self.val_losses),
                "test_losses": None if self.test_losses is None else dict(self.test_losses)}


def candidates(ranked: Sequence[_Proposal], policy: GroupingPolicy, names: Sequence[str]) -> list[tuple[Groups, str]]:
    """What the checks compare with all-in-one: the affinity's proposals, then the policy's
    references (``"single-task"``: every task alone), then, with ``policy.recombine`` and the
    single-task reference, every proposal with some of its groups split into single tasks:
    partitions whose networks the checks train anyway, so they cost nothing more. Proposals are
    labelled ``affinity #i``, or ``pairwise #i`` under the pairwise estimator.

    Example:
        >>> from types import SimpleNamespace
        >>> ranked = [SimpleNamespace(groups=(("a", "b"), ("c", "d")))]
        >>> [src for _, src in candidates(ranked, GroupingPolicy(recombine=True), "abcd")]
        ['affinity #1', 'single-task', 'affinity #1, {a, b} split', 'affinity #1, {c, d} split']
        >>> [src for _, src in candidates(ranked, GroupingPolicy(estimator="pairwise"), "abcd")]
        ['pairwise #1', 'single-task']
    """
    source = "pairwise" if policy.estimator == "pairwise" else "affinity"
    out: list[tuple[Groups, str]] = [(tuple(tuple(x) for x in g.groups), f"{source} #{i}")
                                     for i, g in enumerate(ranked, 1)]
    if "single-task" in policy.references:
        out.append((tuple((t,) for t in names), "single-task"))
        if policy.recombine:
            for i, g in enumerate(ranked, 1):
                groups = [tuple(x) for x in g.groups]
                multi = [x for x in groups if len(x) > 1]
                for r in range(1, len(multi)):  # splitting every group is single-task itself
                    for split in combinations(multi, r):
                        parts = [x for x in groups if x not in split] + [(t,) for x in split for t in x]
                        out.append((tuple(parts), f"{source} #{i}, {' '.join(_fmt((x,)) for x in split)} split"))
    return out


def _measured(runs: Runs, groups: Groups, source: str, seeds: Sequence[int], cfg: TrainConfig, order: dict[str, int],
              progress: bool) -> CheckedCandidate:
    val = np.zeros((len(seeds), len(runs.tasks)))
    test = np.zeros_like(val) if runs.test_loader is not None else None
    shares = None
    for si, seed in enumerate(seeds):
        for g in groups:
            run = runs.train_group(g, seed, config=cfg, progress=progress)
            if shares is None:
                shares = np.zeros((len(seeds), len(run.val_samples)))
            shares[si] += run.val_samples
            for t in g:
                val[si, order[t]] = run.val.losses[t]
                if test is not None and run.test is not None:
                    test[si, order[t]] = run.test.losses[t]
    bad = [t for t in runs.tasks.names if not np.isfinite(val[:, order[t]]).all()]
    if bad:
        raise GroupingError(f"check: the validation loss of task(s) {bad} is not finite for {source} "
                            f"{[list(g) for g in groups]}: every task needs labelled, finite validation samples")
    return CheckedCandidate(groups, source, tuple(val.sum(1)), None if test is None else tuple(test.sum(1)),
                            dict(zip(runs.tasks.names, val.mean(0), strict=True)),
                            None if test is None else dict(zip(runs.tasks.names, test.mean(0), strict=True)),
                            shares)


def check(runs: Runs, candidates: Iterable[tuple[Sequence[Sequence[str]], str]],
          policy: GroupingPolicy = DEFAULT_POLICY, *, progress: bool = False,
          log: Callable[[str], None] | None = None) -> list[CheckedCandidate]:
    """Train every candidate's groups and all-in-one over the policy's paired seeds.

    ``candidates`` are ``(groups, source)`` pairs; all-in-one is added first when missing and
    duplicates are dropped. A network shared by two candidates trains once per seed. With
    ``policy.finalists`` set, the checks race: every candidate trains with the first seed, and
    only all-in-one and the ``finalists`` candidates of lowest validation total there train
    with the remaining seeds (the others keep their one seed and cannot be chosen).
    """
    if policy.check_seeds < 1:
        raise GroupingError(f"check: the policy's 'check_seeds' must be >= 1 to check, got {policy.check_seeds}")
    order = {t: i for i, t in enumerate(runs.tasks.names)}
    todo: list[tuple[Groups, str]] = [(canonical([runs.tasks.names], order=runs.tasks.names), "all-in-one")]
    for groups, source in candidates:
        c = canonical(groups, order=runs.tasks.names)
        if sorted(t for g in c for t in g) != sorted(runs.tasks.names):
            raise GroupingError(f"check: a candidate must be a partition of the tasks {list(runs.tasks.names)}, "
                                f"got {[list(g) for g in c]} ({source})")
        if all(c != d for d, _ in todo):
            todo.append((c, source))
    seeds = list(range(policy.seed, policy.seed + policy.check_seeds))
    cfg = policy.check_config(policy.config or runs.config)
    if policy.finalists is not None and len(todo) - 1 > policy.finalists and len(seeds) > 1:
        first = [_measured(runs, g, src, seeds[:1], cfg, order, progress) for g, src in todo]
        ahead = sorted(first[1:], key=lambda c: c.val_total)[:policy.finalists]
        keep = {c.groups for c in ahead} | {todo[0][0]}
        out = [_measured(runs, g, src, seeds, cfg, order, progress) if g in keep else c
               for (g, src), c in zip(todo, first, strict=True)]
    else:
        out = [_measured(runs, g, src, seeds, cfg, order, progress) for g, src in todo]
    if log:
        for cand in out:
            log(f"  {cand.source:<12} val total {cand.val_total:.4f}"
                + ("" if cand.test_total is None else f", test total {cand.test_total:.4f}")
                + f" ({len(cand.val_totals)} seed{'s' if len(cand.val_totals) > 1 else ''})  {_fmt(cand.groups)}")
    return out


def _fmt(groups: Groups) -> str:
    return " | ".join("{" + ", ".join(g) + "}" for g in groups)


@dataclass(frozen=True)
class Decision:
    """The chosen partition and how sure the choice is.

    Attributes:
        chosen: the chosen candidate.
        all_in_one: the all-in-one reference (None when nothing was checked).
        candidates: every checked candidate, lowest mean validation total first.
        diff: mean over seeds of chosen − all-in-one validation total (negative: the choice is better).
        se: its standard error, paired over seeds and over validation samples (see :func:`_paired`).
        interval: the ``confidence`` t-interval of ``diff``.
        seeds: how many paired seeds.
        reason: one line on why this candidate.
    """

    chosen: CheckedCandidate
    all_in_one: CheckedCandidate | None
    candidates: tuple[CheckedCandidate, ...]
    diff: float
    se: float
    interval: tuple[float, float]
    seeds: int
    confidence: float
    reason: str

    @property
    def groups(self) -> Groups:
        return self.chosen.groups

    @property
    def left_all_in_one(self) -> bool:
        return self.all_in_one is not None and self.chosen.groups != self.all_in_one.groups

    def statement(self) -> str:
        """How sure: the paired difference to all-in-one with its interval (lower is better)."""
        if self.all_in_one is None:
            return f"chosen {_fmt(self.groups)} without check runs: {self.reason}"
        lo, hi = self.interval
        rel = 100.0 * self.diff / self.all_in_one.val_total if self.all_in_one.val_total else math.nan
        figures = (f"validation total {self.diff:+.4f} vs all-in-one ({rel:+.2f}%, lower is better), "
                   f"{self.confidence:.0%} interval [{lo:+.4f}, {hi:+.4f}] over {self.seeds} paired seeds")
        if self.left_all_in_one:
            return f"chosen {_fmt(self.groups)} ({self.chosen.source}): {figures}; {self.reason}"
        best = next((c for c in self.candidates if c is not self.all_in_one and len(c.val_totals) == self.seeds),
                    None)
        if best is None:
            return f"chosen {_fmt(self.groups)} (all-in-one): {self.reason}"
        return (f"chosen {_fmt(self.groups)} (all-in-one); the best alternative, {_fmt(best.groups)} "
                f"({best.source}): {figures}; {self.reason}")

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [list(g) for g in self.groups], "source": self.chosen.source, "diff": self.diff,
                "se": self.se, "interval": list(self.interval), "seeds": self.seeds, "confidence": self.confidence,
                "left_all_in_one": self.left_all_in_one, "reason": self.reason, "statement": self.statement(),
                "candidates": [c.to_dict() for c in self.candidates]}


class Paired(NamedTuple):
    """``a − b`` on validation, paired over seeds and validation samples (see :func:`_paired`)."""

    mean: float  #: mean over seeds of the validation totals' difference
    se_seeds: float  #: SD of the per-seed differences / √S
    se: float  #: the reported standard error (the seeds' and, with ``"mean"``, the set's noise)
    interval: tuple[float, float]  #: the reported t-interval of ``mean``
    df: float  #: its degrees of freedom
    sample_stat: float  #: what the set's noise test compares: the mean, or the per-sample trimmed mean
    sample_se: float  #: its standard error
    sample_df: float  #: its degrees of freedom


def _paired(a: CheckedCandidate, b: CheckedCandidate, confidence: float, samples: bool = True,
            sample_test: str = "mean", trim: float = 0.2) -> Paired:
    """``a − b`` validation totals, with the noise of the seeds and of the validation set.

    The seeds' error is the SD of the per-seed differences / √S (initialisation and batch order).
    The validation set's own noise (a gap that only this finite set shows would not carry to new
    data) is measured on the seed-averaged per-sample differences, when per-sample shares were
    measured. ``sample_test="mean"``: its SD / √N is added to the seeds' error in quadrature, and
    the interval's t quantile takes the Welch-Satterthwaite degrees of freedom of that sum (S − 1
    with the seeds' error alone). ``"trimmed"``: Yuen's one-sample test — the ``trim``-trimmed mean
    of the per-sample differences, its standard error from the winsorized variance,
    ``sqrt(s_w² / N) / (1 − 2·trim)``, with N − 2g − 1 degrees of freedom (g samples cut from each
    end); the reported interval is then the seeds' t-interval of the mean.
    """
    from scipy import stats

    d = np.asarray(a.val_totals, float) - np.asarray(b.val_totals, float)
    mean = float(d.mean())
    if len(d) < 2:
        nan = math.nan
        return Paired(mean, nan, nan, (nan, nan), 0.0, mean, nan, 0.0)
    var_seeds = float(d.var(ddof=1)) / len(d)
    var, df = var_seeds, float(len(d) - 1)
    stat, stat_se, stat_df = mean, math.sqrt(var_seeds), df
    if samples and a.val_samples is not None and b.val_samples is not None:
        per_sample = (a.val_samples - b.val_samples).mean(axis=0)
        n = len(per_sample)
        if sample_test == "trimmed":
            g = int(trim * n)
            stat = float(stats.trim_mean(per_sample, trim))
            w = np.asarray(stats.mstats.winsorize(per_sample, limits=(trim, trim)), float)
            stat_se = math.sqrt(float(w.var(ddof=1)) / n) / (1.0 - 2.0 * trim)
            stat_df = float(max(1, n - 2 * g - 1))
        else:
            var_samples = float(per_sample.var(ddof=1)) / n
            var = var_seeds + var_samples
            # Welch-Satterthwaite: the degrees of freedom of a sum of two variance estimates
            denom = var_seeds**2 / (len(d) - 1) + var_samples**2 / (n - 1)
            df = var**2 / denom if denom > 0 else df
            stat_se, stat_df = math.sqrt(var), df
    se = math.sqrt(var)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return Paired(mean, math.sqrt(var_seeds), se, (mean - half, mean + half), df, stat, stat_se, stat_df)


def _t_quantile(z: float | None, df: float, confidence: float) -> float:
    """``z`` when given, else the two-sided ``confidence`` t quantile with ``df`` degrees of freedom."""
    from scipy import stats

    return z if z is not None else float(stats.t.ppf(0.5 + confidence / 2, df))


def _typical_sample_passes(p: Paired, policy: GroupingPolicy) -> bool:
    """The validation set's noise test of :func:`decide` (passed when ``policy.samples`` is off)."""
    return not policy.samples or -p.sample_stat > _t_quantile(policy.z_samples, p.sample_df,
                                                              policy.confidence) * p.sample_se


def decide(checked: Sequence[CheckedCandidate], policy: GroupingPolicy = DEFAULT_POLICY) -> Decision:
    """Keep all-in-one unless a candidate's paired validation gain is clear of the noise.

    A candidate clears the bar when its gain over all-in-one (mean over the paired seeds) lies
    outside the two-sided ``policy.confidence`` t-interval with the seeds' standard error
    (S − 1 degrees of freedom: it replicates across initialisations and batch orders; 4.30 SE
    with 3 seeds at 95%) and also passes the validation set's noise test (``policy.sample_test``,
    see :func:`_paired`: the gain is not carried by a few validation samples).
    ``policy.z`` / ``policy.z_samples`` replace those quantiles by fixed multiples;
    ``policy.samples=False`` drops the second test. Among the candidates that clear the bar,
    the one with the fewest networks whose validation total is within one standard error of
    the lowest wins (the one-standard-error rule: a gain inside the noise does not pay for more
    networks). Candidates a race stopped after one seed are not compared. With one seed there
    is no standard error and any gain clears the bar.
    """
    ranked = tuple(sorted(checked, key=lambda c: c.val_total))
    aio = next(c for c in checked if c.source == "all-in-one")
    n = len(aio.val_totals)

    def paired(a: CheckedCandidate, b: CheckedCandidate) -> Paired:
        return _paired(a, b, policy.confidence, policy.samples, policy.sample_test, policy.trim)

    others = [(c, paired(c, aio)) for c in ranked if c is not aio and len(c.val_totals) == n]

    def quantile(z: float | None, df: float) -> float:
        return _t_quantile(z, df, policy.confidence)

    bar_seeds = quantile(policy.z, n - 1) if n > 1 else 0.0
    trimmed = policy.sample_test == "trimmed"

    def clears(p: Paired) -> bool:
        if p.mean >= 0:
            return False
        if n < 2:
            return True
        return -p.mean > bar_seeds * p.se_seeds and _typical_sample_passes(p, policy)

    def sig(p: Paired) -> str:
        if n < 2 or not p.se_seeds > 0:
            return "one seed: no standard error" if n < 2 else "no spread over the seeds"
        out = f"{-p.mean / p.se_seeds:.1f} SE of the seeds"
        if policy.samples and p.sample_se > 0 and p.sample_se != p.se_seeds:
            out += (f", the typical validation sample by {-p.sample_stat / p.sample_se:.1f} SE "
                    f"({policy.trim:.0%}-trimmed mean of the per-sample differences {p.sample_stat:+.2e})" if trimmed
                    else f", {-p.sample_stat / p.sample_se:.1f} with the validation set's noise")
        return out

    winners = [(c, p) for c, p in others if clears(p)]
    if winners:
        # the one-standard-error rule: the fewest networks among the winners within 1 SE of the best
        best = winners[0][0]

        def near(c: CheckedCandidate) -> bool:
            if c is best or n < 2:
                return c is best
            p = paired(c, best)
            return p.mean <= p.se

        chosen, p = min(((c, p) for c, p in winners if near(c)), key=lambda o: (len(o[0].groups), o[0].val_total))
        fewer = "" if chosen is best else f"; the fewest networks within 1 SE of the best ({best.source})"
        return Decision(chosen, aio, ranked, p.mean, p.se, p.interval, n, policy.confidence,
                        f"it beats all-in-one by {sig(p)}{fewer}")
    if not others:
        return Decision(aio, aio, ranked, 0.0, 0.0, (0.0, 0.0), n, policy.confidence,
                        "all-in-one was the only candidate")
    best, p = others[0]
    if not policy.samples:
        extra = ""
    elif trimmed:
        extra = (f" and the typical validation sample by {quantile(policy.z_samples, p.sample_df):.2f} SE "
                 f"({policy.trim:.0%}-trimmed mean)")
    else:
        extra = f" and {quantile(policy.z_samples, p.sample_df):.2f} SE with the validation set's noise"
    if p.mean >= 0:
        reason = f"kept all-in-one: no alternative has a lower validation total (the best, {best.source}, is behind)"
    else:
        reason = (f"kept all-in-one: the best alternative ({best.source}) is ahead by {sig(p)}, not by "
                  f"{bar_seeds:.2f} SE of the seeds{extra}")
    return Decision(aio, aio, ranked, p.mean, p.se, p.interval, n, policy.confidence, reason)


def second_look_target(decision: Decision, policy: GroupingPolicy = DEFAULT_POLICY) -> CheckedCandidate | None:
    """The alternative a second look would train more seeds for, or None.

    It is the best alternative (over every seed) when all-in-one was kept although that alternative is
    ahead on validation and passes the validation set's noise test: only the seeds' bar kept it out.
    """
    n, aio = decision.seeds, decision.all_in_one
    if decision.left_all_in_one or n < 2 or aio is None:
        return None
    best = next((c for c in decision.candidates if c is not aio and len(c.val_totals) == n), None)
    if best is None:
        return None
    p = _paired(best, aio, policy.confidence, policy.samples, policy.sample_test, policy.trim)
    return best if p.mean < 0 and _typical_sample_passes(p, policy) else None


def settle(runs: Runs, checked: Sequence[CheckedCandidate], policy: GroupingPolicy = DEFAULT_POLICY, *,
           progress: bool = False, log: Callable[[str], None] | None = None
           ) -> tuple[Decision, list[CheckedCandidate]]:
    """:func:`decide`, with the policy's second look; ``(decision, every checked candidate)``.

    With ``policy.extra_seeds`` > 0, when all-in-one was kept although the best alternative is ahead
    on validation and passes the validation set's noise test (only the seeds' test failed: with few
    seeds its bar is high), that alternative and all-in-one train ``extra_seeds`` more paired seeds
    and :func:`decide` runs again on the two of them over all the seeds.
    """
    decision = decide(checked, policy)
    best = None if policy.extra_seeds < 1 else second_look_target(decision, policy)
    if best is None:
        return decision, list(checked)
    more = policy.replace(check_seeds=decision.seeds + policy.extra_seeds)
    if log:
        log(f"second look: {best.source} is ahead of all-in-one but not past the seeds' bar; "
            f"{policy.extra_seeds} more paired seeds for both")
    again = check(runs, [(best.groups, best.source)], more, progress=progress, log=log)
    second = decide(again, more)
    note = f" (a second look: {policy.extra_seeds} more paired seeds for {best.source} and all-in-one)"
    return replace(second, reason=second.reason + note), [*checked, *again]




def unchecked(groups: Iterable[Iterable[str]],
              reason: str = "the policy runs no checks (check_seeds = 0): the affinity's first proposal, "
              "unconfirmed") -> Decision:
    """A decision taken without check runs (nothing to compare: no interval)."""
    c = CheckedCandidate(tuple(tuple(g) for g in groups), "affinity #1", (), None, {}, None)
    return Decision(c, None, (c,), math.nan, math.nan, (math.nan, math.nan), 0, DEFAULT_POLICY.confidence, reason)


def checked_steps(runs: Runs, checked: Sequence[CheckedCandidate], policy: GroupingPolicy) -> int:
    """Optimizer steps of the networks behind ``checked`` and of a pairwise measurement's
    (:func:`pairwise_networks`), each (group, seed) once."""
    cfg = policy.check_config(policy.config or runs.config)
    used = {(g, policy.seed + i) for c in checked for g in c.groups for i in range(len(c.val_totals))}
    if policy.estimator == "pairwise":
        used |= pairwise_networks(runs.tasks.names, policy)
    return sum(runs.train_group(g, seed, config=cfg).steps for g, seed in used)  # cached: nothing retrains


def run_policy(runs: Runs, policy: GroupingPolicy = DEFAULT_POLICY, *, matrix: AffinityMatrix | None = None,
               progress: bool = False,
               log: Callable[[str], None] | None = None) -> tuple[Decision, AffinityMatrix, list[Grouping], int]:
    """Measure (unless ``matrix`` is given), propose, check and decide.

    Returns:
        ``(decision, matrix, proposals, steps)``: ``steps`` counts the affinity run's and every checked
        network's optimizer steps.
    """
    steps = 0
    if matrix is None:
        matrix, steps = measure(runs, policy, progress=progress)
    ranked = propose(matrix, policy)
    if policy.check_seeds == 0:
        return unchecked(ranked[0].groups), matrix, ranked, steps
    checked = check(runs, candidates(ranked, policy, runs.tasks.names), policy, progress=progress, log=log)
    decision, checked = settle(runs, checked, policy, progress=progress, log=log)
    return decision, matrix, ranked, steps + checked_steps(runs, checked, policy)
