"""Reference free energies of lattice phi^4: thermodynamic integration in kappa with HMC.

No exact ``Z`` exists for ``kappa > 0``. Since ``-dS/dkappa = 2 sum_x sum_mu phi_x
phi_{x+mu} =: O(phi)``,

    ln Z(kappa) = N ln z0 + int_0^kappa <O>_{kappa'} dkappa',
    z0 = int exp(-phi^2 - lam (phi^2 - 1)^2) dphi,

exact at ``kappa = 0`` where the sites decouple. The integral over ``kappa'`` is done by
Gauss–Legendre quadrature; ``<O>`` at each node by HMC over many independent chains, whose
per-chain means give the standard error. See ``docs/tutorials/fields-reference.md``.
"""

import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..systems._fields import phi4_action

#: A chain whose mean acceptance probability falls below this is stuck: the run stops.
MIN_CHAIN_ACCEPTANCE = 0.05

#: Reference values ``(L, kappa, lam) -> (F = -ln Z, standard error, provenance)``, computed
#: by ``benchmarks/phi4_reference.py`` (``phi4_thermodynamic_integration``).
PHI4_REFERENCE: dict[tuple[int, float, float], tuple[float, float, str]] = {
    (8, 0.15, 1.1): (0.22527066277138785, 0.0005624363750445434,
                     "benchmarks/phi4_reference.py: TI, 16 Gauss-Legendre nodes, 256 HMC "
                     "chains x 6000 steps (+1000 warm-up, 10 leapfrog), float64, 168 s wall "
                     "on one shared CPU core"),
    (8, 0.3, 1.1): (-7.0428220642031825, 0.001978540185081029,
                    "benchmarks/phi4_reference.py: TI, 16 Gauss-Legendre nodes, 256 HMC "
                    "chains x 6000 steps (+1000 warm-up, 10 leapfrog), float64, 148 s wall "
                    "on one shared CPU core"),
}


def phi4_site_log_z(lam: float, n_nodes: int = 200) -> float:
    """``ln z0``, ``z0 = int exp(-phi^2 - lam (phi^2 - 1)^2) dphi`` (host float64).

    The integrand is even; with ``u = phi^2`` the exponent ``g(u) = u + lam (u - 1)^2`` is
    convex, so the set where it lies within 60 of its minimum is an interval
    ``[u1, u2]``; Gauss–Legendre with ``n_nodes`` nodes on ``phi in [sqrt u1, sqrt u2]``
    (the neglected tails are below ``e^-60`` relative). Accurate to ~1e-14 for any
    ``lam >= 0``.

    Example:
        >>> round(phi4_site_log_z(0.0), 12) == round(0.5 * math.log(math.pi), 12)
        True
    """
    lam = float(lam)
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"phi4_site_log_z needs a finite lam >= 0, got {lam}")
    margin = 60.0
    if lam == 0.0:
        g_min, u_lo, u_hi = 0.0, 0.0, margin
    else:
        u_star = max(0.0, 1.0 - 0.5 / lam)               # argmin of g on u >= 0
        g_min = u_star + lam * (u_star - 1.0) ** 2
        # lam u^2 + (1 - 2 lam) u + lam - (g_min + margin) = 0
        b, c = 1.0 - 2.0 * lam, lam - (g_min + margin)
        disc = math.sqrt(b * b - 4.0 * lam * c)
        u_lo = max(0.0, (-b - disc) / (2.0 * lam))
        u_hi = (-b + disc) / (2.0 * lam)
    a, b = math.sqrt(u_lo), math.sqrt(u_hi)
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    phi = 0.5 * (b - a) * x + 0.5 * (b + a)
    exponent = -(phi**2) - lam * (phi**2 - 1.0) ** 2 + g_min
    integral = 0.5 * (b - a) * float(np.sum(w * np.exp(exponent)))
    return math.log(2.0 * integral) - g_min


def phi4_hopping(phi: Float[Array, "L L"]) -> Float[Array, ""]:
    """``O(phi) = 2 sum_x sum_mu phi_x phi_{x+mu} = -dS/dkappa`` of one configuration."""
    return 2.0 * jnp.sum(phi * (jnp.roll(phi, -1, axis=0) + jnp.roll(phi, -1, axis=1)))


@eqx.filter_jit
def _hopping_at(kappa, lam, position, step_size, *, key, n_warmup, n_steps, n_leapfrog,
                target_acceptance):
    """Warm up (adapting the step size), then ``n_steps`` fixed-kernel steps; per-chain means
    of ``O`` and ``O^2``, mean acceptance, and the step size used."""
    from ..mcmc._hmc import HMC  # here, so importing thermax.exact stays light

    hmc = HMC(lambda phi: -phi4_action(phi, kappa, lam), n_leapfrog=n_leapfrog,
              target_acceptance=target_acceptance)
    k_warm, k_run = jax.random.split(key)
    state = hmc.init(position, step_size)
    state, _ = hmc.sample(state, key=k_warm, n_steps=n_warmup, adapt=True)
    state, trace = hmc.sample(state, key=k_run, n_steps=n_steps, observable=phi4_hopping)
    hopping = trace["observable"]
    return (jnp.mean(hopping, axis=0), jnp.mean(hopping**2, axis=0),
            jnp.mean(trace["acceptance"], axis=0), state.step_size)


def phi4_thermodynamic_integration(
    size: int, kappa: float, lam: float, *, key: PRNGKeyArray, n_nodes: int = 12,
    n_chains: int = 64, n_steps: int = 2000, n_warmup: int = 500, n_leapfrog: int = 10,
    step_size: float = 0.2, target_acceptance: float = 0.8, verbose: bool = False,
) -> dict:
    r"""``ln Z`` of ``Phi4(size, kappa, lam)`` by thermodynamic integration, with details.

        ln Z = N ln z0 + (kappa/2) sum_i w_i <O>_{kappa_i},
        Var(ln Z) = (kappa/2)^2 sum_i w_i^2 se_i^2,

    ``(kappa_i, w_i)`` the Gauss–Legendre rule on ``[0, kappa]``. At every node
    ``n_chains`` independent HMC chains (``n_leapfrog`` steps per trajectory) start from
    ``N(0, 1)`` draws clipped to ``[-2, 2]``, adapt the step size towards
    ``target_acceptance`` for ``n_warmup`` steps, then run ``n_steps`` steps with it
    fixed; ``se_i`` is the standard deviation of the per-chain means of ``O`` over
    ``sqrt(n_chains)`` (chains are independent, so this holds whatever the
    autocorrelation, given ``n_steps`` much longer than it). A chain whose mean acceptance
    is below :data:`MIN_CHAIN_ACCEPTANCE` raises ``RuntimeError``. One compiled program
    serves every node (``kappa`` is an array argument).

    Returns a dict: ``log_z``, ``log_z_stderr``, ``free_energy`` (``-ln Z``),
    ``free_energy_stderr``, ``log_z0`` and per node ``nodes``, ``weights``, ``hopping``
    (``<O>``), ``hopping_stderr``, ``acceptance``, ``step_size`` and
    ``autocorrelation_time`` (``tau_int ~ n_steps Var(chain means) / (2 Var(O))``, in HMC
    steps: ``n_steps`` should be much longer), plus ``seconds``.
    """
    for name, value, least in (("size", size, 2), ("n_nodes", n_nodes, 1),
                               ("n_chains", n_chains, 2), ("n_steps", n_steps, 1),
                               ("n_warmup", n_warmup, 0), ("n_leapfrog", n_leapfrog, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"phi4 thermodynamic integration needs an integer {name} >= "
                             f"{least}, got {value!r}")
    kappa, lam = float(kappa), float(lam)
    if not (math.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"phi4 thermodynamic integration needs a finite kappa >= 0, got "
                         f"{kappa}")
    if not (math.isfinite(lam) and lam >= 0) or (lam == 0 and kappa >= 0.25):
        raise ValueError(f"phi4 thermodynamic integration needs a finite lam >= 0 (and "
                         f"kappa < 1/4 when lam = 0), got lam={lam}, kappa={kappa}")
    n_sites = size * size
    log_z0 = phi4_site_log_z(lam)
    start = time.perf_counter()
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    nodes, weights = 0.5 * kappa * (x + 1.0), 0.5 * kappa * w
    dtype = jnp.result_type(float)
    means, errors, accepts, steps, taus = [], [], [], [], []
    for i, node in enumerate(nodes if kappa > 0 else []):
        k_init, k_run = jax.random.split(jax.random.fold_in(key, i))
        # |phi| <= 2: a site far out in the quartic wall makes every leapfrog trajectory
        # unstable at the initial step size, and that chain would never move.
        position = jnp.clip(jax.random.normal(k_init, (n_chains, size, size), dtype), -2, 2)
        chain_means, chain_squares, chain_accept, eps = _hopping_at(
            jnp.asarray(node, dtype), jnp.asarray(lam, dtype), position,
            jnp.asarray(step_size, dtype), key=k_run, n_warmup=n_warmup, n_steps=n_steps,
            n_leapfrog=n_leapfrog, target_acceptance=target_acceptance)
        chain_means = np.asarray(chain_means, dtype=np.float64)
        chain_accept = np.asarray(chain_accept, dtype=np.float64)
        if chain_accept.min() < MIN_CHAIN_ACCEPTANCE:
            raise RuntimeError(
                f"phi4 thermodynamic integration: at kappa'={node:.6g} a chain accepted only "
                f"{chain_accept.min():.3g} of its proposals (mean over chains "
                f"{chain_accept.mean():.3g}); it is stuck and its averages are meaningless. "
                f"Use a smaller step_size or a lower target_acceptance, or more n_warmup.")
        accept = chain_accept.mean()
        variance = float(np.mean(np.asarray(chain_squares, dtype=np.float64))
                         - chain_means.mean() ** 2)
        means.append(float(chain_means.mean()))
        errors.append(float(chain_means.std(ddof=1) / math.sqrt(n_chains)))
        accepts.append(float(accept))
        steps.append(float(eps))
        taus.append(n_steps * float(chain_means.var(ddof=1)) / (2.0 * variance))
        if verbose:
            print(f"  node {i + 1}/{n_nodes}: kappa'={node:.5f}  <O>={means[-1]:.5f} "
                  f"+- {errors[-1]:.5f}  tau={taus[-1]:.1f}  acceptance={accepts[-1]:.3f}  "
                  f"eps={steps[-1]:.4f}  "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
    if kappa == 0:
        integral, variance = 0.0, 0.0
    else:
        integral = float(np.sum(weights * np.array(means)))
        variance = float(np.sum((weights * np.array(errors)) ** 2))
    log_z = n_sites * log_z0 + integral
    stderr = math.sqrt(variance)
    return {
        "log_z": log_z, "log_z_stderr": stderr, "free_energy": -log_z,
        "free_energy_stderr": stderr, "log_z0": log_z0,
        "nodes": nodes.tolist() if kappa > 0 else [],
        "weights": weights.tolist() if kappa > 0 else [],
        "hopping": means, "hopping_stderr": errors, "acceptance": accepts,
        "step_size": steps, "autocorrelation_time": taus,
        "seconds": time.perf_counter() - start,
    }


def phi4_reference_free_energy(
    size: int, kappa: float, lam: float, *, key: PRNGKeyArray, n_nodes: int = 12,
    n_chains: int = 64, n_steps: int = 2000, n_warmup: int = 500, n_leapfrog: int = 10,
    step_size: float = 0.2, target_acceptance: float = 0.8,
) -> tuple[float, float]:
    """``(F, stderr)``, ``F = -ln Z`` of ``Phi4(size, kappa, lam)`` at ``beta = 1``, by
    thermodynamic integration in ``kappa`` with HMC (:func:`phi4_thermodynamic_integration`).

    Example:
        >>> f, err = phi4_reference_free_energy(2, 0.1, 1.1, key=jax.random.key(0),
        ...                                     n_nodes=4, n_chains=16, n_steps=200)
    """
    out = phi4_thermodynamic_integration(
        size, kappa, lam, key=key, n_nodes=n_nodes, n_chains=n_chains, n_steps=n_steps,
        n_warmup=n_warmup, n_leapfrog=n_leapfrog, step_size=step_size,
        target_acceptance=target_acceptance)
    return out["free_energy"], out["free_energy_stderr"]


def phi4_reference_lookup(size: int, kappa: float, lam: float) -> tuple[float, float, str] | None:
    """The :data:`PHI4_REFERENCE` entry for ``(L, kappa, lam)`` (floats matched to a
    relative 1e-6), or ``None``."""
    for (ref_size, ref_kappa, ref_lam), value in PHI4_REFERENCE.items():
        if (ref_size == size and math.isclose(ref_kappa, kappa, rel_tol=1e-6, abs_tol=1e-12)
                and math.isclose(ref_lam, lam, rel_tol=1e-6, abs_tol=1e-12)):
            return value
    return None
