r"""A periodic, translation- and permutation-equivariant residual flow for electrons in a box.

Electrons of the uniform electron gas live in a periodic box of side ``L`` (here
``box_length``; ``k = 2 pi / L`` its smallest reciprocal-lattice wavenumber). A flow for
them should map the torus to itself, so this residual layer ``z = x + f(x)`` (an
:class:`AbstractResidualBijection`, configurations of shape ``(n, dim)``) builds ``f`` only
from the pair displacements ``r_ij = x_i - x_j`` seen through periodic features:

.. math::

    p(r) = [\cos(k r_a),\ \sin(k r_a)]_{a=1..dim},\qquad
    d(r) = \frac{L}{\pi}\Bigl(\sum_a \sin^2\frac{\pi r_a}{L}\Bigr)^{1/2}.

Consequences, exact for any parameters:

* **translation equivariance:** ``r_ij`` is unchanged by ``x -> x + c`` (``c`` the same
  for every electron), so ``f(x + c) = f(x)`` and ``z(x + c) = z(x) + c``;
* **periodicity:** moving one electron by a lattice vector, ``x_i -> x_i + L e_a``, shifts
  ``r_ij`` by ``+-L e_a``, which ``p`` and ``d`` do not see, so ``z`` moves by the same
  lattice vector: ``z`` commutes with the lattice translations and is a bijection of the
  torus as well as of ``R^{n dim}``;
* **permutation equivariance:** one network for all electrons and a mean over the others,
  so ``f(P x) = P f(x)`` and the log-det is invariant.

The smooth periodic distance ``d`` (:func:`periodic_distance`) is periodic in each
coordinate, 1-Lipschitz and ``|r| (1 + O(|r|^2 / L^2))`` near 0: the distance on the circle
of circumference ``L``, chord rather than arc. The layer uses the softened ``rho(r) =
sqrt(1 + (k d)^2) = (1 + 2 sum_a (1 - cos k r_a))^{1/2}`` (smooth everywhere, so the flow
is smooth when electrons meet, like :class:`FermiNetLayer`'s ``sqrt(1 + |v|^2)``).

**The layer** (one-layer pair stream of width ``pair_width``, a ``tanh`` MLP of ``depth``
hidden layers of ``width`` on the one-electron stream, every weight spectrally normalised,
``hat W = W / ||W||_2``):

.. math::

    q_{ij} = [p(r_{ij}),\ \rho(r_{ij})] / \sqrt2,\quad
    h_{ij} = \tanh(\hat W_p q_{ij} + b_p),\quad
    g_i = \tfrac1n \textstyle\sum_j h_{ij},\quad
    c_i = [g_i - \bar g,\ \bar g],\quad \bar g = \tfrac1n \sum_k g_k,

    f_i(x) = \frac{\Lambda \tanh\gamma}{k \beta_n}\ \widehat{\rm MLP}(c_i),\qquad
    \beta_n = \sqrt{2 (n - 1) / n},

with ``Lambda = lipschitz`` and ``gamma`` a learnable gain. ``f_i`` is a function of the
features alone, hence periodic; with a near-linear MLP it is a learned periodic backflow
``f_i ~ (1/n) sum_j phi(r_ij)`` (``sin`` features give it a direction), and the MLP adds
many-body terms through ``g_i`` and the global ``bar g``.

**The bound** ``Lip(f) <= Lambda |tanh gamma| < Lambda < 1`` (Euclidean norm on the
flattened configuration). ``|d[cos, sin](k r_a)| = k |dr_a|`` and ``|d rho| <= k |dr|``
(``|grad d| <= 1``, ``k d / rho <= 1``), so ``|dq| <= k |dr|`` and ``|dh_ij| <= k |dx_i -
dx_j|``, with ``dh_ii = 0``. By Cauchy--Schwarz over the ``n - 1`` others, ``sum_i
|dg_i|^2 <= ((n - 1) / n^2) k^2 sum_ij |dx_i - dx_j|^2 = ((n - 1) / n^2) k^2 (2 n |dx|^2 -
2 |sum_i dx_i|^2) <= beta_n^2 k^2 |dx|^2``. Centring costs nothing: ``|dc|^2 = sum_i |dg_i
- d bar g|^2 + n |d bar g|^2 = sum_i |dg_i|^2``. So ``Lip(c) <= k beta_n``; the shared MLP
is 1-Lipschitz on the stack, and the prefactor divides by ``k beta_n``. The residual is
therefore a contraction for *any* parameters (and any ``box_length > 0``), which makes the
layer invertible with a positive Jacobian (see :class:`AbstractResidualBijection`).

**Initialisation.** Weights are (semi-)orthogonal: spectrally normalised, all their
singular values are then 1, so each layer is an isometry on its input's span and the
layer's actual Lipschitz constant reaches 10--20 % of the bound (with Gaussian weights,
``||W v|| / ||W||_2`` is small for typical ``v`` and the flow uses 1--2 % of it); gradient
ascent on the weights reaches 65--75 % of it, so the bound is not loose. The gain starts
at ``gamma = 0.1``: close to the identity, not exactly it, with room to grow.

The Jacobian of ``f`` is built in closed form (chain rule through the pair stream, the
means and the MLP; an order of magnitude cheaper than ``n dim`` JVPs), then ``slogdet``.
The forward transform uses only elementwise maps, matrix products, sums and ``slogdet``
(no loops, no rounding), so it runs under forward-mode Laplacians (``folx`` and
jvp-of-jvp). :func:`minimum_image`, :func:`periodic_features` and
:func:`periodic_distance` are helpers for callers (Hamiltonians, Jastrow factors).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

from ._chain import Chain
from ._equivariant import (
    AbstractResidualBijection,
    _affine,
    _check_iteration,
    _check_sizes,
    _default,
    _unit,
    _unit_mlp,
)

#: ``gamma`` at initialisation: ``tanh(0.1) ~ 0.1`` of the bound, close to the identity
#: (but not exactly it, so every weight has a gradient from the first step).
_INIT_GAIN = 0.1


def _orthogonal(key, shape, dtype):
    """A (semi-)orthogonal ``(a, b)`` matrix: orthonormal rows or columns, whichever are
    fewer; all singular values 1."""
    return jax.nn.initializers.orthogonal()(key, shape, dtype)


def _orthogonal_mlp_init(key, widths, dtype):
    """Orthogonal weights and zero biases for :func:`_unit_mlp`."""
    keys = jax.random.split(key, len(widths) - 1)
    weights = tuple(_orthogonal(k, (a, b), dtype)
                    for k, a, b in zip(keys, widths[:-1], widths[1:], strict=True))
    return weights, tuple(jnp.zeros((b,), dtype) for b in widths[1:])


def minimum_image(dx: Float[Array, "*shape"], box_length: Real[ArrayLike, ""]
                  ) -> Float[Array, "*shape"]:
    """The minimum-image displacement ``dx - L round(dx / L)``, each coordinate in
    ``[-L/2, L/2]``.

    Piecewise the identity (derivative 1, jumping at ``+-L/2``); for bookkeeping, not for
    the differentiable path of a flow (use :func:`periodic_features`, which needs no
    image).

    Example:
        >>> minimum_image(jnp.array([0.9, -0.7]), 1.0)     # [-0.1, 0.3]
    """
    return dx - box_length * jnp.round(dx / box_length)


def periodic_features(dx: Float[Array, "*batch dim"], box_length: Real[ArrayLike, ""]
                      ) -> Float[Array, "*batch 2*dim"]:
    """``[cos(2 pi dx_a / L), sin(2 pi dx_a / L)]``: all cosines, then all sines (last axis
    ``2 dim``).

    Periodic in each coordinate with period ``L``, smooth, and ``k = 2 pi / L``-Lipschitz
    (exactly: ``|d features| = k |d dx|``).

    Example:
        >>> periodic_features(jnp.zeros((3, 2)), 5.0)      # (3, 4): [1, 1, 0, 0] each
    """
    phase = (2 * math.pi / box_length) * dx
    return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)], axis=-1)


def periodic_distance(dx: Float[Array, "*batch dim"], box_length: Real[ArrayLike, ""]
                      ) -> Float[Array, "*batch"]:
    r"""The smooth periodic distance ``d(dx) = (L / pi) sqrt(sum_a sin^2(pi dx_a / L))``.

    Periodic with period ``L`` in each coordinate, 1-Lipschitz, ``|dx| (1 + O(|dx|^2 /
    L^2))`` near 0 and at most ``L sqrt(dim) / pi``: per coordinate, the chord of the circle
    of circumference ``L``. Smooth except at the lattice points ``dx in L Z^dim``, where it
    has a cone like ``|dx|`` (an electron--electron cusp, through the boundary too). Where
    it is exactly 0 (``dx = 0``: the self-pair ``x_i - x_i``) its gradient is taken as 0
    rather than ``sqrt'(0) = inf``.

    Example:
        >>> periodic_distance(jnp.array([0.1, 0.0]), 10.0)  # 0.09998...
    """
    s = jnp.sum(jnp.sin((math.pi / box_length) * dx) ** 2, axis=-1)
    apart = s > 0
    return (box_length / math.pi) * jnp.where(apart, jnp.sqrt(jnp.where(apart, s, 1)), 0)


def _check_box(what: str, box_length, dtype) -> Array:
    """``box_length`` as a 0-d array of ``dtype``, checked positive where it is concrete."""
    box = jnp.asarray(box_length, dtype)
    if box.ndim != 0:
        raise ValueError(f"{what}: box_length must be a scalar (a float or 0-d array), got "
                         f"shape {box.shape}")
    if not isinstance(box, jax.core.Tracer) and not float(box) > 0:
        raise ValueError(f"{what}: box_length must be positive (the side of the periodic "
                         f"box), got {float(box)}")
    return box


class PeriodicFermiNetLayer(AbstractResidualBijection):
    r"""One periodic FermiNet-style residual layer ``z_i = x_i + f_i(x)`` for electrons in a
    box of side ``box_length``: translation-, lattice- and permutation-equivariant,
    invertible.

    ``f`` sees only pair displacements through periodic features, so ``z(x + c) = z(x) +
    c`` for any translation ``c`` and ``z(x + L e_{i,a}) = z(x) + L e_{i,a}``; ``f(P x) = P
    f(x)``. Its Lipschitz constant is at most ``lipschitz * |tanh gain| < lipschitz < 1``
    for any parameters. The maths, and the proof of the bound, are in
    :mod:`thermax.bijections._periodic`.

    ``box_length`` is a 0-d array, so a new box (density) does not recompile; it is a
    constant of the layer, not a parameter: its gradient is stopped (zero). It is still an
    inexact array leaf, so leave it out of the trained parameters (``eqx.partition``) where
    an optimiser would change it without a gradient (weight decay).

    Cost: ``O(n^2 pair_width dim + n width^2)`` per evaluation of ``f``; ``transform`` adds
    the Jacobian in closed form (``O(n^2 pair_width dim^2 + n width^2 dim)``, not ``n dim``
    JVPs) and an ``O((n dim)^3)`` ``slogdet``; ``inverse`` the fixed-point iterations
    (``O(ln(tol) / ln(lipschitz))``).

    Args:
        n: number of electrons.
        dim: spatial dimension.
        box_length: side ``L`` of the periodic box (a positive float or 0-d array).
        width: hidden units of the per-electron MLP.
        depth: hidden layers of the per-electron MLP (``>= 1``).
        pair_width: features of the pair stream (default ``width``).
        lipschitz: the guaranteed bound on ``Lip(f)``, in ``(0, 1)`` (default 0.9).
        max_iter: the most iterations of the fixed-point inverse (see
            :class:`AbstractResidualBijection`).
        tol: the tolerance of the fixed-point inverse (``None``: 100 machine epsilons).
        key: initialisation key.
        dtype: parameter dtype (default: the default float).

    Example:
        >>> layer = PeriodicFermiNetLayer(4, 2, 5.0, width=16, depth=2,
        ...                               key=jax.random.key(0))
        >>> z, log_det = layer.transform_and_log_det(x)       # x: (4, 2)
        >>> x_back = layer.inverse(z)
    """

    pair_weight: Float[Array, "features pair_width"]
    pair_bias: Float[Array, " pair_width"]
    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    gain: Float[Array, ""]
    box_length: Float[Array, ""]
    shape: tuple[int, ...] = eqx.field(static=True)
    lipschitz: float = eqx.field(static=True)
    max_iter: int = eqx.field(static=True)
    tol: float | None = eqx.field(static=True)

    def __init__(self, n: int, dim: int, box_length: Real[ArrayLike, ""], *,
                 width: int, depth: int, key: PRNGKeyArray, pair_width: int | None = None,
                 lipschitz: float = 0.9, max_iter: int = 500, tol: float | None = None,
                 dtype=None):
        what = "PeriodicFermiNetLayer"
        pair_width = width if pair_width is None else pair_width
        _check_sizes(what, n=n, dim=dim, width=width, depth=depth, pair_width=pair_width)
        self.lipschitz, self.max_iter, self.tol = _check_iteration(what, lipschitz, max_iter,
                                                                   tol)
        n, dim, width, depth, pair_width = map(int, (n, dim, width, depth, pair_width))
        dtype = _default(dtype)
        self.box_length = _check_box(what, box_length, dtype)
        k_pair, k_mlp = jax.random.split(key)
        self.pair_weight = _orthogonal(k_pair, (2 * dim + 1, pair_width), dtype)
        self.pair_bias = jnp.zeros((pair_width,), dtype)
        self.weights, self.biases = _orthogonal_mlp_init(
            k_mlp, (2 * pair_width, *[width] * depth, dim), dtype)
        self.gain = jnp.full((), _INIT_GAIN, dtype)
        self.shape = (n, dim)

    def _streams(self, x):
        """``k``, the pair trigonometry, ``rho``, the pair stream ``h``, the one-electron
        input ``c`` and the output prefactor."""
        n = x.shape[0]
        k = 2 * math.pi / jax.lax.stop_gradient(self.box_length)
        phase = k * (x[:, None, :] - x[None, :, :])
        cos, sin = jnp.cos(phase), jnp.sin(phase)
        # rho = sqrt(1 + (k d)^2) = sqrt(1 + 2 sum_a (1 - cos)): smooth, also at r = 0
        rho = jnp.sqrt(1 + 2 * jnp.sum(1 - cos, axis=-1, keepdims=True))
        q = jnp.concatenate([cos, sin, rho], axis=-1) / math.sqrt(2)
        h = jnp.tanh(_affine(q, _unit(self.pair_weight), self.pair_bias))
        g = jnp.sum(h, axis=1) / n
        g_mean = jnp.broadcast_to(jnp.mean(g, axis=0), g.shape)
        c = jnp.concatenate([g - g_mean, g_mean], axis=-1)
        beta = math.sqrt(2 * max(n - 1, 1) / n)  # Lip(c) <= k beta (n = 1: f is constant)
        scale = (self.lipschitz / beta / k) * jnp.tanh(self.gain)
        return k, cos, sin, rho, h, c, scale

    def _residual(self, x):
        *_, c, scale = self._streams(x)
        return scale * _unit_mlp(self.weights, self.biases, c)

    def _residual_and_jacobian(self, x):
        # Closed form (an order of magnitude cheaper than n dim JVPs). With A_ij = dh_ij /
        # dr_ij (pair_width, dim), S_i = sum_j A_ij, T_m = sum_i A_im and M_i = d MLP / dc_i
        # split into the rows M^a (of g_i - bar g) and M^b (of bar g):
        #   dg_i / dx_m = (delta_im S_i - A_im) / n,  d bar g / dx_m = (S_m - T_m) / n^2,
        #   df_i / dx_m = scale [M^a_i^T dg_i / dx_m + (M^b_i - M^a_i)^T d bar g / dx_m].
        n, dim = x.shape
        k, cos, sin, rho, h, c, scale = self._streams(x)
        units = [_unit(w) for w in self.weights]
        hidden = []
        for w, b in zip(units[:-1], self.biases[:-1], strict=True):
            hidden.append(jnp.tanh(_affine(c if not hidden else hidden[-1], w, b)))
        out = _affine(hidden[-1], units[-1], self.biases[-1])
        m = jnp.broadcast_to(units[-1][None], (n, *units[-1].shape))
        for w, t in zip(reversed(units[:-1]), reversed(hidden), strict=True):
            m = jnp.einsum("fw,iwa->ifa", w, (1 - t**2)[:, :, None] * m)
        half = m.shape[1] // 2
        m_a, m_b = m[:, :half], m[:, half:]
        # dq / dr (n, n, 2 dim + 1, dim): cos rows -k sin, sin rows k cos (diagonal), rho
        # row k sin / rho; the 1 / sqrt(2) of q
        eye = jnp.eye(dim, dtype=x.dtype)[None, None]
        dq = jnp.concatenate([-sin[..., :, None] * eye, cos[..., :, None] * eye,
                              (sin / rho)[..., None, :]], axis=-2) * (k / math.sqrt(2))
        a = (1 - h**2)[..., None] * jnp.einsum("ijfb,fp->ijpb", dq, _unit(self.pair_weight))
        s_sum, t_sum = jnp.sum(a, axis=1), jnp.sum(a, axis=0)
        jac = (jnp.einsum("ij,iab->iajb", jnp.eye(n, dtype=x.dtype),
                          jnp.einsum("ipa,ipb->iab", m_a, s_sum))
               - jnp.einsum("ipa,impb->iamb", m_a, a)) / n
        jac = jac + jnp.einsum("ipa,mpb->iamb", m_b - m_a, s_sum - t_sum) / n**2
        return scale * out, (scale * jac).reshape(n * dim, n * dim)


def periodic_ferminet_flow(n: int, dim: int, box_length: Real[ArrayLike, ""], *,
                           layers: int, width: int, depth: int, key: PRNGKeyArray,
                           pair_width: int | None = None, lipschitz: float = 0.9,
                           max_iter: int = 500, tol: float | None = None, dtype=None
                           ) -> Chain:
    """``layers`` :class:`PeriodicFermiNetLayer` s in a :class:`Chain`, close to the
    identity at initialisation.

    A composition of translation-, lattice- and permutation-equivariant bijections, so
    itself one (a bijection of the torus). A :class:`Chain` (a Python loop) rather than a
    :class:`Scan`, so that every Laplacian method, raw ``folx.forward_laplacian``
    included, traces it directly (folx's ``scan`` rule mis-stacks the per-layer log-dets);
    compile time grows with ``layers``, a handful in practice. ``transform`` is explicit
    (log-det the sum of the layers'); ``inverse`` runs the layers' fixed-point inverses,
    last layer first.

    Args:
        n: number of electrons.
        dim: spatial dimension.
        box_length: side of the periodic box (a positive float or 0-d array).
        layers: number of residual layers (``>= 1``).
        width: features of each layer's one-electron stream (see
            :class:`PeriodicFermiNetLayer`).
        depth: hidden layers of each layer's MLP.
        pair_width: features of each layer's pair stream (default ``width``).
        lipschitz: each layer's bound on ``Lip(f)``, in ``(0, 1)``.
        max_iter: the most iterations of each layer's fixed-point inverse.
        tol: the tolerance of each layer's fixed-point inverse.
        dtype: parameter dtype (default: the default float).
        key: initialisation key.

    Example:
        >>> flow = periodic_ferminet_flow(13, 2, 6.4, layers=2, width=16, depth=2,
        ...                               key=jax.random.key(0))
        >>> zeta, log_det = flow.transform_and_log_det(x)     # x: (13, 2)
    """
    _check_sizes("periodic_ferminet_flow", layers=layers)
    keys = jax.random.split(key, int(layers))
    return Chain([PeriodicFermiNetLayer(n, dim, box_length, width=width, depth=depth, key=k,
                                        pair_width=pair_width, lipschitz=lipschitz,
                                        max_iter=max_iter, tol=tol, dtype=dtype)
                  for k in keys])
