"""Autoregressive networks over +-1 spins: MADE and PixelCNN.

Both are a chain of masked ops ``first -> [block]* -> final`` with PReLU activations:

* ``first``: exclusive masked op, 1 -> width channels (so site ``t`` sees spins ``< t``);
* a block: ``h <- M(prelu(h))`` or, residual, ``h <- h + M(prelu(h))``;
* ``final``: ``logit = M(prelu(h))``, width -> 1 channel.

The output at each site is the logit of ``p(s_t = +1 | s_<t)``. :class:`AbstractMaskedChain`
implements the teacher-forced pass and the cached one-site pass once; :class:`MADE` and
:class:`PixelCNN` only choose the masked op (dense over a site order, or a masked 2D
convolution).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._masked import AbstractMaskedOp, MaskedConv2d, MaskedDense, n_sites, prelu


class AbstractMaskedChain(eqx.Module):
    """An autoregressive logit network built from masked ops (see module docstring).

    ``logits(x)`` is one teacher-forced pass. Cached sampling uses
    ``init_cache`` / ``logit_at`` / ``record``: ``logit_at(cache, t)`` computes every layer
    at site ``t`` only, from buffers of what earlier sites produced, so drawing a whole
    configuration costs about one full pass.
    """

    shape: eqx.AbstractVar[tuple[int, ...]]
    ops: eqx.AbstractVar[tuple[AbstractMaskedOp, ...]]
    slopes: eqx.AbstractVar[tuple[Float[Array, " width"], ...]]
    residual: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def _site_layout(self, x: Array) -> Array:
        """Spins ``x`` as per-site features ``(*sites, 1)`` for the first op."""

    def logits(self, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """Logits of ``p(s_t=+1 | s_<t)`` at every site, from the true spins ``x``."""
        h = self.ops[0](self._site_layout(x))
        for op, slope in zip(self.ops[1:-1], self.slopes[:-1], strict=True):
            out = op(prelu(h, slope))
            h = h + out if self.residual else out
        if len(self.ops) > 1:
            h = self.ops[-1](prelu(h, self.slopes[-1]))
        return h.reshape(self.shape)

    def init_cache(self, dtype) -> tuple[PyTree, ...]:
        """Empty caches, one per masked op."""
        return tuple(op.empty_cache(dtype) for op in self.ops)

    def logit_at(self, cache: tuple[PyTree, ...], t: Array) -> tuple[Array, tuple[PyTree, ...]]:
        """The logit of site ``t`` given that spins ``< t`` are recorded in ``cache``."""
        caches = list(cache)
        h = self.ops[0].at_site(caches[0], t)
        n_ops = len(self.ops)
        for i in range(1, n_ops):
            g = prelu(h, self.slopes[i - 1])
            caches[i] = self.ops[i].write(caches[i], t, g)
            out = self.ops[i].at_site(caches[i], t)
            h = h + out if (self.residual and i < n_ops - 1) else out
        return h[0], tuple(caches)

    @property
    def block(self) -> int:
        """Sites are sampled in blocks of this size (the ops agree on it)."""
        return max(op.block for op in self.ops)

    def begin_block(self, cache: tuple[PyTree, ...], start: Array) -> tuple[PyTree, ...]:
        """Prepare every op's cache for the block of sites starting at ``start``."""
        return tuple(op.begin_block(c, start) for op, c in zip(self.ops, cache, strict=True))

    def end_block(self, cache: tuple[PyTree, ...], start: Array) -> tuple[PyTree, ...]:
        """Commit every op's cache after the block of sites starting at ``start``."""
        return tuple(op.end_block(c, start) for op, c in zip(self.ops, cache, strict=True))

    def record(self, cache: tuple[PyTree, ...], t: Array, spin: Array) -> tuple[PyTree, ...]:
        """Record the sampled spin of site ``t`` as input of the first op."""
        return (self.ops[0].write(cache[0], t, spin[None]),) + tuple(cache[1:])


def _chain_channels(depth: int, width: int) -> list[tuple[int, int]]:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if depth == 1:
        return [(1, 1)]
    return [(1, width)] + [(width, width)] * (depth - 2) + [(width, 1)]


def _slopes(depth: int, width: int, dtype) -> tuple[Array, ...]:
    return tuple(jnp.full((width,), 0.5, dtype) for _ in range(depth - 1))


class MADE(AbstractMaskedChain):
    """MADE (Germain et al. 2015) over the sites of any graph, in raster order.

    ``width`` is the number of hidden channels per site (hidden size ``width * n``), as in
    the VAN reference code. ``depth`` counts masked layers.

    Example:
        >>> net = MADE((4, 4), depth=3, width=4, key=jax.random.key(0))
        >>> net.logits(jnp.ones((4, 4))).shape
        (4, 4)
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    ops: tuple[MaskedDense, ...]
    slopes: tuple[Array, ...]
    residual: bool = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, depth: int = 3, width: int = 4,
                 residual: bool = False, key: PRNGKeyArray, dtype=None):
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.shape, self.residual = tuple(shape), residual
        n = n_sites(self.shape)
        channels = _chain_channels(depth, width)
        keys = jax.random.split(key, len(channels))
        self.ops = tuple(
            MaskedDense(n, c_in, c_out, exclusive=(i == 0), key=k, dtype=dtype)
            for i, ((c_in, c_out), k) in enumerate(zip(channels, keys, strict=True)))
        self.slopes = _slopes(depth, width, dtype)

    def _site_layout(self, x):
        return x.reshape(-1, 1)


class PixelCNN(AbstractMaskedChain):
    """PixelCNN (van den Oord et al. 2016) on an ``L x L`` lattice with masked convolutions.

    Kernel ``(2 half_kernel + 1)^2``; ``width`` channels; ``depth`` masked convolutions;
    optional residual blocks. ``dilation`` applies to the middle convolutions (the first
    and the last are undilated), so with depth 3, half kernel 3 and dilation 3 each site
    sees the 15 rows above it: all of a 16 x 16 lattice.

    Example:
        >>> net = PixelCNN(4, depth=3, width=8, half_kernel=1, key=jax.random.key(0))
        >>> net.logits(jnp.ones((4, 4))).shape
        (4, 4)
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    ops: tuple[MaskedConv2d, ...]
    slopes: tuple[Array, ...]
    residual: bool = eqx.field(static=True)

    def __init__(self, size: int, *, depth: int = 3, width: int = 16, half_kernel: int = 3,
                 residual: bool = False, dilation: int = 1, key: PRNGKeyArray, dtype=None):
        if half_kernel < 1:
            raise ValueError(f"half_kernel must be >= 1, got {half_kernel}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.shape, self.residual = (size, size), residual
        channels = _chain_channels(depth, width)
        keys = jax.random.split(key, len(channels))
        last = len(channels) - 1
        self.ops = tuple(
            MaskedConv2d(size, half_kernel, c_in, c_out, exclusive=(i == 0), key=k, dtype=dtype,
                         dilation=dilation if 0 < i < last else 1)
            for i, ((c_in, c_out), k) in enumerate(zip(channels, keys, strict=True)))
        self.slopes = _slopes(depth, width, dtype)

    def _site_layout(self, x):
        return x[..., None]
