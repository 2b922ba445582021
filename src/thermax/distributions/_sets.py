r"""Distributions over sets of ``N`` occupied states out of ``M``: autoregressive models and the
exact free-fermion (canonical Boltzmann) distribution.

A configuration is the integer array ``k = (k_1 < ... < k_N)`` of the occupied states
(``kind = "set"``, shape ``(N,)``). Both distributions here are autoregressive,

    p(k) = prod_t p(k_t | k_<t),    p(k_t = j | k_<t) = softmax_j over the allowed j,

where state ``j`` is allowed at step ``t`` (0-based) when ``k_{t-1} < j <= M - N + t``:
strictly increasing (so no repeats) and leaving enough states above for the ``N - 1 - t``
choices still to come. Every sample is therefore a valid set, every set has exactly one
sequence, and ``sum_K p(K) = 1`` by construction. ``ln p`` of a given set is one
teacher-forced pass; sampling is ``N`` sequential steps.

* :class:`AutoregressiveSet`: logits from an :class:`~thermax.nn.AbstractSetNet`.
* :class:`FreeFermionSets`: ``p(K) = exp(-beta sum_{k in K} eps_k) / Z_N``, exactly, with
  the conditionals (suffix sums ``e_r(x_j, ..., x_{M-1})`` of :mod:`thermax.exact`)

      p(k_t = j | k_{t-1}) = x_j e_{N-1-t}(x_{j+1}..x_{M-1}) / e_{N-t}(x_{k_{t-1}+1}..x_{M-1}),

  ``x_j = exp(-beta eps_j)``: an exact sampler and the target of :func:`pretrain_sets`.

Configurations are integers, so the public methods here carry ``Int`` annotations (the
base class annotates real-valued configurations); checks and behaviour are the base's.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, Key, PRNGKeyArray

from .._checks import check_batch, check_shape
from ..exact._fermions import all_sets, suffix_log_esp
from ..nn._sets import AbstractSetNet
from ._base import AbstractDistribution


def allowed_states(prev: Int[Array, "*batch"], t: Int[Array, "*batch"], n: int,
                   m: int) -> Array:
    """``allowed[..., j]``: state ``j`` may be chosen at step ``t`` after ``prev``
    (``prev = -1`` at ``t = 0``): ``prev < j <= m - n + t``."""
    states = jnp.arange(m).reshape((1,) * jnp.ndim(prev) + (m,))
    return (states > prev[..., None]) & (states <= (m - n + t)[..., None])


class AbstractSetDistribution(AbstractDistribution):
    """An autoregressive distribution over sets of ``n`` of ``m`` states (module docstring).

    Subclasses set ``n`` and ``m`` and implement ``_logits(k)``: the unnormalised logits of
    every ``k_t`` over the ``m`` states, row ``t`` depending only on ``k_<t``. This class
    masks, normalises, scores (one pass) and samples (``n`` steps, the full pass recomputed
    each step).
    """

    n: eqx.AbstractVar[int]
    m: eqx.AbstractVar[int]
    kind = "set"

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(n,)``, the occupied states in increasing order."""
        return (self.n,)

    @abc.abstractmethod
    def _logits(self, k: Array) -> Array:
        raise NotImplementedError

    def log_conditionals(self, k: Int[Array, " n"]) -> Float[Array, "n m"]:
        """``out[t, j] = ln p(k_t = j | k_<t)`` (``-inf`` where ``j`` is not allowed), from
        the sorted indices ``k`` (teacher-forced)."""
        check_shape(k, self.shape, f"{type(self).__name__}.log_conditionals")
        prev = jnp.concatenate([jnp.full((1,), -1, k.dtype), k[:-1]])
        allowed = allowed_states(prev, jnp.arange(self.n), self.n, self.m)
        return jax.nn.log_softmax(jnp.where(allowed, self._logits(k), -jnp.inf), axis=-1)

    def log_prob(self, x: Int[Array, " n"]) -> Float[Array, ""]:
        """Exact normalised ``ln p(k)`` of one sorted set ``k`` (``-inf`` if ``k`` is not
        strictly increasing in ``0..m-1``)."""
        check_shape(x, self.shape, f"{type(self).__name__}.log_prob")
        return self._log_prob(x)

    def sample_and_log_prob(
        self, *, key: PRNGKeyArray
    ) -> tuple[Int[Array, " n"], Float[Array, ""]]:
        """One set ``k ~ p`` (sorted indices) and its exact ``ln p(k)``."""
        return self._sample_and_log_prob(key)

    def sample(self, *, key: PRNGKeyArray) -> Int[Array, " n"]:
        """One set ``k ~ p`` (sorted indices)."""
        return self.sample_and_log_prob(key=key)[0]

    def log_prob_batch(self, xs: Int[Array, "batch n"]) -> Float[Array, " batch"]:
        """:meth:`log_prob` of each set of ``xs`` (``jax.vmap`` of it)."""
        check_batch(xs, self.shape, None, f"{type(self).__name__}.log_prob_batch")
        return self._log_prob_batch(xs)

    def sample_and_log_prob_batch(
        self, *, keys: Key[Array, " batch"]
    ) -> tuple[Int[Array, "batch n"], Float[Array, " batch"]]:
        """One set per key and its ``ln p``; set ``i`` is ``sample_and_log_prob(key=keys[i])``."""
        check_batch(None, self.shape, keys,
                    f"{type(self).__name__}.sample_and_log_prob_batch")
        return self._sample_and_log_prob_batch(keys)

    def _log_prob(self, x):
        lc = self.log_conditionals(x)
        in_range = jnp.all((x >= 0) & (x < self.m))
        picked = jnp.take_along_axis(lc, jnp.clip(x, 0, self.m - 1)[:, None], axis=1)
        return jnp.where(in_range, jnp.sum(picked), -jnp.inf)

    def _sample_and_log_prob(self, key):
        keys = jax.random.split(key, self.n)

        def step(carry, inputs):
            k, prev = carry
            t, key_t = inputs
            allowed = allowed_states(prev, t, self.n, self.m)
            row = jax.nn.log_softmax(jnp.where(allowed, self._logits(k)[t], -jnp.inf))
            choice = jax.random.categorical(key_t, row).astype(k.dtype)
            return (k.at[t].set(choice), choice), row[choice]

        start = (jnp.zeros((self.n,), int), jnp.array(-1))
        (k, _), lps = jax.lax.scan(step, start, (jnp.arange(self.n), keys))
        return k, jnp.sum(lps)


class AutoregressiveSet(AbstractSetDistribution):
    """``p(K) = prod_t p(k_t | k_<t)`` over sets of ``net.n`` of ``net.m`` states, with the
    logits of a set network (:class:`~thermax.nn.SetTransformer`, :class:`~thermax.nn.SetMADE`)
    masked as in the module docstring.

    Example:
        >>> from thermax.nn import SetTransformer
        >>> p = AutoregressiveSet(SetTransformer(3, 10, key=jax.random.key(0)))
        >>> k, lp = p.sample_and_log_prob(key=jax.random.key(1))   # k sorted, shape (3,)
    """

    net: AbstractSetNet

    def __init__(self, net: AbstractSetNet):
        if not isinstance(net, AbstractSetNet):
            raise TypeError("AutoregressiveSet needs a set network (an AbstractSetNet such as "
                            f"SetTransformer or SetMADE), got {type(net).__name__}")
        self.net = net

    @property
    def n(self) -> int:
        """Number of occupied states (particles), that of the network."""
        return self.net.n

    @property
    def m(self) -> int:
        """Number of states to choose from, that of the network."""
        return self.net.m

    def _logits(self, k):
        return self.net.logits(k)


class FreeFermionSets(AbstractSetDistribution):
    """The exact canonical distribution of ``n`` free fermions in levels ``eps_0..eps_{m-1}``,

        p(K) = exp(-beta sum_{k in K} eps_k) / Z_n,    Z_n = e_n(exp(-beta eps)),

    sampled exactly by its conditionals (module docstring). ``levels`` and ``beta`` are
    arrays (differentiable, changing them does not recompile).

    Example:
        >>> from thermax.exact import oscillator_levels_2d
        >>> p = FreeFermionSets(oscillator_levels_2d(1.0, 4), 3, 2.0)
        >>> k, lp = p.sample_and_log_prob(key=jax.random.key(0))
    """

    levels: Float[Array, " m"]
    beta: Float[Array, ""]
    n: int = eqx.field(static=True)

    def __init__(self, levels: Float[ArrayLike, " m"], n: int, beta: Float[ArrayLike, ""]):
        levels = jnp.asarray(levels)
        if levels.ndim != 1:
            raise ValueError("FreeFermionSets needs levels as a 1-D array (one energy per "
                             f"state), got shape {tuple(levels.shape)}")
        if not jnp.issubdtype(levels.dtype, jnp.floating):
            levels = levels.astype(jnp.result_type(float))
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= levels.shape[0]:
            raise ValueError(f"FreeFermionSets needs an int 1 <= n <= m = {levels.shape[0]} "
                             f"(the number of levels), got n={n!r}")
        beta = jnp.asarray(beta, levels.dtype)
        if beta.ndim != 0:
            raise ValueError(f"FreeFermionSets needs beta as a scalar, got shape {beta.shape}")
        if not isinstance(beta, jax.core.Tracer) and not (
                np.isfinite(float(beta)) and float(beta) >= 0):
            raise ValueError(f"FreeFermionSets needs a finite beta >= 0, got {float(beta)}; "
                             "for T = 0 use the ground state (thermax.exact."
                             "free_fermion_ground_state)")
        self.levels, self.n, self.beta = levels, n, beta

    @property
    def m(self) -> int:
        """Number of single-particle levels."""
        return self.levels.shape[0]

    def log_z(self) -> Float[Array, ""]:
        """``ln Z_n`` (:func:`thermax.exact.free_fermion_log_z`)."""
        return suffix_log_esp(-self.beta * self.levels, self.n)[0, self.n]

    def energy(self, k: Int[Array, " n"]) -> Float[Array, ""]:
        """``sum_{j in K} eps_j``, the energy of the set ``k``."""
        check_shape(k, self.shape, "FreeFermionSets.energy")
        return jnp.sum(self.levels[k])

    def _logits(self, k):
        log_x = -self.beta * self.levels
        table = suffix_log_esp(log_x, self.n)  # (m + 1, n + 1)
        # row t, state j: ln x_j + ln e_{n-1-t}(x_{j+1}, ..., x_{m-1})
        return log_x[None, :] + table[1:, : self.n][:, ::-1].T


MAX_ENUMERATED_SETS = 8192   # pretrain_sets sums the exact KL over all sets up to this many


def pretrain_sets(
    model: AutoregressiveSet,
    target_levels: Float[ArrayLike, " m"],
    beta: Float[ArrayLike, ""],
    *,
    key: PRNGKeyArray,
    steps: int = 500,
    batch: int = 256,
    optimizer: optax.GradientTransformation | None = None,
    exact_kl: bool | None = None,
) -> tuple[AutoregressiveSet, Float[Array, ""]]:
    """Fit ``model`` to the free-fermion distribution ``FreeFermionSets(target_levels, n,
    beta)`` by minimising ``KL(exact || model) = E_exact[ln p_exact - ln p_model]``.

    With ``exact_kl`` (default: when ``C(m, n) <= 8192``) the loss is that KL summed over
    every set; otherwise it is the negative log-likelihood of ``batch`` fresh exact samples
    per step (maximum likelihood; the same gradient in expectation).

    Args:
        model: the :class:`AutoregressiveSet` to train (``model.m == len(target_levels)``).
        target_levels: the ``m`` single-particle energies.
        beta: the inverse temperature of the target.
        key: randomness for the exact samples.
        steps: optimizer steps.
        batch: exact samples per step (sampled mode) and for the final KL estimate
            (``16 * batch`` samples) when the sets are too many to enumerate.
        optimizer: an optax optimizer (default: Adam, learning rate ``3e-2`` decaying on a
            cosine to ``3e-4`` over ``steps``, so that the fit settles instead of hovering
            at the noise floor of a constant rate).
        exact_kl: ``True`` to enumerate all sets, ``False`` to sample.

    Returns:
        ``(trained model, KL)``: the final KL in nats, exact when the sets are enumerable
        (``C(m, n) <= 8192``), else a Monte Carlo estimate.

    Example:
        >>> from thermax.nn import SetMADE
        >>> model = AutoregressiveSet(SetMADE(2, 6, key=jax.random.key(0)))
        >>> model, kl = pretrain_sets(model, jnp.arange(6.0), 1.0, key=jax.random.key(1))
    """
    if not isinstance(model, AutoregressiveSet):
        raise TypeError(f"pretrain_sets trains an AutoregressiveSet, got {type(model).__name__}")
    target = FreeFermionSets(target_levels, model.n, beta)
    if target.m != model.m:
        raise ValueError(f"pretrain_sets: the model has m = {model.m} states but "
                         f"target_levels has {target.m}")
    if steps < 0 or batch < 1:
        raise ValueError(f"pretrain_sets needs steps >= 0 and batch >= 1, got steps={steps}, "
                         f"batch={batch}")
    enumerable = math.comb(model.m, model.n) <= MAX_ENUMERATED_SETS
    exact_kl = enumerable if exact_kl is None else exact_kl
    if exact_kl and not enumerable:
        raise ValueError(f"pretrain_sets(exact_kl=True) enumerates C(m, n) = "
                         f"{math.comb(model.m, model.n)} sets, more than {MAX_ENUMERATED_SETS}")
    sets = jnp.asarray(all_sets(model.m, model.n)) if enumerable else None
    if optimizer is None:
        optimizer = optax.adam(optax.cosine_decay_schedule(3e-2, max(steps, 1), alpha=1e-2))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def kl_of(params, ks, lp_exact, weights):
        lp_model = eqx.combine(params, static).log_prob_batch(ks)
        return jnp.sum(weights * (lp_exact - lp_model))

    def step(carry, key):
        params, opt_state = carry
        if exact_kl:
            lp = target.log_prob_batch(sets)
            ks, weights = sets, jnp.exp(lp)
        else:
            ks, lp = target.sample_and_log_prob_batch(keys=jax.random.split(key, batch))
            weights = jnp.full((batch,), 1.0 / batch, lp.dtype)
        loss, grads = jax.value_and_grad(kl_of)(params, ks, lp, weights)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def final_kl(params, key):
        if enumerable:
            lp = target.log_prob_batch(sets)
            return kl_of(params, sets, lp, jnp.exp(lp))
        ks, lp = target.sample_and_log_prob_batch(keys=jax.random.split(key, 16 * batch))
        return kl_of(params, ks, lp, jnp.full((16 * batch,), 1.0 / (16 * batch), lp.dtype))

    @jax.jit
    def run(params, key):
        k_steps, k_final = jax.random.split(key)
        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)),
                                      jax.random.split(k_steps, steps))
        return params, final_kl(params, k_final)

    params, kl = run(params, key)
    return eqx.combine(params, static), kl
