"""Variational autoregressive networks (VAN) over +-1 spins, and Z2 symmetrisation."""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..nn import AbstractMaskedChain
from ._base import AbstractDistribution, float_dtype


def _spin(u: Array, logit: Array) -> Array:
    """+1 with probability sigmoid(logit), else -1, from a uniform ``u``."""
    return jnp.where(u < jax.nn.sigmoid(logit), 1.0, -1.0).astype(logit.dtype)


class AutoregressiveSpins(AbstractDistribution):
    """``p(s) = prod_t p(s_t | s_<t)``, Bernoulli conditionals from a masked network.

    The VAN of Wu, Wang & Zhang (PRL 122, 080602 (2019)). ``ln p`` of a given configuration
    is one teacher-forced pass of ``net``. ``sample_and_log_prob`` uses the cached sampler
    (about one pass in total); :meth:`naive_sample_and_log_prob` is the reference sampler
    (one full pass per site). Both consume the key the same way, so they return the same
    configuration for the same key.

    Example:
        >>> from thermax.nn import MADE
        >>> p = AutoregressiveSpins(MADE((3, 3), key=jax.random.key(0)))
        >>> s, lp = p.sample_and_log_prob(key=jax.random.key(1))
    """

    net: AbstractMaskedChain
    kind = "spins"

    def __init__(self, net: AbstractMaskedChain):
        self.net = net

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one configuration: the lattice shape of the network."""
        return self.net.shape

    @property
    def n(self) -> int:
        """Number of spins."""
        return math.prod(self.shape)

    def _log_prob(self, x):
        logits = self.net.logits(x)
        return jnp.sum(jax.nn.log_sigmoid(x * logits))

    def _uniforms(self, key: PRNGKeyArray) -> Array:
        return jax.random.uniform(key, (self.n,), float_dtype(self.net))

    def _sample_and_log_prob(self, key):
        dtype = float_dtype(self.net)

        block = self.net.block
        n_blocks = self.n // block

        def site(cache, inputs):
            t, u = inputs
            logit, cache = self.net.logit_at(cache, t)
            spin = _spin(u, logit)
            return self.net.record(cache, t, spin), (spin, jax.nn.log_sigmoid(spin * logit))

        def block_body(cache, inputs):
            ts, us = inputs
            cache, out = jax.lax.scan(site, self.net.begin_block(cache, ts[0]), (ts, us))
            return self.net.end_block(cache, ts[0]), out

        sites = jnp.arange(self.n).reshape(n_blocks, block)
        uniforms = self._uniforms(key).reshape(n_blocks, block)
        _, (spins, lps) = jax.lax.scan(block_body, self.net.init_cache(dtype), (sites, uniforms))
        return spins.reshape(self.shape), jnp.sum(lps)

    def naive_sample_and_log_prob(
        self, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """Reference sampler: one full teacher-forced pass per site (``n`` passes)."""
        dtype = float_dtype(self.net)

        def body(flat, inputs):
            t, u = inputs
            logit = self.net.logits(flat.reshape(self.shape)).reshape(-1)[t]
            spin = _spin(u, logit)
            return flat.at[t].set(spin), jax.nn.log_sigmoid(spin * logit)

        flat, lps = jax.lax.scan(body, jnp.zeros((self.n,), dtype),
                                 (jnp.arange(self.n), self._uniforms(key)))
        return flat.reshape(self.shape), jnp.sum(lps)


class Z2Symmetrized(AbstractDistribution):
    """``p_sym(x) = (p(x) + p(-x)) / 2`` for a Hamiltonian with ``H(x) = H(-x)``.

    Samples ``x ~ p`` and flips the whole configuration with probability 1/2, so
    ``p_sym`` is normalized and exactly symmetric. ``ln p_sym`` costs one more pass of the
    base model (for a flow, one inverse pass). Works for spins and for real fields. The
    batch methods use the base's batch methods (keys split as alone).
    """

    base: AbstractDistribution

    def __init__(self, base: AbstractDistribution):
        if base.kind not in ("spins", "field"):
            raise TypeError("Z2Symmetrized needs a spin or field distribution (x -> -x), "
                            f"got kind {base.kind!r}")
        self.base = base

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one configuration, that of the base distribution."""
        return self.base.shape

    @property
    def kind(self) -> str:
        """Kind of configuration, that of the base distribution."""
        return self.base.kind

    def _log_prob(self, x):
        return jnp.logaddexp(self.base.log_prob(x), self.base.log_prob(-x)) - jnp.log(2.0)

    def _sample_and_log_prob(self, key):
        k_sample, k_flip = jax.random.split(key)
        x, lp = self.base.sample_and_log_prob(key=k_sample)
        flip = jax.random.bernoulli(k_flip)
        lp_other = self.base.log_prob(-x)
        x_out = jnp.where(flip, -x, x)
        return x_out, jnp.logaddexp(lp, lp_other) - jnp.log(2.0)

    def _log_prob_batch(self, xs):
        return (jnp.logaddexp(self.base.log_prob_batch(xs), self.base.log_prob_batch(-xs))
                - jnp.log(2.0))

    def _sample_and_log_prob_batch(self, keys):
        pairs = jax.vmap(jax.random.split)(keys)
        xs, lp = self.base.sample_and_log_prob_batch(keys=pairs[:, 0])
        flip = jax.vmap(jax.random.bernoulli)(pairs[:, 1])
        lp_other = self.base.log_prob_batch(-xs)
        xs_out = jnp.where(flip.reshape(flip.shape + (1,) * (xs.ndim - 1)), -xs, xs)
        return xs_out, jnp.logaddexp(lp, lp_other) - jnp.log(2.0)
