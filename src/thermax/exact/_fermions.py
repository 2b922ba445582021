r"""Exact free fermions in the canonical ensemble, and the 2D oscillator (quantum dot) basis.

``N`` fermions in single-particle levels ``eps_1..eps_M`` (one state per level) have

    Z_N(beta) = sum_{K, |K| = N} exp(-beta sum_{k in K} eps_k) = e_N(x_1, ..., x_M),
    x_j = exp(-beta eps_j),

the ``N``-th elementary symmetric polynomial of the Boltzmann factors. Adding one level at a
time gives the recursion (Borrmann & Franke, J. Chem. Phys. 98, 2484 (1993))

    e_r(x_1..x_j) = e_r(x_1..x_{j-1}) + x_j e_{r-1}(x_1..x_{j-1}),

``O(M N)`` work. :func:`free_fermion_log_z` runs it in log space (``logaddexp``), so it
neither overflows nor underflows at any ``beta`` and is differentiable in ``beta`` and in the
levels: ``E = -d ln Z / d beta`` and the occupations ``<n_j> = -(1/beta) d ln Z / d eps_j``
come from autodiff (:func:`free_fermion_thermodynamics`). Several species with fixed
particle numbers (spin up and down) are independent canonical ensembles:
``ln Z = sum_s ln Z_{N_s}``.

The 2D isotropic oscillator (``hbar = m = 1``, frequency ``omega``) has orbitals
``(nx, ny)`` of energy ``omega (nx + ny + 1)``; shell ``s = nx + ny`` holds ``s + 1`` of them
(:func:`oscillator_orbitals_2d`, :func:`oscillator_levels_2d`).
"""

import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

#: Ground-state energies (Hartree, ``hbar = m = e = 1``) of the 2D quantum dot
#: ``H = sum_i (-lap_i / 2 + omega^2 |x_i|^2 / 2) + sum_{i<j} 1/|x_i - x_j|``, keyed by
#: ``(n_up, n_down, omega) -> (energy, error, source)``. ``error`` is the quoted statistical
#: error (0 for exact results).
QUANTUM_DOT_REFERENCE: dict[tuple[int, int, float], tuple[float, float, str]] = {
    (1, 1, 1.0): (3.0, 0.0, "exact: M. Taut, Phys. Rev. A 48, 3561 (1993)"),
    (3, 3, 1.0): (20.15932, 8e-5, "DMC: F. Pederiva, C. J. Umrigar, E. Lipparini, Phys. Rev. B "
                  "62, 8120 (2000); erratum Phys. Rev. B 68, 089901 (2003)"),
    (3, 3, 0.28): (7.6001, 1e-4, "DMC, as quoted from Pederiva et al. (above) and M. Pedersen "
                   "Lohne et al., Phys. Rev. B 84, 115302 (2011); checked here only against a "
                   "secondary tabulation (7.60019)"),
    (6, 6, 1.0): (65.700, 1e-3, "DMC, as quoted from Pederiva et al. (above) and M. Pedersen "
                  "Lohne et al., Phys. Rev. B 84, 115302 (2011); checked here only against a "
                  "secondary tabulation (65.70010)"),
}


#: The spin-polarised 2D electron gas in the thermodynamic limit at ``T = 0``: energy per
#: electron (Rydberg) by ``r_s``, as ``(E/N, kinetic, exchange, correlation, source)``.
#: Kinetic ``2 / r_s^2`` and exchange ``-16 / (3 pi r_s)`` are exact (Hartree--Fock of the
#: polarised gas); the correlation energy is the fixed-node DMC fit of Attaccalite, Moroni,
#: Gori-Giorgi & Bachelet, PRL 88, 256601 (2002) (erratum PRL 91, 109902 (2003)), evaluated
#: with libxc's ``LDA_C_2D_AMGB`` at full polarisation. A finite ``N`` in a periodic box
#: differs by finite-size errors (mostly in the kinetic and exchange parts, which are known
#: exactly at finite ``N``); compare correlation energies ``E - E_HF(N)``.
ELECTRON_GAS_2D_POLARISED: dict[float, tuple[float, float, float, float, str]] = {
    rs: (2.0 / rs**2 - 16.0 / (3.0 * math.pi * rs) + ec, 2.0 / rs**2,
         -16.0 / (3.0 * math.pi * rs), ec,
         "Attaccalite et al., PRL 88, 256601 (2002): FN-DMC fit (libxc LDA_C_2D_AMGB)")
    for rs, ec in ((1.0, -0.05077432), (5.0, -0.02794826), (10.0, -0.01936969))
}

#: The most sets :func:`all_sets` will list.
MAX_SETS = 1_000_000


class FreeFermionThermodynamics(NamedTuple):
    """Canonical thermodynamics of free fermions: ``ln Z``, ``F = -ln Z / beta``,
    ``E = -d ln Z / d beta`` and ``S = beta (E - F)`` (``k_B = 1``), all 0-d arrays."""

    log_z: Float[Array, ""]
    free_energy: Float[Array, ""]
    energy: Float[Array, ""]
    entropy: Float[Array, ""]


def _species(n, m: int, what: str) -> tuple[int, ...]:
    """``n`` (an int, or a tuple of ints: one per species) as a tuple, checked against ``m``."""
    ns = (n,) if isinstance(n, int | np.integer) else tuple(n)
    if not ns or any(isinstance(x, bool) or not isinstance(x, int | np.integer) for x in ns):
        raise TypeError(f"{what} needs n as an int or a tuple of ints (one per species, e.g. "
                        f"(n_up, n_down)), got n={n!r}")
    for x in ns:
        if not 0 <= x <= m:
            raise ValueError(f"{what} needs 0 <= n <= M = {m} (the number of levels) for "
                             f"every species, got n={n!r}; add levels or remove particles")
    return tuple(int(x) for x in ns)


def _levels(levels, what: str) -> Array:
    levels = jnp.asarray(levels)
    if levels.ndim != 1 or levels.shape[0] == 0:
        raise ValueError(f"{what} needs levels as a non-empty 1-D array (one energy per "
                         f"single-particle state), got shape {tuple(levels.shape)}")
    if not jnp.issubdtype(levels.dtype, jnp.floating):
        levels = levels.astype(jnp.result_type(float))
    return levels


def _log_zero(dtype) -> float:
    """A finite stand-in for ``ln 0``: ``logaddexp(-inf, -inf)`` has NaN gradients, this
    has exact zero weight next to any genuine value (``exp(_log_zero - x) == 0``)."""
    return float(jnp.finfo(dtype).min) / 4


def suffix_log_esp(log_x: Float[Array, " m"], n: int) -> Float[Array, "m+1 orders"]:
    """``out[j, r] = ln e_r(x_j, ..., x_{M-1})`` for ``j = 0..M``, ``r = 0..n`` (``n + 1`` orders).

    The elementary symmetric polynomials of every suffix of ``x`` (``x = exp(log_x)``), from
    the recursion ``e_r(x_j..) = e_r(x_{j+1}..) + x_j e_{r-1}(x_{j+1}..)`` run backwards in
    log space. Entries that are exactly zero (``r > M - j``) hold a huge negative finite
    number instead of ``-inf`` so that gradients stay finite. ``out[0, n]`` is ``ln Z_n``.
    """
    lz = _log_zero(log_x.dtype)
    last = jnp.full((n + 1,), lz, log_x.dtype).at[0].set(0.0)

    def body(le, lx):
        shifted = jnp.concatenate([jnp.full((1,), lz, le.dtype), le[:-1]]) + lx
        new = jnp.maximum(jnp.logaddexp(le, shifted), lz)
        return new, new

    _, rows = jax.lax.scan(body, last, log_x, reverse=True)
    return jnp.concatenate([rows, last[None]], axis=0)


def free_fermion_log_z(
    levels: Float[ArrayLike, " m"], n: int | tuple[int, ...], beta: Float[ArrayLike, ""]
) -> Float[Array, ""]:
    """``ln Z`` of free fermions in the canonical ensemble (see the module docstring).

    ``ln Z_N = ln e_N(exp(-beta eps_1), ..., exp(-beta eps_M))`` by the log-space recursion;
    with several species ``n = (n_up, n_down)`` (each in its own copy of ``levels``),
    ``ln Z = sum_s ln Z_{n_s}``. Differentiable in ``levels`` and ``beta``, jittable, any
    float dtype, stable at any finite ``beta >= 0``.

    Args:
        levels: the ``M`` single-particle energies (any order).
        n: the particle number (an int), or a tuple of numbers, one per species.
        beta: the inverse temperature (finite; see :func:`free_fermion_thermodynamics` for
            ``beta = inf``).

    Returns:
        ``ln Z``, a 0-d array.

    Example:
        >>> free_fermion_log_z(jnp.array([0.0, 1.0]), 1, 1.0)  # ln(1 + e^-1)
        Array(0.31326169, dtype=float64)
    """
    levels = _levels(levels, "free_fermion_log_z")
    ns = _species(n, levels.shape[0], "free_fermion_log_z")
    beta = jnp.asarray(beta, levels.dtype)
    if beta.ndim != 0:
        raise ValueError(f"free_fermion_log_z needs beta as a scalar, got shape {beta.shape}")
    table = suffix_log_esp(-beta * levels, max(ns))
    return sum(table[0, k] for k in ns)


def free_fermion_ground_state(
    levels: Float[ArrayLike, " m"], n: int | tuple[int, ...], *, rtol: float = 1e-10
) -> FreeFermionThermodynamics:
    """The ``T = 0`` limit: ``E = F`` = the sum of the ``n`` lowest levels (per species),
    ``S = ln g`` and ``ln Z = -inf``.

    ``g`` is the degeneracy of the ``N``-particle ground state: when ``d`` levels share the
    Fermi level and ``r`` particles go into them, ``g = C(d, r)``; ``g = 1`` (``S = 0``) for a
    closed shell. Levels within ``rtol * max(1, max|eps|)`` of the Fermi level count as
    degenerate with it. Species multiply ``g`` and add energies.

    Example:
        >>> free_fermion_ground_state(jnp.array([1.0, 2.0, 2.0]), 2).entropy  # ln 2
        Array(0.69314718, dtype=float64)
    """
    levels = _levels(levels, "free_fermion_ground_state")
    ns = _species(n, levels.shape[0], "free_fermion_ground_state")
    eps = jnp.sort(levels)
    tol = rtol * jnp.maximum(1.0, jnp.max(jnp.abs(eps)))
    energy = jnp.zeros((), levels.dtype)
    entropy = jnp.zeros((), levels.dtype)
    for k in ns:
        if k == 0:
            continue
        energy = energy + jnp.sum(eps[:k])
        fermi = eps[k - 1]
        below = jnp.sum(eps < fermi - tol)
        at = jnp.sum(jnp.abs(eps - fermi) <= tol).astype(levels.dtype)
        r = (k - below).astype(levels.dtype)
        lg = jax.scipy.special.gammaln
        entropy = entropy + lg(at + 1) - lg(r + 1) - lg(at - r + 1)
    return FreeFermionThermodynamics(jnp.full((), -jnp.inf, levels.dtype), energy, energy,
                                     entropy)


def free_fermion_thermodynamics(
    levels: Float[ArrayLike, " m"], n: int | tuple[int, ...], beta: Float[ArrayLike, ""]
) -> FreeFermionThermodynamics:
    """``ln Z``, ``F``, ``E`` and ``S`` of free fermions in the canonical ensemble.

    ``F = -ln Z / beta``, ``E = -d ln Z / d beta`` (autodiff of :func:`free_fermion_log_z`)
    and ``S = beta (E - F) = ln Z + beta E``, evaluated with each species' levels shifted so
    that its ground set has energy zero (no cancellation in ``S`` at large ``beta``; what is
    left is roundoff in ``E`` amplified by ``beta``: about ``beta * 1e-13`` in float64).
    ``beta = inf`` (``T = 0``) gives :func:`free_fermion_ground_state` (``S = ln g``, ``0``
    for a closed shell); ``beta`` may be a traced value (the two cases are selected with
    ``jnp.where``).

    Args:
        levels: the ``M`` single-particle energies.
        n: the particle number, or a tuple of numbers (one per species, e.g. spin).
        beta: the inverse temperature, ``0 < beta <= inf``.

    Returns:
        A :class:`FreeFermionThermodynamics` of 0-d arrays.

    Example:
        >>> levels = oscillator_levels_2d(1.0, 11)     # 2D dot, omega = 1, 66 orbitals
        >>> free_fermion_thermodynamics(levels, 6, 2.0).free_energy  # polarised N = 6
        Array(13.32389838, dtype=float64)
    """
    levels = _levels(levels, "free_fermion_thermodynamics")
    ns = _species(n, levels.shape[0], "free_fermion_thermodynamics")
    beta = jnp.asarray(beta, levels.dtype)
    if beta.ndim != 0:
        raise ValueError("free_fermion_thermodynamics needs beta as a scalar, got shape "
                         f"{beta.shape}")
    zero_t = jnp.isinf(beta)
    safe_beta = jnp.where(zero_t, jnp.ones_like(beta), beta)
    ground = free_fermion_ground_state(levels, ns)
    # Each species' levels are shifted so that its ground set has energy 0: then
    # ln Z' ~ ln g and beta E' are small and S = ln Z' + beta E' does not cancel at large beta.
    eps = jnp.sort(levels)
    log_z = free_energy = energy = entropy = jnp.zeros((), levels.dtype)
    for k in ns:
        if k == 0:
            continue
        e0 = jnp.sum(eps[:k])
        shifted = levels - e0 / k
        lz, dlz = jax.value_and_grad(lambda b, s=shifted, k=k: free_fermion_log_z(s, k, b))(
            safe_beta)
        log_z = log_z + lz - safe_beta * e0
        free_energy = free_energy + e0 - lz / safe_beta
        energy = energy + e0 - dlz
        entropy = entropy + lz - safe_beta * dlz
    finite = FreeFermionThermodynamics(log_z, free_energy, energy, entropy)
    return FreeFermionThermodynamics(*(jnp.where(zero_t, g, f)
                                       for g, f in zip(ground, finite, strict=True)))


def oscillator_orbitals_2d(n_shells: int) -> Int[np.ndarray, "m 2"]:
    """The orbitals ``(nx, ny)`` of the 2D isotropic oscillator in its lowest ``n_shells``
    shells, ordered by shell ``s = nx + ny`` and, within a shell, by ``nx`` descending
    (``(s, 0), (s-1, 1), ..., (0, s)``).

    Shell ``s`` holds ``s + 1`` orbitals, so there are ``M = n_shells (n_shells + 1) / 2``.
    A host (numpy) array: it fixes shapes and indexes Hermite functions.

    Example:
        >>> oscillator_orbitals_2d(2).tolist()
        [[0, 0], [1, 0], [0, 1]]
    """
    if isinstance(n_shells, bool) or not isinstance(n_shells, int | np.integer) or n_shells < 1:
        raise ValueError(f"oscillator_orbitals_2d needs n_shells as an int >= 1, got "
                         f"{n_shells!r}")
    return np.array([(s - j, j) for s in range(n_shells) for j in range(s + 1)], dtype=np.int64)


def oscillator_levels_2d(omega: Float[ArrayLike, ""], n_shells: int) -> Float[Array, " m"]:
    """The energies ``omega (nx + ny + 1)`` of :func:`oscillator_orbitals_2d` (same order;
    ``hbar = m = 1``). Differentiable in ``omega``.

    Shells needed: for the polarised ``N = 6`` dot at ``omega = 1``, ``beta = 2``, ``F``
    converges to ``1e-6`` with 11 shells (66 orbitals; 10 shells are off by ``1.2e-6``).

    Example:
        >>> oscillator_levels_2d(0.5, 3)
        Array([0.5, 1. , 1. , 1.5, 1.5, 1.5], dtype=float64)
    """
    orbitals = oscillator_orbitals_2d(n_shells)
    omega = jnp.asarray(omega)
    if omega.ndim != 0:
        raise ValueError(f"oscillator_levels_2d needs omega as a scalar, got shape "
                         f"{omega.shape}")
    if not jnp.issubdtype(omega.dtype, jnp.floating):
        omega = omega.astype(jnp.result_type(float))
    return omega * jnp.asarray(orbitals.sum(axis=1) + 1, omega.dtype)


def all_sets(m: int, n: int) -> Int[np.ndarray, "count n"]:
    """Every set of ``n`` of the states ``0..m-1`` as a sorted row, in lexicographic order
    (``C(m, n)`` rows; at most :data:`MAX_SETS`).

    Example:
        >>> all_sets(3, 2).tolist()
        [[0, 1], [0, 2], [1, 2]]
    """
    if not 0 <= n <= m:
        raise ValueError(f"all_sets needs 0 <= n <= m, got m={m}, n={n}")
    count = math.comb(m, n)
    if count > MAX_SETS:
        raise ValueError(f"all_sets(m={m}, n={n}) would list C(m, n) = {count} sets, more "
                         f"than MAX_SETS = {MAX_SETS}")
    rows = list(itertools.combinations(range(m), n))
    return np.array(rows, dtype=np.int64).reshape(count, n)
