"""Study files: everything one search needs, validated before anything is written.

A study file (TOML) names the dataset and its tasks, the trunk, the search
space, the budget, the objective, the storage, the per-trial resources, the
seed and the sampler. :meth:`StudySpec.load` reads and validates all of it
(the search space file included) and raises one :class:`ConfigError` line that
names the file, the key and what was expected; runners call it before they
open the storage, so a bad file never leaves a half-made study behind.

Layout (every table but ``[dataset]`` and ``[search]`` optional)::

    name = "quickstart"            # study name (default: the file's stem)
    seed = 0

    [dataset]
    name = "planted-clusters"      # taskgraph datasets
    options = { n_tasks = 6, n_samples = 1500 }
    tasks = ["t0", "t1"]           # a subset (default: all)

    [trunk]                        # TrunkSpec
    kind = "mlp"
    hidden = [64, 64]

    [search]
    space = "../search_spaces/default.toml"   # relative to this file
    objective = "val_loss"         # val_loss | delta_m | per_task
    sampler = "tpe"                # tpe | random | gp | cmaes | nsgaii | qmc
    sampler_options = {}

    [budget]
    trials = 12
    epochs = 5
    wall_time_s = 600              # stop starting trials after this
    early_stopping = "asha"        # asha | none
    grace_epochs = 1
    reduction_factor = 3

    [train]                        # TrainConfig defaults for what the space does not search
    lr = 1e-3
    batch_size = 128

    [affinity]                     # the prepare stage (taskgraph.pipeline)
    estimator = "exact"
    every = 1
    epochs = 3
    check_seeds = 3                # paired seeds per checked network (0: no check runs)
    # z = 4.3                      # leave all-in-one only past z SE of the seeds (default: the 95% t quantile)
    # extra_seeds = 2              # the second look's extra paired seeds when only the seeds' bar kept all-in-one

    [grouping]                     # the solver that proposes groupings from the affinity
    solver = "auto"                # auto (exact up to 20 tasks, else scalable) | exact | scalable | hierarchy
    time_limit = 120               # seconds per solve (default: the solver's own; exact: 120)
    fallback = "scalable"          # at the exact solver's time limit: scalable (bound and gap kept) | raise

    [storage]
    url = "sqlite:///runs/quickstart/study.db"  # any Optuna RDB URL
    artifacts = "runs/quickstart/artifacts"   # default: next to a SQLite file, else runs/<name>/artifacts

    [resources]                    # per trial (Ray Tune)
    cpus = 1
    gpus = 0                       # fractional allowed; used only when a GPU is present
    concurrent = 2

    [runner]
    backend = "ray"                # default of `taskgraph run`

Each table is one frozen section with one validator (:class:`DatasetSection` as ``spec.data``,
:class:`TrunkSection`, :class:`SearchSection`, :class:`BudgetSection`, :class:`TrainSection`,
:class:`AffinitySection`, :class:`GroupingSection`, :class:`StorageSection`, :class:`ResourcesSection`,
:class:`RunnerSection`); :class:`StudySpec` composes them.

Example:
    >>> import os
    >>> spec = StudySpec.load(os.path.join(os.path.dirname(__file__), "..", "..", "studies", "quickstart.toml"))
    >>> spec.name, spec.search.objective, spec.directions(6)
    ('quickstart', 'val_loss', ('minimize',))
    >>> spec.budget.trials, spec.grouping.solver, spec.affinity.estimator
    (12, 'auto', 'exact')
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from taskgraph.exceptions import ConfigError
from taskgraph.runners.samplers import SAMPLERS, make_sampler
from taskgraph.search._toml import FrozenMap, Table, read_toml, thaw
from taskgraph.search.space import SearchSpace

if TYPE_CHECKING:  # only for annotations: these stay imported inside functions, keeping `import taskgraph.search` light
    from taskgraph.grouping.base import GroupingSolver
    from taskgraph.models import TrunkSpec
    from taskgraph.training import TrainConfig

__all__ = ["DATASET_BOUNDS", "FLAT", "OBJECTIVES", "SAMPLERS", "STUDY_SOLVERS", "AffinitySection", "BudgetSection",
           "DatasetSection", "GroupingSection", "ResourcesSection", "RunnerSection", "SearchSection", "Section",
           "StorageSection", "StudySpec", "TrainSection", "TrunkSection", "check_dataset_options", "make_sampler"]

OBJECTIVES = ("val_loss", "delta_m", "per_task")
BACKENDS = ("local", "ray")
#: seeds numpy, torch and the samplers all accept: 0 <= seed < 2**32
SEED_MAX = 2**32 - 1
#: inclusive bounds of the dataset options a study may set: sizes that fit in memory and finish loading
DATASET_BOUNDS: dict[str, tuple[int, int]] = {
    "n_tasks": (1, 10_000),
    "n_clusters": (1, 10_000),
    "n_samples": (10, 10_000_000),  # the train/val/test splits each need samples
    "dim": (1, 100_000),
    "rank": (1, 100_000),
    "n_sin": (0, 1_000),
    "seed": (0, SEED_MAX),
}
#: n_samples × dim at most (the features alone: 0.8 GB in float32)
MAX_FEATURE_VALUES = 200_000_000
#: upper bounds of the study's sizes: values a run can reach (and that fit the int64 of Ray, Optuna and torch)
MAX_TRIALS = 1_000_000
MAX_EPOCHS = 100_000
MAX_STEPS = 1_000_000
MAX_SECONDS = 1e9  # about 31 years
MAX_WIDTH = 65_536
MAX_LAYERS = 64
#: the largest int a training setting may hold (batch sizes, steps, patience)
MAX_INT = 2**31 - 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _try_sampler(sampler: Any, name: str, options: Mapping[str, Any], *, file: str | None, n_objectives: int) -> None:
    """Ask the sampler for two trials of a throwaway in-memory study: option values it accepts at
    construction but cannot use (``n_startup_trials = "x"``) fail here, not in the run."""
    import warnings

    import optuna

    if not options:
        return
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" on the run's stderr
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(sampler=sampler, directions=["minimize"] * n_objectives)
            for i in range(2):
                trial = study.ask()
                trial.suggest_float("x", 0.0, 1.0)
                trial.suggest_categorical("c", ["a", "b"])
                study.tell(trial, [float(i)] * n_objectives if n_objectives > 1 else float(i))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"sampler {name!r} does not take these options {dict(options)}: {type(e).__name__}: {msg}",
                          file=file, key="search.sampler_options") from None
    finally:
        optuna.logging.set_verbosity(verbosity)


def _estimator(af: Table) -> str:
    """A gradient estimator's name, or ``"pairwise"`` (:func:`taskgraph.pipeline.pairwise_transfer`)."""
    from taskgraph.affinity import ESTIMATORS
    from taskgraph.exceptions import UnknownNameError

    name = af.str("estimator", "exact")
    if name != "pairwise" and name not in ESTIMATORS:
        raise UnknownNameError(f"unknown affinity estimator {name!r}; valid: {', '.join(ESTIMATORS.names())}, "
                               f"pairwise", file=af.file, key=af.key("estimator"))
    return name


def _finite(v: float) -> bool:
    """True for a number that converts to a finite float (an int beyond the floats does not)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def check_dataset_options(name: str, options: Mapping[str, Any], *, file: str | None = None,
                          key: str = "dataset.options", sep: str = ".") -> None:
    """Check dataset ``name``'s option values before any data is made.

    Each option must have the type of its default (an int where the factory's default is an
    int, a finite number where it is a float, a string where it is a string); the sizes and
    seeds of :data:`DATASET_BOUNDS` must lie in their bounds, ``rank <= dim``, and
    ``n_samples × dim`` at most :data:`MAX_FEATURE_VALUES`.

    Args:
        name, options: the dataset's registry name and the options to check.
        file, key, sep: where they come from; an option's key is ``key + sep + option``.

    Raises:
        ConfigError: naming the file and the option's key.

    Example:
        >>> try:
        ...     check_dataset_options("planted-clusters", {"n_tasks": 0}, file="s.toml")
        ... except ConfigError as e:
        ...     print(e.key, "|", str(e).rsplit(" [", 1)[0])
        dataset.options.n_tasks | 'dataset.options.n_tasks' must be an int in [1, 10000]; got 0
    """
    import inspect

    from taskgraph.data import DATASETS

    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(DATASETS.get(name, file=file, key="dataset.name")).parameters
    except (TypeError, ValueError):  # pragma: no cover - a factory without a signature
        params = {}
    defaults = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
    for opt, v in options.items():
        k = f"{key}{sep}{opt}"
        d = defaults.get(opt)
        if opt in DATASET_BOUNDS or isinstance(d, int) and not isinstance(d, bool):
            lo, hi = DATASET_BOUNDS.get(opt, (-(2**31), 2**31 - 1))
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{k!r} must be an int in [{lo}, {hi}]; got {v!r}", file=file, key=k)
        elif isinstance(d, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"{k!r} must be true or false; got {v!r}", file=file, key=k)
        elif isinstance(d, float):
            if isinstance(v, bool) or not isinstance(v, int | float) or not _finite(v):
                raise ConfigError(f"{k!r} must be a finite number; got {v!r}", file=file, key=k)
        elif isinstance(d, str) and not isinstance(v, str):
            raise ConfigError(f"{k!r} must be a string; got {v!r}", file=file, key=k)
    eff = {**defaults, **options}
    if isinstance(eff.get("rank"), int) and isinstance(eff.get("dim"), int) and eff["rank"] > eff["dim"]:
        bad = "rank" if "rank" in options else "dim"
        raise ConfigError(f"'rank <= dim' must hold for dataset {name!r}; got rank={eff['rank']}, dim={eff['dim']}",
                          file=file, key=f"{key}{sep}{bad}")
    n, dim = eff.get("n_samples"), eff.get("dim")
    if isinstance(n, int) and isinstance(dim, int) and n * dim > MAX_FEATURE_VALUES:
        bad = "n_samples" if "n_samples" in options else "dim"
        raise ConfigError(f"'n_samples × dim <= {MAX_FEATURE_VALUES:,}' must hold (the features must fit in memory); "
                          f"got {n:,} × {dim:,}", file=file, key=f"{key}{sep}{bad}")


# --- sections: one frozen value and one validator per table of the study file ----------------------

class Section(Mapping[str, Any]):
    """A validated table of a study file: a frozen value whose fields are the table's keys.

    Each section is also a read-only mapping of those keys to plain values (``dict(spec.budget)`` is
    the normalised table, arrays as lists); ``KEY`` is its table's name in the file, :meth:`from_table`
    its validator.
    """

    KEY: ClassVar[str] = ""

    def _keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return thaw(getattr(self, key))

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def to_dict(self) -> dict[str, Any]:
        """The section as plain, JSON-safe values."""
        return {k: thaw(v) for k, v in self.items()}


@dataclass(frozen=True)
class DatasetSection(Section):
    """``[dataset]``: which data, its options, and a subset of its tasks (None: all)."""

    name: str
    options: FrozenMap = field(default_factory=FrozenMap)
    tasks: tuple[str, ...] | None = None
    KEY: ClassVar[str] = "dataset"

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", FrozenMap(self.options))
        object.__setattr__(self, "tasks", None if self.tasks is None else tuple(self.tasks))

    @classmethod
    def from_table(cls, ds: Table) -> DatasetSection:
        from taskgraph.runners import stages

        name = ds.str("name")
        options = ds.table("options").data
        tasks = ds.list("tasks", None, of=str, nonempty=True)
        ds.check_unknown()
        stages.check_dataset(name, options, file=ds.file, key="dataset")
        check_dataset_options(name, options, file=ds.file, key="dataset.options")
        if tasks is not None and len(set(tasks)) != len(tasks):
            raise ds.error("tasks", f"'dataset.tasks' must not repeat names; got {tasks}")
        return cls(name, FrozenMap(options), tuple(tasks) if tasks else None)


@dataclass(frozen=True)
class TrunkSection(Section):
    """``[trunk]``: the shared network (:class:`~taskgraph.models.TrunkSpec`'s fields)."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (256, 128)
    out_features: int = 64
    dropout: float = 0.0
    KEY: ClassVar[str] = "trunk"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))

    @classmethod
    def from_table(cls, tr: Table) -> TrunkSection:
        from taskgraph.models import TrunkSpec

        out = cls(kind=tr.str("kind", "mlp", choices=("mlp", "cnn")),
                  hidden=tuple(tr.list("hidden", [256, 128], of=int, nonempty=True)),
                  out_features=tr.int("out_features", 64, low=1, high=MAX_WIDTH),
                  dropout=tr.float("dropout", 0.0, low=0.0, high=0.99))
        tr.check_unknown()
        if any(not 1 <= h <= MAX_WIDTH for h in out.hidden) or len(out.hidden) > MAX_LAYERS:
            raise tr.error("hidden", f"'trunk.hidden' must hold at most {MAX_LAYERS} widths in [1, {MAX_WIDTH}]; "
                                     f"got {list(out.hidden)}")
        TrunkSpec.from_dict(out.to_dict())
        return out


@dataclass(frozen=True)
class SearchSection(Section):
    """``[search]``: the search space (an absolute path, and the loaded space), the objective, the sampler."""

    space: str
    objective: str = "val_loss"
    sampler: str = "tpe"
    sampler_options: FrozenMap = field(default_factory=FrozenMap)
    loaded: SearchSpace | None = field(default=None, compare=False, repr=False)
    KEY: ClassVar[str] = "search"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sampler_options", FrozenMap(self.sampler_options))

    def _keys(self) -> tuple[str, ...]:
        return ("space", "objective", "sampler", "sampler_options")

    @property
    def multi_objective(self) -> bool:
        return self.objective == "per_task"

    @classmethod
    def from_table(cls, se: Table, *, base_dir: Path, space: str | Path | None, seed: int) -> SearchSection:
        space_rel = se.str("space")
        space_path = Path(space).resolve() if space is not None else (base_dir / space_rel).resolve()
        if not space_path.is_file():
            raise se.error("space", f"'search.space' must point to a search-space file (relative to the "
                                    f"study file); nothing at {str(space_path)!r}")
        objective = se.str("objective", "val_loss", choices=OBJECTIVES)
        sampler = se.str("sampler", "tpe")
        so = se.table("sampler_options")
        options = so.data
        se.check_unknown()
        for k, v in options.items():  # samplers take sizes and rates: finite numbers (NaN passes their checks)
            if isinstance(v, float) and not math.isfinite(v):
                raise so.error(k, f"{so.key(k)!r} must be finite, got {v!r}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}", file=se.file,
                              key="search.sampler")
        _try_sampler(make_sampler(sampler, options, seed, file=se.file), sampler, options, file=se.file,
                     n_objectives=2 if objective == "per_task" else 1)
        if objective == "per_task" and sampler in ("cmaes", "gp", "qmc"):
            raise se.error("sampler", f"objective 'per_task' is multi-objective; 'search.sampler' must be "
                                      f"tpe, random or nsgaii, got {sampler!r}")
        return cls(str(space_path), objective, sampler, FrozenMap(options), SearchSpace.load(space_path))


@dataclass(frozen=True)
class BudgetSection(Section):
    """``[budget]``: trials, epochs per trial, wall time, and early stopping (ASHA)."""

    trials: int = 10
    epochs: int = 5
    wall_time_s: float | None = None
    early_stopping: str = "asha"
    grace_epochs: int = 1
    reduction_factor: int = 3
    KEY: ClassVar[str] = "budget"

    @classmethod
    def from_table(cls, bu: Table) -> BudgetSection:
        out = cls(trials=bu.int("trials", 10, low=1, high=MAX_TRIALS),
                  epochs=bu.int("epochs", 5, low=1, high=MAX_EPOCHS),
                  wall_time_s=bu.float("wall_time_s", None, low=0.0, strict_low=True, high=MAX_SECONDS),
                  early_stopping=bu.str("early_stopping", "asha", choices=("asha", "none")),
                  grace_epochs=bu.int("grace_epochs", 1, low=1, high=MAX_EPOCHS),
                  reduction_factor=bu.int("reduction_factor", 3, low=2, high=100))
        bu.check_unknown()
        if out.grace_epochs > out.epochs:
            raise bu.error("grace_epochs", f"'budget.grace_epochs' <= 'budget.epochs' ({out.epochs}) must hold; "
                                           f"got {out.grace_epochs}")
        return out


@dataclass(frozen=True)
class TrainSection(Section):
    """``[train]``: :class:`~taskgraph.training.TrainConfig` defaults for what the space does not search.

    A mapping of the fields the file sets (the rest keep TrainConfig's defaults).
    """

    overrides: FrozenMap = field(default_factory=FrozenMap)
    KEY: ClassVar[str] = "train"

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", FrozenMap(self.overrides))

    def _keys(self) -> tuple[str, ...]:
        return tuple(self.overrides)

    def __getitem__(self, key: str) -> Any:
        return thaw(self.overrides[key])

    @classmethod
    def from_table(cls, tt: Table) -> TrainSection:
        from taskgraph.training import TrainConfig

        train = dict(tt.data)
        for k in ("epochs", "seed", "device"):
            if k in train:
                raise tt.error(k, f"'train.{k}' is set by the study ({'budget.epochs' if k == 'epochs' else k}), "
                                  "not in [train]")
        for f in fields(TrainConfig):  # each value of the TOML type its field takes, before TrainConfig's checks
            if f.name in train:
                kind = str(f.type).split(" | ")[0]
                if kind == "float":
                    tt.float(f.name)
                elif kind == "int":
                    tt.int(f.name, high=MAX_INT)
                elif kind == "bool":
                    tt.bool(f.name)
                elif kind == "str":
                    tt.str(f.name)
        try:
            TrainConfig(**train)
        except TypeError as e:
            raise tt.error(None, f"[train] must hold TrainConfig fields: {e}") from None
        except ConfigError as e:
            raise ConfigError(str(e).split(" [")[0], file=tt.file, key=f"train.{e.key}" if e.key else "train") \
                from None
        betas = train.get("betas")
        if betas is not None and not (isinstance(betas, list) and len(betas) == 2 and all(
                isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise tt.error("betas", f"'train.betas' must be two numbers in [0, 1); got {betas!r}")
        return cls(FrozenMap(train))


@dataclass(frozen=True)
class AffinitySection(Section):
    """``[affinity]``: the prepare stage's affinity run and its checks (see :mod:`taskgraph.pipeline`)."""

    estimator: str = "exact"
    every: int = 1
    epochs: int = 5
    check_seeds: int = 3  # paired seeds per checked network (0: no check runs)
    z: float | None = None  # leave all-in-one only past z SE (None: the 95% t quantile)
    extra_seeds: int | None = None  # the second look's extra seeds (None: the default policy's, 2; 0: none)
    # the affinity run's own optimizer, learning rate and momentum (None: the study's [train] ones)
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    KEY: ClassVar[str] = "affinity"
    #: the keys of the affinity run's own training (each None: the study's [train] value)
    RUN_KEYS: ClassVar[tuple[str, ...]] = ("optimizer", "lr", "momentum")
    #: keys left out of :meth:`to_dict` (and so of the study's fingerprint) while unset
    OPTIONAL_KEYS: ClassVar[tuple[str, ...]] = (*RUN_KEYS, "extra_seeds")

    @classmethod
    def from_table(cls, af: Table, *, epochs: int) -> AffinitySection:
        from taskgraph.training import OPTIMIZERS

        opt = af.raw("optimizer", None)
        out = cls(estimator=_estimator(af), every=af.int("every", 1, low=1, high=MAX_STEPS),
                  epochs=af.int("epochs", epochs, low=1, high=MAX_EPOCHS),
                  check_seeds=af.int("check_seeds", 3, low=0, high=100),
                  z=af.float("z", None, low=0.0, high=100.0),
                  extra_seeds=af.int("extra_seeds", None, low=0, high=100),
                  optimizer=None if opt is None else af.str("optimizer", choices=OPTIMIZERS),
                  lr=af.float("lr", None, low=1e-12, high=100.0),
                  momentum=af.float("momentum", None, low=0.0, high=0.999))
        af.check_unknown()
        return out

    def to_dict(self) -> dict[str, Any]:
        """The section's values; the affinity run's optimizer keys and ``extra_seeds`` only where set (so
        the fingerprint of a study that sets none of them is what it was before they existed)."""
        d = super().to_dict()
        for k in self.OPTIONAL_KEYS:
            if d.get(k) is None:
                d.pop(k, None)
        return d

    def config(self, train: TrainConfig) -> TrainConfig | None:
        """The affinity run's training: ``train`` for :attr:`epochs` epochs with this table's optimizer,
        learning rate and momentum; None when the table sets none of them (the run is then the checked
        networks' own training, see :class:`~taskgraph.pipeline.GroupingPolicy`)."""
        changes = {k: getattr(self, k) for k in self.RUN_KEYS if getattr(self, k) is not None}
        if not changes:
            return None
        return train.replace(**changes, epochs=self.epochs, patience=None)


#: the grouping solvers a study may name (``auto``: exact up to 20 tasks, scalable beyond)
STUDY_SOLVERS = ("auto", "exact", "scalable", "hierarchy")


@dataclass(frozen=True)
class GroupingSection(Section):
    """``[grouping]``: the solver that turns the affinity into proposed groupings, and its settings.

    Attributes:
        solver: ``auto`` (exact up to 20 tasks, scalable beyond), ``exact``, ``scalable`` or ``hierarchy``.
        time_limit: seconds the exact (or scalable) solver may spend per solve (None: the solver's
            default, 120 s for the exact one).
        fallback: what the exact solver does at its time limit: ``scalable`` (its groupings, with the
            bound proven so far) or ``raise``.
    """

    solver: str = "auto"
    time_limit: float | None = None
    fallback: str = "scalable"
    KEY: ClassVar[str] = "grouping"

    def solver_params(self) -> dict[str, Any]:
        """The keyword arguments for :func:`~taskgraph.grouping.group_tasks` / ``propose`` besides ``solver``."""
        params: dict[str, Any] = {} if self.time_limit is None else {"time_limit": self.time_limit}
        if self.solver in ("auto", "exact"):
            params["fallback"] = self.fallback
        return params

    def make_solver(self, n_tasks: int) -> GroupingSolver:
        """The solver instance for ``n_tasks`` tasks (what the prepare stage passes as ``solver=``)."""
        from taskgraph.grouping.api import resolve_solver

        return resolve_solver(self.solver, n_tasks, **self.solver_params())

    @classmethod
    def from_table(cls, gr: Table) -> GroupingSection:
        from taskgraph.exceptions import GroupingError

        solver = gr.str("solver", "auto", choices=STUDY_SOLVERS)
        out = cls(solver=solver, time_limit=gr.float("time_limit", None, low=0.0, strict_low=True, high=MAX_SECONDS),
                  fallback=gr.str("fallback", "scalable", choices=("scalable", "raise")))
        gr.check_unknown()
        if solver == "hierarchy" and out.time_limit is not None:
            raise gr.error("time_limit", f"'grouping.time_limit' applies to the exact and scalable solvers; "
                                         f"got it with solver {solver!r}")
        if solver in ("scalable", "hierarchy") and "fallback" in gr.data:
            raise gr.error("fallback", f"'grouping.fallback' applies to the exact solver (solver = exact or auto); "
                                       f"got it with solver {solver!r}")
        for n in (2, 30) if solver == "auto" else (2,):
            try:
                out.make_solver(n)
            except GroupingError as e:  # pragma: no cover - the checks above keep to what the solvers take
                raise gr.error("solver", f"[grouping] must hold settings solver {solver!r} takes: {e}") from None
        return out


@dataclass(frozen=True)
class StorageSection(Section):
    """``[storage]``: the Optuna RDB URL (may hold a password: show ``shown``) and the artifacts folder."""

    url: str = field(repr=False)
    artifacts: str
    run_dir: str
    KEY: ClassVar[str] = "storage"

    def _keys(self) -> tuple[str, ...]:
        return ("url", "artifacts")

    @property
    def shown(self) -> str:
        """``url`` with its password masked: what may be printed, logged or stored."""
        from taskgraph.runners.storage import mask_url

        return mask_url(self.url)

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.shown, "artifacts": self.artifacts}

    @classmethod
    def from_table(cls, st: Table, *, name: str, runs_root: str | Path, storage: str | None,
                   artifacts: str | None) -> StorageSection:
        from taskgraph.runners.storage import in_memory_sqlite, mask_url

        run_dir = (Path(runs_root) / name).resolve()
        url = st.str("url", "")
        art = st.str("artifacts", "")
        st.check_unknown()
        url, art = storage or url, artifacts or art
        if not url:
            url = f"sqlite:///{run_dir / 'study.db'}"
        elif url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            rel = url[len("sqlite:///"):]
            if rel and rel != ":memory:":
                url = f"sqlite:///{Path(rel).resolve()}"
        if in_memory_sqlite(url):
            raise ConfigError(f"'storage.url' must name a database that outlives the driver; {mask_url(url)!r} is an "
                              f"in-memory SQLite database, so every trial would be lost when the run ends and no "
                              f"dashboard, report or --resume could open it (e.g. sqlite:///runs/{name}/study.db)",
                              file=st.file, key="storage.url")
        if "://" not in url:
            raise ConfigError(f"'storage.url' must be an Optuna RDB URL like sqlite:///runs/x.db or "
                              f"postgresql://user@host/db; got {url!r}", file=st.file, key="storage.url")
        if art:
            art_dir = str(Path(art).resolve())
        elif url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            art_dir = str(Path(url[len("sqlite:///"):]).parent / "artifacts")  # next to the database file
        else:
            art_dir = str(run_dir / "artifacts")
        return cls(url=url, artifacts=art_dir, run_dir=str(run_dir))


@dataclass(frozen=True)
class ResourcesSection(Section):
    """``[resources]``: per trial (Ray Tune): CPUs, GPUs (fractional allowed), trials at once."""

    cpus: float = 1.0
    gpus: float = 0.0
    concurrent: int = 2
    KEY: ClassVar[str] = "resources"

    @classmethod
    def from_table(cls, rs: Table) -> ResourcesSection:
        out = cls(cpus=rs.float("cpus", 1.0, low=0.0, strict_low=True, high=1024.0),
                  gpus=rs.float("gpus", 0.0, low=0.0, high=64.0),
                  concurrent=rs.int("concurrent", 2, low=1, high=10_000))
        rs.check_unknown()
        return out


@dataclass(frozen=True)
class RunnerSection(Section):
    """``[runner]``: the backend ``taskgraph run`` uses by default."""

    backend: str = "ray"
    KEY: ClassVar[str] = "runner"

    @classmethod
    def from_table(cls, ru: Table) -> RunnerSection:
        out = cls(backend=ru.str("backend", "ray", choices=BACKENDS))
        ru.check_unknown()
        return out


#: the flat attributes of the spec before its split into sections: name -> (section, field)
FLAT: dict[str, tuple[str, str]] = {
    "dataset": ("data", "name"), "dataset_options": ("data", "options"), "tasks": ("data", "tasks"),
    "space_path": ("search", "space"), "space": ("search", "loaded"), "objective": ("search", "objective"),
    "sampler": ("search", "sampler"), "sampler_options": ("search", "sampler_options"),
    **{k: ("budget", k) for k in ("trials", "epochs", "wall_time_s", "early_stopping", "grace_epochs",
                                  "reduction_factor")},
    "storage_url": ("storage", "url"), "artifacts_dir": ("storage", "artifacts"), "run_dir": ("storage", "run_dir"),
    "cpus": ("resources", "cpus"), "gpus": ("resources", "gpus"), "concurrent": ("resources", "concurrent"),
    "backend": ("runner", "backend"),
}
#: flat attributes whose value is a plain (thawed) copy, as before the split
_PLAIN = ("dataset_options", "sampler_options")


def _flat(name: str) -> property:
    section, attr = FLAT[name]
    if name in _PLAIN:
        return property(lambda self: thaw(getattr(getattr(self, section), attr)),
                        doc=f"``{section}.{attr}`` as a plain dict (read-only; move to the section API)")
    return property(lambda self: getattr(getattr(self, section), attr),
                    doc=f"``{section}.{attr}`` (read-only; move to the section API)")


@dataclass(frozen=True, init=False)
class StudySpec:
    """A validated study file: its name, file and seed, and one frozen, validated section per table.

    ``data`` ([dataset]), ``trunk``, ``search``, ``budget``, ``train``, ``affinity``, ``grouping``,
    ``storage``, ``resources``, ``runner``. Paths are absolute. The flat attributes of before
    (``spec.trials``, ``spec.storage_url``, ... see :data:`FLAT`) read through to the sections, and
    ``dataclasses.replace(spec, trials=3)`` still works (it goes through :meth:`replace`).
    """

    name: str
    file: str | None
    seed: int
    data: DatasetSection
    trunk: TrunkSection
    search: SearchSection
    budget: BudgetSection
    train: TrainSection
    affinity: AffinitySection
    grouping: GroupingSection
    storage: StorageSection
    resources: ResourcesSection
    runner: RunnerSection

    def __init__(self, *, name: str, file: str | None, seed: int, data: DatasetSection, trunk: TrunkSection,
                 search: SearchSection, budget: BudgetSection, train: TrainSection, affinity: AffinitySection,
                 grouping: GroupingSection, storage: StorageSection, resources: ResourcesSection,
                 runner: RunnerSection, **flat: Any):
        values = dict(name=name, file=file, seed=seed, data=data, trunk=trunk, search=search, budget=budget,
                      train=train, affinity=affinity, grouping=grouping, storage=storage, resources=resources,
                      runner=runner)
        for k, v in values.items():
            object.__setattr__(self, k, v)
        if flat:  # dataclasses.replace(spec, trials=3): route the flat names to their sections
            changed = self.replace(**flat)
            for k in values:
                object.__setattr__(self, k, getattr(changed, k))

    # --- loading ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, storage: str | None = None, artifacts: str | None = None,
             space: str | Path | None = None, runs_root: str | Path = "runs") -> StudySpec:
        """Read and validate a study file and its search space.

        Args:
            path: the study TOML.
            storage: overrides ``storage.url`` (e.g. an absolute path for a cluster job).
            artifacts: overrides ``storage.artifacts``.
            space: overrides ``search.space`` (a path; used by cluster jobs).
            runs_root: where default storage and artifacts go (``runs/<study>/``).

        Raises:
            ConfigError: anything invalid, naming the file and the key.
        """
        path = Path(path)
        return cls.from_dict(read_toml(path), file=str(path), base_dir=path.parent, default_name=path.stem,
                             storage=storage, artifacts=artifacts, space=space, runs_root=runs_root)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str | None = None, base_dir: str | Path = ".",
                  default_name: str = "study", storage: str | None = None, artifacts: str | None = None,
                  space: str | Path | None = None, runs_root: str | Path = "runs") -> StudySpec:
        """Validate a parsed study file: each table by its section's validator, in the file's order of concerns."""
        top = Table(data, file=file)
        name = top.str("name", default_name)
        if not _NAME.match(name):
            raise top.error("name", f"'name' must match {_NAME.pattern} (it names folders); got {name!r}")
        seed = top.int("seed", 0, low=0, high=SEED_MAX)
        dataset = DatasetSection.from_table(top.table("dataset", required=True))
        trunk = TrunkSection.from_table(top.table("trunk"))
        search = SearchSection.from_table(top.table("search", required=True), base_dir=Path(base_dir), space=space,
                                          seed=seed)
        budget = BudgetSection.from_table(top.table("budget"))
        train = TrainSection.from_table(top.table("train"))
        affinity = AffinitySection.from_table(top.table("affinity"), epochs=budget.epochs)
        grouping = GroupingSection.from_table(top.table("grouping"))
        storage_ = StorageSection.from_table(top.table("storage"), name=name, runs_root=runs_root, storage=storage,
                                             artifacts=artifacts)
        resources = ResourcesSection.from_table(top.table("resources"))
        runner = RunnerSection.from_table(top.table("runner"))
        top.check_unknown()
        return cls(name=name, file=file, seed=seed, data=dataset, trunk=trunk, search=search, budget=budget,
                   train=train, affinity=affinity, grouping=grouping, storage=storage_, resources=resources,
                   runner=runner)

    def replace(self, **changes: Any) -> StudySpec:
        """A copy with ``changes``: whole sections (``budget=...``), or fields by their flat names
        (``trials=3``), which are validated again by their section's validator.

        Raises:
            ConfigError: a changed value its section refuses (naming the study file and the key).
        """
        import dataclasses

        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        by_section: dict[str, dict[str, Any]] = {}
        for k, v in changes.items():
            if k in sections:
                sections[k] = v
            elif k in FLAT:
                section, attr = FLAT[k]
                by_section.setdefault(section, {})[attr] = v
            else:
                raise TypeError(f"StudySpec has no field or flat attribute {k!r}")
        for section, attrs in by_section.items():
            old = sections[section]
            if isinstance(old, BudgetSection | ResourcesSection | RunnerSection):  # context-free: validate again
                table = Table({**old.to_dict(), **attrs}, file=self.file, prefix=old.KEY)
                sections[section] = type(old).from_table(table)
            else:
                sections[section] = dataclasses.replace(old, **attrs)
        new = object.__new__(StudySpec)
        for k, v in sections.items():
            object.__setattr__(new, k, v)
        return new

    # --- views --------------------------------------------------------------------------
    @property
    def multi_objective(self) -> bool:
        return self.search.multi_objective

    def directions(self, n_tasks: int) -> tuple[str, ...]:
        """Optuna directions: one per task for ``per_task``, else one (everything is minimised)."""
        return ("minimize",) * n_tasks if self.multi_objective else ("minimize",)

    def trunk_spec(self) -> TrunkSpec:
        from taskgraph.models import TrunkSpec

        return TrunkSpec.from_dict(self.trunk.to_dict())

    def train_config(self, overrides: Mapping[str, Any] | None = None, *, epochs: int | None = None) -> TrainConfig:
        """The TrainConfig of a trial: study defaults, then the trial's ``overrides``."""
        from taskgraph.training import TrainConfig

        kw = {**thaw(self.train.overrides), **dict(overrides or {})}
        if "betas" in kw:
            kw["betas"] = tuple(kw["betas"])
        return TrainConfig(epochs=epochs or self.budget.epochs, seed=self.seed, device="auto", **kw)

    @property
    def storage_shown(self) -> str:
        """``storage_url`` with its password masked: what may be printed, logged or stored."""
        return self.storage.shown

    def without_secrets(self) -> StudySpec:
        """This spec with its storage password masked: what travels to Ray workers and into pickles."""
        from dataclasses import replace

        return self.replace(storage=replace(self.storage, url=self.storage.shown))

    def to_dict(self) -> dict[str, Any]:
        """The normalised study (JSON-safe; stored as a study user attr; the storage password masked).

        The flat layout of before, plus ``grouping`` (the solver settings).
        """
        d: dict[str, Any] = {"name": self.name, "file": self.file}
        for flat in FLAT:
            if flat != "space":
                d[flat] = thaw(getattr(self, flat))
        d["tasks"] = list(self.data.tasks) if self.data.tasks else None
        d["trunk"] = self.trunk.to_dict()
        d["train"] = self.train.to_dict()
        d["affinity"] = self.affinity.to_dict()
        d["grouping"] = self.grouping.to_dict()
        d["storage_url"] = self.storage_shown
        d["seed"] = self.seed
        return d

    def fingerprint(self) -> str:
        """A hash of what defines the study's results (not where it is stored or how it is run).

        Default grouping settings (any time limit) leave it as it was before they could be set, so
        studies stored then still resume.
        """
        d = self.to_dict()
        for k in ("file", "storage_url", "artifacts_dir", "run_dir", "backend", "concurrent", "cpus", "gpus",
                  "trials", "wall_time_s", "space_path"):
            d.pop(k, None)
        d["grouping"].pop("time_limit")  # how long, like wall_time_s: not what defines the results
        if d["grouping"] == {"solver": "auto", "fallback": "scalable"}:
            d.pop("grouping")
        d["space"] = [asdict(p) for p in self.search.loaded.params] if self.search.loaded else []
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


for _name in FLAT:  # the flat attributes of before, read-only, until their readers move to the sections
    setattr(StudySpec, _name, _flat(_name))
del _name
