"""NeuralRG: the hierarchy against a loop-by-plaquette reference, round trips, log-dets,
bad arguments, the depth option, Z2 symmetrisation and the latents grouped by scale."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_perturbed

from thermax.bijections import Affine, NeuralRG, PlaquetteRealNVP
from thermax.distributions import StandardNormal, Transformed, Z2Symmetrized

L = 4


def tiny(key, depth=None, kernel=None):
    return NeuralRG(L, depth=depth, n_couplings=2, hidden=(4,), kernel=kernel, key=key)


@pytest.fixture(scope="module")
def flow():
    return build_perturbed(tiny, 11)


@pytest.fixture(scope="module")
def flow_depth1():
    return build_perturbed(lambda k: tiny(k, depth=1), 12)


@pytest.fixture(scope="module")
def points():
    return jax.random.normal(jax.random.key(3), (3, L, L))


forward = eqx.filter_jit(lambda b, z: jax.vmap(b.transform_and_log_det)(z))
inverse = eqx.filter_jit(lambda b, x: jax.vmap(b.inverse_and_log_det)(x))


@eqx.filter_jit
def jacobian_log_det(b, z):
    jac = jax.jacfwd(b.transform)(z).reshape(z.size, z.size)
    return jnp.linalg.slogdet(jac)


def reference_transform(b: NeuralRG, z):
    """The hierarchy written plaquette by plaquette on the full lattice, with explicit
    periodic site indices: at scale ``s`` (spacing ``d``) the decimator's plaquettes have
    corners at multiples of ``2d``, the disentangler's at ``d`` + multiples of ``2d``."""
    call = eqx.filter_jit(lambda k, p: k.transform_and_log_det(p))
    x, log_det = np.array(z), 0.0
    n = b.shape[0]
    for scale in reversed(range(b.depth)):
        d = 2**scale
        for layer, offset in ((0, 0), (1, d)):
            kernel = jax.tree.map(lambda a, i=(scale, layer): a[i] if eqx.is_array(a) else a,
                                  b.kernels)
            for ci in range(offset, n, 2 * d):
                for cj in range(offset, n, 2 * d):
                    rows = [(ci + d * a) % n for a in (0, 1) for _ in (0, 1)]
                    cols = [(cj + d * c) % n for _ in (0, 1) for c in (0, 1)]
                    y, ld = call(kernel, jnp.asarray(x[rows, cols]))
                    x[rows, cols] = np.asarray(y)
                    log_det += float(ld)
    return x, log_det


@pytest.mark.parametrize("n_couplings", [1, 3, 4])
def test_kernel_round_trip_and_log_det(n_couplings):
    """The plaquette kernel alone (odd and even numbers of couplings: the variables'
    reordering between couplings is undone at the end)."""
    @eqx.filter_jit
    def run(k, z):
        x, ld = k.transform_and_log_det(z)
        z2, ld_inv = k.inverse_and_log_det(x)
        return x, ld, z2, ld_inv, jnp.linalg.slogdet(jax.jacfwd(k.transform)(z))

    k = build_perturbed(lambda key: PlaquetteRealNVP(n_couplings, (5, 5), key=key), 5)
    z = jax.random.normal(jax.random.key(0), (4,))
    x, ld, z2, ld_inv, (sign, logabs) = run(k, z)
    assert np.max(np.abs(x - z)) > 1e-2
    np.testing.assert_allclose(z2, z, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ld_inv, -ld, rtol=1e-10, atol=1e-12)
    assert sign != 0
    np.testing.assert_allclose(logabs, ld, rtol=1e-10, atol=1e-12)


def test_kernel_transforms_rows_and_columns():
    """Coupling k of the kernel maps the bottom row, right column, top row, left column
    (k = 0, 1, 2, 3) of the plaquette [[v0, v1], [v2, v3]] and keeps the other pair."""
    k = build_perturbed(lambda key: PlaquetteRealNVP(4, (3,), key=key), 6)
    z = jax.random.normal(jax.random.key(1), (4,))
    for n, changed in ((1, {2, 3}), (2, {1, 2, 3}), (3, {0, 1, 2, 3})):
        first = jax.tree.map(lambda a, n=n: a[:n] if eqx.is_array(a) else a, k)
        assert first.n_couplings == n
        x = first.transform(z)
        moved = {i for i in range(4) if abs(float(x[i] - z[i])) > 1e-12}
        assert moved == changed, (n, moved)


def test_fresh_flow_is_identity():
    b = tiny(jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (2, L, L))
    x, ld = forward(b, z)
    np.testing.assert_allclose(x, z, atol=1e-14)
    np.testing.assert_allclose(ld, 0.0, atol=1e-14)


@pytest.mark.parametrize("which", ["full", "depth1"])
def test_matches_plaquette_reference(which, flow, flow_depth1, points):
    b = flow if which == "full" else flow_depth1
    x, ld = forward(b, points)
    for i in range(2):
        x_ref, ld_ref = reference_transform(b, points[i])
        np.testing.assert_allclose(x[i], x_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ld[i], ld_ref, rtol=1e-10, atol=1e-10)


def test_round_trip_both_ways(flow, points):
    x, ld = forward(flow, points)
    assert not np.allclose(x, points)  # the perturbed flow is not the identity
    z, ld_inv = inverse(flow, x)
    np.testing.assert_allclose(z, points, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ld_inv, -ld, rtol=1e-10, atol=1e-10)
    z2, ld_inv2 = inverse(flow, points)
    x2, ld2 = forward(flow, z2)
    np.testing.assert_allclose(x2, points, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ld2, -ld_inv2, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("which", ["full", "depth1"])
def test_log_det_matches_jacobian(which, flow, flow_depth1, points):
    b = flow if which == "full" else flow_depth1
    sign, logabs = jacobian_log_det(b, points[0])
    _, ld = forward(b, points[:1])
    assert sign != 0
    np.testing.assert_allclose(logabs, ld[0], rtol=1e-10, atol=1e-10)


def test_other_kernel_component(points):
    """Any AbstractBijection on shape (4,) is a kernel: here a full affine map."""
    def affine(key):
        k1, k2 = jax.random.split(key)
        tril = 0.3 * jax.random.normal(k1, (4, 4)) + jnp.diag(jnp.full(4, 1.5))
        return Affine(4, loc=jax.random.normal(k2, (4,)), scale_tril=jnp.tril(tril))

    b = eqx.filter_jit(lambda k: tiny(k, kernel=affine))(jax.random.key(4))
    x, ld = forward(b, points[:1])
    z, ld_inv = inverse(b, x)
    np.testing.assert_allclose(z, points[:1], rtol=1e-10, atol=1e-10)
    _, logabs = jacobian_log_det(b, points[0])
    np.testing.assert_allclose(logabs, ld[0], rtol=1e-10)
    np.testing.assert_allclose(ld_inv, -ld, rtol=1e-10)
    # 2 layers x (1 + 4 plaquettes), each adding the kernel's constant log-det
    x_ref, ld_ref = reference_transform(b, points[0])
    np.testing.assert_allclose(x[0], x_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bad", [3, 6, 12, 1, 0, -4, True])
def test_bad_size_raises(bad):
    with pytest.raises(ValueError, match=r"L must be a power of two >= 2.*L="):
        NeuralRG(bad, key=jax.random.key(0))


@pytest.mark.parametrize("bad", [0, 3, -1])
def test_bad_depth_raises(bad):
    with pytest.raises(ValueError, match=r"depth must be an integer in 1\.\.2"):
        NeuralRG(4, depth=bad, key=jax.random.key(0))


def test_bad_kernel_raises():
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        NeuralRG(4, kernel=lambda k: Affine(3), key=jax.random.key(0))


@pytest.mark.parametrize("shape", [(4,), (16,), (4, 5), (2, 4, 4)])
def test_wrong_input_shape_raises(flow, shape):
    with pytest.raises(ValueError, match=r"expected a configuration of shape \(4, 4\)"):
        flow.transform_and_log_det(jnp.zeros(shape))
    with pytest.raises(ValueError, match=r"expected a configuration of shape \(4, 4\)"):
        flow.inverse_and_log_det(jnp.zeros(shape))


def test_depth_option(flow_depth1, points):
    """depth=1 at L=4: one scale; the four sites at even coordinates are latent variables
    mixed by scale 0 only, and the kernels have one scale."""
    assert flow_depth1.depth == 1
    assert jax.tree.leaves(flow_depth1.kernels)[0].shape[:2] == (1, 2)
    assert jax.tree.leaves(tiny(jax.random.key(0)).kernels)[0].shape[:2] == (2, 2)
    parts = flow_depth1.latents_by_scale(points[0])
    assert [p.shape for p in parts] == [(2, 2, 3), (2, 2)]


def test_z2_symmetrized_flow(flow, points):
    model = Z2Symmetrized(Transformed(StandardNormal((L, L)), flow))
    lp = eqx.filter_jit(lambda m, x: jax.vmap(m.log_prob)(x))
    np.testing.assert_allclose(lp(model, points), lp(model, -points), rtol=1e-12)
    # and it differs from the unsymmetrised flow (whose log_prob is not even)
    plain = Transformed(StandardNormal((L, L)), flow)
    assert not np.allclose(lp(plain, points), lp(plain, -points))


def test_latents_by_scale(points):
    b = build_perturbed(lambda k: NeuralRG(8, n_couplings=2, hidden=(3,), key=k), 13)
    x = jax.random.normal(jax.random.key(5), (8, 8))
    parts, z = eqx.filter_jit(lambda b, x: (b.latents_by_scale(x), b.inverse(x)))(b, x)
    assert [p.shape for p in parts] == [(4, 4, 3), (2, 2, 3), (1, 1, 3), (1, 1)]
    assert [p.size for p in parts] == [48, 12, 3, 1]  # 3/4 of 64, 3/16 of 64, ...
    # every latent variable appears exactly once, grouped as scale_of_sites says
    scales = np.asarray(b.scale_of_sites())
    for s, p in enumerate(parts):
        np.testing.assert_allclose(np.sort(np.ravel(p)), np.sort(np.asarray(z)[scales == s]))
    np.testing.assert_array_equal(np.bincount(scales.ravel()), [48, 12, 3, 1])


@pytest.mark.slow
def test_trains_to_near_exact_free_energy():
    """Z2-symmetrised NeuralRG on the relaxed Ising model at L = 4, beta_c: the
    variational F approaches the exact one from above (fixed seeds; ~1 min)."""
    import math

    import optax

    from thermax.objectives import PathwiseFreeEnergy
    from thermax.systems import RelaxedIsing
    from thermax.train import Trainer, make_mesh

    beta = 0.5 * math.log(1.0 + math.sqrt(2.0))
    system = RelaxedIsing(L, beta)
    exact = system.exact_free_energy(beta) / system.n
    model = Z2Symmetrized(Transformed(StandardNormal((L, L)),
                                      NeuralRG(L, n_couplings=4, hidden=(10, 10),
                                               key=jax.random.key(0))))
    trainer = Trainer(PathwiseFreeEnergy(), optax.adam(3e-3), system, beta=beta, batch=256,
                      mesh=make_mesh(jax.devices()[:1]))
    state = trainer.init(model, key=jax.random.key(1))
    history = []
    for _ in range(600):
        state, stats = trainer.step(state)
        history.append(float(stats.free_energy) / system.n)
    last = float(np.mean(history[-100:]))
    assert np.isfinite(last)
    assert last > exact - 5e-3, f"variational F/N {last} below the exact {exact}"
    assert last < exact + 0.03 * abs(exact), f"F/N {last} not within 3% of exact {exact}"
