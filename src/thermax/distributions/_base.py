"""The abstract normalized distribution every sampler of thermax implements."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Key, PRNGKeyArray

from .._checks import check_batch, check_shape


class AbstractDistribution(eqx.Module):
    """A normalized probability distribution with exact log-probability and direct sampling.

    It acts on **one** configuration of shape ``shape``; :meth:`log_prob_batch` and
    :meth:`sample_and_log_prob_batch` act on a batch (a leading axis).
    The variational free energy ``F = E_p[H + T ln p]`` needs both methods: samples to
    estimate the expectation and the exact, normalized ``ln p`` of each sample.

    Subclasses set the field ``shape`` and implement the private hooks
    ``_log_prob(x)`` and ``_sample_and_log_prob(key)``; the public methods check
    arguments once, here. The batch hooks ``_log_prob_batch(xs)`` and
    ``_sample_and_log_prob_batch(keys)`` default to ``jax.vmap`` of the
    per-configuration methods; a distribution overrides them where a whole-batch pass is
    cheaper (a flow hands the batch to its bijection's batch methods), returning what the
    default returns.

    ``kind`` names what a configuration is: ``"spins"`` (entries +-1), ``"field"``
    (real values on a lattice) or ``"particles"`` (an ``(n, dim)`` array of positions).
    """

    shape: eqx.AbstractVar[tuple[int, ...]]
    kind: eqx.AbstractVar[str]

    def log_prob(self, x: Float[Array, "*shape"]) -> Float[Array, ""]:
        """Exact normalized ``ln p(x)`` of one configuration."""
        check_shape(x, self.shape, f"{type(self).__name__}.log_prob")
        return self._log_prob(x)

    def sample_and_log_prob(
        self, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """One configuration ``x ~ p`` and its exact ``ln p(x)``."""
        return self._sample_and_log_prob(key)

    def sample(self, *, key: PRNGKeyArray) -> Float[Array, "*shape"]:
        """One configuration ``x ~ p``."""
        return self.sample_and_log_prob(key=key)[0]

    def log_prob_batch(self, xs: Float[Array, " batch *shape"]) -> Float[Array, " batch"]:
        """:meth:`log_prob` of each configuration of ``xs`` (equals ``jax.vmap`` of it)."""
        check_batch(xs, self.shape, None, f"{type(self).__name__}.log_prob_batch")
        return self._log_prob_batch(xs)

    def sample_and_log_prob_batch(
        self, *, keys: Key[Array, " batch"]
    ) -> tuple[Float[Array, " batch *shape"], Float[Array, " batch"]]:
        """One configuration per key and its ``ln p``: configuration ``i`` is
        ``sample_and_log_prob(key=keys[i])`` (equals ``jax.vmap`` of it).

        Example:
            >>> xs, lps = model.sample_and_log_prob_batch(
            ...     keys=jax.random.split(jax.random.key(0), 256))
        """
        check_batch(None, self.shape, keys, f"{type(self).__name__}.sample_and_log_prob_batch")
        return self._sample_and_log_prob_batch(keys)

    def _log_prob_batch(self, xs: Array) -> Array:
        return jax.vmap(self.log_prob)(xs)

    def _sample_and_log_prob_batch(self, keys: Array) -> tuple[Array, Array]:
        return jax.vmap(lambda k: self.sample_and_log_prob(key=k))(keys)

    @abc.abstractmethod
    def _log_prob(self, x: Array) -> Array:
        raise NotImplementedError

    @abc.abstractmethod
    def _sample_and_log_prob(self, key: PRNGKeyArray) -> tuple[Array, Array]:
        raise NotImplementedError


def sample_batch(
    dist: AbstractDistribution, *, key: PRNGKeyArray, batch: int
) -> tuple[Array, Float[Array, " batch"]]:
    """Draw ``batch`` independent configurations and their ``ln p``
    (:meth:`~AbstractDistribution.sample_and_log_prob_batch` of ``split(key, batch)``)."""
    return dist.sample_and_log_prob_batch(keys=jax.random.split(key, batch))


def float_dtype(tree) -> jnp.dtype:
    """The floating dtype of the first floating array leaf of ``tree`` (default float32)."""
    for leaf in jax.tree.leaves(tree):
        if eqx.is_inexact_array(leaf):
            return leaf.dtype
    return jnp.result_type(float)
