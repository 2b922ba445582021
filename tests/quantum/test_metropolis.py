"""Metropolis walkers: samples of a Gaussian |Psi|^2 with known moments and radial law,
width adaptation toward acceptance 0.5, and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from thermax.quantum._metropolis import (
    WalkerState,
    adapt_width,
    init_walkers,
    metropolis_step,
)

SIGMA = 0.7          # |Psi|^2 = N(0, SIGMA^2 I): ln|Psi| = -|x|^2 / (4 SIGMA^2)
BATCH = 4000


def log_psi(x):
    return -jnp.sum(x**2) / (4 * SIGMA**2)


log_psi_batch = jax.vmap(log_psi)


def _stepper(n_sweeps, one_electron=False):
    return jax.jit(lambda state, key: metropolis_step(log_psi_batch, state, key=key,
                                                      n_sweeps=n_sweeps,
                                                      one_electron=one_electron))


def _run(state, step, seed, rounds, adapt=True):
    for k in jax.random.split(jax.random.key(seed), rounds):
        state = step(state, k)
        if adapt:
            state = adapt_width(state)
    return state


def _check_gaussian(xs, label):
    """Mean 0 and variance SIGMA^2 per coordinate within 4 standard errors (the walkers are
    independent chains, so the final positions are independent samples); chi-square test of
    u = r^2 / (2 SIGMA^2) ~ Exp(1) for each particle (2D) in 10 equiprobable bins."""
    v = np.asarray(xs).reshape(-1)
    m = v.size
    assert abs(v.mean()) < 4 * SIGMA / math.sqrt(m), label
    assert abs(v.var() - SIGMA**2) < 4 * SIGMA**2 * math.sqrt(2 / m), label
    u = np.sum(np.asarray(xs) ** 2, -1).reshape(-1) / (2 * SIGMA**2)
    edges = np.append(-np.log1p(-np.arange(10) / 10), np.inf)   # Exp(1) deciles
    counts, _ = np.histogram(u, edges)
    expected = u.size / 10
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert stats.chi2.sf(chi2, df=9) > 1e-3, (label, counts)


@pytest.fixture(scope="module")
def step20():
    return _stepper(20)


def test_gaussian_samples_after_burn_in(step20):
    """n = 1, dim = 2, started off-centre at (3, 3): after burn-in the walkers sample
    N(0, SIGMA^2 I); log_prob stays 2 ln|Psi| of the positions."""
    xs0 = jnp.full((BATCH, 1, 2), 3.0)
    state = init_walkers(log_psi_batch, xs0, 1.0)
    assert bool(jnp.all(jnp.isnan(state.acceptance)))
    state = _run(state, step20, seed=0, rounds=10)              # burn-in, adapting
    assert 0.35 < float(state.mean_acceptance) < 0.65
    state = _run(state, step20, seed=1, rounds=5, adapt=False)  # fixed width
    np.testing.assert_allclose(state.log_prob, 2 * log_psi_batch(state.positions), atol=1e-12)
    _check_gaussian(state.positions, "all-electron")


def test_one_electron_moves_and_per_walker_width():
    """n = 3 independent particles, one electron at a time, one width per walker."""
    step = _stepper(10, one_electron=True)
    xs0 = jax.random.normal(jax.random.key(2), (BATCH // 2, 3, 2)) + 2.0
    widths = jnp.linspace(0.3, 3.0, BATCH // 2)
    state = init_walkers(log_psi_batch, xs0, widths)
    state = _run(state, step, seed=3, rounds=10)
    assert state.width.shape == (BATCH // 2,)
    assert 0.35 < float(state.mean_acceptance) < 0.65
    state = _run(state, step, seed=4, rounds=3, adapt=False)
    _check_gaussian(state.positions, "one-electron")


@pytest.mark.parametrize("width", [5.0, 0.01])
def test_width_adaptation_moves_acceptance_to_half(width):
    step = _stepper(10)
    state = init_walkers(log_psi_batch, jnp.zeros((1000, 2, 2)), width)
    first = step(state, jax.random.key(5))
    a0 = float(first.mean_acceptance)
    assert (a0 < 0.2) if width > 1 else (a0 > 0.9)              # far from the target
    state = _run(first, step, seed=6, rounds=1, adapt=False)
    for k in jax.random.split(jax.random.key(7), 15):
        state = step(adapt_width(state), k)
    assert 0.35 <= float(state.mean_acceptance) <= 0.65
    assert 0.2 < float(state.width) < 2.0


def test_adapt_width_update_rule():
    """One update: exp(gain (a - target)) clipped to [1/f, f]; NaN acceptance keeps width."""
    state = WalkerState(positions=jnp.zeros((3, 1, 2)), log_prob=jnp.zeros(3),
                        width=jnp.array([1.0, 1.0, 1.0]),
                        acceptance=jnp.array([0.6, 0.0, jnp.nan]))
    new = adapt_width(state, gain=2.0, max_factor=2.0)
    # exp(2 (0 - 0.5)) = 0.37 is clipped to 1/2
    np.testing.assert_allclose(new.width, [math.exp(0.2), 0.5, 1.0], atol=1e-12)
    new = adapt_width(state, gain=1.0, max_factor=2.0)
    np.testing.assert_allclose(new.width[1], math.exp(-0.5), atol=1e-12)
    new = adapt_width(state, gain=100.0, max_factor=2.0, min_width=0.9, max_width=1.1)
    np.testing.assert_allclose(new.width, [1.1, 0.9, 1.0], atol=1e-12)
    shared = WalkerState(positions=jnp.zeros((2, 1, 2)), log_prob=jnp.zeros(2),
                         width=jnp.asarray(0.5), acceptance=jnp.array([0.2, 0.4]))
    np.testing.assert_allclose(adapt_width(shared, target=0.3).width, 0.5, atol=1e-12)


def test_refresh_uses_the_new_wavefunction(step20):
    """A changed log_psi (refresh=True) is re-evaluated before the first proposal."""
    state = init_walkers(log_psi_batch, jnp.ones((8, 1, 2)), 0.5)
    other = jax.vmap(lambda x: 2 * log_psi(x))
    new = metropolis_step(other, state, key=jax.random.key(8), n_sweeps=1)
    np.testing.assert_allclose(new.log_prob, 2 * other(new.positions), atol=1e-12)


def test_bad_inputs(without_jaxtyping):
    xs = jnp.zeros((4, 1, 2))
    with pytest.raises(ValueError, match="width must be > 0"):
        init_walkers(log_psi_batch, xs, -1.0)
    with pytest.raises(ValueError, match="one per walker"):
        init_walkers(log_psi_batch, xs, jnp.ones(3))
    with pytest.raises(ValueError, match="positions must be"):
        init_walkers(log_psi_batch, jnp.zeros((4, 2)), 1.0)
    with pytest.raises(ValueError, match="log_psi_batch must map"):
        init_walkers(lambda x: jnp.sum(x), xs, 1.0)
    state = init_walkers(log_psi_batch, xs, 1.0)
    with pytest.raises(ValueError, match="n_sweeps"):
        metropolis_step(log_psi_batch, state, key=jax.random.key(0), n_sweeps=0)
    with pytest.raises(ValueError, match="target"):
        adapt_width(state, target=1.5)
    with pytest.raises(ValueError, match="max_factor"):
        adapt_width(state, max_factor=0.5)
