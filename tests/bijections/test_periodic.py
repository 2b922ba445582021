"""The periodic residual flow (PeriodicFermiNetLayer, periodic_ferminet_flow) and its
geometry helpers: round trip, log-det and the closed-form Jacobian against jacfwd,
translation equivariance, exact periodicity under lattice translations of single
electrons, permutation equivariance, the Lipschitz bound for arbitrary (and adversarially
trained) parameters, jit/vmap, folx's forward Laplacian and jvp-of-jvp against the Hessian
trace, and argument checks.

Each flow is built once with strongly perturbed weights and a large gain, and everything
checked about it is computed by one compiled function (module-scoped fixture). float64
throughout (tests/conftest.py).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturb

from thermax.bijections import Chain
from thermax.bijections._periodic import (
    PeriodicFermiNetLayer,
    minimum_image,
    periodic_distance,
    periodic_features,
    periodic_ferminet_flow,
)


def _layers(flow):
    return list(flow.bijections) if isinstance(flow, Chain) else [flow]


def _strong(flow, *, key, scale=0.5, gain=2.0):
    """Every weight of ``flow`` perturbed by N(0, scale^2) and every gain set to ``gain``
    (``tanh 2 = 0.96``: near the bound); the box is kept."""
    out = []
    for layer, k in zip(_layers(flow), jax.random.split(key, len(_layers(flow))), strict=True):
        noisy = perturb(layer, key=k, scale=scale)
        out.append(eqx.tree_at(lambda b: (b.gain, b.box_length), noisy,
                               (jnp.asarray(gain, layer.gain.dtype), layer.box_length)))
    return Chain(out) if isinstance(flow, Chain) else out[0]


def _bound(flow):
    """The guaranteed bound on ``||dz/dx - I||``: ``L |tanh gain|`` for one layer,
    ``prod_k (1 + L_k) - 1`` for a composition."""
    bounds = [b.lipschitz * abs(math.tanh(float(b.gain))) for b in _layers(flow)]
    assert all(b < 1 for b in bounds)
    return float(np.prod([1 + b for b in bounds]) - 1)


#: name -> constructor(key); small sizes, boxes of different sides.
FLOWS = {
    "layer-2d": lambda k: PeriodicFermiNetLayer(3, 2, 2.5, width=8, depth=2, pair_width=6,
                                                key=k),
    "flow-3d": lambda k: periodic_ferminet_flow(4, 3, jnp.asarray(3.0), layers=2, width=6,
                                                depth=1, key=k),
}
N_POINTS = 5


@eqx.filter_jit
def _report(flow, xs, shift, lattice, perm):
    """Everything the tests check about ``flow`` at the points ``xs``, in one program."""
    d = xs[0].size
    L = _layers(flow)[0].box_length
    zs, log_dets = flow.transform_and_log_det_batch(xs)
    moved = xs + jnp.broadcast_to(shift, xs.shape)
    jumped = xs + L * jnp.broadcast_to(lattice, xs.shape)
    back, inverse_log_dets = flow.inverse_and_log_det_batch(zs)
    jac = jax.vmap(jax.jacfwd(flow.transform))(xs).reshape(-1, d, d)
    signs, slogdets = jnp.linalg.slogdet(jac)
    first = _layers(flow)[0]
    closed = jax.vmap(lambda x: first._residual_and_jacobian(x)[1])(xs)
    autodiff = jax.vmap(jax.jacfwd(first._residual))(xs).reshape(-1, d, d)
    return dict(zs=zs, log_dets=log_dets, back=back, inverse_log_dets=inverse_log_dets,
                moved=flow.transform_and_log_det_batch(moved),
                jumped=flow.transform_and_log_det_batch(jumped),
                permuted=flow.transform_and_log_det_batch(xs[:, perm]), signs=signs,
                slogdets=slogdets, closed=closed, autodiff=autodiff,
                residual_norms=jnp.linalg.norm(jac - jnp.eye(d)[None], ord=2, axis=(1, 2)))


@pytest.fixture(params=list(FLOWS), scope="module")
def case(request):
    """(flow, box side, points, shift, integer lattice moves, permutation, report)."""
    k_init, k_noise, k_x, k_c, k_m, k_p = jax.random.split(
        jax.random.key(list(FLOWS).index(request.param)), 6)
    flow = _strong(FLOWS[request.param](k_init), key=k_noise)
    n, dim = flow.shape
    L = float(_layers(flow)[0].box_length)
    # inside and outside the box; electrons 0, 1 almost meeting directly and 1, 2 almost
    # meeting through the boundary (x_2 = x_1 + L e_0 + small)
    xs = jax.random.uniform(k_x, (N_POINTS, n, dim), minval=-1.5 * L, maxval=2.5 * L)
    xs = xs.at[0, 1].set(xs[0, 0] + 1e-4)
    xs = xs.at[1, 2].set(xs[1, 1] + L * jnp.eye(dim)[0] + 1e-4)
    shift = 3.0 * jax.random.normal(k_c, (1, 1, dim))
    lattice = jax.random.randint(k_m, (N_POINTS, n, dim), -2, 3).astype(xs.dtype)
    perm = jnp.roll(jax.random.permutation(k_p, n), 1)
    report = jax.tree.map(np.asarray, _report(flow, xs, shift, lattice, perm))
    return flow, L, np.asarray(xs), np.asarray(shift), np.asarray(lattice), perm, report


def test_not_identity(case):
    _, _, xs, _, _, _, r = case
    assert np.max(np.abs(r["zs"] - xs)) > 1e-2
    assert np.max(np.abs(r["log_dets"])) > 1e-3


def test_round_trip(case):
    """inverse(transform(x)) = x to 1e-10; the inverse log-det is minus the forward."""
    _, _, xs, _, _, _, r = case
    np.testing.assert_allclose(r["back"], xs, atol=1e-10, rtol=0)
    np.testing.assert_allclose(r["inverse_log_dets"], -r["log_dets"], atol=1e-10, rtol=0)


def test_log_det_matches_jacobian(case):
    """The log-det against slogdet of jacfwd of the public transform; positive det."""
    _, _, _, _, _, _, r = case
    np.testing.assert_allclose(r["log_dets"], r["slogdets"], atol=1e-10, rtol=0)
    np.testing.assert_array_equal(r["signs"], 1.0)


def test_closed_form_jacobian(case):
    """The layer's closed-form Jacobian of f equals jacfwd of f, entry by entry."""
    _, _, _, _, _, _, r = case
    np.testing.assert_allclose(r["closed"], r["autodiff"], atol=1e-12, rtol=0)
    assert np.max(np.abs(r["autodiff"])) > 1e-2


def test_translation_equivariant(case):
    """z(x + c) = z(x) + c for a translation c of every electron; log-det unchanged."""
    _, _, _, shift, _, _, r = case
    z, log_det = r["moved"]
    np.testing.assert_allclose(z, r["zs"] + shift, atol=1e-11, rtol=0)
    np.testing.assert_allclose(log_det, r["log_dets"], atol=1e-11, rtol=0)


def test_periodic(case):
    """Moving electrons by lattice vectors L m (m integer, per electron and axis) moves
    their images by the same vectors; log-det unchanged."""
    _, L, _, _, lattice, _, r = case
    assert np.any(lattice != 0)
    z, log_det = r["jumped"]
    np.testing.assert_allclose(z, r["zs"] + L * lattice, atol=1e-11, rtol=0)
    np.testing.assert_allclose(log_det, r["log_dets"], atol=1e-11, rtol=0)


def test_permutation_equivariant(case):
    _, _, _, _, _, perm, r = case
    z, log_det = r["permuted"]
    np.testing.assert_allclose(z, r["zs"][:, perm], atol=1e-12, rtol=0)
    np.testing.assert_allclose(log_det, r["log_dets"], atol=1e-12, rtol=0)


def test_lipschitz_bound(case):
    flow, _, _, _, _, _, r = case
    assert np.all(r["residual_norms"] <= _bound(flow)), (r["residual_norms"], _bound(flow))


@pytest.mark.parametrize("box", [0.3, 4.0, 50.0])
def test_lipschitz_bound_any_parameters(box):
    """||df/dx|| <= lipschitz tanh(gain) over 200 points (clustered at several scales
    relative to the box) for a fresh layer and one with very strongly perturbed weights,
    both with a saturated gain, in a small, medium and large box; the fresh (orthogonal)
    layer uses a sizeable part of the bound."""
    k1, k2, k3 = jax.random.split(jax.random.key(int(10 * box)), 3)
    fresh = PeriodicFermiNetLayer(3, 2, box, width=8, depth=2, key=k1)
    layers = (_strong(fresh, key=k2, scale=0.0, gain=4.0),
              _strong(fresh, key=k2, scale=3.0, gain=4.0))
    scales = jnp.repeat(jnp.array([0.02, 0.1, 0.3, 1.0]), 50)[:, None, None] * box
    xs = scales * jax.random.normal(k3, (200, 3, 2))
    jacs = eqx.filter_jit(lambda fs, xs: [jax.vmap(jax.jacfwd(f.transform))(xs) for f in fs])(
        layers, xs)
    bound = fresh.lipschitz * np.tanh(4.0)
    norms = [np.linalg.norm(np.asarray(j).reshape(200, 6, 6) - np.eye(6), ord=2, axis=(1, 2))
             for j in jacs]
    assert max(np.max(n) for n in norms) <= bound
    assert np.max(norms[0]) > 0.1 * bound
    assert np.max(norms[1]) > 1e-4


def test_lipschitz_bound_adversarial():
    """Gradient ascent on the weights to maximise ||df/dx||_2 at a few configurations
    gets close to the bound but never past it."""
    import optax

    layer = _strong(PeriodicFermiNetLayer(3, 2, 2.0, width=8, depth=1, key=jax.random.key(1)),
                    key=jax.random.key(2), scale=0.0, gain=6.0)
    xs = 2.0 * jax.random.uniform(jax.random.key(3), (4, 3, 2))
    params, static = eqx.partition(layer, eqx.is_inexact_array)
    frozen = lambda g: eqx.tree_at(lambda q: (q.box_length, q.gain), g,  # noqa: E731
                                   (jnp.zeros_like(g.box_length), jnp.zeros_like(g.gain)))

    def largest(p):
        jac = jax.vmap(jax.jacfwd(lambda x: eqx.combine(p, static)._residual(x)))(xs)
        return jnp.max(jnp.linalg.norm(jac.reshape(4, 6, 6), ord=2, axis=(1, 2)))

    opt = optax.adam(3e-2)

    @jax.jit
    def ascend(params):
        def step(carry, _):
            p, state = carry
            value, grad = jax.value_and_grad(largest)(p)
            updates, state = opt.update(jax.tree.map(jnp.negative, frozen(grad)), state)
            return (optax.apply_updates(p, updates), state), value
        return jax.lax.scan(step, (params, opt.init(params)), length=80)[1]

    values = np.asarray(ascend(params))
    bound = layer.lipschitz * np.tanh(6.0)
    assert np.max(values) <= bound
    assert values[-1] > 0.5 * bound > 2 * values[0] > 0


def test_near_identity_at_initialisation():
    """A fresh flow is close to, but not exactly, the identity."""
    flow = periodic_ferminet_flow(4, 2, 5.0, layers=2, width=8, depth=2, key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (4, 2), maxval=5.0)
    z, log_det = eqx.filter_jit(lambda f, x: f.transform_and_log_det(x))(flow, x)
    assert 0 < np.max(np.abs(z - x)) < 0.05 * 5.0
    assert 0 < abs(float(log_det)) < 0.1


def test_jit_vmap_agree_with_eager(case):
    """The jitted batch (vmap) equals one eager, unbatched evaluation."""
    flow, _, xs, _, _, _, r = case
    z, log_det = flow.transform_and_log_det(jnp.asarray(xs[2]))
    np.testing.assert_allclose(z, r["zs"][2], atol=1e-12, rtol=0)
    np.testing.assert_allclose(log_det, r["log_dets"][2], atol=1e-12, rtol=0)


def test_box_length_scaling_and_no_gradient():
    """The box enters only through k = 2 pi / L and the prefactor 1 / k: with the same
    weights, z_L(x) = (L / L') z_L'(x L' / L); the box is a constant (zero gradient)."""
    layer = _strong(PeriodicFermiNetLayer(3, 2, 2.0, width=6, depth=1, key=jax.random.key(3)),
                    key=jax.random.key(4))
    other = eqx.tree_at(lambda b: b.box_length, layer, jnp.asarray(7.0))
    x = jax.random.uniform(jax.random.key(5), (3, 2), maxval=2.0)

    @eqx.filter_jit
    def run(layer, other, x):
        grad = jax.grad(lambda L: jnp.sum(eqx.tree_at(lambda b: b.box_length, layer, L)
                                          .transform_and_log_det(x)[0]))(layer.box_length)
        return layer.transform_and_log_det(x), other.transform_and_log_det(x * 3.5), grad

    (z, log_det), (z_other, log_det_other), grad = run(layer, other, x)
    np.testing.assert_allclose(z, z_other / 3.5, atol=1e-12, rtol=0)
    np.testing.assert_allclose(log_det, log_det_other, atol=1e-12, rtol=0)
    assert float(grad) == 0.0


def test_forward_laplacian_folx():
    """folx's forward Laplacian through the flow (output and log-det) and the
    forward-over-forward one (jvp of jvp) agree with the trace of jax.hessian; folx's
    gradient with jax.grad."""
    import folx

    flow = _strong(periodic_ferminet_flow(3, 2, 2.5, layers=2, width=6, depth=1,
                                          key=jax.random.key(8)), key=jax.random.key(9))
    x = jax.random.uniform(jax.random.key(10), (6,), maxval=2.5)
    phase = 2 * math.pi / 2.5 * jnp.arange(1.0, 7.0).reshape(3, 2)

    def scalar(v):
        z, log_det = flow.transform_and_log_det(v.reshape(3, 2))
        return jnp.sum(jnp.cos(phase * z)) + 0.3 * jnp.sum(z**2) + log_det

    @jax.jit
    def both(x):
        out = folx.forward_laplacian(scalar, sparsity_threshold=0, disable_jit=True)(x)
        jvp_jvp = jax.vmap(lambda e: jax.jvp(lambda u: jax.jvp(scalar, (u,), (e,))[1],
                                             (x,), (e,))[1])(jnp.eye(x.size))
        return (out.x, out.jacobian.dense_array.reshape(-1), out.laplacian, scalar(x),
                jax.grad(scalar)(x), jnp.trace(jax.hessian(scalar)(x)), jnp.sum(jvp_jvp))

    with jax.numpy_rank_promotion("allow"):  # folx broadcasts implicitly in its rules
        value, grad, laplacian, value_ref, grad_ref, laplacian_ref, laplacian_jvp = both(x)
    np.testing.assert_allclose(value, value_ref, atol=1e-12)
    np.testing.assert_allclose(grad, grad_ref, atol=1e-10)
    np.testing.assert_allclose(laplacian, laplacian_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(laplacian_jvp, laplacian_ref, rtol=1e-9, atol=1e-9)
    assert abs(float(laplacian_ref)) > 1e-2


def test_helpers():
    L = 2.0
    dx = jax.random.uniform(jax.random.key(0), (50, 3), minval=-5.0, maxval=5.0)
    m = minimum_image(dx, L)
    assert np.all(np.abs(m) <= L / 2 + 1e-12)
    np.testing.assert_allclose(np.round((dx - m) / L) * L, dx - m, atol=1e-12)
    lattice = L * jax.random.randint(jax.random.key(1), dx.shape, -3, 4)
    # features: 2 dim, periodic, k-Lipschitz (|d features| = k |d dx| exactly)
    feats = periodic_features(dx, L)
    assert feats.shape == (50, 6)
    np.testing.assert_allclose(periodic_features(dx + lattice, L), feats, atol=1e-12)
    jac = jax.vmap(jax.jacfwd(lambda v: periodic_features(v, L)))(dx)
    np.testing.assert_allclose(np.linalg.norm(jac, ord=2, axis=(1, 2)), 2 * math.pi / L)
    # distance: periodic, ~|dx| near 0, L sqrt(dim) / pi at the box's far corner,
    # 1-Lipschitz, zero gradient at the lattice points
    dist = periodic_distance(dx, L)
    assert dist.shape == (50,)
    np.testing.assert_allclose(periodic_distance(dx + lattice, L), dist, atol=1e-12)
    np.testing.assert_allclose(periodic_distance(m, L), dist, atol=1e-12)
    small = 1e-3 * dx[:5]
    np.testing.assert_allclose(periodic_distance(small, L), jnp.linalg.norm(small, axis=-1),
                               rtol=1e-5)
    np.testing.assert_allclose(periodic_distance(jnp.full((3,), L / 2), L),
                               L * math.sqrt(3) / math.pi)
    grads = jax.vmap(jax.grad(lambda v: periodic_distance(v, L)))(dx)
    assert np.all(np.linalg.norm(grads, axis=-1) <= 1 + 1e-12)
    np.testing.assert_array_equal(jax.grad(lambda v: periodic_distance(v, L))(jnp.zeros(3)),
                                  0.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(box_length=0.0), "box_length must be positive"),
    (dict(box_length=-1.0), "box_length must be positive"),
    (dict(box_length=jnp.ones(2)), "box_length must be a scalar"),
    (dict(lipschitz=1.0), "lipschitz must lie in"),
    (dict(lipschitz=0.0), "lipschitz must lie in"),
    (dict(lipschitz=1.5), "lipschitz must lie in"),
    (dict(width=0), "width must be >= 1"),
    (dict(depth=0), "depth must be >= 1"),
    (dict(pair_width=0), "pair_width must be >= 1"),
    (dict(n=0), "n must be >= 1"),
    (dict(dim=0), "dim must be >= 1"),
    (dict(max_iter=0), "max_iter must be"),
])
@pytest.mark.parametrize("builder", ["layer", "flow"])
def test_bad_arguments(builder, kwargs, match, without_jaxtyping):
    args = dict(n=3, dim=2, box_length=2.0, width=4, depth=1) | kwargs
    n, dim, box = args.pop("n"), args.pop("dim"), args.pop("box_length")
    with pytest.raises(ValueError, match=match):
        if builder == "layer":
            PeriodicFermiNetLayer(n, dim, box, key=jax.random.key(0), **args)
        else:
            periodic_ferminet_flow(n, dim, box, layers=2, key=jax.random.key(0), **args)


def test_bad_layers_and_shape():
    with pytest.raises(ValueError, match="layers must be >= 1"):
        periodic_ferminet_flow(3, 2, 2.0, layers=0, width=4, depth=1, key=jax.random.key(0))
    layer = PeriodicFermiNetLayer(3, 2, 2.0, width=4, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"expected a configuration of shape \(3, 2\)"):
        layer.transform(jnp.zeros((2, 3)))
