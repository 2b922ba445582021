"""Estimates with error bars from a batch of samples."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def mean_and_stderr(x: Float[Array, " batch"]) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Sample mean and its standard error ``std / sqrt(batch)`` (ddof = 1)."""
    b = x.shape[0]
    mean = jnp.mean(x)
    var = jnp.sum((x - mean) ** 2) / max(b - 1, 1)
    return mean, jnp.sqrt(var / b)


class FreeEnergyStats(eqx.Module):
    """Batch estimates of the variational free energy, energy and entropy.

    ``free_energy = <H + T ln p>``, ``energy = <H>``, ``entropy = -<ln p>``, each with
    its standard error, at inverse temperature ``beta``. Totals, not per-site values.
    """

    free_energy: Float[Array, ""]
    free_energy_stderr: Float[Array, ""]
    energy: Float[Array, ""]
    energy_stderr: Float[Array, ""]
    entropy: Float[Array, ""]
    entropy_stderr: Float[Array, ""]
    beta: Float[Array, ""]

    @classmethod
    def from_samples(cls, energy: Float[Array, " batch"], log_prob: Float[Array, " batch"],
                     beta: Float[Array, ""]) -> "FreeEnergyStats":
        """The statistics of a batch of energies ``H(x)`` and ``ln p(x)`` of samples
        ``x ~ p`` at inverse temperature ``beta``."""
        f, f_err = mean_and_stderr(energy + log_prob / beta)
        e, e_err = mean_and_stderr(energy)
        s, s_err = mean_and_stderr(-log_prob)
        return cls(f, f_err, e, e_err, s, s_err, jnp.asarray(beta, f.dtype))

    def as_dict(self) -> dict[str, float]:
        """Every field as a Python float, by name (for logs and JSON)."""
        return {k: float(v) for k, v in vars(self).items()}


class ImportanceStats(eqx.Module):
    """Importance-weighted ``ln Z`` with ``w = exp(-beta H) / p``, and the ESS fraction.

    ``ln Z ~ ln mean(w)`` (asymptotically unbiased); its standard error by the delta
    method, ``std(w) / (sqrt(B) mean(w))``; ``ess_fraction = (sum w)^2 / (B sum w^2)``.
    """

    log_z: Float[Array, ""]
    log_z_stderr: Float[Array, ""]
    ess_fraction: Float[Array, ""]

    @classmethod
    def from_samples(cls, energy: Float[Array, " batch"], log_prob: Float[Array, " batch"],
                     beta: Float[Array, ""]) -> "ImportanceStats":
        """The importance weights of a batch of energies ``H(x)`` and ``ln p(x)`` of
        samples ``x ~ p`` at inverse temperature ``beta``, and their statistics."""
        log_w = -beta * energy - log_prob
        b = log_w.shape[0]
        log_z = jax.nn.logsumexp(log_w) - jnp.log(b)
        w = jnp.exp(log_w - jnp.max(log_w))
        rel = w / jnp.mean(w)
        stderr = jnp.sqrt(jnp.sum((rel - 1.0) ** 2) / max(b - 1, 1) / b)
        ess = jnp.sum(w) ** 2 / (b * jnp.sum(w**2))
        return cls(log_z, stderr, ess)

    def as_dict(self) -> dict[str, float]:
        """Every field as a Python float, by name (for logs and JSON)."""
        return {k: float(v) for k, v in vars(self).items()}
