"""Hamiltonian Monte Carlo over many independent chains (``vmap``), with explicit state."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class HMCState(eqx.Module):
    """Where every chain is: position, its ``ln pi`` and gradient, and the shared step size.

    Leading axis ``chains``; ``step_size`` is a 0-d array (adapted during warm-up, so it is
    state, never a static number).
    """

    position: Float[Array, " chains *shape"]
    log_density: Float[Array, " chains"]
    grad: Float[Array, " chains *shape"]
    step_size: Float[Array, ""]


def hmc_init(log_density: Callable[[Array], Array], position: Float[Array, " chains *shape"],
             *, step_size: float | Float[Array, ""] = 0.1) -> HMCState:
    """Start one chain at each ``position[i]``.

    Arguments:
        log_density: ``ln pi(x)`` of **one** configuration, up to a constant.
        position: the chains' initial configurations, stacked on a leading axis.
        step_size: the leapfrog step size to start from.
    """
    log_p, grad = jax.vmap(jax.value_and_grad(log_density))(position)
    return HMCState(position, log_p, grad, jnp.asarray(step_size, position.dtype))


def _leapfrog_chain(log_density, x, log_p, grad, step_size, n_leapfrog, key):
    """One HMC transition of one chain; returns the new (x, log_p, grad) and ``P(accept)``."""
    k_momentum, k_accept = jax.random.split(key)
    value_and_grad = jax.value_and_grad(log_density)
    p0 = jax.random.normal(k_momentum, x.shape, x.dtype)

    def full_step(carry, _):
        y, p, _, g = carry
        y = y + step_size * p
        lp, g = value_and_grad(y)
        return (y, p + step_size * g, lp, g), None

    start = (x, p0 + 0.5 * step_size * grad, log_p, grad)
    (y, p, lp, g), _ = jax.lax.scan(full_step, start, None, length=n_leapfrog)
    p = p - 0.5 * step_size * g                 # the last momentum update is a half step
    delta_h = (-lp + 0.5 * jnp.sum(p**2)) - (-log_p + 0.5 * jnp.sum(p0**2))
    delta_h = jnp.where(jnp.isnan(delta_h), jnp.inf, delta_h)   # diverged: reject
    accept_prob = jnp.exp(jnp.minimum(-delta_h, 0.0))
    accept = jax.random.uniform(k_accept, (), x.dtype) < accept_prob
    return (jnp.where(accept, y, x), jnp.where(accept, lp, log_p), jnp.where(accept, g, grad),
            accept_prob)


def hmc_step(log_density: Callable[[Array], Array], state: HMCState, *, key: PRNGKeyArray,
             n_leapfrog: int, jitter: float = 0.1) -> tuple[HMCState, Float[Array, " chains"]]:
    r"""One HMC transition of every chain (identity mass matrix).

    Momenta ``p ~ N(0, I)``; ``n_leapfrog`` leapfrog steps of size
    ``eps (1 + jitter u)``, ``u ~ U(-1, 1)`` drawn per chain and step (jitter breaks
    periodic orbits); accept with probability ``min(1, exp(-Delta H))``,
    ``H = -ln pi(x) + |p|^2 / 2``. A trajectory whose ``Delta H`` is NaN is rejected.

    Returns the new state and each chain's acceptance probability.

    Example:
        >>> log_density = lambda x: -0.5 * jnp.sum(x**2)
        >>> state = hmc_init(log_density, jnp.zeros((8, 3)), step_size=0.5)
        >>> state, accept = hmc_step(log_density, state, key=jax.random.key(0), n_leapfrog=5)
    """
    n_chains = state.position.shape[0]
    keys = jax.random.split(key, n_chains + 1)
    u = jax.random.uniform(keys[0], (n_chains,), state.position.dtype, -1.0, 1.0)
    step_sizes = state.step_size * (1.0 + jitter * u)
    kernel = jax.vmap(_leapfrog_chain, in_axes=(None, 0, 0, 0, 0, None, 0))
    x, log_p, grad, accept_prob = kernel(log_density, state.position, state.log_density,
                                         state.grad, step_sizes, n_leapfrog, keys[1:])
    return HMCState(x, log_p, grad, state.step_size), accept_prob


def adapt_step_size(state: HMCState, accept_prob: Float[Array, " chains"], *,
                    target: float = 0.8, rate: float = 0.5) -> HMCState:
    """``ln eps <- ln eps + rate (mean accept_prob - target)``: a warm-up step-size update."""
    log_eps = jnp.log(state.step_size) + rate * (jnp.mean(accept_prob) - target)
    return eqx.tree_at(lambda s: s.step_size, state, jnp.exp(log_eps).astype(state.step_size.dtype))


class HMC(eqx.Module):
    """Hamiltonian Monte Carlo on a log-density of one configuration, many chains at once.

    Components: the target ``log_density`` (``ln pi`` up to a constant, of **one**
    configuration; a function or an ``eqx.Module``), ``n_leapfrog`` steps per trajectory,
    and the warm-up rule: with ``adapt=True`` every step moves ``ln eps`` by
    ``rate (mean acceptance - target_acceptance)`` (see :func:`adapt_step_size`); after
    warm-up call with ``adapt=False`` so the chain is a fixed, exact Markov kernel.

    Example:
        >>> hmc = HMC(lambda x: -0.5 * jnp.sum(x**2), n_leapfrog=10)
        >>> state = hmc.init(jnp.zeros((64, 4)), step_size=0.3)
        >>> state, _ = hmc.sample(state, key=jax.random.key(0), n_steps=100, adapt=True)
        >>> state, trace = hmc.sample(state, key=jax.random.key(1), n_steps=500,
        ...                           observable=lambda x: x[0])
        >>> trace["observable"].shape, trace["acceptance"].shape
        ((500, 64), (500, 64))
    """

    log_density: Callable[[Array], Array]
    n_leapfrog: int = eqx.field(static=True, default=10)
    target_acceptance: float = eqx.field(static=True, default=0.8)
    adaptation_rate: float = eqx.field(static=True, default=0.5)
    jitter: float = eqx.field(static=True, default=0.1)

    def __check_init__(self):
        if not (isinstance(self.n_leapfrog, int) and self.n_leapfrog >= 1):
            raise ValueError(f"HMC needs an integer n_leapfrog >= 1, got {self.n_leapfrog!r}")
        if not 0 < self.target_acceptance < 1:
            raise ValueError(f"HMC needs 0 < target_acceptance < 1, got "
                             f"{self.target_acceptance}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"HMC needs 0 <= jitter < 1, got {self.jitter}")

    def init(self, position: Float[Array, " chains *shape"],
             step_size: float | Float[Array, ""] = 0.1) -> HMCState:
        """Start one chain at each ``position[i]``."""
        return hmc_init(self.log_density, position, step_size=step_size)

    def step(self, state: HMCState, *, key: PRNGKeyArray,
             adapt: bool = False) -> tuple[HMCState, Float[Array, " chains"]]:
        """One transition of every chain (then a step-size update if ``adapt``)."""
        state, accept_prob = hmc_step(self.log_density, state, key=key,
                                      n_leapfrog=self.n_leapfrog, jitter=self.jitter)
        if adapt:
            state = adapt_step_size(state, accept_prob, target=self.target_acceptance,
                                    rate=self.adaptation_rate)
        return state, accept_prob

    def sample(self, state: HMCState, *, key: PRNGKeyArray, n_steps: int, adapt: bool = False,
               observable: Callable[[Array], Any] | None = None) -> tuple[HMCState, dict]:
        """``n_steps`` transitions (a ``lax.scan``); jit the caller.

        Returns the final state and a trace: ``"acceptance"`` ``(n_steps, chains)`` and, if
        given, ``"observable"``: ``observable`` of each chain's configuration after every
        step, stacked as ``(n_steps, chains, ...)``.
        """

        def body(state, k):
            state, accept_prob = self.step(state, key=k, adapt=adapt)
            out = {"acceptance": accept_prob}
            if observable is not None:
                out["observable"] = jax.vmap(observable)(state.position)
            return state, out

        return jax.lax.scan(body, state, jax.random.split(key, n_steps))
