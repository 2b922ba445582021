"""Conditioners of coupling layers: networks ``x -> (s, t)`` with ``s, t`` of ``x``'s shape.

A coupling layer calls its conditioner on the configuration with the transformed
variables zeroed, and uses ``s`` (log-scale) and ``t`` (shift) at the transformed
variables. The last layer of every conditioner here starts at zero, so ``s = t = 0``
and a freshly built coupling layer is the identity.
"""

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def _check_shape(x: Array, shape: tuple[int, ...], what: str) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{what} expected a configuration of shape {tuple(shape)}, got shape "
                         f"{tuple(x.shape)}; batch with jax.vmap rather than passing a batch.")


class AbstractConditioner(eqx.Module):
    """A network ``x -> (s, t)`` from one configuration of ``shape`` to two arrays of it.

    Subclasses set ``shape`` and implement ``_s_and_t``; ``__call__`` checks the shape.
    Any ``eqx.Module`` callable with this contract may serve as a conditioner.
    """

    shape: eqx.AbstractVar[tuple[int, ...]]

    def __call__(self, x: Float[Array, "*shape"]
                 ) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"]]:
        """Log-scale ``s`` and shift ``t``, both of ``x``'s shape."""
        _check_shape(x, self.shape, f"{type(self).__name__}")
        return self._s_and_t(x)

    @abc.abstractmethod
    def _s_and_t(self, x: Array) -> tuple[Array, Array]:
        raise NotImplementedError


def _default(dtype):
    return jnp.dtype(jnp.result_type(float) if dtype is None else dtype)


class MLPConditioner(AbstractConditioner):
    """Dense conditioner: flatten, MLP, ``2 * size`` outputs split into ``s`` and ``t``.

    ``h_0 = vec(x)``, ``h_{k+1} = activation(h_k W_k + b_k)``, ``(s, t) = h W_last + b_last``.
    Hidden weights are LeCun-normal (variance ``1/fan_in``), biases zero; ``W_last`` and
    ``b_last`` are zero, so a new coupling is the identity. Plain matmuls: cheap to
    ``vmap`` over many small blocks.

    Args:
        shape: the configuration shape.
        hidden: widths of the hidden layers (``()`` for a single linear layer).
        key: initialisation key.
        dtype: parameter dtype (default: the default float).
        activation: elementwise nonlinearity (default ``tanh``).

    Example:
        >>> net = MLPConditioner((2, 2), hidden=(10, 10, 10), key=jax.random.key(0))
        >>> s, t = net(jnp.ones((2, 2)))   # both zeros at initialisation
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    shape: tuple[int, ...] = eqx.field(static=True)
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], hidden: tuple[int, ...] = (10, 10, 10), *,
                 key: PRNGKeyArray, dtype=None,
                 activation: Callable[[Array], Array] = jax.nn.tanh):
        self.shape = tuple(int(s) for s in shape)
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"MLPConditioner: hidden widths must be >= 1, got {hidden}")
        dtype = _default(dtype)
        size = math.prod(self.shape)
        widths = (size, *hidden, 2 * size)
        keys = jax.random.split(key, len(widths) - 1)
        weights = [jax.random.normal(k, (a, b), dtype) / math.sqrt(a)
                   for k, a, b in zip(keys[:-1], widths[:-2], widths[1:-1], strict=True)]
        weights.append(jnp.zeros(widths[-2:], dtype))
        self.weights = tuple(weights)
        self.biases = tuple(jnp.zeros((b,), dtype) for b in widths[1:])
        self.activation = activation

    def _s_and_t(self, x):
        h = x.reshape(-1)
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = self.activation(h @ w + b)
        out = h @ self.weights[-1] + self.biases[-1]
        s, t = jnp.split(out, 2)
        return s.reshape(self.shape), t.reshape(self.shape)


class ConvConditioner(AbstractConditioner):
    """Convolutional conditioner for lattice fields of shape ``(L, W)`` or ``(L, W, C)``.

    ``depth`` convolutions with ``kernel x kernel`` kernels: ``C -> width -> ... -> 2C``
    channels, ``activation`` between them; the last convolution's output channels split
    into ``s`` and ``t``. Padding is periodic (``periodic=True``, for periodic lattices:
    the conditioner is then translation equivariant) or zero. Kernels are LeCun-normal,
    biases zero, and the last kernel and bias zero (a new coupling is the identity).

    Args:
        shape: ``(L, W)`` (one channel) or ``(L, W, C)`` (channels last).
        width: hidden channels.
        depth: number of convolutions (``>= 1``).
        kernel: kernel size (odd).
        periodic: periodic (``True``) or zero padding.
        key: initialisation key.
        dtype: parameter dtype (default: the default float).
        activation: elementwise nonlinearity (default ``tanh``).

    Example:
        >>> net = ConvConditioner((8, 8), width=8, depth=3, key=jax.random.key(0))
        >>> s, t = net(jnp.ones((8, 8)))
    """

    kernels: tuple[Float[Array, "k k _ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    shape: tuple[int, ...] = eqx.field(static=True)
    periodic: bool = eqx.field(static=True)
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, width: int = 16, depth: int = 3,
                 kernel: int = 3, periodic: bool = True, key: PRNGKeyArray, dtype=None,
                 activation: Callable[[Array], Array] = jax.nn.tanh):
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) not in (2, 3):
            raise ValueError("ConvConditioner: shape must be (L, W) or (L, W, C), got "
                             f"{self.shape}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"ConvConditioner: kernel must be odd and >= 1, got {kernel}")
        if depth < 1 or width < 1:
            raise ValueError(f"ConvConditioner: depth and width must be >= 1, got depth={depth}"
                             f", width={width}")
        dtype = _default(dtype)
        c = self.shape[2] if len(self.shape) == 3 else 1
        channels = [c] + [int(width)] * (depth - 1) + [2 * c]
        keys = jax.random.split(key, depth)
        kernels = [jax.random.normal(k, (kernel, kernel, a, b), dtype) / math.sqrt(kernel**2 * a)
                   for k, a, b in zip(keys[:-1], channels[:-2], channels[1:-1], strict=True)]
        kernels.append(jnp.zeros((kernel, kernel, channels[-2], channels[-1]), dtype))
        self.kernels = tuple(kernels)
        self.biases = tuple(jnp.zeros((b,), dtype) for b in channels[1:])
        self.periodic, self.activation = bool(periodic), activation

    def _conv(self, h, kernel, bias):
        p = kernel.shape[0] // 2
        if self.periodic:
            h = jnp.pad(h, ((p, p), (p, p), (0, 0)), mode="wrap")
            padding = "VALID"
        else:
            padding = ((p, p), (p, p))
        out = jax.lax.conv_general_dilated(h[None], kernel, (1, 1), padding,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
        return out + bias[None, None, :]

    def _s_and_t(self, x):
        h = x if len(self.shape) == 3 else x[..., None]
        for k, b in zip(self.kernels[:-1], self.biases[:-1], strict=True):
            h = self.activation(self._conv(h, k, b))
        out = self._conv(h, self.kernels[-1], self.biases[-1])
        s, t = jnp.split(out, 2, axis=-1)
        return s.reshape(self.shape), t.reshape(self.shape)
