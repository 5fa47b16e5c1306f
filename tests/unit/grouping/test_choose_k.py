"""choose_k: the number of groups it picks on matrices whose structure is known."""

from __future__ import annotations

import numpy as np
import pytest

from taskgraph.affinity import AffinityMatrix
from taskgraph.exceptions import GroupingError
from taskgraph.grouping import GroupingProblem, Objective, ScalableSolver, choose_k
from taskgraph.grouping.api import default_k_max


def measured_blocks(n: int, c: int, seed: int, *, steps: int = 20, sd: float = 0.05) -> AffinityMatrix:
    """Per-step samples of a planted block matrix, as the tracker would record them.

    Cluster strengths differ (0.03 to 0.07 within a cluster), pairs of clusters are
    opposed (-0.01), the rest unrelated (0); each step adds noise of SD ``sd``.
    """
    rng = np.random.default_rng(seed)
    lab = np.arange(n) * c // n
    strength = rng.uniform(0.03, 0.07, size=c)
    same = lab[:, None] == lab[None, :]
    opposed = (lab[:, None] // 2 == lab[None, :] // 2) & ~same
    mu = np.where(same, strength[lab][:, None], 0.0) - 0.01 * opposed
    names = tuple(f"t{i}" for i in range(n))
    return AffinityMatrix.from_samples(names, mu + rng.normal(0, sd, (steps, n, n)))


def noise_only(n: int, seed: int, mean: float = 0.0) -> AffinityMatrix:
    rng = np.random.default_rng(seed)
    return AffinityMatrix.from_samples(tuple(f"t{i}" for i in range(n)), mean + rng.normal(0, 0.05, (30, n, n)))


@pytest.mark.parametrize(("n", "c"), [(9, 3), (30, 5), (60, 6), (100, 10),
                                      pytest.param(200, 20, marks=pytest.mark.slow)])
def test_the_planted_number_of_blocks_is_found_at_every_size(n, c):
    choice = choose_k(measured_blocks(n, c, seed=n), variant="partition")
    assert choice.k == c
    assert choice.ks[-1] == default_k_max(n) >= c


def test_the_overlap_variant_finds_the_blocks_too():
    assert choose_k(measured_blocks(30, 5, seed=1), variant="overlap").k == 5


@pytest.mark.parametrize("n", [9, 30, 60])
@pytest.mark.parametrize("mean", [0.0, 0.02], ids=["noise", "flat-positive"])
def test_a_matrix_without_clusters_is_not_split(n, mean):
    assert choose_k(noise_only(n, seed=n, mean=mean), variant="partition").k <= 2


def test_the_choice_does_not_depend_on_the_scale_of_the_affinities():
    m = measured_blocks(30, 5, seed=3)
    scaled = AffinityMatrix(m.names, 1e-3 * m.mean, 1e-3 * m.stderr, m.n_samples)
    a, b = choose_k(m, variant="partition"), choose_k(scaled, variant="partition")
    assert a.k == b.k == 5
    np.testing.assert_allclose(np.array(b.scores), 1e-3 * np.array(a.scores), rtol=1e-6, atol=1e-12)


def test_the_curve_is_monotone_and_noise_gains_less_than_structure():
    choice = choose_k(measured_blocks(30, 5, seed=4), variant="partition")
    assert len(choice.ks) == len(choice.scores) == len(choice.stderrs) == len(choice.noise)
    assert np.all(np.diff(choice.scores) >= 0)
    # up to the planted k each group gains several times what fitting noise gains
    gain = np.diff(choice.scores)[: choice.k - 1]
    noise_gain = np.diff(choice.noise)[: choice.k - 1]
    assert np.all(gain > 3 * noise_gain)


def test_a_plain_array_uses_the_elbow_alone():
    m = measured_blocks(30, 5, seed=5)
    choice = choose_k(m.mean, names=m.names, variant="partition")
    assert choice.k == 5
    assert set(choice.noise) == {0.0} and set(choice.stderrs) == {0.0}


def test_default_k_max_grows_with_the_number_of_tasks():
    assert [default_k_max(n) for n in (1, 2, 8, 9, 16, 20, 100, 200)] == [1, 2, 8, 8, 8, 9, 20, 29]


@pytest.mark.parametrize("kw", [{"gain_tolerance": -0.1}, {"z": -1.0}, {"gain_tolerance": float("nan")}])
def test_negative_tolerances_are_refused(kw):
    with pytest.raises(GroupingError, match="gain_tolerance >= 0 and z >= 0 must hold"):
        choose_k(np.zeros((3, 3)), names=("a", "b", "c"), **kw)


def test_k_max_outside_one_to_n_is_refused():
    with pytest.raises(GroupingError, match=r"1 <= k_max <= n must hold, got k_max=4 with n=3"):
        choose_k(np.zeros((3, 3)), names=("a", "b", "c"), k_max=4)


def test_a_warm_start_is_never_lost_by_the_scalable_solver():
    m = measured_blocks(40, 5, seed=6)
    p = GroupingProblem.from_array(m.mean, m.names, k=5, objective=Objective(variant="partition"))
    planted = np.arange(40) * 5 // 40
    cold = ScalableSolver(restarts=1, kicks=0, recombine=0).solve(p)[0]
    warm = ScalableSolver(restarts=1, kicks=0, recombine=0).solve(p, starts=[planted])[0]
    assert warm.score >= max(cold.score, p.value([tuple(np.nonzero(planted == c)[0]) for c in range(5)])) - 1e-12


def test_a_warm_start_of_the_wrong_length_is_refused():
    p = GroupingProblem.from_array(np.zeros((4, 4)), k=2)
    with pytest.raises(GroupingError, match=r"every start must be 4 labels, one per task, got shapes \[\(3,\)\]"):
        ScalableSolver().solve(p, starts=[np.zeros(3, int)])


def _kinked_curve(k0: int, k_max: int, *, before: float, after: float, rng) -> np.ndarray:
    """S(1..k_max): gains of about ``before`` per group up to k0, then about ``after`` (10% jitter)."""
    gains = np.where(np.arange(1, k_max) < k0, before, after) * rng.uniform(0.9, 1.1, k_max - 1)
    return np.concatenate([[0.0], np.cumsum(gains)])


@pytest.mark.parametrize("k0", [2, 3, 5, 10, 20])
@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e3])
def test_the_elbow_is_the_kink_of_the_curve_at_any_scale(k0, scale):
    from taskgraph.grouping.api import _elbow

    rng = np.random.default_rng(k0)
    k_max = max(8, 2 * k0)
    ks = list(range(1, k_max + 1))
    scores = scale * _kinked_curve(k0, k_max, before=1.0, after=0.25, rng=rng)
    zeros = [0.0] * k_max
    assert _elbow(ks, scores, zeros, zeros, 0.1, 1.0) == k0
    # the same with a noise curve and standard errors below the gains after the kink
    noise = scale * np.cumsum(np.full(k_max, 0.05))
    ses = scale * np.full(k_max, 0.05)
    assert _elbow(ks, scores, ses, noise, 0.1, 1.0) == k0


def test_gains_within_noise_give_one_group():
    from taskgraph.grouping.api import _elbow

    ks = list(range(1, 9))
    scores = np.cumsum([0.0] + [0.01] * 7)
    assert _elbow(ks, scores, [0.02] * 8, np.cumsum([0.0] + [0.005] * 7), 0.1, 1.0) == 1
    assert _elbow(ks, scores, [0.02] * 8, np.cumsum([0.0] + [0.005] * 7), 0.1, 0.0) > 1  # z = 0: noise gain only


def test_tiny_gains_at_the_tail_are_no_elbow():
    from taskgraph.grouping.api import _elbow

    ks = list(range(1, 9))
    scores = np.cumsum([0.0, 1.0, 1.0, 0.3, 0.3, 0.3, 1e-6, 1e-9])  # the kink is at 3, not at the tail
    assert _elbow(ks, scores, [0.0] * 8, [0.0] * 8, 0.1, 1.0) == 3
