"""Exact references: Kaufman vs enumeration, Onsager vs Kaufman, SK by brute force."""

import itertools
import math

import numpy as np
import pytest

from thermax.exact import (
    all_spin_configurations,
    enumerate_free_energy,
    enumerate_thermodynamics,
    kaufman_log_z,
    onsager_free_energy_per_site,
)
from thermax.systems import Ising2D, SherringtonKirkpatrick

BETA_C = math.log(1 + math.sqrt(2)) / 2  # 0.44069


@pytest.fixture(scope="module")
def enumerated():
    """Enumeration of the L = 2, 3, 4 ferromagnets at beta 0.3 and 0.6 (each compiled once)."""
    return {(size, beta): enumerate_thermodynamics(Ising2D(size), beta)
            for size in (2, 3, 4) for beta in (0.3, 0.6)}


@pytest.mark.parametrize("beta", [0.3, 0.6])
@pytest.mark.parametrize("size", [2, 3, 4])
def test_kaufman_matches_enumeration(enumerated, size, beta):
    assert (beta < BETA_C) == (beta == 0.3)  # either side of the transition
    np.testing.assert_allclose(kaufman_log_z(size, beta), enumerated[size, beta]["log_z"],
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("beta", [0.3, 0.6])
def test_enumeration_thermodynamic_identities(enumerated, beta):
    """S = beta (E - F), F = -ln Z / beta, and E, S, C against a numpy brute force (L = 3)."""
    th = enumerated[3, beta]
    np.testing.assert_allclose(th["free_energy"], -th["log_z"] / beta, rtol=1e-14)
    np.testing.assert_allclose(th["entropy"], beta * (th["energy"] - th["free_energy"]),
                               rtol=1e-12)
    spins = np.asarray(all_spin_configurations((3, 3)))
    energy = -(spins * (np.roll(spins, 1, 1) + np.roll(spins, 1, 2))).sum((1, 2))
    w = np.exp(-beta * energy)
    p = w / w.sum()
    np.testing.assert_allclose(th["log_z"], np.log(w.sum()), rtol=1e-13)
    np.testing.assert_allclose(th["energy"], (p * energy).sum(), rtol=1e-12)
    np.testing.assert_allclose(th["entropy"], -(p * np.log(p)).sum(), rtol=1e-12)
    np.testing.assert_allclose(th["heat_capacity"],
                               beta**2 * ((p * energy**2).sum() - (p * energy).sum() ** 2),
                               rtol=1e-10)


# The default quadrature_points=4000 spends ~25 s in numpy's leggauss(4000) (an eigenvalue
# problem) for no accuracy: 50 points already agree with it to 1e-13. Use 200 here.
QUADRATURE = 200


@pytest.mark.parametrize("beta", [0.3, 0.6])
def test_onsager_matches_kaufman_large_lattice(beta):
    size = 128
    f_kaufman = -kaufman_log_z(size, beta) / (beta * size * size)
    f_onsager = onsager_free_energy_per_site(beta, quadrature_points=QUADRATURE)
    assert abs(f_onsager - f_kaufman) < 1e-4
    # the quadrature has converged
    assert abs(onsager_free_energy_per_site(beta, quadrature_points=100) - f_onsager) < 1e-12


def test_onsager_antiferromagnet_and_critical_point():
    # h = 0 on the infinite square lattice: f(J) = f(-J)
    assert (onsager_free_energy_per_site(0.5, -1.0, quadrature_points=QUADRATURE)
            == onsager_free_energy_per_site(0.5, 1.0, quadrature_points=QUADRATURE))
    # at beta_c finite-size corrections are power laws; L = 64 is still within 1e-3
    size = 64
    f_kaufman = -kaufman_log_z(size, BETA_C) / (BETA_C * size * size)
    assert abs(onsager_free_energy_per_site(BETA_C, quadrature_points=QUADRATURE)
               - f_kaufman) < 1e-3


@pytest.mark.slow
def test_onsager_default_quadrature():
    """The default quadrature (4000 points) agrees with 200 points; ~25 s per call."""
    assert abs(onsager_free_energy_per_site(0.6)
               - onsager_free_energy_per_site(0.6, quadrature_points=QUADRATURE)) < 1e-12


def test_kaufman_high_temperature_limit():
    # K -> 0: ln Z -> N ln 2 (+ N K^2 from the bonds, to leading order)
    k, size = 1e-3, 4
    np.testing.assert_allclose(kaufman_log_z(size, k), 16 * math.log(2) + 16 * k**2, rtol=1e-8)


@pytest.mark.parametrize("size", [2, 4])
def test_antiferromagnet_even_size_equals_ferromagnet(size):
    beta = 0.5
    ferro = Ising2D(size, coupling=1.0).exact_free_energy(beta)
    anti = Ising2D(size, coupling=-1.0).exact_free_energy(beta)
    assert anti == ferro
    # and both are right: the antiferromagnet by enumeration
    np.testing.assert_allclose(enumerate_free_energy(Ising2D(size, coupling=-1.0), beta), anti,
                               rtol=1e-12)


def test_antiferromagnet_odd_size_is_frustrated():
    beta = 0.5
    anti = Ising2D(3, coupling=-1.0).exact_free_energy(beta)
    np.testing.assert_allclose(anti, enumerate_free_energy(Ising2D(3, coupling=-1.0), beta),
                               rtol=1e-12)
    assert anti > Ising2D(3, coupling=1.0).exact_free_energy(beta) + 0.1


def test_ising_with_field_uses_enumeration():
    system = Ising2D(3, coupling=1.0, field=0.3)
    beta = 0.4
    spins = np.asarray(all_spin_configurations((3, 3)))
    energy = (-(spins * (np.roll(spins, 1, 1) + np.roll(spins, 1, 2))).sum((1, 2))
              - 0.3 * spins.sum((1, 2)))
    np.testing.assert_allclose(system.exact_free_energy(beta),
                               -np.log(np.exp(-beta * energy).sum()) / beta, rtol=1e-12)
    assert Ising2D(5, field=0.3).exact_free_energy(beta) is None  # 25 sites: unknown


@pytest.mark.parametrize("field", [0.0, 0.3])
def test_free_spins_exact_free_energy(field):
    """J = 0: independent spins, ln Z = N ln(2 cosh(beta h)); Kaufman's K > 0 precondition
    must not leak out (J = 0 is a valid --J)."""
    beta = 0.4
    system = Ising2D(3, coupling=0.0, field=field)
    expected = -9 * math.log(2 * math.cosh(beta * field)) / beta
    np.testing.assert_allclose(system.exact_free_energy(beta), expected, rtol=1e-12)
    np.testing.assert_allclose(enumerate_free_energy(system, beta), expected, rtol=1e-12)


def _sk_brute_force(j: np.ndarray, beta: float) -> dict:
    n = j.shape[0]
    energies = []
    for s in itertools.product([-1.0, 1.0], repeat=n):
        s = np.array(s)
        energies.append(-sum(j[a, b] * s[a] * s[b] for a in range(n) for b in range(a + 1, n)))
    energies = np.array(energies)
    w = np.exp(-beta * energies)
    p = w / w.sum()
    return {"log_z": np.log(w.sum()), "energy": (p * energies).sum(),
            "entropy": -(p * np.log(p)).sum()}


@pytest.mark.parametrize("n", [5, 8])
def test_sk_enumeration_matches_brute_force(n):
    system = SherringtonKirkpatrick.from_seed(n, seed=3)
    beta = 1.5
    th = enumerate_thermodynamics(system, beta)
    ref = _sk_brute_force(np.asarray(system.couplings), beta)
    for key in ("log_z", "energy", "entropy"):
        np.testing.assert_allclose(th[key], ref[key], rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(system.exact_free_energy(beta), -ref["log_z"] / beta, rtol=1e-12)


def test_sk_enumeration_in_chunks():
    system = SherringtonKirkpatrick.from_seed(8, seed=4)
    whole = enumerate_thermodynamics(system, 2.0)
    chunked = enumerate_thermodynamics(system, 2.0, chunk_bits=3)
    for key in whole:
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-12, err_msg=key)


def test_enumeration_bad_input():
    with pytest.raises(ValueError, match="beta must be > 0"):
        enumerate_thermodynamics(Ising2D(2), 0.0)
    with pytest.raises(ValueError, match="n <= 26"):
        enumerate_thermodynamics(SherringtonKirkpatrick.from_seed(27, seed=0), 1.0)
    with pytest.raises(ValueError, match="n=25 > 20"):
        all_spin_configurations((5, 5))


def test_kaufman_bad_input():
    with pytest.raises(ValueError, match="L >= 2"):
        kaufman_log_z(1, 0.3)
    with pytest.raises(ValueError, match="K = beta J > 0"):
        kaufman_log_z(4, -0.3)
    with pytest.raises(ValueError, match="beta must be > 0"):
        onsager_free_energy_per_site(0.0)
