"""Final evaluation of a trained model: F, E, S with error bars, importance-weighted ln Z."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Key, PRNGKeyArray

from ..distributions import AbstractDistribution
from ..objectives import FreeEnergyStats, ImportanceStats
from ..objectives._chunks import map_chunks
from ..systems import AbstractSystem
from ._engine import BATCH_AXIS


@eqx.filter_jit
def _energies_and_log_probs(model: AbstractDistribution, system: AbstractSystem,
                            keys: Key[Array, " batch"], mesh: Mesh,
                            chunk_size: int | None = None) -> tuple[Array, Array]:
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))

    def draw(k):
        xs, lps = model.sample_and_log_prob_batch(
            keys=jax.lax.with_sharding_constraint(k, sharding))
        return jax.vmap(system.energy)(xs), lps

    return map_chunks(draw, jax.lax.with_sharding_constraint(keys, sharding), chunk_size)


def sample_energies(model: AbstractDistribution, system: AbstractSystem, *, key: PRNGKeyArray,
                    n_samples: int, chunk: int, mesh: Mesh,
                    chunk_size: int | None = None) -> tuple[Array, Array]:
    """Energies and ``ln p`` of ``n_samples`` fresh samples, drawn ``chunk`` at a time
    (each call of ``chunk`` samples itself ``chunk_size`` at a time if given; the samples
    depend on ``chunk`` only)."""
    if chunk % mesh.size:
        raise ValueError(f"chunk {chunk} must be divisible by the device count {mesh.size}")
    keys = jax.random.split(key, -(-n_samples // chunk) * chunk).reshape(-1, chunk)
    out = [_energies_and_log_probs(model, system, k, mesh, chunk_size) for k in keys]
    energy = jnp.concatenate([e for e, _ in out])[:n_samples]
    log_prob = jnp.concatenate([lp for _, lp in out])[:n_samples]
    return energy, log_prob


def evaluate(model: AbstractDistribution, system: AbstractSystem, beta: float, *,
             key: PRNGKeyArray, n_samples: int, chunk: int, mesh: Mesh,
             chunk_size: int | None = None) -> dict[str, float]:
    """F, E, S (with standard errors), importance-weighted ``ln Z``, the ESS fraction and
    the heat capacity ``C = beta^2 Var_p(E)`` with its standard error (samples drawn
    ``chunk`` at a time, each ``chunk`` in pieces of ``chunk_size``)."""
    energy, log_prob = sample_energies(model, system, key=key, n_samples=n_samples,
                                       chunk=chunk, mesh=mesh, chunk_size=chunk_size)
    beta_arr: Float[Array, ""] = jnp.asarray(beta, energy.dtype)
    stats = FreeEnergyStats.from_samples(energy, log_prob, beta_arr).as_dict()
    imp = ImportanceStats.from_samples(energy, log_prob, beta_arr).as_dict()
    stats.pop("beta")
    # heat capacity C = beta^2 Var_p(E) from the same samples; its standard error from
    # the fourth central moment
    d = energy - jnp.mean(energy)
    var, m4 = jnp.mean(d**2), jnp.mean(d**4)
    var_err = jnp.sqrt(jnp.maximum(m4 - var**2, 0.0) / energy.shape[0])
    return {**stats, "log_z_importance": imp["log_z"],
            "log_z_importance_stderr": imp["log_z_stderr"],
            "ess_fraction": imp["ess_fraction"],
            "heat_capacity": float(beta_arr**2 * var),
            "heat_capacity_stderr": float(beta_arr**2 * var_err)}
