"""Masked linear maps for autoregressive networks, with a teacher-forced full pass and a
one-site pass for cached sampling.

A masked op maps per-site features ``g`` of shape ``(*sites, c_in)`` to ``(*sites, c_out)``
such that the output at site ``t`` (raster order) depends only on inputs at sites
``< t`` (``exclusive=True``) or ``<= t`` (``exclusive=False``).

For cached sampling the op also computes the output at one site ``t`` from a *buffer*
holding the inputs written so far. Buffers start at zero and sites are written in raster
order, so every input a mask would hide is still zero when site ``t`` is computed; the
one-site pass therefore needs no mask and costs ``1/n`` of the full pass.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree


class AbstractMaskedOp(eqx.Module):
    """A masked linear map over sites with a full and a one-site (cached) evaluation."""

    c_in: eqx.AbstractVar[int]
    c_out: eqx.AbstractVar[int]
    exclusive: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def __call__(self, g: Float[Array, "*sites c_in"]) -> Float[Array, "*sites c_out"]:
        """Teacher-forced pass over all sites."""

    @abc.abstractmethod
    def empty_cache(self, dtype) -> PyTree:
        """The cache of cached sampling: a zero buffer of inputs (and partial sums)."""

    @abc.abstractmethod
    def write(self, cache: PyTree, t: Array, g: Float[Array, " c_in"]) -> PyTree:
        """Store the input features of site ``t`` in the cache."""

    @abc.abstractmethod
    def at_site(self, cache: PyTree, t: Array) -> Float[Array, " c_out"]:
        """The output at site ``t`` from the inputs written so far."""

    def begin_block(self, cache: PyTree, start: Array) -> PyTree:
        """Called before the sites of each block are sampled (see ``block``)."""
        return cache

    def end_block(self, cache: PyTree, start: Array) -> PyTree:
        """Called after the sites of each block are sampled."""
        return cache

    @property
    def block(self) -> int:
        """Cached sampling visits sites in blocks of this many (a divisor of the sites)."""
        return 1


def _masked_init(key: PRNGKeyArray, shape: tuple[int, ...], mask: Array, dtype) -> Array:
    """Normal init scaled by the mean unmasked fan-in, zero where masked."""
    fan_in = jnp.sum(mask) / mask.shape[-1]
    std = 1.0 / jnp.sqrt(jnp.maximum(fan_in, 1.0))
    return (std * jax.random.normal(key, shape, dtype)) * mask.astype(dtype)


class MaskedDense(AbstractMaskedOp):
    """MADE layer over ``n`` sites in a fixed order, ``c_in -> c_out`` channels per site.

    ``out[i, b] = sum_{j<i (or <=i), a} W[j, a, i, b] g[j, a] + bias[i, b]``. The weight is
    stored input-major, so both the full pass and the block sums below are plain
    ``inputs @ weight`` matmuls with no transposes of the (batched) inputs.
    The full pass is one dense matmul of size ``(n c_out) x (n c_in)``.

    Cached sampling goes in blocks of ``block`` sites: before a block one matmul gives
    every site of the block its sum over the sites before the block; within the block a
    site adds the sum over the earlier sites of its own block, kept in a small local
    buffer that is committed when the block ends. The big input buffer is read ``n/block``
    times instead of ``n`` times and never touched inside the per-site loop, which is what
    makes cached sampling cost about one full pass (a one-site matvec with ``c_out``
    outputs is memory bound).
    """

    weight: Float[Array, "n c_in n c_out"]
    bias: Float[Array, "n c_out"]
    n: int = eqx.field(static=True)
    c_in: int = eqx.field(static=True)
    c_out: int = eqx.field(static=True)
    exclusive: bool = eqx.field(static=True)
    block_size: int = eqx.field(static=True)

    def __init__(self, n: int, c_in: int, c_out: int, *, exclusive: bool, key: PRNGKeyArray,
                 dtype=None, block: int | None = None):
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.n, self.c_in, self.c_out, self.exclusive = n, c_in, c_out, exclusive
        self.block_size = _divisor_near(n, int(math.isqrt(n)) if block is None else block)
        mask = self.mask()
        self.weight = _masked_init(key, (n, c_in, n, c_out), mask, dtype)
        self.bias = jnp.zeros((n, c_out), dtype)

    def mask(self) -> Array:
        """Which weights are used: ``mask[j, i]`` is true when input site ``j`` may feed
        output site ``i`` (``j < i``, or ``j <= i`` when not exclusive)."""
        sites = jnp.arange(self.n)
        # allowed[j, i]: input site j may feed output site i
        allowed = sites[:, None] < sites[None, :] if self.exclusive else (
            sites[:, None] <= sites[None, :])
        return jnp.broadcast_to(allowed[:, None, :, None],
                                (self.n, self.c_in, self.n, self.c_out))

    def __call__(self, g):
        w = self.weight * self.mask().astype(self.weight.dtype)
        return jnp.einsum("ja,jaib->ib", g, w) + self.bias

    @property
    def block(self) -> int:
        return self.block_size

    def empty_cache(self, dtype):
        # (all inputs so far, inputs of the current block, sums over sites before the block)
        return (jnp.zeros((self.n, self.c_in), dtype), jnp.zeros((self.block, self.c_in), dtype),
                jnp.zeros((self.block, self.c_out), dtype))

    def begin_block(self, cache, start):
        buffer, local, _ = cache
        zero = jnp.zeros_like(start)
        cols = jax.lax.dynamic_slice(self.weight, (zero, zero, start, zero),
                                     (self.n, self.c_in, self.block, self.c_out))
        return buffer, jnp.zeros_like(local), jnp.einsum("ja,jaib->ib", buffer, cols)

    def write(self, cache, t, g):
        buffer, local, prefix = cache
        return buffer, local.at[t % self.block].set(g), prefix

    def at_site(self, cache, t):
        _, local, prefix = cache
        zero = jnp.zeros_like(t)
        w_in = jax.lax.dynamic_slice(self.weight, (t - t % self.block, zero, t, zero),
                                     (self.block, self.c_in, 1, self.c_out))[:, :, 0]
        return prefix[t % self.block] + jnp.einsum("ja,jab->b", local, w_in) + self.bias[t]

    def end_block(self, cache, start):
        buffer, local, prefix = cache
        return jax.lax.dynamic_update_slice(buffer, local, (start, jnp.zeros_like(start))), \
            local, prefix


def _divisor_near(n: int, target: int) -> int:
    """The largest divisor of ``n`` not above ``max(target, 1)``."""
    target = max(1, min(target, n))
    return max(d for d in range(1, target + 1) if n % d == 0)


class MaskedConv2d(AbstractMaskedOp):
    """PixelCNN masked convolution on an ``L x L`` lattice, kernel ``(2k+1) x (2k+1)``.

    The mask keeps the rows above the centre and the centre row left of the centre (and
    the centre unless exclusive). Only the ``(k+1) x (2k+1)`` upper part of the kernel can
    be non-zero, so only that part is stored and convolved (padding ``k`` above, none
    below): about half the work of a masked full kernel. Zero padding (the VAN convention,
    also for periodic lattices: the network need not share the lattice's symmetry for
    ``ln p`` to be exact).

    ``dilation`` spaces the kernel taps ``dilation`` sites apart, so a layer reaches
    ``k * dilation`` rows up at the same cost: a few dilated layers let every site see the
    whole lattice, including the rows it is coupled to through the periodic boundary.
    """

    kernel: Float[Array, "kh kw c_in c_out"]
    bias: Float[Array, " c_out"]
    size: int = eqx.field(static=True)
    half_kernel: int = eqx.field(static=True)
    c_in: int = eqx.field(static=True)
    c_out: int = eqx.field(static=True)
    exclusive: bool = eqx.field(static=True)
    dilation: int = eqx.field(static=True)

    def __init__(self, size: int, half_kernel: int, c_in: int, c_out: int, *, exclusive: bool,
                 key: PRNGKeyArray, dtype=None, dilation: int = 1):
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.dilation = dilation
        self.size, self.half_kernel = size, half_kernel
        self.c_in, self.c_out, self.exclusive = c_in, c_out, exclusive
        self.kernel = _masked_init(key, self.kernel_shape(), self.mask(), dtype)
        self.bias = jnp.zeros((c_out,), dtype)

    def kernel_shape(self) -> tuple[int, int, int, int]:
        """Shape of the stored kernel: ``(k + 1, 2k + 1, c_in, c_out)``, the rows above and
        the current row of a ``(2k + 1)``-wide window."""
        k = self.half_kernel
        return (k + 1, 2 * k + 1, self.c_in, self.c_out)

    def mask(self) -> Array:
        """Which entries of the stored ``(k+1) x (2k+1)`` kernel are used."""
        k = self.half_kernel
        rows = jnp.arange(k + 1)[:, None]
        cols = jnp.arange(2 * k + 1)[None, :]
        allowed = (rows < k) | ((rows == k) & ((cols < k) if self.exclusive else (cols <= k)))
        return jnp.broadcast_to(allowed[:, :, None, None], self.kernel_shape())

    def _masked_kernel(self) -> Array:
        return self.kernel * self.mask().astype(self.kernel.dtype)

    def __call__(self, g):
        reach = self.half_kernel * self.dilation
        out = jax.lax.conv_general_dilated(
            g[None], self._masked_kernel(), window_strides=(1, 1),
            padding=((reach, 0), (reach, reach)), rhs_dilation=(self.dilation, self.dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
        return out + self.bias[None, None, :]

    def empty_cache(self, dtype):
        reach = self.half_kernel * self.dilation
        return jnp.zeros((self.size + reach, self.size + 2 * reach, self.c_in), dtype)

    def write(self, buffer, t, g):
        reach = self.half_kernel * self.dilation
        r, c = jnp.divmod(t, self.size)
        return jax.lax.dynamic_update_slice(buffer, g[None, None, :].astype(buffer.dtype),
                                            (r + reach, c + reach, jnp.zeros_like(r)))

    def at_site(self, buffer, t):
        # Positions right of site t in its row are not yet written (zero), so the
        # unmasked kernel gives the same sum as the masked one.
        d = self.dilation
        reach = self.half_kernel * d
        r, c = jnp.divmod(t, self.size)
        window = jax.lax.dynamic_slice(buffer, (r, c, jnp.zeros_like(r)),
                                       (reach + 1, 2 * reach + 1, self.c_in))[::d, ::d]
        return jnp.einsum("hwa,hwab->b", window, self.kernel) + self.bias


def prelu(x: Float[Array, "*sites c"], slope: Float[Array, " c"]) -> Float[Array, "*sites c"]:
    """Parametric ReLU with a learnable slope per channel (the last axis of ``x``)."""
    return jnp.where(x >= 0, x, jnp.broadcast_to(slope, x.shape) * x)


def n_sites(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
