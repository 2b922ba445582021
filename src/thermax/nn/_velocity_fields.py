"""Velocity fields for continuous normalizing flows: MLP, Monge–Ampère, particle backflow.

Every field here is an :class:`~thermax.nn.AbstractVelocityField` acting on one
configuration (batch with ``jax.vmap``). The last layer of every network starts at zero,
so a freshly built field is ``v = 0`` and its flow is the identity.

* :class:`MLPVelocity`: a generic time-conditioned MLP on the flattened configuration;
  divergence by forward-mode autodiff.
* Monge–Ampère flow (Zhang, E & Wang, arXiv 1809.10188): ``v = grad phi`` for a scalar
  potential, so ``div v = laplacian phi``. :class:`MongeAmpereField` wraps an
  :class:`AbstractPotential`; the potentials are :class:`OneHiddenLayerPotential` (the
  paper's, with hand-coded gradient and Laplacian), :class:`MLPPotential`,
  :class:`SymmetrizedPotential` (averaged over the square lattice's point group and/or
  ``x -> -x``), :class:`TranslationInvariantPotential` (the paper's, averaged over lattice
  translations by FFT), :class:`ConvPotential` (local translation-invariant features, by
  direct convolution) and :class:`ParticlePotential` (identical particles).
* :class:`BackflowField`: a permutation- and rotation-equivariant field for identical
  particles with an analytic divergence.

The particle networks see only squared distances ``|x_i - x_j|^2`` and squared radii
``|x_i|^2`` (and ``t``): smooth everywhere (no ``|r|`` kink when two particles meet or one
sits at the origin), invariant under rotations and reflections ``O(dim)`` and under
relabelling the particles.
"""

import abc
import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_shape
from ._velocity import AbstractVelocityField


def _default(dtype):
    return jnp.dtype(jnp.result_type(float) if dtype is None else dtype)


def _check_positive(what: str, **sizes: int) -> None:
    bad = {k: v for k, v in sizes.items() if int(v) < 1}
    if bad:
        raise ValueError(f"{what}: " + ", ".join(f"{k} must be >= 1, got {v}"
                                                 for k, v in bad.items()))


def _check_config_shape(shape, what: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"{what}: shape must be a non-empty tuple of positive sizes, got "
                         f"{shape}")
    return shape


def _mlp_params(key, widths, dtype):
    """LeCun-normal hidden weights, zero biases, and a zero last weight matrix."""
    keys = jax.random.split(key, len(widths) - 1)
    weights = [jax.random.normal(k, (a, b), dtype) / math.sqrt(a)
               for k, a, b in zip(keys[:-1], widths[:-2], widths[1:-1], strict=True)]
    weights.append(jnp.zeros(widths[-2:], dtype))
    return tuple(weights), tuple(jnp.zeros((b,), dtype) for b in widths[1:])


def _mlp_apply(weights, biases, activation, h):
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        h = activation(h @ w + b)
    return h @ weights[-1] + biases[-1]


def _value_and_jacobian_trace(fn, x):
    """``(fn(x), tr d fn/dx)``: one linearisation, one JVP per coordinate (vmapped)."""
    flat = x.reshape(-1)
    y, lin = jax.linearize(lambda v: fn(v.reshape(x.shape)).reshape(-1), flat)
    basis = jnp.eye(flat.size, dtype=flat.dtype)
    diagonal = jax.vmap(lambda e: jnp.vdot(e, lin(e)))(basis)
    return y.reshape(x.shape), jnp.sum(diagonal)


class MLPVelocity(AbstractVelocityField):
    """A generic time-conditioned MLP field ``v(t, x) = MLP([vec(x), t])``, reshaped.

    ``depth`` hidden layers of ``width`` units with ``activation`` (smooth, so the flow
    is); hidden weights LeCun-normal, biases zero, the last layer zero (``v = 0`` at
    initialisation: the identity flow). No symmetry is built in. The divergence is the
    default exact one (forward-mode Jacobian trace, ``x.size`` JVPs).

    Args:
        shape: the configuration shape.
        width: hidden units per layer.
        depth: number of hidden layers (``>= 1``).
        key: initialisation key.
        dtype: parameter dtype (default: the default float).
        activation: elementwise nonlinearity (default ``tanh``).

    Example:
        >>> field = MLPVelocity((4, 4), width=32, depth=2, key=jax.random.key(0))
        >>> v = field(jnp.asarray(0.5), jnp.ones((4, 4)))   # zeros at initialisation
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    shape: tuple[int, ...] = eqx.field(static=True)
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, width: int, depth: int, key: PRNGKeyArray,
                 dtype=None, activation: Callable[[Array], Array] = jax.nn.tanh):
        self.shape = _check_config_shape(shape, "MLPVelocity")
        _check_positive("MLPVelocity", width=width, depth=depth)
        size = math.prod(self.shape)
        widths = (size + 1, *[int(width)] * int(depth), size)
        self.weights, self.biases = _mlp_params(key, widths, _default(dtype))
        self.activation = activation

    def _velocity(self, t, x):
        h = jnp.concatenate([x.reshape(-1), jnp.asarray(t, x.dtype).reshape(1)])
        return _mlp_apply(self.weights, self.biases, self.activation, h).reshape(self.shape)


# ----------------------------------------------------------------------------------------
# Monge–Ampère flow: potentials and their gradient field


class AbstractPotential(eqx.Module):
    """A scalar potential ``phi(t, x)`` on configurations of shape ``shape``.

    Subclasses set ``shape`` and implement ``_potential(t, x)``. The gradient defaults to
    ``jax.grad``; the gradient and Laplacian together default to one linearisation of the
    gradient and the trace of its Jacobian (the forward-over-reverse Hessian, ``x.size``
    JVPs batched into one). Subclasses with closed forms override ``_gradient`` and
    ``_gradient_and_laplacian``. The public methods check the shape once (trace time).
    """

    shape: eqx.AbstractVar[tuple[int, ...]]

    def __call__(self, t: Float[Array, ""], x: Float[Array, "*shape"]) -> Float[Array, ""]:
        """The potential ``phi(t, x)``."""
        check_shape(x, self.shape, type(self).__name__)
        return self._potential(t, x)

    def gradient(self, t: Float[Array, ""], x: Float[Array, "*shape"]
                 ) -> Float[Array, "*shape"]:
        """``grad_x phi(t, x)``, of ``x``'s shape."""
        check_shape(x, self.shape, type(self).__name__)
        return self._gradient(t, x)

    def laplacian(self, t: Float[Array, ""], x: Float[Array, "*shape"]) -> Float[Array, ""]:
        """``sum_i d^2 phi / dx_i^2`` at ``(t, x)``."""
        return self.gradient_and_laplacian(t, x)[1]

    def gradient_and_laplacian(self, t: Float[Array, ""], x: Float[Array, "*shape"]
                               ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """The gradient and the Laplacian of ``phi`` at ``(t, x)``, in one pass."""
        check_shape(x, self.shape, type(self).__name__)
        return self._gradient_and_laplacian(t, x)

    @abc.abstractmethod
    def _potential(self, t: Array, x: Array) -> Array:
        raise NotImplementedError

    def _gradient(self, t: Array, x: Array) -> Array:
        return jax.grad(self._potential, argnums=1)(t, x)

    def _gradient_and_laplacian(self, t: Array, x: Array) -> tuple[Array, Array]:
        return _value_and_jacobian_trace(lambda y: self._gradient(t, y), x)


class MongeAmpereField(AbstractVelocityField):
    """The Monge–Ampère velocity ``v = grad phi`` of a potential (arXiv 1809.10188).

    ``div v = laplacian phi``, taken from the potential (``analytic_divergence = True``):
    the exact divergence estimator never differentiates the field again, so a potential
    with a closed-form Laplacian (:class:`OneHiddenLayerPotential`,
    :class:`ParticlePotential`) costs about one pass. Symmetries of ``phi`` become
    equivariances of the flow: ``phi(g x) = phi(x)`` for an orthogonal ``g`` gives
    ``v(g x) = g v(x)``. A time-independent potential gives an autonomous flow.

    Args:
        potential: the :class:`AbstractPotential` ``phi``; the field's shape is its shape.

    Example:
        >>> phi = OneHiddenLayerPotential((16, 16), hidden=512, key=jax.random.key(0))
        >>> field = MongeAmpereField(phi)
        >>> v, div = field.velocity_and_divergence(jnp.asarray(0.0), jnp.ones((16, 16)))
    """

    potential: AbstractPotential
    shape: tuple[int, ...] = eqx.field(static=True)
    analytic_divergence: ClassVar[bool] = True

    def __init__(self, potential: AbstractPotential):
        if not isinstance(potential, AbstractPotential):
            raise TypeError("MongeAmpereField: potential must be an AbstractPotential, got "
                            f"{type(potential).__name__}")
        self.potential = potential
        self.shape = tuple(potential.shape)

    def _velocity(self, t, x):
        return self.potential.gradient(t, x)

    def velocity_and_divergence(self, t: Float[Array, ""], x: Float[Array, "*shape"]
                                ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """``grad phi`` and ``laplacian phi`` at ``(t, x)``, from the potential."""
        check_shape(x, self.shape, type(self).__name__)
        return self.potential.gradient_and_laplacian(t, x)


@jax.custom_jvp
def _log_cosh(z):
    """``ln cosh z = |z| + ln(1 + e^{-2|z|}) - ln 2``: no overflow; derivative ``tanh z``."""
    a = jnp.abs(z)
    return a + jnp.log1p(jnp.exp(-2 * a)) - math.log(2.0)


@_log_cosh.defjvp
def _log_cosh_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    return _log_cosh(z), jnp.tanh(z) * dz


def _sech2(z):
    """``1 / cosh^2 z = 4 e^{-2|z|} / (1 + e^{-2|z|})^2`` without cancellation."""
    e = jnp.exp(-2 * jnp.abs(z))
    return 4 * e / (1 + e) ** 2


def _activation(z, z2: bool):
    """The one-hidden-layer potentials' ``sigma``: ``ln cosh`` (even) or softplus."""
    return _log_cosh(z) if z2 else jax.nn.softplus(z)


def _activation_slopes(z, z2: bool):
    """``(sigma'(z), sigma''(z))`` of :func:`_activation`, in closed form."""
    if z2:
        return jnp.tanh(z), _sech2(z)
    s = jax.nn.sigmoid(z)
    return s, s * jax.nn.sigmoid(-z)


_POTENTIAL_INITS = ("identity", "uniform")


def _one_hidden_layer_init(name: str, init: str, key, weight_shape, hidden: int,
                           with_bias: bool, dtype):
    """``(weight, bias, out)`` of a one-hidden-layer potential (see ``init`` in
    :class:`OneHiddenLayerPotential`)."""
    if init not in _POTENTIAL_INITS:
        raise ValueError(f"{name}: init must be one of {_POTENTIAL_INITS}, got {init!r}")
    fan_in = math.prod(weight_shape[1:])
    if init == "identity":
        weight = jax.random.normal(key, weight_shape, dtype) / math.sqrt(fan_in)
        bias = jnp.zeros((hidden,), dtype) if with_bias else None
        return weight, bias, jnp.zeros((hidden,), dtype)
    k_w, k_b, k_out = jax.random.split(key, 3)
    a, a_out = 1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(hidden)
    weight = jax.random.uniform(k_w, weight_shape, dtype, -a, a)
    bias = jax.random.uniform(k_b, (hidden,), dtype, -a, a) if with_bias else None
    return weight, bias, jax.random.uniform(k_out, (hidden,), dtype, -a_out, a_out)


class OneHiddenLayerPotential(AbstractPotential):
    """The paper's potential ``phi(x) = sum_k w_k sigma(W_k . x + b_k)`` (arXiv 1809.10188).

    Time-independent (an autonomous flow). With ``z2=True``, ``sigma = ln cosh`` and no
    bias, so ``phi(-x) = phi(x)`` and the flow commutes with ``x -> -x`` (the relaxed Ising
    model's symmetry); otherwise ``sigma = softplus`` with a bias. Closed forms, sharing
    the pre-activations ``z = W vec(x) + b``::

        grad phi      = W^T (w * sigma'(z))
        laplacian phi = sum_k w_k sigma''(z_k) |W_k|^2

    (``ln cosh' = tanh``, ``ln cosh'' = sech^2``; ``softplus' = sigmoid``,
    ``softplus'' = sigmoid (1 - sigmoid)``): two matrix-vector products per configuration,
    matrix-matrix under ``vmap``.

    Initialisation (``init``):

    * ``"identity"`` (default): ``W`` normal with variance ``1 / size`` (fan-in), ``b`` and
      the output weights ``w`` zero, so a new flow is the identity. The identity is a
      saddle point for ``W``: its gradient is proportional to ``w``, so at first only
      ``w`` learns.
    * ``"uniform"``: every layer uniform in ``+-1/sqrt(fan-in)`` (PyTorch's ``nn.Linear``
      default, which the original code used): a new flow is a small random Monge--Ampère
      map and ``W`` learns from the first step. On the relaxed Ising model at ``L = 16``
      it trains markedly faster (``docs/continuous-flows.md``).

    Args:
        shape: the configuration shape (flattened inside; e.g. ``(16, 16)``).
        hidden: number of hidden units (the paper: 512 for 256 spins).
        z2: even potential (``ln cosh``, no bias) or softplus with bias.
        key: initialisation key.
        dtype: parameter dtype (default: the default float).
        init: ``"identity"`` or ``"uniform"`` (above).

    Example:
        >>> phi = OneHiddenLayerPotential((16, 16), hidden=512, key=jax.random.key(0))
        >>> g, lap = phi.gradient_and_laplacian(jnp.asarray(0.0), jnp.ones((16, 16)))
    """

    weight: Float[Array, "hidden size"]
    bias: Float[Array, " hidden"] | None
    out: Float[Array, " hidden"]
    shape: tuple[int, ...] = eqx.field(static=True)
    z2: bool = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, hidden: int, z2: bool = True,
                 key: PRNGKeyArray, dtype=None, init: str = "identity"):
        self.shape = _check_config_shape(shape, "OneHiddenLayerPotential")
        _check_positive("OneHiddenLayerPotential", hidden=hidden)
        self.z2 = bool(z2)
        self.weight, self.bias, self.out = _one_hidden_layer_init(
            "OneHiddenLayerPotential", init, key, (int(hidden), math.prod(self.shape)),
            int(hidden), not self.z2, _default(dtype))

    def _preactivation(self, x):
        z = self.weight @ x.reshape(-1)
        return z if self.bias is None else z + self.bias

    def _potential(self, t, x):
        z = self._preactivation(x)
        sigma = _activation(z, self.z2)
        return jnp.vdot(self.out, sigma)

    def _slopes(self, x):
        return _activation_slopes(self._preactivation(x), self.z2)

    def _gradient(self, t, x):
        d1, _ = self._slopes(x)
        return ((self.out * d1) @ self.weight).reshape(self.shape)

    def _gradient_and_laplacian(self, t, x):
        d1, d2 = self._slopes(x)
        grad = ((self.out * d1) @ self.weight).reshape(self.shape)
        norms = jnp.sum(self.weight**2, axis=1)
        return grad, jnp.sum(self.out * d2 * norms)


class MLPPotential(AbstractPotential):
    """A deeper potential ``phi(t, x) = MLP([vec(x), t])``, a scalar; derivatives by autodiff.

    ``depth`` hidden layers of ``width`` units with ``activation`` (smooth: the flow needs
    its gradient, the log-density its Laplacian, training one derivative more); the last
    layer is zero, so ``phi`` is constant and ``grad phi = 0`` at initialisation. The
    gradient is ``jax.grad``; the Laplacian the trace of the forward-over-reverse Hessian
    (``x.size`` JVPs). With ``time=False`` ``t`` is ignored (an autonomous flow).

    Args:
        shape: the configuration shape.
        width: hidden units per layer.
        depth: number of hidden layers (``>= 1``).
        key: initialisation key.
        time: whether ``phi`` depends on ``t`` (``t`` appended to the input).
        dtype: parameter dtype (default: the default float).
        activation: elementwise nonlinearity (default ``tanh``; ``jax.nn.softplus`` also
            works).

    Example:
        >>> phi = MLPPotential((8,), width=32, depth=2, key=jax.random.key(0))
        >>> field = MongeAmpereField(phi)
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    shape: tuple[int, ...] = eqx.field(static=True)
    time: bool = eqx.field(static=True)
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, width: int, depth: int, key: PRNGKeyArray,
                 time: bool = True, dtype=None,
                 activation: Callable[[Array], Array] = jax.nn.tanh):
        self.shape = _check_config_shape(shape, "MLPPotential")
        _check_positive("MLPPotential", width=width, depth=depth)
        self.time = bool(time)
        widths = (math.prod(self.shape) + int(self.time), *[int(width)] * int(depth), 1)
        self.weights, self.biases = _mlp_params(key, widths, _default(dtype))
        self.activation = activation

    def _potential(self, t, x):
        h = x.reshape(-1)
        if self.time:
            h = jnp.concatenate([h, jnp.asarray(t, x.dtype).reshape(1)])
        return _mlp_apply(self.weights, self.biases, self.activation, h)[0]


#: symmetry groups of :class:`SymmetrizedPotential`
GROUPS = ("d4", "z2", "d4z2")


def _d4_permutations(size: int) -> np.ndarray:
    """``(8, size*size)`` site permutations: ``(g x).flat[k] = x.flat[perm[g, k]]``."""
    sites = np.arange(size * size).reshape(size, size)
    images = [np.rot90(a, k) for a in (sites, sites.T) for k in range(4)]
    return np.stack([m.reshape(-1) for m in images])


class SymmetrizedPotential(AbstractPotential):
    """``phi_G(t, x) = (1/|G|) sum_{g in G} phi(t, g x)``: a potential made invariant under G.

    ``G`` acts on a field on an ``L x L`` lattice (shape ``(L, L)`` or ``(L, L, ...)``, the
    first two axes the lattice):

    * ``"d4"``: the point group of the square, the 8 rotations by multiples of 90 degrees
      and reflections of the ``L x L`` array;
    * ``"z2"``: ``x -> -x`` (any shape);
    * ``"d4z2"``: both, 16 elements.

    Every ``g`` is orthogonal (a permutation of sites, a sign flip), so
    ``grad phi_G(x) = (1/|G|) sum_g g^T grad phi(g x)`` and
    ``laplacian phi_G(x) = (1/|G|) sum_g (laplacian phi)(g x)``, each from the inner
    potential's own methods (closed forms where it has them), evaluated on the ``|G|``
    images batched with ``vmap``: ``|G|`` times the inner cost. The averaged potential is
    invariant, so the Monge–Ampère flow of it is equivariant: ``v(g x) = g v(x)``.

    Args:
        potential: the inner potential.
        group: ``"d4"``, ``"z2"`` or ``"d4z2"``.

    Example:
        >>> inner = MLPPotential((4, 4), width=16, depth=1, key=jax.random.key(0))
        >>> field = MongeAmpereField(SymmetrizedPotential(inner, "d4z2"))
    """

    potential: AbstractPotential
    group: str = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, potential: AbstractPotential, group: str = "d4"):
        if not isinstance(potential, AbstractPotential):
            raise TypeError("SymmetrizedPotential: potential must be an AbstractPotential, got "
                            f"{type(potential).__name__}")
        if group not in GROUPS:
            raise ValueError(f"SymmetrizedPotential: group must be one of {GROUPS}, got "
                             f"{group!r}")
        shape = tuple(potential.shape)
        if "d4" in group and (len(shape) < 2 or shape[0] != shape[1]):
            raise ValueError(f"SymmetrizedPotential: group {group!r} acts on an L x L lattice "
                             "and needs a shape (L, L) or (L, L, ...), got the potential's "
                             f"shape {shape}; use group='z2' for other shapes")
        self.potential, self.group, self.shape = potential, group, shape

    def _elements(self) -> tuple[np.ndarray, np.ndarray]:
        """``(perm, sign)``: ``g x = sign[g] * x`` with sites permuted by ``perm[g]``."""
        if "d4" in self.group:
            perm = _d4_permutations(self.shape[0])
        else:
            perm = np.arange(math.prod(self.shape))[None]
        sign = np.ones(len(perm))
        if "z2" in self.group:
            perm, sign = np.concatenate([perm, perm]), np.concatenate([sign, -sign])
        return perm, sign

    def _sites(self, x):
        """``x`` as ``(sites, rest)``: the axes a group element permutes come first."""
        return x.reshape(math.prod(self.shape[:2]), -1) if "d4" in self.group else \
            x.reshape(-1, 1)

    def _images(self, x):
        perm, sign = self._elements()
        sites = self._sites(x)
        gx = jax.vmap(lambda p, s: s * sites[p])(jnp.asarray(perm),
                                                 jnp.asarray(sign, x.dtype))
        return gx.reshape(len(perm), *self.shape)

    def _pull_back(self, grads):
        """``mean_g g^T grad_g``: undo each element on its image's gradient."""
        perm, sign = self._elements()
        inverse = jnp.asarray(np.argsort(perm, axis=1))

        def back(g, inv, s):
            return s * self._sites(g)[inv]

        out = jax.vmap(back)(grads, inverse, jnp.asarray(sign, grads.dtype))
        return jnp.mean(out, axis=0).reshape(self.shape)

    def _potential(self, t, x):
        return jnp.mean(jax.vmap(self.potential, in_axes=(None, 0))(t, self._images(x)))

    def _gradient(self, t, x):
        grads = jax.vmap(self.potential.gradient, in_axes=(None, 0))(t, self._images(x))
        return self._pull_back(grads)

    def _gradient_and_laplacian(self, t, x):
        grads, laps = jax.vmap(self.potential.gradient_and_laplacian,
                               in_axes=(None, 0))(t, self._images(x))
        return self._pull_back(grads), jnp.mean(laps)


class TranslationInvariantPotential(AbstractPotential):
    """The one-hidden-layer potential averaged exactly over the lattice translations, by FFT.

    For a field on a periodic ``L1 x L2`` lattice (shape ``(L1, L2)``; ``L x L`` usually),
    every hidden unit ``k`` has a full-size kernel ``c_k`` whose cross-correlation with
    ``x`` is taken at every shift ``s``::

        h_k(s) = sum_r c_k(r) x(s + r) + b_k         (indices mod L)
        phi(x) = sum_k w_k mean_s sigma(h_k(s))

    This is :class:`OneHiddenLayerPotential` averaged over the ``L1 L2`` translations, as
    :class:`SymmetrizedPotential` averages over a point group: a dense potential whose
    weight rows are ``c_k`` gives ``phi(x) = mean_s phi_dense(T_s x)`` (the same family of
    functions restricted to translation-invariant ones, and no larger). So
    ``phi(T x) = phi(x)`` for every translation ``T`` and the flow is equivariant,
    ``v(T x) = T v(x)``. ``sigma`` is ``ln cosh`` without bias (``z2=True``: ``phi`` is
    even, the flow commutes with ``x -> -x``) or softplus with a per-unit bias. Closed
    forms, sharing the FFT ``X`` of ``x``, the kernels' FFTs ``C_k`` and the
    pre-activations ``h = IFFT(conj(C_k) X)`` (shape ``(hidden, L1, L2)``)::

        grad phi      = IFFT( sum_k (w_k / L1 L2) C_k FFT(sigma'(h_k)) )
        laplacian phi = sum_k (w_k / L1 L2) |c_k|^2 sum_s sigma''(h_k(s))

    (the gradient is the adjoint convolution; each ``h_k(s)`` is linear in ``x`` with a
    shifted copy of ``c_k`` as coefficients, of squared norm ``|c_k|^2``). Cost per
    configuration: ``2 hidden + 2`` real FFTs of size ``L1 L2``,
    ``O(hidden L^2 log L)``, against ``O(hidden L^2)`` for the dense potential (whose
    explicit average over translations would be ``O(hidden L^4)``); the same
    ``hidden L^2`` parameters. Initialisation as :class:`OneHiddenLayerPotential`'s
    (``init="identity"``: ``c_k`` normal with variance ``1 / (L1 L2)``, ``b`` and ``w``
    zero, a new flow is the identity; ``"uniform"``: fan-in uniform layers).

    Args:
        shape: the lattice shape ``(L1, L2)``.
        hidden: number of hidden units (kernels).
        z2: even potential (``ln cosh``, no bias) or softplus with bias.
        key: initialisation key.
        dtype: parameter dtype (default: the default float).
        init: ``"identity"`` or ``"uniform"``.

    Example:
        >>> phi = TranslationInvariantPotential((16, 16), hidden=64, key=jax.random.key(0))
        >>> field = MongeAmpereField(phi)
        >>> v, div = field.velocity_and_divergence(jnp.asarray(0.0), jnp.ones((16, 16)))
    """

    kernel: Float[Array, "hidden lx ly"]
    bias: Float[Array, " hidden"] | None
    out: Float[Array, " hidden"]
    shape: tuple[int, ...] = eqx.field(static=True)
    z2: bool = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, hidden: int, z2: bool = True,
                 key: PRNGKeyArray, dtype=None, init: str = "identity"):
        self.shape = _check_config_shape(shape, "TranslationInvariantPotential")
        if len(self.shape) != 2:
            raise ValueError("TranslationInvariantPotential: acts on a field on a periodic "
                             f"L1 x L2 lattice and needs a shape (L1, L2), got {self.shape}")
        _check_positive("TranslationInvariantPotential", hidden=hidden)
        self.z2 = bool(z2)
        self.kernel, self.bias, self.out = _one_hidden_layer_init(
            "TranslationInvariantPotential", init, key, (int(hidden), *self.shape),
            int(hidden), not self.z2, _default(dtype))

    def _preactivation(self, x):
        """``(C, h)``: the kernels' FFTs and the pre-activations at every shift."""
        kernel_f = jnp.fft.rfft2(self.kernel)
        h = jnp.fft.irfft2(jnp.conj(kernel_f) * jnp.fft.rfft2(x)[None], s=self.shape)
        return kernel_f, (h if self.bias is None else h + self.bias[:, None, None])

    def _potential(self, t, x):
        _, h = self._preactivation(x)
        sigma = _activation(h, self.z2)
        return jnp.vdot(self.out, jnp.mean(sigma, axis=(1, 2)))

    def _slopes(self, x):
        kernel_f, h = self._preactivation(x)
        return kernel_f, *_activation_slopes(h, self.z2)

    def _pull_back(self, kernel_f, d1):
        """``sum_k (w_k / L1 L2) c_k (*) d1_k``: the adjoint of the correlations."""
        scale = self.out / math.prod(self.shape)
        summed = jnp.tensordot(scale, kernel_f * jnp.fft.rfft2(d1), axes=1)
        return jnp.fft.irfft2(summed, s=self.shape)

    def _gradient(self, t, x):
        kernel_f, d1, _ = self._slopes(x)
        return self._pull_back(kernel_f, d1)

    def _gradient_and_laplacian(self, t, x):
        kernel_f, d1, d2 = self._slopes(x)
        norms = jnp.sum(self.kernel**2, axis=(1, 2))
        lap = jnp.sum(self.out * norms * jnp.mean(d2, axis=(1, 2)))
        return self._pull_back(kernel_f, d1), lap


class ConvPotential(AbstractPotential):
    """A one-hidden-layer potential of local, translation-invariant features: a convolution.

    For a field on a periodic ``L1 x L2`` lattice, each of ``hidden`` channels has a small
    ``k x k`` kernel ``c_k`` (``k`` odd, offsets ``r`` from ``-(k-1)/2`` to ``(k-1)/2``)::

        h_k(s) = sum_r c_k(r) x(s + r) + b_k           (indices mod L)
        phi(x) = sum_k w_k sum_s sigma(h_k(s))

    This is :class:`TranslationInvariantPotential` with kernels supported on a ``k x k``
    window, summed instead of averaged over the shifts ``s`` (so ``phi`` is extensive and
    the field ``grad phi`` stays of order one per site whatever the lattice size). The
    correlations are one gather of the ``k^2`` shifted copies of the field and one matrix
    product, ``hidden k^2 L1 L2`` operations per configuration and no FFT (on 2 CPU cores,
    ``lax.conv`` and its transpose took 1.7x as long for a training gradient, ``jnp.roll``
    copies 5x). The flow is local in one step but, composed over the solver's steps,
    correlates the whole lattice. ``sigma`` is ``ln cosh`` without bias (``z2=True``:
    ``phi`` even, the flow commutes with ``x -> -x``) or
    softplus with a per-channel bias. Closed forms, sharing ``h``::

        grad phi      = sum_k w_k c_k (*) sigma'(h_k)          (the adjoint correlation)
        laplacian phi = sum_k w_k |c_k|^2 sum_s sigma''(h_k(s))

    (every ``h_k(s)`` is linear in ``x`` with a shifted copy of ``c_k`` as coefficients,
    which needs ``k <= L1, L2`` so that no site enters one window twice). Initialisation
    as :class:`OneHiddenLayerPotential`'s with fan-in ``k^2`` (``"identity"``: zero output
    weights, a new flow is the identity; ``"uniform"``: fan-in uniform layers).

    Args:
        shape: the lattice shape ``(L1, L2)``.
        hidden: number of channels (kernels).
        kernel_size: the odd window size ``k``, at most ``min(L1, L2)``.
        z2: even potential (``ln cosh``, no bias) or softplus with bias.
        key: initialisation key.
        dtype: parameter dtype (default: the default float).
        init: ``"identity"`` or ``"uniform"``.

    Example:
        >>> phi = ConvPotential((16, 16), hidden=16, kernel_size=5, key=jax.random.key(0))
        >>> field = MongeAmpereField(phi)
        >>> v, div = field.velocity_and_divergence(jnp.asarray(0.0), jnp.ones((16, 16)))
    """

    kernel: Float[Array, "hidden k k"]
    bias: Float[Array, " hidden"] | None
    out: Float[Array, " hidden"]
    shape: tuple[int, ...] = eqx.field(static=True)
    z2: bool = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, hidden: int, kernel_size: int = 5,
                 z2: bool = True, key: PRNGKeyArray, dtype=None, init: str = "identity"):
        self.shape = _check_config_shape(shape, "ConvPotential")
        if len(self.shape) != 2:
            raise ValueError("ConvPotential: acts on a field on a periodic L1 x L2 lattice "
                             f"and needs a shape (L1, L2), got {self.shape}")
        _check_positive("ConvPotential", hidden=hidden, kernel_size=kernel_size)
        k = int(kernel_size)
        if k % 2 == 0 or k > min(self.shape):
            raise ValueError(f"ConvPotential: kernel_size must be odd and at most the lattice "
                             f"size {min(self.shape)}, got {k}")
        self.z2 = bool(z2)
        self.kernel, self.bias, self.out = _one_hidden_layer_init(
            "ConvPotential", init, key, (int(hidden), k, k), int(hidden), not self.z2,
            _default(dtype))

    def _offsets(self, sign: int) -> np.ndarray:
        """``(k^2, L1 L2)`` flat site indices of ``s + sign r`` for each offset ``r`` (rows, in
        the kernel's row-major order) and site ``s`` (columns)."""
        k = self.kernel.shape[-1]
        r = np.arange(k) - k // 2
        i = np.arange(self.shape[0])[None, None, :, None] + sign * r[:, None, None, None]
        j = np.arange(self.shape[1])[None, None, None, :] + sign * r[None, :, None, None]
        return ((i % self.shape[0]) * self.shape[1] + j % self.shape[1]).reshape(k * k, -1)

    def _correlate(self, x):
        """``h_k(s) - b_k = sum_r c_k(r) x(s + r)``, shape ``(hidden, L1, L2)``: the ``k^2``
        shifted copies of ``x`` (one gather) times the kernels (one matrix product)."""
        patches = x.reshape(-1)[jnp.asarray(self._offsets(+1))]
        h = self.kernel.reshape(self.kernel.shape[0], -1) @ patches
        return h.reshape(-1, *self.shape)

    def _preactivation(self, x):
        h = self._correlate(x)
        return h if self.bias is None else h + self.bias[:, None, None]

    def _potential(self, t, x):
        h = self._preactivation(x)
        sigma = _activation(h, self.z2)
        return jnp.vdot(self.out, jnp.sum(sigma, axis=(1, 2)))

    def _slopes(self, x):
        return _activation_slopes(self._preactivation(x), self.z2)

    def _pull_back(self, d1):
        """``sum_k w_k c_k (*) d1_k``, the transpose of the correlation:
        ``g(u) = sum_r D_r(u - r)`` with ``D_r = sum_k w_k c_k(r) d1_k`` (a matrix product,
        then one gather of the shifted rows)."""
        weighted = (self.out[:, None] * self.kernel.reshape(self.kernel.shape[0], -1))
        rows = weighted.T @ d1.reshape(d1.shape[0], -1)             # (k^2, L1 L2)
        shifted = jnp.take_along_axis(rows, jnp.asarray(self._offsets(-1)), axis=1)
        return jnp.sum(shifted, axis=0).reshape(self.shape)

    def _gradient(self, t, x):
        d1, _ = self._slopes(x)
        return self._pull_back(d1)

    def _gradient_and_laplacian(self, t, x):
        d1, d2 = self._slopes(x)
        norms = jnp.sum(self.kernel**2, axis=(1, 2))
        lap = jnp.sum(self.out * norms * jnp.sum(d2, axis=(1, 2)))
        return self._pull_back(d1), lap


# ----------------------------------------------------------------------------------------
# Identical particles: configurations of shape (n, dim)


class _ScalarNet(eqx.Module):
    """``f(s, t)``: a small MLP from two scalars to one, last layer zero (so ``f = 0``)."""

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]

    def __init__(self, *, width: int, depth: int, key: PRNGKeyArray, dtype):
        self.weights, self.biases = _mlp_params(key, (2, *[width] * depth, 1), dtype)

    def __call__(self, s: Float[Array, ""], t: Float[Array, ""]) -> Float[Array, ""]:
        h = jnp.stack([s, t])
        return _mlp_apply(self.weights, self.biases, jnp.tanh, h)[0]

    def taylor(self, s: Float[Array, " m"], t: Float[Array, ""], order: int
               ) -> tuple[Float[Array, " m"], ...]:
        """``(f, df/ds)`` (order 1) or ``(f, df/ds, d^2f/ds^2)`` (order 2), elementwise."""
        def value(u):
            return self(u, t)

        def first(u):
            return jax.jvp(value, (u,), (jnp.ones_like(u),))

        def second(u):
            (f, df), (_, d2f) = jax.jvp(first, (u,), (jnp.ones_like(u),))
            return f, df, d2f

        return jax.vmap(first if order == 1 else second)(s)


def _pair_geometry(x):
    """Differences ``r_ij = x_i - x_j``, squared distances, off-diagonal mask, radii^2."""
    n = x.shape[0]
    diff = x[:, None, :] - x[None, :, :]
    return diff, jnp.sum(diff**2, axis=-1), 1 - jnp.eye(n, dtype=x.dtype), jnp.sum(x**2, -1)


class ParticlePotential(AbstractPotential):
    """A symmetric Monge–Ampère potential for ``n`` identical particles in ``dim`` dimensions.

    ``phi(t, x) = sum_{i<j} f(|x_i - x_j|^2, t) + sum_i g(|x_i|^2, t)`` with ``f`` and
    ``g`` small MLPs (``tanh``) of two scalars. Squared distances keep ``phi`` smooth when
    particles meet or one sits at the origin. Invariant under relabelling the particles
    and under rotations and reflections (``O(dim)``) by construction, so the flow
    ``v = grad phi`` is permutation- and rotation-equivariant. With ``s = |r|^2`` in
    ``dim = d`` dimensions (closed forms; ``f', f''`` by forward-mode autodiff of the
    scalar nets)::

        grad_i phi    = sum_{j != i} 2 f'(s_ij) (x_i - x_j) + 2 g'(|x_i|^2) x_i
        laplacian phi = sum_{i != j} (2 d f' + 4 s_ij f'') + sum_i (2 d g' + 4 |x_i|^2 g'')

    (each unordered pair appears twice in the ordered sum: once per particle). The
    gradient is thus a :class:`BackflowField` with ``eta = 2 f'``, ``mu = 2 g'``. The last
    layers are zero (``phi = 0`` at initialisation: the identity flow). Cost
    ``O(n^2 width^2)`` per configuration for the gradient and the Laplacian alike.

    Args:
        n: number of particles.
        dim: spatial dimension.
        width: hidden units of ``f`` and ``g``.
        depth: hidden layers of ``f`` and ``g`` (``>= 1``).
        key: initialisation key.
        dtype: parameter dtype (default: the default float).

    Example:
        >>> phi = ParticlePotential(6, 2, width=32, depth=2, key=jax.random.key(0))
        >>> field = MongeAmpereField(phi)
    """

    pair: _ScalarNet
    one_body: _ScalarNet
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, n: int, dim: int, *, width: int, depth: int, key: PRNGKeyArray,
                 dtype=None):
        _check_positive("ParticlePotential", n=n, dim=dim, width=width, depth=depth)
        dtype = _default(dtype)
        k_pair, k_one = jax.random.split(key)
        self.pair = _ScalarNet(width=int(width), depth=int(depth), key=k_pair, dtype=dtype)
        self.one_body = _ScalarNet(width=int(width), depth=int(depth), key=k_one, dtype=dtype)
        self.shape = (int(n), int(dim))

    def _potential(self, t, x):
        t = jnp.asarray(t, x.dtype)
        _, s, mask, radii = _pair_geometry(x)
        f = jax.vmap(self.pair, in_axes=(0, None))(s.reshape(-1), t).reshape(s.shape)
        g = jax.vmap(self.one_body, in_axes=(0, None))(radii, t)
        return 0.5 * jnp.sum(mask * f) + jnp.sum(g)

    def _gradient(self, t, x):
        t = jnp.asarray(t, x.dtype)
        diff, s, mask, radii = _pair_geometry(x)
        _, df = self.pair.taylor(s.reshape(-1), t, 1)
        _, dg = self.one_body.taylor(radii, t, 1)
        eta = 2 * mask * df.reshape(s.shape)
        return jnp.einsum("ij,ijd->id", eta, diff) + (2 * dg)[:, None] * x

    def _gradient_and_laplacian(self, t, x):
        t = jnp.asarray(t, x.dtype)
        diff, s, mask, radii = _pair_geometry(x)
        d = x.shape[1]
        _, df, d2f = self.pair.taylor(s.reshape(-1), t, 2)
        _, dg, d2g = self.one_body.taylor(radii, t, 2)
        df, d2f = df.reshape(s.shape), d2f.reshape(s.shape)
        grad = jnp.einsum("ij,ijd->id", 2 * mask * df, diff) + (2 * dg)[:, None] * x
        lap = jnp.sum(mask * (2 * d * df + 4 * s * d2f)) + jnp.sum(2 * d * dg + 4 * radii * d2g)
        return grad, lap


class BackflowField(AbstractVelocityField):
    """A permutation- and rotation-equivariant field for ``n`` identical particles.

    ``v_i = sum_{j != i} eta(|x_i - x_j|^2, t) (x_i - x_j) + mu(|x_i|^2, t) x_i`` with
    ``eta`` and ``mu`` small MLPs (``tanh``) of two scalars: relabelling the particles
    relabels the velocities, and rotating or reflecting the configuration (``O(dim)``)
    rotates them. Squared distances keep ``v`` smooth everywhere. (Since ``eta`` and ``mu``
    see ``x`` only through ``s``, ``v`` is the gradient of ``sum_{i<j} E(s_ij) +
    sum_i M(|x_i|^2)`` with ``E' = eta / 2``, ``M' = mu / 2``: the family of
    :class:`ParticlePotential`'s flows, parametrised by the velocity instead of the
    potential, so the divergence needs one derivative of the nets, not two.)

    The divergence is analytic (``analytic_divergence = True``): for ``eta(s) r`` with
    ``s = |r|^2`` in ``d`` dimensions, ``div_r = d eta(s) + 2 s eta'(s)``, and each pair
    term appears in both particles' velocities, so::

        div v = sum_{i != j} (d eta(s_ij) + 2 s_ij eta'(s_ij)) + sum_i (d mu + 2 |x_i|^2 mu')

    with ``eta', mu'`` by forward-mode autodiff of the scalar nets: about the cost of one
    velocity evaluation, against ``n * dim`` JVPs for the generic trace. The last layers
    are zero (``v = 0`` at initialisation: the identity flow).

    Args:
        n: number of particles.
        dim: spatial dimension.
        width: hidden units of ``eta`` and ``mu``.
        depth: hidden layers of ``eta`` and ``mu`` (``>= 1``).
        key: initialisation key.
        dtype: parameter dtype (default: the default float).

    Example:
        >>> field = BackflowField(6, 2, width=32, depth=2, key=jax.random.key(0))
        >>> v, div = field.velocity_and_divergence(jnp.asarray(0.0), jnp.ones((6, 2)))
    """

    eta: _ScalarNet
    mu: _ScalarNet
    shape: tuple[int, ...] = eqx.field(static=True)
    analytic_divergence: ClassVar[bool] = True

    def __init__(self, n: int, dim: int, *, width: int, depth: int, key: PRNGKeyArray,
                 dtype=None):
        _check_positive("BackflowField", n=n, dim=dim, width=width, depth=depth)
        dtype = _default(dtype)
        k_eta, k_mu = jax.random.split(key)
        self.eta = _ScalarNet(width=int(width), depth=int(depth), key=k_eta, dtype=dtype)
        self.mu = _ScalarNet(width=int(width), depth=int(depth), key=k_mu, dtype=dtype)
        self.shape = (int(n), int(dim))

    def _velocity(self, t, x):
        t = jnp.asarray(t, x.dtype)
        diff, s, mask, radii = _pair_geometry(x)
        eta = jax.vmap(self.eta, in_axes=(0, None))(s.reshape(-1), t).reshape(s.shape)
        mu = jax.vmap(self.mu, in_axes=(0, None))(radii, t)
        return jnp.einsum("ij,ijd->id", mask * eta, diff) + mu[:, None] * x

    def velocity_and_divergence(self, t: Float[Array, ""], x: Float[Array, "*shape"]
                                ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """``v(t, x)`` and its divergence by the closed form above."""
        check_shape(x, self.shape, type(self).__name__)
        t = jnp.asarray(t, x.dtype)
        diff, s, mask, radii = _pair_geometry(x)
        d = x.shape[1]
        eta, deta = self.eta.taylor(s.reshape(-1), t, 1)
        mu, dmu = self.mu.taylor(radii, t, 1)
        eta, deta = eta.reshape(s.shape), deta.reshape(s.shape)
        v = jnp.einsum("ij,ijd->id", mask * eta, diff) + mu[:, None] * x
        div = jnp.sum(mask * (d * eta + 2 * s * deta)) + jnp.sum(d * mu + 2 * radii * dmu)
        return v, div
