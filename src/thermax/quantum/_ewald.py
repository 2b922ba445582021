r"""Ewald summation of the ``1/r`` Coulomb energy of point charges in a periodic box.

Conventions: unit charges (``e = 1``), the bare interaction ``1/r`` in **both** 2D and 3D
(the 2D electron gas is electrons in a plane, with ``1/r``, not ``-log r``), a uniform
neutralising background, and a periodic square (2D) or cubic (3D) box of side ``L``,
volume ``V = L^dim``. Energies are in units of ``e^2/length``; in Hartree atomic units
lengths are in Bohr and energies in Hartree, and the electron gas in Rydberg units
multiplies every energy here by 2.

**Pair potential.** The periodic potential of a unit charge with its background, split
with the parameter ``a`` (:attr:`EwaldSum.alpha`, ``1/length``) as ``1/r = erfc(ar)/r +
erf(ar)/r``, is

.. math::

    \phi_{3D}(r) &= \sum_n \frac{\operatorname{erfc}(a|r+nL|)}{|r+nL|}
        + \frac{4\pi}{V}\sum_{G\ne0}\frac{e^{-G^2/4a^2}}{G^2}\cos(G\cdot r)
        - \frac{\pi}{a^2V},\\
    \phi_{2D}(r) &= \sum_n \frac{\operatorname{erfc}(a|r+nL|)}{|r+nL|}
        + \frac{2\pi}{V}\sum_{G\ne0}\frac{\operatorname{erfc}(G/2a)}{G}\cos(G\cdot r)
        - \frac{2\sqrt\pi}{aV},

with ``n`` over the integer vectors and ``G = 2 pi m / L`` over the reciprocal lattice.
The reciprocal sums are the Fourier transforms of ``erf(ar)/r`` (``4 pi e^{-G^2/4a^2}/G^2``
in 3D, ``2 pi erfc(G/2a)/G`` in 2D); the constant is the ``G = 0`` term with the
background, ``-(1/V) int erfc(ar)/r d^dim r``. The sum is independent of ``a``.

**Self (Madelung) term.** ``xi = lim_{r->0} [phi(r) - 1/r]``, the interaction of a charge
with its own images and background,

.. math::

    \xi = \sum_{n\ne0}\frac{\operatorname{erfc}(a|n|L)}{|n|L} + (\text{reciprocal sum at }
    r=0) + (\text{constant}) - \frac{2a}{\sqrt\pi}.

**Total energy** of ``N`` charges per cell with the background (per cell):

.. math::

    E = \sum_{i<j}\phi(x_i - x_j) + \frac{N\xi}{2}.

With one charge per cell (the Wigner lattice in a background) ``E = xi/2``, and ``L xi``
is the Madelung constant: ``-3.900264920001956`` (square lattice, 2D) and
``-2.837297479480620`` (simple cubic, 3D). The energy per electron of the lattice is
``M/(2L)``; with ``L^2 = pi r_s^2`` or ``L^3 = 4 pi r_s^3/3`` this is ``-1.100244/r_s``
(square) and ``-0.880059/r_s`` (simple cubic) in Hartree.

:meth:`EwaldSum.energy` evaluates ``E`` as (``S(G) = sum_i e^{i G.x_i}``, the structure
factor; ``sum_{i<j} cos(G.(x_i - x_j)) = (|S|^2 - N)/2``, the ``-N`` cancelling against
the reciprocal part of ``N xi/2``)

.. math::

    E = \sum_{i<j}\sum_n \frac{\operatorname{erfc}(a|r_{ij}+nL|)}{|r_{ij}+nL|}
        + \frac N2\sum_{n\ne0}\frac{\operatorname{erfc}(a|n|L)}{|n|L}
        + \sum_{G\ne0} \frac{w(G)}{2}|S(G)|^2 + \frac{N^2}{2}c - \frac{Na}{\sqrt\pi},

with ``w(G)`` the reciprocal weight and ``c`` the constant above, at a cost of ``O(N^2
n_images + N n_G)``. Only one of each pair ``+-G`` is stored (they give the same
``|S|^2``).

**Cutoffs and the default splitting.** Pair displacements are first reduced to the
minimum image (each component in ``[-L/2, L/2]``), so the real-space image ``n`` of a pair
is at distance ``>= g_n L`` from it, ``g_n = |max(|n| - 1/2, 0)|`` (componentwise) the
distance of cell ``n`` from the origin's cell. With ``kappa = a L``, in units of ``1/L``:

* real space keeps the images ``g_n <= rho``, for the smallest ``rho`` with
  ``sum_{g_n > rho} erfc(kappa g_n)/g_n <= tol/2``;
* reciprocal space keeps the ``0 < |m| <= m_c``, for the smallest ``m_c`` with
  ``sum_{|m| > m_c} L w(m) <= tol/2``, ``L w = e^{-(pi m/kappa)^2}/(pi m^2)`` (3D) or
  ``erfc(pi m/kappa)/m`` (2D).

These are the ``erfc(aR)/R < tol`` and ``e^{-G^2/4a^2} < tol`` rules made into bounds: the
sums run over the discrete left-out vectors themselves (over a range set by continuum
estimates of the tails, whose remainder is ``~1e-6 tol``), so the pair potential and
``xi`` are in error by at most ``tol/L`` (measured ``0.01-0.7 tol/L`` for ``tol`` in
``[1e-14, 1e-3]``, ``kappa`` in ``[1.8, 5]``) and ``E`` by at most ``N^2 tol/(2L)``. The
sets depend only on ``kappa`` and ``tol``.

The real-space sum costs ``O(N^2)`` per image and the reciprocal one ``O(N)`` per ``G``,
so for the ``N ~ 10-50`` of a simulation the balance lies at a larger ``a`` than the
textbook ``sqrt(pi)/L``. The default ``a`` is the smallest for which the ``3^dim`` images
of the neighbouring cells suffice (every other cell lies ``>= 1.5 L`` away): at ``tol =
1e-12``, ``a L = 3.48`` with ``9`` images and ``48`` vectors ``G`` (2D), ``3.50`` with ``27``
and ``423`` (3D); at ``tol = 1e-6``, ``a L = 2.49`` with ``9`` and ``12`` (2D), ``2.55`` with
``27`` and ``61`` (3D). Stored vectors ``G`` count one of each ``+-G``.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, Real
from scipy.special import erfc

from ..bijections._periodic import minimum_image


def _ierfc(y: float) -> float:
    """``int_y^inf erfc(t) dt``."""
    return math.exp(-y * y) / math.sqrt(math.pi) - y * math.erfc(y)


def _real_tail(dim: int, kappa: float, rho: float) -> float:
    """Continuum estimate of the real-space terms of ``L phi`` beyond ``|r + nL| = rho L``."""
    y = kappa * rho
    if dim == 2:
        return 2 * math.pi / kappa * _ierfc(y)
    # int_y^inf t erfc(t) dt = (1/4 - y^2/2) erfc(y) + y e^{-y^2} / (2 sqrt(pi))
    integral = (0.25 - 0.5 * y * y) * math.erfc(y) + y * math.exp(-y * y) / (2 * math.sqrt(
        math.pi))
    return 4 * math.pi / kappa**2 * integral


def _reciprocal_tail(dim: int, kappa: float, m_c: float) -> float:
    """Continuum estimate of the reciprocal terms of ``L phi`` beyond ``|m| = m_c``."""
    z = math.pi * m_c / kappa
    if dim == 2:
        return 2 * kappa * _ierfc(z)
    return 2 * kappa / math.sqrt(math.pi) * math.erfc(z)


def _solve_cutoff(tail, tol: float) -> float:
    """The smallest ``c >= 0`` with ``tail(c) <= tol`` (``tail`` decreasing), to 1e-6."""
    lo, hi = 0.0, 1.0
    while tail(hi) > tol:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if tail(mid) > tol else (lo, mid)
    return hi


def _grid(dim: int, radius: float) -> np.ndarray:
    """Every integer vector with components in ``[-ceil(radius), ceil(radius)]``."""
    k = math.ceil(radius)
    axes = np.meshgrid(*[np.arange(-k, k + 1)] * dim, indexing="ij")
    return np.stack([axis.ravel() for axis in axes], axis=-1)


def _within_budget(vectors: np.ndarray, dist: np.ndarray, term: np.ndarray,
                   budget: float) -> np.ndarray:
    """The vectors of the smallest ball ``dist <= c`` whose left-out terms sum to at most
    ``budget``, sorted by length (then lexicographically; the origin first)."""
    order = np.argsort(dist, kind="stable")
    tail = np.append(np.cumsum(term[order][::-1])[::-1], 0.0)  # tail[k]: all but k nearest
    k = int(np.argmax(tail <= budget))
    kept = vectors[dist <= dist[order][k - 1]] if k > 0 else vectors[:0]
    return kept[np.lexsort((*kept.T[::-1], np.sum(kept**2, axis=1)))]


def _real_space_images(dim: int, kappa: float, budget: float) -> np.ndarray:
    """Images ``n`` of a minimum-image displacement, with ``sum erfc(kappa g)/g <= budget``
    over the left-out ones (``g`` the distance of cell ``n`` from the origin, in ``L``)."""
    vectors = _grid(dim, _solve_cutoff(lambda r: _real_tail(dim, kappa, r), 1e-6 * budget)
                    + 1)
    gap = np.sqrt(np.sum(np.maximum(np.abs(vectors) - 0.5, 0.0) ** 2, axis=1))
    with np.errstate(divide="ignore"):
        term = np.where(gap > 0, erfc(kappa * gap) / gap, np.inf)   # the origin is kept
    return _within_budget(vectors, gap, term, budget)


def _reciprocal_vectors(dim: int, kappa: float, budget: float) -> np.ndarray:
    """Reciprocal vectors ``m != 0`` (``G = 2 pi m / L``) whose left-out terms of ``L phi``
    sum to at most ``budget``; of each pair ``+-m``, the one whose first non-zero component
    is positive."""
    vectors = _grid(dim, _solve_cutoff(lambda m: _reciprocal_tail(dim, kappa, m),
                                       1e-6 * budget) + 1)
    vectors = vectors[np.any(vectors != 0, axis=1)]
    norm = np.sqrt(np.sum(vectors**2, axis=1))
    if dim == 3:
        term = np.exp(-((math.pi * norm / kappa) ** 2)) / (math.pi * norm**2)
    else:
        term = erfc(math.pi * norm / kappa) / norm
    kept = _within_budget(vectors, norm, term, budget)
    first = np.array([row[np.flatnonzero(row)[0]] for row in kept], dtype=np.int64)
    return kept[first > 0] if len(kept) else kept


def _default_kappa(dim: int, tol: float) -> float:
    """The smallest ``a L`` (to 1e-3) at which the ``3^dim`` images of the minimum image's
    cell and its neighbours suffice: the left-out ones (cells at distance ``>= 1.5 L``) sum
    to at most ``tol/2``."""
    vectors = _grid(dim, 12.0)
    far = vectors[np.max(np.abs(vectors), axis=1) >= 2]
    gap = np.sqrt(np.sum(np.maximum(np.abs(far) - 0.5, 0.0) ** 2, axis=1))
    lo, hi = 0.5, 1.0
    while np.sum(erfc(hi * gap) / gap) > tol / 2:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-3:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.sum(erfc(mid * gap) / gap) > tol / 2 else (lo, mid)
    return hi


class EwaldSum(eqx.Module):
    r"""The Ewald sum of ``1/r`` charges with a neutralising background in a periodic box.

    See the module docstring for the formulas. :meth:`pair_potential` is the periodic pair
    potential ``phi(r)``, :attr:`madelung` the self term ``xi`` (``L xi`` is the Madelung
    constant of the square or simple-cubic lattice), and :meth:`energy` the total energy per
    cell ``sum_{i<j} phi(x_i - x_j) + N xi/2`` of one configuration (batch with
    ``jax.vmap``).

    The real-space images and reciprocal vectors are integer vectors fixed at construction
    from ``a L`` and ``tol`` (see the module docstring for how), stored as arrays;
    ``box_length`` is a 0-d array, differentiable (for the pressure). Replacing
    ``box_length`` with ``eqx.tree_at`` keeps ``alpha`` and so changes ``a L`` and the
    accuracy; construct a new sum for another box instead.

    Args:
        dim: space dimension, 2 (square box) or 3 (cubic box).
        box_length: the side ``L > 0`` (concrete: the cutoffs depend on it).
        alpha: the splitting parameter ``a > 0`` in ``1/length``. The result does not
            depend on it, the cost does: larger ``a`` means fewer real-space images and more
            reciprocal vectors. Default: the smallest ``a`` for which the ``3^dim`` nearest
            images suffice (``a L = 3.5`` at ``tol = 1e-12``, ``2.5`` at ``1e-6``).
        tol: the truncation tolerance in ``(0, 1)``: the left-out terms of the pair
            potential and of ``xi`` are at most ``tol/L`` (default ``1e-12``; float64
            rounding is ``~1e-15``, so smaller values only cost more).
        dtype: dtype of ``box_length`` (default: the default float).

    Example:
        >>> ewald = EwaldSum(2, 1.0)
        >>> ewald.box_length * ewald.madelung            # -3.90026492 (square lattice)
        >>> ewald.energy(jnp.array([[0.0, 0.0], [0.5, 0.5]]))
    """

    dim: int = eqx.field(static=True)
    box_length: Float[Array, ""]
    alpha: float = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    images: Int[Array, "images dim"]
    reciprocal: Int[Array, "half_g dim"]

    def __init__(self, dim: int, box_length: float | Real[ArrayLike, ""], *,
                 alpha: float | None = None, tol: float = 1e-12, dtype=None):
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim not in (2, 3):
            raise ValueError(f"EwaldSum: dim must be 2 (square box) or 3 (cubic box), got "
                             f"{dim!r}")
        if isinstance(box_length, jax.core.Tracer) or np.ndim(box_length) != 0:
            raise ValueError("EwaldSum: box_length must be a concrete number or 0-d array "
                             "(the cutoffs depend on it), got "
                             f"{type(box_length).__name__} of shape {np.shape(box_length)}")
        length = float(np.asarray(box_length))
        if not (math.isfinite(length) and length > 0):
            raise ValueError(f"EwaldSum: box_length must be a finite number > 0 (the side of "
                             f"the box), got {length}")
        tol = float(tol)
        if not 0 < tol < 1:
            raise ValueError(f"EwaldSum: tol must lie in (0, 1) (the truncation error of the "
                             f"pair potential in units of 1/box_length, e.g. 1e-12), got {tol}")
        dim = int(dim)
        kappa = _default_kappa(dim, tol) if alpha is None else float(alpha) * length
        if not (math.isfinite(kappa) and kappa > 0):
            raise ValueError(f"EwaldSum: alpha must be a finite number > 0 (the splitting "
                             f"parameter, in 1/length; None for the default), got {alpha}")
        self.dim, self.alpha, self.tol = dim, kappa / length, tol
        self.box_length = jnp.asarray(box_length,
                                      jnp.result_type(float) if dtype is None else dtype)
        self.images = jnp.asarray(_real_space_images(dim, kappa, tol / 2))
        self.reciprocal = jnp.asarray(_reciprocal_vectors(dim, kappa, tol / 2))

    @property
    def n_images(self) -> int:
        """Number of real-space images summed per pair (the minimum image included)."""
        return self.images.shape[0]

    @property
    def n_reciprocal(self) -> int:
        """Number of stored reciprocal vectors (one of each ``+-G``; ``G != 0``)."""
        return self.reciprocal.shape[0]

    def _constants(self, dtype):
        """``L``, ``a``, the reciprocal vectors ``G``, the weights ``2 w(G)`` (one of each
        ``+-G``) and the ``G = 0`` constant ``c``, in ``dtype``."""
        length = self.box_length.astype(dtype)
        a = jnp.asarray(self.alpha, dtype)
        volume = length**self.dim
        g = (2 * math.pi / length) * self.reciprocal.astype(dtype)
        g_norm = jnp.sqrt(jnp.sum(g**2, axis=-1))
        if self.dim == 3:
            weight = (8 * math.pi / volume) * jnp.exp(-(g_norm**2) / (4 * a**2)) / g_norm**2
            constant = -math.pi / (a**2 * volume)
        else:
            weight = (4 * math.pi / volume) * jax.scipy.special.erfc(g_norm / (2 * a)) / g_norm
            constant = -2 * math.sqrt(math.pi) / (a * volume)
        return length, a, g, weight, constant

    def _real_space(self, r, length, a):
        """``sum_n erfc(a|r+nL|)/|r+nL|`` over the stored images, ``r`` of shape (k, dim)."""
        shifted = r[:, None, :] + length * self.images.astype(r.dtype)[None, :, :]
        dist = jnp.sqrt(jnp.sum(shifted**2, axis=-1))
        return jnp.sum(jax.scipy.special.erfc(a * dist) / dist, axis=-1)

    def _self_images(self, length, a, dtype):
        """``sum_{n != 0} erfc(a|n|L)/(|n|L)``, a charge with its own images."""
        dist = length * jnp.sqrt(jnp.sum(self.images[1:].astype(dtype) ** 2, axis=-1))
        return jnp.sum(jax.scipy.special.erfc(a * dist) / dist)

    @property
    def madelung(self) -> Float[Array, ""]:
        r"""The self term ``xi = lim_{r->0} [phi(r) - 1/r]``; ``L xi`` is the Madelung
        constant (``-3.9002649200`` square, ``-2.8372974795`` simple cubic).

        Example:
            >>> EwaldSum(3, 2.0).madelung                   # -2.83729748 / 2
        """
        dtype = self.box_length.dtype
        length, a, _, weight, constant = self._constants(dtype)
        return (self._self_images(length, a, dtype) + jnp.sum(weight) + constant
                - 2 * a / math.sqrt(math.pi))

    def pair_potential(self, r: Float[Array, "*batch dim"]) -> Float[Array, "*batch"]:
        r"""The periodic pair potential ``phi(r)`` (with the background), any batch shape.

        Diverges as ``1/|r|`` at lattice vectors ``r = nL``.

        Example:
            >>> ewald = EwaldSum(2, 1.0)
            >>> ewald.pair_potential(jnp.array([[0.5, 0.0], [0.5, 0.5]]))   # (2,)
        """
        if r.ndim < 1 or r.shape[-1] != self.dim:
            raise ValueError(f"EwaldSum.pair_potential expected displacements of shape (..., "
                             f"{self.dim}), got shape {tuple(r.shape)}")
        dtype = jnp.result_type(r.dtype, self.box_length.dtype)
        length, a, g, weight, constant = self._constants(dtype)
        batch = r.shape[:-1]
        flat = minimum_image(r.astype(dtype).reshape(-1, self.dim), length)
        real = self._real_space(flat, length, a)
        reciprocal = jnp.cos(flat @ g.T) @ weight
        return (real + reciprocal + constant).reshape(batch)

    def energy(self, x: Float[Array, "n dim"]) -> Float[Array, ""]:
        r"""The total energy per cell ``sum_{i<j} phi(x_i - x_j) + N xi/2`` of one
        configuration, background included (see the module docstring for the form used).

        Args:
            x: positions ``(n, dim)``, anywhere (they are taken modulo ``L``).

        Returns:
            The 0-d energy; batch with ``jax.vmap``.

        Example:
            >>> ewald = EwaldSum(2, 4.0)
            >>> xs = jax.random.uniform(jax.random.key(0), (256, 13, 2), maxval=4.0)
            >>> e = jax.jit(jax.vmap(ewald.energy))(xs)      # (256,)
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"EwaldSum.energy expected one configuration of shape (n, "
                             f"{self.dim}), got shape {tuple(x.shape)}; batch with jax.vmap")
        n = x.shape[0]
        dtype = jnp.result_type(x.dtype, self.box_length.dtype)
        x = x.astype(dtype)
        length, a, g, weight, constant = self._constants(dtype)
        i, j = np.triu_indices(n, k=1)
        pairs = jnp.sum(self._real_space(minimum_image(x[i] - x[j], length), length, a))
        self_images = self._self_images(length, a, dtype)
        phase = x @ g.T                                                   # (n, half_g)
        s2 = jnp.sum(jnp.cos(phase), axis=0) ** 2 + jnp.sum(jnp.sin(phase), axis=0) ** 2
        reciprocal = 0.5 * jnp.sum(weight * s2)
        return (pairs + 0.5 * n * self_images + reciprocal + 0.5 * n**2 * constant
                - n * a / math.sqrt(math.pi))
