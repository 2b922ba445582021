"""Batch methods of distributions: ``sample_and_log_prob_batch`` and ``log_prob_batch``
equal ``jax.vmap`` of the per-configuration methods with the same keys (values and
parameter gradients) for a flow through a Hutchinson continuous flow (one batched solve)
and a Z2-symmetrised autoregressive spin model (whose base vmaps); the batched
solve runs with the batch sharded over the four test devices; bad batches raise.
"""

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturb
from jax.sharding import NamedSharding, PartitionSpec

from thermax.bijections import Chain, ContinuousFlow, HutchinsonDivergence, Scale
from thermax.distributions import (
    AutoregressiveSpins,
    StandardNormal,
    Transformed,
    Z2Symmetrized,
    sample_batch,
)
from thermax.nn import MADE, MLPVelocity
from thermax.train import make_mesh

BATCH = 8


def _flow(key):
    k_init, k_noise = jax.random.split(key)
    field = perturb(MLPVelocity((2, 2), width=5, depth=1, key=k_init), key=k_noise)
    cnf = ContinuousFlow(field, solver=diffrax.Euler(),
                         stepsize_controller=diffrax.ConstantStepSize(), dt0=0.25,
                         divergence=HutchinsonDivergence())
    return Transformed(StandardNormal((2, 2)), Chain([Scale((2, 2), 0.2), cnf]))


#: Distributions, by name: ``constructor(key)``.
MODELS = {
    "flow": _flow,
    "z2-spins": lambda key: Z2Symmetrized(AutoregressiveSpins(
        perturb(MADE((2, 2), depth=2, width=3, key=key), key=jax.random.fold_in(key, 1)))),
}


def _weighted(tree, weights):
    return sum(jnp.sum(a * w) for a, w in zip(jax.tree.leaves(tree), weights, strict=True))


@eqx.filter_jit
def _run(model, keys, weights, batched: bool):
    """Samples, their ``ln p`` and ``log_prob`` of the (stopped) samples, with the
    parameter gradient of a weighted sum of the two ``ln p``."""
    def loss(m):
        if batched:
            xs, lps = m.sample_and_log_prob_batch(keys=keys)
            again = m.log_prob_batch(jax.lax.stop_gradient(xs))
        else:
            xs, lps = jax.vmap(lambda k: m.sample_and_log_prob(key=k))(keys)
            again = jax.vmap(m.log_prob)(jax.lax.stop_gradient(xs))
        return _weighted((lps, again), weights), (xs, lps, again)

    (_, outputs), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model)
    return outputs, grads


@functools.cache
def _compare(name: str):
    seed = list(MODELS).index(name)
    model = eqx.filter_jit(MODELS[name])(jax.random.key(seed))
    keys = jax.random.split(jax.random.key(10 + seed), BATCH)
    weights = [jnp.asarray(w) for w in np.random.default_rng(seed).normal(size=(2, BATCH))]
    return model, keys, [_run(model, keys, weights, batched) for batched in (True, False)]


@pytest.mark.parametrize("name", list(MODELS))
def test_batch_methods_equal_vmap(name):
    *_, ((batched, batched_grads), (vmapped, vmapped_grads)) = _compare(name)
    for a, b in zip(batched, vmapped, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    leaves = jax.tree.leaves(batched_grads)
    assert leaves and any(np.max(np.abs(g)) > 1e-3 for g in leaves)
    for a, b in zip(leaves, jax.tree.leaves(vmapped_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)


def test_hutchinson_flow_log_prob_is_estimated_when_sampling_and_exact_when_given():
    """The keys reach the probes (sampled ``ln p`` is an estimate), and ``log_prob_batch``
    of given samples is exact: they differ."""
    *_, ((batched, _), _) = _compare("flow")
    _, lps, again = batched
    assert np.max(np.abs(lps - again)) > 1e-4


def test_sample_batch_uses_the_batch_method():
    model, keys, ((batched, _), _) = _compare("flow")
    xs, lps = sample_batch(model, key=jax.random.key(10), batch=BATCH)
    np.testing.assert_allclose(xs, batched[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(lps, batched[1], rtol=0, atol=1e-12)


def test_batched_solve_runs_sharded_over_devices():
    """With the keys sharded along the batch over four devices (as the trainer shards
    them), the batched solve and its gradient give the single-device results."""
    model, keys, ((batched, batched_grads), _) = _compare("flow")
    mesh = make_mesh()
    assert mesh.size == 4

    @eqx.filter_jit
    def run(model, keys):
        keys = jax.lax.with_sharding_constraint(keys, NamedSharding(mesh, PartitionSpec("batch")))

        def loss(m):
            xs, lps = m.sample_and_log_prob_batch(keys=keys)
            return jnp.mean(lps), xs

        return eqx.filter_value_and_grad(loss, has_aux=True)(model)

    (mean_lp, xs), grads = run(model, keys)
    assert len(xs.sharding.device_set) == 4
    np.testing.assert_allclose(xs, batched[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean_lp, jnp.mean(batched[1]), rtol=0, atol=1e-12)
    weights = [jnp.full(BATCH, 1.0 / BATCH), jnp.zeros(BATCH)]  # the gradient of mean(lps)
    _, single_device_grads = _run(model, keys, weights, True)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(single_device_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_bad_batches_raise(without_jaxtyping):
    """The library's own checks (jaxtyping's, on in the suite, catch some first)."""
    model = _compare("flow")[0]
    with pytest.raises(ValueError, match=r"expected a batch of configurations of shape "
                                         r"\(batch, 2, 2\)"):
        model.log_prob_batch(jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"expected a batch of configurations"):
        model.log_prob_batch(jnp.zeros((3, 2, 2, 1)))
    for keys in (jax.random.key(0), jax.random.split(jax.random.key(0), (2, 3))):
        with pytest.raises(ValueError, match=r"one PRNG key per configuration, a key array "
                                             r"of shape \(batch,\)"):
            model.sample_and_log_prob_batch(keys=keys)
