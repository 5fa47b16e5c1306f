"""Search spaces: declarative distributions with conditional parameters, from TOML.

A search space is a list of parameters, each a distribution (``float`` or
``int`` with an optional log scale and step, ``categorical``) or the special
``grouping`` categorical whose choices are the groupings the study's prepare
stage proposed (top-m by measured affinity, plus the all-in-one and single-task
references). A parameter may be *conditional* (``when = {weighting = "gradnorm"}``:
only sampled when an earlier categorical took one of the given values) and may
be *per task* (one copy per task, e.g. fixed loss weights).

The space is sampled define-by-run (:meth:`SearchSpace.suggest` calls
``trial.suggest_*`` in declaration order, skipping parameters whose condition
fails), so the same definition drives the local Optuna runner and the Ray runner's
searcher (both ask Optuna for a trial and call it), conditionals included.

Each parameter lands somewhere in a trial's configuration, its ``target``:
``grouping``, ``topology``, ``weighting`` (the three structural choices),
``train.<TrainConfig field>`` (defaults for parameters named like a field, e.g.
``lr``), ``topology.<param>`` or ``weighting.<param>`` (hyper-parameters of the
chosen topology or weighting).

Example:
    >>> import optuna
    >>> space = SearchSpace.from_dict({"params": {
    ...     "grouping": {"type": "grouping", "top_m": 2},
    ...     "weighting": {"type": "categorical", "choices": ["equal"]},
    ...     "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    ... }})
    >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    >>> params = space.suggest(study.ask(), tasks=("a", "b"), groupings=("all-in-one", "single-task"))
    >>> sorted(params)
    ['grouping', 'lr', 'weighting']
    >>> space.resolve(params).weighting
    'equal'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from taskgraph.search._toml import Table, read_toml

__all__ = ["REFERENCES", "TOPOLOGY_BOUNDS", "Param", "SearchSpace", "TrialConfig"]

#: the reference groupings a grouping parameter may include
REFERENCES = ("all-in-one", "single-task")
_TYPES = ("float", "int", "categorical", "grouping")
_STRUCTURAL = ("grouping", "topology", "weighting")
# TrainConfig fields a space may search (the budget owns epochs; the study owns seed and device)
_TRAIN_FIELDS_EXCLUDED = ("epochs", "seed", "device", "max_steps", "restore_best")
#: the largest magnitude of an int parameter's range (Optuna stores parameters as floats: exact up to 2**53)
_INT_MAX = 2**53
#: inclusive bounds of the topology sizes a space may search, what builds in reasonable memory: MMoE builds one
#: trunk copy per expert, a head's hidden width is a head_hidden × out_features matrix per task (the trunk's own
#: widths stop at 65,536), and a branch depth is a trunk stage (a trunk has at most 64 layers)
TOPOLOGY_BOUNDS: dict[str, tuple[int, int]] = {
    "n_experts": (1, 64),
    "head_hidden": (0, 65_536),
    "branch_depths": (0, 64),
}


def _train_fields() -> list[str]:
    from taskgraph.training import TrainConfig

    return [f.name for f in fields(TrainConfig) if f.name not in _TRAIN_FIELDS_EXCLUDED]


@dataclass(frozen=True)
class Param:
    """One searched parameter.

    Attributes:
        name: the Optuna parameter name (per-task copies are ``name.task``).
        type: ``"float"``, ``"int"``, ``"categorical"`` or ``"grouping"``.
        target: where the value goes in the trial configuration (see the module doc).
        low, high, log, step: the range of ``float``/``int`` parameters.
        choices: the values of a ``categorical``.
        when: ``((parent, (allowed values...)), ...)``: sampled only when every parent took an allowed value.
        per_task: one copy per task (e.g. fixed per-task loss weights).
        top_m, k, references: for ``grouping``: how many proposed groupings (at most k groups each)
            join the given references as choices.
    """

    name: str
    type: str
    target: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    per_task: bool = False
    top_m: int = 0
    k: int = 0
    references: tuple[str, ...] = ()

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(parent in values and values[parent] in allowed for parent, allowed in self.when)

    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a ``float`` or ``int`` parameter."""
        if self.low is None or self.high is None:
            raise TypeError(f"parameter {self.name!r} of type {self.type!r} has no range")
        return self.low, self.high

    def suggest(self, trial: Any, name: str, groupings: Sequence[str]) -> Any:
        if self.type == "float":
            return trial.suggest_float(name, *self.bounds(), log=self.log, step=self.step)
        if self.type == "int":
            low, high = self.bounds()
            return trial.suggest_int(name, int(low), int(high), log=self.log, step=int(self.step or 1))
        if self.type == "grouping":
            return trial.suggest_categorical(name, list(groupings))
        return trial.suggest_categorical(name, list(self.choices))


def _exclusive(p: Param, q: Param) -> bool:
    """True when ``p`` and ``q`` are never sampled together (conditions on one parent with disjoint values)."""
    qw = dict(q.when)
    return any(parent in qw and not set(map(repr, allowed)) & set(map(repr, qw[parent])) for parent, allowed in p.when)


def _message(e: Exception) -> str:
    """``e``'s message without the ``[file, key]`` a ConfigError appends (the space's own key replaces it)."""
    from taskgraph.exceptions import ConfigError

    if isinstance(e, ConfigError) and (e.file is not None or e.key is not None):
        return str(e).rsplit(" [", 1)[0]
    return str(e)


def _train_value_error(_name: str, field_name: str, value: Any) -> str | None:
    """Why ``TrainConfig`` refuses ``field_name = value`` alone (None: it accepts it)."""
    from taskgraph.exceptions import ConfigError
    from taskgraph.training import TrainConfig

    base = {"optimizer": "sgd", "momentum": 0.9} if field_name == "nesterov" else {}  # its own prerequisites
    try:
        TrainConfig(**{**base, field_name: value})
    except ConfigError as e:
        return _message(e) if e.key in (None, field_name) else None
    except (TypeError, ValueError, ArithmeticError) as e:
        return _message(e)
    return None


def _topology_value_error(name: str, param: str, value: Any) -> str | None:
    """Why topology ``name`` refuses ``param = value`` (a scalar for a tuple field as ``build_model`` passes it)."""
    import dataclasses

    from taskgraph.exceptions import TaskGraphError
    from taskgraph.models.topology import TOPOLOGIES, make_topology

    cls = TOPOLOGIES.get(name)
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name == param and isinstance(f.default, tuple) and not isinstance(value, list | tuple):
                value = (value,)
    try:
        make_topology(name, **{param: value})
    except (TaskGraphError, TypeError, ValueError, ArithmeticError) as e:
        return _message(e)
    return None


def _weighting_value_error(name: str, param: str, value: Any) -> str | None:
    """Why weighting ``name`` refuses ``param = value``."""
    from taskgraph.exceptions import TaskGraphError
    from taskgraph.weighting import make_weighting

    try:
        make_weighting(name, **{param: value})
    except (TaskGraphError, TypeError, ValueError, ArithmeticError) as e:
        return _message(e)
    return None


def _build_error(head: str, name: str, params: Mapping[str, Any]) -> str | None:
    """Why topology or weighting ``name`` refuses ``params`` together (None: it builds)."""
    import dataclasses

    from taskgraph.exceptions import TaskGraphError
    from taskgraph.models.topology import TOPOLOGIES, make_topology
    from taskgraph.weighting import make_weighting

    kw = dict(params)
    try:
        if head == "weighting":
            make_weighting(name, **kw)
        else:
            cls = TOPOLOGIES.get(name)
            if dataclasses.is_dataclass(cls):
                for f in dataclasses.fields(cls):
                    if f.name in kw and isinstance(f.default, tuple) and not isinstance(kw[f.name], list | tuple):
                        kw[f.name] = (kw[f.name],)
            make_topology(name, **kw)
    except (TaskGraphError, TypeError, ValueError, ArithmeticError) as e:
        return _message(e)
    return None


@dataclass(frozen=True)
class TrialConfig:
    """A trial's structured configuration, resolved from its flat parameters."""

    grouping: str = "all-in-one"
    topology: str = "hard"
    topology_params: dict[str, Any] = field(default_factory=dict)
    weighting: str = "equal"
    weighting_params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"grouping": self.grouping, "topology": self.topology, "topology_params": self.topology_params,
                "weighting": self.weighting, "weighting_params": self.weighting_params, "train": self.train}


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of :class:`Param`; see the module docstring.

    Build with :meth:`load` (a TOML file) or :meth:`from_dict`; both validate
    everything and raise :class:`ConfigError` naming the file and key.
    """

    params: tuple[Param, ...]
    description: str = ""
    file: str | None = None

    # --- loading ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Read and validate a search-space TOML file."""
        return cls.from_dict(read_toml(path), file=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str | None = None) -> SearchSpace:
        """Validate a parsed search space (the TOML file's content)."""

        top = Table(data, file=file)
        description = top.str("description", "")
        ptab = top.table("params", required=True)
        top.check_unknown()
        if not ptab.data:
            raise ptab.error(None, "'params' must declare at least one parameter")
        train_fields = _train_fields()
        out: list[Param] = []
        by_name: dict[str, Param] = {}
        for name in ptab.data:
            t = ptab.table(name)
            key = t.prefix
            if not name.replace("_", "").replace("-", "").isalnum():
                raise t.error(None, f"a parameter name must hold letters, digits, '_' or '-' only; got {name!r}")
            ptype = t.str("type", choices=_TYPES)
            if name == "grouping" and ptype != "grouping" or ptype == "grouping" and name != "grouping":
                raise t.error("type", "the parameter named 'grouping' and only it must have type 'grouping'; "
                                      f"got {name!r} with type {ptype!r}")
            default_target = name if name in _STRUCTURAL else (f"train.{name}" if name in train_fields else None)
            target = t.str("target", default_target) if default_target else t.str("target")
            kw: dict[str, Any] = {}
            if ptype in ("float", "int"):
                low: float
                high: float
                if ptype == "int":  # Optuna stores every parameter as a float: exact up to 2**53
                    low, high = (t.int(k, low=-_INT_MAX, high=_INT_MAX) for k in ("low", "high"))
                else:
                    low, high = t.float("low"), t.float("high")
                if not low < high:
                    raise t.error("high", f"'low < high' must hold for {key!r} (an empty or inverted range "
                                          f"cannot be searched); got low={low}, high={high}")
                if not math.isfinite(high - low):
                    raise t.error("high", f"'high - low' must be finite for {key!r} (samplers draw in it); "
                                          f"got low={low}, high={high}")
                num = t.int if ptype == "int" else t.float
                log = t.bool("log", False)
                if log and low <= 0:
                    raise t.error("low", f"a log-scale range needs 'low > 0'; got low={low}")
                step = num("step", None)
                if step is not None and (step <= 0 or log or step > high - low):
                    raise t.error("step", f"'step' must be > 0, at most 'high - low' and not combined with log; "
                                          f"got step={step}, low={low}, high={high}, log={log}")
                kw.update(low=low, high=high, log=log, step=step)
            elif ptype == "categorical":
                choices = t.list("choices", of=(str, int, float, bool), nonempty=True)
                bad = [c for c in choices if isinstance(c, float) and not math.isfinite(c)
                       or isinstance(c, int) and not isinstance(c, bool) and abs(c) > _INT_MAX]
                if bad:
                    raise t.error("choices", f"numeric 'choices' must be finite and within ±2**53; got {bad[0]!r}")
                if len(set(map(repr, choices))) != len(choices):
                    raise t.error("choices", f"'choices' must be unique; got {choices}")
                kw["choices"] = tuple(choices)
            else:
                refs = t.list("references", list(REFERENCES), of=str)
                for r in refs:
                    if r not in REFERENCES:
                        raise t.error("references", f"'references' may hold {', '.join(REFERENCES)}; got {r!r}")
                top_m = t.int("top_m", 3, low=0, high=100)
                k = t.int("k", 3, low=1, high=10_000)
                if top_m + len(refs) < 1:
                    raise t.error("top_m", "a grouping parameter needs 'top_m' >= 1 or at least one reference")
                kw.update(references=tuple(refs), top_m=top_m, k=k)
            per_task = t.bool("per_task", False)
            when_tab = t.table("when")
            when = []
            for parent, allowed in when_tab.data.items():
                pkey = when_tab.key(parent)
                if parent not in by_name:
                    raise t.error("when", f"a condition may only name a parameter declared before it; "
                                          f"{parent!r} is not (in {pkey!r})")
                pp = by_name[parent]
                if pp.type not in ("categorical", "grouping"):
                    raise t.error("when", f"a condition must name a categorical parameter; {parent!r} is {pp.type}")
                allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
                if pp.type == "categorical":
                    bad = [a for a in allowed if a not in pp.choices]
                    if bad:
                        raise t.error("when", f"{pkey!r} must hold choices of {parent!r} "
                                              f"({', '.join(map(str, pp.choices))}); got {bad}")
                when.append((parent, allowed))
            t.check_unknown()
            p = Param(name=name, type=ptype, target=target, when=tuple(when), per_task=per_task, **kw)
            cls._check_target(p, by_name, train_fields, t)
            cls._check_values(p, by_name, t)
            for q in out:
                if q.target == p.target and not _exclusive(p, q):
                    raise t.error("target", f"one target must be set by one parameter at a time; {q.name!r} and "
                                            f"{name!r} both set {p.target!r} (one would be silently ignored): "
                                            f"drop one, or make their 'when' conditions exclusive")
            out.append(p)
            by_name[name] = p
        cls._check_structures_build(out, ptab)
        return cls(tuple(out), description=description, file=file)

    @staticmethod
    def _check_structures_build(params: Sequence[Param], ptab: Table) -> None:
        """Each topology and weighting the space may choose must build with the parameters it surely gets.

        A parameter counts when it is active whenever that choice is (its only conditions are on the
        choice's own parameter and allow the choice); its low end (or first choice) stands for its values,
        each of which was checked alone already. So ``weighting = "fixed"`` without a per-task
        ``weighting.weights`` parameter under it is refused here, not in every trial that draws it.
        """
        for head, check in (("topology", _topology_value_error), ("weighting", _weighting_value_error)):
            chooser = next((p for p in params if p.name == head and p.type == "categorical"), None)
            for choice in chooser.choices if chooser is not None else ():
                given: dict[str, Any] = {}
                for p in params:
                    h, _, rest = p.target.partition(".")
                    if h != head or not rest or any(par != head or choice not in allowed for par, allowed in p.when):
                        continue
                    v = p.choices[0] if p.type == "categorical" else (
                        int(p.bounds()[0]) if p.type == "int" else p.bounds()[0])
                    given[rest] = {"__task__": v} if p.per_task else v
                err = _build_error(head, choice, given) if check is _weighting_value_error or given else None
                if err:
                    t = Table(ptab.data[head], file=ptab.file, prefix=ptab.key(head))
                    raise t.error("choices", f"{head} {choice!r} must build with the parameters this space always "
                                             f"gives it ({', '.join(sorted(given)) or 'none'}); it does not: {err}")

    @staticmethod
    def _check_target(p: Param, by_name: Mapping[str, Param], train_fields: list[str], t: Table) -> None:
        from taskgraph.runners import stages

        head, _, rest = p.target.partition(".")
        if p.target in _STRUCTURAL:
            if p.target != p.name:
                raise t.error("target", f"target {p.target!r} belongs to the parameter named {p.target!r}; "
                                        f"got it on {p.name!r}")
            if p.name in ("topology", "weighting"):
                if p.type != "categorical":
                    raise t.error("type", f"{p.name!r} must be categorical; got {p.type!r}")
                valid = stages.topology_names() if p.name == "topology" else stages.weighting_names()
                for c in p.choices:
                    if c not in valid:
                        raise t.error("choices", f"unknown {p.name} {c!r}; valid: {', '.join(valid)}")
            return
        if head == "train":
            if rest not in train_fields:
                raise t.error("target", f"a 'train.' target must name one of {', '.join(train_fields)}; "
                                        f"got {p.target!r}")
            return
        if head in ("topology", "weighting") and rest:
            parent = by_name.get(head)
            names = None
            for par, allowed in p.when:
                if par == head:
                    names = allowed
            if names is None:
                names = parent.choices if parent is not None else (("hard",) if head == "topology" else ("equal",))
            check = stages.check_topology_params if head == "topology" else stages.check_weighting_params
            for n in names:
                check(n, [rest], file=t.file, key=t.key("target"))
            return
        raise t.error("target", "'target' must be grouping, topology, weighting, train.<field>, "
                                f"topology.<param> or weighting.<param>; got {p.target!r}")

    @staticmethod
    def _check_values(p: Param, by_name: Mapping[str, Param], t: Table) -> None:
        """The range ends (or every choice) of a hyper-parameter must be values training accepts.

        Each value is given alone to what consumes it (``TrainConfig``, the topology's spec, the
        weighting's constructor, each of the names the parameter's condition allows), so a range
        that reaches, say, ``batch_size = 0`` or ``weight_decay < 0`` is refused at load time
        instead of failing its trials.
        """
        head, _, rest = p.target.partition(".")
        if p.target in _STRUCTURAL or not rest:
            return
        if p.type == "categorical":
            values = [("choices", v) for v in p.choices]
        else:
            cast: Callable[[float], Any] = int if p.type == "int" else float
            values = [("low", cast(p.bounds()[0])), ("high", cast(p.bounds()[1]))]
        check: Callable[[str, str, Any], str | None]
        names: tuple[Any, ...]
        if head == "train":
            check = _train_value_error
            names = ("",)
        else:
            check = _topology_value_error if head == "topology" else _weighting_value_error
            names = next((allowed for par, allowed in p.when if par == head), ())
            if not names:
                parent = by_name.get(head)
                names = parent.choices if parent is not None else (("hard",) if head == "topology" else ("equal",))
        bounds = TOPOLOGY_BOUNDS.get(rest) if head == "topology" else None
        for where, v in values:
            for n in names:
                value = {"__task__": v} if p.per_task else v
                err = check(n, rest, value)
                if err:
                    of = f"{head} {n!r}" if n else "training"
                    raise t.error(where, f"{t.key(where)!r} must be a value {of} accepts for {rest!r}; "
                                         f"got {v!r}: {err}")
            if bounds is not None and isinstance(v, int | float) and not isinstance(v, bool) \
                    and not bounds[0] <= v <= bounds[1]:
                raise t.error(where, f"{t.key(where)!r} must lie in [{bounds[0]}, {bounds[1]}] for {p.target!r} "
                                     f"(larger topologies do not build in reasonable memory); got {v!r}")

    # --- views --------------------------------------------------------------------------
    @property
    def grouping(self) -> Param | None:
        """The grouping parameter, if the space searches groupings."""
        return next((p for p in self.params if p.type == "grouping"), None)

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    # --- sampling -----------------------------------------------------------------------
    def suggest(self, trial: Any, *, tasks: Sequence[str], groupings: Sequence[str]) -> dict[str, Any]:
        """Sample a trial's flat parameters define-by-run (conditionals honoured).

        Args:
            trial: an ``optuna.Trial`` (or Ray's wrapper of one).
            tasks: the study's task names (for per-task parameters).
            groupings: the labels of the study's groupings (the grouping parameter's choices).

        Returns:
            ``{optuna param name: value}`` of the active parameters.
        """
        values: dict[str, Any] = {}
        for p in self.params:
            if not p.active(values):
                continue
            if p.per_task:
                for task in tasks:
                    values[f"{p.name}.{task}"] = p.suggest(trial, f"{p.name}.{task}", groupings)
            else:
                values[p.name] = p.suggest(trial, p.name, groupings)
        return values

    def resolve(self, params: Mapping[str, Any]) -> TrialConfig:
        """Turn flat parameters into a :class:`TrialConfig` (per-task values become ``{task: v}``)."""
        cfg: dict[str, Any] = {"topology_params": {}, "weighting_params": {}, "train": {}}
        by_name = {p.name: p for p in self.params}
        for key, value in params.items():
            base, _, task = key.partition(".")
            p = by_name.get(base)
            if p is None:
                continue
            if p.target in _STRUCTURAL:
                cfg[p.target] = value
                continue
            head, _, rest = p.target.partition(".")
            bucket = cfg["train"] if head == "train" else cfg[f"{head}_params"]
            if p.per_task:
                bucket.setdefault(rest, {})[task] = value
            else:
                bucket[rest] = value
        return TrialConfig(**cfg)
