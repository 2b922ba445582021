"""Classical spin systems: the 2D Ising model and the Sherrington–Kirkpatrick spin glass."""

import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._base import AbstractSystem

#: Systems at most this large get their exact free energy by enumeration.
MAX_ENUMERATION_SITES = 24


class Ising2D(AbstractSystem):
    """``H = -J sum_<ij> s_i s_j - h sum_i s_i`` on an ``L x L`` periodic square lattice.

    ``J > 0`` is ferromagnetic, ``J < 0`` antiferromagnetic. Each site couples to its right
    and lower neighbour, so for ``L = 2`` each pair is counted twice (the periodic
    convention of Kaufman's formula). Exact free energy: Kaufman (h = 0 and a bipartite
    lattice), else enumeration for ``L*L <= 24``.

    Example:
        >>> Ising2D(4).energy(jnp.ones((4, 4)))   # -2 J L^2
        Array(-32., dtype=float32)
    """

    size: int = eqx.field(static=True)
    coupling: float = eqx.field(static=True)
    field: float = eqx.field(static=True)
    kind = "spins"

    def __init__(self, size: int, coupling: float = 1.0, field: float = 0.0):
        if not isinstance(size, int) or size < 2:
            raise ValueError(f"Ising2D needs an integer size L >= 2, got L={size!r}")
        if not (math.isfinite(coupling) and math.isfinite(field)):
            raise ValueError(f"Ising2D needs finite J and h, got J={coupling}, h={field}")
        self.size, self.coupling, self.field = size, float(coupling), float(field)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one configuration: the ``(size, size)`` lattice."""
        return (self.size, self.size)

    def _energy(self, x):
        bonds = x * (jnp.roll(x, 1, axis=0) + jnp.roll(x, 1, axis=1))
        return -self.coupling * jnp.sum(bonds) - self.field * jnp.sum(x)

    def exact_free_energy(self, beta: float) -> float | None:
        from ..exact import enumerate_free_energy, kaufman_log_z

        bipartite = self.size % 2 == 0
        if self.coupling == 0.0:  # independent spins in a field
            return -self.n * math.log(2 * math.cosh(beta * self.field)) / beta
        if self.field == 0.0 and (self.coupling > 0 or bipartite):
            return -kaufman_log_z(self.size, beta * abs(self.coupling)) / beta
        if self.n <= MAX_ENUMERATION_SITES:
            return enumerate_free_energy(self, beta)
        return None

    def describe(self) -> dict:
        return {"n": self.n, "L": self.size, "J": self.coupling, "h": self.field}


class SherringtonKirkpatrick(AbstractSystem):
    """SK spin glass ``H = -sum_{i<j} J_ij s_i s_j``, couplings ``J_ij ~ N(0, 1/n)``.

    Build it from a seed with :meth:`from_seed` or from a symmetric matrix with zero
    diagonal (:meth:`from_file` reads a ``.npy``). Exact free energy by enumeration for
    ``n <= 24``.
    """

    couplings: Float[Array, "n n"]
    kind = "spins"

    def __init__(self, couplings: Float[Array, "n n"] | np.ndarray):
        j = np.asarray(couplings, dtype=np.float64)
        _check_couplings(j, "couplings")
        self.couplings = jnp.asarray(j)

    @classmethod
    def from_seed(cls, n: int, seed: int) -> "SherringtonKirkpatrick":
        """Couplings drawn with ``numpy.random.default_rng(seed)``: upper triangle
        ``N(0, 1/n)``, mirrored, zero diagonal."""
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"SK needs an integer n >= 2 spins, got n={n!r}")
        rng = np.random.default_rng(seed)
        upper = np.triu(rng.normal(0.0, 1.0 / math.sqrt(n), (n, n)), k=1)
        return cls(upper + upper.T)

    @classmethod
    def from_file(cls, path: str | Path) -> "SherringtonKirkpatrick":
        """Couplings from a ``.npy`` file holding a symmetric ``n x n`` matrix, zero diagonal."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"couplings file {str(path)!r} does not exist")
        try:
            j = np.load(path, allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - any unreadable file is one clear error
            raise ValueError(f"couplings file {str(path)!r} is not a readable .npy array: "
                             f"{err}") from None
        return cls(_check_couplings(j, f"couplings file {str(path)!r}"))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one configuration: ``(n,)``, one spin per row of the couplings."""
        return (self.couplings.shape[0],)

    def _energy(self, x):
        return -0.5 * x @ (self.couplings.astype(x.dtype) @ x)

    def exact_free_energy(self, beta: float) -> float | None:
        from ..exact import enumerate_free_energy

        if self.n <= MAX_ENUMERATION_SITES:
            return enumerate_free_energy(self, beta)
        return None


def _check_couplings(j: np.ndarray, what: str) -> np.ndarray:
    if j.ndim != 2 or j.shape[0] != j.shape[1]:
        raise ValueError(f"{what} must be a square n x n matrix, got shape {j.shape}")
    if j.shape[0] < 2:
        raise ValueError(f"{what} must have n >= 2, got n={j.shape[0]}")
    if not np.issubdtype(j.dtype, np.number) or not np.all(np.isfinite(j)):
        raise ValueError(f"{what} must hold finite numbers")
    if not np.allclose(j, j.T, rtol=0, atol=1e-12):
        raise ValueError(f"{what} must be symmetric (J_ij = J_ji)")
    if np.any(np.diag(j) != 0):
        raise ValueError(f"{what} must have a zero diagonal")
    return j


def energies(system: AbstractSystem, xs: Array) -> Array:
    """Batched energies."""
    return jax.vmap(system.energy)(xs)
