"""Conformance tests over every bijection (one registry, generic tests), plus the
specifics of each family (masks, conditioners, Scan = Chain, argument validation)."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from thermax.bijections import (
    Affine,
    AffineCoupling,
    Chain,
    ElementwiseAffine,
    Invert,
    NeuralRG,
    Scan,
    SinhArcsinh,
    SpectralScale,
    channel_mask,
    checkerboard_mask,
    lattice_real_nvp,
)
from thermax.nn import ConvConditioner, MLPConditioner


def _coupling_pair(shape, key, dtype, conditioner="mlp", **kw):
    """Two couplings of opposite checkerboard parity over the last two axes."""
    def cond(k):
        if conditioner == "mlp":
            return MLPConditioner(shape, hidden=(6, 6), key=k, dtype=dtype)
        return ConvConditioner(shape, width=3, depth=2, key=k, dtype=dtype)
    k0, k1 = jax.random.split(key)
    return [AffineCoupling(checkerboard_mask(shape, 0), cond(k0), **kw),
            AffineCoupling(checkerboard_mask(shape, 1), cond(k1), **kw)]


#: Every bijection, by name: ``constructor(key, dtype)``, tiny shapes.
BIJECTIONS = {
    "elementwise-affine": lambda key, dtype: ElementwiseAffine((2, 3), dtype=dtype),
    "affine": lambda key, dtype: Affine(4, dtype=dtype),
    "sinh-arcsinh": lambda key, dtype: SinhArcsinh((2, 3), dtype=dtype),
    "coupling-checkerboard-mlp": lambda key, dtype: AffineCoupling(
        checkerboard_mask((4, 4), 0), MLPConditioner((4, 4), hidden=(8, 8), key=key,
                                                     dtype=dtype)),
    "coupling-checkerboard-conv": lambda key, dtype: AffineCoupling(
        checkerboard_mask((4, 4), 1), ConvConditioner((4, 4), width=3, depth=2, key=key,
                                                      dtype=dtype)),
    "coupling-lattice-axes-conv-zero-padding": lambda key, dtype: AffineCoupling(
        checkerboard_mask((4, 4, 2), 0, axes=(0, 1)),
        ConvConditioner((4, 4, 2), width=3, depth=2, periodic=False, key=key, dtype=dtype)),
    "coupling-channel-conv": lambda key, dtype: AffineCoupling(
        channel_mask((4, 4, 2)), ConvConditioner((4, 4, 2), width=3, depth=2, key=key,
                                                  dtype=dtype)),
    "coupling-channel-axis0-mlp": lambda key, dtype: AffineCoupling(
        channel_mask((2, 2, 2), axis=0, parity=1),
        MLPConditioner((2, 2, 2), hidden=(5,), key=key, dtype=dtype)),
    "coupling-arbitrary-mask-identity-scale": lambda key, dtype: AffineCoupling(
        np.array([True, False, False, True, False]),
        MLPConditioner((5,), hidden=(4, 4), key=key, dtype=dtype), scale_fn="identity"),
    "chain": lambda key, dtype: Chain([ElementwiseAffine((4, 4), dtype=dtype),
                                       *_coupling_pair((4, 4), key, dtype),
                                       SinhArcsinh((4, 4), dtype=dtype)]),
    "scan": lambda key, dtype: Scan.build(
        lambda k: Chain(_coupling_pair((2, 2, 2), k, dtype, "conv")), 3, key=key),
    "invert-chain": lambda key, dtype: Invert(Chain([Affine(3, dtype=dtype),
                                                     SinhArcsinh((3,), dtype=dtype)])),
    "neuralrg": lambda key, dtype: NeuralRG(4, n_couplings=2, hidden=(3,), key=key, dtype=dtype),
    "spectral-scale": lambda key, dtype: SpectralScale((4, 3), dtype=dtype),
    "lattice-real-nvp": lambda key, dtype: lattice_real_nvp((4, 4), n_couplings=2, width=2,
                                                            depth=2, key=key, dtype=dtype),
}

BATCH = 3


def perturb_flat(tree, *, key, scale: float = 0.5):
    """Add N(0, scale^2) noise to every floating parameter, drawn in one call."""
    params, static = eqx.partition(tree, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    noise = scale * jax.random.normal(key, flat.shape, flat.dtype)
    return eqx.combine(unravel(flat + noise), static)


def _checks(b, z, x):
    """Everything the generic tests check, traced once per bijection."""
    def jac_logdet(f, y):
        jac = jax.jacfwd(lambda v: f(v.reshape(b.shape)).reshape(-1))(y.reshape(-1))
        return jnp.linalg.slogdet(jac)[1]

    fwd, ld = jax.vmap(b.transform_and_log_det)(z)
    back, ild_at_fwd = jax.vmap(b.inverse_and_log_det)(fwd)
    inv, ild = jax.vmap(b.inverse_and_log_det)(x)
    again, _ = jax.vmap(b.transform_and_log_det)(inv)
    return dict(
        fwd=fwd, ld=ld, back=back, ild_at_fwd=ild_at_fwd, inv=inv, ild=ild, again=again,
        jac_ld=jax.vmap(functools.partial(jac_logdet, b.transform))(z),
        jac_ild=jax.vmap(functools.partial(jac_logdet, b.inverse))(x),
        single=b.transform_and_log_det(z[0]), single_inv=b.inverse_and_log_det(x[0]),
        batch=b.transform_and_log_det_batch(z), batch_inv=b.inverse_and_log_det_batch(x))


@functools.cache
def conformance(name: str):
    """``(bijection, z, x, results)``: the bijection randomly perturbed (so that nothing is
    the identity) and :func:`_checks` at ``BATCH`` random points, in ONE compiled call
    (compilation dominates; RBG keys compile much faster than threefry on CPU)."""
    seed = 1000 + list(BIJECTIONS).index(name)
    k_init, k_noise = jax.random.split(jax.random.key(seed, impl="rbg"))
    shape = eqx.filter_eval_shape(BIJECTIONS[name], k_init, jnp.float64).shape
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(BATCH, *shape))
    x = 1.5 * rng.normal(size=(BATCH, *shape))

    @eqx.filter_jit
    def run(k_init, k_noise, z, x):
        b = perturb_flat(BIJECTIONS[name](k_init, jnp.float64), key=k_noise)
        return b, _checks(b, z, x)

    b, r = run(k_init, k_noise, jnp.asarray(z), jnp.asarray(x))
    return b, z, x, jax.tree.map(np.asarray, r)


def make(name: str):
    return conformance(name)[0]


names = pytest.mark.parametrize("name", list(BIJECTIONS))
close = functools.partial(np.testing.assert_allclose, rtol=1e-9, atol=1e-9)


@names
def test_not_identity(name):
    _, z, x, r = conformance(name)
    assert np.max(np.abs(r["fwd"] - np.asarray(z))) > 1e-2, "perturbed bijection is ~identity"


@names
def test_round_trip(name):
    _, z, x, r = conformance(name)
    close(r["back"], z, err_msg="inverse(transform(z)) != z")
    close(r["again"], x, err_msg="transform(inverse(x)) != x")


@names
def test_log_det_matches_jacobian(name):
    *_, r = conformance(name)
    close(r["ld"], r["jac_ld"], err_msg="forward log-det != slogdet(jacfwd(transform))")
    close(r["ild"], r["jac_ild"], err_msg="inverse log-det != slogdet(jacfwd(inverse))")


@names
def test_inverse_log_det_is_minus_forward(name):
    *_, r = conformance(name)
    close(r["ild_at_fwd"], -r["ld"])


@names
def test_vmap_matches_unbatched(name):
    *_, r = conformance(name)
    close(r["single"][0], r["fwd"][0])
    close(r["single"][1], r["ld"][0])
    close(r["single_inv"][0], r["inv"][0])
    close(r["single_inv"][1], r["ild"][0])


@names
def test_batch_methods_match_vmap(name):
    """The batch methods (vmap by default; Chain, Scan and Invert compose their layers'
    batch methods) equal the vmapped per-configuration methods."""
    *_, r = conformance(name)
    close(r["batch"][0], r["fwd"], rtol=1e-13, atol=1e-13)
    close(r["batch"][1], r["ld"], rtol=1e-13, atol=1e-13)
    close(r["batch_inv"][0], r["inv"], rtol=1e-13, atol=1e-13)
    close(r["batch_inv"][1], r["ild"], rtol=1e-13, atol=1e-13)


@names
def test_keeps_float64(name):
    *_, r = conformance(name)
    for key in ("fwd", "ld", "inv", "ild"):
        assert r[key].dtype == np.float64, key


@names
def test_wrong_shape_raises(name):
    b = make(name)
    for bad in (jnp.zeros((*b.shape, 1)), jnp.zeros((2, *b.shape)), jnp.zeros(b.shape[:-1])):
        with pytest.raises(ValueError, match=r"expected a configuration of shape"):
            b.transform_and_log_det(bad)
        with pytest.raises(ValueError, match=r"expected a configuration of shape"):
            b.inverse_and_log_det(bad)
    for bad in (jnp.zeros(b.shape), jnp.zeros((2, *b.shape, 1)), jnp.zeros((2, 1, *b.shape))):
        with pytest.raises(ValueError, match=r"expected a batch of configurations of shape"):
            b.transform_and_log_det_batch(bad)
        with pytest.raises(ValueError, match=r"expected a batch of configurations of shape"):
            b.inverse_and_log_det_batch(bad)


@pytest.mark.parametrize("name", ["affine", "coupling-checkerboard-mlp", "scan"])
def test_float32_in_float32_out(name):
    shape = make(name).shape

    @eqx.filter_jit
    def run(key, z):
        return BIJECTIONS[name](key, jnp.float32).transform_and_log_det(z)

    x, ld = run(jax.random.key(0, impl="rbg"), jnp.full(shape, 0.3, jnp.float32))
    assert x.dtype == jnp.float32 and ld.dtype == jnp.float32


# ---------------------------------------------------------------- family specifics

@pytest.mark.parametrize("name", [n for n in BIJECTIONS if n.startswith("coupling")])
def test_coupling_keeps_masked_variables(name):
    _, z, x, r = conformance(name)
    mask = np.broadcast_to(np.asarray(make(name).mask), r["fwd"].shape)
    np.testing.assert_array_equal(r["fwd"][mask], np.asarray(z)[mask])
    assert np.all(np.abs(r["fwd"][~mask] - np.asarray(z)[~mask]) > 0)


def test_fresh_coupling_is_identity():
    b = AffineCoupling(checkerboard_mask((2, 2), 0), MLPConditioner((2, 2), key=jax.random.key(0)))
    z = jnp.arange(4.0).reshape(2, 2)
    x, ld = b.transform_and_log_det(z)
    np.testing.assert_array_equal(x, z)
    assert ld == 0


def test_masks():
    np.testing.assert_array_equal(checkerboard_mask((2, 3), 1), [[0, 1, 0], [1, 0, 1]])
    m = checkerboard_mask((2, 3, 3), 0)
    assert m.shape == (2, 3, 3) and (m[0] == m[1]).all() and m[0, 0, 0]
    m = checkerboard_mask((3, 3, 2), 0, axes=(0, 1))
    assert (m[..., 0] == m[..., 1]).all() and (m[..., 0] == checkerboard_mask((3, 3), 0)).all()
    np.testing.assert_array_equal(channel_mask((2, 4)), [[1, 1, 0, 0]] * 2)
    np.testing.assert_array_equal(channel_mask((3,), parity=1), [False, True, True])
    np.testing.assert_array_equal(channel_mask((2, 1), axis=0)[:, 0], [True, False])
    for bad in (lambda: checkerboard_mask((4,), 0), lambda: checkerboard_mask((2, 2), 2),
                lambda: channel_mask((4, 1)), lambda: checkerboard_mask((2, 2), 0, axes=(1, 1))):
        with pytest.raises(ValueError):
            bad()


def test_coupling_validation():
    cond = MLPConditioner((4,), hidden=(3,), key=jax.random.key(0))
    with pytest.raises(ValueError, match="all True"):
        AffineCoupling(np.ones(4, bool), cond)
    with pytest.raises(ValueError, match="all False"):
        AffineCoupling(np.zeros(4, bool), cond)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\).*conditioner acts on shape"):
        AffineCoupling(checkerboard_mask((2, 2), 0), cond)
    with pytest.raises(ValueError, match="scale_fn"):
        AffineCoupling(channel_mask((4,)), cond, scale_fn="exp")
    with pytest.raises((ValueError, TypeError)):
        AffineCoupling(np.array([1, 0, 1, 0]), cond)
    with pytest.raises(ValueError, match="expected a configuration of shape"):
        cond(jnp.zeros(3))


def test_conv_conditioner_periodic_is_translation_equivariant():
    @eqx.filter_jit
    def run(k_init, k_noise, x):
        net = perturb_flat(ConvConditioner((4, 4), width=3, depth=2, key=k_init), key=k_noise)
        return net(x), net(jnp.roll(x, (1, 3), axis=(0, 1)))

    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 4)))
    (s, t), (s2, t2) = run(*jax.random.split(jax.random.key(3, impl="rbg")), x)
    assert np.abs(s).max() > 1e-2 and np.abs(t).max() > 1e-2
    np.testing.assert_allclose(s2, jnp.roll(s, (1, 3), axis=(0, 1)), atol=1e-12)
    np.testing.assert_allclose(t2, jnp.roll(t, (1, 3), axis=(0, 1)), atol=1e-12)


def test_chain_validation():
    with pytest.raises(ValueError, match="at least one"):
        Chain([])
    with pytest.raises(ValueError, match="same shape"):
        Chain([ElementwiseAffine((2,)), ElementwiseAffine((3,))])
    with pytest.raises(TypeError):
        Chain([ElementwiseAffine((2,)), jnp.tanh])


def test_scan_equals_chain_of_its_layers():
    b = make("scan")
    params, static = eqx.partition(b.stacked, eqx.is_array)
    layers = [eqx.combine(jax.tree.map(lambda a, k=k: a[k], params), static) for k in range(b.n)]
    chain = Chain(layers)
    z = jax.random.normal(jax.random.key(3), b.shape)
    for f, g in ((b.transform_and_log_det, chain.transform_and_log_det),
                 (b.inverse_and_log_det, chain.inverse_and_log_det)):
        (y1, l1), (y2, l2) = f(z), g(z)
        close(y1, y2)
        close(l1, l2)


def test_scan_traces_the_layer_once():
    def n_equations(n):
        def f(z):
            make_layer = lambda k: Chain(_coupling_pair((2, 2), k, jnp.float64))
            return Scan.build(make_layer, n, key=jax.random.key(0)).transform_and_log_det(z)
        return len(jax.make_jaxpr(f)(jnp.ones((2, 2))).eqns)

    assert n_equations(2) == n_equations(16)


def test_scan_rejects_unstacked_layer():
    with pytest.raises(ValueError, match="leading"):
        Scan(Affine(3), 2)
    stacked = eqx.filter_vmap(lambda k: Affine(3))(jax.random.split(jax.random.key(0), 2))
    assert Scan(stacked, 2).n == 2


def test_invert_swaps_directions():
    b = make("invert-chain")
    z = jnp.array([0.3, -1.0, 2.0])
    close(b.transform(z), b.bijection.inverse(z))
    close(b.inverse_and_log_det(z)[1], b.bijection.transform_and_log_det(z)[1])


def test_affine_matches_explicit_matrix():
    loc = jnp.array([1.0, -2.0, 0.5])
    tril = jnp.array([[2.0, 0.0, 0.0], [0.3, 0.5, 0.0], [-1.0, 0.2, 1.5]])
    b = Affine(3, loc=loc, scale_tril=tril + jnp.triu(jnp.ones((3, 3)), 1))  # upper ignored
    z = jnp.array([0.1, 0.2, -0.7])
    x, ld = b.transform_and_log_det(z)
    close(x, loc + tril @ z)
    close(ld, np.log(2.0 * 0.5 * 1.5))
    close(b.scale_tril, tril)
    with pytest.raises(ValueError, match="positive"):
        Affine(2, scale_tril=jnp.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="loc must have shape"):
        Affine(3, loc=jnp.zeros(2))
    with pytest.raises(ValueError, match="log_scale must have shape"):
        ElementwiseAffine((2,), log_scale=jnp.zeros(3))
