"""Thermodynamics by automatic differentiation of the variational free energy.

The variational free energy of a model ``p`` for a Hamiltonian ``H_lambda`` at inverse
temperature ``beta`` is ``F(beta, lambda) = E_p[H_lambda + ln p / beta]``. Its derivatives
at a *fixed* model are the thermodynamic ones by the variational principle: at the
optimum ``p* = exp(-beta H)/Z`` the derivative of ``F[p*(beta, lambda); beta, lambda]``
with respect to the model vanishes (envelope theorem), so only the explicit dependence
remains:

- ``d(beta F)/d beta = E_p[H] = U`` (the energy),
- ``dF/d lambda = E_p[dH/d lambda]`` (for the trap strength ``<sum |x|^2>``, for a
  coupling the pair energy over the coupling, ...),
- ``S = beta (U - F) = -E_p[ln p]``.

:func:`free_energy_derivatives` differentiates the per-sample estimator
``beta H_lambda(x) + ln p(x)`` with :func:`jax.grad` for any parameters the system
builder takes, so a new system needs no hand-written derivative. Each derivative comes
with a standard error over samples.
"""

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..distributions import AbstractDistribution
from ..systems import AbstractSystem
from ._stats import mean_and_stderr


def free_energy_derivatives(
    model: AbstractDistribution,
    make_system: Callable[..., AbstractSystem],
    params: Mapping[str, float],
    beta: float,
    *,
    key: PRNGKeyArray,
    n_samples: int,
) -> dict[str, float]:
    """``F``, ``U = d(beta F)/d beta``, ``S`` and ``dF/d p`` for every parameter ``p``.

    Args:
        model: a trained model (its parameters are held fixed).
        make_system: ``make_system(**params)`` builds the system; parameters arrive as JAX
            scalars, so the system must keep them as array leaves (as
            :class:`thermax.systems.CoulombTrap` does with ``trap`` and ``coupling``).
        params: the physical parameters to differentiate by, with their values.
        beta: inverse temperature.
        key: PRNG key for the samples.
        n_samples: number of samples.

    Returns:
        A dict with ``free_energy``, ``energy``, ``entropy`` and ``dF/d<name>`` for each
        parameter, each with a ``*_stderr`` companion (totals, not per particle).

    Example:
        >>> d = free_energy_derivatives(model, lambda trap: CoulombTrap(2, 2, trap=trap),
        ...                             {"trap": 1.0}, 1.0, key=key, n_samples=4096)
        >>> d["dF/dtrap"]  # = <sum_i |x_i|^2>
    """
    if not params:
        raise ValueError("free_energy_derivatives needs at least one parameter in params")
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 for an error bar, got {n_samples}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    keys = jax.random.split(key, n_samples)
    names = tuple(params)
    results = _derivatives(model, make_system, names, keys,
                           jnp.asarray(beta, dtype=float),
                           tuple(jnp.asarray(params[n], dtype=float) for n in names))
    return {k: float(v) for k, v in results.items()}


def _derivatives(model, make_system, names: tuple[str, ...], keys, beta: Float[Array, ""],
                 values: tuple[Array, ...]) -> dict[str, Array]:
    @eqx.filter_jit
    def run(model, keys, beta, values):
        xs, log_probs = model.sample_and_log_prob_batch(keys=keys)
        xs, log_probs = jax.lax.stop_gradient((xs, log_probs))

        def beta_f(b, vals, x, lp):  # one sample's estimate of beta * F
            system = make_system(**dict(zip(names, vals, strict=True)))
            return b * system.energy(x) + lp

        grads = jax.vmap(jax.grad(beta_f, argnums=(0, 1)), in_axes=(None, None, 0, 0))
        d_beta, d_vals = grads(beta, values, xs, log_probs)
        energy = d_beta  # d(beta F_i)/d beta = H(x_i)
        out = {}
        for name, val in [("free_energy", energy + log_probs / beta), ("energy", energy),
                          ("entropy", -log_probs)]:
            out[name], out[name + "_stderr"] = mean_and_stderr(val)
        for name, d in zip(names, d_vals, strict=True):
            out[f"dF/d{name}"], out[f"dF/d{name}_stderr"] = mean_and_stderr(d / beta)
        return out

    return run(model, keys, beta, values)
