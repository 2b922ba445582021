"""Batch methods of bijections that solve a continuous flow once per batch: the batched
solve of :class:`ContinuousFlow` and the composites holding one (Chain, Scan, Invert) equal
``jax.vmap`` of the per-configuration methods with the same keys, values and parameter
gradients, in both directions; an adaptive batch solve agrees with the per-configuration
solves to tolerance and is as accurate for each configuration; bad batches raise.

The default (vmap) batch methods of every other bijection are checked by the registry in
tests/bijections/test_bijections.py. Everything runs in float64 (tests/conftest.py).
"""

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturb

from thermax.bijections import (
    RK4,
    Chain,
    ContinuousFlow,
    ExactDivergence,
    HutchinsonDivergence,
    Invert,
    Scale,
    Scan,
)
from thermax.nn import MLPVelocity, MongeAmpereField, OneHiddenLayerPotential

SHAPE = (2, 2)
BATCH = 3


def _rk4(field, steps=4, divergence=None, solver=None):
    return ContinuousFlow(field, solver=RK4() if solver is None else solver,
                          stepsize_controller=diffrax.ConstantStepSize(), dt0=1.0 / steps,
                          divergence=ExactDivergence() if divergence is None else divergence)


def _mlp(key):
    k_init, k_noise = jax.random.split(key)
    return perturb(MLPVelocity(SHAPE, width=5, depth=1, key=k_init), key=k_noise)


def _monge_ampere(key):
    k_init, k_noise = jax.random.split(key)
    potential = OneHiddenLayerPotential(SHAPE, hidden=6, z2=False, key=k_init)
    return MongeAmpereField(perturb(potential, key=k_noise))


def _hutchinson(key, solver=None):
    return _rk4(_mlp(key), divergence=HutchinsonDivergence("rademacher", n_probes=2),
                solver=solver)


def _hutchinson_euler(key):  # for the composites: Euler compiles twice as fast as RK4
    return _hutchinson(key, solver=diffrax.Euler())


#: Bijections holding continuous flows, by name: ``constructor(key)``.
FLOWS = {
    "hutchinson": _hutchinson,
    "monge-ampere-analytic": lambda key: _rk4(_monge_ampere(key)),
    "chain": lambda key: Chain([Scale(SHAPE, 0.2), _hutchinson_euler(key)]),
    "scan": lambda key: Scan.build(_hutchinson_euler, 2, key=key),
    "invert": lambda key: Invert(_hutchinson_euler(key)),
}


def _loss(outputs, weights):
    """A scalar that depends on every output (so its gradient checks all of them)."""
    return sum(jnp.sum(o * w) for o, w in zip(jax.tree.leaves(outputs),
                                                jax.tree.leaves(weights), strict=True))


def _both_directions(flow, zs, keys, *, batched: bool):
    if batched:
        return (flow.transform_and_log_det_batch(zs, keys=keys),
                flow.inverse_and_log_det_batch(zs, keys=keys))
    if keys is None:
        return (jax.vmap(lambda z: flow.transform_and_log_det(z))(zs),
                jax.vmap(lambda z: flow.inverse_and_log_det(z))(zs))
    return (jax.vmap(lambda z, k: flow.transform_and_log_det(z, key=k))(zs, keys),
            jax.vmap(lambda z, k: flow.inverse_and_log_det(z, key=k))(zs, keys))


@eqx.filter_jit
def _values_and_gradients(flow, zs, keys, weights, batched: bool):
    def loss(f):
        outputs = _both_directions(f, zs, keys, batched=batched)
        return _loss(outputs, weights), outputs

    (_, outputs), grads = eqx.filter_value_and_grad(loss, has_aux=True)(flow)
    return outputs, grads


@functools.cache
def _compare(name: str, with_keys: bool):
    """``(batched, vmapped)``: the outputs of both directions and the parameter gradients
    of a weighted sum of them, computed with the batch methods and with ``jax.vmap``."""
    seed = list(FLOWS).index(name)
    flow = eqx.filter_jit(FLOWS[name])(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    zs = jnp.asarray(rng.normal(size=(BATCH, *SHAPE)))
    weights = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)),
                           ((zs, zs[:, 0, 0]), (zs, zs[:, 0, 0])))
    keys = (jax.random.split(jax.random.key(100 + seed, impl="rbg"), BATCH) if with_keys
            else None)
    return tuple(_values_and_gradients(flow, zs, keys, weights, batched)
                 for batched in (True, False))


def _assert_trees_close(a, b, atol):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) and leaves_a
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


@pytest.mark.parametrize(("name", "with_keys"), [
    *[(name, True) for name in FLOWS], ("hutchinson", False)])
def test_batch_equals_vmap(name, with_keys):
    """Forward and inverse, values and parameter gradients: one batched solve equals the
    vmapped per-configuration solves (to float rounding; constant steps), Hutchinson
    probes included (each configuration draws from its own key); without keys, the
    exact divergence by forward-mode autodiff; ``monge-ampere-analytic``, the field's
    own Laplacian."""
    (batched, batched_grads), (vmapped, vmapped_grads) = _compare(name, with_keys)
    _assert_trees_close(batched, vmapped, atol=1e-12)
    _assert_trees_close(batched_grads, vmapped_grads, atol=1e-11)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(batched))


def test_keys_change_the_hutchinson_estimate():
    """The keys reach the probes: the Hutchinson log-dets with keys differ from the exact
    ones without (so :func:`test_batch_equals_vmap` compares different computations)."""
    with_keys, without = _compare("hutchinson", True)[0][0], _compare("hutchinson", False)[0][0]
    np.testing.assert_allclose(with_keys[0][0], without[0][0], rtol=0, atol=1e-14)
    assert np.max(np.abs(with_keys[0][1] - without[0][1])) > 1e-3


@pytest.fixture(scope="module")
def adaptive():
    """An adaptive Tsit5 flow, a batch with one configuration far larger than the others,
    and the forward solves at rtol = atol = 1e-6: batched, per configuration (vmapped) and
    a per-configuration reference at 1e-12."""
    def flow(tol):
        return ContinuousFlow(_mlp(jax.random.key(7)), solver=diffrax.Tsit5(),
                              stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol))

    zs = jnp.asarray(np.random.default_rng(7).normal(size=(BATCH, *SHAPE)))
    zs = zs.at[0].multiply(20.0)

    @eqx.filter_jit
    def run(zs):
        coarse, fine = flow(1e-6), flow(1e-12)
        return (coarse.transform_and_log_det_batch(zs),
                jax.vmap(coarse.transform_and_log_det)(zs),
                jax.vmap(fine.transform_and_log_det)(zs))

    return run(zs)


def test_adaptive_batch_agrees_with_per_configuration_solves(adaptive):
    batched, vmapped, _ = adaptive
    _assert_trees_close(batched, vmapped, atol=1e-5)


def test_adaptive_batch_is_as_accurate_as_each_configuration_alone(adaptive):
    """The batch shares steps chosen by its worst configuration, so every configuration's
    error against the reference is within tolerance (no larger than alone, up to a
    factor 2 for the different step sequences, or 1e-6)."""
    batched, vmapped, reference = adaptive
    for b, v, r in zip(batched, vmapped, reference, strict=True):
        error_batched = np.max(np.abs(b - r).reshape(BATCH, -1), axis=1)
        error_alone = np.max(np.abs(v - r).reshape(BATCH, -1), axis=1)
        assert np.all(error_batched <= np.maximum(2 * error_alone, 1e-6)), (
            error_batched, error_alone)


def test_adaptive_batch_error_norm_is_the_worst_configuration():
    """The batched solve's PID error norm is the largest per-configuration RMS norm; any
    other state (BacksolveAdjoint's adjoint ODE) gets the plain norm."""
    from thermax.bijections._continuous import _per_sample_error_control

    controller = _per_sample_error_control(diffrax.PIDController(rtol=1e-3, atol=1e-3), (2,))
    errors = (jnp.array([[3.0, 4.0], [0.0, 1.0]]), jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(controller.norm(errors), np.sqrt(25.0 / 3.0), rtol=1e-14)
    adjoint_state = (*errors, jnp.array([2.0, 2.0, 2.0]), ())
    np.testing.assert_allclose(controller.norm(adjoint_state), np.sqrt(39.0 / 9.0),
                               rtol=1e-14)
    constant = diffrax.ConstantStepSize()
    assert _per_sample_error_control(constant, (2,)) == constant


def test_adaptive_batch_backsolve_gradients_agree_with_per_configuration():
    """BacksolveAdjoint with a PID controller through a batched Hutchinson solve: the
    parameter gradients agree with the vmapped per-configuration ones to tolerance."""
    flow = ContinuousFlow(_mlp(jax.random.key(3)), solver=diffrax.Tsit5(),
                          stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-7),
                          adjoint=diffrax.BacksolveAdjoint(),
                          divergence=HutchinsonDivergence())
    zs = jnp.asarray(np.random.default_rng(3).normal(size=(BATCH, *SHAPE)))
    keys = jax.random.split(jax.random.key(4, impl="rbg"), BATCH)

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(f, batched):
        x, log_det = _both_directions(f, zs, keys, batched=batched)[0]
        return jnp.sum(x**2) + jnp.sum(log_det)

    _assert_trees_close(grad(flow, True), grad(flow, False), atol=1e-5)


@pytest.mark.parametrize("method", ["transform_and_log_det_batch",
                                    "inverse_and_log_det_batch"])
def test_bad_batches_raise(method, without_jaxtyping):
    """The library's own checks (jaxtyping's, on in the suite, catch some first)."""
    flow = _hutchinson(jax.random.key(0))
    run = getattr(flow, method)
    keys = jax.random.split(jax.random.key(1), BATCH)
    for bad in (jnp.zeros(SHAPE), jnp.zeros((BATCH, 2, 3)), jnp.zeros((BATCH, 4))):
        with pytest.raises(ValueError, match=r"expected a batch of configurations of shape "
                                             r"\(batch, 2, 2\)"):
            run(bad, keys=keys)
    for bad_keys in (keys[:2], jax.random.key_data(keys), keys.reshape(1, BATCH)):
        with pytest.raises(ValueError, match=r"one PRNG key per configuration, a key array "
                                             r"of shape \(3,\)"):
            run(jnp.zeros((BATCH, *SHAPE)), keys=bad_keys)
