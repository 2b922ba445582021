"""Affine coupling layers (Real NVP) and the masks that split a configuration."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool

from ._base import AbstractBijection

_SCALE_FNS: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "identity": lambda s: s}


def checkerboard_mask(shape: tuple[int, ...], parity: int = 0, *,
                      axes: tuple[int, int] = (-2, -1)) -> Bool[np.ndarray, "*shape"]:
    """``mask[..., i, j] = (i + j) % 2 == parity`` over the two lattice ``axes`` of ``shape``,
    broadcast over the other axes (so ``(L, L)``, ``(C, L, L)``, or ``(L, L, C)`` with
    ``axes=(0, 1)``). A numpy array: masks are constants, concrete even inside ``jit``.

    Example:
        >>> checkerboard_mask((2, 2), 0)
        array([[ True, False], [False,  True]])
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"checkerboard_mask needs at least two axes, got shape {shape}")
    if parity not in (0, 1):
        raise ValueError(f"checkerboard_mask: parity must be 0 or 1, got {parity}")
    a, b = (ax % len(shape) for ax in axes)
    if a == b:
        raise ValueError(f"checkerboard_mask: axes must be two different axes, got {axes}")
    index = np.indices(shape)
    return (index[a] + index[b]) % 2 == parity


def channel_mask(shape: tuple[int, ...], axis: int = -1, parity: int = 0
                 ) -> Bool[np.ndarray, "*shape"]:
    """True on the first half (``parity=0``) or the second half (``parity=1``) of ``axis``
    (the first ``n // 2`` indices are the first half), broadcast over the other axes.
    A numpy array, like :func:`checkerboard_mask`.

    Example:
        >>> channel_mask((2, 4))
        array([[ True,  True, False, False], [ True,  True, False, False]])
    """
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ValueError("channel_mask needs at least one axis, got shape ()")
    if parity not in (0, 1):
        raise ValueError(f"channel_mask: parity must be 0 or 1, got {parity}")
    ax = axis % len(shape)
    n = shape[ax]
    if n < 2:
        raise ValueError(f"channel_mask: axis {axis} of shape {shape} has size {n}; it needs "
                         "at least 2 entries to split")
    first = np.arange(n) < n // 2
    first = first if parity == 0 else ~first
    view = [1] * len(shape)
    view[ax] = n
    return np.broadcast_to(first.reshape(view), shape).copy()


class AffineCoupling(AbstractBijection):
    """Real NVP affine coupling (Dinh et al., arXiv 1605.08803).

    With a boolean mask ``m`` (True: variables *kept*, which condition the others),

        s, t = conditioner(where(m, z, 0)),   s <- scale_fn(s)
        x    = where(m, z, z * exp(s) + t)
        ln |det dx/dz| = sum_{~m} s

    The Jacobian is triangular in the (kept, transformed) split, hence the log-det.
    Inverse: ``x`` agrees with ``z`` on ``m``, so the same conditioner pass gives ``s, t``
    and ``z = where(m, x, (x - t) * exp(-s))``. Forward and inverse are equally cheap: one
    conditioner pass each. Stack layers with alternating masks (e.g. both parities of
    :func:`checkerboard_mask`) so every variable gets transformed.

    Args:
        mask: boolean array; its shape is the bijection's shape. Neither all True nor all
            False. See :func:`checkerboard_mask`, :func:`channel_mask`.
        conditioner: a callable ``x -> (s, t)`` with ``s, t`` of ``x``'s shape, e.g.
            :class:`thermax.nn.MLPConditioner` or :class:`thermax.nn.ConvConditioner`.
        scale_fn: ``"tanh"`` (default: bounds each scale in ``[1/e, e]``, stable) or
            ``"identity"``.

    Example:
        >>> mask = checkerboard_mask((4, 4), 0)
        >>> layer = AffineCoupling(mask, MLPConditioner((4, 4), key=jax.random.key(0)))
        >>> x, log_det = layer.transform_and_log_det(jnp.ones((4, 4)))   # identity at init
    """

    mask: Bool[Array, "*shape"]
    conditioner: Callable[[Array], tuple[Array, Array]]
    shape: tuple[int, ...] = eqx.field(static=True)
    scale_fn: str = eqx.field(static=True)

    def __init__(self, mask: Bool[ArrayLike, "*shape"],
                 conditioner: Callable[[Array], tuple[Array, Array]], *,
                 scale_fn: str = "tanh"):
        if scale_fn not in _SCALE_FNS:
            raise ValueError(f"AffineCoupling: scale_fn must be one of {list(_SCALE_FNS)}, "
                             f"got {scale_fn!r}")
        if isinstance(mask, jax.core.Tracer):
            raise ValueError("AffineCoupling: the mask must be a concrete boolean array "
                             "(build it from numpy or the mask helpers, not inside jit)")
        mask_np = np.asarray(mask)
        if mask_np.dtype != np.bool_:
            raise ValueError(f"AffineCoupling: mask must be a boolean array, got dtype "
                             f"{mask_np.dtype}")
        if mask_np.all() or not mask_np.any():
            raise ValueError("AffineCoupling: the mask must keep some variables and transform "
                             "others; it is all " + ("True" if mask_np.all() else "False"))
        shape = tuple(mask_np.shape)
        cond_shape = getattr(conditioner, "shape", None)
        if cond_shape is not None and tuple(cond_shape) != shape:
            raise ValueError(f"AffineCoupling: the mask has shape {shape} but the conditioner "
                             f"acts on shape {tuple(cond_shape)}; they must agree")
        self.mask, self.conditioner = jnp.asarray(mask_np), conditioner
        self.shape, self.scale_fn = shape, scale_fn

    def _s_and_t(self, y):
        s, t = self.conditioner(jnp.where(self.mask, y, jnp.zeros_like(y)))
        if s.shape != self.shape or t.shape != self.shape:
            raise ValueError(f"AffineCoupling: the conditioner must return s and t of shape "
                             f"{self.shape}, got {s.shape} and {t.shape}")
        return _SCALE_FNS[self.scale_fn](s), t

    def _transform_and_log_det(self, z):
        s, t = self._s_and_t(z)
        x = jnp.where(self.mask, z, z * jnp.exp(s) + t)
        return x, jnp.sum(jnp.where(self.mask, jnp.zeros_like(s), s))

    def _inverse_and_log_det(self, x):
        s, t = self._s_and_t(x)
        z = jnp.where(self.mask, x, (x - t) * jnp.exp(-s))
        return z, -jnp.sum(jnp.where(self.mask, jnp.zeros_like(s), s))
