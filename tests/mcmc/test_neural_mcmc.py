"""Neural MCMC (independence Metropolis, the model as proposal) against exact enumeration.

4x4 periodic Ising at beta = 0.44 (near beta_c), where enumeration of the 2^16 states gives
E and <|m|> exactly. Two VAN proposals: one briefly trained at the target beta (good: high
acceptance), one trained at beta = 0.3 ("hot": its E_p[H] is far from the target's E).
Whatever the proposal, the chains sample the Boltzmann distribution, so their averages agree
with enumeration within error bars, while the model's own average does not. Seeds are fixed;
the tolerance is 3 standard errors.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from thermax.distributions import AbstractDistribution, AutoregressiveSpins, sample_batch
from thermax.exact import all_spin_configurations, enumerate_thermodynamics
from thermax.mcmc import NeuralMCMCState, neural_mcmc, neural_mcmc_step
from thermax.nn import MADE
from thermax.objectives import ScoreFunctionFreeEnergy, mean_and_stderr
from thermax.systems import Ising2D
from thermax.train import Trainer, make_mesh

BETA = 0.44
HOT_BETA = 0.3
SYSTEM = Ising2D(4)
N_CHAINS, N_STEPS, N_BURN = 128, 400, 100
Z_MAX = 3.0


def abs_magnetisation(s):
    """``|m| = |mean(s)|`` of one configuration."""
    return jnp.abs(jnp.mean(s))


class Tabulated(AbstractDistribution):
    """A distribution over all ``2^n`` spin configurations given by a table (test-only)."""

    log_probs: jax.Array
    states: jax.Array
    shape: tuple[int, ...] = eqx.field(static=True)
    kind = "spins"

    def __init__(self, log_probs, shape):
        self.shape = tuple(shape)
        self.states = all_spin_configurations(self.shape)
        self.log_probs = jnp.asarray(log_probs) - jax.nn.logsumexp(jnp.asarray(log_probs))

    def _log_prob(self, x):
        bits = ((1 - x.ravel()) / 2).astype(jnp.int32)   # spin = 1 - 2 bit, bit i of the index
        return self.log_probs[jnp.sum(bits << jnp.arange(bits.size))]

    def _sample_and_log_prob(self, key):
        i = jax.random.categorical(key, self.log_probs)
        return self.states[i], self.log_probs[i]


def boltzmann(system, beta) -> Tabulated:
    states = all_spin_configurations(system.shape)
    return Tabulated(-beta * jax.vmap(system.energy)(states), system.shape)


@pytest.fixture(scope="module")
def exact():
    states = all_spin_configurations(SYSTEM.shape)
    p = jnp.exp(boltzmann(SYSTEM, BETA).log_probs)
    return {**enumerate_thermodynamics(SYSTEM, BETA),
            "abs_m": float(jnp.sum(p * jax.vmap(abs_magnetisation)(states)))}


@pytest.fixture(scope="module")
def models():
    """A VAN trained 120 steps at BETA and one trained 60 steps at HOT_BETA (one compile)."""
    untrained = AutoregressiveSpins(MADE((4, 4), depth=2, width=4, key=jax.random.key(0)))
    out = {}
    for name, beta, steps in [("trained", BETA, 120), ("hot", HOT_BETA, 60)]:
        trainer = Trainer(ScoreFunctionFreeEnergy(), optax.adam(1e-2), SYSTEM, beta=beta,
                          batch=128, mesh=make_mesh(jax.devices()[:1]))
        state = trainer.init(untrained, key=jax.random.key(3))
        for _ in range(steps):
            state, _ = trainer.step(state)
        out[name] = state.model
    return out


@pytest.fixture(scope="module")
def runs(models):
    return {name: neural_mcmc(model, SYSTEM, BETA, key=jax.random.key(1), n_chains=N_CHAINS,
                              n_steps=N_STEPS, n_burn=N_BURN, observable=abs_magnetisation)
            for name, model in models.items()}


@pytest.mark.parametrize("name", ["trained", "hot"])
def test_mcmc_energy_matches_enumeration(runs, exact, name):
    r = runs[name]
    z = (float(r.energy_mean) - exact["energy"]) / float(r.energy_stderr)
    assert abs(z) < Z_MAX, (f"{name}: E = {float(r.energy_mean)} +- {float(r.energy_stderr)}, "
                            f"exact {exact['energy']}, z = {z:.2f}")
    assert float(r.energy_stderr) < 0.02 * abs(exact["energy"])    # not vacuous


@pytest.mark.parametrize("name", ["trained", "hot"])
def test_observable_hook_matches_enumeration(runs, exact, name):
    r = runs[name]
    z = (float(r.observable_mean) - exact["abs_m"]) / float(r.observable_stderr)
    assert abs(z) < Z_MAX, (f"{name}: |m| = {float(r.observable_mean)} +- "
                            f"{float(r.observable_stderr)}, exact {exact['abs_m']}, z={z:.2f}")


def test_mcmc_corrects_the_model_bias(models, runs, exact):
    """The hot model's own E_p[H] is off by many standard errors; the chains are not."""
    x, _ = sample_batch(models["hot"], key=jax.random.key(5), batch=4096)
    e_p, e_p_err = mean_and_stderr(jax.vmap(SYSTEM.energy)(x))
    z_model = (float(e_p) - exact["energy"]) / float(e_p_err)
    assert z_model > 20, (float(e_p), float(e_p_err), exact["energy"])
    r = runs["hot"]
    assert abs(float(r.energy_mean) - exact["energy"]) < Z_MAX * float(r.energy_stderr)


def test_acceptance_and_traces(runs):
    for r in runs.values():
        assert 0.0 <= float(r.acceptance_rate) <= 1.0
        assert np.all((np.asarray(r.chain_acceptance) >= 0) & (np.asarray(r.chain_acceptance) <= 1))
        assert r.energy_trace.shape == r.acceptance_trace.shape == (N_STEPS,)
        assert r.chain_energy.shape == (N_CHAINS,)
        assert r.state.x.shape == (N_CHAINS, 4, 4)
        # the final state is consistent: ln w = -beta H - ln p for the stored configurations
        np.testing.assert_allclose(r.state.energy, jax.vmap(SYSTEM.energy)(r.state.x))
        np.testing.assert_allclose(np.mean(r.acceptance_trace[N_BURN:]), r.acceptance_rate)
    # the better the proposal, the higher the acceptance and the shorter the correlations
    assert float(runs["trained"].acceptance_rate) > 0.8
    assert float(runs["trained"].acceptance_rate) > float(runs["hot"].acceptance_rate) > 0.1
    assert float(runs["trained"].energy_tau) < float(runs["hot"].energy_tau)


SMALL = Ising2D(3)


def _small_run(model, seed):
    return neural_mcmc(model, SMALL, jnp.asarray(BETA), key=jax.random.key(seed), n_chains=64,
                       n_steps=100, n_burn=10)


def test_exact_boltzmann_proposal_is_always_accepted():
    """With p = e^{-beta H}/Z every weight equals Z: acceptance 1, independent samples."""
    r = _small_run(boltzmann(SMALL, BETA), seed=2)
    assert float(r.acceptance_rate) == 1.0
    e = enumerate_thermodynamics(SMALL, BETA)["energy"]
    assert abs(float(r.energy_mean) - e) < Z_MAX * float(r.energy_stderr)
    assert 0.5 < float(r.energy_tau) < 2.0


def test_nan_weights_warn_of_zero_acceptance():
    """A model with NaN ln p never moves: the result says so and a warning is issued."""
    with pytest.warns(RuntimeWarning, match="accepted no proposal"):
        r = _small_run(boltzmann(SMALL, jnp.nan), seed=0)
    assert float(r.acceptance_rate) == 0.0


def test_step_acceptance_probability():
    """From a state of log-weight ``lw0`` a step moves with probability
    ``sum_y p(y) min(1, w(y) / w0)``: empirical frequency over 4096 keys vs enumeration.
    A weight of zero (``lw0 = -inf``) always moves, an infinite one never does."""
    system, beta = Ising2D(2), jnp.asarray(BETA)
    model = boltzmann(system, 0.1)
    states = all_spin_configurations(system.shape)
    lp = jax.vmap(model.log_prob)(states)
    lw = -beta * jax.vmap(system.energy)(states) - lp
    x = jnp.ones((2, 2))

    @eqx.filter_jit
    def accepted(log_weight, keys):
        state = NeuralMCMCState(x, log_weight, system.energy(x), system.energy(x))
        return jax.vmap(lambda k: neural_mcmc_step(model, system, beta, state, key=k)[1])(keys)

    keys = jax.random.split(jax.random.key(4), 4096)
    assert np.all(accepted(jnp.asarray(-jnp.inf), keys))
    assert not np.any(accepted(jnp.asarray(jnp.inf), keys))
    lw0 = jnp.max(lw) - 1.0
    expected = float(jnp.sum(jnp.exp(lp) * jnp.minimum(1.0, jnp.exp(lw - lw0))))
    got = float(np.mean(accepted(lw0, keys)))
    stderr = np.sqrt(expected * (1 - expected) / len(keys))
    assert 0.05 < expected < 0.95
    assert abs(got - expected) < 4.5 * stderr, (got, expected)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_chains": 1}, "n_chains >= 2"),
    ({"n_steps": 0}, "n_steps must be a positive integer"),
    ({"n_burn": 10}, r"n_burn must be an integer in \[0, n_steps\)"),
    ({"n_burn": -1}, r"n_burn must be an integer in \[0, n_steps\)"),
])
def test_bad_arguments_raise(kwargs, message):
    kwargs = {"n_chains": 2, "n_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        neural_mcmc(boltzmann(Ising2D(2), BETA), Ising2D(2), BETA, key=jax.random.key(0),
                    **kwargs)
