"""Free-energy objectives: the loss whose gradient is the gradient of ``F[p]``."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Key, PRNGKeyArray, PyTree

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
             beta: Float[Array, ""], state: PyTree, *, keys: Key[Array, " batch"]
             ) -> tuple[Float[Array, ""], tuple[FreeEnergyStats, PyTree]]:
        """Surrogate loss whose gradient estimates ``grad F``, with statistics and state."""


class ScoreFunctionFreeEnergy(AbstractFreeEnergy):
    """Score-function (REINFORCE) estimator for discrete or black-box models.

    ``grad F = E_p[(f - b) grad ln p]`` with ``f = H + T ln p``. Each sample's baseline is
    the mean of ``f`` over the *other* samples of the batch (leave-one-out), which keeps
    the estimate exactly unbiased; the plain batch mean including the sample itself would
    shrink it by ``(B-1)/B``. Since ``f_i - mean_{j != i} f_j = B/(B-1) (f_i - mean f)``,
    the surrogate loss is ``B/(B-1) mean(stop_grad(f - mean f) * ln p)``. Samples are drawn
    without gradient, then ``ln p`` is recomputed in one teacher-forced pass to carry the
    gradient.
    """

    def loss(self, model, system, beta, state, *, keys):
        samples, _ = model.sample_and_log_prob_batch(keys=keys)
        samples = jax.lax.stop_gradient(samples)
        log_prob = model.log_prob_batch(samples)
        energy = jax.vmap(system.energy)(samples)
        f = jax.lax.stop_gradient(energy + log_prob / beta)
        batch = f.shape[0]
        if batch < 2:
            raise ValueError("the score-function estimator needs a batch of at least 2 "
                             "samples (for the leave-one-out baseline)")
        surrogate = batch / (batch - 1) * jnp.mean((f - jnp.mean(f)) * log_prob)
        stats = FreeEnergyStats.from_samples(energy, jax.lax.stop_gradient(log_prob), beta)
        return surrogate, (stats, state)
