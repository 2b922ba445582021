"""The pathwise (reparametrisation) estimator of ``grad F``, with "sticking the landing"."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Key, PyTree

from ..distributions import AbstractDistribution
from ..systems import AbstractSystem
from ._chunks import accumulate_grad, from_chunks, to_chunks
from ._free_energy import AbstractFreeEnergy
from ._stats import FreeEnergyStats


def stop_gradient_parameters(model: PyTree) -> PyTree:
    """``model`` with ``jax.lax.stop_gradient`` on every inexact array leaf.

    The result computes the same values, but no gradient flows into the model's
    parameters through it; gradients still flow through the *arguments* it is called on.
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return eqx.combine(jax.lax.stop_gradient(params), static)


class PathwiseFreeEnergy(AbstractFreeEnergy):
    """Pathwise (reparametrisation) estimator for flows ``x = g_theta(z)``, ``z ~ N(0, I)``.

    The loss is the plain batch mean ``mean(H(x) + T ln p(x))`` with samples that keep
    their dependence on the parameters, so its gradient is

        grad F = E_z[ grad_theta (H(g_theta(z)) + T ln p_theta(g_theta(z))) ],

    unbiased for any batch size (no baseline). It needs continuous configurations and a
    differentiable ``H``; for spins (discrete ``x``) use :class:`ScoreFunctionFreeEnergy`.

    The total derivative of ``ln p_theta(x(theta))`` has two parts: the path term
    ``d ln p / dx . dx/dtheta`` and the score term ``d ln p / dtheta`` at fixed ``x``,
    whose expectation is zero (``E_p[grad ln p] = 0``) but whose noise is not. With
    ``stick_the_landing=True`` (Roeder, Wu & Duvenaud, arXiv 1703.09194) the score term is
    dropped: ``ln p`` is re-evaluated at the sampled ``x`` by a copy of the model whose
    parameters are held fixed (``jax.lax.stop_gradient``), while ``x`` still carries
    its gradient. The estimate stays unbiased, and at the optimum ``p = e^{-beta H}/Z``,
    where ``H + T ln p = -T ln Z`` is constant in ``x``, every sample's gradient is
    exactly zero: zero variance at the optimum. It costs one extra inverse pass of the
    flow (``log_prob`` of the samples).

    Loss values are identical for both variants; the statistics are computed from the
    samples' energies and ``ln p`` with gradients stopped.

    Example:
        >>> flow = Transformed(StandardNormal((2,)), Affine(2))
        >>> loss, (stats, _) = PathwiseFreeEnergy(stick_the_landing=True).loss(
        ...     flow, system, jnp.asarray(1.0), None, keys=jax.random.split(key, 256))
    """

    stick_the_landing: bool = eqx.field(default=False, static=True)
    supports_chunks: ClassVar[bool] = True

    def loss(self, model: AbstractDistribution, system: AbstractSystem,
             beta: Float[Array, ""], state: PyTree, *, keys: Key[Array, " batch"]
             ) -> tuple[Float[Array, ""], tuple[FreeEnergyStats, PyTree]]:
        self._check_kinds(model, system)
        x, log_prob = model.sample_and_log_prob_batch(keys=keys)
        if self.stick_the_landing:
            log_prob = stop_gradient_parameters(model).log_prob_batch(x)
        energy = jax.vmap(system.energy)(x)
        loss = jnp.mean(energy + log_prob / beta)
        stats = FreeEnergyStats.from_samples(jax.lax.stop_gradient(energy),
                                             jax.lax.stop_gradient(log_prob), beta)
        return loss, (stats, state)

    @staticmethod
    def _check_kinds(model: AbstractDistribution, system: AbstractSystem) -> None:
        if model.kind == "spins" or system.kind == "spins":
            raise TypeError(
                "PathwiseFreeEnergy differentiates through the samples, which needs "
                f"continuous configurations; got a model of kind {model.kind!r} and a system "
                f"of kind {system.kind!r}. For discrete spins use ScoreFunctionFreeEnergy.")

    def _chunked(self, params, static, system, beta, state, *, keys, chunk_size, shard):
        batch = keys.shape[0]

        def chunk_loss(p, k):
            model = eqx.combine(p, static)
            self._check_kinds(model, system)
            x, log_prob = model.sample_and_log_prob_batch(keys=shard(k))
            if self.stick_the_landing:
                log_prob = stop_gradient_parameters(model).log_prob_batch(x)
            energy = jax.vmap(system.energy)(x)
            aux = (jax.lax.stop_gradient(energy), jax.lax.stop_gradient(log_prob))
            return jnp.sum(energy + log_prob / beta) / batch, aux

        grads, (energy, log_prob) = accumulate_grad(chunk_loss, params,
                                                    to_chunks(keys, chunk_size))
        stats = FreeEnergyStats.from_samples(from_chunks(energy), from_chunks(log_prob), beta)
        return grads, (stats, state)
