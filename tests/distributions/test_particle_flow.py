"""Continuous flows of identical particles: the whole model (scale + ODE flow of an
equivariant field) is permutation- and rotation-equivariant, its density invariant."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.bijections import Chain, Scale, continuous_flow
from thermax.distributions import StandardNormal, Transformed
from thermax.nn import BackflowField, MongeAmpereField, ParticlePotential

N, DIM = 4, 2


def _randomise(module, key, scale=0.3):
    """Every weight perturbed (a fresh field is zero, which would make the test empty)."""
    params, static = eqx.partition(module, eqx.is_inexact_array)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [p + scale * jax.random.normal(k, p.shape, p.dtype)
              for p, k in zip(leaves, keys, strict=True)]
    return eqx.combine(jax.tree.unflatten(tree, leaves), static)


FIELDS = {
    "backflow": lambda key: BackflowField(N, DIM, width=8, depth=1, key=key),
    "monge-ampere": lambda key: MongeAmpereField(ParticlePotential(N, DIM, width=8, depth=1,
                                                                   key=key)),
}


@pytest.fixture(scope="module", params=list(FIELDS))
def model(request):
    key = jax.random.key(3)
    field = _randomise(FIELDS[request.param](key), jax.random.fold_in(key, 1))
    flow = continuous_flow(field, solver="tsit5", steps=8)
    return Transformed(StandardNormal((N, DIM), kind="particles"),
                       Chain([Scale((N, DIM), log_scale=math.log(0.7)), flow]))


@pytest.fixture(scope="module")
def maps(model):
    forward = jax.jit(jax.vmap(model.bijection.transform_and_log_det))
    log_prob = jax.jit(jax.vmap(model.log_prob))
    return forward, log_prob


def _rotation(angle):
    c, s = math.cos(angle), math.sin(angle)
    return jnp.array([[c, -s], [s, c]])


def test_flow_is_permutation_and_rotation_equivariant(model, maps):
    forward, _ = maps
    z = jax.random.normal(jax.random.key(0), (3, N, DIM))
    x, log_det = forward(z)
    assert float(jnp.max(jnp.abs(x - z * 0.7))) > 1e-2  # the flow does something
    perm = np.array([2, 0, 3, 1])
    xp, log_det_p = forward(z[:, perm])
    np.testing.assert_allclose(xp, x[:, perm], atol=1e-10)
    np.testing.assert_allclose(log_det_p, log_det, atol=1e-10)
    rot = _rotation(0.9)
    xr, log_det_r = forward(z @ rot.T)
    np.testing.assert_allclose(xr, x @ rot.T, atol=1e-10)
    np.testing.assert_allclose(log_det_r, log_det, atol=1e-10)


def test_density_is_permutation_and_rotation_invariant(model, maps):
    _, log_prob = maps
    x = model.sample_and_log_prob(key=jax.random.key(5))[0][None]
    x = jnp.concatenate([x, jax.random.normal(jax.random.key(6), (2, N, DIM))])
    lp = log_prob(x)
    for perm in (np.array([1, 0, 2, 3]), np.array([3, 2, 1, 0])):
        np.testing.assert_allclose(log_prob(x[:, perm]), lp, atol=1e-8)
    np.testing.assert_allclose(log_prob(x @ _rotation(-2.1).T), lp, atol=1e-8)
    reflection = jnp.diag(jnp.array([1.0, -1.0]))
    np.testing.assert_allclose(log_prob(x @ reflection), lp, atol=1e-8)
