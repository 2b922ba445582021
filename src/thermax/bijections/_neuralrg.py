"""The neural network renormalization group flow (Li & Wang, PRL 121, 260601 (2018)).

A MERA-shaped hierarchy of small bijections ("kernels") acting on the 2x2 plaquettes of an
``L x L`` periodic lattice field. Read in the direction ``x -> z`` (the RG direction) at
scale ``s`` (lattice spacing ``d = 2^s``, a ``M x M`` sublattice of the sites at multiples
of ``d``, ``M = L / d``):

1. the *disentangler* acts on the plaquettes offset by one site of that sublattice
   (corners at odd sublattice coordinates), mixing across the borders of the next step's
   blocks;
2. the *decimator* acts on the aligned plaquettes (corners at even coordinates). Of its
   four outputs, three are frozen: they are latent variables of scale ``s``. The fourth,
   at the plaquette's corner, is a site of the ``M/2 x M/2`` sublattice of scale ``s+1``
   (spacing doubled), where the next disentangler and decimator act.

Sampling (``z -> x``) runs it backwards, coarse to fine. The kernels of one layer share
their weights over all its plaquettes; every layer (two per scale) has its own.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_shape
from ._base import AbstractBijection

#: Order of the four variables of a plaquette: row-major ``[(0,0), (0,1), (1,0), (1,1)]``.
#: Between two couplings the state is reordered as ``[v2, v0, v3, v1]``, so the transformed
#: pair cycles through the bottom row, right column, top row, left column (period 4).
_CYCLE = (2, 0, 3, 1)


def _perm_power(n: int) -> tuple[int, ...]:
    """The composition of ``n`` reorderings ``v -> v[_CYCLE]`` as one index tuple."""
    idx = tuple(range(4))
    for _ in range(n % 4):
        idx = tuple(idx[i] for i in _CYCLE)
    return idx


def _inverse_perm(p: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(p)
    for i, j in enumerate(p):
        inv[j] = i
    return tuple(inv)


def _permute(v: Array, perm: tuple[int, ...]) -> Array:
    """``v[perm]`` for a static permutation of a short last axis, without a gather."""
    return jnp.stack([v[..., i] for i in perm], axis=-1)


class PlaquetteRealNVP(AbstractBijection):
    """A small Real NVP on the four variables of one plaquette: the default NeuralRG kernel.

    ``n_couplings`` affine couplings. Coupling ``k`` keeps two variables ``a`` and maps the
    other two, ``b -> b * exp(s) + t``, with ``(s_raw, t) = MLP_k(a)`` (tanh hidden layers
    of widths ``hidden``; the last layer starts at zero, so a new kernel is the identity)
    and ``s = c_k * tanh(s_raw)``, a bounded log-scale with a learnable bound ``c_k``
    (initially 1). ``ln |det dx/dz| = sum_k sum(s)``. The transformed pair cycles through
    the bottom row, right column, top row and left column of the plaquette.

    Written for speed when vmapped over many plaquettes (what :class:`NeuralRG` does):
    no masks (the conditioner sees only the two kept variables, and one network gives both
    ``s`` and ``t``), the pair to transform chosen by reordering the four variables between
    couplings, the couplings' weights stacked and run by one ``lax.scan``. Weights are
    stored ``(fan_out, fan_in)`` and applied as ``w @ h`` (about 10% faster training
    steps on CPU than ``h @ w``); tanh rather than the original's ELU hidden activations
    (ELU's ``expm1`` made the step about 1.5x slower). Both directions cost the same. A
    generic alternative is a :class:`Scan` of :class:`AffineCoupling` layers with
    :class:`thermax.nn.MLPConditioner` (see ``docs/neuralrg.md``).

    Args:
        n_couplings: number of affine couplings (>= 1).
        hidden: widths of the conditioner's hidden layers.
        key: initialisation key.
        dtype: parameter dtype (default: the default float).

    Example:
        >>> kernel = PlaquetteRealNVP(10, (10, 10, 10), key=jax.random.key(0))
        >>> y, log_det = kernel.transform_and_log_det(jnp.ones(4))   # identity at init
    """

    weights: tuple[Float[Array, "n_couplings fan_out fan_in"], ...]
    biases: tuple[Float[Array, "n_couplings fan_out"], ...]
    log_scale_bound: Float[Array, "n_couplings 2"]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, n_couplings: int = 10, hidden: tuple[int, ...] = (10, 10, 10), *,
                 key: PRNGKeyArray, dtype=None):
        n_couplings, hidden = int(n_couplings), tuple(int(h) for h in hidden)
        if n_couplings < 1:
            raise ValueError(f"PlaquetteRealNVP: n_couplings must be >= 1, got {n_couplings}")
        if any(h < 1 for h in hidden):
            raise ValueError(f"PlaquetteRealNVP: hidden widths must be >= 1, got {hidden}")
        dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
        sizes = (2, *hidden, 4)
        keys = jax.random.split(key, len(sizes) - 1)
        weights, biases = [], []
        for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
            if i == len(sizes) - 2:  # last layer: zero, the kernel starts as the identity
                w = jnp.zeros((n_couplings, fan_out, fan_in), dtype)
            else:
                w = jax.random.normal(k, (n_couplings, fan_out, fan_in), dtype)
                w = w / math.sqrt(fan_in)
            weights.append(w)
            biases.append(jnp.zeros((n_couplings, fan_out), dtype))
        self.weights, self.biases = tuple(weights), tuple(biases)
        self.log_scale_bound = jnp.ones((n_couplings, 2), dtype)
        self.shape = (4,)

    @property
    def n_couplings(self) -> int:
        """Number of affine coupling layers in the plaquette kernel."""
        return self.log_scale_bound.shape[0]

    def _shift_and_log_scale(self, a, params):
        weights, biases, bound = params
        h = a
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = w @ h + b
            if i < len(weights) - 1:
                h = jnp.tanh(h)
        return h[2:], bound * jnp.tanh(h[:2])

    def _params(self):
        return self.weights, self.biases, self.log_scale_bound

    def _transform_and_log_det(self, z):
        def coupling(v, params):
            a, b = v[:2], v[2:]
            t, s = self._shift_and_log_scale(a, params)
            b = b * jnp.exp(s) + t
            return jnp.stack([b, a], axis=-1).reshape(4), jnp.sum(s)

        v, log_dets = jax.lax.scan(coupling, z, self._params())
        return _permute(v, _inverse_perm(_perm_power(self.n_couplings))), jnp.sum(log_dets)

    def _inverse_and_log_det(self, x):
        def coupling(v, params):
            v = _permute(v, _inverse_perm(_CYCLE))
            a, b = v[:2], v[2:]
            t, s = self._shift_and_log_scale(a, params)
            b = (b - t) * jnp.exp(-s)
            return jnp.concatenate([a, b]), jnp.sum(s)

        v = _permute(x, _perm_power(self.n_couplings))
        v, log_dets = jax.lax.scan(coupling, v, self._params(), reverse=True)
        return v, -jnp.sum(log_dets)


def _to_plaquettes(v: Array) -> Array:
    """``(M, M) -> (M/2 * M/2, 4)``: the aligned 2x2 plaquettes, each row-major."""
    m = v.shape[0] // 2
    return v.reshape(m, 2, m, 2).transpose(0, 2, 1, 3).reshape(m * m, 4)


def _from_plaquettes(p: Array) -> Array:
    """The inverse of :func:`_to_plaquettes`."""
    m = math.isqrt(p.shape[0])
    return p.reshape(m, m, 2, 2).transpose(0, 2, 1, 3).reshape(2 * m, 2 * m)


def _index(tree, i: int):
    """The ``i``-th slice along the leading axis of every array leaf of ``tree``."""
    return jax.tree.map(lambda a: a[i] if eqx.is_array(a) else a, tree)


class NeuralRG(AbstractBijection):
    """The NeuralRG hierarchical flow on an ``L x L`` periodic lattice field.

    ``x = g(z)`` maps latent variables ``z`` (shape ``(L, L)``, one per site) to the field
    ``x``, coarse scale to fine. At scale ``s = depth-1, ..., 0`` (lattice spacing
    ``d = 2^s``) the field on the ``M x M`` sublattice of sites at multiples of ``d``
    (``M = L/d``) is assembled from the output of scale ``s+1`` (on the even sublattice
    coordinates) and the latent variables of scale ``s`` (the other three sites of each
    aligned plaquette); then

    - the *decimator* kernel maps every aligned 2x2 plaquette of the sublattice
      (corners at even coordinates),
    - the *disentangler* kernel maps every plaquette offset by one site (corners at odd
      coordinates, periodic boundaries).

    ``ln |det dx/dz|`` is the sum of the kernels' log-dets. The inverse runs the same
    layers fine to coarse and is just as cheap: each layer is one ``jax.vmap`` of its kernel
    over the plaquettes (batch it again with ``jax.vmap`` over configurations), gathered
    with reshapes and rolls; the two layers of a scale are one ``lax.scan``.

    The kernels are components: every layer holds one kernel, an
    :class:`AbstractBijection` on shape ``(4,)`` (the plaquette, row-major), shared by all
    plaquettes of the layer. They are stored stacked, with leading axes ``(depth, 2)``
    (scale, then decimator/disentangler) in the field ``kernels``.

    The latent variables organise by scale: see :meth:`latents_by_scale`.

    Args:
        L: linear size, a power of two >= 2.
        depth: number of scales, ``1 <= depth <= log2 L`` (default ``log2 L``, every
            scale). Sites at multiples of ``2^depth`` are latent variables left untouched.
        n_couplings: affine couplings per kernel (default kernel only).
        hidden: hidden widths of each coupling's conditioner (default kernel only).
        kernel: ``kernel(key) -> AbstractBijection`` on shape ``(4,)``, called once per
            layer with a fresh key (default: :class:`PlaquetteRealNVP` with
            ``n_couplings`` and ``hidden``).
        key: initialisation key.
        dtype: parameter dtype (default: the default float).

    Example:
        >>> flow = Transformed(StandardNormal((16, 16)), NeuralRG(16, key=jax.random.key(0)))
        >>> x, log_p = flow.sample_and_log_prob(key=jax.random.key(1))
    """

    kernels: AbstractBijection
    depth: int = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, L: int, *, depth: int | None = None, n_couplings: int = 10,
                 hidden: tuple[int, ...] = (10, 10, 10),
                 kernel: Callable[[PRNGKeyArray], AbstractBijection] | None = None,
                 key: PRNGKeyArray, dtype=None):
        if isinstance(L, bool) or not isinstance(L, int) or L < 2 or L & (L - 1):
            raise ValueError(f"NeuralRG: L must be a power of two >= 2 (2, 4, 8, 16, ...): "
                             f"the hierarchy halves the lattice at every scale; got L={L!r}")
        max_depth = L.bit_length() - 1
        depth = max_depth if depth is None else depth
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= max_depth:
            raise ValueError(f"NeuralRG: depth must be an integer in 1..{max_depth} "
                             f"(log2 L for L={L}), got depth={depth!r}")
        if kernel is None:
            def kernel(k):
                return PlaquetteRealNVP(n_couplings, hidden, key=k, dtype=dtype)
        keys = jax.random.split(key, (depth, 2))
        self.kernels = eqx.filter_vmap(eqx.filter_vmap(kernel))(keys)
        one = _index(_index(self.kernels, 0), 0)
        if not isinstance(one, AbstractBijection) or tuple(one.shape) != (4,):
            raise ValueError("NeuralRG: kernel(key) must return an AbstractBijection on shape "
                             f"(4,) (a 2x2 plaquette, row-major), got {type(one).__name__} "
                             f"with shape {getattr(one, 'shape', None)}")
        self.depth = depth
        self.shape = (L, L)

    def _layers(self, scale: int, v: Array, inverse: bool) -> tuple[Array, Array]:
        """Apply scale ``scale``'s decimator then disentangler (or their inverses, reversed)
        to the sublattice field ``v`` of shape ``(M, M)``.

        The scan body maps the aligned plaquettes and then rolls ``v`` by one site
        (forward) so the next layer's aligned plaquettes are the offset ones. The scan has
        two steps and is unrolled: XLA then fuses the rolls and plaquette reshapes with the
        kernels' first and last ops (measured 0.20 s instead of 0.26-0.36 s per training
        step at L = 16, batch 512, same compile time); the kernel's own scan over
        couplings stays rolled, so compile time does not grow with ``n_couplings``.
        """
        params, static = eqx.partition(_index(self.kernels, scale), eqx.is_array)

        def layer(v, p):
            k = eqx.combine(p, static)
            if inverse:
                v = jnp.roll(v, (1, 1), axis=(0, 1))
                y, ld = jax.vmap(k.inverse_and_log_det)(_to_plaquettes(v))
            else:
                y, ld = jax.vmap(k.transform_and_log_det)(_to_plaquettes(v))
            y = _from_plaquettes(y)
            if not inverse:
                y = jnp.roll(y, (-1, -1), axis=(0, 1))
            return y, jnp.sum(ld)

        if inverse:
            v = jnp.roll(v, (-2, -2), axis=(0, 1))
        v, log_dets = jax.lax.scan(layer, v, params, reverse=inverse, unroll=True)
        if not inverse:
            v = jnp.roll(v, (2, 2), axis=(0, 1))
        return v, jnp.sum(log_dets)

    def _transform_and_log_det(self, z):
        top = 2**self.depth
        coarse = z[::top, ::top]
        log_det = jnp.zeros((), jnp.result_type(z.dtype, float))
        for scale in reversed(range(self.depth)):
            d = 2**scale
            plaquettes = _to_plaquettes(z[::d, ::d])
            plaquettes = jnp.concatenate([coarse.reshape(-1, 1), plaquettes[:, 1:]], axis=1)
            coarse, ld = self._layers(scale, _from_plaquettes(plaquettes), inverse=False)
            log_det = log_det + ld
        return coarse, log_det

    def _inverse_and_log_det(self, x):
        v = x
        log_det = jnp.zeros((), jnp.result_type(x.dtype, float))
        frozen = []
        for scale in range(self.depth):
            v, ld = self._layers(scale, v, inverse=True)
            log_det = log_det + ld
            plaquettes = _to_plaquettes(v)
            frozen.append(plaquettes[:, 1:])
            v = v[::2, ::2]
        # Reassemble z coarse to fine from the frozen variables of every scale.
        z = v
        for f in reversed(frozen):
            z = _from_plaquettes(jnp.concatenate([z.reshape(-1, 1), f], axis=1))
        return z, log_det

    def latents_by_scale(self, x: Float[Array, "L L"]) -> list[Array]:
        """The latent variables ``z = g^{-1}(x)`` of one configuration, grouped by scale.

        Returns ``depth + 1`` arrays: for ``s = 0 .. depth-1`` the three variables frozen
        by the decimator of scale ``s`` in each of its plaquettes, shape
        ``(L/2^(s+1), L/2^(s+1), 3)`` (plaquette members ``(0,1), (1,0), (1,1)``; 3/4 of
        the sites at ``s = 0``, 3/16 at ``s = 1``, ...), then the untouched coarsest
        variables, shape ``(L/2^depth, L/2^depth)`` (one site when ``depth = log2 L``).
        """
        check_shape(x, self.shape, "NeuralRG.latents_by_scale")
        return self.split_by_scale(self.inverse(x))

    def split_by_scale(self, z: Float[Array, "L L"]) -> list[Array]:
        """A latent configuration ``z`` grouped by scale, as in :meth:`latents_by_scale`."""
        check_shape(z, self.shape, "NeuralRG.split_by_scale")
        out = []
        for scale in range(self.depth):
            d = 2**scale
            m = self.shape[0] // (2 * d)
            out.append(_to_plaquettes(z[::d, ::d])[:, 1:].reshape(m, m, 3))
        top = 2**self.depth
        out.append(z[::top, ::top])
        return out

    def scale_of_sites(self) -> Array:
        """An ``(L, L)`` integer map: the scale at which each site's latent variable is
        frozen (``depth`` for the coarsest, untouched sites). Handy for plots."""
        L = self.shape[0]
        idx = jnp.arange(L)
        # The scale of site (i, j) is the number of trailing zero bits shared by i and j.
        both = idx[:, None] | idx[None, :]
        trailing = jnp.zeros((L, L), jnp.int32)
        for s in range(self.depth):
            trailing = trailing + ((both % (2 ** (s + 1))) == 0).astype(jnp.int32)
        return trailing
