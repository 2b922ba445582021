"""Exact thermodynamics of small spin systems by enumerating all ``2^n`` configurations."""

import math

import jax
import jax.numpy as jnp
import numpy as np

#: Largest number of spins enumeration accepts (2^26 energies take a while on a laptop).
MAX_SPINS = 26


def all_spin_configurations(shape: tuple[int, ...], dtype=None) -> jax.Array:
    """Every ``+-1`` configuration of ``shape``, as an array ``(2^n, *shape)``."""
    n = math.prod(shape)
    if n > 20:
        raise ValueError(f"all_spin_configurations materialises 2^n states; n={n} > 20")
    return _configs(jnp.arange(2**n), n, dtype).reshape((2**n, *shape))


def _configs(index: jax.Array, n: int, dtype) -> jax.Array:
    bits = (index[:, None] >> jnp.arange(n)[None, :]) & 1
    return (1 - 2 * bits).astype(jnp.result_type(float) if dtype is None else dtype)


def enumerate_thermodynamics(system, beta: float, chunk_bits: int = 16) -> dict[str, float]:
    """``ln Z``, ``F``, ``E``, ``S`` of a spin system at inverse temperature ``beta``.

    Energies come from ``system.energy`` in chunks of ``2^chunk_bits`` configurations; the
    Boltzmann sums are accumulated in float64 on the host with a running maximum, so memory
    stays flat and nothing overflows.
    """
    if system.kind != "spins":
        raise ValueError(f"enumeration needs a spin system, got kind {system.kind!r}")
    n = system.n
    if n > MAX_SPINS:
        raise ValueError(f"enumeration is limited to n <= {MAX_SPINS} spins, got n={n}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chunk = 2 ** min(chunk_bits, n)
    shape = system.shape

    @jax.jit
    def chunk_energies(start):
        xs = _configs(start + jnp.arange(chunk), n, None).reshape((chunk, *shape))
        return jax.vmap(system.energy)(xs)

    top, z, ez, e2z = -np.inf, 0.0, 0.0, 0.0
    for start in range(0, 2**n, chunk):
        e = np.asarray(chunk_energies(start), dtype=np.float64)
        log_w = -beta * e
        m = float(log_w.max())
        if m > top:
            scale = math.exp(top - m) if np.isfinite(top) else 0.0
            z, ez, e2z, top = z * scale, ez * scale, e2z * scale, m
        w = np.exp(log_w - top)
        z += float(w.sum())
        ez += float((w * e).sum())
        e2z += float((w * e * e).sum())
    log_z = top + math.log(z)
    energy = ez / z
    return {
        "log_z": log_z,
        "free_energy": -log_z / beta,
        "energy": energy,
        "entropy": beta * energy + log_z,
        "heat_capacity": beta**2 * (e2z / z - energy**2),
    }


def enumerate_free_energy(system, beta: float) -> float:
    """Exact total free energy ``-ln Z / beta`` of a small spin system."""
    return enumerate_thermodynamics(system, beta)["free_energy"]
