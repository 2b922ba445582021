"""The abstract Hamiltonian every system of thermax implements."""

import abc
import math

import equinox as eqx
from jaxtyping import Array, Float

from .._checks import check_shape


class AbstractSystem(eqx.Module):
    """A classical Hamiltonian ``H(x)`` of one configuration, in the system's own units.

    Subclasses set ``shape`` (configuration shape) and the class variable ``kind``
    (``"spins"``, ``"field"`` or ``"particles"``) and implement ``_energy``. They may
    override :meth:`exact_free_energy` where an exact or reference value exists; it runs
    outside ``jit`` (host numerics) and returns ``None`` when no value is known.
    """

    shape: eqx.AbstractVar[tuple[int, ...]]
    kind: eqx.AbstractClassVar[str]

    @property
    def n(self) -> int:
        """Number of sites (lattice systems) or particles."""
        return math.prod(self.shape)

    def energy(self, x: Float[Array, "*shape"]) -> Float[Array, ""]:
        """``H(x)`` of one configuration; batch with ``jax.vmap``."""
        check_shape(x, self.shape, f"{type(self).__name__}.energy")
        return self._energy(x)

    @abc.abstractmethod
    def _energy(self, x: Array) -> Array:
        raise NotImplementedError

    def exact_free_energy(self, beta: float) -> float | None:
        """The exact total free energy ``-ln Z / beta`` where known, else ``None``."""
        return None

    def describe(self) -> dict:
        """Figures that identify this system, for ``results.json``."""
        return {"n": self.n}
