r"""Quantum Hamiltonians of electrons in continuous space: local energy and potential.

A quantum system defines ``H = -c sum_i lap_i + V(x)`` on configurations ``x`` of shape
``(n, dim)`` with ``n = n_up + n_down`` electrons, the spin-up ones first. The local energy
of a wavefunction with real log-amplitude ``ln|Psi|`` is

.. math::

    E_{\rm loc}(x) = \frac{(H\Psi)(x)}{\Psi(x)}
    = -c\left(\nabla^2\ln|\Psi| + |\nabla\ln|\Psi||^2\right) + V(x),

with the Laplacian computed by a method passed as a value (see
:mod:`thermax.quantum._laplacian`). The systems act on one configuration;
:meth:`AbstractQuantumSystem.local_energy_batch` is the batched edge.
"""

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Inexact, PRNGKeyArray

from .._checks import check_batch, check_shape
from ._laplacian import AbstractLaplacian, kinetic_energy


class AbstractQuantumSystem(eqx.Module):
    r"""A Hamiltonian ``H = -c sum_i lap_i + V(x)`` of ``n_up + n_down`` electrons in ``dim`` D.

    Subclasses set the fields ``n_up``, ``n_down``, ``dim``, the class variable
    ``kinetic_prefactor`` (``c = hbar^2/(2m)``: ``1/2`` in Hartree units, ``1`` in Rydberg
    units) and implement the private hook ``_potential_energy(x)``. The public methods
    check shapes once: :meth:`potential_energy`, :meth:`local_energy` (one configuration)
    and :meth:`local_energy_batch` (a batch, ``vmap`` at the edge).
    """

    n_up: eqx.AbstractVar[int]
    n_down: eqx.AbstractVar[int]
    dim: eqx.AbstractVar[int]
    kinetic_prefactor: eqx.AbstractClassVar[float]

    @property
    def n(self) -> int:
        """Number of electrons ``n_up + n_down``."""
        return self.n_up + self.n_down

    @property
    def shape(self) -> tuple[int, int]:
        """The configuration shape ``(n, dim)`` (spin-up electrons first)."""
        return (self.n, self.dim)

    def potential_energy(self, x: Float[Array, "n dim"]) -> Float[Array, ""]:
        """``V(x)`` of one configuration ``(n, dim)``; batch with ``jax.vmap``."""
        check_shape(x, self.shape, f"{type(self).__name__}.potential_energy")
        return self._potential_energy(x)

    @abc.abstractmethod
    def _potential_energy(self, x: Array) -> Array:
        raise NotImplementedError

    def initial_positions(self, key: PRNGKeyArray, batch: int, dtype
                          ) -> Float[Array, "batch n dim"]:
        """Starting positions of ``batch`` walkers before the burn-in: standard normal
        around the origin (a trap); periodic systems spread them over the box."""
        return jax.random.normal(key, (batch, *self.shape), dtype)

    def local_energy(self, log_psi: Callable[[Float[Array, "n dim"]], Inexact[Array, ""]],
                     x: Float[Array, "n dim"], *, laplacian: AbstractLaplacian,
                     key: PRNGKeyArray | None = None) -> Inexact[Array, ""]:
        r"""The local energy ``(H Psi)(x) / Psi(x)`` of one configuration.

        .. math::

            E_{\rm loc} = -c\left(\nabla^2\ln|\Psi| + |\nabla\ln|\Psi||^2\right) + V(x).

        Args:
            log_psi: ``ln|Psi|`` of one configuration ``(n, dim)``, real 0-d; or the
                complex ``ln Psi`` of a complex wavefunction (then the local energy is
                complex: its real part averages to the energy, its imaginary part to 0).
            x: one configuration ``(n, dim)``.
            laplacian: the Laplacian method (a value, e.g. ``ForwardLaplacian()``).
            key: PRNG key, required by stochastic Laplacian methods.

        Returns:
            The 0-d local energy (complex for a complex ``log_psi``).

        Example:
            >>> dot = QuantumDot(1, 1, omega=1.0, coulomb=0.0)
            >>> log_psi = lambda x: -0.5 * jnp.sum(x**2)       # ground state, E = 2
            >>> dot.local_energy(log_psi, jnp.ones((2, 2)), laplacian=LoopLaplacian())
        """
        check_shape(x, self.shape, f"{type(self).__name__}.local_energy")
        kinetic = kinetic_energy(log_psi, x, laplacian, key=key,
                                 mass_factor=self.kinetic_prefactor)
        return kinetic + self._potential_energy(x)

    def local_energy_batch(self, log_psi: Callable[..., Inexact[Array, ""]],
                           xs: Float[Array, "batch n dim"], *args: Any,
                           laplacian: AbstractLaplacian,
                           key: PRNGKeyArray | None = None,
                           chunk_size: int | None = None) -> Inexact[Array, " batch"]:
        """Local energies of a batch of configurations (``vmap`` of :meth:`local_energy`).

        Args:
            log_psi: ``ln|Psi|`` of ONE configuration, called as ``log_psi(x, *args)``
                (unbatched: the Laplacian differentiates it per configuration).
            xs: configurations ``(batch, n, dim)``.
            *args: per-configuration arguments batched along axis 0 (e.g. the occupied
                set ``K`` of each walker); each is passed unbatched to ``log_psi``.
            laplacian: the Laplacian method.
            key: one PRNG key for the whole batch (split per configuration inside), required
                by stochastic Laplacian methods.
            chunk_size: evaluate ``chunk_size`` configurations at a time (``lax.map``) to
                bound the memory of the Laplacian's intermediates; ``None`` (default): the
                whole batch in one ``vmap``. The results are the same either way.

        Returns:
            ``(batch,)`` local energies.

        Example:
            >>> log_psi = lambda x, k: -0.5 * k * jnp.sum(x**2)
            >>> e = dot.local_energy_batch(log_psi, xs, ks, laplacian=ForwardLaplacian())
        """
        check_batch(xs, self.shape, None, f"{type(self).__name__}.local_energy_batch")
        batch = xs.shape[0]
        keys = None if key is None else jax.random.split(key, batch)

        def one(x, k, a):
            return self.local_energy(lambda y: log_psi(y, *a), x, laplacian=laplacian, key=k)

        if chunk_size is None or chunk_size >= batch:
            return jax.vmap(one)(xs, keys, args)
        return jax.lax.map(lambda a: one(*a), (xs, keys, args), batch_size=int(chunk_size))


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"QuantumDot: {name} must be an int >= 0, got {value!r}")
    return value


class QuantumDot(AbstractQuantumSystem):
    r"""Electrons in a harmonic trap with Coulomb repulsion (Hartree units, hbar = m = e = 1).

    .. math::

        H = \sum_i \left(-\tfrac12\nabla_i^2 + \tfrac12\omega^2|x_i|^2\right)
            + \lambda\sum_{i<j}\frac{1}{|x_i - x_j|},

    with ``lambda = coulomb`` (``1`` physical, ``0`` non-interacting). Non-interacting
    levels are ``omega (n_x + n_y + 1)`` in 2D (``omega (sum n + dim/2)`` in ``dim`` D).
    Reference: the ``N = 2`` unpolarised ground state at ``omega = 1``, ``lambda = 1`` has
    ``E = 3`` exactly (Taut 1993; ``Psi = (1 + |x_1 - x_2|) exp(-(|x_1|^2 + |x_2|^2)/2)``).

    Args:
        n_up: spin-up electrons (``>= 0``; they come first in a configuration).
        n_down: spin-down electrons (``>= 0``; ``n_up + n_down >= 1``).
        omega: trap frequency (``> 0``), stored as a 0-d array (differentiable, sweepable).
        coulomb: interaction strength ``lambda`` (``>= 0``), stored as a 0-d array.
        dim: space dimension, 1, 2 (default, the physical dot) or 3. In 1D the bare
            Coulomb interaction is not integrable at contact; there it only makes sense
            with ``coulomb=0`` or fermions of one spin (whose wavefunction vanishes there).

    Example:
        >>> dot = QuantumDot(n_up=3, n_down=3, omega=1.0)
        >>> dot.potential_energy(jnp.ones((6, 2)))
    """

    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)
    omega: Float[Array, ""]
    coulomb: Float[Array, ""]
    dim: int = eqx.field(static=True)
    kinetic_prefactor: ClassVar[float] = 0.5

    def __init__(self, n_up: int, n_down: int, omega: float | Float[ArrayLike, ""],
                 coulomb: float | Float[ArrayLike, ""] = 1.0, dim: int = 2):
        self.n_up = _check_count("n_up", n_up)
        self.n_down = _check_count("n_down", n_down)
        if n_up + n_down == 0:
            raise ValueError("QuantumDot: needs at least one electron; n_up and n_down are "
                             "both 0")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim not in (1, 2, 3):
            raise ValueError(f"QuantumDot: dim must be 1, 2 or 3, got {dim!r}")
        self.dim = dim
        omega = jnp.asarray(omega)
        coulomb = jnp.asarray(coulomb)
        for name, val in (("omega", omega), ("coulomb", coulomb)):
            if val.shape != ():
                raise ValueError(f"QuantumDot: {name} must be a number or a 0-d array, got "
                                 f"shape {val.shape}")
        dtype = jnp.result_type(omega, coulomb, float)
        self.omega = omega.astype(dtype)
        self.coulomb = coulomb.astype(dtype)
        # value checks only where concrete (constructing under jit/grad stays possible)
        if not isinstance(self.omega, jax.core.Tracer) and not float(self.omega) > 0:
            raise ValueError(f"QuantumDot: omega must be > 0 (the trap frequency), got "
                             f"{float(self.omega)}")
        if not isinstance(self.coulomb, jax.core.Tracer) and not float(self.coulomb) >= 0:
            raise ValueError(f"QuantumDot: coulomb must be >= 0 (0 = non-interacting, 1 = "
                             f"physical), got {float(self.coulomb)}")

    def _potential_energy(self, x):
        dtype = x.dtype
        omega = self.omega.astype(dtype)
        trap = 0.5 * omega**2 * jnp.sum(x**2)
        if self.n < 2:
            return trap
        i, j = jnp.triu_indices(self.n, k=1)
        r = jnp.sqrt(jnp.sum((x[i] - x[j]) ** 2, axis=-1))
        return trap + self.coulomb.astype(dtype) * jnp.sum(1.0 / r)

    def describe(self) -> dict:
        """Figures that identify this system, for ``results.json``."""
        return {"n_up": self.n_up, "n_down": self.n_down, "dim": self.dim,
                "omega": float(self.omega), "coulomb": float(self.coulomb)}
