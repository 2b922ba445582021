"""Continuous lattice fields: the relaxed (Hubbard–Stratonovich) Ising model and phi^4."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._base import AbstractSystem

#: The smallest eigenvalue of the relaxed Ising model's matrix ``K`` (Zhang, E & Wang).
RELAXATION_MIN_EIGENVALUE = 0.1

#: Relative tolerance when a free energy is asked for at an inverse temperature.
_BETA_RTOL = 1e-6


def _log_cosh(x: Array) -> Array:
    """``ln cosh x = |x| + softplus(-2|x|) - ln 2``, finite for any finite ``x``."""
    a = jnp.abs(x)
    return a + jax.nn.softplus(-2.0 * a) - math.log(2.0)


def _adjacency_spectrum(size: int) -> np.ndarray:
    """Eigenvalues ``2 cos(2 pi k/L) + 2 cos(2 pi l/L)`` of the periodic square lattice's
    adjacency matrix ``A = sum_mu (P_mu + P_mu^T)``, on the ``(k, l)`` grid of the 2D FFT."""
    one_d = 2.0 * np.cos(2.0 * np.pi * np.arange(size) / size)
    return one_d[:, None] + one_d[None, :]


def _check_beta(beta: float, expected: float, what: str) -> None:
    if not math.isclose(float(beta), expected, rel_tol=_BETA_RTOL, abs_tol=0.0):
        raise ValueError(f"{what} is defined at the beta it was built with ({expected}), got "
                         f"beta={beta}; build a new system for another beta")


class RelaxedIsing(AbstractSystem):
    r"""The Hubbard–Stratonovich relaxation of the 2D Ising model, a continuous field.

    With the periodic ``L x L`` adjacency matrix ``A = sum_mu (P_mu + P_mu^T)`` (``P_mu`` the
    shift along axis ``mu``; for ``L = 2`` its entries are 2, matching :class:`Ising2D`'s
    bond sum) and ``K = beta J A + c I``, the shift ``c = 0.1 - lambda_min(beta J A)`` making
    ``K``'s smallest eigenvalue 0.1 (the convention of Zhang, E & Wang, arXiv 1809.10188;
    NeuralRG, Li & Wang, arXiv 1802.02840, uses the same model), the target density is

        pi(x) ∝ exp(-x^T K^{-1} x / 2 + sum_i ln cosh x_i).

    The energy is defined so that the engine's Boltzmann factor ``exp(-beta E)`` is ``pi``:

        E(x) = [x^T K^{-1} x / 2 - sum_i ln cosh x_i] / beta,

    so free energies are ``F = -ln Z_relaxed / beta``, in units of ``J``. ``K`` is circulant:
    ``x^T K^{-1} x = (1/N) sum_q |x̂_q|^2 / kappa_q`` with ``x̂`` the 2D FFT and ``kappa_q``
    the eigenvalues of ``K``.

    Exact: writing ``prod_i 2 cosh x_i = sum_s exp(s.x)`` over Ising spins and doing each
    Gaussian integral, ``(2 pi)^{N/2} det(K)^{1/2} exp(s^T K s / 2)``, with
    ``s^T K s / 2 = beta J sum_<ij> s_i s_j + N c / 2``, gives

        ln Z_relaxed = ln Z_Ising(L, beta, J) + C,
        C = N c / 2 + (N/2) ln(2 pi) + (1/2) ln det K - N ln 2

    (:meth:`relaxation_constant`). A variational ``F_relaxed`` maps to an Ising free energy
    by :meth:`ising_free_energy`. At ``L = 16``, ``J = 1``, ``beta = ln(1 + sqrt 2)/2``,
    ``-ln Z_relaxed / N = -2.3159208588``.

    Arguments:
        size: the lattice side ``L >= 2``.
        beta: the inverse temperature the relaxation is built for (``K`` depends on it).
        coupling: ``J``, finite and nonzero (``J < 0`` is antiferromagnetic).

    Example:
        >>> beta_c = math.log(1 + math.sqrt(2)) / 2
        >>> system = RelaxedIsing(16, beta_c)
        >>> system.energy(jnp.zeros((16, 16)))
        Array(0., dtype=float32)
        >>> round(beta_c * system.exact_free_energy(beta_c) / 256, 10)   # -ln Z_relaxed / N
        -2.3159208588
    """

    size: int = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    coupling: float = eqx.field(static=True)
    inverse_spectrum: Float[Array, "L L"]
    kind = "field"

    def __init__(self, size: int, beta: float, *, coupling: float = 1.0):
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"RelaxedIsing needs an integer size L >= 2, got L={size!r}")
        if not (isinstance(beta, int | float) and math.isfinite(beta) and beta > 0):
            raise ValueError(f"RelaxedIsing needs a finite beta > 0, got beta={beta!r}")
        if not (isinstance(coupling, int | float) and math.isfinite(coupling)
                and coupling != 0):
            raise ValueError(f"RelaxedIsing needs a finite, nonzero coupling J, got "
                             f"J={coupling!r} (for J = 0 the sites decouple: no Ising model)")
        self.size, self.beta, self.coupling = size, float(beta), float(coupling)
        self.inverse_spectrum = jnp.asarray(1.0 / self._spectrum())

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one configuration: the ``(size, size)`` lattice."""
        return (self.size, self.size)

    def _spectrum(self) -> np.ndarray:
        """Eigenvalues of ``K`` (float64, host), on the 2D FFT grid."""
        scaled = self.beta * self.coupling * _adjacency_spectrum(self.size)
        return scaled + self.shift

    @property
    def shift(self) -> float:
        """``c = 0.1 - lambda_min(beta J A)``."""
        scaled = self.beta * self.coupling * _adjacency_spectrum(self.size)
        return RELAXATION_MIN_EIGENVALUE - float(scaled.min())

    def _energy(self, x):
        x_hat = jnp.fft.fft2(x)
        power = jnp.real(x_hat) ** 2 + jnp.imag(x_hat) ** 2
        quadratic = jnp.sum(power * self.inverse_spectrum.astype(x.dtype)) / self.n
        return (0.5 * quadratic - jnp.sum(_log_cosh(x))) / self.beta

    def relaxation_constant(self) -> float:
        """``C = ln Z_relaxed - ln Z_Ising = N c/2 + (N/2) ln 2 pi + (1/2) ln det K - N ln 2``
        (host float64)."""
        n = self.n
        log_det = float(np.sum(np.log(self._spectrum())))
        return (0.5 * n * self.shift + 0.5 * n * math.log(2.0 * math.pi) + 0.5 * log_det
                - n * math.log(2.0))

    def exact_free_energy(self, beta: float) -> float | None:
        """``F_relaxed = -(ln Z_Ising + C) / beta``; ``beta`` must be the system's own.

        ``ln Z_Ising`` from Kaufman's formula, or enumeration where that does not apply
        (odd ``L`` with ``J < 0``, ``N <= 24``); ``None`` when neither does.
        """
        from ._spins import Ising2D

        _check_beta(beta, self.beta, "RelaxedIsing's free energy")
        f_ising = Ising2D(self.size, coupling=self.coupling).exact_free_energy(self.beta)
        if f_ising is None:
            return None
        return f_ising - self.relaxation_constant() / self.beta

    def ising_free_energy(self, relaxed_free_energy: float) -> float:
        """The Ising total free energy ``F_Ising = F_relaxed + C / beta`` a relaxed one implies."""
        return float(relaxed_free_energy) + self.relaxation_constant() / self.beta

    def describe(self) -> dict:
        return {"n": self.n, "L": self.size, "beta": self.beta, "J": self.coupling,
                "shift": self.shift, "relaxation_constant": self.relaxation_constant()}


def phi4_action(phi: Float[Array, "L L"], kappa: Float[ArrayLike, ""],
                lam: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """``S = sum_x [-2 kappa sum_mu phi_x phi_{x+mu} + phi_x^2 + lam (phi_x^2 - 1)^2]``,
    periodic, of one configuration (in ``phi``'s dtype)."""
    kappa = jnp.asarray(kappa, phi.dtype)
    lam = jnp.asarray(lam, phi.dtype)
    hopping = phi * (jnp.roll(phi, -1, axis=0) + jnp.roll(phi, -1, axis=1))
    local = phi**2 + lam * (phi**2 - 1.0) ** 2
    return jnp.sum(local) - 2.0 * kappa * jnp.sum(hopping)


class Phi4(AbstractSystem):
    """Lattice phi^4 theory on an ``L x L`` periodic lattice, hopping parametrisation.

        E(phi) = S(phi) = sum_x [ -2 kappa sum_{mu=1,2} phi_x phi_{x+mu}
                                  + phi_x^2 + lam (phi_x^2 - 1)^2 ],

    dimensionless (the engine runs at ``beta = 1``; ``F = -ln Z``). The NeuralRG (Li & Wang,
    arXiv 1802.02840) and lattice-flow (Albergo et al., PRD 100, 034515) benchmark. For
    ``L = 2`` each neighbour pair is counted twice, as in :class:`Ising2D`.

    No exact ``Z`` exists for ``kappa > 0``. :meth:`exact_free_energy` returns the exact
    ``-N ln z0`` at ``kappa = 0`` (decoupled sites, ``z0`` by 1D quadrature), else a
    thermodynamic-integration + HMC reference from
    :data:`thermax.exact.PHI4_REFERENCE` (``None`` where the table has no entry);
    :meth:`reference_free_energy_stderr` gives its statistical error.

    Arguments:
        size: the lattice side ``L >= 2``.
        kappa: hopping parameter, finite, ``>= 0`` (``< 1/4`` when ``lam = 0``).
        lam: quartic coupling, finite, ``>= 0``. Both are stored as 0-d arrays.

    Example:
        >>> system = Phi4(8, 0.125, 1.1)
        >>> system.energy(jnp.ones((8, 8)))    # N (1 - 4 kappa) = 64 * 0.5
        Array(32., dtype=float32)
    """

    size: int = eqx.field(static=True)
    kappa: Float[Array, ""]
    lam: Float[Array, ""]
    kind = "field"

    def __init__(self, size: int, kappa: float | Float[ArrayLike, ""],
                 lam: float | Float[ArrayLike, ""]):
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"Phi4 needs an integer size L >= 2, got L={size!r}")
        k, g = _host_scalar(kappa, "kappa"), _host_scalar(lam, "lam")
        if not (math.isfinite(g) and g >= 0):
            raise ValueError(f"Phi4 needs a finite quartic coupling lam >= 0, got lam={g}")
        if not (math.isfinite(k) and k >= 0):
            raise ValueError(f"Phi4 needs a finite hopping parameter kappa >= 0, got "
                             f"kappa={k} (kappa < 0 is the staggered, antiferromagnetic "
                             f"model; allowed: 0 <= kappa, and kappa < 1/4 when lam = 0)")
        if g == 0 and k >= 0.25:
            raise ValueError(f"Phi4 with lam = 0 is a free field, normalizable only for "
                             f"0 <= kappa < 1/4; got kappa={k}")
        self.size = size
        self.kappa = jnp.asarray(k, dtype=jnp.result_type(float))
        self.lam = jnp.asarray(g, dtype=jnp.result_type(float))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one configuration: the ``(size, size)`` lattice."""
        return (self.size, self.size)

    def _energy(self, x):
        return phi4_action(x, self.kappa, self.lam)

    def _reference(self, beta: float) -> tuple[float, float] | None:
        from ..exact import phi4_reference_lookup, phi4_site_log_z

        _check_beta(beta, 1.0, "Phi4's free energy (the action is dimensionless)")
        kappa, lam = _shortest_float(self.kappa), _shortest_float(self.lam)
        if kappa == 0.0:
            return -self.n * phi4_site_log_z(lam), 0.0
        entry = phi4_reference_lookup(self.size, kappa, lam)
        return None if entry is None else (entry[0], entry[1])

    def exact_free_energy(self, beta: float) -> float | None:
        """``F = -ln Z`` at ``beta = 1``: exact at ``kappa = 0``, else the tabulated reference
        (thermodynamic integration with HMC) or ``None``."""
        ref = self._reference(beta)
        return None if ref is None else ref[0]

    def reference_free_energy_stderr(self, beta: float = 1.0) -> float | None:
        """The standard error of :meth:`exact_free_energy` (0 where it is exact, ``None``
        where there is no value)."""
        ref = self._reference(beta)
        return None if ref is None else ref[1]

    def describe(self) -> dict:
        return {"n": self.n, "L": self.size, "kappa": _shortest_float(self.kappa),
                "lam": _shortest_float(self.lam)}


def _host_scalar(value, name: str) -> float:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except Exception:  # noqa: BLE001 - tracers and non-numbers alike get one clear error
        raise ValueError(f"Phi4 needs {name} as a concrete real number, got {value!r}") from None
    if arr.shape != ():
        raise ValueError(f"Phi4 needs {name} as a scalar, got shape {arr.shape}")
    return float(arr)


def _shortest_float(value: Array) -> float:
    """The shortest decimal that round-trips in ``value``'s dtype, as a Python float (a
    float32 ``0.15`` gives ``0.15``, not ``0.15000000596...``)."""
    return float(str(np.asarray(value)))
