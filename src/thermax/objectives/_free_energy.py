"""Free-energy objectives: the loss whose gradient is the gradient of ``F[p]``."""

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Key, PRNGKeyArray, PyTree

from ..distributions import AbstractDistribution
from ..systems import AbstractSystem
from ._chunks import accumulate_grad, map_chunks, to_chunks
from ._stats import FreeEnergyStats


def _identity(x):
    return x


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

    #: whether :meth:`grad_and_stats` can work in chunks (``chunk_size``)
    supports_chunks: ClassVar[bool] = False

    def grad_and_stats(self, params: PyTree, static: PyTree, system: AbstractSystem,
                       beta: Float[Array, ""], state: PyTree, *, keys: Key[Array, " batch"],
                       chunk_size: int | None = None,
                       shard: Callable[[Array], Array] = _identity
                       ) -> tuple[PyTree, tuple[FreeEnergyStats, PyTree]]:
        """The gradient of :meth:`loss` with respect to ``params`` (the inexact arrays of
        the model, ``eqx.combine(params, static)`` the model), with statistics and state.

        With ``chunk_size`` (a divisor of the batch) samples are drawn, evaluated and
        differentiated ``chunk_size`` at a time and the gradients summed, so memory is
        bounded by a chunk; the result equals the unchunked one up to the order of
        floating-point sums. ``shard`` constrains a chunk's leading axis to the device
        mesh (the trainer passes its own).
        """
        if chunk_size is None or chunk_size >= keys.shape[0]:
            def loss_fn(p):
                return self.loss(eqx.combine(p, static), system, beta, state, keys=keys)

            (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            return grads, aux
        if not self.supports_chunks:
            raise NotImplementedError(f"{type(self).__name__} does not work in chunks; use "
                                      "chunk_size=None")
        return self._chunked(params, static, system, beta, state, keys=keys,
                             chunk_size=chunk_size, shard=shard)

    def _chunked(self, params, static, system, beta, state, *, keys, chunk_size, shard):
        raise NotImplementedError


class ScoreFunctionFreeEnergy(AbstractFreeEnergy):
    """Score-function (REINFORCE) estimator for discrete or black-box models.

    ``grad F = E_p[(f - b) grad ln p]`` with ``f = H + T ln p``. Each sample's baseline is
    the mean of ``f`` over the *other* samples of the batch (leave-one-out), which keeps
    the estimate exactly unbiased; the plain batch mean including the sample itself would
    shrink it by ``(B-1)/B``. Since ``f_i - mean_{j != i} f_j = B/(B-1) (f_i - mean f)``,
    the surrogate loss is ``B/(B-1) mean(stop_grad(f - mean f) * ln p)``. Samples are drawn
    without gradient, then ``ln p`` is recomputed in one teacher-forced pass to carry the
    gradient. Works in chunks (:meth:`grad_and_stats`): a first pass draws the samples and
    their ``f`` chunk by chunk without gradients, the baseline is the mean over the whole
    batch, and a second pass accumulates the gradient of ``ln p`` chunk by chunk.
    """

    supports_chunks: ClassVar[bool] = True

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

    def _chunked(self, params, static, system, beta, state, *, keys, chunk_size, shard):
        batch = keys.shape[0]
        if batch < 2:
            raise ValueError("the score-function estimator needs a batch of at least 2 "
                             "samples (for the leave-one-out baseline)")
        model = eqx.combine(jax.lax.stop_gradient(params), static)

        def draw(k):
            x, log_prob = model.sample_and_log_prob_batch(keys=shard(k))
            return x, log_prob, jax.vmap(system.energy)(x)

        xs, log_prob, energy = map_chunks(draw, keys, chunk_size)
        f = energy + log_prob / beta
        # the surrogate B/(B-1) mean((f - mean f) ln p) as a sum of per-sample weights
        weights = (f - jnp.mean(f)) / (batch - 1)

        def chunk_loss(p, chunk):
            x, w = chunk
            return jnp.sum(w * eqx.combine(p, static).log_prob_batch(shard(x))), None

        grads, _ = accumulate_grad(chunk_loss, params, to_chunks((xs, weights), chunk_size))
        stats = FreeEnergyStats.from_samples(energy, log_prob, beta)
        return grads, (stats, state)
