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

import numpy as np

from taskgraph.exceptions import GroupingError
from taskgraph.grouping.base import SOLVERS, GroupingSolver, check_top_m
from taskgraph.grouping.objective import GroupingProblem
from taskgraph.grouping.value import Grouping

__all__ = ["ScalableSolver", "initial_labelings"]

_EPS = 1e-10
_SWAP_MAX_TASKS = 50  # swap moves scan n² pairs × n; beyond this they cost more than they find


def _group_values(Z: np.ndarray, A, size, Hc, bits, helpers: bool):
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
    """A served-set partition with incremental statistics (the local search's working state)."""

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
        return self.bits.argmax(0)

    def _options(self, gval: float, size: int):
        """(value, cost, alone) options of a block with group value ``gval`` and ``size`` tasks."""
        opts = []
        if np.isfinite(gval):
            opts.append((gval, self.o.group_cost, False))
        if size == 1 and self.o.allow_singletons:
            opts.append((self.o.singleton_value, self.o.singleton_cost, True))
        return opts

    # ------------------------------------------------------------------- moves
    def relocation_gains(self):
        """For every task, the best move to another served set or a new one, scored exactly.

        Returns ``(gain, target, target_alone, source_alone)`` arrays of length n; target
        ``B`` means a new set; gain is -inf where no move is allowed.
        """
        n, B, Z, o = self.n, self.B, self.Z, self.o
        ar = np.arange(n)
        a = self.labels()
        # the source set without t
        size_rem = self.size[a] - 1
        A_rem = self.A[a] - self.Hd[a, ar] - self.Hc[a, ar]
        bits_rem = self.bits[a].copy()
        bits_rem[ar, ar] = False
        gv_rem, _ = _group_values(Z, A_rem, size_rem, self.Hc[a] - Z.T, bits_rem, self.helpers)
        gone = size_rem == 0
        src = [(np.where(gone, 0.0, gv_rem), np.where(gone, 0.0, o.group_cost), False)]
        if o.allow_singletons:
            src.append((np.where(size_rem == 1, o.singleton_value, -np.inf), np.full(n, o.singleton_cost), True))
        # joining every existing set
        A_ins = (self.A[None, :] + self.Hd.T + self.Hc.T).ravel()
        size_ins = np.broadcast_to(self.size[None, :] + 1, (n, B)).ravel()
        Hc_ins = (self.Hc[None, :, :] + Z.T[:, None, :]).reshape(-1, n)
        bits_ins = (self.bits[None, :, :] | np.eye(n, dtype=bool)[:, None, :]).reshape(-1, n)
        gv_ins, _ = _group_values(Z, A_ins, size_ins, Hc_ins, bits_ins, self.helpers)
        gv_ins = gv_ins.reshape(n, B)
        gv_ins[ar, a] = -np.inf
        # a new set of its own: with its best helper (overlap) or alone (when allowed)
        if self.helpers and n > 1:
            new_group = np.where(np.eye(n, dtype=bool), -np.inf, Z).max(0)
        else:
            new_group = np.full(n, -np.inf)
        total_c = self.cost()
        can_new = (B - gone + 1) <= self.p.k
        best_gain = np.full(n, -np.inf)
        best_target = np.full(n, -1)
        best_t_alone = np.zeros(n, bool)
        best_s_alone = np.zeros(n, bool)

        def offer(gain, target, t_alone, s_alone):
            better = gain > best_gain + _EPS
            best_gain[better] = gain[better]
            best_target[better] = target[better] if np.ndim(target) else target
            best_t_alone[better] = t_alone
            best_s_alone[better] = s_alone

        old_v = self.val[a][:, None] + self.val[None, :]
        old_c = self.cst[a][:, None] + self.cst[None, :]
        for sv, sc, s_alone in src:
            ok = total_c - old_c + sc[:, None] + o.group_cost <= self.budget
            gain = np.where(ok, sv[:, None] + gv_ins - old_v, -np.inf)
            j = gain.argmax(1)
            offer(gain[ar, j], j, False, s_alone)
            for tv, tc, t_alone in ((new_group, o.group_cost, False),
                                    (np.full(n, o.singleton_value if o.allow_singletons else -np.inf),
                                     o.singleton_cost, True)):
                ok = can_new & (total_c - self.cst[a] + sc + tc <= self.budget)
                offer(np.where(ok, sv + tv - self.val[a], -np.inf), np.full(n, B), t_alone, s_alone)
        return best_gain, best_target, best_t_alone, best_s_alone

    def merge_gains(self):
        """(gain, a, b) arrays over every pair of served sets (empty with fewer than two)."""
        if self.B < 2:
            return np.zeros(0), np.zeros(0, int), np.zeros(0, int)
        ia, ib = np.triu_indices(self.B, 1)
        bf = self.bits.astype(float)
        cross = (self.Hd[ia] * bf[ib]).sum(1) + (self.Hd[ib] * bf[ia]).sum(1)
        gv, _ = _group_values(self.Z, self.A[ia] + self.A[ib] + cross, self.size[ia] + self.size[ib],
                              self.Hc[ia] + self.Hc[ib], self.bits[ia] | self.bits[ib], self.helpers)
        cost = self.cost() - self.cst[ia] - self.cst[ib] + self.o.group_cost
        gain = np.where(cost <= self.budget, gv - self.val[ia] - self.val[ib], -np.inf)
        return gain, ia, ib

    def swap_round(self) -> bool:
        """Exchange pairs of tasks between served sets (best disjoint swaps first); True if any."""
        Z = self.Z
        lab = self.labels()
        t, u = np.nonzero(lab[:, None] < lab[None, :])
        if t.size == 0:
            return False
        a, b = lab[t], lab[u]

        def side(blk, out_, in_):
            A = (self.A[blk] - self.Hd[blk, out_] - self.Hc[blk, out_] + self.Hd[blk, in_] + self.Hc[blk, in_]
                 - Z[out_, in_] - Z[in_, out_])
            Hc = self.Hc[blk] - Z.T[out_] + Z.T[in_]
            bits = self.bits[blk].copy()
            r = np.arange(len(blk))
            bits[r, out_] = False
            bits[r, in_] = True
            return _group_values(Z, A, self.size[blk], Hc, bits, self.helpers)[0]

        gain = side(a, t, u) + side(b, u, t) - self.val[a] - self.val[b]
        # lone networks keep their option only when the set stays a singleton: swaps keep sizes
        gain = np.where(self.alone[a] | self.alone[b], -np.inf, gain)
        tol = _EPS * (1 + abs(self.value()))
        order = np.argsort(-gain)
        touched: set[int] = set()
        applied = 0
        for i in order:
            if not gain[i] > tol:
                break
            if a[i] in touched or b[i] in touched:
                continue
            touched |= {int(a[i]), int(b[i])}
            self.bits[a[i], t[i]], self.bits[a[i], u[i]] = False, True
            self.bits[b[i], u[i]], self.bits[b[i], t[i]] = False, True
            applied += 1
        if applied:
            self._recompute_forced()
        return applied > 0

    def split_gains(self) -> list[tuple[float, int, np.ndarray]]:
        """For each served set, the gain of splitting it in two along its own average-linkage tree.

        Needed by the partition variant with forbidden singletons, where no single-task
        move can open a new set.
        """
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform

        if self.B >= self.p.k or self.cost() + self.o.group_cost > self.budget:
            return []
        out = []
        for a in range(self.B):
            idx = np.nonzero(self.bits[a])[0]
            if len(idx) < 4 or self.alone[a]:
                continue
            W = (self.Z[np.ix_(idx, idx)] + self.Z[np.ix_(idx, idx)].T) / 2
            D = W.max() - W
            np.fill_diagonal(D, 0.0)
            part = fcluster(linkage(squareform(D, checks=False), "average"), 2, criterion="maxclust") == 1
            bits = np.zeros((2, self.n), bool)
            bits[0, idx[part]] = True
            bits[1, idx[~part]] = True
            bf = bits.astype(float)
            Hd = bf @ self.Z
            gv, _ = _group_values(self.Z, (bf * Hd).sum(1), bits.sum(1), bf @ self.Z.T, bits, self.helpers)
            gain = float(gv.sum() - self.val[a])
            if np.isfinite(gain):
                out.append((gain, a, bits[1]))
        return out

    def improve_round(self) -> bool:
        """Apply the best improving moves that touch disjoint sets; True if any was applied."""
        tol = _EPS * (1 + abs(self.value()))
        gain, target, t_alone, s_alone = self.relocation_gains()
        mg, ia, ib = self.merge_gains()
        lab = self.labels()
        cands = [(float(gain[t]), "move", int(t)) for t in np.nonzero(gain > tol)[0]]
        cands += [(float(mg[i]), "merge", int(i)) for i in np.nonzero(mg > tol)[0]]
        tg = self.best_toggle()
        if tg is not None and tg[0] > tol:
            cands.append((tg[0], "toggle", tg[1]))
        split_list = [(g, a, part) for g, a, part in self.split_gains() if g > tol]
        splits = {a: part for _, a, part in split_list}
        cands += [(g, "split", a) for g, a, _ in split_list]
        if not cands:
            return False
        cands.sort(key=lambda c: -c[0])
        touched: set[int] = set()
        B0 = self.B
        count, cost = B0, self.cost()
        o = self.o
        alone = self.alone.copy()
        bits = self.bits.copy()
        new_rows: list[tuple[int, bool]] = []
        split_rest = np.zeros(0, int)
        merged: list[tuple[int, int]] = []
        applied = 0
        for _gain, kind, i in cands:
            if kind == "move":
                t, a, b = i, int(lab[i]), int(target[i])
                blocks = {a} if b == B0 else {a, b}
                if touched & blocks or (b == B0 and new_rows):
                    continue
                d_cost = (-self.cst[a] + (0.0 if self.size[a] == 1 else
                                          (o.singleton_cost if s_alone[t] else o.group_cost)))
                d_cost += (o.singleton_cost if t_alone[t] else o.group_cost) - (0.0 if b == B0 else self.cst[b])
                d_count = int(b == B0) - int(self.size[a] == 1)
                if cost + d_cost > self.budget or count + d_count > self.p.k:
                    continue
                bits[a, t] = False
                alone[a] = bool(s_alone[t])
                if b == B0:
                    new_rows.append((t, bool(t_alone[t])))
                else:
                    bits[b, t] = True
                    alone[b] = bool(t_alone[t])
            elif kind == "split":
                blocks = {i}
                if touched & blocks or new_rows or count + 1 > self.p.k or cost + o.group_cost > self.budget:
                    continue
                d_cost, d_count = o.group_cost, 1
                part = splits[i]
                bits[i] &= ~part
                moved = np.nonzero(part)[0]
                new_rows.append((int(moved[0]), False))
                split_rest = moved[1:]
            elif kind == "merge":
                a, b = int(ia[i]), int(ib[i])
                if touched & {a, b}:
                    continue
                d_cost = o.group_cost - self.cst[a] - self.cst[b]
                if cost + d_cost > self.budget:
                    continue
                d_count = -1
                merged.append((a, b))
                blocks = {a, b}
            else:
                blocks = {i}
                if touched & blocks:
                    continue
                d_cost = (o.group_cost if self.alone[i] else o.singleton_cost) - self.cst[i]
                if cost + d_cost > self.budget:
                    continue
                d_count = 0
                alone[i] = not self.alone[i]
            touched |= blocks
            cost += d_cost
            count += d_count
            applied += 1
        for a, b in merged:
            bits[a] |= bits[b]
            bits[b] = False
            alone[a] = False
        for t, t_al in new_rows:
            row = np.zeros((1, self.n), bool)
            row[0, t] = True
            row[0, split_rest] = True
            bits = np.vstack([bits, row])
            alone = np.append(alone, t_al)
        keep = bits.any(1)
        self.bits, self.alone = bits[keep], alone[keep]
        self._recompute_forced()
        return applied > 0

    def relocate(self, t: int, b: int, t_alone: bool, s_alone: bool) -> None:
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

    def _recompute_forced(self) -> None:
        """Recompute statistics, keeping the lone-network choices already made."""
        alone = self.alone.copy()
        self._recompute()
        self.alone = alone & (self.size == 1)
        if self.o.allow_singletons:
            self.alone |= (self.size == 1) & ~np.isfinite(self.gval)
        self.val = np.where(self.alone, self.o.singleton_value, self.gval)
        self.cst = np.where(self.alone, self.o.singleton_cost, self.o.group_cost)

    def best_merge(self):
        """Best (gain, a, b) over merging two sets (None with fewer than two)."""
        if self.B < 2:
            return None
        ia, ib = np.triu_indices(self.B, 1)
        bf = self.bits.astype(float)
        cross = (self.Hd[ia] * bf[ib]).sum(1) + (self.Hd[ib] * bf[ia]).sum(1)
        A = self.A[ia] + self.A[ib] + cross
        gv, _ = _group_values(self.Z, A, self.size[ia] + self.size[ib], self.Hc[ia] + self.Hc[ib],
                              self.bits[ia] | self.bits[ib], self.helpers)
        cost = self.cost() - self.cst[ia] - self.cst[ib] + self.o.group_cost
        gain = np.where(cost <= self.budget, gv - self.val[ia] - self.val[ib], -np.inf)
        i = int(gain.argmax())
        return float(gain[i]), int(ia[i]), int(ib[i])

    def merge(self, a: int, b: int) -> None:
        self.bits[a] |= self.bits[b]
        self.alone[a] = False
        self.bits = np.delete(self.bits, b, axis=0)
        self.alone = np.delete(self.alone, b)
        self._recompute_forced()

    def best_toggle(self):
        """Best (gain, set) for switching a lone task between its own network and a group with a helper."""
        best = None
        if not self.o.allow_singletons:
            return None
        for i in np.nonzero(self.size == 1)[0]:
            if self.alone[i] and np.isfinite(self.gval[i]):
                v, c = self.gval[i], self.o.group_cost
            elif not self.alone[i]:
                v, c = self.o.singleton_value, self.o.singleton_cost
            else:
                continue
            if self.cost() - self.cst[i] + c > self.budget:
                continue
            gain = v - self.val[i]
            if best is None or gain > best[0]:
                best = (float(gain), int(i))
        return best

    def toggle(self, i: int) -> None:
        self.alone[i] = not self.alone[i]
        self.val = np.where(self.alone, self.o.singleton_value, self.gval)
        self.cst = np.where(self.alone, self.o.singleton_cost, self.o.group_cost)

    # ---------------------------------------------------------------- repair
    def repair(self) -> None:
        """Merge sets (best merge first) until k, the budget and the singleton policy hold."""
        while True:
            bad_single = np.nonzero(~np.isfinite(self.val))[0]
            if self.B <= self.p.k and self.cost() <= self.budget and bad_single.size == 0:
                return
            if self.B == 1:
                return
            if bad_single.size and self.B <= self.p.k and self.cost() <= self.budget:
                # a forbidden singleton: join it to the set where the pair of sets scores best
                s = int(bad_single[0])
                best = None
                for b in range(self.B):
                    if b == s:
                        continue
                    trial_bits = self.bits[s] | self.bits[b]
                    sub = np.nonzero(trial_bits)[0]
                    A = self.Z[np.ix_(sub, sub)].sum()
                    gv, _ = _group_values(self.Z, [A], [len(sub)], (trial_bits.astype(float) @ self.Z.T)[None],
                                          trial_bits[None], self.helpers)
                    gain = gv[0] - self.val[b]
                    if best is None or gain > best[0]:
                        best = (gain, b)
                self.merge(min(s, best[1]), max(s, best[1]))
                continue
            if self.cost() > self.budget and self.o.allow_singletons:
                # cheaper option for lone tasks before merging, when it exists
                t = self.best_toggle()
                if t is not None and self.cst[t[1]] > (self.o.singleton_cost if not self.alone[t[1]]
                                                       else self.o.group_cost):
                    self.toggle(t[1])
                    continue
            m = self.best_merge()
            if m is None or not math.isfinite(m[0]):
                ia, ib = 0, 1
            else:
                _, ia, ib = m
            self.merge(ia, ib)

    # ----------------------------------------------------------- local search
    def local_search(self, rng: np.random.Generator, deadline: float, max_rounds: int = 10_000) -> None:
        """Improve until no move, merge or toggle gains (or the deadline passes)."""
        for _ in range(max_rounds):
            if time.perf_counter() > deadline:
                return
            before = self.value()
            if self.improve_round() and self.value() > before + _EPS * (1 + abs(before)):
                continue
            if not (self.swaps and self.swap_round()):
                return

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

    def solve(self, problem: GroupingProblem, *, top_m: int = 1, starts=()) -> list[Grouping]:
        """Rank groupings; ``starts``: extra served-set labelings (length-n integer arrays) tried
        before the clustering starts, e.g. a solution at a nearby k (repaired to this k by merges)."""
        check_top_m(top_m)
        starts = [np.asarray(s, int) for s in starts]
        if any(s.shape != (problem.n,) for s in starts):
            raise GroupingError(f"ScalableSolver.solve: every start must be {problem.n} labels, one per task, got "
                                f"shapes {[s.shape for s in starts]}")
        rng = np.random.default_rng(self.seed)
        deadline = time.perf_counter() + (self.time_limit if self.time_limit else math.inf)
        pool: dict[frozenset, tuple[float, list[tuple[int, ...]]]] = {}
        columns: dict[tuple[tuple[int, ...], bool], tuple[float, float]] = {}

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
            for lab in starts + initial_labelings(problem, rng, self.restarts)[: self.restarts]:
                if time.perf_counter() > deadline and pool:
                    break
                st = _State(problem, lab)
                st.repair()
                improve(st, self.kicks)
            # recombination: the best set partition of every served set seen so far (HiGHS MILP)
            for _ in range(self.recombine):
                if time.perf_counter() > deadline:
                    break
                st = _recombine(problem, columns, deadline)
                if st is None:
                    break
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


def _recombine(problem: GroupingProblem, columns, deadline: float) -> _State | None:
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
