"""Continuous normalizing flows: ``dx/dt = v(t, x)`` solved by Diffrax together with the
log-det ``int div v dt``, the divergence estimators, classical RK4, and a builder from names.

Chen et al., arXiv 1806.07366; Grathwohl et al. (FFJORD), arXiv 1810.01367.
"""

import abc
import math
from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from .._checks import check_shape
from ..nn._velocity import AbstractVelocityField
from ._base import AbstractBijection
from ._random_symmetry import AbstractRandomSymmetry

# ----------------------------------------------------------------------------------------
# Classical fourth-order Runge--Kutta
# ----------------------------------------------------------------------------------------

_rk4_tableau = diffrax.ButcherTableau(
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    # Embedded midpoint rule (b = [0, 1, 0, 0], second order) for adaptive stepping.
    b_error=np.array([1 / 6, -2 / 3, 1 / 3, 1 / 6]),
    c=np.array([0.5, 0.5, 1.0]),
)


class RK4(diffrax.AbstractERK):
    """The classical fourth-order Runge--Kutta method ("the" RK4), as a Diffrax solver.

    Four stages, fourth order. Diffrax has no classical RK4; the Monge--Ampère flow
    (Zhang, E, Wang, arXiv 1809.10188) integrates with it at constant steps. For
    adaptive stepping it carries the embedded midpoint rule (second order, so the error
    estimate is of local order 3); prefer :class:`diffrax.Tsit5` when adapting.

    Example:
        >>> flow = ContinuousFlow(field, solver=RK4(), stepsize_controller=
        ...                       diffrax.ConstantStepSize(), dt0=0.05)
    """

    tableau: ClassVar[diffrax.ButcherTableau] = _rk4_tableau
    interpolation_cls: ClassVar[Callable[..., diffrax.AbstractLocalInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k)

    def order(self, terms):
        del terms
        return 4

    def error_order(self, terms):
        del terms
        return 3


# ----------------------------------------------------------------------------------------
# Divergence estimators
# ----------------------------------------------------------------------------------------

def _forward_quadratic_forms(fn, x, vectors):
    """``fn(x)`` and ``e_k . (J e_k)`` for each row ``e_k`` of ``vectors`` (one
    linearization, the JVPs vmapped)."""
    v, jvp = jax.linearize(fn, x)
    return v, jax.vmap(lambda e: jnp.vdot(e, jvp(e)))(vectors)


def _basis(x):
    return jnp.eye(x.size, dtype=x.dtype).reshape(x.size, *x.shape)


class AbstractDivergence(eqx.Module):
    """How a :class:`ContinuousFlow` gets ``div v = tr dv/dx`` along its path.

    :meth:`velocity_and_divergence` returns the velocity and the (exact or estimated)
    divergence at one point. Stochastic estimators set ``uses_probe`` and draw their
    random probe vectors once per solve with :meth:`sample_probe`; the same probe is used
    at every step, so the integrated log-det is an unbiased estimate of the exact one.
    Subclasses implement the private hook ``_velocity_and_divergence``.
    """

    #: Whether :meth:`velocity_and_divergence` needs probe vectors (then the flow needs
    #: a key).
    uses_probe: ClassVar[bool] = False

    def sample_probe(self, shape: tuple[int, ...], dtype, *, key: PRNGKeyArray
                     ) -> Float[Array, " n_probes *shape"] | None:
        """The probe vectors of one solve (``None`` for an exact estimator)."""
        del shape, dtype, key
        return None

    def velocity_and_divergence(
        self, field: AbstractVelocityField, t: Float[ArrayLike, ""],
        x: Float[Array, "*shape"], probe: Float[Array, " n_probes *shape"] | None = None,
    ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """``v(t, x)`` and the divergence of ``v`` at ``x`` (exact or estimated)."""
        check_shape(x, field.shape, f"{type(self).__name__}.velocity_and_divergence")
        return self._velocity_and_divergence(field, jnp.asarray(t), x, probe)

    @abc.abstractmethod
    def _velocity_and_divergence(self, field, t, x, probe):
        raise NotImplementedError


_EXACT_METHODS = ("auto", "forward", "reverse")
_PROBES = ("gaussian", "rademacher")


class ExactDivergence(AbstractDivergence):
    """The exact divergence ``tr dv/dx``.

    - ``"auto"``: the field's own :meth:`velocity_and_divergence` where
      ``field.analytic_divergence`` is true (a Monge--Ampère Laplacian, say), else
      ``"forward"``;
    - ``"forward"``: the trace of the forward-mode Jacobian, ``d`` JVPs batched into one
      pass after one linearization (``d = x.size``; memory ``d`` times one pass);
    - ``"reverse"``: ``d`` VJPs (rows of the reverse-mode Jacobian), for comparison;
      usually slower than forward mode.

    Example:
        >>> flow = ContinuousFlow(field, divergence=ExactDivergence("forward"))
    """

    method: str = eqx.field(static=True)

    def __init__(self, method: str = "auto"):
        if method not in _EXACT_METHODS:
            raise ValueError(f"ExactDivergence: unknown method {method!r}; allowed: "
                             f"{', '.join(repr(m) for m in _EXACT_METHODS)}")
        self.method = method

    def _velocity_and_divergence(self, field, t, x, probe):
        if self.method == "auto" and field.analytic_divergence:
            return field.velocity_and_divergence(t, x)
        fn = lambda y: field(t, y)  # noqa: E731
        if self.method == "reverse":
            v, vjp = jax.vjp(fn, x)
            return v, jnp.sum(jax.vmap(lambda e: jnp.vdot(e, vjp(e)[0]))(_basis(x)))
        v, diagonal = _forward_quadratic_forms(fn, x, _basis(x))
        return v, jnp.sum(diagonal)


class HutchinsonDivergence(AbstractDivergence):
    """Hutchinson's unbiased estimate ``tr J ~ mean_k eps_k^T J eps_k``.

    ``E[eps eps^T] = I`` for ``probe="gaussian"`` (``eps ~ N(0, I)``, variance
    ``2 |S|_F^2`` per probe, ``S`` the symmetric part of ``J``) and ``"rademacher"``
    (entries ``+-1``, smaller variance ``2 sum_{i != j} S_ij^2``).
    Each probe costs one JVP, taken together with the velocity. The ``n_probes`` probes
    are drawn once per solve (from the key given to the flow) and held fixed along the
    path, so the integrated log-det is ``mean_k eps_k^T (int J dt) eps_k``, unbiased for
    the exact ``int tr J dt``. Without a key, :class:`ContinuousFlow` falls back to the
    exact divergence.

    Example:
        >>> flow = ContinuousFlow(field, divergence=HutchinsonDivergence("rademacher"))
        >>> x, log_det = flow.transform_and_log_det(z, key=jax.random.key(0))
    """

    probe: str = eqx.field(static=True)
    n_probes: int = eqx.field(static=True)
    uses_probe: ClassVar[bool] = True

    def __init__(self, probe: str = "gaussian", n_probes: int = 1):
        if probe not in _PROBES:
            raise ValueError(f"HutchinsonDivergence: unknown probe {probe!r}; allowed: "
                             f"{', '.join(repr(p) for p in _PROBES)}")
        if int(n_probes) < 1:
            raise ValueError(f"HutchinsonDivergence: n_probes must be >= 1, got {n_probes}")
        self.probe, self.n_probes = probe, int(n_probes)

    def sample_probe(self, shape, dtype, *, key):
        full = (self.n_probes, *shape)
        if self.probe == "gaussian":
            return jax.random.normal(key, full, dtype)
        return jax.random.rademacher(key, full, dtype)

    def _velocity_and_divergence(self, field, t, x, probe):
        if probe is None:
            raise ValueError("HutchinsonDivergence needs probe vectors: give the flow a "
                             "key (without one, ContinuousFlow uses ExactDivergence)")
        v, forms = _forward_quadratic_forms(lambda y: field(t, y), x, probe)
        return v, jnp.mean(forms)


def _augmented_vector_field(t, y, args):
    """``d(x, l)/dt = (v(t, x), div v(t, x))``; the field arrives through ``args``."""
    field, estimator, probe = args
    x, _ = y
    v, div = estimator.velocity_and_divergence(field, t, x, probe)
    return v, jnp.asarray(div, x.dtype)


def _batched_vector_field(t, y, args):
    """The augmented field of a whole batch ``(xs, log_dets)``: the per-configuration field
    vmapped over the batch, with the field itself (in ``args``) unbatched."""
    field, estimator, probes = args
    xs, _ = y
    v, div = jax.vmap(lambda x, p: estimator.velocity_and_divergence(field, t, x, p)
                      )(xs, probes)
    return v, jnp.asarray(div, xs.dtype)


_TERM = diffrax.ODETerm(_augmented_vector_field)
_BATCH_TERM = diffrax.ODETerm(_batched_vector_field)


class _WorstSampleNorm(eqx.Module):
    """The error norm of a batched solve: the largest of the per-configuration norms, so
    a step is accepted only if it is accurate enough for every configuration.

    It applies to the batched state ``(xs, log_dets)`` of configurations of ``shape``;
    any other state (``BacksolveAdjoint``'s adjoint ODE, whose parameter cotangents are
    summed over the batch) gets the controller's own norm."""

    norm: Callable
    shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, y):
        if (isinstance(y, tuple) and len(y) == 2 and jnp.ndim(y[0]) == len(self.shape) + 1
                and jnp.shape(y[0])[1:] == self.shape
                and jnp.shape(y[1]) == jnp.shape(y[0])[:1]):
            return jnp.max(jax.vmap(self.norm)(y))
        return self.norm(y)


def _per_sample_error_control(controller, shape: tuple[int, ...]):
    """``controller`` with the error norm of every ``PIDController`` in it replaced by the
    largest per-configuration norm over a batch of configurations of ``shape``."""
    def swap(node):
        if isinstance(node, diffrax.PIDController):
            return eqx.tree_at(lambda c: c.norm, node, _WorstSampleNorm(node.norm, shape))
        return node

    return jax.tree.map(swap, controller,
                        is_leaf=lambda node: isinstance(node, diffrax.PIDController))


# ----------------------------------------------------------------------------------------
# The bijection
# ----------------------------------------------------------------------------------------

def _is_ode_solver(solver) -> bool:
    structure = solver.term_structure
    return isinstance(structure, type) and issubclass(structure, diffrax.AbstractTerm)


_SYMMETRY_STREAM = 0x5EED
_TSIT5 = diffrax.Tsit5()
_PID = diffrax.PIDController(rtol=1e-5, atol=1e-5)
_RECURSIVE = diffrax.RecursiveCheckpointAdjoint()
_EXACT = ExactDivergence()


class ContinuousFlow(AbstractBijection):
    """The time-``t1`` map of ``dx/dt = v(t, x)`` from ``t0``: a continuous normalizing flow.

    Forward ``z -> x`` integrates from ``t0`` to ``t1`` the augmented state
    ``(x, l)``, ``dl/dt = div v(t, x)``, so ``ln |det dx/dz| = int_{t0}^{t1} div v dt``
    (Liouville). The inverse integrates the same system from ``t1`` back to ``t0`` and
    returns ``ln |det dz/dx|`` (the negative). Both directions cost the same.

    Every numerical choice is a field holding a value, swapped by passing another (or
    with ``eqx.tree_at``): the Diffrax ``solver``, ``stepsize_controller`` and ``dt0``,
    the ``adjoint`` (how gradients are taken) and the ``divergence`` estimator. The
    field's parameters reach ``diffrax.diffeqsolve`` through ``args``, so every adjoint
    (``BacksolveAdjoint`` included) differentiates them.

    **Keys.** ``uses_key`` is true. With a :class:`HutchinsonDivergence` and a key, the
    log-det is an unbiased estimate from a probe drawn from the key; **without a key it
    is exact** (so ``ln p`` of a given ``x`` is exact). An exact estimator ignores the
    key. :func:`exact_log_det` swaps the estimator out of a whole model; as the flow takes
    a key either way, a :class:`~thermax.distributions.Transformed` draws the same sample
    from the same key before and after the swap. ``x`` never depends on the key.

    Cost per direction: the solver's number of field evaluations, each ``d = x.size``
    JVPs for the exact forward-mode divergence (one pass, ``d`` times the memory) or
    ``n_probes`` for Hutchinson; an analytic divergence costs what the field says.
    Gradients: ``RecursiveCheckpointAdjoint`` backpropagates through the solver
    (checkpointed, exact gradients of the discretized map); ``BacksolveAdjoint`` solves
    the continuous adjoint backwards (O(1) memory, gradients to solver tolerance);
    ``DirectAdjoint``/``ForwardMode`` also support forward-mode autodiff (``jax.jacfwd``).
    A solve that exceeds ``max_steps`` raises (Diffrax's ``throw=True``).

    **Batches.** :meth:`transform_and_log_det_batch` and :meth:`inverse_and_log_det_batch`
    solve the whole batch as one ODE, of state ``(xs, log_dets)`` of shapes
    ``(batch, *shape)`` and ``(batch,)``, the field vmapped over the batch. The field's
    parameters stay unbatched, so the backward pass sums their cotangents over the batch
    inside its matmuls, instead of carrying one cotangent per configuration through the
    solver's loop as ``jax.vmap`` of :meth:`transform_and_log_det` does (for a wide
    field, gradients several times faster). Each configuration draws its Hutchinson probe from
    its own key exactly as the per-configuration method does. With constant steps the
    results equal the vmapped per-configuration ones to float rounding. With an adaptive
    controller the batch shares its steps, as in FFJORD; but where FFJORD takes the error
    norm over the whole batch, here a ``PIDController``'s norm becomes the largest
    per-configuration norm, so every accepted step passes each configuration's own error
    test: each configuration is solved to the tolerance it would get alone, or tighter,
    never looser. The results agree with the per-configuration solves to the solver's
    tolerance, not to rounding, and a batch costs the steps of its hardest configuration.
    (``BacksolveAdjoint``'s adjoint ODE carries the parameters' cotangents summed over
    the batch, so its error norm is the controller's own, over the whole batch.)

    Args:
        field: the velocity field ``v(t, x)``; the flow acts on ``field.shape``.
        solver: any Diffrax solver of a single ODE term (default ``Tsit5()``; see also
            :class:`RK4`).
        stepsize_controller: ``diffrax.ConstantStepSize()`` (needs ``dt0``) or an adaptive
            one such as ``diffrax.PIDController(rtol, atol)`` (needs a solver with an
            error estimate). Default ``PIDController(rtol=1e-5, atol=1e-5)``.
        dt0: the (initial) step, positive; the inverse uses ``-dt0``. Required for
            constant steps; ``None`` lets an adaptive controller choose.
        adjoint: a Diffrax adjoint (default ``RecursiveCheckpointAdjoint()``).
        divergence: an :class:`AbstractDivergence` (default ``ExactDivergence()``).
        t0: the start of the integration interval (default 0).
        t1: the end of the integration interval, ``t1 > t0`` (default 1).
        max_steps: the most solver steps one solve may take (default 4096).
        symmetry: an optional :class:`AbstractRandomSymmetry` (default ``None``; needs
            constant steps). With one and a key, solver step ``k`` integrates the field
            conjugated by a fresh random symmetry ``g_k``, ``g_k^T v(t, g_k x)``, drawn
            from the key and ``k``: over many steps this averages the field over the
            group at the cost of one evaluation (the original Monge--Ampère code's
            ``-symmetrize``). The map is then random: each key gives its own bijection,
            a composition of conjugated solver steps, with its log-det accurate to the
            solver's order as without the symmetry, and ``ln p`` of a sample is the
            density of the map its key drew, so ``F = E[beta H + ln p]`` stays a
            variational bound and importance weights stay unbiased. (The original draws
            ``g`` at every *evaluation*, which leaves the log-det only first-order
            accurate in the step, biased upward.) Without a key the field is not
            conjugated.
        symmetry_steps: solver steps per random symmetry element (default 1; must divide
            the number of steps). Halving ``dt0`` and doubling this refines the solve of
            the same random map, a discretisation check.

    Example:
        >>> flow = ContinuousFlow(field, solver=RK4(),
        ...                       stepsize_controller=diffrax.ConstantStepSize(), dt0=0.1)
        >>> x, log_det = flow.transform_and_log_det(jnp.zeros(field.shape))
    """

    field: AbstractVelocityField
    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController
    adjoint: diffrax.AbstractAdjoint
    divergence: AbstractDivergence
    dt0: float | None = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    symmetry: AbstractRandomSymmetry | None = None
    symmetry_steps: int = eqx.field(static=True, default=1)
    uses_key: ClassVar[bool] = True

    def __init__(
        self,
        field: AbstractVelocityField,
        *,
        solver: diffrax.AbstractSolver = _TSIT5,
        stepsize_controller: diffrax.AbstractStepSizeController = _PID,
        dt0: float | None = None,
        adjoint: diffrax.AbstractAdjoint = _RECURSIVE,
        divergence: AbstractDivergence = _EXACT,
        t0: float = 0.0,
        t1: float = 1.0,
        max_steps: int = 4096,
        symmetry: AbstractRandomSymmetry | None = None,
        symmetry_steps: int = 1,
    ):
        if not isinstance(field, AbstractVelocityField):
            raise TypeError(f"ContinuousFlow: field must be an AbstractVelocityField, got "
                            f"{type(field).__name__}")
        if not isinstance(solver, diffrax.AbstractSolver) or not _is_ode_solver(solver):
            raise ValueError(f"ContinuousFlow: solver must be a Diffrax solver of one ODE "
                             f"term (e.g. diffrax.Tsit5(), RK4()), got "
                             f"{type(solver).__name__}")
        if not isinstance(stepsize_controller, diffrax.AbstractStepSizeController):
            raise TypeError("ContinuousFlow: stepsize_controller must be a Diffrax step-size "
                            f"controller, got {type(stepsize_controller).__name__}")
        if not isinstance(adjoint, diffrax.AbstractAdjoint):
            raise TypeError(f"ContinuousFlow: adjoint must be a Diffrax adjoint, got "
                            f"{type(adjoint).__name__}")
        if not isinstance(divergence, AbstractDivergence):
            raise TypeError(f"ContinuousFlow: divergence must be an AbstractDivergence "
                            f"(ExactDivergence, HutchinsonDivergence), got "
                            f"{type(divergence).__name__}")
        t0, t1, max_steps = float(t0), float(t1), int(max_steps)
        if not t1 > t0:
            raise ValueError(f"ContinuousFlow: need t1 > t0, got t0={t0}, t1={t1}")
        if max_steps < 1:
            raise ValueError(f"ContinuousFlow: max_steps must be >= 1, got {max_steps}")
        if dt0 is not None:
            dt0 = float(dt0)
            if not dt0 > 0:
                raise ValueError(f"ContinuousFlow: dt0 must be positive (the inverse uses "
                                 f"-dt0 itself), got {dt0}")
        if isinstance(stepsize_controller, diffrax.ConstantStepSize):
            if dt0 is None:
                raise ValueError("ContinuousFlow: constant steps need dt0, the step size")
            n_steps = math.ceil((t1 - t0) / dt0 - 1e-9)
            if n_steps > max_steps:
                raise ValueError(f"ContinuousFlow: constant steps dt0={dt0} over [{t0}, {t1}] "
                                 f"take {n_steps} steps, more than max_steps={max_steps}")
        if (isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController)
                and not isinstance(solver, diffrax.AbstractAdaptiveSolver)):
            raise ValueError(f"ContinuousFlow: {type(solver).__name__} has no error estimate, "
                             f"so it cannot be used with the adaptive "
                             f"{type(stepsize_controller).__name__}; use constant steps or "
                             "an adaptive solver (heun, midpoint, bosh3, tsit5, dopri5, ...)")
        self.field, self.solver, self.stepsize_controller = field, solver, stepsize_controller
        self.adjoint, self.divergence = adjoint, divergence
        if symmetry is not None:
            if not isinstance(stepsize_controller, diffrax.ConstantStepSize):
                raise ValueError("ContinuousFlow: a random symmetry conjugates the field once "
                                 "per step, so it needs constant steps "
                                 "(diffrax.ConstantStepSize())")
            if not isinstance(symmetry, AbstractRandomSymmetry):
                raise TypeError("ContinuousFlow: symmetry must be an AbstractRandomSymmetry "
                                f"(RandomLatticeSymmetry) or None, got "
                                f"{type(symmetry).__name__}")
            if tuple(symmetry.shape) != tuple(field.shape):
                raise ValueError(f"ContinuousFlow: the symmetry acts on shape "
                                 f"{tuple(symmetry.shape)} but the field on "
                                 f"{tuple(field.shape)}")
            n_steps = math.ceil((t1 - t0) / dt0 - 1e-9)
            if int(symmetry_steps) < 1 or n_steps % int(symmetry_steps):
                raise ValueError(f"ContinuousFlow: symmetry_steps must be >= 1 and divide "
                                 f"the {n_steps} steps, got {symmetry_steps}")
        self.dt0, self.t0, self.t1, self.max_steps = dt0, t0, t1, max_steps
        self.shape = tuple(field.shape)
        self.symmetry, self.symmetry_steps = symmetry, int(symmetry_steps)

    def _solve(self, x, key, inverse: bool, batch: bool = False):
        """One solve of one configuration ``x`` (key ``key``) or, with ``batch``, of the
        batch ``x`` (one key per configuration)."""
        estimator, probe = self.divergence, None
        if estimator.uses_probe:
            if key is None:
                estimator = ExactDivergence()
            else:
                draw = lambda k: estimator.sample_probe(self.shape, x.dtype, key=k)  # noqa: E731
                # A batch draws exactly the per-configuration probes, each from its key.
                probe = jax.vmap(draw)(key) if batch else draw(key)
        args = (self.field, estimator, probe)
        if self.symmetry is not None and key is not None:
            return self._solve_conjugated(x, key, args, inverse, batch)
        if batch:
            controller = _per_sample_error_control(self.stepsize_controller, self.shape)
        else:
            controller = self.stepsize_controller
        t0, t1 = (self.t1, self.t0) if inverse else (self.t0, self.t1)
        dt0 = None if self.dt0 is None else (-self.dt0 if inverse else self.dt0)
        return self._integrate(x, args, t0, t1, dt0, controller, self.adjoint,
                               self.max_steps, batch)

    def _integrate(self, x, args, t0, t1, dt0, controller, adjoint, max_steps, batch):
        """``diffeqsolve`` of the augmented state ``(x, log_det)`` from ``t0`` to ``t1``."""
        term = _BATCH_TERM if batch else _TERM
        log_det0 = jnp.zeros(x.shape[:1] if batch else (), x.dtype)
        as_time = lambda t: None if t is None else jnp.asarray(t, x.dtype)  # noqa: E731
        solution = diffrax.diffeqsolve(
            term, self.solver, as_time(t0), as_time(t1), as_time(dt0), (x, log_det0),
            args=args, stepsize_controller=controller, adjoint=adjoint, max_steps=max_steps)
        y, log_det = solution.ys
        return y[-1], log_det[-1]

    def _solve_conjugated(self, x, key, args, inverse, batch):
        """The random-symmetry solve: segment ``k`` (``symmetry_steps`` constant steps) is
        solved for the field conjugated by ``g_k``, drawn from the configuration's key and
        ``k``; the inverse undoes the segments in reverse order with the same ``g_k``."""
        symmetry, per_segment = self.symmetry, self.symmetry_steps
        n_segments = math.ceil((self.t1 - self.t0) / self.dt0 - 1e-9) // per_segment
        dt = (self.t1 - self.t0) / n_segments
        sym_key = jax.random.fold_in(key, _SYMMETRY_STREAM) if not batch else \
            jax.vmap(lambda k: jax.random.fold_in(k, _SYMMETRY_STREAM))(key)
        # A checkpoint per step of a segment is all the recursive adjoint needs.
        adjoint = (diffrax.RecursiveCheckpointAdjoint(checkpoints=per_segment)
                   if isinstance(self.adjoint, diffrax.RecursiveCheckpointAdjoint)
                   else self.adjoint)

        def per_configuration(fn, *xs):
            return jax.vmap(fn)(*xs) if batch else fn(*xs)

        def step(carry, k):
            y, log_det = carry
            element = per_configuration(
                lambda sk: symmetry.sample(key=jax.random.fold_in(sk, k)), sym_key)
            start = self.t0 + k.astype(x.dtype) * dt
            t_from, t_to = (start + dt, start) if inverse else (start, start + dt)
            moved = per_configuration(symmetry.act, element, y)
            moved, increment = self._integrate(
                moved, args, t_from, t_to, (t_to - t_from) / per_segment,
                diffrax.ConstantStepSize(), adjoint, per_segment, batch)
            y = per_configuration(symmetry.act_transpose, element, moved)
            return (y, log_det + increment), None

        steps = jnp.arange(n_segments)
        log_det0 = jnp.zeros(x.shape[:1] if batch else (), x.dtype)
        (y, log_det), _ = jax.lax.scan(step, (x, log_det0), steps[::-1] if inverse else steps)
        return y, log_det

    def _transform_and_log_det(self, z, key=None):
        return self._solve(z, key, inverse=False)

    def _inverse_and_log_det(self, x, key=None):
        return self._solve(x, key, inverse=True)

    def _transform_and_log_det_batch(self, zs, keys):
        return self._solve(zs, keys, inverse=False, batch=True)

    def _inverse_and_log_det_batch(self, xs, keys):
        return self._solve(xs, keys, inverse=True, batch=True)


def exact_log_det(tree: PyTree) -> PyTree:
    """``tree`` with the divergence of every :class:`ContinuousFlow` that estimates it
    stochastically replaced by :class:`ExactDivergence` (``"auto"``).

    For evaluation, importance weights and free-energy estimates where an unbiased
    ``ln p`` per sample is not enough (``exp`` of an unbiased log is biased).

    Example:
        >>> exact_model = exact_log_det(model)   # model: a Transformed with CNF layers
    """
    def swap(node):
        if isinstance(node, ContinuousFlow) and node.divergence.uses_probe:
            return eqx.tree_at(lambda f: f.divergence, node, ExactDivergence())
        return node

    return jax.tree.map(swap, tree, is_leaf=lambda node: isinstance(node, ContinuousFlow))


# ----------------------------------------------------------------------------------------
# The builder from names
# ----------------------------------------------------------------------------------------

#: Diffrax ODE solvers by name (all explicit Runge--Kutta; ``euler`` has no error
#: estimate, so constant steps only).
SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "rk4": RK4,
    "bosh3": diffrax.Bosh3,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
}

#: Diffrax adjoints by name: ``recursive`` (backprop through the solver, checkpointed),
#: ``backsolve`` (continuous adjoint), ``direct`` (also supports forward mode, memory and
#: compile time grow with ``max_steps``), ``forward`` (forward-mode autodiff only).
ADJOINTS: dict[str, Callable[[], diffrax.AbstractAdjoint]] = {
    "recursive": diffrax.RecursiveCheckpointAdjoint,
    "backsolve": diffrax.BacksolveAdjoint,
    "direct": diffrax.DirectAdjoint,
    "forward": diffrax.ForwardMode,
}

CONTROLLERS = ("constant", "pid")
DIVERGENCES = ("exact", "hutchinson")


def _choice(kind: str, name: str, allowed) -> None:
    if name not in allowed:
        raise ValueError(f"continuous_flow: unknown {kind} {name!r}; allowed: "
                         f"{', '.join(repr(a) for a in allowed)}")


def continuous_flow(field: AbstractVelocityField, *, solver: str = "tsit5",
                    steps: int | None = None, controller: str = "constant",
                    rtol: float | None = None, atol: float | None = None,
                    adjoint: str = "recursive", divergence: str = "exact",
                    probe: str = "gaussian", n_probes: int = 1, t1: float = 1.0,
                    max_steps: int | None = None,
                    symmetry: AbstractRandomSymmetry | None = None) -> ContinuousFlow:
    """A :class:`ContinuousFlow` on ``[0, t1]`` from names (for the command line).

    Every name is checked before anything is built; an unknown one raises a
    ``ValueError`` listing the allowed ones.

    Args:
        field: the velocity field.
        solver: a key of :data:`SOLVERS`.
        steps: the number of steps (``controller="constant"``: required, ``>= 1``, step
            ``t1 / steps``; ``"pid"``: optional, sets the initial step).
        controller: ``"constant"`` or ``"pid"`` (adaptive; needs ``rtol`` and ``atol``
            and a solver with an error estimate, i.e. not ``euler``).
        rtol: relative tolerance of the ``"pid"`` controller.
        atol: absolute tolerance of the ``"pid"`` controller.
        adjoint: a key of :data:`ADJOINTS`.
        divergence: ``"exact"`` (:class:`ExactDivergence`, ``"auto"``) or
            ``"hutchinson"`` (:class:`HutchinsonDivergence` with ``probe`` and
            ``n_probes``).
        probe: ``"gaussian"`` or ``"rademacher"``.
        n_probes: Hutchinson probes per solve.
        t1: the integration time, ``> 0``.
        max_steps: the step limit (default: ``steps`` for constant steps, else 4096).
        symmetry: a random symmetry conjugating the field at each evaluation (see
            :class:`ContinuousFlow`), or ``None``.

    Example:
        >>> flow = continuous_flow(field, solver="rk4", steps=20,
        ...                        divergence="hutchinson", probe="rademacher")
    """
    _choice("solver", solver, SOLVERS)
    _choice("controller", controller, CONTROLLERS)
    _choice("adjoint", adjoint, ADJOINTS)
    _choice("divergence", divergence, DIVERGENCES)
    _choice("probe", probe, _PROBES)
    t1 = float(t1)
    if not t1 > 0:
        raise ValueError(f"continuous_flow: t1 must be positive, got {t1}")
    if steps is not None and int(steps) < 1:
        raise ValueError(f"continuous_flow: steps must be >= 1, got {steps}")
    if controller == "constant":
        if steps is None:
            raise ValueError("continuous_flow: controller 'constant' needs steps >= 1 (the "
                             "number of steps), got steps=None")
        if rtol is not None or atol is not None:
            raise ValueError("continuous_flow: rtol/atol are only used by the adaptive "
                             "controller 'pid', not by 'constant'")
        stepsize_controller: diffrax.AbstractStepSizeController = diffrax.ConstantStepSize()
        max_steps = int(steps) if max_steps is None else max_steps
    else:
        if rtol is None or atol is None:
            raise ValueError(f"continuous_flow: an adaptive controller ('pid') needs "
                             f"tolerances: give both rtol and atol, got rtol={rtol}, "
                             f"atol={atol}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"continuous_flow: rtol and atol must be positive, got "
                             f"rtol={rtol}, atol={atol}")
        if not isinstance(SOLVERS[solver](), diffrax.AbstractAdaptiveSolver):
            adaptive = [n for n, s in SOLVERS.items()
                        if isinstance(s(), diffrax.AbstractAdaptiveSolver)]
            raise ValueError(f"continuous_flow: solver {solver!r} has no error estimate, so "
                             f"it cannot adapt its steps; with controller 'pid' use one of "
                             f"{', '.join(repr(a) for a in adaptive)}")
        stepsize_controller = diffrax.PIDController(rtol=float(rtol), atol=float(atol))
        max_steps = 4096 if max_steps is None else max_steps
    estimator: AbstractDivergence = (ExactDivergence() if divergence == "exact"
                                     else HutchinsonDivergence(probe, n_probes))
    if adjoint == "recursive" and controller == "constant":
        # a checkpoint per step: each step is recomputed once in the backward pass instead
        # of the O(log) recomputations of the default schedule (memory: one state per step;
        # 0.62 -> 0.50 s per epoch for the Monge-Ampere benchmark)
        adjoint_value = diffrax.RecursiveCheckpointAdjoint(checkpoints=max_steps)
    else:
        adjoint_value = ADJOINTS[adjoint]()
    return ContinuousFlow(field, solver=SOLVERS[solver](), stepsize_controller=stepsize_controller,
                          dt0=None if steps is None else t1 / int(steps),
                          adjoint=adjoint_value, divergence=estimator, t0=0.0, t1=t1,
                          max_steps=max_steps, symmetry=symmetry)
