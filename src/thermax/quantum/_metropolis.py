r"""Metropolis random-walk walkers sampling ``|Psi(x)|^2``, with explicit state.

The walkers are a batch of configurations ``(batch, n, dim)`` evolved by Gaussian random-
walk proposals ``x' = x + w * N(0, I)`` accepted with probability

.. math::

    A(x \to x') = \min\left(1, \frac{|\Psi(x')|^2}{|\Psi(x)|^2}\right)
    = \min\bigl(1, \exp(2\ln|\Psi(x')| - 2\ln|\Psi(x)|)\bigr),

evaluated in log space (a proposal onto a node, ``ln|Psi| = -inf``, or a NaN is rejected).
Everything evolving lives in a :class:`WalkerState` returned by :func:`init_walkers`,
:func:`metropolis_step` and :func:`adapt_width` (after FermiNet's ``mcmc.py``). The
sampler owns the batch axis: ``log_psi_batch`` maps ``(batch, n, dim) -> (batch,)``, so a
walker may carry its own wavefunction (its own occupied set ``K``, closed over by the
caller, in the same walker order).

Typical use::

    state = init_walkers(log_psi_batch, xs0, 0.5)
    for _ in range(20):                                     # burn-in with adaptation
        state = metropolis_step(log_psi_batch, state, key=k, n_sweeps=10)
        state = adapt_width(state)
    for step in range(n_steps):                             # the optimisation loop
        state = metropolis_step(log_psi_batch_now, state, key=k, n_sweeps=10)
        state = adapt_width(state)
        ...

Re-thermalisation: the walkers are persisted between optimisation steps, which is valid
while ``Psi`` changes slowly. When a walker's wavefunction changes abruptly (a newly sampled
occupied set ``K``, a restart, a large parameter jump), call :func:`metropolis_step` with
more sweeps for that update (e.g. ``n_sweeps`` of a few times the autocorrelation time, or
the burn-in count) before measuring: the walkers are then out of equilibrium.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

#: ``ln|Psi|`` of a batch of configurations, ``(batch, n, dim) -> (batch,)``.
LogPsiBatch = Callable[[Float[Array, "batch n dim"]], Float[Array, " batch"]]


class WalkerState(eqx.Module):
    """The state of a batch of Metropolis walkers.

    Attributes:
        positions: the configurations ``(batch, n, dim)``.
        log_prob: ``2 ln|Psi|`` of each walker, ``(batch,)``, for the wavefunction of the
            last call.
        width: the proposal standard deviation, one for all walkers (0-d) or one per
            walker ``(batch,)``.
        acceptance: the fraction of proposals each walker accepted in the last
            :func:`metropolis_step` call, ``(batch,)`` (NaN right after
            :func:`init_walkers`).
    """

    positions: Float[Array, "batch n dim"]
    log_prob: Float[Array, " batch"]
    width: Float[Array, ""] | Float[Array, " batch"]
    acceptance: Float[Array, " batch"]

    @property
    def mean_acceptance(self) -> Float[Array, ""]:
        """The acceptance averaged over walkers (NaN right after :func:`init_walkers`)."""
        return jnp.mean(self.acceptance)


def _log_prob(log_psi_batch: LogPsiBatch, xs: Array, what: str) -> Array:
    out = jax.eval_shape(log_psi_batch, xs)
    if getattr(out, "shape", None) != (xs.shape[0],) or not jnp.issubdtype(out.dtype,
                                                                          jnp.floating):
        raise ValueError(f"{what}: log_psi_batch must map configurations {tuple(xs.shape)} to "
                         f"real ln|Psi| of shape ({xs.shape[0]},), got "
                         f"{getattr(out, 'shape', type(out))} of dtype "
                         f"{getattr(out, 'dtype', None)}; vmap an unbatched ln|Psi|")
    return 2 * log_psi_batch(xs)


def _check_positions(xs: Array, what: str) -> None:
    if xs.ndim != 3 or not jnp.issubdtype(xs.dtype, jnp.floating):
        raise ValueError(f"{what}: positions must be a real array (batch, n, dim), got shape "
                         f"{tuple(xs.shape)} and dtype {xs.dtype}")


def _as_width(width, xs: Array, what: str) -> Array:
    width = jnp.asarray(width, dtype=xs.dtype)
    if width.shape not in ((), (xs.shape[0],)):
        raise ValueError(f"{what}: width must be a number, a 0-d array or one per walker "
                         f"({xs.shape[0]},), got shape {width.shape}")
    if not isinstance(width, jax.core.Tracer) and not bool(jnp.all(width > 0)):
        raise ValueError(f"{what}: width must be > 0 (the proposal standard deviation), got "
                         f"{width}")
    return width


def init_walkers(log_psi_batch: LogPsiBatch, xs: Float[Array, "batch n dim"],
                 width: float | Float[ArrayLike, ""] | Float[ArrayLike, " batch"]
                 ) -> WalkerState:
    """Walkers at ``xs`` with proposal width ``width`` (not yet in equilibrium).

    Args:
        log_psi_batch: ``ln|Psi|`` of a batch, ``(batch, n, dim) -> (batch,)``.
        xs: initial configurations ``(batch, n, dim)`` (e.g. Gaussian around the origin);
            burn them in with :func:`metropolis_step` before measuring.
        width: initial proposal standard deviation, shared (a number or 0-d) or per walker
            ``(batch,)``; ``> 0``. Tune it with :func:`adapt_width`.

    Returns:
        A :class:`WalkerState` with ``acceptance`` NaN.

    Example:
        >>> log_psi_batch = jax.vmap(lambda x: -0.5 * jnp.sum(x**2))
        >>> state = init_walkers(log_psi_batch, jnp.zeros((256, 2, 2)), 0.5)
    """
    _check_positions(xs, "init_walkers")
    width = _as_width(width, xs, "init_walkers")
    log_prob = _log_prob(log_psi_batch, xs, "init_walkers")
    return WalkerState(positions=xs, log_prob=log_prob, width=width,
                       acceptance=jnp.full((xs.shape[0],), jnp.nan, log_prob.dtype))


def metropolis_step(log_psi_batch: LogPsiBatch, state: WalkerState, *, key: PRNGKeyArray,
                    n_sweeps: int, one_electron: bool = False, refresh: bool = True
                    ) -> WalkerState:
    r"""``n_sweeps`` Metropolis sweeps of every walker (a ``lax.scan``).

    A sweep is one Gaussian move of all electrons at once (default), or, with
    ``one_electron=True``, ``n`` moves of one electron at a time in order (``n`` times the
    evaluations; higher acceptance at the same width, useful for large ``n``).

    Args:
        log_psi_batch: ``ln|Psi|`` of a batch, ``(batch, n, dim) -> (batch,)``; the
            current wavefunction (it may differ from the last call's).
        state: the walkers.
        key: PRNG key.
        n_sweeps: number of sweeps (static, ``>= 1``); use more after the wavefunction
            changed abruptly (re-thermalisation, see the module docs).
        one_electron: move one electron at a time.
        refresh: recompute ``2 ln|Psi|`` at the current positions first (default). Needed
            whenever ``log_psi_batch`` changed since the last call (new parameters or
            ``K``); ``False`` trusts ``state.log_prob`` and saves one evaluation.

    Returns:
        The new state; its ``acceptance`` is the fraction of this call's proposals accepted
        by each walker.

    Example:
        >>> state = metropolis_step(log_psi_batch, state, key=jax.random.key(1), n_sweeps=20)
    """
    if isinstance(n_sweeps, bool) or not isinstance(n_sweeps, int) or n_sweeps < 1:
        raise ValueError(f"metropolis_step: n_sweeps must be an int >= 1, got {n_sweeps!r}")
    xs = state.positions
    _check_positions(xs, "metropolis_step")
    width = _as_width(state.width, xs, "metropolis_step")
    log_prob = (_log_prob(log_psi_batch, xs, "metropolis_step") if refresh
                else state.log_prob)
    batch, n, _ = xs.shape
    w = width.reshape(-1, 1, 1) if width.ndim else width         # broadcasts over (n, dim)

    def move(carry, k, mask):
        x, lp, accepted = carry
        k_prop, k_acc = jax.random.split(k)
        noise = jax.random.normal(k_prop, x.shape, x.dtype)
        proposal = x + w * (noise if mask is None else noise * mask)
        lp_new = 2 * log_psi_batch(proposal)
        log_u = jnp.log(jax.random.uniform(k_acc, (batch,), lp.dtype))
        accept = log_u < lp_new - lp                              # NaN -> rejected
        x = jnp.where(accept[:, None, None], proposal, x)
        lp = jnp.where(accept, lp_new, lp)
        return (x, lp, accepted + accept.astype(lp.dtype)), None

    def sweep(carry, k):
        if not one_electron:
            return move(carry, k, None)
        masks = jnp.eye(n, dtype=xs.dtype).reshape(n, 1, n, 1)     # masks[i]: electron i
        return jax.lax.scan(lambda c, km: move(c, *km), carry,
                            (jax.random.split(k, n), masks))[0], None

    zeros = jnp.zeros((batch,), log_prob.dtype)
    (x, lp, accepted), _ = jax.lax.scan(sweep, (xs, log_prob, zeros),
                                        jax.random.split(key, n_sweeps))
    proposals = n_sweeps * (n if one_electron else 1)
    return WalkerState(positions=x, log_prob=lp, width=width, acceptance=accepted / proposals)


def adapt_width(state: WalkerState, target: float = 0.5, *, gain: float = 2.0,
                max_factor: float = 2.0, min_width: float = 1e-8,
                max_width: float = 1e8) -> WalkerState:
    r"""Nudge the proposal width toward the target acceptance (multiplicative, clipped).

    .. math::

        w \leftarrow \mathrm{clip}\Bigl(w \cdot \mathrm{clip}\bigl(e^{g\,(a - a^*)},
        \tfrac{1}{f}, f\bigr),\ w_{\min}, w_{\max}\Bigr),

    with ``a`` the last step's acceptance (the mean over walkers for a shared 0-d width,
    each walker's own for per-walker widths), ``a* = target``, ``g = gain`` and
    ``f = max_factor``. Acceptance falls as the width grows, so too high an acceptance
    widens and too low narrows; near the target ``ln w`` contracts geometrically. Call it
    after each :func:`metropolis_step` of the burn-in (and during training, since the
    wavefunction changes). Walkers with NaN acceptance (never stepped) keep their width.

    Args:
        state: the walkers after a :func:`metropolis_step`.
        target: the acceptance aimed at, in ``(0, 1)`` (default ``0.5``).
        gain: ``g``, the rate of the log-width update.
        max_factor: ``f > 1``, the largest change of the width per call.
        min_width: the smallest width allowed.
        max_width: the largest width allowed.

    Returns:
        The state with the new width.

    Example:
        >>> state = adapt_width(metropolis_step(log_psi_batch, state, key=k, n_sweeps=10))
    """
    if not 0 < target < 1:
        raise ValueError(f"adapt_width: target must be an acceptance in (0, 1), got {target}")
    if not max_factor > 1 or not gain > 0 or not 0 < min_width < max_width:
        raise ValueError("adapt_width: need gain > 0, max_factor > 1 and 0 < min_width < "
                         f"max_width, got gain={gain}, max_factor={max_factor}, "
                         f"min_width={min_width}, max_width={max_width}")
    acc = state.acceptance if state.width.ndim else jnp.mean(state.acceptance)
    factor = jnp.clip(jnp.exp(gain * (acc - target)), 1 / max_factor, max_factor)
    factor = jnp.where(jnp.isnan(acc), 1, factor).astype(state.width.dtype)
    width = jnp.clip(state.width * factor, min_width, max_width)
    return eqx.tree_at(lambda s: s.width, state, width)
