r"""Permutation-equivariant residual bijections of particle coordinates ``(n, dim)``.

Both maps here are residual, ``z = x + f(x)`` with a displacement ``f`` whose Lipschitz
constant (Euclidean norm on the flattened configuration) is *provably* below a fixed
``lipschitz < 1``. That makes them bijections of ``R^{n dim}`` (an i-ResNet layer,
Behrmann et al., arXiv 1811.00995):

* **injective:** ``|z - z'| >= |x - x'| - |f(x) - f(x')| >= (1 - L) |x - x'|``;
* **surjective and inverse:** for fixed ``z`` the map ``x -> z - f(x)`` is a contraction
  of rate ``L``, so (Banach) it has one fixed point ``x = z - f(x)``, reached by
  iteration with error ``<= L^k / (1 - L)`` times the first step;
* **positive Jacobian:** ``||df/dx|| <= L < 1`` so ``det(I + t df/dx) != 0`` for
  ``t in [0, 1]``, hence ``det dz/dx > 0`` and ``ln |det dz/dx| = ln det(I + df/dx)``.

The log-det is exact: the Jacobian of the flattened map by forward mode (``n dim`` JVPs
after one linearisation) and ``slogdet``, ``O((n dim)^3)``, meant for ``n dim`` up to a
few tens (electrons in a quantum dot). Both maps relabel their outputs as their inputs are
relabelled, ``f(P x) = P f(x)``.

* :class:`FermiNetLayer`: a FermiNet-style two-stream layer (one-electron and pair
  features, means over the other electrons), spectrally normalised; stack them with
  :func:`ferminet_flow` (a :class:`Scan`).
* :class:`Backflow`: Feynman--Cohen backflow ``z_i = x_i + sum_{j != i} eta(|x_i - x_j|)
  (x_i - x_j)`` with a bounded radial ``eta``; also rotation-equivariant.

The continuous equivariant flow is ``continuous_flow(BackflowField(n, dim, ...), ...)``
(:mod:`thermax.bijections._continuous`), a bijection of the same shape.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import AbstractBijection
from ._chain import Chain, Scan


def _default(dtype):
    return jnp.dtype(jnp.result_type(float) if dtype is None else dtype)


def _check_sizes(what: str, **sizes) -> None:
    bad = {k: v for k, v in sizes.items() if int(v) < 1}
    if bad:
        raise ValueError(f"{what}: " + ", ".join(f"{k} must be >= 1, got {v}"
                                                 for k, v in bad.items()))


def _check_iteration(what: str, lipschitz, max_iter, tol) -> tuple[float, int, float | None]:
    lipschitz, max_iter = float(lipschitz), int(max_iter)
    if not 0 < lipschitz < 1:
        raise ValueError(f"{what}: lipschitz must lie in (0, 1) (the residual must be a "
                         f"contraction for the map to be invertible), got {lipschitz}")
    if max_iter < 1:
        raise ValueError(f"{what}: max_iter must be >= 1, got {max_iter}")
    if tol is not None:
        tol = float(tol)
        if not tol > 0:
            raise ValueError(f"{what}: tol must be positive (or None for 100 machine "
                             f"epsilons), got {tol}")
    return lipschitz, max_iter, tol


def _lecun(key, shape, dtype):
    return jax.random.normal(key, shape, dtype) / math.sqrt(shape[0])


def _unit(w: Array) -> Array:
    """``w / ||w||_2`` (largest singular value): a 1-Lipschitz linear map."""
    return w / jnp.linalg.norm(w, 2)


def _affine(h: Array, w: Array, b: Array) -> Array:
    """``h @ w + b`` over the last axis of ``h`` (any leading axes; no rank promotion)."""
    return h @ w + b.reshape((1,) * (h.ndim - 1) + b.shape)


def _unit_mlp(weights, biases, h):
    """``tanh`` MLP with every weight divided by its spectral norm: 1-Lipschitz in ``h``
    (a composition of 1-Lipschitz maps; ``tanh`` is 1-Lipschitz, a bias shifts)."""
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        h = jnp.tanh(_affine(h, _unit(w), b))
    return _affine(h, _unit(weights[-1]), biases[-1])


def _mlp_init(key, widths, dtype):
    """LeCun-normal weights (all layers: they are normalised, so none may be zero) and
    zero biases."""
    keys = jax.random.split(key, len(widths) - 1)
    weights = tuple(_lecun(k, (a, b), dtype)
                    for k, a, b in zip(keys, widths[:-1], widths[1:], strict=True))
    return weights, tuple(jnp.zeros((b,), dtype) for b in widths[1:])


def _soft_features(v: Array) -> Array:
    r"""``[v, sqrt(1 + |v|^2)] / sqrt(2)`` over the last axis: smooth and 1-Lipschitz
    (``|d sqrt(1 + |v|^2)| <= |dv|``, so the squared increment is at most ``2 |dv|^2 / 2``)."""
    rho = jnp.sqrt(1 + jnp.sum(v**2, axis=-1, keepdims=True))
    return jnp.concatenate([v, rho], axis=-1) / math.sqrt(2)


class AbstractResidualBijection(AbstractBijection):
    r"""``z = x + f(x)`` with ``Lip(f) <= lipschitz < 1``: exact log-det, inverse by
    fixed-point iteration.

    ``transform`` is the explicit direction (one evaluation of ``f`` plus its Jacobian):
    ``ln |det dz/dx| = ln det(I + df/dx)`` by forward-mode ``jacfwd`` of the flattened map
    and ``slogdet``. ``inverse`` solves ``x = z - f(x)`` by the Banach iteration
    ``x_{k+1} = z - f(x_k)`` from ``x_0 = z`` (a ``lax.while_loop``), stopping when the
    largest change ``|x_{k+1} - x_k|_inf <= tol (1 + |z|_inf)`` or after ``max_iter``
    iterations; the error is then at most ``L / (1 - L)`` times the last change. The
    result is checked (``eqx.error_if``: an exception, never a silent garbage inverse) to
    satisfy ``|x + f(x) - z|_inf <= tol (1 + |z|_inf)``. The inverse is differentiable
    by the implicit function theorem (``lax.custom_root``; the tangent system
    ``(I + df/dx) dx = dz`` solved densely), and returns ``ln |det dx/dz|``, the negative
    of the forward log-det at the solution.

    Subclasses set ``shape``, ``lipschitz`` (the bound ``L`` they *guarantee*),
    ``max_iter``, ``tol`` (``None``: 100 machine epsilons of the configuration's dtype)
    and implement ``_residual(x) -> f(x)``; one with a closed-form Jacobian overrides
    ``_residual_and_jacobian(x) -> (f(x), df/dx as (d, d))`` (default: ``d`` JVPs).
    """

    lipschitz: eqx.AbstractVar[float]
    max_iter: eqx.AbstractVar[int]
    tol: eqx.AbstractVar[float | None]

    @abc.abstractmethod
    def _residual(self, x: Array) -> Array:
        raise NotImplementedError

    def _residual_and_jacobian(self, x: Array) -> tuple[Array, Array]:
        """``f(x)`` and its Jacobian (or its transpose: only the determinant is used),
        flattened to ``(d, d)``. Default: ``d`` JVPs after one linearisation; a subclass
        with a closed form overrides it."""
        shape = x.shape
        residual = lambda v: self._residual(v.reshape(shape)).reshape(-1)  # noqa: E731
        flat = x.reshape(-1)
        f, lin = jax.linearize(residual, flat)
        # rows J e_k: the transposed Jacobian
        return f.reshape(shape), jax.vmap(lin)(jnp.eye(flat.size, dtype=f.dtype))

    def _transform_and_log_det(self, x):
        f, jac = self._residual_and_jacobian(x)
        log_det = jnp.linalg.slogdet(jnp.eye(x.size, dtype=jac.dtype) + jac)[1]
        return x + f, log_det

    def _inverse_and_log_det(self, z):
        shape, dtype = z.shape, jnp.result_type(z.dtype, *[
            leaf.dtype for leaf in jax.tree.leaves(self) if eqx.is_inexact_array(leaf)])
        z = z.astype(dtype)
        tol = 100 * jnp.finfo(dtype).eps if self.tol is None else self.tol
        bound = tol * (1 + jnp.max(jnp.abs(z)))
        max_iter = self.max_iter

        def equation(x):  # x + f(x) - z, zero at the inverse
            return x + self._residual(x) - z

        def solve(g, x0):
            def cond(state):
                k, _, change = state
                return (k < max_iter) & (change > bound)

            def body(state):
                k, x, _ = state
                x_new = x - g(x)
                return k + 1, x_new, jnp.max(jnp.abs(x_new - x))

            init = (jnp.asarray(0), x0, jnp.asarray(jnp.inf, dtype))
            return jax.lax.while_loop(cond, body, init)[1]

        def tangent_solve(g, y):  # g: the linearised equation, dx -> (I + df/dx) dx
            matrix = jax.jacfwd(lambda v: g(v.reshape(shape)).reshape(-1))(y.reshape(-1))
            return jnp.linalg.solve(matrix, y.reshape(-1)).reshape(shape)

        x = jax.lax.custom_root(equation, z, solve, tangent_solve)
        error = jnp.max(jnp.abs(equation(jax.lax.stop_gradient(x))))
        x = eqx.error_if(x, ~(error <= bound),
                         f"{type(self).__name__}.inverse: the fixed-point iteration did not "
                         f"converge in max_iter={max_iter} iterations (raise max_iter or tol)")
        _, log_det = self._transform_and_log_det(x)
        return x, -log_det


class FermiNetLayer(AbstractResidualBijection):
    r"""One FermiNet-style residual layer ``z_i = x_i + f_i(x)``, equivariant and invertible.

    Streams (for electron ``i``, ``r_ij = x_i - x_j``, ``s(v) = [v, sqrt(1 + |v|^2)] /
    sqrt(2)``, a smooth 1-Lipschitz stand-in for ``(v, |v|)``, so the map is smooth when
    electrons meet or one sits at the origin):

    .. math::

        u_i = s(x_i),\quad h_{ij} = \tanh(\hat W_p\, s(r_{ij}) + b_p),\quad
        c_i = [u_i,\ \tfrac1n \textstyle\sum_j h_{ij},\ \tfrac1n \sum_k u_k],

        f_i(x) = \frac{L \tanh(\gamma)}{2}\, \widehat{\rm MLP}(c_i),

    where ``\hat W = W / ||W||_2`` for every weight (spectral normalisation, exact, by
    SVD), ``\widehat{MLP}`` is a ``tanh`` MLP with such weights (1-Lipschitz), ``gamma``
    a learnable gain (0 at initialisation: the identity map) and ``L = lipschitz``. The
    MLP is shared by all electrons, so ``f(P x) = P f(x)``.

    **The bound** ``Lip(f) <= L |tanh gamma| < L < 1`` (Euclidean norm on ``R^{n dim}``).
    Proof: ``|du_i| <= |dx_i|`` so ``|du| <= |dx|``. ``|dh_ij| <= |dr_ij|`` and by
    Cauchy--Schwarz ``sum_i |(1/n) sum_j dh_ij|^2 <= (1/n) sum_ij |dx_i - dx_j|^2 =
    2 |dx|^2 - (2/n) |sum_i dx_i|^2 <= 2 |dx|^2``. The mean one-electron feature, copied to
    every electron, has ``n |d mean(u)|^2 <= |du|^2 <= |dx|^2``. So ``|dc|^2 <= (1 + 2 +
    1) |dx|^2``, ``Lip(c) <= 2``; the shared MLP applied per electron is 1-Lipschitz on the
    stack; multiply by ``L |tanh gamma| / 2``. (``|tanh gamma| < 1`` makes the bound
    strict.)

    Cost: ``O(n^2 pair_width + n width^2)`` per evaluation of ``f``; ``transform`` adds the
    ``n dim`` JVPs and an ``O((n dim)^3)`` ``slogdet``; ``inverse`` costs the iterations.

    Args:
        n: number of particles.
        dim: spatial dimension.
        width: hidden units of the per-electron MLP.
        depth: hidden layers of the per-electron MLP (``>= 1``).
        pair_width: features of the pair stream (default ``width``).
        lipschitz: the guaranteed bound ``L`` on ``Lip(f)``, in ``(0, 1)`` (default 0.9;
            smaller makes the inverse converge faster, larger the layer more expressive).
        max_iter: the most iterations of the fixed-point inverse (see
            :class:`AbstractResidualBijection`).
        tol: the tolerance of the fixed-point inverse (``None``: 100 machine epsilons).
        key: initialisation key.
        dtype: parameter dtype (default: the default float).

    Example:
        >>> layer = FermiNetLayer(6, 2, width=16, depth=2, key=jax.random.key(0))
        >>> z, log_det = layer.transform_and_log_det(x)       # x: (6, 2)
        >>> x_back = layer.inverse(z)
    """

    pair_weight: Float[Array, "features pair_width"]
    pair_bias: Float[Array, " pair_width"]
    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    gain: Float[Array, ""]
    shape: tuple[int, ...] = eqx.field(static=True)
    lipschitz: float = eqx.field(static=True)
    max_iter: int = eqx.field(static=True)
    tol: float | None = eqx.field(static=True)

    def __init__(self, n: int, dim: int, *, width: int, depth: int, key: PRNGKeyArray,
                 pair_width: int | None = None, lipschitz: float = 0.9, max_iter: int = 500,
                 tol: float | None = None, dtype=None):
        pair_width = width if pair_width is None else pair_width
        _check_sizes("FermiNetLayer", n=n, dim=dim, width=width, depth=depth,
                     pair_width=pair_width)
        self.lipschitz, self.max_iter, self.tol = _check_iteration(
            "FermiNetLayer", lipschitz, max_iter, tol)
        n, dim, width, depth, pair_width = map(int, (n, dim, width, depth, pair_width))
        dtype = _default(dtype)
        k_pair, k_mlp = jax.random.split(key)
        self.pair_weight = _lecun(k_pair, (dim + 1, pair_width), dtype)
        self.pair_bias = jnp.zeros((pair_width,), dtype)
        widths = (2 * (dim + 1) + pair_width, *[width] * depth, dim)
        self.weights, self.biases = _mlp_init(k_mlp, widths, dtype)
        self.gain = jnp.zeros((), dtype)
        self.shape = (n, dim)

    def _residual(self, x):
        n = x.shape[0]
        u = _soft_features(x)
        pairs = _soft_features(x[:, None, :] - x[None, :, :])
        h = jnp.tanh(_affine(pairs, _unit(self.pair_weight), self.pair_bias))
        mean_u = jnp.broadcast_to(jnp.mean(u, axis=0), u.shape)
        c = jnp.concatenate([u, jnp.sum(h, axis=1) / n, mean_u], axis=-1)
        out = _unit_mlp(self.weights, self.biases, c)
        return (0.5 * self.lipschitz) * jnp.tanh(self.gain) * out


def ferminet_flow(n: int, dim: int, *, layers: int, width: int, depth: int,
                  key: PRNGKeyArray, pair_width: int | None = None, lipschitz: float = 0.9,
                  max_iter: int = 500, tol: float | None = None, dtype=None) -> Scan:
    """``layers`` :class:`FermiNetLayer` s stacked in one :class:`Scan` (compile time flat
    in depth); the identity at initialisation.

    ``transform`` (``x -> zeta``, the direction a flow wavefunction uses) is explicit; the
    log-det is the sum of the layers' (each ``slogdet`` of an ``n dim`` matrix); the
    inverse runs each layer's fixed-point inverse, last layer first.

    Args:
        n: number of particles.
        dim: spatial dimension.
        layers: number of residual layers (``>= 1``).
        width: features of each layer's one-particle stream (see :class:`FermiNetLayer`).
        depth: hidden layers of each layer's MLP.
        pair_width: features of each layer's pair stream (default ``width``).
        lipschitz: each layer's bound on ``Lip(f)``, in ``(0, 1)``.
        max_iter: the most iterations of each layer's fixed-point inverse.
        tol: the tolerance of each layer's fixed-point inverse.
        dtype: parameter dtype (default: the default float).
        key: initialisation key.

    Example:
        >>> flow = ferminet_flow(6, 2, layers=3, width=16, depth=2, key=jax.random.key(0))
    """
    _check_sizes("ferminet_flow", layers=layers)
    # Checked once here, so a bad argument is reported before the vmapped build.
    FermiNetLayer(n, dim, width=width, depth=depth, key=key, pair_width=pair_width,
                  lipschitz=lipschitz, max_iter=max_iter, tol=tol, dtype=dtype)
    return Scan.build(lambda k: FermiNetLayer(
        n, dim, width=width, depth=depth, key=k, pair_width=pair_width, lipschitz=lipschitz,
        max_iter=max_iter, tol=tol, dtype=dtype), int(layers), key=key)


class Backflow(AbstractResidualBijection):
    r"""Feynman--Cohen backflow ``z_i = x_i + sum_{j != i} eta(|x_i - x_j|) (x_i - x_j)``.

    Sign convention: ``eta > 0`` pushes electron ``i`` *away* from ``j`` (Kwon, Ceperley
    and Martin's ``r_i + sum_j eta(r_ij) r_ij``); the ``(x_j - x_i)`` form of
    ``docs/PHYSICS.md`` is the same family with ``eta -> -eta``. Equivariant under
    relabelling the particles and under rotations and reflections ``O(dim)``.

    The radial function of the pair distance ``s = |r|`` (``radial="distance"``, the
    default) or of its square ``q = |r|^2`` (``radial="squared"``):

    .. math::

        \eta(s) = a \tanh\bigl(\widehat{\rm MLP}(\ln(1 + s))\bigr),\quad a = \frac{L
        \tanh\gamma}{2 n};\qquad
        \eta(q) = a \tanh\bigl(\widehat{\rm MLP}(\ln(1 + q))\bigr),\quad a = \frac{L
        \tanh\gamma}{3 n},

    ``\widehat{MLP}`` a scalar ``tanh`` MLP with spectrally normalised weights
    (1-Lipschitz), ``gamma`` a learnable gain (0 at initialisation: the identity) and
    ``L = lipschitz``.

    **Cusps.** A function of ``s`` has a term linear in ``|r|``: ``eta(s) r`` is
    continuously differentiable but its second derivatives jump at ``r = 0``, which is
    what the electron--electron cusp of the wavefunction needs (Kato: ``Psi ~ 1 + |r| /
    (dim - 1)`` for opposite spins). The squared form is smooth everywhere, so its
    wavefunctions have no cusp and their local energy diverges like ``1 / |r|`` as two
    electrons meet (slower convergence and larger variance with Coulomb repulsion).

    **The bound** ``Lip(f) <= L |tanh gamma| < L < 1``. Proof: the pair displacement
    ``g(r) = eta r`` has the symmetric Jacobian ``eta I + eta'(s) s rhat rhat^T``
    (distance) or ``eta I + 2 eta'(q) r r^T`` (squared), of eigenvalues ``eta`` (across
    ``r``) and ``eta + s eta'(s)`` or ``eta + 2 q eta'(q)`` (along ``r``). Here ``|eta| <=
    |a|``, ``|s eta'(s)| <= |a| s / (1 + s) <= |a|`` and ``|2 q eta'(q)| <= |a| 2q / (1 +
    q) <= 2 |a|`` (``tanh'`` and the MLP's slope are at most 1), so ``||Dg|| <= c |a|``
    with ``c = 2`` (distance) or ``3`` (squared). ``g`` is odd, so ``G_ij = Dg(r_ij) =
    G_ji``; the Jacobian of ``f`` acts as ``(J v)_i = sum_{j != i} G_ij (v_i - v_j)``, a
    symmetric matrix with quadratic form ``v^T J v = 1/2 sum_{i != j} (v_i - v_j)^T G_ij
    (v_i - v_j)``, bounded by ``(c |a| / 2) sum_{i,j} |v_i - v_j|^2 <= c n |a| |v|^2``. So
    ``||J|| <= c n |a| = L |tanh gamma|``.

    The bound trades reach for safety: the displacement of a pair is at most ``|a| |r|``,
    so one layer's backflow is weak for many particles; stack layers (:func:`backflow_flow`,
    a :class:`Chain`) for a larger effect. Cost ``O(n^2 width^2)`` per evaluation of ``f``;
    the Jacobian is built in closed form from ``eta`` and ``eta'`` (one forward-mode pass
    of the scalar net, not ``n dim`` JVPs of ``f``), then ``slogdet``.

    Args:
        n: number of particles.
        dim: spatial dimension.
        width: hidden units of ``eta``'s MLP.
        depth: hidden layers of ``eta``'s MLP (``>= 1``).
        lipschitz: the guaranteed bound ``L``, in ``(0, 1)`` (default 0.9).
        radial: ``"distance"`` (default; ``eta`` of ``|r|``, wavefunctions with cusps) or
            ``"squared"`` (``eta`` of ``|r|^2``, smooth).
        max_iter: the most iterations of the fixed-point inverse (see
            :class:`AbstractResidualBijection`).
        tol: the tolerance of the fixed-point inverse (``None``: 100 machine epsilons).
        key: initialisation key.
        dtype: parameter dtype (default: the default float).

    Example:
        >>> flow = Backflow(6, 2, width=16, depth=2, key=jax.random.key(0))
        >>> zeta, log_det = flow.transform_and_log_det(x)
    """

    weights: tuple[Float[Array, "_ _"], ...]
    biases: tuple[Float[Array, " _"], ...]
    gain: Float[Array, ""]
    shape: tuple[int, ...] = eqx.field(static=True)
    lipschitz: float = eqx.field(static=True)
    radial: str = eqx.field(static=True)
    max_iter: int = eqx.field(static=True)
    tol: float | None = eqx.field(static=True)

    def __init__(self, n: int, dim: int, *, width: int, depth: int, key: PRNGKeyArray,
                 lipschitz: float = 0.9, radial: str = "distance", max_iter: int = 500,
                 tol: float | None = None, dtype=None):
        _check_sizes("Backflow", n=n, dim=dim, width=width, depth=depth)
        if radial not in ("distance", "squared"):
            raise ValueError(f"Backflow: radial must be 'distance' or 'squared', got "
                             f"{radial!r}")
        self.radial = radial
        self.lipschitz, self.max_iter, self.tol = _check_iteration(
            "Backflow", lipschitz, max_iter, tol)
        dtype = _default(dtype)
        self.weights, self.biases = _mlp_init(key, (1, *[int(width)] * int(depth), 1), dtype)
        self.gain = jnp.zeros((), dtype)
        self.shape = (int(n), int(dim))

    def eta(self, u: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        """The backflow function ``eta`` at pair distances ``u = |x_i - x_j|``
        (``radial="distance"``) or at their squares (``radial="squared"``)."""
        n = self.shape[0]
        t = jnp.log1p(u)[..., None]
        c = 2 if self.radial == "distance" else 3
        amplitude = self.lipschitz * jnp.tanh(self.gain) / (c * n)
        return amplitude * jnp.tanh(_unit_mlp(self.weights, self.biases, t)[..., 0])

    def _pairs(self, x):
        """Pair vectors ``r_ij``, the radial variable ``u_ij`` (1 on the diagonal, where
        ``r_ii = 0``: no square root of 0, whose derivative is infinite) and the mask."""
        n = x.shape[0]
        diff = x[:, None, :] - x[None, :, :]
        eye = jnp.eye(n, dtype=x.dtype)
        q = jnp.sum(diff**2, axis=-1) + eye
        if self.radial == "squared":
            return diff, q, 1 - eye
        # two particles exactly on top of each other (measure zero, but a grid can hit
        # it): s = 0 with a zero derivative instead of sqrt's infinite one
        apart = q > 0
        return diff, jnp.where(apart, jnp.sqrt(jnp.where(apart, q, 1)), 0), 1 - eye

    def _residual(self, x):
        diff, u, mask = self._pairs(x)
        return jnp.einsum("ij,ijd->id", mask * self.eta(u), diff)

    def _residual_and_jacobian(self, x):
        # Closed form (cheaper than n dim JVPs): G_ij = eta I + w r r^T for j != i, with
        # w = eta'(s) / s (distance) or 2 eta'(q) (squared); J[i, :, j, :] = -G_ij and
        # J[i, :, i, :] = sum_{j != i} G_ij.
        n, dim = x.shape
        diff, u, mask = self._pairs(x)
        eta, deta = jax.jvp(self.eta, (u,), (jnp.ones_like(u),))  # elementwise in u
        eta = mask * eta
        # distance: w r r^T -> 0 as r -> 0 (|w r r^T| <= |eta'| |r|); guard u = 0
        w = (jnp.where(u > 0, deta / jnp.where(u > 0, u, 1), 0) if self.radial == "distance"
             else 2 * deta)
        eye = jnp.eye(dim, dtype=x.dtype)
        g = mask[:, :, None, None] * (eta[:, :, None, None] * eye[None, None]
                                      + w[:, :, None, None]
                                      * diff[:, :, :, None] * diff[:, :, None, :])
        jac = (jnp.einsum("ij,iab->iajb", jnp.eye(n, dtype=x.dtype), jnp.sum(g, axis=1))
               - jnp.transpose(g, (0, 2, 1, 3)))
        return jnp.einsum("ij,ijd->id", eta, diff), jac.reshape(n * dim, n * dim)


def backflow_flow(n: int, dim: int, *, layers: int, width: int, depth: int,
                  key: PRNGKeyArray, lipschitz: float = 0.9, radial: str = "distance",
                  max_iter: int = 500, tol: float | None = None, dtype=None) -> Chain:
    """``layers`` :class:`Backflow` s in a :class:`Chain` (a Python loop, no ``lax.scan``:
    every Laplacian method, the forward one included, traces it directly); the identity
    at initialisation.

    One layer moves a pair by at most ``L / (2 n)`` of its separation; stacking compounds
    the effect (``layers`` contractions of the relative coordinate by up to ``1 - L / n``
    each), which a two-electron dot already needs to reach its exact ground state.

    Args:
        n: number of particles.
        dim: spatial dimension.
        layers: number of backflow layers (``>= 1``).
        width: hidden features of each layer (see :class:`Backflow`).
        depth: hidden layers of each layer's networks.
        lipschitz: each layer's bound on ``Lip(f)``, in ``(0, 1)``.
        radial: ``"distance"`` or ``"squared"``, as for :class:`Backflow`.
        max_iter: the most iterations of each layer's fixed-point inverse.
        tol: the tolerance of each layer's fixed-point inverse.
        dtype: parameter dtype (default: the default float).
        key: initialisation key.

    Example:
        >>> flow = backflow_flow(2, 2, layers=3, width=16, depth=2, key=jax.random.key(0))
    """
    _check_sizes("backflow_flow", layers=layers)
    keys = jax.random.split(key, int(layers))
    return Chain([Backflow(n, dim, width=width, depth=depth, key=k, lipschitz=lipschitz,
                           radial=radial, max_iter=max_iter, tol=tol, dtype=dtype)
                  for k in keys])
