"""AutoregressiveSpins and Z2Symmetrized: normalised, cached sampler == naive sampler.

Each network is compiled once (module fixture ``outputs``): ``ln p`` of all 512 states of
a 3x3 model, plain and Z2-symmetrised, and both samplers on the same keys.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_perturbed

from thermax.distributions import AutoregressiveSpins, Z2Symmetrized
from thermax.exact import all_spin_configurations
from thermax.nn import MADE, PixelCNN

STATES = all_spin_configurations((3, 3))  # (512, 3, 3), float64
N_KEYS = 32


@eqx.filter_jit
def _samplers(model, keys):
    cached = jax.vmap(lambda k: model.sample_and_log_prob(key=k))(keys)
    naive = jax.vmap(lambda k: model.naive_sample_and_log_prob(key=k))(keys)
    teacher = jax.vmap(model.log_prob)(cached[0])
    return {"cached": cached, "naive": naive, "teacher": teacher}


@eqx.filter_jit
def _everything(model, states, keys):
    sym = Z2Symmetrized(model)
    return {
        "log_p": jax.vmap(model.log_prob)(states),
        "log_p_z2": jax.vmap(sym.log_prob)(states),
        "log_p_z2_flipped": jax.vmap(sym.log_prob)(-states),
        **_samplers(model, keys),
    }


@pytest.fixture(scope="module")
def outputs(net_name, make_net):
    model = AutoregressiveSpins(make_net(net_name))
    out = _everything(model, STATES, jax.random.split(jax.random.key(7), N_KEYS))
    return jax.tree.map(np.asarray, out)


def test_normalised_over_all_states(outputs):
    lp = outputs["log_p"]
    assert lp.dtype == np.float64
    assert abs(np.exp(lp).sum() - 1.0) < 1e-10
    assert lp.max() - lp.min() > 1.0, "perturbed model should be far from uniform"


def test_z2_symmetrized_normalised_and_symmetric(outputs):
    lp = outputs["log_p_z2"]
    assert abs(np.exp(lp).sum() - 1.0) < 1e-10
    np.testing.assert_allclose(lp, outputs["log_p_z2_flipped"], rtol=0, atol=1e-12)
    # p_sym = (p(s) + p(-s)) / 2, state by state (index of -s is 511 - index of s)
    p = np.exp(outputs["log_p"])
    np.testing.assert_allclose(np.exp(lp), 0.5 * (p + p[::-1]), rtol=1e-12, atol=0)


def _check_samplers(out, shape):
    xs, lps = out["cached"]
    xs_naive, lps_naive = out["naive"]
    assert xs.shape == (N_KEYS, *shape) and xs.dtype == np.float64
    assert set(np.unique(xs)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(xs, xs_naive)
    np.testing.assert_allclose(lps, out["teacher"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(lps_naive, out["teacher"], rtol=0, atol=1e-12)
    assert len({tuple(x.ravel()) for x in xs}) > 1, "all samples identical"


def test_cached_sampler_matches_naive(outputs):
    _check_samplers(outputs, (3, 3))


# Other sizes: a prime number of sites (MADE block size 1), a 5x5 PixelCNN with k = 2, and
# a dilated residual PixelCNN.
EXTRA = {
    "made-prime-7": (lambda key: MADE((7,), depth=3, width=3, key=key), 1),
    "made-residual-prime-7": (lambda key: MADE((7,), depth=3, width=3, residual=True,
                                               key=key), 1),
    "pixelcnn-5x5-k2": (lambda key: PixelCNN(5, depth=3, width=3, half_kernel=2, key=key), 1),
    "pixelcnn-6x6-dilated-residual": (lambda key: PixelCNN(6, depth=4, width=3, half_kernel=1,
                                                           dilation=2, residual=True, key=key),
                                      1),
}


@pytest.mark.parametrize("name", list(EXTRA))
def test_cached_sampler_matches_naive_other_sizes(name):
    constructor, block = EXTRA[name]
    net = build_perturbed(constructor, 300 + list(EXTRA).index(name))
    assert net.block == block
    model = AutoregressiveSpins(net)
    out = jax.tree.map(np.asarray, _samplers(model, jax.random.split(jax.random.key(8), N_KEYS)))
    _check_samplers(out, net.shape)


def test_made_3x3_samples_in_blocks(make_net):
    assert make_net("made").block == 3  # the blocked path (3 blocks of 3) is exercised


@pytest.fixture(scope="module")
def made_model(make_net):
    return AutoregressiveSpins(make_net("made"))


@eqx.filter_jit
def _draw(model, keys, states):
    xs, lps = jax.vmap(lambda k: model.sample_and_log_prob(key=k))(keys)
    return xs, lps, jax.vmap(model.log_prob)(xs), jax.vmap(model.log_prob)(states)


def test_z2_sample_frequencies_match_probabilities(made_model):
    """Z2-symmetrised 3x3 MADE: 2^14 samples against the exact p, state by state."""
    model = Z2Symmetrized(made_model)
    keys = jax.random.split(jax.random.key(11), 2**14)
    xs, lps, teacher, lp_all = map(np.asarray, _draw(model, keys, STATES))
    np.testing.assert_allclose(lps, teacher, rtol=0, atol=1e-12)
    index = ((1 - xs.reshape(-1, 9)) // 2).astype(int) @ (2 ** np.arange(9))  # state number
    np.testing.assert_allclose(lp_all[index], teacher, rtol=0, atol=1e-12)
    p_all = np.exp(lp_all)
    counts = np.bincount(index, minlength=512)
    expected = p_all * len(index)
    big = expected >= 20  # Poisson z-scores where the normal approximation holds
    z = (counts[big] - expected[big]) / np.sqrt(expected[big])
    assert big.sum() >= 10
    assert np.abs(z).max() < 5.0
    # both s and -s are drawn: the magnetisation is symmetric within sampling error
    m = xs.reshape(-1, 9).sum(1)
    assert abs(m.mean()) < 5 * m.std() / np.sqrt(len(m))


def test_log_prob_bad_shape_raises(made_model):
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        made_model.log_prob(jnp.ones((9,)))
    with pytest.raises(ValueError, match="vmap"):
        made_model.log_prob(jnp.ones((2, 3, 3)))


def test_z2_needs_spin_or_field_distribution():
    from thermax.distributions import StandardNormal

    with pytest.raises(TypeError, match="spin or field distribution"):
        Z2Symmetrized(StandardNormal((3, 2), kind="particles"))
