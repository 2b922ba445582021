r"""Exact references of the Coulomb gas in a harmonic trap (:class:`thermax.systems.CoulombTrap`).

    H = c sum_{i<j} 1/|x_i - x_j| + t sum_i |x_i|^2        (t = trap, c = coupling)

**Two particles.** With ``R = (x1 + x2)/2``, ``r = x1 - x2`` (unit Jacobian) and
``|x1|^2 + |x2|^2 = 2|R|^2 + |r|^2/2`` the labelled partition function factorises,

    Z = (pi / (2 beta t))^{d/2} * S_d int_0^inf r^{d-1} exp(-beta g(r)) dr,
    g(r) = t r^2/2 + c/r,     S_1 = 2, S_2 = 2 pi, S_3 = 4 pi.

``g`` is smallest at ``r0 = (c/t)^{1/3}`` with ``g0 = (3/2) c^{2/3} t^{1/3}`` (the ground-state
energy). With ``r = r0 s`` and ``lambda = beta g0``,

    int_0^inf r^{d-1} e^{-beta g} dr = r0^d e^{-lambda} int_0^inf s^{d-1} exp(-lambda q(s)) ds,
    q(s) = (s^2 + 2/s)/3 - 1 = (s - 1)^2 (s + 2) / (3 s) >= 0,

one dimensionless integral, done by adaptive quadrature on the host
(:func:`coulomb_pair_free_energy`) and by a fixed Gauss–Legendre rule in ``u = ln s`` in JAX
(:func:`coulomb_pair_log_z`, differentiable in ``beta``, ``trap`` and ``coupling``).

**Ground states** (:func:`coulomb_ground_state`): the minimum of ``H`` by L-BFGS from several
random starts, in the reduced units ``t = c = 1`` (``x = (c/t)^{1/3} y``,
``H = c^{2/3} t^{1/3} H_1(y)``), with shells read off the sorted radii.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real

#: Surface area of the unit sphere in d dimensions (the number of directions of ``r``).
_SPHERE_AREA = {1: 2.0, 2: 2.0 * math.pi, 3: 4.0 * math.pi}

#: The quadrature interval in ``s`` keeps every point where the integrand is within
#: ``exp(-_TAIL)`` of its value at ``s = 1``: the neglected tails are below ``1e-17`` relative.
_TAIL = 40.0

#: A gap between consecutive sorted radii larger than this fraction of the largest radius
#: starts a new shell (:func:`coulomb_ground_state`).
SHELL_GAP = 0.1

#: Bedanov & Peeters, PRB 49, 2667 (1994), Table I: 2D classical clusters in the units
#: ``trap = coupling = 1``, ``n -> (E/n, shells)``. Only the entries reproduced by
#: :func:`coulomb_ground_state` to the digits given (checked in tests/exact/test_coulomb_exact.py).
WIGNER_2D: dict[int, tuple[float, tuple[int, ...]]] = {
    2: (0.75, (2,)),
    3: (1.31037, (3,)),
    4: (1.83545, (4,)),
    5: (2.33845, (5,)),
    6: (2.80456, (1, 5)),
}


def _check_dim(dim, what: str) -> int:
    if isinstance(dim, bool) or dim not in _SPHERE_AREA:
        raise ValueError(f"{what} needs dim in (1, 2, 3), got dim={dim!r}")
    return int(dim)


def _host_positive(value, name: str, what: str, *, strict: bool = True) -> float:
    v = float(np.asarray(value))
    if not math.isfinite(v) or (v <= 0 if strict else v < 0):
        raise ValueError(f"{what} needs a finite {name} {'> 0' if strict else '>= 0'}, got "
                         f"{name}={v}")
    return v


def _interval(lam, d: int, xp):
    """``[s_lo, s_hi]`` outside which ``s^d exp(-lam q(s)) < exp(-_TAIL)`` (``xp``: np or jnp).

    Left (``s < 1``): ``q(s) >= (1 - s)^2`` and ``q(s) >= 2/(3s) - 1``; right: ``q(s) >=
    (s - 1)^2/3`` and ``d ln s <= d (s - 1)``, so ``lam t^2/3 - d t >= _TAIL`` at
    ``t = s_hi - 1``.
    """
    s_lo = xp.maximum(2.0 * lam / (3.0 * (lam + _TAIL)), 1.0 - xp.sqrt(_TAIL / lam))
    s_hi = 1.0 + (d + xp.sqrt(d * d + 4.0 * lam * _TAIL / 3.0)) / (2.0 * lam / 3.0)
    return s_lo, s_hi


def coulomb_pair_free_energy(beta: float, dim: int, trap: float = 1.0,
                             coupling: float = 1.0) -> float:
    """The exact ``F = -ln Z / beta`` of two labelled particles (host float64, ~1e-13).

    The radial integral of the module docstring by ``scipy.integrate.quad`` on
    ``[0, 1]``, ``[1, s_hi]``, ``[s_hi, inf)`` (``s = r / r0``); ``coupling = 0`` is Gaussian,
    ``F = -(dim / beta) ln(pi / (beta trap))``.

    Arguments:
        beta: inverse temperature, ``> 0``.
        dim: spatial dimension, 1, 2 or 3.
        trap: trap strength, ``> 0``.
        coupling: Coulomb coupling, ``>= 0``.

    Example:
        >>> f = coulomb_pair_free_energy(10.0, 2)
        >>> 1.5 < f < 1.5 + 0.5   # above the ground-state energy 3/2, approaching it
        True
    """
    from scipy import integrate

    what = "coulomb_pair_free_energy"
    d = _check_dim(dim, what)
    beta = _host_positive(beta, "beta", what)
    t = _host_positive(trap, "trap", what)
    c = _host_positive(coupling, "coupling", what, strict=False)
    if c == 0.0:
        return -d * math.log(math.pi / (beta * t)) / beta
    r0 = (c / t) ** (1.0 / 3.0)
    lam = 1.5 * beta * c ** (2.0 / 3.0) * t ** (1.0 / 3.0)
    _, s_hi = _interval(lam, d, np)

    def integrand(s):
        return s ** (d - 1) * math.exp(-lam * (s - 1.0) ** 2 * (s + 2.0) / (3.0 * s))

    integral = 0.0
    for a, b in ((0.0, 1.0), (1.0, float(s_hi)), (float(s_hi), math.inf)):
        value, _ = integrate.quad(integrand, a, b, epsabs=0.0, epsrel=1e-13, limit=500)
        integral += value
    log_z = (0.5 * d * math.log(math.pi / (2.0 * beta * t)) + math.log(_SPHERE_AREA[d])
             + d * math.log(r0) - lam + math.log(integral))
    return -log_z / beta


def coulomb_pair_log_z(beta: Real[ArrayLike, ""], dim: int, trap: Real[ArrayLike, ""] = 1.0,
                       coupling: Real[ArrayLike, ""] = 1.0, *,
                       n_nodes: int = 128) -> Float[Array, ""]:
    """``ln Z`` of two labelled particles in JAX, differentiable in beta, trap and coupling.

    The radial integral of the module docstring as
    ``int exp(d u - lambda q(e^u)) du`` over ``u = ln s`` in ``[ln s_lo, ln s_hi]`` (the
    integrand is below ``e^-40`` of its peak outside), by an ``n_nodes``-point
    Gauss–Legendre rule. The interval depends on ``lambda`` only through a stop-gradient
    (the integrand vanishes at its ends), so derivatives are those of the integral: with
    ``F = -ln Z / beta``, ``U = -d ln Z / d beta``, ``dF/dtrap = <|x1|^2 + |x2|^2>`` and
    ``dF/dcoupling = <1/r>``. With the default 128 nodes it agrees with
    :func:`coulomb_pair_free_energy` to ~1e-13 relative in float64 for
    ``1e-2 <= lambda = (3/2) beta c^{2/3} t^{1/3}`` (``beta >= 0.007`` in the default units;
    no upper limit: the rule follows the peak); below that the ``u`` interval grows like
    ``ln(1/lambda)``: 256 nodes reach ``lambda = 1e-4``.
    ``coupling`` must be ``> 0`` (at ``coupling = 0`` the pair is Gaussian:
    ``ln Z = dim ln(pi / (beta trap))``). Concrete arguments are checked; traced ones are
    not.

    Example:
        >>> d_trap = jax.grad(lambda t: -coulomb_pair_log_z(2.0, 2, trap=t) / 2.0)(1.0)
        >>> round(float(d_trap), 4)   # dF/dtrap = <|x1|^2 + |x2|^2> at beta = 2
        1.4341
    """
    what = "coulomb_pair_log_z"
    d = _check_dim(dim, what)
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 8:
        raise ValueError(f"{what} needs an integer n_nodes >= 8, got n_nodes={n_nodes!r}")
    for name, value in (("beta", beta), ("trap", trap), ("coupling", coupling)):
        if np.shape(value) != ():
            raise ValueError(f"{what} needs {name} as a scalar, got shape {np.shape(value)}")
        if not isinstance(value, jax.core.Tracer):
            _host_positive(value, name, what)
    args = [jnp.asarray(a) for a in (beta, trap, coupling)]
    dtype = jnp.result_type(*args)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    beta, t, c = (a.astype(dtype) for a in args)
    r0 = jnp.cbrt(c / t)
    lam = 1.5 * beta * jnp.cbrt(c * c * t)
    s_lo, s_hi = _interval(jax.lax.stop_gradient(lam), d, jnp)
    u_lo, u_hi = jnp.log(s_lo), jnp.log(s_hi)
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    half = 0.5 * (u_hi - u_lo)
    u = 0.5 * (u_hi + u_lo) + half * jnp.asarray(x, dtype)
    s = jnp.exp(u)
    exponent = d * u - lam * (s - 1.0) ** 2 * (s + 2.0) / (3.0 * s)
    log_integral = jnp.log(half) + jax.nn.logsumexp(exponent, b=jnp.asarray(w, dtype))
    return (0.5 * d * jnp.log(math.pi / (2.0 * beta * t)) + math.log(_SPHERE_AREA[d])
            + d * jnp.log(r0) - lam + log_integral)


# ------------------------------------------------------------------------- ground states


@dataclasses.dataclass(frozen=True, eq=False)
class CoulombGroundState:
    """A minimum-energy configuration of :class:`thermax.systems.CoulombTrap` (host float64).

    Attributes:
        energy: the minimum of ``H``.
        energy_per_particle: ``energy / n``.
        positions: ``(n, dim)``, centre of mass at the origin, sorted by radius.
        radii: ``(n,)``, ``|positions|``, ascending.
        shells: occupation of each shell, innermost first (e.g. ``(1, 5)`` for ``n = 6`` in
            2D): a gap between consecutive radii larger than ``shell_gap`` times the largest
            radius separates two shells.
    """

    energy: float
    energy_per_particle: float
    positions: Float[np.ndarray, "n dim"]
    radii: Float[np.ndarray, " n"]
    shells: tuple[int, ...]


def _reduced_energy_and_gradient(flat: np.ndarray, n: int, dim: int) -> tuple[float, np.ndarray]:
    """``H_1 = sum_{i<j} 1/r_ij + sum_i |y_i|^2`` and its gradient (numpy float64)."""
    y = flat.reshape(n, dim)
    diff = y[:, None, :] - y[None, :, :]
    r2 = np.sum(diff**2, axis=-1)
    np.fill_diagonal(r2, 1.0)
    inv = 1.0 / np.sqrt(r2)
    np.fill_diagonal(inv, 0.0)
    energy = 0.5 * float(np.sum(inv)) + float(np.sum(y**2))
    grad = 2.0 * y - np.einsum("ij,ijk->ik", inv**3, diff)
    return energy, grad.ravel()


def _shells(radii: np.ndarray, shell_gap: float) -> tuple[int, ...]:
    if radii.size == 0 or radii[-1] == 0.0:
        return (int(radii.size),)
    breaks = np.flatnonzero(np.diff(radii) > shell_gap * radii[-1])
    return tuple(int(k) for k in np.diff(np.concatenate([[0], breaks + 1, [radii.size]])))


def coulomb_ground_state(n: int, dim: int, *, trap: float = 1.0, coupling: float = 1.0,
                         starts: int = 16, seed: int = 0,
                         shell_gap: float = SHELL_GAP) -> CoulombGroundState:
    """The minimum-energy configuration of ``CoulombTrap(n, dim, trap, coupling)``.

    ``scipy.optimize.minimize`` (L-BFGS-B, analytic gradient, gradient tolerance 1e-11)
    from ``starts`` random configurations in the reduced units ``trap = coupling = 1``
    (Gaussian, width ``~ n^{1/dim}``, drawn by ``numpy.random.default_rng(seed)``); the
    lowest minimum is kept, its centre of mass moved to the origin, and it is scaled back:
    ``x = (c/t)^{1/3} y``, ``E = c^{2/3} t^{1/3} E_1``. Clusters of more than ~20 particles
    have many metastable minima: raise ``starts`` and compare seeds. ``n = 1`` or
    ``coupling = 0``: every particle at the origin, ``E = 0``.

    Arguments:
        n: number of particles, ``>= 1``.
        dim: spatial dimension, 1, 2 or 3.
        trap: trap strength, ``> 0``.
        coupling: Coulomb coupling, ``>= 0``.
        starts: number of random starts, ``>= 1``.
        seed: seed of the starts.
        shell_gap: relative radial gap that separates shells (see
            :class:`CoulombGroundState`), in ``(0, 1)``.

    Example:
        >>> g = coulomb_ground_state(6, 2)
        >>> round(g.energy_per_particle, 5), g.shells
        (2.80456, (1, 5))
    """
    from scipy import optimize

    what = "coulomb_ground_state"
    for name, value, least in (("n", n, 1), ("starts", starts, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise ValueError(f"{what} needs an integer {name} >= {least}, got {name}={value!r}")
    d = _check_dim(dim, what)
    t = _host_positive(trap, "trap", what)
    c = _host_positive(coupling, "coupling", what, strict=False)
    if not 0.0 < shell_gap < 1.0:
        raise ValueError(f"{what} needs 0 < shell_gap < 1, got shell_gap={shell_gap}")
    n = int(n)
    if n == 1 or c == 0.0:
        zeros = np.zeros((n, d))
        return CoulombGroundState(0.0, 0.0, zeros, np.zeros(n), (n,))
    rng = np.random.default_rng(seed)
    best_energy, best = math.inf, None
    for _ in range(starts):
        y0 = rng.normal(size=n * d) * max(1.0, n ** (1.0 / d) / 2.0)
        res = optimize.minimize(_reduced_energy_and_gradient, y0, args=(n, d), jac=True,
                                method="L-BFGS-B",
                                options={"maxiter": 20000, "maxcor": 30, "gtol": 1e-11,
                                         "ftol": 1e-16})
        if res.fun < best_energy:
            best_energy, best = float(res.fun), res.x.reshape(n, d)
    best = best - best.mean(axis=0)
    energy_1, _ = _reduced_energy_and_gradient(best.ravel(), n, d)
    radii = np.linalg.norm(best, axis=1)
    order = np.argsort(radii, kind="stable")
    length, scale = (c / t) ** (1.0 / 3.0), c ** (2.0 / 3.0) * t ** (1.0 / 3.0)
    energy = scale * energy_1
    return CoulombGroundState(energy, energy / n, length * best[order], length * radii[order],
                              _shells(radii[order], shell_gap))
