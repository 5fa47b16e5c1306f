"""Served sets and their best groups: the columns the exact and scalable solvers share.

A solution of the serving objective can be read as a partition of the tasks
into *served sets* S_1..S_m (the tasks each chosen group serves), each served
by a group G_i ⊇ S_i. For a fixed S the best group is S plus the h tasks
outside S whose total help onto S, c_j(S) = Σ_{t∈S} Z[j, t], is largest, with
h chosen to maximise the mean::

    v(S) = max_h (A(S) + Σ_{top h} c_j(S)) / (|S| + h - 1),   A(S) = Σ_{t∈S} Σ_{j∈S, j≠t} Z[j, t].

So the overlap variant is a set-partitioning problem over served sets with
values v(S) (the partition variant is the same with h = 0), which is what
lets an exact solver price 2^n columns in a vectorised pass.

Example:
    >>> import numpy as np
    >>> Z = np.array([[0, .5, .4], [.2, 0, -.3], [.6, -.1, 0]])
    >>> v, g = best_groups(Z, [0b011], helpers=True)   # S = {t0, t1}: v = .2 + .5
    >>> round(float(v[0]), 6), bin(int(g[0]))           # adding t2 would lower the mean
    (0.7, '0b11')
    >>> v, g = best_groups(Z, [0b010], helpers=True)   # S = {t1}: best helper is t0
    >>> round(float(v[0]), 6), bin(int(g[0]))
    (0.5, '0b11')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["all_values", "bits_of", "best_groups", "mask_of", "members", "popcount"]


def bits_of(masks: np.ndarray, n: int) -> np.ndarray:
    """(len(masks), n) 0/1 membership of each bitmask."""
    masks = np.asarray(masks, dtype=np.int64)
    return ((masks[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(float)


def popcount(masks: npt.ArrayLike) -> np.ndarray:
    """Number of set bits of each int64 mask."""
    masks = np.asarray(masks, dtype=np.int64)
    if hasattr(np, "bitwise_count"):
        counts: np.ndarray = np.bitwise_count(masks).astype(np.int64)
        return counts
    out = np.zeros(masks.shape, dtype=np.int64)
    m = masks.copy()
    while m.any():
        out += m & 1
        m >>= 1
    return out


def mask_of(group: Sequence[int]) -> int:
    m = 0
    for i in group:
        m |= 1 << int(i)
    return m


def members(mask: int) -> tuple[int, ...]:
    out = []
    i = 0
    mask = int(mask)
    while mask:
        if mask & 1:
            out.append(i)
        mask >>= 1
        i += 1
    return tuple(out)


def best_groups(Z: np.ndarray, masks: npt.ArrayLike, *, helpers: bool,
                chunk: int = 1 << 15) -> tuple[np.ndarray, np.ndarray]:
    """Value v(S) and best group mask of each served set ``S`` (bitmasks over ``Z``'s tasks).

    Args:
        Z: (n, n) affinity, ``Z[j, t]`` = Ẑ_{j→t}, diagonal 0.
        masks: served sets as int bitmasks (non-empty).
        helpers: overlap variant (groups may add helpers outside S); False: G = S.
        chunk: rows per vectorised block (memory is about ``chunk · n · 40`` bytes).

    Returns:
        ``(values, group_masks)``. A singleton S has value -inf when ``helpers`` is
        False (its lone-task value is the objective's business, not this table's).
    """
    Z = np.asarray(Z, dtype=float)
    n = Z.shape[0]
    masks = np.asarray(masks, dtype=np.int64)
    values = np.empty(len(masks))
    groups = masks.copy()
    ZT = Z.T.copy()
    ar = np.arange(n)
    for lo in range(0, len(masks), chunk):
        m = masks[lo:lo + chunk]
        b = bits_of(m, n)
        size = b.sum(1)
        help_onto = b @ ZT  # c_j(S) = Σ_{t∈S} Z[j, t], indexed by j
        a = (b * help_onto).sum(1)
        if not helpers:
            with np.errstate(divide="ignore", invalid="ignore"):
                values[lo:lo + chunk] = np.where(size >= 2, a / np.maximum(size - 1, 1), -np.inf)
            continue
        c = np.where(b > 0, -np.inf, help_onto)
        order = np.argsort(-c, axis=1, kind="stable")
        top = np.take_along_axis(c, order, axis=1)
        cum = np.concatenate([np.zeros((len(m), 1)), np.cumsum(top, axis=1)], axis=1)[:, :n]
        h = ar[None, :]
        denom = size[:, None] + h - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            cand = (a[:, None] + cum) / np.where(denom > 0, denom, 1)
        cand = np.where((denom > 0) & np.isfinite(cum), cand, -np.inf)
        best_h = cand.argmax(1)
        values[lo:lo + chunk] = cand[np.arange(len(m)), best_h]
        sel = ar[None, :] < best_h[:, None]
        add = np.where(sel, np.left_shift(np.int64(1), order.astype(np.int64)), 0)
        groups[lo:lo + chunk] = m | np.bitwise_or.reduce(add, axis=1)
    return values, groups


def _values_from(A: np.ndarray, size: np.ndarray, negc: np.ndarray, n: int) -> np.ndarray:
    """max_h (A + Σ top-h of c) / (size + h - 1) per row, given ``negc`` = -c (+inf on members).

    ``negc`` is sorted in place.
    """
    negc.sort(axis=1)
    cum = np.cumsum(negc[:, : n - 1], axis=1)  # -(Σ of the top h), h = 1 .. n-1
    denom = size[:, None] + np.arange(n - 1)[None, :]
    best = ((A[:, None] - cum) / denom).max(1) if n > 1 else np.full(len(A), -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        alone = np.where(size >= 2, A / np.maximum(size - 1, 1), -np.inf)
    values: np.ndarray = np.maximum(best, alone)
    return values


def all_values(Z: np.ndarray, *, helpers: bool, low_bits: int = 15) -> np.ndarray:
    """v(S) for every served set S = 1 .. 2^n - 1 (entry ``S - 1``), as :func:`best_groups` computes it.

    Splits each mask into low and high bits: the low-bit statistics (help onto the
    set, within-set sum, membership) are tabulated once by doubling and shifted by
    the high bits' contribution per block, so a block costs a few adds and one sort
    of (2^low_bits, n) instead of a matrix product.
    """
    Z = np.asarray(Z, dtype=float)
    n = Z.shape[0]
    L = min(n, low_bits)
    # tables over low masks 0 .. 2^L - 1 by doubling: H[m, j] = Σ_{t∈m} Z[j, t], D[m, t] = Σ_{j∈m} Z[j, t]
    H = np.zeros((1, n))
    D = np.zeros((1, n))
    A = np.zeros(1)
    size = np.zeros(1)
    for i in range(L):
        # adding task i to every mask m: A gains help onto i from m plus help from i onto m
        A = np.concatenate([A, A + D[:, i] + H[:, i]])
        H = np.concatenate([H, H + Z[:, i][None, :]])
        D = np.concatenate([D, D + Z[i, :][None, :]])
        size = np.concatenate([size, size + 1])
    b_low = bits_of(np.arange(1 << L), L)
    negH = np.where(bits_of(np.arange(1 << L), n) > 0, np.inf, -H)
    out = np.empty((1 << n) - 1)
    for hi in range(1 << (n - L)):
        hi_idx = [L + i for i in range(n - L) if hi >> i & 1]
        hvec = Z[:, hi_idx].sum(1)  # help from j onto the high members
        dvec = Z[hi_idx, :].sum(0)  # help onto t from the high members
        a_hi = Z[np.ix_(hi_idx, hi_idx)].sum()
        A_blk = A + a_hi + b_low @ (hvec[:L] + dvec[:L])
        size_blk = size + len(hi_idx)
        if helpers:
            negc = negH - hvec[None, :]
            negc[:, hi_idx] = np.inf
            with np.errstate(invalid="ignore"):
                vals = _values_from(A_blk, size_blk, negc, n)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                vals = np.where(size_blk >= 2, A_blk / np.maximum(size_blk - 1, 1), -np.inf)
        lo = hi << L
        if hi == 0:
            out[: (1 << L) - 1] = vals[1:]
        else:
            out[lo - 1: lo - 1 + (1 << L)] = vals
    return out
