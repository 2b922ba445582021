"""Classical particles: the Coulomb gas in a harmonic trap (the lecture's tutorial system)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real

from ._base import AbstractSystem

#: Spatial dimensions a particle system may live in.
PARTICLE_DIMS = (1, 2, 3)


def _parameter(value, name: str, *, positive: bool) -> Array:
    """``value`` as a 0-d float array leaf, checked (``> 0`` or ``>= 0``) when concrete.

    Tracers (``CoulombTrap`` built inside ``jax.grad`` over ``trap``) keep their identity so
    derivatives flow; only their shape is checked.
    """
    allowed = "> 0" if positive else ">= 0"
    if np.shape(value) != ():
        raise ValueError(f"CoulombTrap needs {name} as a scalar ({name} {allowed}), got shape "
                         f"{np.shape(value)}")
    if not isinstance(value, jax.core.Tracer):
        v = float(np.asarray(value))
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            raise ValueError(f"CoulombTrap needs a finite {name} {allowed}, got {name}={v}")
    leaf = jnp.asarray(value)
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
        leaf = leaf.astype(jnp.result_type(float))
    return leaf


class CoulombTrap(AbstractSystem):
    r"""``n`` classical charges in ``dim`` dimensions in a harmonic trap.

        H(x) = coupling * sum_{i<j} 1 / |x_i - x_j|  +  trap * sum_i |x_i|^2,

    ``x`` of shape ``(n, dim)`` (PHYSICS.md §4; the default units ``trap = coupling = 1`` are
    Bedanov & Peeters' dimensionless units). Scaling ``x = l y`` with
    ``l = (coupling/trap)^{1/3}`` gives ``H = coupling^{2/3} trap^{1/3} H_1(y)``, ``H_1`` the
    default system.

    **Labelled particles.** Free energies are ``F = -ln Z / beta`` with
    ``Z = int exp(-beta H) d^{n dim}x`` over all coordinates and *no* ``1/n!``: the flows of
    thermax give densities on labelled coordinates. For identical particles
    ``ln Z`` loses ``ln n!``, so ``F_identical = F_labelled + ln(n!) / beta``.

    ``trap`` and ``coupling`` are 0-d array leaves, so ``jax.grad`` of anything built from
    :meth:`energy` reaches them: ``dF/dtrap = <sum_i |x_i|^2>`` and
    ``dF/dcoupling = <sum_{i<j} 1/r_ij>``. The pair sum runs over the ``i < j`` index list,
    so coincident labels never produce ``0/0`` in a gradient.

    Exact free energies (:meth:`exact_free_energy`, host float64): ``n = 1`` and
    ``coupling = 0`` are Gaussian; ``n = 2`` separates into the centre of mass and a 1D
    radial integral (:func:`thermax.exact.coulomb_pair_free_energy`). The low-temperature
    reference is the minimum energy, :meth:`ground_state`.

    Arguments:
        n: number of particles, an integer ``>= 1``.
        dim: spatial dimension, 1, 2 or 3.
        trap: trap strength, ``> 0`` (a Python float or a JAX scalar).
        coupling: Coulomb coupling, ``>= 0`` (a Python float or a JAX scalar).

    Example:
        >>> system = CoulombTrap(2, 2)
        >>> system.energy(jnp.array([[0.5, 0.0], [-0.5, 0.0]]))   # 1/1 + 2 * 0.25
        Array(1.5, dtype=float32)
        >>> round(system.ground_state().energy, 12)                # 3/2 at r = 1
        1.5
    """

    n_particles: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    trap: Float[Array, ""]
    coupling: Float[Array, ""]
    kind = "particles"

    def __init__(self, n: int, dim: int, *, trap: Real[ArrayLike, ""] = 1.0,
                 coupling: Real[ArrayLike, ""] = 1.0):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"CoulombTrap needs an integer number of particles n >= 1, got "
                             f"n={n!r}")
        if isinstance(dim, bool) or dim not in PARTICLE_DIMS:
            raise ValueError(f"CoulombTrap needs dim in {PARTICLE_DIMS}, got dim={dim!r}")
        self.trap = _parameter(trap, "trap", positive=True)
        self.coupling = _parameter(coupling, "coupling", positive=False)
        self.n_particles, self.dim = n, dim

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one configuration: ``(n_particles, dim)``."""
        return (self.n_particles, self.dim)

    @property
    def n(self) -> int:
        """Number of particles (free energies per particle divide by this)."""
        return self.n_particles

    def _energy(self, x):
        trap = self.trap.astype(x.dtype)
        confinement = trap * jnp.sum(x**2)
        if self.n_particles == 1:
            return confinement
        i, j = np.triu_indices(self.n_particles, k=1)
        r = jnp.sqrt(jnp.sum((x[i] - x[j]) ** 2, axis=-1))
        return self.coupling.astype(x.dtype) * jnp.sum(1.0 / r) + confinement

    def _host_parameters(self) -> tuple[float, float]:
        return float(np.asarray(self.trap)), float(np.asarray(self.coupling))

    def exact_free_energy(self, beta: float) -> float | None:
        """``-ln Z / beta`` (labelled particles, host float64) for ``n = 1``, ``n = 2`` or
        ``coupling = 0``; ``None`` otherwise.

        ``n = 1`` (and each particle at ``coupling = 0``): ``ln Z = (dim/2) ln(pi/(beta trap))``.
        ``n = 2``: :func:`thermax.exact.coulomb_pair_free_energy`.
        """
        from ..exact import coulomb_pair_free_energy

        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"CoulombTrap's free energy needs a finite beta > 0, got "
                             f"beta={beta}")
        trap, coupling = self._host_parameters()
        if self.n_particles == 1 or coupling == 0.0:
            log_z = 0.5 * self.n_particles * self.dim * math.log(math.pi / (beta * trap))
            return -log_z / beta
        if self.n_particles == 2:
            return coulomb_pair_free_energy(beta, self.dim, trap=trap, coupling=coupling)
        return None

    def ground_state(self, *, starts: int = 16, seed: int = 0):
        """The minimum-energy configuration (host float64), the ``beta -> inf`` limit of
        ``F``: a :class:`thermax.exact.CoulombGroundState` from
        :func:`thermax.exact.coulomb_ground_state`."""
        from ..exact import coulomb_ground_state

        trap, coupling = self._host_parameters()
        return coulomb_ground_state(self.n_particles, self.dim, trap=trap, coupling=coupling,
                                    starts=starts, seed=seed)

    def describe(self) -> dict:
        trap, coupling = self._host_parameters()
        return {"n": self.n_particles, "dim": self.dim, "trap": trap, "coupling": coupling,
                "particles": "labelled"}
