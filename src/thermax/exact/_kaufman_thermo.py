"""Exact finite-lattice thermodynamics of the 2D Ising model: F, E and C from Kaufman's
``ln Z`` by automatic differentiation in ``K = beta J``."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _kaufman_log_z_jnp(size: int, k):
    """Kaufman's ``ln Z(K)`` (see :func:`thermax.exact.kaufman_log_z`) in ``jax.numpy``,
    differentiable in ``K``; the signs of the ``2 sinh`` products enter ``logsumexp`` as
    weights."""
    n_sites = size * size
    ell = jnp.arange(1, 2 * size, dtype=k.dtype)
    c = jnp.cosh(2 * k) / jnp.tanh(2 * k)
    gamma = jnp.concatenate([(2 * k + jnp.log(jnp.tanh(k)))[None],
                             jnp.arccosh(c - jnp.cos(jnp.pi * ell / size))])
    odd, even = size * gamma[1::2] / 2.0, size * gamma[0::2] / 2.0

    def log_2cosh(x):
        a = jnp.abs(x)
        return jnp.sum(a + jnp.log1p(jnp.exp(-2.0 * a)))

    def log_abs_2sinh(x):
        a = jnp.abs(x)
        return jnp.sum(a + jnp.log1p(-jnp.exp(-2.0 * a))), jnp.prod(jnp.sign(x))

    s_odd, sign_odd = log_abs_2sinh(odd)
    s_even, sign_even = log_abs_2sinh(even)
    logs = jnp.stack([log_2cosh(odd), s_odd, log_2cosh(even), s_even])
    signs = jax.lax.stop_gradient(jnp.stack([jnp.ones_like(k), sign_odd, jnp.ones_like(k),
                                             sign_even]))
    return (-math.log(2.0) + 0.5 * n_sites * jnp.log(2 * jnp.sinh(2 * k))
            + jax.nn.logsumexp(logs, b=signs))


@functools.lru_cache(maxsize=16)
def _derivatives(size: int):
    """Jitted ``ln Z(K)`` and its first two derivatives for an ``L x L`` lattice."""
    def log_z(k):
        return _kaufman_log_z_jnp(size, k)

    d1 = jax.grad(log_z)
    return jax.jit(log_z), jax.jit(d1), jax.jit(jax.grad(d1))


def ising_thermodynamics(size: int, beta: float, coupling: float = 1.0) -> dict[str, float]:
    """Exact ``F``, ``E``, ``S`` and the heat capacity ``C`` of the ``L x L`` periodic Ising
    model at zero field (totals, ``k_B = 1``).

    ``ln Z`` is Kaufman's formula in ``K = beta |J|``; with ``d/dbeta = |J| d/dK``,

    ``F = -ln Z / beta``, ``E = -d ln Z/d beta``, ``C = beta^2 d^2 ln Z/d beta^2``,
    ``S = beta (E - F)``,

    the derivatives by ``jax.grad`` in float64. ``J < 0`` (antiferromagnet) is the same
    model on a bipartite lattice, so ``L`` must then be even.

    Example:
        >>> t = ising_thermodynamics(8, 0.44)
        >>> round(t["free_energy"] / 64, 4), round(t["energy"] / 64, 4)
        (-2.1336, -1.5185)
    """
    if size < 2:
        raise ValueError(f"Kaufman's formula needs L >= 2, got {size}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if coupling == 0 or (coupling < 0 and size % 2):
        raise ValueError(f"Kaufman's formula needs J > 0, or J < 0 on an even lattice; got "
                         f"J = {coupling}, L = {size}")
    j = abs(float(coupling))
    log_z, d1, d2 = _derivatives(size)
    with jax.enable_x64(True):
        k = jnp.asarray(beta * j, dtype=jnp.float64)
        lz, dk, dkk = float(log_z(k)), float(d1(k)), float(d2(k))
    free = -lz / beta
    energy = -j * dk
    heat = beta ** 2 * j ** 2 * dkk
    return {"log_z": lz, "free_energy": free, "energy": energy,
            "entropy": beta * (energy - free), "heat_capacity": heat}


def ising_thermodynamics_curve(size: int, betas, coupling: float = 1.0) -> dict[str, np.ndarray]:
    """:func:`ising_thermodynamics` at each of ``betas``: arrays keyed as there."""
    rows = [ising_thermodynamics(size, float(b), coupling) for b in betas]
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}
