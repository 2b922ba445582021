"""Coulomb-trap references: the two-particle free energy (scipy, JAX, brute force,
autodiff, low-temperature expansion) and minimum-energy clusters (closed forms, the 2D
Wigner-molecule table)."""

import math

import jax
import numpy as np
import pytest
from scipy import integrate

from thermax.exact import (
    WIGNER_2D,
    coulomb_ground_state,
    coulomb_pair_free_energy,
    coulomb_pair_log_z,
)

SPHERE = {1: 2.0, 2: 2 * math.pi, 3: 4 * math.pi}

_log_z = jax.jit(coulomb_pair_log_z, static_argnums=1)
_log_z_grad = jax.jit(jax.grad(coulomb_pair_log_z, argnums=(0, 2, 3)), static_argnums=1)


# ---------------------------------------------------------------- two particles

@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize(("trap", "coupling"), [(1.0, 1.0), (2.3, 0.4)])
def test_jax_quadrature_matches_scipy(dim, trap, coupling):
    """-ln Z / beta from the fixed Gauss–Legendre rule equals the adaptive scipy value to
    1e-11 relative for beta in [0.1, 100]."""
    for beta in (0.1, 0.3, 1.0, 2.0, 5.0, 10.0, 30.0, 100.0):
        f_jax = -float(_log_z(beta, dim, trap, coupling)) / beta
        f_ref = coulomb_pair_free_energy(beta, dim, trap, coupling)
        np.testing.assert_allclose(f_jax, f_ref, rtol=1e-11, err_msg=f"beta={beta}")


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_pair_against_a_dense_grid_in_relative_coordinates(beta):
    """dim = 2: int d^2r exp(-beta (r^2/2 + 1/r)) by a 600 x 600 midpoint rule on the
    plane (no radial reduction) times the centre-of-mass Gaussian (pi/(2 beta))."""
    half = math.sqrt(2 * 45 / beta)
    m = 600
    h = 2 * half / m
    grid = -half + h * (np.arange(m) + 0.5)
    r = np.hypot(grid[:, None], grid[None, :])
    z_rel = h * h * np.sum(np.exp(-beta * (0.5 * r**2 + 1.0 / r)))
    log_z = math.log(math.pi / (2 * beta)) + math.log(z_rel)
    np.testing.assert_allclose(coulomb_pair_free_energy(beta, 2), -log_z / beta, rtol=1e-8)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_pair_against_monte_carlo_of_the_labelled_integral(dim):
    """Z = Z_trap <exp(-beta c / |x1 - x2|)> with x1, x2 drawn from the trap's own
    Boltzmann Gaussian (variance 1/(2 beta t) per coordinate): the full labelled integral,
    no change of variables; within 5 standard errors (~1e-3 relative)."""
    beta, trap, coupling, n_samples = 1.0, 1.3, 0.7, 400_000
    rng = np.random.default_rng(dim)
    x = rng.normal(scale=math.sqrt(1 / (2 * beta * trap)), size=(n_samples, 2, dim))
    w = np.exp(-beta * coupling / np.linalg.norm(x[:, 0] - x[:, 1], axis=-1))
    log_z = dim * math.log(math.pi / (beta * trap)) + math.log(w.mean())
    stderr = w.std(ddof=1) / math.sqrt(n_samples) / w.mean() / beta
    f = coulomb_pair_free_energy(beta, dim, trap, coupling)
    assert abs(f - (-log_z / beta)) < 5 * stderr, (f, -log_z / beta, stderr)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_autodiff_matches_central_differences(dim):
    """d ln Z / d(beta, trap, coupling) by jax.grad against central differences (h = 1e-5)."""
    point = np.array([1.7, 1.3, 0.8])
    grads = np.array([float(g) for g in _log_z_grad(*point[:1], dim, *point[1:])])
    h = 1e-5
    for k in range(3):
        up, down = point.copy(), point.copy()
        up[k] += h
        down[k] -= h
        fd = (float(_log_z(up[0], dim, up[1], up[2]))
              - float(_log_z(down[0], dim, down[1], down[2]))) / (2 * h)
        np.testing.assert_allclose(grads[k], fd, rtol=1e-8, err_msg=f"argument {k}")


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_thermodynamics_by_autodiff_equals_moments(dim):
    """With F = -ln Z / beta: U = -d ln Z/d beta = <H>, dF/dtrap = <|x1|^2 + |x2|^2> and
    dF/dcoupling = <1/r>, the averages by direct radial quadrature in r (the centre of mass
    contributes dim/(2 beta) to U and dim/(2 beta t) to <sum |x|^2>)."""
    beta, trap, coupling = 2.0, 1.3, 0.8

    def moment(f):
        weight = lambda r: r ** (dim - 1) * math.exp(-beta * (trap * r * r / 2 + coupling / r))
        num = integrate.quad(lambda r: f(r) * weight(r), 0, math.inf, epsabs=0, epsrel=1e-12)
        den = integrate.quad(weight, 0, math.inf, epsabs=0, epsrel=1e-12)
        return num[0] / den[0]

    r2, inv_r = moment(lambda r: r * r), moment(lambda r: 1 / r)
    d_beta, d_trap, d_coupling = (float(g) for g in _log_z_grad(beta, dim, trap, coupling))
    energy = dim / (2 * beta) + trap * r2 / 2 + coupling * inv_r
    np.testing.assert_allclose(-d_beta, energy, rtol=1e-10)
    np.testing.assert_allclose(-d_trap / beta, dim / (2 * beta * trap) + r2 / 2, rtol=1e-10)
    np.testing.assert_allclose(-d_coupling / beta, inv_r, rtol=1e-10)


@pytest.mark.parametrize(("dim", "kappa"), [(1, 1 / 18), (2, -5 / 18), (3, -17 / 18)])
def test_low_temperature_expansion(dim, kappa):
    """Laplace's method about the ground state (E0 = 3/2, r0 = 1, radial stiffness 3):

        F = E0 - [(d/2) ln(pi/(2 beta)) + ln(S_d sqrt(2 pi/(3 beta)))]/beta + kappa_d/beta^2

    with kappa_d = -C_d/E0 from the next Laplace term, C = -1/12, 5/12, 17/12 for d = 1, 2, 3
    (the angular directions are a sphere of radius r0: no zero-mode divergence)."""
    for beta in (1e3, 1e4):
        harmonic = 1.5 - (0.5 * dim * math.log(math.pi / (2 * beta))
                          + math.log(SPHERE[dim] * math.sqrt(2 * math.pi / (3 * beta)))) / beta
        for f in (coulomb_pair_free_energy(beta, dim), -float(_log_z(beta, dim, 1.0, 1.0)) / beta):
            assert abs(beta**2 * (f - harmonic) - kappa) < 2 / beta, (beta, f)


BAD_PAIR = {
    "dim 4": (lambda: coulomb_pair_free_energy(1.0, 4), r"dim in \(1, 2, 3\), got dim=4"),
    "beta 0": (lambda: coulomb_pair_free_energy(0.0, 2), r"finite beta > 0, got beta=0.0"),
    "trap negative": (lambda: coulomb_pair_free_energy(1.0, 2, trap=-1.0),
                      r"finite trap > 0, got trap=-1.0"),
    "coupling negative": (lambda: coulomb_pair_free_energy(1.0, 2, coupling=-1.0),
                          r"finite coupling >= 0, got coupling=-1.0"),
    "jax coupling 0": (lambda: coulomb_pair_log_z(1.0, 2, 1.0, 0.0),
                       r"finite coupling > 0, got coupling=0.0"),
    "jax dim": (lambda: coulomb_pair_log_z(1.0, 0), r"dim in \(1, 2, 3\), got dim=0"),
    "jax nodes": (lambda: coulomb_pair_log_z(1.0, 2, n_nodes=4), r"n_nodes >= 8, got n_nodes=4"),
    "ground n": (lambda: coulomb_ground_state(0, 2), r"integer n >= 1, got n=0"),
    "ground starts": (lambda: coulomb_ground_state(3, 2, starts=0), r"starts >= 1, got starts=0"),
    "ground dim": (lambda: coulomb_ground_state(3, 5), r"dim in \(1, 2, 3\), got dim=5"),
    "ground trap": (lambda: coulomb_ground_state(3, 2, trap=0.0), r"trap > 0, got trap=0.0"),
    "ground gap": (lambda: coulomb_ground_state(3, 2, shell_gap=1.5),
                   r"0 < shell_gap < 1, got shell_gap=1.5"),
}


@pytest.mark.parametrize("case", list(BAD_PAIR))
def test_bad_arguments(case):
    build, message = BAD_PAIR[case]
    with pytest.raises(ValueError, match=message):
        build()


def test_free_pair_is_gaussian():
    """coupling = 0: two independent Gaussians, F = -(dim/beta) ln(pi/(beta t))."""
    np.testing.assert_allclose(coulomb_pair_free_energy(1.5, 3, trap=2.0, coupling=0.0),
                               -3 / 1.5 * math.log(math.pi / 3.0), rtol=1e-14)


# ---------------------------------------------------------------- ground states

def _energy_and_force(x: np.ndarray, trap: float, coupling: float) -> tuple[float, np.ndarray]:
    """H and -grad H by explicit pair loops (independent of the optimiser's code)."""
    energy, force = trap * float(np.sum(x**2)), -2 * trap * x
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            diff = x[i] - x[j]
            r = float(np.linalg.norm(diff))
            energy += coupling / r
            force[i] += coupling * diff / r**3
            force[j] -= coupling * diff / r**3
    return energy, force


def _check_layout(g, n, dim, trap=1.0, coupling=1.0):
    """Centred, sorted by radius, energy consistent, and a stationary point (forces ~ 0)."""
    assert g.positions.shape == (n, dim) and g.radii.shape == (n,)
    np.testing.assert_allclose(g.positions.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(g.positions, axis=1), g.radii, rtol=1e-14)
    assert np.all(np.diff(g.radii) >= 0) and sum(g.shells) == n
    energy, force = _energy_and_force(g.positions, trap, coupling)
    np.testing.assert_allclose(energy, g.energy, rtol=1e-13)
    np.testing.assert_allclose(g.energy_per_particle, g.energy / n, rtol=1e-15)
    assert np.max(np.abs(force)) < 1e-6


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_one_particle_sits_at_the_origin(dim):
    g = coulomb_ground_state(1, dim)
    assert g.energy == 0.0 and g.shells == (1,)
    np.testing.assert_array_equal(g.positions, 0.0)


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize(("trap", "coupling"), [(1.0, 1.0), (2.5, 0.3)])
def test_pair_ground_state(dim, trap, coupling):
    """min_r [c/r + t r^2/2]: separation r0 = (c/t)^{1/3}, E = (3/2) c^{2/3} t^{1/3}."""
    g = coulomb_ground_state(2, dim, trap=trap, coupling=coupling)
    r0 = (coupling / trap) ** (1 / 3)
    np.testing.assert_allclose(g.energy, 1.5 * coupling ** (2 / 3) * trap ** (1 / 3), rtol=1e-13)
    np.testing.assert_allclose(g.radii, r0 / 2, rtol=1e-7)
    assert g.shells == (2,)
    _check_layout(g, 2, dim, trap, coupling)


def _polyhedron_energy(points: np.ndarray) -> float:
    """The minimum over the scale a of H(a p) = A/a + B a^2 (A the pair sum, B the trap sum
    of the shape p): a^3 = A/(2B), E = 3 (A^2 B / 4)^{1/3}."""
    n = len(points)
    i, j = np.triu_indices(n, 1)
    a = float(np.sum(1 / np.linalg.norm(points[i] - points[j], axis=1)))
    b = float(np.sum(points**2))
    return 3 * (a * a * b / 4) ** (1 / 3)


CLOSED_FORMS = {
    # 2D n = 3: equilateral triangle, E = 9 / 12^{1/3} (side sqrt(3) R, R^3 = 1/(2 sqrt 3))
    (3, 2): (9 / 12 ** (1 / 3), (3,)),
    (3, 3): (9 / 12 ** (1 / 3), (3,)),
    (3, 1): (_polyhedron_energy(np.array([[-1.0], [0.0], [1.0]])), (1, 2)),
    (4, 3): (_polyhedron_energy(np.array([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1],
                                          [-1, -1, 1]])), (4,)),
    (6, 3): (_polyhedron_energy(np.concatenate([np.eye(3), -np.eye(3)])), (6,)),
}


@pytest.mark.parametrize("case", list(CLOSED_FORMS))
def test_closed_form_clusters(case):
    """Triangle (2D and 3D), 1D chain, tetrahedron and octahedron: energy and shells."""
    n, dim = case
    energy, shells = CLOSED_FORMS[case]
    g = coulomb_ground_state(n, dim)
    np.testing.assert_allclose(g.energy, energy, rtol=1e-13)
    assert g.shells == shells
    _check_layout(g, n, dim)


@pytest.mark.parametrize("n", sorted(WIGNER_2D))
def test_wigner_2d_table(n):
    """Bedanov & Peeters' 2D energies per particle and shells, to the digits given (n = 2, 3
    are also the closed forms 3/4 and 3 / 12^{1/3})."""
    e_per_particle, shells = WIGNER_2D[n]
    g = coulomb_ground_state(n, 2)
    digits = len(repr(e_per_particle).split(".")[1])
    assert round(g.energy_per_particle, digits) == e_per_particle
    assert g.shells == shells
    _check_layout(g, n, 2)
    closed = {2: 0.75, 3: 3 / 12 ** (1 / 3)}
    if n in closed:
        assert round(closed[n], digits) == e_per_particle


def test_scaling_and_no_coupling():
    """E(t, c) = c^{2/3} t^{1/3} E(1, 1), positions scale by (c/t)^{1/3}; c = 0 collapses."""
    ref = coulomb_ground_state(5, 2)
    g = coulomb_ground_state(5, 2, trap=3.0, coupling=0.5)
    np.testing.assert_allclose(g.energy, 0.5 ** (2 / 3) * 3.0 ** (1 / 3) * ref.energy,
                               rtol=1e-12)
    np.testing.assert_allclose(g.radii, (0.5 / 3.0) ** (1 / 3) * ref.radii, rtol=1e-6)
    free = coulomb_ground_state(4, 3, coupling=0.0)
    assert free.energy == 0.0 and free.shells == (4,)
