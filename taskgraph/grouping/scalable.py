"""Scalable grouping for 20 to 200+ tasks: clustering starts, then local search on the true objective.

Starts come from the symmetrised affinity W = (Z + Zᵀ)/2: average-linkage
agglomerative clustering (``scipy.cluster.hierarchy``) cut at several numbers
of clusters, spectral clustering (the top eigenvectors of W, then k-means with
``scipy.cluster.vq.kmeans2``) and random labels. Each start is repaired to
respect k, the budget and the singleton policy, then improved by local search
on the *served-set* representation of :mod:`taskgraph.grouping.columns` —
moving one task to another served set or a new one, merging two sets, and
switching a lone task between its own network and a group with its best
helper — with every move scored on the true objective (the overlap variant
recomputes each set's best helpers). Iterated local search ("kicks": a few
random moves, then local search again) continues from the best solution.

Clustering then refining follows Standley et al. (ICML 2020), who note exact
selection stops scaling; spectral clustering of a task-affinity graph is the
usual scalable relaxation (von Luxburg, "A tutorial on spectral clustering", 2007).

The returned groupings carry ``bound``, the sum over tasks of the best score
each could get (:meth:`GroupingProblem.upper_bound`), so ``Grouping.gap`` says
how far from optimal they can be at most.

Example:
    >>> import numpy as np
    >>> from taskgraph.grouping.objective import GroupingProblem
    >>> Z = np.random.default_rng(0).normal(size=(30, 30))
    >>> g = ScalableSolver(restarts=3, seed=0).solve(GroupingProblem.from_array(Z, k=4))[0]
    >>> g.n_groups <= 4, g.bound >= g.score
    (True, True)
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from taskgraph.exceptions import GroupingError
from taskgraph.grouping.base import SOLVERS, GroupingSolver, check_top_m
from taskgraph.grouping.objective import GroupingProblem
from taskgraph.grouping.value import Grouping

#: a served set as the columns of the recombination: (its tasks, alone) -> (value, cost)
Columns = dict[tuple[tuple[int, ...], bool], tuple[float, float]]
#: the relocation move's best per task: (gain, target, target_alone, source_alone)
Relocation = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

__all__ = ["ScalableSolver", "initial_labelings"]

_EPS = 1e-10
_SWAP_MAX_TASKS = 50  # swap moves scan n² pairs × n; beyond this they cost more than they find


def _group_values(Z: np.ndarray, A: npt.ArrayLike, size: npt.ArrayLike, Hc: np.ndarray, bits: np.ndarray,
                  helpers: bool) -> tuple[np.ndarray, np.ndarray]:
    """Value of the group option of each served set (rows), and its number of helpers.

    ``A``: Σ within-set affinity; ``size``: |S|; ``Hc[r, j]`` = Σ_{t∈S_r} Z[j, t];
    ``bits``: (R, n) bool membership. The value is max over h of
    (A + Σ of the h largest Hc[r, j], j ∉ S) / (|S| + h - 1), h = 0 only when |S| >= 2.
    """
    A = np.asarray(A, float)
    size = np.asarray(size, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        alone = np.where(size >= 2, A / np.maximum(size - 1, 1), -np.inf)
    if not helpers or Hc.shape[1] < 2:
        return alone, np.zeros(len(A), int)
    n = Hc.shape[1]
    negc = np.where(bits, np.inf, -Hc)
    negc.sort(axis=1)
    cum = np.cumsum(negc[:, : n - 1], axis=1)  # -(Σ of the h largest), h = 1 .. n-1
    cand = (A[:, None] - cum) / (np.maximum(size, 1)[:, None] + np.arange(n - 1)[None, :])
    h = cand.argmax(1)
    best = cand[np.arange(len(A)), h]
    use_alone = alone >= best
    return np.where(use_alone, alone, best), np.where(use_alone, 0, h + 1)


def initial_labelings(problem: GroupingProblem, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Starting served-set labelings: hierarchical cuts, spectral clusterings, then random ones."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.cluster.vq import kmeans2
    from scipy.spatial.distance import squareform

    n, k = problem.n, problem.k
    W = (problem.Z + problem.Z.T) / 2
    ks = sorted({k, max(1, k - 1), max(1, (k + 1) // 2), min(k, max(2, round(math.sqrt(n))))}, reverse=True)
    out: list[np.ndarray] = []
    if n >= 2:
        D = W.max() - W
        np.fill_diagonal(D, 0.0)
        tree = linkage(squareform(D, checks=False), method="average")
        for kk in ks:
            out.append(fcluster(tree, kk, criterion="maxclust") - 1)
        vals, vecs = np.linalg.eigh(W)
        for kk in ks:
            if kk < 2:
                continue
            emb = vecs[:, -kk:]
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            with warnings.catch_warnings():  # an empty cluster only means fewer sets: repair copes
                warnings.simplefilter("ignore", UserWarning)
                _, lab = kmeans2(emb, kk, minit="++", seed=rng)
            out.append(lab)
    while len(out) < count:
        kk = int(rng.integers(1, k + 1))
        out.append(rng.integers(0, kk, size=n))
    return out[:max(count, 1)]


class _State:
    """A served-set partition with incremental statistics: the local search's working state.

    ``bits[r]`` is served set r's membership, ``alone[r]`` whether a one-task set trains
    as a lone network; ``A`` (within-set affinity), ``Hc``/``Hd`` (affinity into and out of
    each set), ``size``, ``gval`` (the group option's value), ``val`` and ``cst`` (each
    set's value and cost) follow them. The moves that change it are the small classes
    below (:class:`_Relocate`, :class:`_Merge`, :class:`_Swap`, :class:`_Split`,
    :class:`_Toggle`), combined by :class:`_LocalSearch` and :class:`_Repair`.
    """

    def __init__(self, problem: GroupingProblem, labels: np.ndarray):
        self.p = problem
        self.o = problem.objective
        self.Z = problem.Z
        self.helpers = self.o.variant == "overlap"
        self.n = problem.n
        self.budget = math.inf if self.o.budget is None else self.o.budget + 1e-9
        _, lab = np.unique(np.asarray(labels), return_inverse=True)
        self.bits = np.zeros((lab.max() + 1, self.n), bool)
        self.bits[lab, np.arange(self.n)] = True
        self.alone = np.zeros(len(self.bits), bool)
        self.swaps = self.n <= _SWAP_MAX_TASKS
        self._recompute()

    # -------------------------------------------------------------- bookkeeping
    def _recompute(self) -> None:
        b = self.bits.astype(float)
        self.Hc = b @ self.Z.T
        self.Hd = b @ self.Z
        self.A = (b * self.Hd).sum(1)
        self.size = self.bits.sum(1)
        self.alone &= self.size == 1
        gv, _ = _group_values(self.Z, self.A, self.size, self.Hc, self.bits, self.helpers)
        self.gval = gv
        for i in np.nonzero(self.size == 1)[0]:
            if not np.isfinite(gv[i]) and self.o.allow_singletons:
                self.alone[i] = True
        self.val = np.where(self.alone, self.o.singleton_value, self.gval)
        self.cst = np.where(self.alone, self.o.singleton_cost, self.o.group_cost)

    def _recompute_forced(self) -> None:
        """Recompute statistics, keeping the lone-network choices already made."""
        alone = self.alone.copy()
        self._recompute()
        self.alone = alone & (self.size == 1)
        if self.o.allow_singletons:
            self.alone |= (self.size == 1) & ~np.isfinite(self.gval)
        self.val = np.where(self.alone, self.o.singleton_value, self.gval)
        self.cst = np.where(self.alone, self.o.singleton_cost, self.o.group_cost)

    @property
    def B(self) -> int:
        return len(self.bits)

    def value(self) -> float:
        return float(self.val.sum())

    def cost(self) -> float:
        return float(self.cst.sum())

    def feasible(self) -> bool:
        return self.B <= self.p.k and self.cost() <= self.budget and bool(np.isfinite(self.val).all())

    def labels(self) -> np.ndarray:
        lab: np.ndarray = self.bits.argmax(0)
        return lab

    def groups(self) -> list[tuple[int, ...]]:
        """The groups: each served set plus its best helpers (overlap), or itself."""
        out = []
        for i in range(self.B):
            S = np.nonzero(self.bits[i])[0]
            if self.alone[i] or not self.helpers:
                out.append(tuple(S.tolist()))
                continue
            _, h = _group_values(self.Z, self.A[i:i + 1], self.size[i:i + 1], self.Hc[i:i + 1],
                                 self.bits[i:i + 1], True)
            c = np.where(self.bits[i], -np.inf, self.Hc[i])
            helpers = np.argsort(-c, kind="stable")[: int(h[0])]
            out.append(tuple(sorted(S.tolist() + helpers.tolist())))
        return out

    def copy(self) -> _State:
        new = object.__new__(_State)
        new.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()})
        return new

    # ------------------------------------------------------- single mutations
    def relocate(self, t: int, b: int, t_alone: bool, s_alone: bool) -> None:
        """Move task t to set b (``b == B``: a new set)."""
        a = int(self.bits[:, t].argmax())
        if b == self.B:
            self.bits = np.vstack([self.bits, np.zeros((1, self.n), bool)])
            self.alone = np.append(self.alone, False)
        self.bits[a, t] = False
        self.bits[b, t] = True
        self.alone[b] = t_alone
        self.alone[a] = s_alone
        keep = self.bits.any(1)
        self.bits, self.alone = self.bits[keep], self.alone[keep]
        self._recompute_forced()

    def merge(self, a: int, b: int) -> None:
        """Merge set b into set a (a < b)."""
        self.bits[a] |= self.bits[b]
        self.alone[a] = False
        self.bits = np.delete(self.bits, b, axis=0)
        self.alone = np.delete(self.alone, b)
        self._recompute_forced()

    def toggle(self, i: int) -> None:
        """Switch lone set i between its own network and a group with its best helper."""
        self.alone[i] = not self.alone[i]
        self.val = np.where(self.alone, self.o.singleton_value, self.gval)
        self.cst = np.where(self.alone, self.o.singleton_cost, self.o.group_cost)

    # ------------------------------------------------------------ searches
    def repair(self) -> None:
        """Merge sets until k, the budget and the singleton policy hold (see :class:`_Repair`)."""
        _Repair.run(self)

    def local_search(self, rng: np.random.Generator, deadline: float, max_rounds: int = 10_000) -> None:
        """Improve until no move gains (see :class:`_LocalSearch`)."""
        _LocalSearch.run(self, deadline, max_rounds)


class _Relocate:
    """Move one task to another served set or to a new one of its own."""

    @staticmethod
    def gains(st: _State) -> Relocation:
        """For every task, the best move, scored exactly.

        Returns ``(gain, target, target_alone, source_alone)`` arrays of length n; target
        ``B`` means a new set; gain is -inf where no move is allowed.
        """
        n, B, Z, o = st.n, st.B, st.Z, st.o
        ar = np.arange(n)
        a = st.labels()
        # the source set without t
        size_rem = st.size[a] - 1
        A_rem = st.A[a] - st.Hd[a, ar] - st.Hc[a, ar]
        bits_rem = st.bits[a].copy()
        bits_rem[ar, ar] = False
        gv_rem, _ = _group_values(Z, A_rem, size_rem, st.Hc[a] - Z.T, bits_rem, st.helpers)
        gone = size_rem == 0
        src = [(np.where(gone, 0.0, gv_rem), np.where(gone, 0.0, o.group_cost), False)]
        if o.allow_singletons:
            src.append((np.where(size_rem == 1, o.singleton_value, -np.inf), np.full(n, o.singleton_cost), True))
        # joining every existing set
        A_ins = (st.A[None, :] + st.Hd.T + st.Hc.T).ravel()
        size_ins = np.broadcast_to(st.size[None, :] + 1, (n, B)).ravel()
        Hc_ins = (st.Hc[None, :, :] + Z.T[:, None, :]).reshape(-1, n)
        bits_ins = (st.bits[None, :, :] | np.eye(n, dtype=bool)[:, None, :]).reshape(-1, n)
        gv_ins, _ = _group_values(Z, A_ins, size_ins, Hc_ins, bits_ins, st.helpers)
        gv_ins = gv_ins.reshape(n, B)
        gv_ins[ar, a] = -np.inf
        # a new set of its own: with its best helper (overlap) or alone (when allowed)
        if st.helpers and n > 1:
            new_group = np.where(np.eye(n, dtype=bool), -np.inf, Z).max(0)
        else:
            new_group = np.full(n, -np.inf)
        total_c = st.cost()
        can_new = (B - gone + 1) <= st.p.k
        best_gain = np.full(n, -np.inf)
        best_target = np.full(n, -1)
        best_t_alone = np.zeros(n, bool)
        best_s_alone = np.zeros(n, bool)

        def offer(gain: np.ndarray, target: np.ndarray, t_alone: bool, s_alone: bool | np.ndarray) -> None:
            better = gain > best_gain + _EPS
            best_gain[better] = gain[better]
            best_target[better] = target[better] if np.ndim(target) else target
            best_t_alone[better] = t_alone
            best_s_alone[better] = s_alone

        old_v = st.val[a][:, None] + st.val[None, :]
        old_c = st.cst[a][:, None] + st.cst[None, :]
        for sv, sc, s_alone in src:
            ok = total_c - old_c + sc[:, None] + o.group_cost <= st.budget
            gain = np.where(ok, sv[:, None] + gv_ins - old_v, -np.inf)
            j = gain.argmax(1)
            offer(gain[ar, j], j, False, s_alone)
            for tv, tc, t_alone in ((new_group, o.group_cost, False),
                                    (np.full(n, o.singleton_value if o.allow_singletons else -np.inf),
                                     o.singleton_cost, True)):
                ok = can_new & (total_c - st.cst[a] + sc + tc <= st.budget)
                offer(np.where(ok, sv + tv - st.val[a], -np.inf), np.full(n, B), t_alone, s_alone)
        return best_gain, best_target, best_t_alone, best_s_alone


class _Merge:
    """Merge two served sets into one."""

    @staticmethod
    def gains(st: _State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(gain, a, b) arrays over every pair of served sets (empty with fewer than two)."""
        if st.B < 2:
            return np.zeros(0), np.zeros(0, int), np.zeros(0, int)
        ia, ib = np.triu_indices(st.B, 1)
        bf = st.bits.astype(float)
        cross = (st.Hd[ia] * bf[ib]).sum(1) + (st.Hd[ib] * bf[ia]).sum(1)
        gv, _ = _group_values(st.Z, st.A[ia] + st.A[ib] + cross, st.size[ia] + st.size[ib],
                              st.Hc[ia] + st.Hc[ib], st.bits[ia] | st.bits[ib], st.helpers)
        cost = st.cost() - st.cst[ia] - st.cst[ib] + st.o.group_cost
        gain = np.where(cost <= st.budget, gv - st.val[ia] - st.val[ib], -np.inf)
        return gain, ia, ib

    @staticmethod
    def best(st: _State) -> tuple[float, int, int] | None:
        """Best (gain, a, b) over merging two sets (None with fewer than two)."""
        if st.B < 2:
            return None
        gain, ia, ib = _Merge.gains(st)
        i = int(gain.argmax())
        return float(gain[i]), int(ia[i]), int(ib[i])


class _Swap:
    """Exchange two tasks between served sets (sizes kept: what single moves cannot do)."""

    @staticmethod
    def apply(st: _State) -> bool:
        """Apply the best disjoint improving swaps; True if any."""
        Z = st.Z
        lab = st.labels()
        t, u = np.nonzero(lab[:, None] < lab[None, :])
        if t.size == 0:
            return False
        a, b = lab[t], lab[u]

        def side(blk: np.ndarray, out_: np.ndarray, in_: np.ndarray) -> np.ndarray:
            A = (st.A[blk] - st.Hd[blk, out_] - st.Hc[blk, out_] + st.Hd[blk, in_] + st.Hc[blk, in_]
                 - Z[out_, in_] - Z[in_, out_])
            Hc = st.Hc[blk] - Z.T[out_] + Z.T[in_]
            bits = st.bits[blk].copy()
            r = np.arange(len(blk))
            bits[r, out_] = False
            bits[r, in_] = True
            return _group_values(Z, A, st.size[blk], Hc, bits, st.helpers)[0]

        gain = side(a, t, u) + side(b, u, t) - st.val[a] - st.val[b]
        # lone networks keep their option only when the set stays a singleton: swaps keep sizes
        gain = np.where(st.alone[a] | st.alone[b], -np.inf, gain)
        tol = _EPS * (1 + abs(st.value()))
        touched: set[int] = set()
        applied = 0
        for i in np.argsort(-gain):
            if not gain[i] > tol:
                break
            if a[i] in touched or b[i] in touched:
                continue
            touched |= {int(a[i]), int(b[i])}
            st.bits[a[i], t[i]], st.bits[a[i], u[i]] = False, True
            st.bits[b[i], u[i]], st.bits[b[i], t[i]] = False, True
            applied += 1
        if applied:
            st._recompute_forced()
        return applied > 0


class _Split:
    """Split a served set in two along its own average-linkage tree.

    Needed by the partition variant with forbidden singletons, where no single-task
    move can open a new set.
    """

    @staticmethod
    def gains(st: _State) -> list[tuple[float, int, np.ndarray]]:
        """``(gain, set, part)`` for each set that may split; ``part`` is the half that leaves."""
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform

        if st.B >= st.p.k or st.cost() + st.o.group_cost > st.budget:
            return []
        out = []
        for a in range(st.B):
            idx = np.nonzero(st.bits[a])[0]
            if len(idx) < 4 or st.alone[a]:
                continue
            W = (st.Z[np.ix_(idx, idx)] + st.Z[np.ix_(idx, idx)].T) / 2
            D = W.max() - W
            np.fill_diagonal(D, 0.0)
            part = fcluster(linkage(squareform(D, checks=False), "average"), 2, criterion="maxclust") == 1
            bits = np.zeros((2, st.n), bool)
            bits[0, idx[part]] = True
            bits[1, idx[~part]] = True
            bf = bits.astype(float)
            Hd = bf @ st.Z
            gv, _ = _group_values(st.Z, (bf * Hd).sum(1), bits.sum(1), bf @ st.Z.T, bits, st.helpers)
            gain = float(gv.sum() - st.val[a])
            if np.isfinite(gain):
                out.append((gain, a, bits[1]))
        return out


class _Toggle:
    """Switch a lone task between its own network and a group with its best helper."""

    @staticmethod
    def best(st: _State) -> tuple[float, int] | None:
        """Best (gain, set) over the lone sets that may switch (None when none may)."""
        best = None
        if not st.o.allow_singletons:
            return None
        for i in np.nonzero(st.size == 1)[0]:
            if st.alone[i] and np.isfinite(st.gval[i]):
                v, c = st.gval[i], st.o.group_cost
            elif not st.alone[i]:
                v, c = st.o.singleton_value, st.o.singleton_cost
            else:
                continue
            if st.cost() - st.cst[i] + c > st.budget:
                continue
            gain = v - st.val[i]
            if best is None or gain > best[0]:
                best = (float(gain), int(i))
        return best


class _Batch:
    """Improving moves applied together when they touch disjoint sets, within k and the budget.

    Works on copies of the state's membership; :meth:`commit` writes them back.
    """

    def __init__(self, st: _State, relocation: Relocation):
        self.st = st
        self.reloc = relocation
        self.lab = st.labels()
        self.B0 = st.B
        self.count, self.cost = st.B, st.cost()
        self.alone = st.alone.copy()
        self.bits = st.bits.copy()
        self.touched: set[int] = set()
        self.new_rows: list[tuple[int, bool]] = []
        self.split_rest = np.zeros(0, int)
        self.merged: list[tuple[int, int]] = []
        self.applied = 0

    def _fits(self, blocks: set[int], d_cost: float, d_count: int | None) -> bool:
        """Untouched sets, within the budget, and within k (unless ``d_count`` is None: merges, toggles)."""
        return not (self.touched & blocks) and self.cost + d_cost <= self.st.budget and \
            (d_count is None or self.count + d_count <= self.st.p.k)

    def _take(self, blocks: set[int], d_cost: float, d_count: int) -> None:
        self.touched |= blocks
        self.cost += d_cost
        self.count += d_count
        self.applied += 1

    def move(self, t: int) -> None:
        st, o = self.st, self.st.o
        _, target, t_alone, s_alone = self.reloc
        a, b = int(self.lab[t]), int(target[t])
        blocks = {a} if b == self.B0 else {a, b}
        if b == self.B0 and self.new_rows:
            return
        d_cost = -st.cst[a] + (0.0 if st.size[a] == 1 else (o.singleton_cost if s_alone[t] else o.group_cost))
        d_cost += (o.singleton_cost if t_alone[t] else o.group_cost) - (0.0 if b == self.B0 else st.cst[b])
        d_count = int(b == self.B0) - int(st.size[a] == 1)
        if not self._fits(blocks, d_cost, d_count):
            return
        self.bits[a, t] = False
        self.alone[a] = bool(s_alone[t])
        if b == self.B0:
            self.new_rows.append((t, bool(t_alone[t])))
        else:
            self.bits[b, t] = True
            self.alone[b] = bool(t_alone[t])
        self._take(blocks, d_cost, d_count)

    def split(self, a: int, part: np.ndarray) -> None:
        if self.new_rows or not self._fits({a}, self.st.o.group_cost, 1):
            return
        self.bits[a] &= ~part
        moved = np.nonzero(part)[0]
        self.new_rows.append((int(moved[0]), False))
        self.split_rest = moved[1:]
        self._take({a}, self.st.o.group_cost, 1)

    def merge(self, a: int, b: int) -> None:
        st = self.st
        d_cost = st.o.group_cost - st.cst[a] - st.cst[b]
        if not self._fits({a, b}, d_cost, None):
            return
        self.merged.append((a, b))
        self._take({a, b}, d_cost, -1)

    def toggle(self, i: int) -> None:
        st = self.st
        d_cost = (st.o.group_cost if st.alone[i] else st.o.singleton_cost) - st.cst[i]
        if not self._fits({i}, d_cost, None):
            return
        self.alone[i] = not st.alone[i]
        self._take({i}, d_cost, 0)

    def commit(self) -> None:
        st, bits, alone = self.st, self.bits, self.alone
        for a, b in self.merged:
            bits[a] |= bits[b]
            bits[b] = False
            alone[a] = False
        for t, t_al in self.new_rows:
            row = np.zeros((1, st.n), bool)
            row[0, t] = True
            row[0, self.split_rest] = True
            bits = np.vstack([bits, row])
            alone = np.append(alone, t_al)
        keep = bits.any(1)
        st.bits, st.alone = bits[keep], alone[keep]
        st._recompute_forced()


class _LocalSearch:
    """Relocations, merges, splits and toggles in batches, swaps when those stall."""

    @staticmethod
    def improve_round(st: _State) -> bool:
        """Apply the best improving moves that touch disjoint sets; True if any was applied."""
        tol = _EPS * (1 + abs(st.value()))
        reloc = _Relocate.gains(st)
        gain = reloc[0]
        mg, ia, ib = _Merge.gains(st)
        cands = [(float(gain[t]), "move", int(t)) for t in np.nonzero(gain > tol)[0]]
        cands += [(float(mg[i]), "merge", int(i)) for i in np.nonzero(mg > tol)[0]]
        tg = _Toggle.best(st)
        if tg is not None and tg[0] > tol:
            cands.append((tg[0], "toggle", tg[1]))
        split_list = [(g, a, part) for g, a, part in _Split.gains(st) if g > tol]
        splits = {a: part for _, a, part in split_list}
        cands += [(g, "split", a) for g, a, _ in split_list]
        if not cands:
            return False
        cands.sort(key=lambda c: -c[0])
        batch = _Batch(st, reloc)
        for _gain, kind, i in cands:
            if kind == "move":
                batch.move(i)
            elif kind == "split":
                batch.split(i, splits[i])
            elif kind == "merge":
                batch.merge(int(ia[i]), int(ib[i]))
            else:
                batch.toggle(i)
        batch.commit()
        return batch.applied > 0

    @staticmethod
    def run(st: _State, deadline: float, max_rounds: int = 10_000) -> None:
        """Improve until no move, merge, split, toggle or swap gains (or the deadline passes)."""
        for _ in range(max_rounds):
            if time.perf_counter() > deadline:
                return
            before = st.value()
            if _LocalSearch.improve_round(st) and st.value() > before + _EPS * (1 + abs(before)):
                continue
            if not (st.swaps and _Swap.apply(st)):
                return


class _Repair:
    """Merge sets (best merge first) until k, the budget and the singleton policy hold."""

    @staticmethod
    def _join_forbidden_singleton(st: _State, s: int) -> None:
        """Join lone set s to the set where the pair of sets scores best."""
        best = None
        for b in range(st.B):
            if b == s:
                continue
            trial_bits = st.bits[s] | st.bits[b]
            sub = np.nonzero(trial_bits)[0]
            A = st.Z[np.ix_(sub, sub)].sum()
            gv, _ = _group_values(st.Z, [A], [len(sub)], (trial_bits.astype(float) @ st.Z.T)[None],
                                  trial_bits[None], st.helpers)
            gain = gv[0] - st.val[b]
            if best is None or gain > best[0]:
                best = (gain, b)
        if best is not None:  # always: repair only joins a singleton when there are two sets or more
            st.merge(min(s, best[1]), max(s, best[1]))

    @staticmethod
    def run(st: _State) -> None:
        while True:
            bad_single = np.nonzero(~np.isfinite(st.val))[0]
            fits = st.B <= st.p.k and st.cost() <= st.budget
            if (fits and bad_single.size == 0) or st.B == 1:
                return
            if bad_single.size and fits:
                _Repair._join_forbidden_singleton(st, int(bad_single[0]))
                continue
            if st.cost() > st.budget and st.o.allow_singletons:
                # cheaper option for lone tasks before merging, when it exists
                t = _Toggle.best(st)
                if t is not None and st.cst[t[1]] > (st.o.singleton_cost if not st.alone[t[1]]
                                                     else st.o.group_cost):
                    st.toggle(t[1])
                    continue
            m = _Merge.best(st)
            if m is None or not math.isfinite(m[0]):
                ia, ib = 0, 1
            else:
                _, ia, ib = m
            st.merge(ia, ib)


@SOLVERS.decorator("scalable")
class ScalableSolver(GroupingSolver):
    """Clustering starts + iterated local search on the true objective; any number of tasks.

    Args:
        restarts: number of starting labelings (hierarchical and spectral first, then random).
        kicks: perturbation rounds (a few random moves + local search) per start.
        kick_size: tasks moved at random per kick.
        recombine: rounds of recombination: a set-partitioning MILP (HiGHS) over every
            served set of every local optimum seen, then local search from its answer.
        time_limit: stop starting new work after this many seconds (None: no limit).
        seed: random seed (same seed, same answer).

    Raises (from :meth:`solve`):
        GroupingError: no feasible grouping found (cannot happen when the problem validated).
    """

    name = "scalable"

    def __init__(self, restarts: int = 8, kicks: int = 4, kick_size: int = 3, recombine: int = 2,
                 time_limit: float | None = None, seed: int = 0):
        if restarts < 1 or kicks < 0 or kick_size < 1:
            raise GroupingError(f"ScalableSolver: restarts >= 1, kicks >= 0, kick_size >= 1 must hold, got "
                                f"restarts={restarts}, kicks={kicks}, kick_size={kick_size}")
        if time_limit is not None and not time_limit > 0:
            raise GroupingError(f"ScalableSolver: 'time_limit' must be > 0 or None, got {time_limit}")
        self.restarts = int(restarts)
        self.kicks = int(kicks)
        self.kick_size = int(kick_size)
        self.recombine = int(recombine)
        self.time_limit = time_limit
        self.seed = int(seed)

    def solve(self, problem: GroupingProblem, *, top_m: int = 1,
              starts: Iterable[npt.ArrayLike] = ()) -> list[Grouping]:
        """Rank groupings; ``starts``: extra served-set labelings (length-n integer arrays) tried
        before the clustering starts, e.g. a solution at a nearby k (repaired to this k by merges)."""
        check_top_m(top_m)
        given = [np.asarray(s, int) for s in starts]
        if any(s.shape != (problem.n,) for s in given):
            raise GroupingError(f"ScalableSolver.solve: every start must be {problem.n} labels, one per task, got "
                                f"shapes {[s.shape for s in given]}")
        rng = np.random.default_rng(self.seed)
        deadline = time.perf_counter() + (self.time_limit if self.time_limit else math.inf)
        pool: dict[frozenset[frozenset[int]], tuple[float, list[tuple[int, ...]]]] = {}
        columns: Columns = {}

        def record(state: _State) -> None:
            if not state.feasible():
                return
            for i in range(state.B):
                S = tuple(np.nonzero(state.bits[i])[0].tolist())
                columns[(S, bool(state.alone[i]))] = (float(state.val[i]), float(state.cst[i]))
            groups = state.groups()
            key = frozenset(frozenset(g) for g in groups)
            if key not in pool:
                pool[key] = (problem.value(groups), groups)

        def improve(st: _State, kicks: int) -> _State:
            st.local_search(rng, deadline)
            record(st)
            best = st.copy()
            for _ in range(kicks):
                if time.perf_counter() > deadline:
                    break
                trial = best.copy()
                for t in rng.choice(problem.n, size=min(self.kick_size, problem.n), replace=False):
                    b = int(rng.integers(0, trial.B + (trial.B < problem.k)))
                    if b != int(trial.bits[:, t].argmax()):
                        trial.relocate(int(t), b, False, False)
                trial.repair()
                trial.local_search(rng, deadline)
                record(trial)
                if trial.feasible() and trial.value() > best.value() + _EPS:
                    best = trial
            return best

        if problem.objective.budget is not None and problem.n >= 2 and \
                problem.objective.budget < problem.objective.group_cost - 1e-12:
            # only lone-task networks fit the budget
            record(_State(problem, np.arange(problem.n)))
        else:
            for lab in given + initial_labelings(problem, rng, self.restarts)[: self.restarts]:
                if time.perf_counter() > deadline and pool:
                    break
                st = _State(problem, lab)
                st.repair()
                improve(st, self.kicks)
            # recombination: the best set partition of every served set seen so far (HiGHS MILP)
            for _ in range(self.recombine):
                if time.perf_counter() > deadline:
                    break
                found = _recombine(problem, columns, deadline)
                if found is None:
                    break
                st = found
                before = max(v for v, _ in pool.values())
                improve(st, self.kicks)
                if max(v for v, _ in pool.values()) <= before + _EPS * (1 + abs(before)):
                    break
        if not pool:
            raise GroupingError("the scalable solver found no feasible grouping (check k, budget and singletons)")
        bound = problem.upper_bound()
        ranked = sorted(pool.values(), key=lambda vg: -vg[0])
        out = []
        for v, groups in ranked[:top_m]:
            g = Grouping.from_indices(problem, groups, solver=self.name, bound=bound,
                                      optimal=problem.k == 1 or abs(bound - v) <= 1e-9 * (1 + abs(bound)))
            out.append(g)
        return out


def _recombine(problem: GroupingProblem, columns: Columns, deadline: float) -> _State | None:
    """Solve the set-partitioning MILP over the served sets collected from local optima.

    Blocks of different local optima combine into a solution at least as good as
    each of them; returns its working state (None when HiGHS finds nothing in time).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix

    keys = list(columns)
    if not keys:
        return None
    n, o = problem.n, problem.objective
    rows, cols = [], []
    for c, (S, _) in enumerate(keys):
        rows += list(S)
        cols += [c] * len(S)
    A = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(keys)))
    value = np.array([columns[key][0] for key in keys])
    cost = np.array([columns[key][1] for key in keys])
    cons = [LinearConstraint(A, 1, 1), LinearConstraint(np.ones((1, len(keys))), -np.inf, problem.k)]
    if o.budget is not None:
        cons.append(LinearConstraint(cost[None, :], -np.inf, o.budget + 1e-9))
    left = deadline - time.perf_counter()
    options = {"time_limit": float(min(max(left, 1.0), 30.0))}
    res = milp(-value, constraints=cons, integrality=np.ones(len(keys)), bounds=Bounds(0, 1), options=options)
    if res.x is None:
        return None
    chosen = [keys[i] for i in np.nonzero(res.x > 0.5)[0]]
    lab = np.zeros(n, int)
    for b, (S, _) in enumerate(chosen):
        lab[list(S)] = b
    st = _State(problem, lab)
    order = [int(lab[S[0]]) for S, _ in chosen]  # _State relabels by np.unique: same order here
    alone = np.zeros(st.B, bool)
    for b, (_, is_alone) in zip(order, chosen):
        alone[b] = is_alone
    st.alone = alone
    st._recompute_forced()
    return st
