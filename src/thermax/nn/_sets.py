r"""Autoregressive networks over sets of occupied states (particles = words, states = vocabulary).

A set ``K = {k_1 < ... < k_N}`` of ``N`` of the ``M`` states ``0..M-1`` is read as the sorted
sequence ``(k_1, ..., k_N)``. A set network returns, in one teacher-forced pass, the logits
of every ``k_t`` over the ``M`` states given ``k_<t``:

    logits(k)[t, :]  depends only on  k_1, ..., k_{t-1}.

The distribution (:class:`thermax.distributions.AutoregressiveSet`) masks the states that
would repeat or leave too little room and normalises; the networks are unconstrained.

* :class:`SetTransformer`: a small causal (GPT-style, pre-LN) transformer. Position ``0``
  holds a learned start token, position ``t >= 1`` the embedding of ``k_t`` (the previous
  choice) plus a learned position embedding; the output at position ``t`` are the logits of
  ``k_{t+1}``. Identical blocks are built with ``vmap`` and applied with ``lax.scan``.
* :class:`SetMADE`: MADE (Germain et al. 2015) on the one-hot codes of the choices, with
  masked dense layers over the ``N`` positions (:class:`~thermax.nn.MaskedDense`).

Both start as the uniform distribution over the allowed states (zero last layer).
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import check_shape
from ._masked import MaskedDense


def _dtype(dtype):
    return jnp.dtype(jnp.result_type(float) if dtype is None else dtype)


def _check_sizes(what: str, n: int, m: int, **positive: int) -> None:
    for name, value in {"n": n, "m": m, **positive}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} needs {name} as an int >= 1, got {name}={value!r}")
    if n > m:
        raise ValueError(f"{what} needs n <= m (N particles in M states), got n={n}, m={m}; "
                         "raise the cutoff m or lower n")


class AbstractSetNet(eqx.Module):
    """A network giving the logits of ``k_t`` over ``m`` states given ``k_<t`` (see the
    module docstring). Subclasses set ``n`` and ``m`` and implement ``_logits``.

    The one requirement is the autoregressive property: row ``t`` of ``logits(k)`` must
    not depend on ``k_t, ..., k_{n-1}``.
    """

    n: eqx.AbstractVar[int]
    m: eqx.AbstractVar[int]

    def logits(self, k: Int[Array, " n"]) -> Float[Array, "n m"]:
        """Logits of every ``k_t`` (rows) over the ``m`` states (columns), given ``k_<t``,
        in one teacher-forced pass over the sorted indices ``k``."""
        check_shape(k, (self.n,), f"{type(self).__name__}.logits")
        if not jnp.issubdtype(k.dtype, jnp.integer):
            raise TypeError(f"{type(self).__name__}.logits expected integer state indices, "
                            f"got dtype {k.dtype}")
        return self._logits(k)

    @abc.abstractmethod
    def _logits(self, k: Array) -> Array:
        raise NotImplementedError


class _Block(eqx.Module):
    """One pre-LN transformer block: causal self-attention and an MLP, both residual."""

    norm1: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    hidden: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, d: int, heads: int, mlp: int, *, key, dtype):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = eqx.nn.LayerNorm(d, dtype=dtype)
        self.attention = eqx.nn.MultiheadAttention(heads, d, key=k1, dtype=dtype)
        self.norm2 = eqx.nn.LayerNorm(d, dtype=dtype)
        self.hidden = eqx.nn.Linear(d, mlp, key=k2, dtype=dtype)
        self.out = eqx.nn.Linear(mlp, d, key=k3, dtype=dtype)

    def __call__(self, h, mask):
        x = jax.vmap(self.norm1)(h)
        h = h + self.attention(x, x, x, mask=mask)
        x = jax.vmap(self.norm2)(h)
        return h + jax.vmap(self.out)(jax.nn.gelu(jax.vmap(self.hidden)(x)))


class SetTransformer(AbstractSetNet):
    """A causal transformer over the sorted indices of a set (see the module docstring).

    Args:
        n: particles (sequence length).
        m: states (vocabulary).
        d: model width.
        heads: attention heads (``d`` divisible by it).
        depth: transformer blocks.
        mlp: hidden width of each block's MLP (default ``4 d``).
        key: initialisation key.
        dtype: parameter dtype (default: the default float).

    Example:
        >>> net = SetTransformer(3, 10, key=jax.random.key(0))
        >>> net.logits(jnp.array([1, 4, 7])).shape
        (3, 10)
    """

    n: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    start: Float[Array, " d"]
    embedding: Float[Array, "m d"]
    position: Float[Array, "n d"]
    blocks: _Block
    norm: eqx.nn.LayerNorm
    head: Float[Array, "d m"]
    head_bias: Float[Array, " m"]

    def __init__(self, n: int, m: int, *, d: int = 32, heads: int = 4, depth: int = 2,
                 mlp: int | None = None, key: PRNGKeyArray, dtype=None):
        mlp = 4 * d if mlp is None else mlp
        _check_sizes("SetTransformer", n, m, d=d, heads=heads, depth=depth, mlp=mlp)
        if d % heads:
            raise ValueError(f"SetTransformer needs d divisible by heads, got d={d}, "
                             f"heads={heads}")
        dtype = _dtype(dtype)
        self.n, self.m = n, m
        k_start, k_emb, k_pos, k_blocks = jax.random.split(key, 4)
        scale = 1.0 / math.sqrt(d)
        self.start = scale * jax.random.normal(k_start, (d,), dtype)
        self.embedding = scale * jax.random.normal(k_emb, (m, d), dtype)
        self.position = scale * jax.random.normal(k_pos, (n, d), dtype)
        self.blocks = eqx.filter_vmap(lambda k: _Block(d, heads, mlp, key=k, dtype=dtype))(
            jax.random.split(k_blocks, depth))
        self.norm = eqx.nn.LayerNorm(d, dtype=dtype)
        self.head = jnp.zeros((d, m), dtype)
        self.head_bias = jnp.zeros((m,), dtype)

    def _logits(self, k):
        tokens = jnp.concatenate([self.start[None], self.embedding[k[:-1]]], axis=0)
        h = tokens + self.position
        causal = jnp.tril(jnp.ones((self.n, self.n), dtype=bool))
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def body(h, p):
            return eqx.combine(p, static)(h, causal), None

        h, _ = jax.lax.scan(body, h, params)
        return jax.vmap(self.norm)(h) @ self.head + self.head_bias[None, :]


class SetMADE(AbstractSetNet):
    """MADE over the one-hot codes of the choices (see the module docstring).

    Layers: exclusive ``MaskedDense(n, m -> width)`` (position ``t`` sees the one-hot codes
    of ``k_<t``), then ``depth - 2`` masked ``width -> width`` layers, then
    ``width -> m`` (zero at initialisation), GELU between them. The hidden size is
    ``width * n``; the weights are ``O(n^2 m width)``.

    Example:
        >>> net = SetMADE(3, 10, key=jax.random.key(0))
        >>> net.logits(jnp.array([1, 4, 7])).shape
        (3, 10)
    """

    n: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    layers: tuple[MaskedDense, ...]

    def __init__(self, n: int, m: int, *, width: int = 16, depth: int = 2,
                 key: PRNGKeyArray, dtype=None):
        _check_sizes("SetMADE", n, m, width=width, depth=depth)
        dtype = _dtype(dtype)
        self.n, self.m = n, m
        channels = [m] + [width] * (depth - 1) + [m]
        keys = jax.random.split(key, depth)
        layers = [MaskedDense(n, c_in, c_out, exclusive=(i == 0), key=k, dtype=dtype)
                  for i, (c_in, c_out, k) in enumerate(zip(channels[:-1], channels[1:], keys,
                                                           strict=True))]
        last = layers[-1]
        layers[-1] = eqx.tree_at(lambda layer: layer.weight, last, jnp.zeros_like(last.weight))
        self.layers = tuple(layers)

    def _logits(self, k):
        dtype = self.layers[0].weight.dtype
        h = self.layers[0](jax.nn.one_hot(k, self.m, dtype=dtype))
        for layer in self.layers[1:]:
            h = layer(jax.nn.gelu(h))
        return h
