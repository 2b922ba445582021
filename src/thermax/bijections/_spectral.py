"""A learnable translation-invariant linear map of a periodic lattice field."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import AbstractBijection


def _reflected(a: Array) -> Array:
    """``a[-k]``: the array at the negated (periodic) wave vector, on every axis."""
    for axis in range(a.ndim):
        a = jnp.roll(jnp.flip(a, axis), 1, axis)
    return a


class SpectralScale(AbstractBijection):
    """``x = F^{-1}[exp(s_k) F[z]]``: a symmetric positive-definite circulant matrix.

    On a periodic lattice every translation-invariant linear map is diagonal in Fourier
    space. Here each wave vector ``k`` is scaled by ``exp(s_k)`` with ``s_k = s_{-k}``
    (``s`` is symmetrised from the free parameter ``log_scale``), so ``x`` stays real and the
    map is a symmetric convolution with positive eigenvalues ``exp(s_k)``:

        ln |det dx/dz| = sum_k s_k.

    As the last layer of a flow for a lattice field it fits the field's two-point function
    (the Gaussian part of the target, e.g. the ``K`` of the relaxed Ising model or the free
    propagator of phi^4) exactly, leaving the non-Gaussian structure to the layers before
    it. Starts as the identity. Both directions cost two FFTs (``O(N log N)``).

    Args:
        shape: the lattice shape (any number of periodic axes).
        dtype: parameter dtype (default: the default float).

    Example:
        >>> b = SpectralScale((8, 8))
        >>> x, log_det = b.transform_and_log_det(jnp.ones((8, 8)))   # identity at init
    """

    log_scale: Float[Array, "*shape"]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, log_scale=None, dtype=None):
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"SpectralScale needs a lattice shape, got {self.shape}")
        dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
        if log_scale is None:
            self.log_scale = jnp.zeros(self.shape, dtype)
        else:
            log_scale = jnp.asarray(log_scale, dtype)
            if log_scale.shape != self.shape:
                raise ValueError(f"SpectralScale: log_scale must have shape {self.shape}, got "
                                 f"{log_scale.shape}")
            self.log_scale = log_scale

    def _symmetric_log_scale(self) -> Array:
        return 0.5 * (self.log_scale + _reflected(self.log_scale))

    def _apply(self, y: Array, s: Array) -> Array:
        out = jnp.fft.ifftn(jnp.exp(s) * jnp.fft.fftn(y)).real
        return out.astype(jnp.result_type(y.dtype, s.dtype))

    def _transform_and_log_det(self, z):
        s = self._symmetric_log_scale()
        return self._apply(z, s), jnp.sum(s)

    def _inverse_and_log_det(self, x):
        s = self._symmetric_log_scale()
        return self._apply(x, -s), -jnp.sum(s)
