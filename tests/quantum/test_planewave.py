"""The plane-wave basis of the uniform electron gas.

Orbitals orthonormal by quadrature on a uniform grid over the box (exact for plane waves:
the discrete sums of exp(2 pi i m j / G) vanish for 0 < |m| < G); energies prefactor |k|^2,
sorted, in a deterministic order; closed-shell numbers at zero twist in 2D and 3D (checked
against the counts of integer points in a disc / ball, independently enumerated here);
twisted momenta and Bloch periodicity; the box from the density; the Fermi wavevector;
a Slater determinant that is translation-invariant up to a phase; canonical free-fermion
thermodynamics with these levels against brute-force enumeration; construction errors.
float64 throughout (tests/conftest.py).
"""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.exact import all_sets, free_fermion_thermodynamics
from thermax.quantum._basis import AbstractBasis
from thermax.quantum._planewave import (
    PlaneWaveBasis,
    box_length_for_density,
    closed_shell_counts,
    fermi_temperature,
    fermi_wavevector,
    require_closed_shell,
)

BASES = {
    "2d": lambda: PlaneWaveBasis(2.5, 2, emax=30.0),
    "2d-twist": lambda: PlaneWaveBasis(2.5, 2, twist=(0.25, -0.4), n_orbitals=17),
    "2d-hartree": lambda: PlaneWaveBasis(1.5, 2, n_orbitals=9, prefactor=0.5),
    "3d": lambda: PlaneWaveBasis(3.0, 3, n_orbitals=19),
    "3d-twist": lambda: PlaneWaveBasis(3.0, 3, twist=(0.5, 0.5, 0.5), emax=12.0),
}


@pytest.fixture(params=list(BASES))
def basis(request):
    return BASES[request.param]()


def _grid(length: float, dim: int, points: int) -> np.ndarray:
    axis = (np.arange(points) + 0.3) * length / points  # any offset: the sums are exact
    return np.stack(np.meshgrid(*([axis] * dim), indexing="ij"), -1).reshape(-1, dim)


def test_orthonormal_on_grid(basis):
    length = float(basis.box_length)
    span = np.ptp(np.asarray(basis.quanta), axis=0).max()
    points = int(span) + 2  # more grid points per side than the spread of n
    z = jnp.asarray(_grid(length, basis.dim, points))
    phi = basis.orbitals(z)
    assert isinstance(basis, AbstractBasis) and basis.is_complex
    assert phi.shape == (points**basis.dim, basis.n_orbitals) and phi.dtype == jnp.complex128
    overlap = (length / points) ** basis.dim * (phi.conj().T @ phi)
    np.testing.assert_allclose(overlap, np.eye(basis.n_orbitals), atol=1e-12)


def test_energies_and_order(basis):
    k = np.asarray(basis.momenta)
    theta = np.asarray(basis.twist)
    n = np.asarray(basis.quanta)
    np.testing.assert_allclose(k, 2 * np.pi * (n + theta) / float(basis.box_length),
                               rtol=1e-14)
    e = np.asarray(basis.energies)
    np.testing.assert_allclose(e, basis.prefactor * np.sum(k**2, axis=1), rtol=1e-12,
                               atol=1e-12)
    assert np.all(np.diff(e) >= 0)
    assert len(set(basis.quanta)) == basis.n_orbitals
    # ties broken lexicographically by n, and a fresh construction gives the same order
    for a, b, ea, eb in zip(basis.quanta, basis.quanta[1:], e, e[1:], strict=False):
        assert ea < eb or a < b
    again = PlaneWaveBasis(basis.box_length, basis.dim, twist=basis.twist,
                           n_orbitals=basis.n_orbitals, prefactor=basis.prefactor)
    assert again.quanta == basis.quanta
    energies, degeneracies = basis.shells
    assert sum(degeneracies) == basis.n_orbitals
    np.testing.assert_allclose(np.repeat(np.asarray(energies), degeneracies), e)
    assert np.all(np.diff(np.asarray(energies)) > 0)


def test_emax_keeps_every_level_below():
    # all k with |k|^2 <= emax, with emax exactly on a shell (rounding slack) and between
    length, emax = 2 * math.pi, 5.0  # k = n; |n|^2 <= 5 in 2D: 21 points
    assert PlaneWaveBasis(length, 2, emax=emax).n_orbitals == 21
    assert PlaneWaveBasis(length, 2, emax=5.9).n_orbitals == 21
    assert PlaneWaveBasis(length, 3, emax=3.0).n_orbitals == 27
    basis = PlaneWaveBasis(length, 2, n_orbitals=7)  # stops inside the shell |n|^2 = 2
    assert basis.quanta == ((0, 0), (-1, 0), (0, -1), (0, 1), (1, 0), (-1, -1), (-1, 1))
    assert basis.shells[1] == (1, 4, 2)


def _disc_counts(dim: int, q_max: int) -> list[int]:
    """Cumulative numbers of integer vectors with |n|^2 <= q, for the q that occur."""
    r = math.isqrt(q_max) + 1
    norms = [sum(a * a for a in n) for n in itertools.product(range(-r, r + 1), repeat=dim)]
    return [sum(v <= q for v in norms) for q in sorted(set(norms)) if q <= q_max]


def test_closed_shells_zero_twist():
    two = closed_shell_counts(2, max_count=100)
    assert two[:10] == (1, 5, 9, 13, 21, 25, 29, 37, 45, 49)
    assert list(two) == [c for c in _disc_counts(2, 40) if c <= 100]
    three = closed_shell_counts(3, (0.0, 0.0, 0.0), max_count=200)
    assert three[:9] == (1, 7, 19, 27, 33, 57, 81, 93, 123)
    assert list(three) == [c for c in _disc_counts(3, 12) if c <= 200]
    # a basis of whole shells holds a closed-shell number of orbitals
    assert PlaneWaveBasis(1.0, 3, emax=5 * (2 * math.pi) ** 2).n_orbitals == 57


def test_closed_shells_twisted():
    # theta = 1/2 on every axis: |n + 1/2| is 1/2 for n = 0, -1, so shells come in 2^dim
    assert closed_shell_counts(2, (0.5, 0.5), max_count=30)[:4] == (4, 12, 16, 24)
    assert closed_shell_counts(3, np.full(3, 0.5), max_count=60) == (8, 32, 56)
    require_closed_shell(12, 2, (0.5, 0.5))
    with pytest.raises(ValueError, match="nearest closed shells are N = 4, 12"):
        require_closed_shell(9, 2, (0.5, 0.5))


def test_require_closed_shell():
    for n in (1, 5, 13, 49):
        require_closed_shell(n, 2)
    require_closed_shell(33, 3)
    with pytest.raises(ValueError, match=r"N = 14 .* nearest closed shells are N = 13, 21"):
        require_closed_shell(14, 2)
    with pytest.raises(ValueError, match="N = 27, 33"):
        require_closed_shell(30, 3)
    with pytest.raises(ValueError, match="n_particles must be an int >= 1"):
        require_closed_shell(0, 2)


def test_twist_shifts_momenta_and_bloch_phase():
    length, theta = 2.0, (0.2, -0.35, 0.45)
    plain = PlaneWaveBasis(length, 3, n_orbitals=27)
    twisted = PlaneWaveBasis(length, 3, twist=theta, n_orbitals=27)
    # the lowest momentum is 2 pi theta / L
    np.testing.assert_allclose(twisted.momenta[0], 2 * np.pi * np.asarray(theta) / length)
    assert twisted.quanta[0] == (0, 0, 0)
    shift = np.asarray(twisted.momenta) - 2 * np.pi * np.asarray(twisted.quanta) / length
    np.testing.assert_allclose(shift, np.broadcast_to(2 * np.pi * np.asarray(theta) / length,
                                                      shift.shape), atol=1e-14)
    assert plain.quanta != twisted.quanta
    z = jax.random.uniform(jax.random.key(0), (5, 3), minval=-3.0, maxval=3.0)
    for basis in (plain, twisted, BASES["3d-twist"]()):
        phi = basis.orbitals(z)
        for a in range(3):
            step = jnp.zeros((1, 3)).at[0, a].set(basis.box_length)
            bloch = np.exp(2j * np.pi * basis.twist[a])
            np.testing.assert_allclose(basis.orbitals(z + step), bloch * phi, atol=1e-12)


def test_dtypes_and_jit():
    basis = PlaneWaveBasis(2.0, 2, n_orbitals=5)
    assert basis.orbitals(jnp.ones((2, 2), jnp.float32)).dtype == jnp.complex64
    z = jnp.asarray([[0.3, -0.1], [1.2, 0.7]])
    phi = basis.orbitals(z)
    expected = np.exp(1j * np.asarray(z) @ np.asarray(basis.momenta).T) / 2.0
    np.testing.assert_allclose(phi, expected, rtol=1e-13)
    # box_length is a leaf: a new L does not retrace (and changes the orbitals consistently)
    traces = []

    @eqx.filter_jit
    def f(b, x):
        traces.append(None)
        return b.orbitals(x)

    bigger = eqx.tree_at(lambda b: b.box_length, basis, jnp.asarray(4.0, jnp.float64))
    np.testing.assert_allclose(f(bigger, 2 * z), phi / 2, rtol=1e-13)
    np.testing.assert_allclose(f(basis, z), phi, rtol=1e-13)
    assert len(traces) == 1
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        basis.orbitals(jnp.zeros((3, 3)))


def test_slater_translation_invariant_up_to_phase():
    # a closed shell has total momentum 0 (at zero twist): det is translation invariant
    basis = PlaneWaveBasis(3.0, 2, n_orbitals=9)
    z = jax.random.uniform(jax.random.key(1), (9, 2), maxval=3.0)
    phase, log_abs = jnp.linalg.slogdet(basis.orbitals(z))
    phase2, log_abs2 = jnp.linalg.slogdet(basis.orbitals(z + jnp.asarray([[0.37, -1.1]])))
    assert phase.dtype == jnp.complex128 and log_abs.dtype == jnp.float64
    np.testing.assert_allclose(log_abs2, log_abs, rtol=1e-10)
    np.testing.assert_allclose(phase2, phase, atol=1e-10)
    grad = jax.grad(lambda x: jnp.linalg.slogdet(basis.orbitals(x))[1])(z)
    assert grad.shape == z.shape and np.all(np.isfinite(grad))


def test_density_and_fermi_wavevector():
    np.testing.assert_allclose(box_length_for_density(13, 1.5, 2), math.sqrt(13 * math.pi) * 1.5)
    np.testing.assert_allclose(box_length_for_density(27, 2.0, 3),
                               (4 * math.pi * 27 / 3) ** (1 / 3) * 2.0)
    basis = PlaneWaveBasis.for_density(33, 2.0, 3, n_orbitals=40)
    np.testing.assert_allclose(basis.box_length ** 3 / 33, 4 * math.pi * 2.0**3 / 3)
    unpolarised = PlaneWaveBasis.for_density((5, 5), 1.0, 2, n_orbitals=5)
    np.testing.assert_allclose(unpolarised.box_length, math.sqrt(10 * math.pi))
    # k_F from the density of the polarised gas: (4 pi n)^(1/2), (6 pi^2 n)^(1/3)
    rs = 1.7
    np.testing.assert_allclose(fermi_wavevector(rs, 2), math.sqrt(4 / rs**2))
    n3 = 3 / (4 * math.pi * rs**3)
    np.testing.assert_allclose(fermi_wavevector(rs, 3), (6 * math.pi**2 * n3) ** (1 / 3))
    np.testing.assert_allclose(fermi_temperature(rs, 3), fermi_wavevector(rs, 3) ** 2)
    np.testing.assert_allclose(fermi_temperature(rs, 2, prefactor=0.5), 2 / rs**2)
    # a large closed shell's Fermi level approaches prefactor k_F^2
    big = PlaneWaveBasis.for_density(1961, 1.0, 2, n_orbitals=1961)
    np.testing.assert_allclose(big.energies[-1], fermi_temperature(1.0, 2), rtol=0.01)
    assert jax.grad(lambda r: fermi_wavevector(r, 2))(2.0) == -0.5


def _brute_force(levels: np.ndarray, n: int, beta: float) -> tuple[float, float]:
    energies = levels[all_sets(len(levels), n)].sum(axis=1)
    weights = np.exp(-beta * (energies - energies.min()))
    return (math.log(weights.sum()) - beta * energies.min(),
            float((weights * energies).sum() / weights.sum()))


def test_free_fermions_brute_force():
    basis = PlaneWaveBasis.for_density(3, 1.0, 2, twist=(0.1, 0.3), n_orbitals=9)
    levels = np.asarray(basis.energies)
    beta = 1 / (0.5 * float(fermi_temperature(1.0, 2)))
    log_z, energy = _brute_force(levels, 3, beta)
    thermo = free_fermion_thermodynamics(basis.energies, 3, beta)
    np.testing.assert_allclose(thermo.log_z, log_z, rtol=1e-12)
    np.testing.assert_allclose(thermo.energy, energy, rtol=1e-12)


def test_free_fermions_n13():
    # N = 13 polarised, 2D, rs = 1, T = 0.15 T_F: converged in the cutoff, and -> E_0
    rs, n = 1.0, 13
    t_f = float(fermi_temperature(rs, 2))
    small = PlaneWaveBasis.for_density(n, rs, 2, emax=5 * t_f)
    large = PlaneWaveBasis.for_density(n, rs, 2, emax=8 * t_f)
    beta = 1 / (0.15 * t_f)
    e_small = free_fermion_thermodynamics(small.energies, n, beta).energy
    thermo = free_fermion_thermodynamics(large.energies, n, beta)
    np.testing.assert_allclose(e_small, thermo.energy, rtol=1e-9)
    # the ground state fills |n|^2 = 0, 1, 2, 4: sum 28 in units (2 pi / L)^2
    unit = (2 * math.pi) ** 2 / (math.pi * n * rs**2)
    e0 = 28 * unit
    assert e0 < float(thermo.energy) < e0 + n * t_f
    np.testing.assert_allclose(free_fermion_thermodynamics(large.energies, n, jnp.inf).energy,
                               e0, rtol=1e-12)
    assert float(thermo.entropy) > 0


BAD = [
    (lambda: PlaneWaveBasis(1.0, 1, n_orbitals=3), "dim must be 2 or 3"),
    (lambda: PlaneWaveBasis(1.0, 4, n_orbitals=3), "dim must be 2 or 3"),
    (lambda: PlaneWaveBasis(0.0, 2, n_orbitals=3), "box_length must be positive"),
    (lambda: PlaneWaveBasis(-2.0, 3, n_orbitals=3), "box_length must be positive"),
    (lambda: PlaneWaveBasis(1.0, 2, twist=(0.1, 0.2, 0.3), n_orbitals=3),
     "twist must hold dim = 2"),
    (lambda: PlaneWaveBasis(1.0, 3, twist=(0.1, 0.6, 0.0), n_orbitals=3),
     r"twist component must lie in \[-1/2, 1/2\]"),
    (lambda: PlaneWaveBasis(1.0, 2), "exactly one of emax"),
    (lambda: PlaneWaveBasis(1.0, 2, emax=10.0, n_orbitals=3), "exactly one of emax"),
    (lambda: PlaneWaveBasis(1.0, 2, n_orbitals=0), "n_orbitals must be an int >= 1"),
    (lambda: PlaneWaveBasis(1.0, 2, twist=(0.5, 0.5), emax=10.0), "below the lowest"),
    (lambda: PlaneWaveBasis(1.0, 2, emax=-1.0), "below the lowest"),
    (lambda: PlaneWaveBasis(1.0, 2, n_orbitals=3, prefactor=0.0), "prefactor must be positive"),
    (lambda: PlaneWaveBasis.for_density(13, 0.0, 2, n_orbitals=13), "rs must be positive"),
    (lambda: PlaneWaveBasis.for_density(13, 1.0, 2, n_orbitals=12),
     "cutoff too small for N = 13"),
    (lambda: PlaneWaveBasis.for_density(13, 1.0, 2, emax=2.0), "cutoff too small for N = 13"),
    (lambda: PlaneWaveBasis.for_density((3, 6), 1.0, 2, n_orbitals=5),
     "cutoff too small for N = 6"),
    (lambda: PlaneWaveBasis.for_density(0, 1.0, 2, n_orbitals=5), "n_particles must be"),
    (lambda: PlaneWaveBasis(1.0, 3, emax=1e9), "cutoff is too large"),
    (lambda: fermi_wavevector(-1.0, 2), "rs must be positive"),
    (lambda: fermi_wavevector(1.0, 5), "dim must be 2 or 3"),
    (lambda: box_length_for_density(4, -0.5, 3), "rs must be positive"),
    (lambda: closed_shell_counts(2, (0.7, 0.0)), r"\[-1/2, 1/2\]"),
    (lambda: closed_shell_counts(3, max_count=0), "max_count must be an int >= 1"),
]


@pytest.mark.parametrize("build, match", BAD)
def test_bad_inputs(build, match):
    with pytest.raises(ValueError, match=match):
        build()
