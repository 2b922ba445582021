"""Free-energy objectives: the loss whose gradient is the gradient of ``F[p]``."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..distributions import AbstractDistribution
from ..systems import AbstractSystem
from ._stats import FreeEnergyStats


class AbstractFreeEnergy(eqx.Module):
    """A stochastic estimator of ``F[p] = E_p[H + T ln p]`` and of its gradient.

    ``loss(model, system, beta, state, keys=...)`` returns ``(loss, (stats, state))``:
    ``jax.grad`` of ``loss`` with respect to the model's parameters is an unbiased
    estimate of ``grad F``, and ``stats`` are the batch estimates of F, E, S. ``keys``
    holds one key per sample (the engine shards them over devices, so each sample's
    randomness is the same on any number of devices). ``state`` carries what an estimator
    keeps between steps (Metropolis walkers in the quantum objectives); ``init`` makes it.
    """

    def init(self, model: AbstractDistribution, system: AbstractSystem, *,
             key: PRNGKeyArray, batch: int) -> PyTree:
        """The estimator's state before the first step (``None`` when it keeps none)."""
        return None

    @abc.abstractmethod
    def loss(self, model: AbstractDistribution, system: AbstractSystem,
             beta: Float[Array, ""], state: PyTree, *, keys: PRNGKeyArray
             ) -> tuple[Float[Array, ""], tuple[FreeEnergyStats, PyTree]]:
        """Surrogate loss whose gradient estimates ``grad F``, with statistics and state."""


class ScoreFunctionFreeEnergy(AbstractFreeEnergy):
    """Score-function (REINFORCE) estimator for discrete or black-box models.

    ``grad F = E_p[(f - b) grad ln p]`` with ``f = H + T ln p`` and the baseline ``b`` the
    batch mean of ``f``. The surrogate loss is ``mean(stop_grad(f - b) * ln p)``;
    samples are drawn without gradient, then ``ln p`` is recomputed in one teacher-forced
    pass to carry the gradient.
    """

    def loss(self, model, system, beta, state, *, keys):
        samples, _ = jax.vmap(lambda k: model.sample_and_log_prob(key=k))(keys)
        samples = jax.lax.stop_gradient(samples)
        log_prob = jax.vmap(model.log_prob)(samples)
        energy = jax.vmap(system.energy)(samples)
        f = jax.lax.stop_gradient(energy + log_prob / beta)
        surrogate = jnp.mean((f - jnp.mean(f)) * log_prob)
        stats = FreeEnergyStats.from_samples(energy, jax.lax.stop_gradient(log_prob), beta)
        return surrogate, (stats, state)
