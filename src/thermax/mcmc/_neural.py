"""Neural MCMC: independence Metropolis with a normalized generative model as the proposal.

With importance weights ``w(x) = exp(-beta H(x)) / p(x)``, a chain at ``x`` proposes a fresh
``x' ~ p`` (independent of ``x``) and accepts it with probability
``min(1, w(x') / w(x))``. The proposal density is exact and normalized, so the chain
satisfies detailed balance with respect to the Boltzmann distribution ``e^{-beta H} / Z``:
after burn-in its samples follow the exact Boltzmann distribution, whatever the model,
provided ``p > 0`` wherever the Boltzmann weight is. The model only sets the efficiency:
the acceptance rate (1 for a perfect model) and the autocorrelation time of the chain.
Averages over the chain therefore remove the variational bias of ``E_p[H]``.
"""

import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from ..distributions import AbstractDistribution
from ..objectives import mean_and_stderr
from ..systems import AbstractSystem

#: A scalar function of one configuration, measured along the chains.
Observable = Callable[[Float[Array, "*shape"]], Float[Array, ""]]


class NeuralMCMCState(eqx.Module):
    """One chain: its configuration ``x``, ``ln w(x) = -beta H(x) - ln p(x)``, ``H(x)``
    and the observable at ``x`` (the energy again by default). Batched by ``jax.vmap``."""

    x: Float[Array, "*shape"]
    log_weight: Float[Array, ""]
    energy: Float[Array, ""]
    observable: Float[Array, ""]


def _weigh(system: AbstractSystem, beta: Float[Array, ""], observable: Observable | None,
           x: Array, log_prob: Array) -> NeuralMCMCState:
    energy = system.energy(x)
    obs = energy if observable is None else jnp.asarray(observable(x), energy.dtype)
    return NeuralMCMCState(x, -beta * energy - log_prob, energy, obs)


def _propose(model: AbstractDistribution, system: AbstractSystem, beta: Float[Array, ""],
             observable: Observable | None, key: PRNGKeyArray) -> NeuralMCMCState:
    x, log_prob = model.sample_and_log_prob(key=key)
    return _weigh(system, beta, observable, x, log_prob)


def _propose_batch(model: AbstractDistribution, system: AbstractSystem,
                   beta: Float[Array, ""], observable: Observable | None,
                   keys: Array) -> NeuralMCMCState:
    """:func:`_propose` for each key, the model sampled as one batch."""
    xs, log_probs = model.sample_and_log_prob_batch(keys=keys)
    return jax.vmap(lambda x, lp: _weigh(system, beta, observable, x, lp))(xs, log_probs)


def _accept(state: NeuralMCMCState, proposal: NeuralMCMCState, key: PRNGKeyArray
            ) -> tuple[NeuralMCMCState, Bool[Array, ""]]:
    log_u = jnp.log(jax.random.uniform(key, (), state.log_weight.dtype))
    accept = log_u < proposal.log_weight - state.log_weight
    new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), proposal, state)
    return new, accept


def neural_mcmc_init(model: AbstractDistribution, system: AbstractSystem,
                     beta: Float[Array, ""], *, key: PRNGKeyArray,
                     observable: Observable | None = None) -> NeuralMCMCState:
    """One chain started at a fresh model sample ``x ~ p``."""
    return _propose(model, system, beta, observable, key)


def neural_mcmc_step(model: AbstractDistribution, system: AbstractSystem,
                     beta: Float[Array, ""], state: NeuralMCMCState, *, key: PRNGKeyArray,
                     observable: Observable | None = None
                     ) -> tuple[NeuralMCMCState, Bool[Array, ""]]:
    """One independence-Metropolis step of one chain; returns the new state and acceptance.

    Draws ``x' ~ p`` and moves there with probability ``min(1, w(x') / w(x))``,
    ``ln w = -beta H - ln p``. ``observable`` must be the one the chain was started with.
    """
    k_propose, k_accept = jax.random.split(key)
    return _accept(state, _propose(model, system, beta, observable, k_propose), k_accept)


class NeuralMCMCResult(eqx.Module):
    """What :func:`neural_mcmc` measured.

    Traces cover every step (burn-in included), averaged over the chains; the estimates
    use the steps after burn-in. Error bars come from the spread of the per-chain time
    averages over the independent chains, so they include the autocorrelation of each
    chain. ``*_tau`` is the integrated autocorrelation time that spread implies,
    ``n_kept var(chain means) / var(samples)`` (1 for independent samples), a noisy
    diagnostic.
    """

    energy_mean: Float[Array, ""]
    energy_stderr: Float[Array, ""]
    energy_tau: Float[Array, ""]
    observable_mean: Float[Array, ""]
    observable_stderr: Float[Array, ""]
    observable_tau: Float[Array, ""]
    acceptance_rate: Float[Array, ""]
    chain_energy: Float[Array, " chains"]
    chain_observable: Float[Array, " chains"]
    chain_acceptance: Float[Array, " chains"]
    energy_trace: Float[Array, " steps"]
    observable_trace: Float[Array, " steps"]
    acceptance_trace: Float[Array, " steps"]
    state: NeuralMCMCState  # the chains' final states (batched), to continue sampling


def _tau(sums: Array, sums2: Array, n: int) -> Array:
    chain_means = sums / n
    total_var = jnp.mean(sums2) / n - jnp.mean(chain_means) ** 2
    between = jnp.var(chain_means, ddof=1)
    return jnp.where(total_var > 0, n * between / jnp.where(total_var > 0, total_var, 1.0),
                     jnp.nan)


@eqx.filter_jit
def _run(model, system, beta, key, observable, n_chains: int, n_steps: int, n_burn: int):
    # The chains' proposals are drawn as one batch (model.sample_and_log_prob_batch); each
    # chain's randomness is that of neural_mcmc_init / neural_mcmc_step with its own key.
    k_init, k_steps = jax.random.split(key)
    states = _propose_batch(model, system, beta, observable,
                            jax.random.split(k_init, n_chains))
    dtype = states.energy.dtype
    zeros = jnp.zeros((n_chains,), dtype)

    def body(carry, inputs):
        states, sums = carry
        t, key = inputs
        pairs = jax.vmap(jax.random.split)(jax.random.split(key, n_chains))
        proposals = _propose_batch(model, system, beta, observable, pairs[:, 0])
        states, accepted = jax.vmap(_accept)(states, proposals, pairs[:, 1])
        accepted = accepted.astype(dtype)
        keep = (t >= n_burn).astype(dtype)
        e, o = states.energy, states.observable
        sums = tuple(s + keep * v for s, v in zip(sums, (e, e * e, o, o * o, accepted),
                                                  strict=True))
        return (states, sums), (jnp.mean(e), jnp.mean(o), jnp.mean(accepted))

    (states, sums), traces = jax.lax.scan(
        body, (states, (zeros,) * 5), (jnp.arange(n_steps), jax.random.split(k_steps, n_steps)))
    e_sum, e2_sum, o_sum, o2_sum, acc_sum = sums
    n_kept = n_steps - n_burn
    e_mean, e_err = mean_and_stderr(e_sum / n_kept)
    o_mean, o_err = mean_and_stderr(o_sum / n_kept)
    return NeuralMCMCResult(
        energy_mean=e_mean, energy_stderr=e_err, energy_tau=_tau(e_sum, e2_sum, n_kept),
        observable_mean=o_mean, observable_stderr=o_err,
        observable_tau=_tau(o_sum, o2_sum, n_kept),
        acceptance_rate=jnp.mean(acc_sum) / n_kept,
        chain_energy=e_sum / n_kept, chain_observable=o_sum / n_kept,
        chain_acceptance=acc_sum / n_kept,
        energy_trace=traces[0], observable_trace=traces[1], acceptance_trace=traces[2],
        state=states)


def neural_mcmc(model: AbstractDistribution, system: AbstractSystem,
                beta: Float[ArrayLike, ""], *, key: PRNGKeyArray, n_chains: int, n_steps: int,
                n_burn: int | None = None, observable: Observable | None = None
                ) -> NeuralMCMCResult:
    """Boltzmann averages by independence Metropolis with ``model`` as the proposal.

    Runs ``n_chains`` independent chains (their proposals drawn as one batch) for
    ``n_steps`` steps (a ``lax.scan``), each started at a model sample; the first
    ``n_burn`` steps (default a tenth) are discarded. Each step costs one model sample
    with its ``ln p`` and one energy per chain. The chains sample ``e^{-beta H}/Z``
    exactly (detailed balance with an exact-density proposal); the efficiency is the
    acceptance rate. One compiled program; ``beta`` is a 0-d array, so changing it does
    not recompile (a new ``observable`` function does).

    Args:
        model: a normalized distribution with exact ``ln p`` (a VAN, a flow).
        system: the Hamiltonian ``H``.
        beta: inverse temperature (0-d).
        key: randomness (``jax.random.key``).
        n_chains: independent chains, at least 2 (error bars come from their spread).
        n_steps: steps per chain, burn-in included.
        n_burn: steps discarded at the start of each chain, ``0 <= n_burn < n_steps``.
        observable: a scalar function of one configuration to average besides the energy,
            e.g. ``lambda s: jnp.abs(jnp.mean(s))``; default the energy itself.

    Returns:
        A :class:`NeuralMCMCResult`. A warning is issued when no proposal was accepted
        after burn-in: the averages are then those of the model's initial samples, not of
        the Boltzmann distribution.

    Example:
        >>> result = neural_mcmc(model, Ising2D(4), 0.44, key=jax.random.key(0),
        ...                      n_chains=128, n_steps=1000,
        ...                      observable=lambda s: jnp.abs(jnp.mean(s)))
        >>> result.energy_mean, result.energy_stderr, result.acceptance_rate
    """
    if not isinstance(n_chains, int) or n_chains < 2:
        raise ValueError(f"neural_mcmc needs n_chains >= 2 independent chains (error bars come "
                         f"from their spread), got {n_chains!r}")
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    n_burn = n_steps // 10 if n_burn is None else n_burn
    if not isinstance(n_burn, int) or not 0 <= n_burn < n_steps:
        raise ValueError(f"n_burn must be an integer in [0, n_steps) = [0, {n_steps}), "
                         f"got {n_burn!r}")
    beta = jnp.asarray(beta, jnp.result_type(float))
    if beta.shape != ():
        raise ValueError(f"beta must be a scalar, got shape {beta.shape}")
    result = _run(model, system, beta, key, observable, n_chains, n_steps, n_burn)
    if float(result.acceptance_rate) == 0.0:
        warnings.warn("neural_mcmc accepted no proposal after burn-in: the averages are "
                      "those of the model's samples, not of the Boltzmann distribution; "
                      "train the model further or raise n_steps", RuntimeWarning,
                      stacklevel=2)
    return result
