"""CoulombTrap: energy by hand, symmetries, parameter gradients, validation, exact F."""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.exact import coulomb_pair_free_energy
from thermax.systems import CoulombTrap

X3 = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])   # pair distances 5, 1, sqrt(20)

_energies = eqx.filter_jit(lambda system, xs: jax.vmap(system.energy)(xs))


def _hand_energy(x: np.ndarray, trap: float, coupling: float) -> float:
    pairs = sum(1.0 / math.dist(x[i], x[j]) for i, j in itertools.combinations(range(len(x)), 2))
    return coupling * pairs + trap * float(np.sum(x**2))


@pytest.mark.parametrize(("trap", "coupling"), [(1.0, 1.0), (0.7, 2.5), (1.3, 0.0)])
def test_energy_by_hand_n3(trap, coupling):
    """E = c (1/5 + 1 + 1/sqrt 20) + t (25 + 1) for the three points of X3."""
    expected = coupling * (0.2 + 1.0 + 1.0 / math.sqrt(20.0)) + trap * 26.0
    energy = CoulombTrap(3, 2, trap=trap, coupling=coupling).energy(jnp.asarray(X3))
    np.testing.assert_allclose(float(energy), expected, rtol=1e-14)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_energy_matches_loops_permutations_and_scaling(dim):
    """A batch of random configurations: the pair loop, every permutation of the labels, and
    the scaling H_{c,t}(l y) = c^{2/3} t^{1/3} H_{1,1}(y), l = (c/t)^{1/3}."""
    n, trap, coupling = 4, 1.7, 0.6
    xs = np.random.default_rng(dim).normal(size=(5, n, dim))
    system = CoulombTrap(n, dim, trap=trap, coupling=coupling)
    energies = np.asarray(_energies(system, jnp.asarray(xs)))
    np.testing.assert_allclose(energies, [_hand_energy(x, trap, coupling) for x in xs],
                               rtol=1e-13)
    perms = np.array(list(itertools.permutations(range(n))))
    permuted = np.asarray(_energies(system, jnp.asarray(xs[0][perms])))
    np.testing.assert_allclose(permuted, energies[0], rtol=1e-13)
    length = (coupling / trap) ** (1 / 3)
    reduced = np.asarray(_energies(CoulombTrap(n, dim), jnp.asarray(xs / length)))
    np.testing.assert_allclose(energies, coupling ** (2 / 3) * trap ** (1 / 3) * reduced,
                               rtol=1e-13)


def test_gradients_in_trap_and_coupling_are_the_sums():
    """dH/dtrap = sum |x_i|^2, dH/dcoupling = sum_{i<j} 1/r_ij, through the constructor
    (traced parameters) and through the module's leaves (eqx.filter_grad)."""
    x = jnp.asarray(X3)

    def energy(trap, coupling):
        return CoulombTrap(3, 2, trap=trap, coupling=coupling).energy(x)

    d_trap, d_coupling = jax.jit(jax.grad(energy, argnums=(0, 1)))(1.3, 0.4)
    np.testing.assert_allclose(float(d_trap), 26.0, rtol=1e-14)
    np.testing.assert_allclose(float(d_coupling), 1.2 + 1 / math.sqrt(20), rtol=1e-14)
    grads = eqx.filter_grad(lambda system: system.energy(x))(CoulombTrap(3, 2, trap=1.3,
                                                                          coupling=0.4))
    np.testing.assert_allclose(float(grads.trap), 26.0, rtol=1e-14)
    np.testing.assert_allclose(float(grads.coupling), 1.2 + 1 / math.sqrt(20), rtol=1e-14)


def test_position_gradient_is_finite_and_analytic():
    """No 0/0 from the i == j diagonal: grad_i H = 2 t x_i - c sum_j (x_i - x_j)/r_ij^3."""
    trap, coupling = 0.9, 1.4
    grad = jax.grad(CoulombTrap(3, 2, trap=trap, coupling=coupling).energy)(jnp.asarray(X3))
    expected = 2 * trap * X3
    for i, j in itertools.permutations(range(3), 2):
        diff = X3[i] - X3[j]
        expected[i] -= coupling * diff / np.linalg.norm(diff) ** 3
    assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-13, atol=1e-15)
    one = jax.grad(CoulombTrap(1, 3).energy)(jnp.zeros((1, 3)))
    np.testing.assert_array_equal(np.asarray(one), 0.0)


def test_describe_and_shape():
    system = CoulombTrap(6, 3, trap=2.0, coupling=0.5)
    assert system.shape == (6, 3) and system.n == 6 and system.kind == "particles"
    assert system.describe() == {"n": 6, "dim": 3, "trap": 2.0, "coupling": 0.5,
                                 "particles": "labelled"}
    with pytest.raises(ValueError, match=r"shape \(6, 3\)"):
        system.energy(jnp.zeros((6, 2)))


BAD = {
    "n = 0": (lambda: CoulombTrap(0, 2), r"integer number of particles n >= 1, got n=0"),
    "n bool": (lambda: CoulombTrap(True, 2), r"n >= 1, got n=True"),
    "dim 4": (lambda: CoulombTrap(3, 4), r"dim in \(1, 2, 3\), got dim=4"),
    "dim 0": (lambda: CoulombTrap(3, 0), r"dim in \(1, 2, 3\), got dim=0"),
    "trap 0": (lambda: CoulombTrap(3, 2, trap=0.0), r"finite trap > 0, got trap=0.0"),
    "trap negative": (lambda: CoulombTrap(3, 2, trap=-1.0), r"trap > 0, got trap=-1.0"),
    "trap nan": (lambda: CoulombTrap(3, 2, trap=float("nan")), r"trap > 0, got trap=nan"),
    "coupling negative": (lambda: CoulombTrap(3, 2, coupling=-0.5),
                          r"finite coupling >= 0, got coupling=-0.5"),
    "coupling inf": (lambda: CoulombTrap(3, 2, coupling=jnp.inf), r"coupling >= 0, got "
                     r"coupling=inf"),
    "beta 0": (lambda: CoulombTrap(2, 2).exact_free_energy(0.0), r"beta > 0, got beta=0.0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments(case):
    build, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        build()


def test_array_parameter_is_refused():
    """A non-scalar trap: the ValueError, or the runtime type checker's TypeError first."""
    with pytest.raises((ValueError, TypeError), match="trap"):
        CoulombTrap(3, 2, trap=jnp.ones(2))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_single_particle_and_free_particles_are_gaussian(dim):
    """n = 1: ln Z = (dim/2) ln(pi/(beta t)); coupling 0: n independent copies; n = 3 with
    interactions has no exact value."""
    beta, trap = 1.7, 0.8
    one = CoulombTrap(1, dim, trap=trap).exact_free_energy(beta)
    np.testing.assert_allclose(one, -dim / (2 * beta) * math.log(math.pi / (beta * trap)),
                               rtol=1e-14)
    free = CoulombTrap(3, dim, trap=trap, coupling=0.0).exact_free_energy(beta)
    np.testing.assert_allclose(free, 3 * one, rtol=1e-14)
    assert CoulombTrap(3, dim).exact_free_energy(beta) is None


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_pair_free_energy_and_low_temperature_limit(dim):
    """n = 2 is the pair reference; F/n approaches the ground-state energy per particle
    (3/4 c^{2/3} t^{1/3}) as beta grows, from above at low temperature, with
    F - E0 = O(ln(beta)/beta)."""
    trap, coupling = 1.2, 0.9
    system = CoulombTrap(2, dim, trap=trap, coupling=coupling)
    assert system.exact_free_energy(2.0) == coulomb_pair_free_energy(2.0, dim, trap, coupling)
    e0 = system.ground_state().energy
    np.testing.assert_allclose(e0, 1.5 * coupling ** (2 / 3) * trap ** (1 / 3), rtol=1e-12)
    gaps = [system.exact_free_energy(beta) / 2 - e0 / 2 for beta in (1e2, 1e3, 1e4, 1e5)]
    assert all(g > 0 for g in gaps)
    for beta, gap in zip((1e2, 1e3, 1e4, 1e5), gaps, strict=True):
        assert gap < 2 * dim * math.log(beta) / beta
    assert gaps[-1] < 2e-4
