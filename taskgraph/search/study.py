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

    [storage]
    url = "sqlite:///runs/quickstart/study.db"  # any Optuna RDB URL
    artifacts = "runs/quickstart/artifacts"   # default: next to a SQLite file, else runs/<name>/artifacts

    [resources]                    # per trial (Ray Tune)
    cpus = 1
    gpus = 0                       # fractional allowed; used only when a GPU is present
    concurrent = 2

    [runner]
    backend = "ray"                # default of `taskgraph run`

Example:
    >>> import os
    >>> spec = StudySpec.load(os.path.join(os.path.dirname(__file__), "..", "..", "studies", "quickstart.toml"))
    >>> spec.name, spec.objective, spec.directions(6)
    ('quickstart', 'val_loss', ('minimize',))
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taskgraph.exceptions import ConfigError
from taskgraph.runners.samplers import SAMPLERS, make_sampler
from taskgraph.search._toml import Table, read_toml
from taskgraph.search.space import SearchSpace

__all__ = ["DATASET_BOUNDS", "OBJECTIVES", "SAMPLERS", "StudySpec", "check_dataset_options", "make_sampler"]

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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _try_sampler(sampler, name: str, options: Mapping[str, Any], *, file: str | None, n_objectives: int) -> None:
    """Ask the sampler for two trials of a throwaway in-memory study: option values it accepts at
    construction but cannot use (``n_startup_trials = "x"``) fail here, not in the run."""
    import warnings

    import optuna

    if not options:
        return
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


def _estimator(af: Table) -> str:
    from taskgraph.affinity import ESTIMATORS

    name = af.str("estimator", "exact")
    ESTIMATORS.get(name, file=af.file, key=af.key("estimator"))  # an unknown name lists the valid ones
    return name


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
    import math

    from taskgraph.data import DATASETS

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
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
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


@dataclass(frozen=True)
class StudySpec:
    """A validated study file. Paths are absolute; see the module docstring for the fields."""

    name: str
    file: str | None
    dataset: str
    dataset_options: dict
    tasks: tuple[str, ...] | None
    trunk: dict
    space_path: str
    space: SearchSpace = field(compare=False, repr=False)
    objective: str = "val_loss"
    sampler: str = "tpe"
    sampler_options: dict = field(default_factory=dict)
    trials: int = 10
    epochs: int = 5
    wall_time_s: float | None = None
    early_stopping: str = "asha"
    grace_epochs: int = 1
    reduction_factor: int = 3
    train: dict = field(default_factory=dict)
    affinity: dict = field(default_factory=dict)
    storage_url: str = field(default="", repr=False)  # may hold a password: print mask_url(storage_url)
    artifacts_dir: str = ""
    run_dir: str = ""
    cpus: float = 1.0
    gpus: float = 0.0
    concurrent: int = 2
    seed: int = 0
    backend: str = "ray"

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
        from taskgraph.models import TrunkSpec
        from taskgraph.runners import stages
        from taskgraph.training import TrainConfig

        base_dir = Path(base_dir)
        top = Table(data, file=file)
        name = top.str("name", default_name)
        if not _NAME.match(name):
            raise top.error("name", f"'name' must match {_NAME.pattern} (it names folders); got {name!r}")
        seed = top.int("seed", 0, low=0, high=SEED_MAX)

        ds = top.table("dataset", required=True)
        dataset = ds.str("name")
        options = ds.table("options").data
        tasks = ds.list("tasks", None, of=str, nonempty=True)
        ds.check_unknown()
        stages.check_dataset(dataset, options, file=file, key="dataset")
        check_dataset_options(dataset, options, file=file, key="dataset.options")
        if tasks is not None and len(set(tasks)) != len(tasks):
            raise ds.error("tasks", f"'dataset.tasks' must not repeat names; got {tasks}")

        tr = top.table("trunk")
        trunk = {"kind": tr.str("kind", "mlp", choices=("mlp", "cnn")),
                 "hidden": tr.list("hidden", [256, 128], of=int, nonempty=True),
                 "out_features": tr.int("out_features", 64, low=1),
                 "dropout": tr.float("dropout", 0.0, low=0.0, high=0.99)}
        tr.check_unknown()
        if any(h < 1 for h in trunk["hidden"]):
            raise tr.error("hidden", f"'trunk.hidden' widths must be >= 1; got {trunk['hidden']}")
        TrunkSpec.from_dict(trunk)

        se = top.table("search", required=True)
        space_rel = se.str("space")
        space_path = Path(space).resolve() if space is not None else (base_dir / space_rel).resolve()
        if not space_path.is_file():
            raise se.error("space", f"'search.space' must point to a search-space file (relative to the "
                                    f"study file); nothing at {str(space_path)!r}")
        objective = se.str("objective", "val_loss", choices=OBJECTIVES)
        sampler = se.str("sampler", "tpe")
        sampler_options = se.table("sampler_options").data
        se.check_unknown()
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}", file=file,
                              key="search.sampler")
        _try_sampler(make_sampler(sampler, sampler_options, seed, file=file), sampler, sampler_options, file=file,
                     n_objectives=2 if objective == "per_task" else 1)
        space = SearchSpace.load(space_path)

        bu = top.table("budget")
        trials = bu.int("trials", 10, low=1)
        epochs = bu.int("epochs", 5, low=1)
        wall = bu.float("wall_time_s", None, low=0.0, strict_low=True)
        early = bu.str("early_stopping", "asha", choices=("asha", "none"))
        grace = bu.int("grace_epochs", 1, low=1)
        rf = bu.int("reduction_factor", 3, low=2)
        bu.check_unknown()
        if grace > epochs:
            raise bu.error("grace_epochs", f"'budget.grace_epochs' <= 'budget.epochs' ({epochs}) must hold; "
                                           f"got {grace}")

        tt = top.table("train")
        train = dict(tt.data)
        for k in ("epochs", "seed", "device"):
            if k in train:
                raise tt.error(k, f"'train.{k}' is set by the study ({'budget.epochs' if k == 'epochs' else k}), "
                                  "not in [train]")
        try:
            TrainConfig(**train)
        except TypeError as e:
            raise tt.error(None, f"[train] must hold TrainConfig fields: {e}") from None
        except ConfigError as e:
            raise ConfigError(str(e).split(" [")[0], file=file, key=f"train.{e.key}" if e.key else "train") \
                from None
        betas = train.get("betas")
        if betas is not None and not (isinstance(betas, list) and len(betas) == 2 and all(
                isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise tt.error("betas", f"'train.betas' must be two numbers in [0, 1); got {betas!r}")

        af = top.table("affinity")
        affinity = {"estimator": _estimator(af), "every": af.int("every", 1, low=1),
                    "epochs": af.int("epochs", epochs, low=1),
                    # the pipeline's checks: paired seeds per checked network (0: none), and the z rule
                    "check_seeds": af.int("check_seeds", 3, low=0),
                    "z": af.float("z", None, low=0.0)}
        af.check_unknown()

        run_dir = (Path(runs_root) / name).resolve()
        st = top.table("storage")
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
        from taskgraph.runners.storage import in_memory_sqlite, mask_url

        if in_memory_sqlite(url):
            raise ConfigError(f"'storage.url' must name a database that outlives the driver; {mask_url(url)!r} is an "
                              f"in-memory SQLite database, so every trial would be lost when the run ends and no "
                              f"dashboard, report or --resume could open it (e.g. sqlite:///runs/{name}/study.db)",
                              file=file, key="storage.url")
        if "://" not in url:
            raise ConfigError(f"'storage.url' must be an Optuna RDB URL like sqlite:///runs/x.db or "
                              f"postgresql://user@host/db; got {url!r}", file=file, key="storage.url")
        if art:
            art_dir = str(Path(art).resolve())
        elif url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            art_dir = str(Path(url[len("sqlite:///"):]).parent / "artifacts")  # next to the database file
        else:
            art_dir = str(run_dir / "artifacts")

        rs = top.table("resources")
        cpus = rs.float("cpus", 1.0, low=0.0, strict_low=True)
        gpus = rs.float("gpus", 0.0, low=0.0)
        concurrent = rs.int("concurrent", 2, low=1)
        rs.check_unknown()

        ru = top.table("runner")
        backend = ru.str("backend", "ray", choices=BACKENDS)
        ru.check_unknown()
        top.check_unknown()

        if objective == "per_task" and sampler in ("cmaes", "gp", "qmc"):
            raise se.error("sampler", f"objective 'per_task' is multi-objective; 'search.sampler' must be "
                                      f"tpe, random or nsgaii, got {sampler!r}")
        return cls(name=name, file=file, dataset=dataset, dataset_options=dict(options),
                   tasks=tuple(tasks) if tasks else None, trunk=trunk, space_path=str(space_path), space=space,
                   objective=objective, sampler=sampler, sampler_options=dict(sampler_options), trials=trials,
                   epochs=epochs, wall_time_s=wall, early_stopping=early, grace_epochs=grace, reduction_factor=rf,
                   train=train, affinity=affinity, storage_url=url, artifacts_dir=art_dir, run_dir=str(run_dir),
                   cpus=cpus, gpus=gpus, concurrent=concurrent, seed=seed, backend=backend)

    # --- views --------------------------------------------------------------------------
    @property
    def multi_objective(self) -> bool:
        return self.objective == "per_task"

    def directions(self, n_tasks: int) -> tuple[str, ...]:
        """Optuna directions: one per task for ``per_task``, else one (everything is minimised)."""
        return ("minimize",) * n_tasks if self.multi_objective else ("minimize",)

    def trunk_spec(self):
        from taskgraph.models import TrunkSpec

        return TrunkSpec.from_dict(self.trunk)

    def train_config(self, overrides: Mapping[str, Any] | None = None, *, epochs: int | None = None):
        """The TrainConfig of a trial: study defaults, then the trial's ``overrides``."""
        from taskgraph.training import TrainConfig

        kw = {**self.train, **dict(overrides or {})}
        if "betas" in kw:
            kw["betas"] = tuple(kw["betas"])
        return TrainConfig(epochs=epochs or self.epochs, seed=self.seed, device="auto", **kw)

    @property
    def storage_shown(self) -> str:
        """``storage_url`` with its password masked: what may be printed, logged or stored."""
        from taskgraph.runners.storage import mask_url

        return mask_url(self.storage_url)

    def without_secrets(self) -> StudySpec:
        """This spec with its storage password masked: what travels to Ray workers and into pickles."""
        from dataclasses import replace

        return replace(self, storage_url=self.storage_shown)

    def to_dict(self) -> dict:
        """The normalised study (JSON-safe; stored as a study user attr; the storage password masked)."""
        d = asdict(self)
        d.pop("space")
        d["tasks"] = list(self.tasks) if self.tasks else None
        d["storage_url"] = self.storage_shown
        return d

    def fingerprint(self) -> str:
        """A hash of what defines the study's results (not where it is stored or how it is run)."""
        d = self.to_dict()
        for k in ("file", "storage_url", "artifacts_dir", "run_dir", "backend", "concurrent", "cpus", "gpus",
                  "trials", "wall_time_s", "space_path"):
            d.pop(k, None)
        d["space"] = [asdict(p) for p in self.space.params]
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
