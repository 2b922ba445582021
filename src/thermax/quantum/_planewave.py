r"""Plane waves in a periodic box: the single-particle basis of the uniform electron gas.

A cube (square) of side ``L`` in ``dim = 2`` or ``3`` dimensions with twisted periodic
boundary conditions ``phi(z + L e_a) = exp(2 pi i theta_a) phi(z)`` has the orthonormal
orbitals and kinetic energies

.. math::

    \phi_{\mathbf k}(\mathbf z) = L^{-d/2}\, e^{i\mathbf k\cdot\mathbf z},\qquad
    \mathbf k = \frac{2\pi}{L}(\mathbf n + \boldsymbol\theta),\ \mathbf n\in\mathbb Z^d,\qquad
    \epsilon_{\mathbf k} = \frac{\hbar^2}{2m}|\mathbf k|^2 .

**Units.** ``prefactor = hbar^2 / 2m`` defaults to ``1``: Rydberg units (energies in Ry,
lengths in Bohr radii ``a_0``); ``prefactor = 0.5`` is Hartree units (same lengths). The
density parameter ``r_s`` (in ``a_0``) fixes the box of ``N`` electrons through
``L^2 = pi N r_s^2`` (2D) or ``L^3 = 4 pi N r_s^3 / 3`` (3D). For the spin-polarised gas
(one electron per plane wave) the Fermi wavevector is ``k_F = 2 / r_s`` (2D) or
``k_F = (9 pi / 2)^{1/3} / r_s`` (3D), and ``T_F = E_F = prefactor * k_F^2`` (``k_B = 1``).

**Shells.** Plane waves of equal ``|n + theta|^2`` are degenerate; ``N`` fermions of one spin
fill closed shells for ``N`` in :func:`closed_shell_counts` (2D, ``theta = 0``: 1, 5, 9, 13,
21, 25, ...; 3D: 1, 7, 19, 27, 33, 57, ...), the sizes at which the free ground state is
unique and isotropic.
"""

import math
from collections.abc import Sequence
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._basis import AbstractBasis

#: Relative tolerance below which two values of ``|n + theta|^2`` are one shell (and by
#: which ``emax`` is relaxed for rounding).
_RTOL = 1e-10
#: The most integer vectors one enumeration may scan (a guard against a huge ``emax``).
_MAX_SCAN = 20_000_000

_TwistLike = Sequence[float | int] | Float[ArrayLike, " dim"] | None


def _check_dim(dim, what: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim not in (2, 3):
        raise ValueError(f"{what}: dim must be 2 or 3 (a square or a cube), got {dim!r}")
    return int(dim)


def _check_twist(twist, dim: int, what: str) -> tuple[float, ...]:
    if twist is None:
        return (0.0,) * dim
    values = np.asarray(twist, dtype=np.float64)
    if values.shape != (dim,):
        raise ValueError(f"{what}: twist must hold dim = {dim} numbers (one per axis), got "
                         f"{twist!r} of shape {values.shape}")
    if not np.all(np.abs(values) <= 0.5):
        raise ValueError(f"{what}: every twist component must lie in [-1/2, 1/2] (other "
                         f"values repeat these up to relabelling the momenta), got {twist!r}")
    return tuple(float(t) for t in values)


def _check_positive(value, name: str, what: str) -> float | None:
    """``float(value)``, checked ``> 0`` and finite; ``None`` for a traced value."""
    if isinstance(value, jax.core.Tracer):
        return None
    array = np.asarray(value)
    if array.ndim != 0:
        raise ValueError(f"{what}: {name} must be a scalar, got shape {array.shape}")
    number = float(array)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{what}: {name} must be positive and finite, got {number}")
    return number


def _scan(dim: int, twist: tuple[float, ...], qmax: float, what: str):
    """Every ``n`` with ``|n + theta|^2 <= qmax`` (relaxed by :data:`_RTOL`), in basis order.

    Returns ``(n, q)``: integer vectors ``(count, dim)`` and their shell values ``q`` (each
    shell's smallest computed ``|n + theta|^2``, so ``q`` is non-decreasing), sorted by
    shell, then lexicographically by ``n``.
    """
    r = math.floor(math.sqrt(max(qmax, 0.0))) + 1
    side = 2 * r + 1
    if side**dim > _MAX_SCAN:
        raise ValueError(f"{what}: the cutoff is too large (it would scan {side}^{dim} "
                         f"momenta, more than {_MAX_SCAN}); lower emax or n_orbitals")
    axis = np.arange(-r, r + 1)
    n = np.stack(np.meshgrid(*([axis] * dim), indexing="ij"), axis=-1).reshape(-1, dim)
    q = np.sum((n + np.asarray(twist)) ** 2, axis=1)
    keep = q <= qmax * (1 + _RTOL) + _RTOL
    n, q = n[keep], q[keep]
    order = np.argsort(q, kind="stable")
    n, q = n[order], q[order]
    # shells: consecutive values within _RTOL of the shell's first (smallest) value
    shell = np.zeros(len(q), dtype=np.int64)
    start = 0
    for i in range(1, len(q)):
        if q[i] > q[start] * (1 + _RTOL) + _RTOL:
            start = i
            shell[i] = shell[i - 1] + 1
        else:
            shell[i] = shell[i - 1]
        q[i] = q[start]
    order = np.lexsort(tuple(n[:, a] for a in reversed(range(dim))) + (shell,))
    return n[order], q[order]


def _lowest(dim: int, twist: tuple[float, ...], count: int, what: str):
    """:func:`_scan` up to a ``qmax`` that holds at least ``count`` vectors (whole shells)."""
    qmax = 1.0
    while True:
        n, q = _scan(dim, twist, qmax, what)
        if len(q) >= count:
            return n, q
        qmax *= 2.0


def _shell_sizes(q: np.ndarray) -> list[int]:
    """Lengths of the runs of equal values in the non-decreasing ``q``."""
    _, sizes = np.unique(q, return_counts=True)
    return [int(s) for s in sizes]


class PlaneWaveBasis(AbstractBasis):
    r"""The ``M`` lowest plane waves of a periodic box of side ``L`` (``dim = 2`` or ``3``).

    .. math::

        \phi_j(\mathbf z) = L^{-d/2} e^{i\mathbf k_j\cdot\mathbf z},\quad
        \mathbf k_j = \frac{2\pi}{L}(\mathbf n_j + \boldsymbol\theta),\quad
        e_j = \text{prefactor}\,|\mathbf k_j|^2,

    orthonormal on the box and twisted-periodic:
    ``phi_j(z + L e_a) = exp(2 pi i theta_a) phi_j(z)``. Complex (:attr:`is_complex`); a
    Slater determinant of them has a complex phase instead of a sign.

    **Order:** by energy, and within a shell (equal ``|n + theta|^2``, up to a relative
    ``1e-10``) lexicographically by ``n``; :attr:`quanta` lists the ``n_j``, :attr:`momenta`
    the ``k_j``. The order depends on ``n`` and ``theta`` only, not on ``L``.

    ``box_length`` is a 0-d array (changing it does not recompile, and it may be traced;
    ``twist`` and ``prefactor`` are static). :func:`~thermax.quantum.trainable` keeps the
    basis fixed; filter it out yourself (``eqx.partition``) elsewhere.

    Args:
        box_length: the side ``L`` of the box, ``> 0`` (in Bohr radii for the default units).
        dim: 2 or 3.
        twist: ``theta``, ``dim`` numbers in ``[-1/2, 1/2]`` (default: zeros, periodic).
        emax: keep every plane wave of energy ``<= emax`` (whole shells; at least the lowest
            level).
        n_orbitals: or keep the lowest ``n_orbitals`` (``>= 1``; it may stop inside a
            shell). Give exactly one of ``emax`` and ``n_orbitals``.
        prefactor: the kinetic prefactor ``hbar^2 / 2m``, ``> 0``: 1 for Rydberg units
            (default), 0.5 for Hartree.
        dtype: dtype of ``box_length`` (default: the default float).

    Example:
        >>> basis = PlaneWaveBasis(2 * jnp.pi, 2, n_orbitals=5)   # k = n: 0, (+-1, 0), ...
        >>> basis.quanta
        ((0, 0), (-1, 0), (0, -1), (0, 1), (1, 0))
        >>> phi = basis.orbitals(jnp.zeros((3, 2)))                # (3, 5) complex128
    """

    box_length: Float[Array, ""]
    twist: tuple[float, ...] = eqx.field(static=True)
    prefactor: float = eqx.field(static=True)
    quanta: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    #: ``|n_j + theta|^2`` of each orbital (one value per shell), non-decreasing.
    norms2: tuple[float, ...] = eqx.field(static=True)
    n_orbitals: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    is_complex: ClassVar[bool] = True

    def __init__(self, box_length: Float[ArrayLike, ""], dim: int, *,
                 twist: _TwistLike = None, emax: float | int | None = None,
                 n_orbitals: int | None = None, prefactor: float | int = 1.0, dtype=None):
        what = "PlaneWaveBasis"
        dim = _check_dim(dim, what)
        length = _check_positive(box_length, "box_length", what)
        if length is None:
            raise ValueError(f"{what}: box_length must be a concrete number (it sets the "
                             "cutoff), got a traced value; build the basis outside jit")
        twist = _check_twist(twist, dim, what)
        prefactor = _check_positive(prefactor, "prefactor", what)
        if (n_orbitals is None) == (emax is None):
            raise ValueError(f"{what}: give exactly one of emax (the largest single-particle "
                             "energy) and n_orbitals (how many plane waves), got "
                             f"emax={emax}, n_orbitals={n_orbitals}")
        unit = prefactor * (2 * math.pi / length) ** 2  # energy of |n + theta|^2 = 1
        if n_orbitals is not None:
            if isinstance(n_orbitals, bool) or int(n_orbitals) < 1:
                raise ValueError(f"{what}: n_orbitals must be an int >= 1, got {n_orbitals!r}")
            n_orbitals = int(n_orbitals)
            n, q = _lowest(dim, twist, n_orbitals, what)
            n, q = n[:n_orbitals], q[:n_orbitals]
        else:
            lowest = unit * sum(t * t for t in twist)
            if not float(emax) >= lowest * (1 - _RTOL):
                raise ValueError(f"{what}: emax={emax} is below the lowest single-particle "
                                 f"energy {lowest} (prefactor * |2 pi theta / L|^2); need "
                                 f"emax >= {lowest}")
            n, q = _scan(dim, twist, max(float(emax) / unit, sum(t * t for t in twist)), what)
        self.quanta = tuple(tuple(int(a) for a in row) for row in n)
        self.norms2 = tuple(float(v) for v in q)
        self.n_orbitals, self.dim = len(self.quanta), dim
        self.twist, self.prefactor = twist, prefactor
        self.box_length = jnp.asarray(box_length, jnp.result_type(float) if dtype is None
                                      else dtype)

    @classmethod
    def for_density(cls, n_particles: int | tuple[int, int], rs: Float[ArrayLike, ""],
                    dim: int, *, twist: _TwistLike = None, emax: float | int | None = None,
                    n_orbitals: int | None = None, prefactor: float | int = 1.0,
                    dtype=None) -> "PlaneWaveBasis":
        r"""The basis of ``N`` electrons at density parameter ``r_s``
        (:func:`box_length_for_density` sets ``L``), checked to hold every electron.

        Args:
            n_particles: ``N`` for a spin-polarised gas, or ``(n_up, n_down)``: the density
                counts ``n_up + n_down``, the cutoff must hold ``max(n_up, n_down)``.
            rs: the Wigner-Seitz radius in Bohr radii, ``> 0``.
            dim: spatial dimension, as for :class:`PlaneWaveBasis`.
            twist: the twist, as for :class:`PlaneWaveBasis`.
            emax: the energy cutoff, as for :class:`PlaneWaveBasis`, in absolute energy
                units (e.g. a multiple of :func:`fermi_temperature`).
            n_orbitals: the number of orbitals, as for :class:`PlaneWaveBasis`.
            prefactor: the kinetic prefactor, as for :class:`PlaneWaveBasis`.
            dtype: the dtype of the box length, as for :class:`PlaneWaveBasis`.

        Raises:
            ValueError: besides the constructor's checks, a cutoff with fewer orbitals than
                electrons of one spin.

        Example:
            >>> basis = PlaneWaveBasis.for_density(13, 1.0, 2, emax=6 * fermi_temperature(1.0, 2))
            >>> basis.box_length                  # sqrt(13 pi)
            Array(6.39067..., dtype=float64)
        """
        total, largest = _particles(n_particles, "PlaneWaveBasis.for_density")
        length = box_length_for_density(total, rs, dim)
        basis = cls(length, dim, twist=twist, emax=emax, n_orbitals=n_orbitals,
                    prefactor=prefactor, dtype=dtype)
        basis.check_cutoff(largest)
        return basis

    def check_cutoff(self, n_particles: int) -> None:
        """Raise a ``ValueError`` if ``n_particles`` electrons of one spin do not fit in the
        basis (a cutoff too small for ``N``).

        Example:
            >>> PlaneWaveBasis(1.0, 2, n_orbitals=5).check_cutoff(5)   # fine; 6 raises
        """
        if int(n_particles) > self.n_orbitals:
            raise ValueError(f"PlaneWaveBasis: a cutoff too small for N = {n_particles}: it "
                             f"holds {self.n_orbitals} plane waves, fewer than the "
                             f"{n_particles} electrons of one spin; raise emax or n_orbitals")

    @property
    def momenta(self) -> Float[Array, "m dim"]:
        """The wavevectors ``k_j = 2 pi (n_j + theta) / L``, shape ``(n_orbitals, dim)``."""
        shifted = np.asarray(self.quanta, np.float64) + np.asarray(self.twist)
        return (2 * jnp.pi / self.box_length) * jnp.asarray(shifted, self.box_length.dtype)

    @property
    def energies(self) -> Float[Array, " m"]:
        """``prefactor |k_j|^2``, non-decreasing (equal within a shell)."""
        unit = self.prefactor * (2 * jnp.pi / self.box_length) ** 2
        return unit * jnp.asarray(self.norms2, self.box_length.dtype)

    @property
    def shells(self) -> tuple[Float[Array, " shells"], tuple[int, ...]]:
        """``(energies, degeneracies)`` of the distinct levels in the basis, in order.

        With ``n_orbitals`` stopping inside a shell, the last degeneracy counts only the
        plane waves kept.

        Example:
            >>> PlaneWaveBasis(2 * jnp.pi, 2, emax=2.0).shells
            (Array([0., 1., 2.], dtype=float64), (1, 4, 4))
        """
        sizes = tuple(_shell_sizes(np.asarray(self.norms2)))
        starts = np.cumsum((0,) + sizes[:-1])
        return self.energies[starts], sizes

    def _orbitals(self, z):
        dtype = z.dtype if jnp.issubdtype(z.dtype, jnp.floating) else jnp.result_type(float)
        z = z.astype(dtype)
        length = self.box_length.astype(dtype)
        shifted = jnp.asarray(np.asarray(self.quanta, np.float64) + np.asarray(self.twist),
                              dtype)
        phase = (2 * jnp.pi / length) * (z @ shifted.T)  # (n, m)
        norm = length ** (-0.5 * self.dim)
        return jax.lax.complex(norm * jnp.cos(phase), norm * jnp.sin(phase))


def _particles(n_particles, what: str) -> tuple[int, int]:
    """``(total, largest single-spin count)`` of ``N`` or ``(n_up, n_down)``."""
    ns = (n_particles,) if isinstance(n_particles, int | np.integer) else tuple(n_particles)
    if (not 1 <= len(ns) <= 2 or any(isinstance(x, bool) or not isinstance(x, int | np.integer)
                                     or x < 0 for x in ns) or sum(ns) < 1):
        raise ValueError(f"{what}: n_particles must be an int >= 1 (a polarised gas) or a "
                         f"pair (n_up, n_down) of ints >= 0, not both 0; got {n_particles!r}")
    return int(sum(ns)), int(max(ns))


def box_length_for_density(n_particles: int, rs: Float[ArrayLike, ""],
                           dim: int) -> Float[Array, ""]:
    r"""The side ``L`` of the box holding ``N`` electrons at Wigner-Seitz radius ``r_s``.

    One electron per disc (sphere) of radius ``r_s``:

    .. math::

        L^2 = \pi N r_s^2 \ (d = 2),\qquad L^3 = \tfrac{4\pi}{3} N r_s^3 \ (d = 3).

    ``L`` is in the units of ``r_s`` (Bohr radii). Differentiable in ``rs``.

    Example:
        >>> box_length_for_density(13, 1.0, 2)     # sqrt(13 pi)
        Array(6.39067..., dtype=float64)
    """
    what = "box_length_for_density"
    dim = _check_dim(dim, what)
    if isinstance(n_particles, bool) or not isinstance(n_particles, int | np.integer) \
            or n_particles < 1:
        raise ValueError(f"{what}: n_particles must be an int >= 1, got {n_particles!r}")
    _check_positive(rs, "rs", what)
    rs = _as_float(rs)
    if dim == 2:
        return jnp.sqrt(math.pi * n_particles) * rs
    return (4 * math.pi * n_particles / 3) ** (1 / 3) * rs


def _as_float(x) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def fermi_wavevector(rs: Float[ArrayLike, ""], dim: int) -> Float[Array, ""]:
    r"""The Fermi wavevector ``k_F`` of the spin-polarised electron gas (in ``1 / a_0``).

    With density ``n = 1 / (pi r_s^2)`` (2D) or ``n = 3 / (4 pi r_s^3)`` (3D) and one
    electron per plane wave, ``k_F = (4 pi n)^{1/2}`` or ``(6 pi^2 n)^{1/3}``:

    .. math::

        k_F = \frac{2}{r_s}\ (d = 2),\qquad
        k_F = \Bigl(\frac{9\pi}{2}\Bigr)^{1/3}\frac{1}{r_s}\ (d = 3).

    (The unpolarised gas has ``k_F`` smaller by ``2^{1/d}``.) Differentiable in ``rs``.

    Example:
        >>> fermi_wavevector(1.0, 2)
        Array(2., dtype=float64)
    """
    what = "fermi_wavevector"
    dim = _check_dim(dim, what)
    _check_positive(rs, "rs", what)
    rs = _as_float(rs)
    return (2.0 if dim == 2 else (4.5 * math.pi) ** (1 / 3)) / rs


def fermi_temperature(rs: Float[ArrayLike, ""], dim: int, *,
                      prefactor: float | int = 1.0) -> Float[Array, ""]:
    r"""The Fermi temperature ``T_F = E_F = prefactor * k_F^2`` of the spin-polarised gas
    (``k_B = 1``; :func:`fermi_wavevector`).

    In Rydberg units (``prefactor = 1``, the default) ``T_F = 4 / r_s^2`` in 2D and
    ``(9 pi / 2)^{2/3} / r_s^2`` in 3D; ``prefactor = 0.5`` gives Hartree.

    Example:
        >>> fermi_temperature(1.0, 2)          # Ry
        Array(4., dtype=float64)
    """
    _check_positive(prefactor, "prefactor", "fermi_temperature")
    return prefactor * fermi_wavevector(rs, dim) ** 2


def closed_shell_counts(dim: int, twist: _TwistLike = None, *,
                        max_count: int = 100) -> tuple[int, ...]:
    """The particle numbers ``N <= max_count`` that fill closed shells of plane waves
    (one particle per plane wave: one spin), in increasing order.

    The cumulative shell sizes of ``|n + theta|^2``. 2D, ``theta = 0``: 1, 5, 9, 13, 21,
    25, 29, 37, 45, 49, 57, 61, 69, 81, ...; 3D: 1, 7, 19, 27, 33, 57, 81, 93, 123, ...
    They depend on ``dim`` and ``theta`` only.

    Example:
        >>> closed_shell_counts(2, max_count=30)
        (1, 5, 9, 13, 21, 25, 29)
    """
    what = "closed_shell_counts"
    dim = _check_dim(dim, what)
    twist = _check_twist(twist, dim, what)
    if isinstance(max_count, bool) or not isinstance(max_count, int | np.integer) \
            or max_count < 1:
        raise ValueError(f"{what}: max_count must be an int >= 1, got {max_count!r}")
    _, q = _lowest(dim, twist, int(max_count) + 1, what)
    counts = np.cumsum(_shell_sizes(q))
    return tuple(int(c) for c in counts if c <= max_count)


def require_closed_shell(n_particles: int, dim: int, twist: _TwistLike = None) -> None:
    """Raise a ``ValueError`` unless ``n_particles`` fills closed shells (of one spin).

    The message names the nearest closed-shell numbers below and above.

    Example:
        >>> require_closed_shell(13, 2)        # fine
        >>> require_closed_shell(14, 2)        # ValueError: ... nearest closed shells 13, 21
    """
    what = "require_closed_shell"
    if isinstance(n_particles, bool) or not isinstance(n_particles, int | np.integer) \
            or n_particles < 1:
        raise ValueError(f"{what}: n_particles must be an int >= 1, got {n_particles!r}")
    counts = closed_shell_counts(dim, twist, max_count=2 * int(n_particles) + 8)
    if n_particles in counts:
        return
    below = [c for c in counts if c < n_particles]
    above = [c for c in counts if c > n_particles]
    nearest = ", ".join(str(c) for c in [*below[-1:], *above[:1]])
    raise ValueError(f"N = {n_particles} does not fill closed shells of plane waves (dim = "
                     f"{dim}, twist = {_check_twist(twist, _check_dim(dim, what), what)}); "
                     f"the nearest closed shells are N = {nearest}")
