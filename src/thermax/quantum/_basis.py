r"""Single-particle bases: orbitals ``phi_k(z)`` and their energies, for Slater determinants.

A basis is a finite, energy-ordered list of ``M`` orthonormal one-particle orbitals.
:class:`AbstractBasis` is the interface (the electron gas's plane waves plug in as another
subclass, with complex orbitals); :class:`OscillatorBasis2D` is the 2D isotropic harmonic
oscillator of a quantum dot.
"""

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Inexact


class AbstractBasis(eqx.Module):
    r"""``M`` orthonormal single-particle orbitals in ``dim`` dimensions, sorted by energy.

    :meth:`orbitals` evaluates every orbital at every particle position, ``Phi[b, k] =
    phi_k(z_b)`` (real, or complex for plane waves); :attr:`energies` are their
    single-particle energies in the same order (non-decreasing), the order in which an
    occupation ``K`` indexes them.

    Subclasses set ``n_orbitals`` and ``dim``, implement the property ``energies`` and the
    private hook ``_orbitals(z)``; the public :meth:`orbitals` checks the shape once here.
    """

    n_orbitals: eqx.AbstractVar[int]
    dim: eqx.AbstractVar[int]
    #: Whether :meth:`orbitals` returns complex values (plane waves with a twist); a
    #: wavefunction built on a complex basis has a complex phase instead of a sign.
    is_complex: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def energies(self) -> Float[Array, " m"]:
        """The single-particle energies ``e_k``, non-decreasing, shape ``(n_orbitals,)``."""
        raise NotImplementedError

    def orbitals(self, z: Float[Array, "n dim"]) -> Inexact[Array, "n m"]:
        """``Phi[b, k] = phi_k(z_b)`` for positions ``z`` of shape ``(n, dim)``.

        Returns an array of shape ``(n, n_orbitals)``, of the dtype of ``z`` (a complex
        dtype for complex orbitals)."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__}.orbitals expected positions of shape "
                             f"(n, {self.dim}), got shape {tuple(z.shape)}; batch with "
                             "jax.vmap")
        return self._orbitals(z)

    @abc.abstractmethod
    def _orbitals(self, z: Array) -> Array:
        raise NotImplementedError


def hermite_functions(xi: Float[Array, "*batch"], n_max: int) -> Float[Array, " orders *batch"]:
    r"""The normalised Hermite functions ``h_0(xi), ..., h_{n_max}(xi)``.

    ``h_n(xi) = pi^{-1/4} (2^n n!)^{-1/2} H_n(xi) e^{-xi^2/2}``, orthonormal on the line,
    by the stable three-term recursion (no factorials, no overflow):

    .. math::

        h_0 = \pi^{-1/4} e^{-\xi^2/2},\quad h_1 = \sqrt2\,\xi h_0,\quad
        h_{n+1} = \sqrt{\tfrac{2}{n+1}}\,\xi h_n - \sqrt{\tfrac{n}{n+1}}\,h_{n-1}.

    Args:
        xi: points, any shape.
        n_max: the highest order (``>= 0``).

    Returns:
        Shape ``(n_max + 1, *xi.shape)``.

    Example:
        >>> h = hermite_functions(jnp.linspace(-3, 3, 7), 4)   # (5, 7)
    """
    if int(n_max) < 0:
        raise ValueError(f"hermite_functions: n_max must be >= 0, got {n_max}")
    h = [math.pi ** -0.25 * jnp.exp(-0.5 * xi**2)]
    if n_max >= 1:
        h.append(math.sqrt(2.0) * xi * h[0])
    for n in range(1, int(n_max)):
        h.append(math.sqrt(2.0 / (n + 1)) * xi * h[n] - math.sqrt(n / (n + 1)) * h[n - 1])
    return jnp.stack(h)


def _oscillator_quanta(n_shells: int) -> list[tuple[int, int]]:
    """``(nx, ny)`` by shell ``nx + ny``, then decreasing ``nx`` within a shell."""
    return [(s - ny, ny) for s in range(n_shells) for ny in range(s + 1)]


class OscillatorBasis2D(AbstractBasis):
    r"""The 2D isotropic harmonic oscillator orbitals (``hbar = m = 1``).

    ``H_1 = -lap/2 + omega^2 |r|^2 / 2`` has the orthonormal eigenfunctions

    .. math::

        \phi_{n_x n_y}(x, y) = \psi_{n_x}(x)\,\psi_{n_y}(y),\qquad
        \psi_n(x) = \omega^{1/4} h_n(\sqrt\omega\, x)
                  = \Bigl(\frac{\omega}{\pi}\Bigr)^{1/4}\frac{H_n(\sqrt\omega x)}
                    {\sqrt{2^n n!}}\, e^{-\omega x^2/2},

    of energy ``omega (n_x + n_y + 1)``, with ``h_n`` the normalised Hermite functions
    (:func:`hermite_functions`, by recursion). **Order:** by shell ``s = n_x + n_y``
    (energy), and within a shell by decreasing ``n_x``: ``(0,0), (1,0), (0,1), (2,0),
    (1,1), (0,2), (3,0), ...``; :attr:`quanta` lists them. Shell ``s`` holds ``s + 1``
    orbitals, so closed shells hold 1, 3, 6, 10, 15, ... orbitals.

    ``omega`` is a 0-d array (changing it does not recompile). It is an inexact leaf, so
    gradient-based training of a model holding the basis would also fit it; filter it out
    (``eqx.partition``) to keep the trap frequency fixed.

    Args:
        omega: the trap frequency, ``> 0``.
        n_orbitals: keep the first ``n_orbitals`` orbitals in the order above (``>= 1``;
            it may stop inside a shell).
        emax: or keep every orbital of energy ``<= emax`` (whole shells; ``emax >=
            omega``). Give exactly one of ``n_orbitals`` and ``emax``.
        dtype: dtype of ``omega`` (default: the default float).

    Example:
        >>> basis = OscillatorBasis2D(1.0, emax=3.0)       # 6 orbitals, shells 0, 1, 2
        >>> phi = basis.orbitals(jnp.zeros((2, 2)))        # (2, 6)
    """

    omega: Float[Array, ""]
    quanta: tuple[tuple[int, int], ...] = eqx.field(static=True)
    n_orbitals: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def __init__(self, omega: Float[ArrayLike, ""], *, n_orbitals: int | None = None,
                 emax: float | None = None, dtype=None):
        dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
        omega_value = float(np.asarray(omega))
        if not omega_value > 0:
            raise ValueError(f"OscillatorBasis2D: omega must be positive, got {omega_value}")
        if (n_orbitals is None) == (emax is None):
            raise ValueError("OscillatorBasis2D: give exactly one of n_orbitals (how many "
                             "orbitals) and emax (the largest single-particle energy), got "
                             f"n_orbitals={n_orbitals}, emax={emax}")
        if n_orbitals is not None:
            if int(n_orbitals) < 1:
                raise ValueError(f"OscillatorBasis2D: n_orbitals must be >= 1, got "
                                 f"{n_orbitals}")
            n_orbitals = int(n_orbitals)
            n_shells = next(s for s in range(1, n_orbitals + 1)
                            if s * (s + 1) // 2 >= n_orbitals)
        else:
            # shells s with omega (s + 1) <= emax (a relative slack for rounding)
            n_shells = math.floor(float(emax) / omega_value * (1 + 1e-12))
            if n_shells < 1:
                raise ValueError(f"OscillatorBasis2D: emax={emax} is below the lowest "
                                 f"single-particle energy omega={omega_value}; need emax >= "
                                 "omega")
            n_orbitals = n_shells * (n_shells + 1) // 2
        self.quanta = tuple(_oscillator_quanta(n_shells)[:n_orbitals])
        self.n_orbitals, self.dim = n_orbitals, 2
        self.omega = jnp.asarray(omega, dtype)

    @property
    def energies(self) -> Float[Array, " m"]:
        shells = np.array([nx + ny + 1 for nx, ny in self.quanta])
        return self.omega * jnp.asarray(shells, self.omega.dtype)

    def _orbitals(self, z):
        omega = self.omega.astype(jnp.result_type(z.dtype, self.omega.dtype))
        n_max = max(max(q) for q in self.quanta)
        psi = omega**0.25 * hermite_functions(jnp.sqrt(omega) * z, n_max)  # (n_max+1, n, 2)
        nx = np.array([q[0] for q in self.quanta])
        ny = np.array([q[1] for q in self.quanta])
        return (psi[nx, :, 0] * psi[ny, :, 1]).T
