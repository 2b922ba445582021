"""Thermodynamics by autodiff of the variational free energy (free_energy_derivatives)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.bijections import Scale
from thermax.distributions import StandardNormal, Transformed
from thermax.objectives import free_energy_derivatives
from thermax.systems import CoulombTrap

BETA = 1.3
N_SAMPLES = 2048


def gaussian(n: int, dim: int, variance: float) -> Transformed:
    shape = (n, dim)
    return Transformed(StandardNormal(shape, kind="particles"),
                       Scale(shape, log_scale=0.5 * math.log(variance)))


def make(n, dim):
    return lambda trap, coupling: CoulombTrap(n, dim, trap=trap, coupling=coupling)


@pytest.fixture(scope="module")
def pair_model():
    return gaussian(2, 2, 0.4)


@pytest.fixture(scope="module")
def pair_derivatives(pair_model):
    return free_energy_derivatives(pair_model, make(2, 2), {"trap": 1.0, "coupling": 0.7},
                                   BETA, key=jax.random.key(0), n_samples=N_SAMPLES)


def _samples(model, key, n_samples):
    keys = jax.random.split(key, n_samples)
    return jax.vmap(lambda k: model.sample_and_log_prob(key=k))(keys)


def test_derivatives_are_the_sampled_dh_dlambda(pair_model, pair_derivatives):
    """dF/dtrap = <sum |x_i|^2>, dF/dcoupling = <1/r_12>, U = <H>, S = -<ln p> on the same
    samples (same key)."""
    x, lp = _samples(pair_model, jax.random.key(0), N_SAMPLES)
    r2 = jnp.sum(x**2, axis=(1, 2))
    inv_r = 1.0 / jnp.linalg.norm(x[:, 0] - x[:, 1], axis=-1)
    energy = r2 + 0.7 * inv_r
    d = pair_derivatives
    np.testing.assert_allclose(d["dF/dtrap"], float(jnp.mean(r2)), rtol=1e-10)
    np.testing.assert_allclose(d["dF/dcoupling"], float(jnp.mean(inv_r)), rtol=1e-10)
    np.testing.assert_allclose(d["energy"], float(jnp.mean(energy)), rtol=1e-10)
    np.testing.assert_allclose(d["entropy"], float(-jnp.mean(lp)), rtol=1e-10)
    np.testing.assert_allclose(d["free_energy"], d["energy"] - d["entropy"] / BETA,
                               rtol=1e-10)
    np.testing.assert_allclose(d["dF/dtrap_stderr"],
                               float(jnp.std(r2, ddof=1) / math.sqrt(N_SAMPLES)), rtol=1e-8)


def test_derivatives_match_finite_differences(pair_model, pair_derivatives):
    """Central differences of the F estimate with common random numbers (same samples)."""
    x, lp = _samples(pair_model, jax.random.key(0), N_SAMPLES)

    def f_estimate(beta, trap, coupling):
        energy = jax.vmap(CoulombTrap(2, 2, trap=trap, coupling=coupling).energy)(x)
        return float(jnp.mean(energy + lp / beta))

    h = 1e-5
    d = pair_derivatives
    fd_trap = (f_estimate(BETA, 1 + h, 0.7) - f_estimate(BETA, 1 - h, 0.7)) / (2 * h)
    fd_coupling = (f_estimate(BETA, 1, 0.7 + h) - f_estimate(BETA, 1, 0.7 - h)) / (2 * h)
    beta_f = lambda b: b * f_estimate(b, 1.0, 0.7)  # noqa: E731
    fd_energy = (beta_f(BETA + h) - beta_f(BETA - h)) / (2 * h)
    np.testing.assert_allclose(d["dF/dtrap"], fd_trap, rtol=1e-7)
    np.testing.assert_allclose(d["dF/dcoupling"], fd_coupling, rtol=1e-7)
    np.testing.assert_allclose(d["energy"], fd_energy, rtol=1e-7)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_exact_model_gives_exact_thermodynamics(dim):
    """One particle in the trap: the Gaussian with variance 1/(2 beta trap) is the exact
    Boltzmann distribution, so F is exact with zero variance, and dF/dtrap = dim/(2 beta
    trap) and U = dim/(2 beta) come out within their error bars."""
    trap = 1.7
    model = gaussian(1, dim, 1.0 / (2 * BETA * trap))
    d = free_energy_derivatives(model, make(1, dim), {"trap": trap, "coupling": 1.0}, BETA,
                                key=jax.random.key(1), n_samples=N_SAMPLES)
    exact_f = -dim / (2 * BETA) * math.log(math.pi / (BETA * trap))
    np.testing.assert_allclose(d["free_energy"], exact_f, rtol=1e-10)
    assert d["free_energy_stderr"] < 1e-10
    assert abs(d["dF/dtrap"] - dim / (2 * BETA * trap)) < 4 * d["dF/dtrap_stderr"]
    assert abs(d["energy"] - dim / (2 * BETA)) < 4 * d["energy_stderr"]
    assert d["dF/dcoupling"] == 0.0  # no pairs


def test_bad_arguments(pair_model):
    with pytest.raises(ValueError, match="at least one parameter"):
        free_energy_derivatives(pair_model, make(2, 2), {}, 1.0, key=jax.random.key(0),
                                n_samples=8)
    with pytest.raises(ValueError, match="n_samples"):
        free_energy_derivatives(pair_model, make(2, 2), {"trap": 1.0, "coupling": 1.0}, 1.0,
                                key=jax.random.key(0), n_samples=1)
    with pytest.raises(ValueError, match="beta"):
        free_energy_derivatives(pair_model, make(2, 2), {"trap": 1.0, "coupling": 1.0}, 0.0,
                                key=jax.random.key(0), n_samples=8)
