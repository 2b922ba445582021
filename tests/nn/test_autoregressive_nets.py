"""The autoregressive property of every masked network: logit i sees only spins j < i."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.nn import MADE, PixelCNN


def _random_spins(key, shape):
    return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0)


def test_logit_independent_of_current_and_later_spins(net_name, make_net):
    net = make_net(net_name)
    n = 9
    k_x, k_y = jax.random.split(jax.random.key(0))
    x = _random_spins(k_x, (n, 3, 3))  # one base configuration per site i
    y = _random_spins(k_y, (n, 3, 3))
    later = (jnp.arange(n)[:, None] >= jnp.arange(n)[None, :]).T.reshape(n, 3, 3)  # j >= i
    variants = jnp.stack([
        jnp.where(later, y, x),   # resample every spin j >= i
        jnp.where(later, -x, x),  # flip every spin j >= i
        x * jnp.where(jnp.eye(n, dtype=bool).reshape(n, 3, 3), -1.0, 1.0),  # flip site i only
    ])
    logits = jax.jit(jax.vmap(jax.vmap(net.logits)))(jnp.concatenate([x[None], variants]))
    logits = np.asarray(logits).reshape(4, n, n)
    own = logits[:, np.arange(n), np.arange(n)]  # own[v, i]: logit of site i in variant v
    np.testing.assert_allclose(own[1:], np.broadcast_to(own[0], own[1:].shape), rtol=0,
                               atol=1e-12)
    # not vacuous: the variants do change the configuration, and later logits react
    assert np.abs(logits[2] - logits[0]).max() > 1e-3


def test_jacobian_is_strictly_lower_triangular_and_nontrivial(net_name, make_net):
    net = make_net(net_name)
    x = _random_spins(jax.random.key(1), (3, 3))
    jac = jax.jacfwd(lambda s: net.logits(s).reshape(-1))(x).reshape(9, 9)
    jac = np.asarray(jac)
    assert np.all(np.triu(jac) == 0.0), "logit i depends on a spin j >= i"
    # not vacuous: every logit but the first depends on some earlier spin
    for i in range(1, 9):
        assert np.any(jac[i, :i] != 0.0), f"logit {i} depends on no earlier spin"


def test_first_site_logit_is_constant(net_name, make_net):
    net = make_net(net_name)
    xs = [_random_spins(k, (3, 3)) for k in jax.random.split(jax.random.key(2), 4)]
    first = [float(net.logits(x)[0, 0]) for x in xs]
    assert max(first) - min(first) < 1e-12


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"width": 0}])
def test_made_bad_size_raises(kwargs):
    with pytest.raises(ValueError, match=">= 1"):
        MADE((3, 3), key=jax.random.key(0), **kwargs)


def test_pixelcnn_bad_half_kernel_raises():
    with pytest.raises(ValueError, match="half_kernel must be >= 1"):
        PixelCNN(3, half_kernel=0, key=jax.random.key(0))


@pytest.mark.parametrize("depth", [1, 2])
def test_shallow_made_is_autoregressive(depth):
    net = MADE((4,), depth=depth, width=2, key=jax.random.key(3))
    jac = jax.jacfwd(net.logits)(jnp.array([1.0, -1.0, 1.0, 1.0]))
    assert jac.shape == (4, 4)
    assert np.all(np.triu(np.asarray(jac)) == 0.0)
