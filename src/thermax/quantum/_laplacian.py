r"""Laplacian methods: the gradient and Laplacian of a scalar function, and the kinetic energy.

The local kinetic energy of a real wavefunction ``Psi = sign * exp(ln|Psi|)`` is

.. math::

    T_{\rm loc}(x) = -\frac{(\hbar^2/m)}{2}\,\frac{\nabla^2\Psi}{\Psi}
                   = -c\,\bigl(\nabla^2 \ln|\Psi| + |\nabla \ln|\Psi||^2\bigr),

with ``c = 1/2`` in Hartree units (quantum dots) and ``c = 1`` in Rydberg units (the
electron gas); see :func:`kinetic_energy`. The sign of ``Psi`` is constant between nodes,
so it does not enter. A complex wavefunction (plane waves with a twist) passes the complex
``ln Psi``; every method then differentiates its real and imaginary parts together. The
Laplacian dominates the cost of variational Monte Carlo, so how it is computed is a
component, a value of :class:`AbstractLaplacian`:

==========================  ==================================  ==========================
method                      cost for ``d = n * dim`` coords      notes
==========================  ==================================  ==========================
:class:`LoopLaplacian`      one linearisation of ``grad f``,     exact; ``vmapped=False``
                            then ``d`` tangent (JVP) passes      loops (memory of one
                                                                 tangent), ``vmapped=True``
                                                                 batches them (``d`` x the
                                                                 memory, more parallel)
:class:`ForwardLaplacian`   one forward pass carrying value,     exact; the forward
                            (dense or sparse) ``d``-vector       Laplacian (Li et al.,
                            Jacobian and Laplacian through       Nat. Mach. Intell. 2024)
                            every primitive (``folx``), or       via ``folx`` (scans
                            ``d`` batched second-order           unrolled), falling back
                            directional derivatives sharing      to forward-over-forward;
                            one primal (``backend="forward"``)   the fastest exact one
:class:`HutchinsonLaplacian`  one linearisation, ``n_probes``    unbiased estimate
                            tangent passes                       ``E[v^T H v]``; needs
                                                                 ``key``
==========================  ==================================  ==========================

Every method returns ``(grad f(x), laplacian f(x))`` for one configuration ``x`` of any
shape (gradient with the shape of ``x``); batch with ``jax.vmap``. All are pure functions
of their inputs and can be differentiated again (e.g. with respect to parameters that ``f``
closes over). :func:`unroll_scans` (used by the folx backend) rewrites a function's
``lax.scan`` s into their iterations.
"""

import abc
import contextlib
import logging
import warnings
from collections.abc import Callable
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Inexact, PRNGKeyArray

#: A scalar function of one configuration: real (``ln|Psi|``) or complex (``ln Psi``).
ScalarFn = Callable[[Float[Array, "*shape"]], Inexact[Array, ""]]


def _flat(f: ScalarFn, x: Array) -> tuple[Callable[[Array], Array], Array]:
    """``f`` as a function of the flattened configuration, and the flattened ``x``."""
    shape = x.shape
    return (lambda v: f(v.reshape(shape))), x.reshape(-1)


class AbstractLaplacian(eqx.Module):
    r"""A way of computing ``(grad f(x), laplacian f(x))`` for a scalar ``f``.

    .. math::

        \nabla^2 f(x) = \sum_{i=1}^{d} \frac{\partial^2 f}{\partial x_i^2},
        \qquad d = \text{x.size}.

    Subclasses set the class variable ``needs_key`` and implement the private hook
    ``_grad_and_laplacian(g, v, key)`` on the flattened configuration ``v`` (shape
    ``(d,)``), returning ``(grad (d,), laplacian ())``. Call the public ``__call__``.
    """

    needs_key: eqx.AbstractClassVar[bool]

    def __call__(self, f: ScalarFn, x: Float[Array, "*shape"], *,
                 key: PRNGKeyArray | None = None
                 ) -> tuple[Inexact[Array, "*shape"], Inexact[Array, ""]]:
        """The gradient (shape of ``x``) and the scalar Laplacian of ``f`` at ``x``.

        Args:
            f: a scalar function of one configuration: real (``ln|Psi|``) or complex
                (``ln Psi = ln|Psi| + i arg Psi`` of a complex wavefunction; then the real
                and imaginary parts are differentiated together, in one pass of the method
                with two outputs); may close over parameters.
            x: one configuration, any shape (``(n, dim)`` for particles), real.
            key: a PRNG key, required by stochastic methods (:class:`HutchinsonLaplacian`)
                and ignored by exact ones.

        Returns:
            ``(grad, laplacian)``: ``grad`` has the shape of ``x``; ``laplacian`` is 0-d;
            both complex when ``f`` is.
        """
        name = type(self).__name__
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name}: x must be a real floating array, got dtype {x.dtype}")
        out = jax.eval_shape(f, x)
        if not hasattr(out, "shape") or out.shape != () or not jnp.issubdtype(
                out.dtype, jnp.inexact):
            raise ValueError(f"{name}: f must return a real or complex 0-d array (e.g. "
                             f"ln|Psi|), got {getattr(out, 'shape', type(out))} of dtype "
                             f"{getattr(out, 'dtype', None)}")
        if self.needs_key and key is None:
            raise ValueError(f"{name} is a stochastic estimate and needs key=...; pass a "
                             "fresh jax.random.key (split it per configuration when batching)")
        g, v = _flat(f, x)
        if jnp.issubdtype(out.dtype, jnp.complexfloating):
            jac, lap = self._grad_and_laplacian(
                lambda u: (lambda c: jnp.stack([c.real, c.imag]))(g(u)), v, key)
            return (jac[0] + 1j * jac[1]).reshape(x.shape), lap[0] + 1j * lap[1]
        jac, lap = self._grad_and_laplacian(lambda u: g(u)[None], v, key)
        return jac[0].reshape(x.shape), lap[0]

    @abc.abstractmethod
    def _grad_and_laplacian(self, g: Callable[[Array], Array], v: Array,
                            key: PRNGKeyArray | None) -> tuple[Array, Array]:
        """``(Jacobian (c, d), Laplacians (c,))`` of ``g: (d,) -> (c,)`` (``c`` = 1 or 2
        outputs: a real function, or the real and imaginary parts of a complex one)."""
        raise NotImplementedError


def _reverse_jacobian(g: Callable[[Array], Array], v: Array) -> Callable[[Array], Array]:
    """``u -> dg/du`` of shape ``(c, d)`` by reverse mode: ``jax.grad`` for one output
    (the real case, no batching of cotangents), ``jax.jacrev`` for two (complex ``f``)."""
    if jax.eval_shape(g, v).shape == (1,):
        return lambda u: jax.grad(lambda w: g(w)[0])(u)[None]
    return jax.jacrev(g)


class LoopLaplacian(AbstractLaplacian):
    r"""Exact Laplacian as the trace of the Hessian, one coordinate at a time.

    ``grad f`` is linearised once at ``x`` (``jax.linearize``: forward-over-reverse), then
    the diagonal ``H_ii = e_i . (H e_i)`` is accumulated from ``d`` Hessian-vector products
    with the basis vectors ``e_i`` (FermiNet's exact kinetic energy). Cost: ``d`` tangent
    passes through the backward graph, ``O(d)`` times the cost of ``grad f``.

    Attributes:
        vmapped: ``False`` (default) loops with ``lax.fori_loop``: memory of one tangent
            pass, sequential; ``True`` maps over all basis vectors at once with ``vmap``:
            ``d`` times the intermediate memory, but one wide parallel pass (it can pay on
            accelerators for small ``d``; on CPU it measured 2-3x slower than the loop).

    Example:
        >>> f = lambda x: -0.5 * jnp.sum(x**2)
        >>> grad, lap = LoopLaplacian()(f, jnp.ones((2, 2)))   # lap = -4
    """

    vmapped: bool = eqx.field(static=True, default=False)
    needs_key: ClassVar[bool] = False

    def _grad_and_laplacian(self, g, v, key):
        jac, hvp = jax.linearize(_reverse_jacobian(g, v), v)   # (c, d); hvp(e): (c, d)
        d, c = v.size, jac.shape[0]
        if self.vmapped:
            hessians = jax.vmap(hvp)(jnp.eye(d, dtype=v.dtype))     # (d, c, d), all at once
            return jac, jnp.einsum("ici->c", hessians)

        def body(i, acc):
            e = jnp.zeros_like(v).at[i].set(1)
            return acc + hvp(e)[:, i]

        return jac, jax.lax.fori_loop(0, d, body, jnp.zeros((c,), v.dtype))


def _sub_jaxprs(params: dict):
    """The jaxprs held in an equation's parameters (a ``scan`` body, ``cond`` branches, a
    ``jit``'s function), as ``jax.extend.core.jaxprs_in_params`` gives them from jax 0.10 on;
    spelled out here so that jax 0.9 works too."""
    from jax.extend.core import ClosedJaxpr, Jaxpr

    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, Jaxpr):
                yield item


def _has_scan(jaxpr) -> bool:
    """Whether a jaxpr holds a ``scan``, at any depth of nesting."""
    return any(eqn.primitive.name == "scan"
               or any(_has_scan(sub) for sub in _sub_jaxprs(eqn.params))
               for eqn in jaxpr.eqns)


def _eval_unrolled(jaxpr, consts, *args):
    """Evaluate ``jaxpr`` with every ``scan`` unrolled into its iterations.

    Each ``scan`` equation becomes ``length`` inline evaluations of its body (outputs
    stacked on axis 0, ``reverse`` honoured); a ``jit`` equation is inlined when it holds
    a scan (so nested scans unroll too) and bound unchanged otherwise (so ``folx`` still
    sees named functions such as ``slogdet`` that it has custom rules for); every other
    equation is bound unchanged. Tracing this under another transformation gives the same
    primitives as ``jaxpr`` minus the scans."""
    from jax.extend.core import Literal

    env = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for var, val in zip(jaxpr.constvars, consts, strict=True):
        env[var] = val
    for var, val in zip(jaxpr.invars, args, strict=True):
        env[var] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "scan":
            outvals = _unrolled_scan(eqn.params, invals)
        elif name in ("jit", "pjit") and _has_scan(eqn.params["jaxpr"].jaxpr):
            closed = eqn.params["jaxpr"]
            outvals = _eval_unrolled(closed.jaxpr, closed.consts, *invals)
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            subfuns, params = ((), params) if isinstance(params, dict) else params
            outvals = eqn.primitive.bind(*subfuns, *invals, **params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
        for var, val in zip(eqn.outvars, outvals, strict=True):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def _unrolled_scan(params, invals):
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    body, length = params["jaxpr"], params["length"]
    consts, carry = invals[:n_consts], invals[n_consts:n_consts + n_carry]
    xs = invals[n_consts + n_carry:]
    steps = reversed(range(length)) if params["reverse"] else range(length)
    ys = [None] * length
    for i in steps:
        out = _eval_unrolled(body.jaxpr, body.consts, *consts, *carry, *[x[i] for x in xs])
        carry, ys[i] = out[:n_carry], out[n_carry:]
    n_ys = len(body.jaxpr.outvars) - n_carry
    return [*carry, *[jnp.stack([y[k] for y in ys]) for k in range(n_ys)]]


def unroll_scans(f: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """``f`` with every ``lax.scan`` it traces to unrolled (same values and derivatives).

    Used by :class:`ForwardLaplacian` before handing ``f`` to ``folx``, whose ``scan`` rule
    fails on scans whose carry changes Jacobian sparsity between iterations and mis-stacks
    the Jacobians of input-dependent scanned outputs (e.g. the per-layer log-dets of a
    :class:`~thermax.bijections.Scan` flow). Costs compile time linear in the number of
    iterations, not run time.

    Example:
        >>> g = unroll_scans(lambda x: jax.lax.scan(lambda c, _: (c * c, c), x, length=3)[0])
    """
    def unrolled(v):
        closed = jax.make_jaxpr(f)(v)
        if not _has_scan(closed.jaxpr):
            return f(v)
        (out,) = _eval_unrolled(closed.jaxpr, closed.consts, v)
        return out

    return unrolled


class ForwardLaplacian(AbstractLaplacian):
    r"""Exact Laplacian in one forward pass: the forward Laplacian (Li et al., Nat. Mach.
    Intell. 6, 209 (2024)) via ``folx``, or batched forward-over-forward derivatives.

    The forward Laplacian propagates, through every primitive, the triple (value,
    Jacobian with respect to the ``d`` inputs, Laplacian): for ``y = phi(u)``,

    .. math::

        \nabla y = \phi'(u)\nabla u, \qquad
        \nabla^2 y = \phi'(u)\nabla^2 u + \phi''(u)\,|\nabla u|^2,

    (and the matrix analogues for linear maps and determinants), so there is no backward
    pass and no loop over coordinates: ``d + 2`` numbers per intermediate. The
    ``"forward"`` backend instead maps ``jax.vmap`` over the ``d`` unit vectors ``e_i``
    of a second-order directional derivative (``jvp`` of ``jvp``),

    .. math::

        \partial_i f = \frac{d}{dt} f(x + t e_i)\Big|_0,\qquad
        \nabla^2 f = \sum_i \frac{d^2}{dt^2} f(x + t e_i)\Big|_0,

    whose primal is computed once (``vmap`` batches only what depends on ``e_i``):
    ``3 d + 1`` numbers per intermediate, no custom rules, any JAX-differentiable ``f``.

    Backends (``backend``, static):

    * ``"folx"``: ``folx.forward_laplacian`` (the FermiNet/psiformer implementation: custom
      rules for ``slogdet`` and other linear algebra, optional sparse Jacobians). Every
      ``lax.scan`` in ``f`` is first unrolled (:func:`unroll_scans`): folx's scan rule
      cannot handle a carry whose Jacobian sparsity changes between iterations ("Jacobian
      sparsity mismatch in scan") and mis-stacks the Jacobians of input-dependent scanned
      outputs ("linearized function called on tangent values inconsistent with the
      original primal values") -- both met by :func:`~thermax.bijections.ferminet_flow`
      (a :class:`~thermax.bijections.Scan` whose layers return log-dets). Unrolling costs
      compile time linear in the number of iterations, not run time.
    * ``"forward"``: the batched forward-over-forward derivatives above; no dependency.
    * ``"auto"`` (default): ``"folx"``; if folx cannot trace ``f`` (a primitive without a
      rule, e.g. the ``while_loop`` of an adaptive ODE solver), a ``UserWarning`` names
      the error and ``"forward"`` is used. The choice is made while tracing, once per jit.

    Measured on CPU (``benchmarks/bench_laplacian.py``): on
    ``FlowSlater(ferminet_flow(...))`` dense folx (``sparsity_threshold=0``) is the fastest
    exact method; sparse folx helps only where intermediates depend on few inputs
    (pairwise features before any mixing), and costs more compile time.

    Attributes:
        backend: ``"auto"``, ``"folx"`` or ``"forward"`` (see above).
        sparsity_threshold: folx's sparsity option (static; ignored by ``"forward"``): ``0``
            (default) dense Jacobians throughout; a fraction in ``(0, 1)``: propagate
            sparse Jacobians while the number of inputs an intermediate depends on is below
            that fraction of ``d`` (folx recommends ``0.6``); ``>= 1``: the same as an
            absolute count.

    Example:
        >>> f = lambda x: jnp.linalg.slogdet(x)[1]
        >>> grad, lap = ForwardLaplacian()(f, jnp.eye(3) + 0.1)
    """

    backend: Literal["auto", "folx", "forward"] = eqx.field(static=True, default="auto")
    sparsity_threshold: int | float = eqx.field(static=True, default=0)
    needs_key: ClassVar[bool] = False

    def __check_init__(self):
        if self.backend not in ("auto", "folx", "forward"):
            raise ValueError(f"ForwardLaplacian: backend must be 'auto', 'folx' or "
                             f"'forward', got {self.backend!r}")
        if isinstance(self.sparsity_threshold, bool) or not isinstance(
                self.sparsity_threshold, int | float) or not self.sparsity_threshold >= 0:
            raise ValueError("ForwardLaplacian: sparsity_threshold must be a number >= 0 "
                             "(0 = dense, a fraction in (0, 1), or an absolute count >= 1), "
                             f"got {self.sparsity_threshold!r}")

    def _grad_and_laplacian(self, g, v, key):
        if self.backend == "forward":
            return _forward_over_forward(g, v)
        if self.backend == "folx":
            return _folx(g, v, self.sparsity_threshold)
        try:
            with _quiet_folx():
                return _folx(g, v, self.sparsity_threshold)
        except Exception as error:  # noqa: BLE001 - any folx failure: use the fallback
            warnings.warn(f"ForwardLaplacian(backend='auto'): folx could not trace the "
                          f"function ({type(error).__name__}: {str(error)[:200]}); using "
                          "the 'forward' backend (batched forward-over-forward)",
                          stacklevel=3)
            return _forward_over_forward(g, v)


def _folx(g, v, sparsity_threshold):
    import folx  # imported lazily: only this backend needs it

    # no jit here: jit at the edges (folx's own jit would retrace per call). folx
    # broadcasts ranks implicitly inside its rules, so allow that while it traces.
    with jax.numpy_rank_promotion("allow"):
        out = folx.forward_laplacian(unroll_scans(g), sparsity_threshold=sparsity_threshold,
                                     disable_jit=True)(v)
    return out.jacobian.dense_array.reshape(v.shape + out.laplacian.shape).T, out.laplacian


def _forward_over_forward(g, v):
    def directional(e):  # (d/dt f(v + t e), d^2/dt^2 f(v + t e)) at t = 0
        return jax.jvp(lambda u: jax.jvp(g, (u,), (e,))[1], (v,), (e,))

    grad, second = jax.vmap(directional)(jnp.eye(v.size, dtype=v.dtype))   # (d, c) each
    return grad.T, jnp.sum(second, axis=0)


class _DropFolxRecords(logging.Filter):
    def filter(self, record):
        return "folx" not in record.pathname


@contextlib.contextmanager
def _quiet_folx():
    """Silence folx's ``logging.error`` reports (root logger) while ``"auto"`` tries it."""
    root, drop = logging.getLogger(), _DropFolxRecords()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


class HutchinsonLaplacian(AbstractLaplacian):
    r"""Unbiased stochastic Laplacian (Hutchinson's trace estimator of the Hessian).

    .. math::

        \nabla^2 f(x) = \mathrm{tr}\,H = \mathbb{E}_v[v^T H v]
        \approx \frac{1}{P}\sum_{p=1}^{P} v_p^T H v_p,
        \qquad \mathbb{E}[v v^T] = I,

    with ``P = n_probes`` Gaussian (``v ~ N(0, I)``) or Rademacher (``v_i = +-1``) probes;
    each costs one Hessian-vector product after one linearisation of ``grad f``. The
    gradient is exact. Rademacher probes have the lower variance
    (``2 sum_{i != j} H_ij^2`` against ``2 ||H||_F^2`` for Gaussian ones) and are exact for
    a diagonal Hessian. An unbiased Laplacian keeps the mean of the local energy unbiased
    but adds variance to it, and the variational gradient of VMC multiplies it with the
    score, so the estimate should be drawn independently of anything it is correlated with.

    Attributes:
        n_probes: probes per call (static, ``>= 1``).
        probe: ``"gaussian"`` or ``"rademacher"``.

    Example:
        >>> f = lambda x: -0.5 * jnp.sum(x**2)
        >>> lap_method = HutchinsonLaplacian(8, probe="rademacher")
        >>> grad, lap = lap_method(f, jnp.ones((2, 2)), key=jax.random.key(0))
    """

    n_probes: int = eqx.field(static=True, default=1)
    probe: Literal["gaussian", "rademacher"] = eqx.field(static=True, default="gaussian")
    needs_key: ClassVar[bool] = True

    def __check_init__(self):
        if isinstance(self.n_probes, bool) or not isinstance(self.n_probes, int) or (
                self.n_probes < 1):
            raise ValueError(f"HutchinsonLaplacian: n_probes must be an int >= 1, got "
                             f"{self.n_probes!r}")
        if self.probe not in ("gaussian", "rademacher"):
            raise ValueError(f"HutchinsonLaplacian: probe must be 'gaussian' or "
                             f"'rademacher', got {self.probe!r}")

    def _grad_and_laplacian(self, g, v, key):
        shape = (self.n_probes, v.size)
        if self.probe == "gaussian":
            probes = jax.random.normal(key, shape, v.dtype)
        else:
            probes = jax.random.rademacher(key, shape, v.dtype)
        jac, hvp = jax.linearize(_reverse_jacobian(g, v), v)    # (c, d); hvp(p): (c, d)
        quad = jax.vmap(lambda p: hvp(p) @ p)(probes)           # (n_probes, c)
        return jac, jnp.mean(quad, axis=0)


def kinetic_energy(log_psi: ScalarFn, x: Float[Array, "n dim"], method: AbstractLaplacian,
                   *, key: PRNGKeyArray | None = None,
                   mass_factor: float | Float[ArrayLike, ""] = 0.5) -> Inexact[Array, ""]:
    r"""The local kinetic energy ``-c (lap ln Psi + (grad ln Psi)^2)`` of one configuration.

    .. math::

        T_{\rm loc}(x) = \frac{-c\,\nabla^2\Psi(x)}{\Psi(x)}
        = -c\left(\nabla^2\ln\Psi + \nabla\ln\Psi\cdot\nabla\ln\Psi\right),

    summed over all particles and coordinates. For a real ``Psi`` pass ``ln|Psi|`` (its
    sign is constant between nodes and does not enter) and the result is real. For a
    complex ``Psi`` (plane waves with a twist) pass ``ln Psi = ln|Psi| + i theta``; the
    result is complex,

    .. math::

        \mathrm{Re}\,T_{\rm loc} = -c\left(\nabla^2\ln|\Psi| + |\nabla\ln|\Psi||^2
            - |\nabla\theta|^2\right),\qquad
        \mathrm{Im}\,T_{\rm loc} = -c\left(\nabla^2\theta
            + 2\nabla\ln|\Psi|\cdot\nabla\theta\right),

    whose real part averages to the kinetic energy; the imaginary part averages to zero
    but enters the variational gradient of a complex wavefunction.

    Args:
        log_psi: ``ln|Psi|`` (real) or ``ln Psi`` (complex) of one configuration
            ``(n, dim)``.
        x: one configuration ``(n, dim)``.
        method: a Laplacian method (:class:`LoopLaplacian`, :class:`ForwardLaplacian`,
            :class:`HutchinsonLaplacian`).
        key: PRNG key for a stochastic method (ignored by exact ones).
        mass_factor: ``c = hbar^2 / (2m)`` in the units used: ``1/2`` in Hartree units
            (the default; quantum dots), ``1`` in Rydberg units (the electron gas).

    Returns:
        The 0-d local kinetic energy (complex for a complex ``log_psi``).

    Example:
        >>> log_psi = lambda x: -0.5 * jnp.sum(x**2)          # 2D oscillator, omega = 1
        >>> kinetic_energy(log_psi, jnp.zeros((1, 2)), LoopLaplacian())   # 1.0
    """
    grad, lap = method(log_psi, x, key=key)
    c = jnp.asarray(mass_factor, dtype=jnp.finfo(lap.dtype).dtype)
    return -c * (lap + jnp.sum(grad * grad))
