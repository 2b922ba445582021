r"""Stochastic reconfiguration (natural gradient) for the quantum free energy.

The quantum free energy ``F = E_{K~p}[T ln p(K) + E_{x~|Psi_K|^2} E_loc(x; K)]`` has two
parameter blocks: ``theta_p`` (the autoregressive ``p(K)``) and ``theta_psi`` (the flow of
the wavefunctions). Stochastic reconfiguration preconditions the gradient ``g`` of each
block with that block's own Fisher matrix,

.. math::

    \delta = (S + \lambda I)^{-1} g, \qquad S = O^T O,

where ``O`` is the centred score matrix of the block's samples, scaled so that ``O^T O``
is the covariance (:func:`score_matrix`):

* ``p`` block: ``S_p = Cov_K[d ln p(K)]`` (the classical Fisher matrix over ``K ~ p``);
* ``psi`` block: ``S_psi = E_K Cov_{x|K}[d ln|Psi_K(x)|]`` (the quantum Fisher matrix,
  centred per ``K``; see :func:`score_matrix` for one walker per ``K``).

Solvers are values (:class:`AbstractSRSolver`): :class:`DenseSR` (forms ``S``),
:class:`MinSR` (the Woodbury identity, works in sample space) and :class:`CGSR`
(matrix-free conjugate gradient). :class:`SR` is the explicit-state optimiser that
handles the blocks separately.

Cost, for ``P`` parameters and ``B`` score rows (one per sample; two for a complex
``ln Psi``), e.g. ``P = 10^4 - 10^5``, ``B ~ 10^3``:

==========  ==========================  ==========================  =====================
solver      time                        memory                      use when
==========  ==========================  ==========================  =====================
DenseSR     ``O(B P^2 + P^3)``          ``O(P^2)``: 0.8 GB at       ``P <~ 10^4`` and
                                        ``P = 10^4`` (float64),     ``P <~ B``; reference
                                        80 GB at ``10^5``
MinSR       ``O(B^2 P + B^3)``:         ``O(B P + B^2)``            ``B <~ P`` (the usual
            ``10^11`` flop at           (``O`` itself)              case): exact, a few
            ``B = 10^3, P = 10^5``                                  matmuls
CGSR        ``O(iters B P)``            ``O(B P)`` (never forms     very large ``B`` and
                                        ``S`` or ``O O^T``)         ``P``; inexact
==========  ==========================  ==========================  =====================

``O`` itself is ``B x P`` (0.8 GB at ``B = 10^3, P = 10^5`` in float64) and costs one
backward pass per sample (``jax.vmap(jax.grad(...))``); that usually dominates the solve.
"""

import abc
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PyTree

#: A number, a 0-d array, or a schedule ``step -> value`` (optax style).
ScalarOrSchedule = float | Float[Array, ""] | Callable[[Int[Array, ""]], Float[Array, ""]]


# --------------------------------------------------------------------------- score matrix

def score_matrix(log_fn: Callable[[PyTree, Any], Array], params: PyTree, samples: PyTree,
                 *, weights: Float[Array, " batch"] | None = None,
                 group_size: int | None = None,
                 chunk_size: int | None = None) -> Float[Array, "rows n_params"]:
    r"""The centred, scaled per-sample score matrix ``O`` with ``O^T O`` the Fisher matrix.

    With ``d_i = d ln f(params; s_i) / d params`` (flattened in ``ravel_pytree`` order)
    and weights ``w_i`` (default ``1/B``; normalised to sum to one),

    .. math::

        O_i = \sqrt{w_i}\,\bigl(d_i - \bar d_{g(i)}\bigr), \qquad
        \bar d_g = \frac{\sum_{j \in g} w_j d_j}{\sum_{j \in g} w_j},

    so ``O^T O = sum_g W_g Cov_{w|g}[d]`` with ``W_g`` the weight of group ``g``. By
    default (``group_size=None``) all samples form one group: ``O^T O = Cov[d]``, the
    Fisher matrix of ``p(K)`` for ``log_fn = ln p``. With ``group_size = W`` the samples
    are taken in consecutive groups of ``W`` sharing one ``K`` (``W`` walkers per ``K``),
    and ``O^T O = E_K Cov_{x|K}[d ln|Psi_K(x)|]``, the quantum Fisher matrix.

    **One walker per K.** A per-``K`` mean cannot be estimated from one sample, so with
    ``group_size=None`` the ``psi`` block is centred by the mean over all samples. The
    metric is then the total covariance ``E_K Cov_{x|K}[d] + Cov_K[E_{x|K} d]``: still
    positive semi-definite, larger than the quantum Fisher matrix by the spread of the
    per-``K`` mean scores (extra damping along those directions), and it reduces to it
    when ``p`` concentrates on one ``K`` (ground-state VMC). It matches the gradient's
    baseline, which with one walker per ``K`` is also the mean over all samples.

    **Complex ln Psi.** If ``log_fn`` returns a complex number (a plane-wave Slater
    determinant), the metric is ``Re Cov[d ln Psi^*, d ln Psi]`` =
    ``Cov[d Re ln Psi] + Cov[d Im ln Psi]``; ``O`` then stacks the real-part rows over
    the imaginary-part rows and has ``2 B`` rows. ``O`` is always real.

    Since the rows are centred, the gradients of the same (uniformly weighted, one group)
    samples follow without a second backward pass: the VMC gradient
    ``g_psi = 2 E[(E_loc - mean E_loc) d] = (2 / sqrt(B)) O^T (E_loc - mean E_loc)`` (real
    ``ln Psi``) and the REINFORCE gradient ``g_p = (1 / sqrt(B)) O_p^T (f - mean f)``.

    Arguments:
        log_fn: ``log_fn(params, sample)``, the log-density (``ln p(K)``) or
            log-amplitude (``ln|Psi_K(x)|``) of **one** sample, a real or complex scalar.
        params: the parameter pytree to differentiate (the inexact-array part of a model:
            ``params, static = eqx.partition(model, eqx.is_inexact_array)`` and combine
            inside ``log_fn``).
        samples: a pytree of arrays with a common leading batch axis ``B`` (e.g.
            ``(K, x)``); ``log_fn`` sees one slice.
        weights: optional nonnegative per-sample weights ``(B,)`` (exact enumeration:
            the probabilities; importance sampling: the ratios). Default uniform.
        group_size: centre within consecutive groups of this many samples; ``B`` must be
            a multiple of it. Default: one group.
        chunk_size: differentiate this many samples at a time (``jax.lax.map``), bounding
            the memory of the per-sample backward passes; the same ``O``. Default: all.

    Returns:
        ``O`` of shape ``(B, P)`` (``(2 B, P)`` for complex ``log_fn``), ``P`` the total
        number of scalars in ``params``; same dtype as the parameters.

    Example:
        >>> params, static = eqx.partition(model, eqx.is_inexact_array)
        >>> log_p = lambda prm, k: eqx.combine(prm, static).log_prob(k)
        >>> O_p = score_matrix(log_p, params, ks)                  # (B, P)
    """
    leaves = jax.tree.leaves(samples)
    if not leaves or any(jnp.ndim(a) < 1 for a in leaves):
        raise ValueError("score_matrix: samples must be a pytree of arrays with a leading "
                         "batch axis, got a leaf with no axes (or no leaves).")
    batch = int(jnp.shape(leaves[0])[0])
    if any(int(jnp.shape(a)[0]) != batch for a in leaves):
        raise ValueError("score_matrix: every leaf of samples must share the leading batch "
                         f"axis; got leading sizes {[int(jnp.shape(a)[0]) for a in leaves]}.")
    group = batch if group_size is None else group_size
    if not isinstance(group, int) or group < 1 or batch % group:
        raise ValueError(f"score_matrix: group_size must be a positive integer dividing the "
                         f"batch {batch}, got {group_size!r}.")
    if weights is not None and tuple(jnp.shape(weights)) != (batch,):
        raise ValueError(f"score_matrix: weights must have shape ({batch},) (one per "
                         f"sample), got {tuple(jnp.shape(weights))}.")

    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a)[1:], jnp.result_type(a)),
                       samples)
    out = jax.eval_shape(lambda s: log_fn(params, s), one)
    if out.shape != ():
        raise ValueError("score_matrix: log_fn(params, sample) must return a scalar for one "
                         f"sample, got shape {out.shape}; do not batch inside log_fn.")
    parts = ((jnp.real, jnp.imag) if jnp.issubdtype(out.dtype, jnp.complexfloating)
             else (lambda z: z,))

    def scores(sample):            # (len(parts), P) for one sample
        return jnp.stack([ravel_pytree(jax.grad(lambda p, f=f: f(log_fn(p, sample)))(params))[0]
                          for f in parts])

    if chunk_size is None or chunk_size >= batch:
        d = jax.vmap(scores)(samples)                              # (B, c, P)
    else:
        d = jax.lax.map(scores, samples, batch_size=int(chunk_size))
    c, n_params = d.shape[1], d.shape[2]
    w = (jnp.ones((batch,), d.dtype) if weights is None else jnp.asarray(weights, d.dtype))
    w = w / jnp.sum(w)
    dg = d.reshape(batch // group, group, c, n_params)
    wg = w.reshape(batch // group, group)[:, :, None, None]        # (G, W, 1, 1)
    w_tot = jnp.sum(wg, axis=1, keepdims=True)                     # (G, 1, 1, 1)
    mean = jnp.sum(wg * dg, axis=1, keepdims=True) / jnp.where(w_tot > 0, w_tot, 1)
    o = (jnp.sqrt(wg) * (dg - mean)).reshape(batch, c, n_params)
    return jnp.transpose(o, (1, 0, 2)).reshape(c * batch, n_params)


# --------------------------------------------------------------------------- solvers

class AbstractSRSolver(eqx.Module):
    r"""Solves the damped SR system ``(O^T O + lambda I) delta = g`` for ``delta``.

    ``O`` is a score matrix (:func:`score_matrix`), ``g`` the flattened gradient,
    ``lambda > 0`` the damping (a 0-d array, so a schedule never recompiles). Every solver
    gives the same ``delta`` (up to its tolerance) for any ``g``; they differ in cost
    (see the module docstring). Subclasses implement ``_solve(O, g, damping)``.
    """

    def solve(self, scores: Float[Array, "rows n_params"], g: Float[Array, " n_params"],
              damping: Float[Array, ""]) -> Float[Array, " n_params"]:
        """``(O^T O + damping I)^{-1} g`` with ``O = scores``.

        Arguments:
            scores: the score matrix ``O`` (:func:`score_matrix`), ``(rows, P)``.
            g: the flattened gradient, ``(P,)``.
            damping: ``lambda > 0``, 0-d.

        Returns:
            ``delta``, ``(P,)``, in the dtype of ``O`` and ``g``.

        Example:
            >>> delta = MinSR().solve(O, g, jnp.asarray(1e-3))
        """
        if scores.ndim != 2 or g.ndim != 1 or scores.shape[1] != g.shape[0]:
            raise ValueError(f"{type(self).__name__}.solve expected O of shape (rows, P) and g "
                             f"of shape (P,), got O {tuple(scores.shape)} and g "
                             f"{tuple(g.shape)}.")
        if jnp.ndim(damping) != 0:
            raise ValueError(f"{type(self).__name__}.solve expected a 0-d damping, got shape "
                             f"{tuple(jnp.shape(damping))}.")
        dtype = jnp.result_type(scores, g)
        return self._solve(scores.astype(dtype), g.astype(dtype), jnp.asarray(damping, dtype))

    @abc.abstractmethod
    def _solve(self, o: Array, g: Array, damping: Array) -> Array:
        raise NotImplementedError


class DenseSR(AbstractSRSolver):
    """Forms ``S = O^T O`` (``P x P``) and solves by Cholesky: the reference solver.

    ``O(B P^2 + P^3)`` time, ``O(P^2)`` memory: for ``P <~ 10^4``, and the cheapest
    exact choice when there are more samples than parameters.
    """

    def _solve(self, o, g, damping):
        s = o.T @ o + damping * jnp.eye(o.shape[1], dtype=o.dtype)
        return jsl.cho_solve(jsl.cho_factor(s, lower=True), g)


class MinSR(AbstractSRSolver):
    r"""Exact solve in sample space by the Woodbury identity (minSR, Chen & Heyl 2024).

    .. math::

        (O^T O + \lambda I)^{-1} g = \frac{1}{\lambda}
        \bigl(g - O^T (O O^T + \lambda I)^{-1} O g\bigr),

    exact for any ``g``; for ``g = O^T e`` (the VMC gradient) it equals minSR's
    ``O^T (O O^T + lambda I)^{-1} e``. ``O(B^2 P + B^3)`` time, ``O(B^2)`` extra memory:
    the choice when ``B <~ P``. Needs ``damping > 0`` (the formula divides by it).
    """

    def _solve(self, o, g, damping):
        t = o @ o.T + damping * jnp.eye(o.shape[0], dtype=o.dtype)
        c = jsl.cho_solve(jsl.cho_factor(t, lower=True), o @ g)
        return (g - o.T @ c) / damping


class CGSR(AbstractSRSolver):
    """Matrix-free conjugate gradient on ``(O^T O + lambda I) delta = g``.

    Uses only the products ``O v`` and ``O^T u`` (``4 B P`` flop per iteration); never
    forms ``S`` or ``O O^T``. Stops at ``|r| <= tol |g|`` or after ``maxiter`` iterations
    (``jax.scipy.sparse.linalg.cg``; no convergence flag is reported, so set ``maxiter``
    generously). ``jacobi=True`` preconditions with ``diag(S) + lambda``.

    Attributes:
        maxiter: the most CG iterations (static).
        tol: relative residual tolerance (static).
        jacobi: use the diagonal preconditioner.
    """

    maxiter: int = eqx.field(static=True, default=100)
    tol: float = eqx.field(static=True, default=1e-8)
    jacobi: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if not (isinstance(self.maxiter, int) and self.maxiter >= 1):
            raise ValueError(f"CGSR needs an integer maxiter >= 1, got {self.maxiter!r}")
        if not self.tol > 0:
            raise ValueError(f"CGSR needs tol > 0, got {self.tol!r}")

    def _solve(self, o, g, damping):
        matvec = lambda v: o.T @ (o @ v) + damping * v
        precond = None
        if self.jacobi:
            diag = jnp.sum(o * o, axis=0) + damping
            precond = lambda v: v / diag
        delta, _ = jax.scipy.sparse.linalg.cg(matvec, g, tol=self.tol, maxiter=self.maxiter,
                                              M=precond)
        return delta


# --------------------------------------------------------------------------- optimiser

class SRState(eqx.Module):
    """The SR optimiser's state: the step count (for schedules) and, per block, the
    metric norm ``sqrt(step^T (S + lambda) step)`` of the last step before clipping."""

    count: Int[Array, ""]
    metric_norm: dict[str, Float[Array, ""]]


def _per_block(value, blocks: tuple[str, ...], what: str) -> dict:
    if isinstance(value, Mapping):
        if set(value) != set(blocks):
            raise ValueError(f"SR: {what} given per block must name exactly the blocks "
                             f"{blocks}, got keys {tuple(value)}.")
        return {b: value[b] for b in blocks}
    return {b: value for b in blocks}


def _scalar(value, what: str):
    if callable(value):
        return value
    if jnp.ndim(value) != 0:
        raise ValueError(f"SR: {what} must be a number, a 0-d array or a schedule "
                         f"step -> value, got shape {tuple(jnp.shape(value))}.")
    try:
        concrete = float(value)
    except (jax.errors.ConcretizationTypeError, TypeError):     # traced: cannot check
        concrete = None
    if concrete is not None and not concrete > 0:
        raise ValueError(f"SR: {what} must be > 0, got {concrete}.")
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _at(value, count, dtype):
    return jnp.asarray(value(count) if callable(value) else value, dtype)


class SR(eqx.Module):
    r"""Stochastic reconfiguration over separate parameter blocks, with explicit state.

    For each block ``b`` (default ``"p"``, ``"psi"``) with gradient pytree ``g_b`` and
    score matrix ``O_b`` (:func:`score_matrix`, built over the same parameter pytree):

    .. math::

        \delta_b = (O_b^T O_b + \lambda_b I)^{-1} g_b, \quad
        \Delta\theta_b = -\eta\, c_b\, \delta_b, \quad
        c_b = \min\Bigl(1, \frac{m_b}{\eta \sqrt{\delta_b^T (S_b + \lambda_b)\delta_b}}\Bigr),

    ``eta`` the learning rate and ``m_b`` the optional ``max_norm`` (a trust region: the
    step's length in the metric it was solved in, ``S + lambda I``, is at most ``m_b``;
    ``c_b = 1`` without it). Updates are returned in optax's sign convention (add them:
    ``optax.apply_updates(params, updates)``). The blocks never mix: ``S`` is
    block-diagonal. With ``ln|Psi|`` scores and the VMC gradient ``2 E[dE_loc d]``, one step
    is imaginary-time evolution by ``2 eta``; for ``p`` with ``eta = 1/T`` it moves
    an exponential family straight to its Boltzmann distribution.

    Arguments:
        solver: an :class:`AbstractSRSolver` for every block, or a mapping block -> solver.
        damping: ``lambda > 0``: a number, 0-d array or schedule ``count -> value``; or a
            mapping block -> one of those.
        learning_rate: ``eta``: a number, 0-d array or schedule.
        max_norm: ``None`` (no constraint), a positive number/0-d array/schedule, or a
            mapping block -> one of those.
        blocks: the block names (keys of ``grads`` and ``scores``).

    Example:
        >>> sr = SR(MinSR(), damping=1e-3, learning_rate=0.05, max_norm=0.1)
        >>> state = sr.init()
        >>> updates, state = sr.update({"p": g_p, "psi": g_psi},
        ...                            {"p": O_p, "psi": O_psi}, state)
        >>> params = optax.apply_updates(params, updates)
    """

    solver: dict[str, AbstractSRSolver]
    damping: dict[str, Any]
    learning_rate: Any
    max_norm: dict[str, Any]
    blocks: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, solver: AbstractSRSolver | Mapping[str, AbstractSRSolver], *,
                 damping: ScalarOrSchedule | Mapping[str, ScalarOrSchedule],
                 learning_rate: ScalarOrSchedule,
                 max_norm: ScalarOrSchedule | None | Mapping[str, ScalarOrSchedule | None] = None,
                 blocks: tuple[str, ...] = ("p", "psi")):
        blocks = tuple(blocks)
        if not blocks or len(set(blocks)) != len(blocks) or not all(
                isinstance(b, str) for b in blocks):
            raise ValueError(f"SR: blocks must be a non-empty tuple of distinct names, got "
                             f"{blocks!r}.")
        solvers = _per_block(solver, blocks, "solver")
        bad = [b for b, s in solvers.items() if not isinstance(s, AbstractSRSolver)]
        if bad:
            raise TypeError(f"SR: solver must be an AbstractSRSolver (DenseSR, MinSR, CGSR), "
                            f"got {[type(solvers[b]).__name__ for b in bad]} for {bad}.")
        self.solver = solvers
        self.damping = {b: _scalar(v, "damping")
                        for b, v in _per_block(damping, blocks, "damping").items()}
        self.learning_rate = _scalar(learning_rate, "learning_rate")
        self.max_norm = {b: None if v is None else _scalar(v, "max_norm")
                         for b, v in _per_block(max_norm, blocks, "max_norm").items()}
        self.blocks = blocks

    def init(self, params: PyTree = None) -> SRState:
        """The state at step 0 (``params`` is ignored; accepted for optax symmetry)."""
        zero = jnp.zeros((), jnp.result_type(float))
        return SRState(jnp.asarray(0, jnp.int32), {b: zero for b in self.blocks})

    def update(self, grads: dict[str, PyTree], scores: dict[str, Float[Array, "_ _"]],
               state: SRState) -> tuple[dict[str, PyTree], SRState]:
        """The SR updates (to add to the parameters) and the next state.

        Arguments:
            grads: block -> gradient pytree (the parameter pytree's structure).
            scores: block -> score matrix ``(rows, P_b)`` over the same pytree.
            state: from :meth:`init` or the last update.

        Returns:
            ``(updates, state)``; ``updates[b]`` has the structure of ``grads[b]``.
        """
        for what, tree in (("grads", grads), ("scores", scores)):
            if not isinstance(tree, Mapping) or set(tree) != set(self.blocks):
                keys = tuple(tree) if isinstance(tree, Mapping) else type(tree).__name__
                raise ValueError(f"SR.update: {what} must be a dict with exactly the blocks "
                                 f"{self.blocks}, got {keys}.")
        updates, norms = {}, {}
        for b in self.blocks:
            g, unravel = ravel_pytree(grads[b])
            o = scores[b]
            if o.ndim != 2 or o.shape[1] != g.shape[0]:
                raise ValueError(f"SR.update: block {b!r} has {g.shape[0]} parameters in its "
                                 f"gradient but a score matrix of shape {tuple(o.shape)}; "
                                 "build both over the same parameter pytree.")
            dtype = jnp.result_type(o, g)
            o, g = o.astype(dtype), g.astype(dtype)
            lam = _at(self.damping[b], state.count, dtype)
            step = _at(self.learning_rate, state.count, dtype) * self.solver[b].solve(o, g, lam)
            norm = jnp.sqrt(jnp.sum((o @ step) ** 2) + lam * jnp.sum(step**2))
            if self.max_norm[b] is not None:
                m = _at(self.max_norm[b], state.count, dtype)
                step = step * jnp.minimum(1.0, m / jnp.maximum(norm, jnp.finfo(dtype).tiny))
            updates[b] = unravel(-step)
            norms[b] = norm.astype(state.metric_norm[b].dtype)
        return updates, SRState(state.count + 1, norms)

    def as_optax(self) -> optax.GradientTransformationExtraArgs:
        """This optimiser as an optax transformation taking the score matrices as an extra
        keyword: ``tx.update(grads, state, params, scores=scores)`` (chains with optax)."""
        def update_fn(updates, state, params=None, *, scores, **extra):
            del params, extra
            return self.update(updates, scores, state)
        return optax.GradientTransformationExtraArgs(self.init, update_fn)
