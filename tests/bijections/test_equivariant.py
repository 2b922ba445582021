"""Equivariant residual bijections of particle coordinates (FermiNetLayer, ferminet_flow,
Backflow): permutation equivariance, round trip by fixed point, log-det against an
independent Jacobian, the enforced Lipschitz bound, implicit gradients of the inverse,
non-convergence raising, and argument checks.

Each flow is built once with random (perturbed) weights and a large gain, and everything
checked about it is computed by one compiled function (module-scoped cache), so the file
compiles each flow once. float64 throughout (tests/conftest.py).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturb

from thermax.bijections import Backflow, Chain, FermiNetLayer, Scan, backflow_flow, ferminet_flow


def _strong(flow, gain=2.0):
    """``flow`` with every gain set to ``gain`` (``tanh 2 = 0.96``: near the bound)."""
    if isinstance(flow, Scan):
        return eqx.tree_at(lambda f: f.stacked.gain, flow,
                           jnp.full_like(flow.stacked.gain, gain))
    if isinstance(flow, Chain):
        return Chain([_strong(b, gain) for b in flow.bijections])
    return eqx.tree_at(lambda f: f.gain, flow, jnp.asarray(gain, flow.gain.dtype))


#: name -> (constructor(key), whether it is a single residual layer).
FLOWS = {
    "ferminet-layer": (lambda k: FermiNetLayer(3, 2, width=8, depth=2, pair_width=6, key=k),
                       True),
    "ferminet-flow-3d": (lambda k: ferminet_flow(3, 3, layers=2, width=6, depth=1, key=k),
                         False),
    "backflow": (lambda k: Backflow(3, 2, width=8, depth=2, key=k), True),
    "backflow-3d": (lambda k: Backflow(4, 3, width=6, depth=1, lipschitz=0.99, key=k), True),
    "backflow-squared": (lambda k: Backflow(3, 2, width=8, depth=2, radial="squared", key=k),
                         True),
    "backflow-flow": (lambda k: backflow_flow(3, 2, layers=2, width=6, depth=1, key=k), False),
}
N_POINTS = 4


def _points(shape, key):
    """Random configurations, one with two particles almost on top of each other."""
    xs = 1.5 * jax.random.normal(key, (N_POINTS, *shape))
    return xs.at[0, 1].set(xs[0, 0] + 1e-4)


@eqx.filter_jit
def _report(flow, xs, perm):
    """Everything the tests check about ``flow`` at the points ``xs``, in one program."""
    d = xs[0].size
    zs, log_dets = flow.transform_and_log_det_batch(xs)
    zs_perm, log_dets_perm = flow.transform_and_log_det_batch(xs[:, perm])
    back, inverse_log_dets = flow.inverse_and_log_det_batch(zs)
    jac = jax.vmap(jax.jacfwd(flow.transform))(xs).reshape(-1, d, d)
    inverse_jac = jax.jacfwd(flow.inverse)(zs[1]).reshape(d, d)
    signs, slogdets = jnp.linalg.slogdet(jac)
    residual_norms = jnp.linalg.norm(jac - jnp.eye(d)[None], ord=2, axis=(1, 2))
    return dict(zs=zs, log_dets=log_dets, zs_perm=zs_perm, log_dets_perm=log_dets_perm,
                back=back, inverse_log_dets=inverse_log_dets, signs=signs,
                slogdets=slogdets, residual_norms=residual_norms, jac=jac,
                inverse_jac=inverse_jac)


_CACHE = {}


def _get(name):
    if name not in _CACHE:
        make, _ = FLOWS[name]
        k_init, k_noise, k_x, k_perm = jax.random.split(jax.random.key(list(FLOWS).index(name)),
                                                        4)
        flow = _strong(perturb(make(k_init), key=k_noise))
        xs = _points(flow.shape, k_x)
        perm = jax.random.permutation(k_perm, flow.shape[0])
        perm = perm if not np.array_equal(perm, np.arange(flow.shape[0])) else perm[::-1]
        _CACHE[name] = flow, xs, perm, jax.tree.map(np.asarray, _report(flow, xs, perm))
    return _CACHE[name]


@pytest.fixture(params=list(FLOWS), scope="module")
def name(request):
    return request.param


def test_not_identity(name):
    _, xs, _, r = _get(name)
    assert np.max(np.abs(r["zs"] - xs)) > 1e-2
    assert np.max(np.abs(r["log_dets"])) > 1e-4


def test_permutation_equivariant(name):
    """f(P x) = P f(x) and the log-det is invariant."""
    _, _, perm, r = _get(name)
    np.testing.assert_allclose(r["zs_perm"], r["zs"][:, perm], atol=1e-12, rtol=0)
    np.testing.assert_allclose(r["log_dets_perm"], r["log_dets"], atol=1e-12, rtol=0)


def test_round_trip(name):
    """inverse(transform(x)) = x to 1e-10, and the inverse log-det is minus the forward."""
    _, xs, _, r = _get(name)
    np.testing.assert_allclose(r["back"], xs, atol=1e-10, rtol=0)
    np.testing.assert_allclose(r["inverse_log_dets"], -r["log_dets"], atol=1e-10, rtol=0)


def test_log_det_matches_jacobian(name):
    """The log-det against slogdet of the Jacobian by jacfwd of the public transform; the
    determinant is positive."""
    _, _, _, r = _get(name)
    np.testing.assert_allclose(r["log_dets"], r["slogdets"], atol=1e-10, rtol=0)
    np.testing.assert_array_equal(r["signs"], 1.0)


def test_inverse_jacobian_is_inverse_matrix(name):
    """Forward-mode through the fixed point (implicit function theorem) gives
    d x / d z = (d z / d x)^{-1}."""
    _, _, _, r = _get(name)
    np.testing.assert_allclose(r["inverse_jac"], np.linalg.inv(r["jac"][1]), atol=1e-10)


def test_lipschitz_bound(name):
    """||d f/dx||_2 <= lipschitz * |tanh gain| < 1 at every point (one near coalescence)
    for a single layer; for a stack ``prod_k (I + f_k)``, ``||J - I|| <= prod_k (1 + L_k)
    - 1`` with ``L_k`` the layers' bounds."""
    flow, _, _, r = _get(name)
    if FLOWS[name][1]:
        bound = flow.lipschitz * abs(np.tanh(float(flow.gain)))
        assert bound < 1
    else:
        layers = ([flow.stacked] if isinstance(flow, Scan) else list(flow.bijections))
        layer_bounds = np.concatenate([
            b.lipschitz * np.abs(np.tanh(np.atleast_1d(np.asarray(b.gain)))) for b in layers])
        assert np.all(layer_bounds < 1)
        bound = np.prod(1 + layer_bounds) - 1
    assert np.all(r["residual_norms"] <= bound), (r["residual_norms"], bound)


def test_lipschitz_bound_many_points():
    """The bound for a Backflow and a FermiNetLayer over 200 random points, including
    strongly clustered configurations (where the pair terms are largest)."""
    key = jax.random.key(7)
    for make in (lambda k: Backflow(3, 2, width=8, depth=2, key=k),
                 lambda k: Backflow(3, 2, width=8, depth=2, radial="squared", key=k),
                 lambda k: FermiNetLayer(3, 2, width=8, depth=2, key=k)):
        k1, k2, k3, key = jax.random.split(key, 4)
        flow = _strong(perturb(make(k1), key=k2, scale=1.0), gain=4.0)
        scales = jnp.repeat(jnp.array([0.05, 0.3, 1.0, 3.0]), 50)[:, None, None]
        xs = scales * jax.random.normal(k3, (200, 3, 2))
        jac = eqx.filter_jit(lambda f, xs: jax.vmap(jax.jacfwd(f.transform))(xs))(flow, xs)
        norms = np.linalg.norm(np.asarray(jac).reshape(200, 6, 6) - np.eye(6), ord=2,
                               axis=(1, 2))
        assert np.max(norms) <= flow.lipschitz * np.tanh(4.0)
        assert np.max(norms) > 1e-3  # the layer does something


def test_identity_at_initialisation():
    x = jax.random.normal(jax.random.key(0), (3, 2))
    flows = (FermiNetLayer(3, 2, width=4, depth=1, key=jax.random.key(1)),
             Backflow(3, 2, width=4, depth=1, key=jax.random.key(1)),
             ferminet_flow(3, 2, layers=2, width=4, depth=1, key=jax.random.key(1)))
    results = eqx.filter_jit(lambda fs, x: [f.transform_and_log_det(x) for f in fs])(flows, x)
    for z, log_det in results:
        np.testing.assert_array_equal(z, x)
        assert float(log_det) == 0.0


def test_backflow_rotation_equivariant():
    """Backflow sees only distances: f(x R) = f(x) R for an orthogonal R."""
    flow, xs, _, r = _get("backflow")
    theta = 0.7
    rot = jnp.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    z_rot = eqx.filter_jit(lambda f, x: f.transform(x))(flow, xs[1] @ rot)
    np.testing.assert_allclose(z_rot, r["zs"][1] @ rot, atol=1e-12)


def test_inverse_parameter_gradient():
    """The gradient of the inverse with respect to a parameter (implicit differentiation)
    against central finite differences."""
    flow = _strong(perturb(Backflow(3, 2, width=6, depth=1, key=jax.random.key(3)),
                           key=jax.random.key(4)), gain=1.0)
    z = jax.random.normal(jax.random.key(5), (3, 2))
    direction = jax.random.normal(jax.random.key(6), (3, 2))

    @eqx.filter_jit
    def loss(gain):
        f = eqx.tree_at(lambda b: b.gain, flow, gain)
        return jnp.vdot(direction, f.inverse(z))

    grad = jax.grad(loss)(flow.gain)
    eps = 1e-5
    fd = (loss(flow.gain + eps) - loss(flow.gain - eps)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)
    assert abs(float(grad)) > 1e-3


def test_not_converged_raises():
    """Too few fixed-point iterations raise instead of returning a wrong inverse."""
    flow = _strong(perturb(Backflow(3, 2, width=6, depth=1, max_iter=2, key=jax.random.key(3)),
                           key=jax.random.key(4)))
    z = jax.random.normal(jax.random.key(5), (3, 2))
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge"):
        jax.block_until_ready(eqx.filter_jit(lambda f, z: f.inverse(z))(flow, z))


@pytest.mark.parametrize("kwargs, match", [
    (dict(lipschitz=1.0), "lipschitz must lie in"),
    (dict(lipschitz=0.0), "lipschitz must lie in"),
    (dict(max_iter=0), "max_iter must be"),
    (dict(tol=-1e-3), "tol must be positive"),
    (dict(width=0), "width must be >= 1"),
    (dict(depth=0), "depth must be >= 1"),
])
@pytest.mark.parametrize("cls", [FermiNetLayer, Backflow])
def test_bad_arguments(cls, kwargs, match):
    args = dict(width=4, depth=1) | kwargs
    with pytest.raises(ValueError, match=match):
        cls(3, 2, key=jax.random.key(0), **args)


def test_bad_arguments_builder_and_shape():
    with pytest.raises(ValueError, match="layers must be >= 1"):
        ferminet_flow(3, 2, layers=0, width=4, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="n must be >= 1"):
        ferminet_flow(0, 2, layers=2, width=4, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="layers must be >= 1"):
        backflow_flow(3, 2, layers=0, width=4, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="radial must be 'distance' or 'squared'"):
        Backflow(3, 2, width=4, depth=1, radial="log", key=jax.random.key(0))
    flow = Backflow(3, 2, width=4, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"expected a configuration of shape \(3, 2\)"):
        flow.transform(jnp.zeros((2, 3)))


def test_backflow_distance_gives_a_cusp():
    """At coalescence, the log-det of a distance backflow has a term linear in |r| (the
    slope a wavefunction's electron-electron cusp needs); the squared form's is quadratic.
    Two particles at +-(t/2, 0): the one-sided slope d ln det / dt at t -> 0."""
    def slope(radial):
        flow = _strong(perturb(Backflow(2, 2, width=6, depth=1, radial=radial,
                                        key=jax.random.key(11)), key=jax.random.key(12)))

        def log_det(t):
            x = jnp.array([[t / 2, 0.0], [-t / 2, 0.0]])
            return flow.transform_and_log_det(x)[1]
        t = 1e-6
        return float((log_det(2 * t) - log_det(t)) / t)
    assert abs(slope("distance")) > 1e-2
    assert abs(slope("squared")) < 1e-4
