"""HMC: Gaussian and box targets reproduce their moments; adaptation; rejection; bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.mcmc import HMC, adapt_step_size, hmc_init, hmc_step

N_CHAINS, N_WARMUP, N_STEPS = 64, 200, 1000


@eqx.filter_jit
def _moments(hmc, position, *, key):
    """Warm up, then per-chain means of x and x^2 (each ``(chains, dim)``) and acceptance."""
    k_warm, k_run = jax.random.split(key)
    state = hmc.init(position, 0.5)
    state, _ = hmc.sample(state, key=k_warm, n_steps=N_WARMUP, adapt=True)
    state, trace = hmc.sample(state, key=k_run, n_steps=N_STEPS,
                              observable=lambda x: jnp.stack([x, x**2]))
    return jnp.mean(trace["observable"], axis=0), jnp.mean(trace["acceptance"]), state.step_size


def _mean_and_stderr(chain_means):
    chain_means = np.asarray(chain_means)
    return chain_means.mean(0), chain_means.std(0, ddof=1) / np.sqrt(chain_means.shape[0])


@pytest.mark.parametrize("scales", [(1.0, 1.0, 1.0), (0.5, 1.0, 2.0)])
def test_gaussian_moments(scales):
    """N(0, diag(scales^2)): the mean is 0 and the variance scales^2, within 4 standard errors
    from independent chains; the step size adapts to the target acceptance."""
    sigma = jnp.asarray(scales)
    hmc = HMC(lambda x: -0.5 * jnp.sum((x / sigma) ** 2), n_leapfrog=8)
    position = jax.random.normal(jax.random.key(0), (N_CHAINS, 3))
    chain_means, accept, step_size = _moments(hmc, position, key=jax.random.key(1))
    mean, mean_err = _mean_and_stderr(chain_means[:, 0])
    second, second_err = _mean_and_stderr(chain_means[:, 1])
    np.testing.assert_array_less(np.abs(mean), 4 * mean_err)
    np.testing.assert_array_less(np.abs(second - np.asarray(sigma) ** 2), 4 * second_err)
    assert np.all(second_err < 0.05 * np.asarray(sigma) ** 2)     # the test has power
    assert abs(float(accept) - 0.8) < 0.05 and float(step_size) > 0


def test_hard_wall_rejects():
    """Uniform on [-1, 1]^2 (ln pi = -inf outside, zero gradient): moves out are rejected,
    so chains stay inside, with mean 0 and <x^2> = 1/3."""
    hmc = HMC(lambda x: jnp.where(jnp.all(jnp.abs(x) < 1), 0.0, -jnp.inf), n_leapfrog=3)
    position = jax.random.uniform(jax.random.key(2), (N_CHAINS, 2), minval=-0.5, maxval=0.5)
    chain_means, accept, _ = _moments(hmc, position, key=jax.random.key(3))
    mean, mean_err = _mean_and_stderr(chain_means[:, 0])
    second, second_err = _mean_and_stderr(chain_means[:, 1])
    np.testing.assert_array_less(np.abs(mean), 4 * mean_err)
    np.testing.assert_array_less(np.abs(second - 1 / 3), 4 * second_err)
    assert 0.5 < float(accept) < 1.0


def test_step_keeps_shapes_and_nan_trajectories_are_rejected():
    log_density = lambda x: jnp.where(x[0] > 0.5, jnp.nan, -0.5 * jnp.sum(x**2))
    position = jnp.zeros((16, 2))
    state = hmc_init(log_density, position, step_size=1.0)
    new, accept = jax.jit(lambda s, k: hmc_step(log_density, s, key=k, n_leapfrog=4))(
        state, jax.random.key(4))
    assert new.position.shape == (16, 2) and accept.shape == (16,)
    assert bool(jnp.all(jnp.isfinite(new.log_density)))
    assert bool(jnp.all(new.position[:, 0] <= 0.5))           # NaN proposals never accepted
    assert bool(jnp.all((accept == 0) | (new.position[:, 0] <= 0.5)))


def test_adapt_step_size_direction():
    state = hmc_init(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros((4, 2)), step_size=0.3)
    up = adapt_step_size(state, jnp.full((4,), 0.95), target=0.8, rate=0.5)
    down = adapt_step_size(state, jnp.full((4,), 0.2), target=0.8, rate=0.5)
    np.testing.assert_allclose(up.step_size, 0.3 * np.exp(0.5 * 0.15), rtol=1e-12)
    assert float(down.step_size) < 0.3 < float(up.step_size)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_leapfrog": 0}, "n_leapfrog"),
    ({"n_leapfrog": -3}, "n_leapfrog"),
    ({"target_acceptance": 1.0}, "target_acceptance"),
    ({"jitter": 1.0}, "jitter"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HMC(lambda x: -jnp.sum(x**2), **kwargs)
