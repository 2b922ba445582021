"""Exact free fermions (thermax.exact._fermions) against brute-force enumeration of every
N-subset, finite differences and the T -> 0 limit. Everything in float64 (conftest)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from thermax.exact import (
    QUANTUM_DOT_REFERENCE,
    all_sets,
    free_fermion_ground_state,
    free_fermion_log_z,
    free_fermion_thermodynamics,
    oscillator_levels_2d,
    oscillator_orbitals_2d,
)

#: One compiled function per particle number(s), shared by the tests.
log_z = jax.jit(free_fermion_log_z, static_argnums=1)
thermo = jax.jit(free_fermion_thermodynamics, static_argnums=1)

#: Random levels with a negative one and an exact tie (M = 7).
LEVELS = np.array([0.3, -0.4, 1.7, 0.3, 2.2, 0.9, 1.1])


def brute_log_z(levels, ns, beta):
    """ln Z summed over every tuple of sets, one set per species, by enumeration."""
    per_species = []
    for n in ns:
        energies = [sum(levels[list(c)]) for c in itertools.combinations(range(len(levels)), n)]
        per_species.append(logsumexp(-beta * np.array(energies)))
    return sum(per_species)


@pytest.mark.parametrize("m,n", [(5, 0), (5, 1), (6, 3), (7, 2), (7, 5), (7, 7)])
@pytest.mark.parametrize("beta", [0.0, 0.7, 5.0, 80.0])
def test_log_z_matches_enumeration(m, n, beta):
    levels = LEVELS[:m]
    got = float(log_z(jnp.asarray(levels), n, beta))
    want = brute_log_z(levels, (n,), beta)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    if beta == 0.0:
        assert got == pytest.approx(math.log(math.comb(m, n)), abs=1e-12)


def test_species_are_independent_ensembles():
    """Z(n_up, n_down) = Z_{n_up} Z_{n_down}, checked by enumerating pairs of sets."""
    levels = LEVELS[:5]
    energies = {n: [sum(levels[list(c)]) for c in itertools.combinations(range(5), n)]
                for n in (1, 2)}
    pairs = [a + b for a in energies[2] for b in energies[1]]
    want = logsumexp(-1.3 * np.array(pairs))
    assert float(log_z(jnp.asarray(levels), (2, 1), 1.3)) == pytest.approx(want, rel=1e-12)
    assert float(log_z(jnp.asarray(levels), (2, 2), 1.3)) == pytest.approx(
        2 * float(log_z(jnp.asarray(levels), 2, 1.3)), rel=1e-13)


def test_polarised_six_electron_dot_free_energy():
    """Acceptance value: F = 13.323898 for N = 6 polarised, omega = 1, beta = 2; 11 shells
    (66 orbitals) are converged to 1e-6, 10 are not."""
    f = {s: float(thermo(oscillator_levels_2d(1.0, s), 6, 2.0).free_energy)
         for s in (10, 11, 16)}
    assert f[11] == pytest.approx(13.323898, abs=1e-6)
    assert f[16] == pytest.approx(13.323898, abs=1e-6)
    assert abs(f[11] - f[16]) < 1e-6 < abs(f[10] - f[16])


def test_energy_is_minus_dlogz_dbeta_and_occupations():
    levels = jnp.asarray(LEVELS)
    for n, beta in [(3, 0.8), (5, 2.5)]:
        t = thermo(levels, n, beta)
        h = 1e-5
        fd = -(log_z(levels, n, beta + h) - log_z(levels, n, beta - h)) / (2 * h)
        assert float(t.energy) == pytest.approx(float(fd), rel=1e-8)
        # <n_j> = -(1/beta) d ln Z / d eps_j, against the enumerated Boltzmann average
        occ = -jax.grad(free_fermion_log_z)(levels, n, beta) / beta
        sets = all_sets(7, n)
        weights = np.exp(-beta * LEVELS[sets].sum(axis=1))
        weights /= weights.sum()
        want = np.array([weights[(sets == j).any(axis=1)].sum() for j in range(7)])
        np.testing.assert_allclose(occ, want, rtol=1e-10, atol=1e-14)
        assert float(jnp.sum(occ)) == pytest.approx(n, rel=1e-12)
        # the enumerated energy and entropy
        energies = LEVELS[sets].sum(axis=1)
        assert float(t.energy) == pytest.approx(float(weights @ energies), rel=1e-11)
        assert float(t.entropy) == pytest.approx(float(-weights @ np.log(weights)), rel=1e-10)


def test_entropy_nonnegative_and_bounded():
    levels = jnp.asarray(LEVELS)
    bound = math.log(math.comb(7, 3))
    for beta in np.geomspace(1e-3, 1e3, 13):
        s = float(thermo(levels, 3, beta).entropy)
        assert -1e-10 <= s <= bound + 1e-10


def test_zero_temperature_limit():
    """beta -> inf: F, E -> the sum of the lowest levels; S -> ln(degeneracy): 0 for the
    closed-shell N = 6 dot, ln 3 for N = 5 (two particles in the 3-fold third shell)."""
    levels = oscillator_levels_2d(1.0, 6)
    for n, e0, s0 in [(6, 14.0, 0.0), (5, 11.0, math.log(3.0)), ((3, 3), 10.0, 0.0)]:
        ground = free_fermion_ground_state(levels, n)
        assert float(ground.energy) == e0 and float(ground.free_energy) == e0
        assert float(ground.entropy) == pytest.approx(s0, abs=1e-14)
        # S = ln Z' + beta E' loses about beta * 1e-13 (roundoff of E' amplified by beta)
        for beta, s_tol in [(60.0, 1e-11), (1e4, 1e-7)]:
            t = thermo(levels, n, beta)
            assert float(t.energy) == pytest.approx(e0, abs=1e-10)
            assert float(t.free_energy) == pytest.approx(e0 - s0 / beta, abs=1e-10)
            assert float(t.entropy) == pytest.approx(s0, abs=s_tol)
        at_inf = thermo(levels, n, jnp.inf)  # traced beta = inf selects the ground state
        assert float(at_inf.free_energy) == e0 and float(at_inf.entropy) == pytest.approx(s0)
        assert float(at_inf.log_z) == -np.inf


def test_gradients_finite_at_large_beta():
    g = jax.grad(lambda b, lv: free_fermion_log_z(lv, 6, b), argnums=(0, 1))(
        500.0, oscillator_levels_2d(1.0, 6))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in g)


def test_oscillator_orbitals_and_levels():
    orbitals = oscillator_orbitals_2d(4)
    assert orbitals.shape == (10, 2)
    assert len({tuple(o) for o in orbitals.tolist()}) == 10
    assert orbitals[:6].tolist() == [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]]
    levels = np.asarray(oscillator_levels_2d(0.28, 4))
    np.testing.assert_allclose(levels, 0.28 * (orbitals.sum(axis=1) + 1), rtol=1e-15)
    assert np.all(np.diff(levels) >= 0)
    # d/d omega of the levels is (nx + ny + 1)
    np.testing.assert_allclose(
        jax.jacfwd(lambda w: oscillator_levels_2d(w, 4))(0.5), orbitals.sum(axis=1) + 1)


def test_all_sets():
    sets = all_sets(6, 3)
    assert sets.shape == (20, 3)
    assert np.all(np.diff(sets, axis=1) > 0)
    assert len({tuple(s) for s in sets.tolist()}) == 20
    assert all_sets(4, 0).shape == (1, 0)


def test_reference_table():
    assert QUANTUM_DOT_REFERENCE[(1, 1, 1.0)][0] == 3.0
    assert QUANTUM_DOT_REFERENCE[(3, 3, 1.0)][:2] == (20.15932, 8e-5)
    for (n_up, n_down, omega), (energy, error, source) in QUANTUM_DOT_REFERENCE.items():
        # Coulomb repulsion raises the energy above the non-interacting ground state
        e0 = float(free_fermion_ground_state(oscillator_levels_2d(omega, 6),
                                             (n_up, n_down)).energy)
        assert energy > e0 and error >= 0 and source


def test_bad_arguments(without_jaxtyping):
    with pytest.raises(ValueError, match="0 <= n <= M"):
        free_fermion_log_z(jnp.arange(3.0), 4, 1.0)
    with pytest.raises(ValueError, match="0 <= n <= M"):
        free_fermion_log_z(jnp.arange(3.0), (1, -1), 1.0)
    with pytest.raises(ValueError, match="1-D"):
        free_fermion_log_z(jnp.ones((2, 3)), 1, 1.0)
    with pytest.raises(ValueError, match="beta as a scalar"):
        free_fermion_thermodynamics(jnp.arange(3.0), 1, jnp.ones(2))
    with pytest.raises(ValueError, match="n_shells"):
        oscillator_orbitals_2d(0)
    with pytest.raises(ValueError, match="MAX_SETS"):
        all_sets(60, 30)
