"""Velocity fields and potentials of continuous flows: exact divergences, symmetries, init.

Every field and potential is built once with every parameter randomly perturbed (so no
last layer is zero and nothing is trivially symmetric), and each family of checks is
traced in one compiled call (compilation dominates on CPU).
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturb

from thermax.nn import (
    AbstractPotential,
    AbstractVelocityField,
    BackflowField,
    ConvPotential,
    MLPPotential,
    MLPVelocity,
    MongeAmpereField,
    OneHiddenLayerPotential,
    ParticlePotential,
    SymmetrizedPotential,
    TranslationInvariantPotential,
    jacobian_trace,
)

#: Every potential, small, by name
POTENTIALS = {
    "one-hidden-z2": lambda key: OneHiddenLayerPotential((3, 3), hidden=6, key=key),
    "one-hidden-softplus": lambda key: OneHiddenLayerPotential((5,), hidden=6, z2=False,
                                                               key=key),
    "mlp": lambda key: MLPPotential((2, 3), width=5, depth=2, key=key),
    "mlp-autonomous": lambda key: MLPPotential((4,), width=5, depth=1, time=False, key=key),
    "sym-d4": lambda key: SymmetrizedPotential(MLPPotential((3, 3), width=4, depth=1,
                                                            key=key), "d4"),
    "sym-z2": lambda key: SymmetrizedPotential(MLPPotential((5,), width=4, depth=1, key=key),
                                               "z2"),
    "sym-d4z2-channels": lambda key: SymmetrizedPotential(
        MLPPotential((3, 3, 2), width=4, depth=1, key=key), "d4z2"),
    "sym-d4-one-hidden": lambda key: SymmetrizedPotential(
        OneHiddenLayerPotential((3, 3), hidden=5, z2=False, key=key), "d4"),
    "translation-z2": lambda key: TranslationInvariantPotential((4, 4), hidden=3, key=key),
    "translation-softplus": lambda key: TranslationInvariantPotential((3, 4), hidden=3,
                                                                      z2=False, key=key),
    "conv-z2": lambda key: ConvPotential((4, 5), hidden=3, kernel_size=3, key=key),
    "conv-softplus": lambda key: ConvPotential((3, 4), hidden=2, kernel_size=3, z2=False,
                                               key=key),
    "particles-2d": lambda key: ParticlePotential(4, 2, width=5, depth=2, key=key),
    "particles-3d": lambda key: ParticlePotential(3, 3, width=4, depth=1, key=key),
}

#: Every field, small, by name: the generic MLP, the Monge–Ampère field of every
#: potential, and the backflow field
FIELDS = {
    "mlp-velocity": lambda key: MLPVelocity((2, 3), width=5, depth=2, key=key),
    **{f"monge-ampere-{name}": (lambda key, make=make: MongeAmpereField(make(key)))
       for name, make in POTENTIALS.items()},
    "backflow-2d": lambda key: BackflowField(4, 2, width=5, depth=2, key=key),
    "backflow-3d": lambda key: BackflowField(3, 3, width=4, depth=1, key=key),
}

#: Fields of identical particles (shape (n, dim))
PARTICLE_FIELDS = ["monge-ampere-particles-2d", "monge-ampere-particles-3d", "backflow-2d",
                   "backflow-3d"]

BATCH = 3
T = 0.37


def _key(seed):
    return jax.random.key(seed, impl="rbg")


def _perturbed(registry: str, name: str):
    """``(build, k_init, k_noise)``: ``build(k_init, k_noise)`` is the module ``name`` of
    ``registry`` ("fields" or "potentials") with every parameter perturbed; traced inside
    the compiled checks (eager initialisation is slow)."""
    makers = FIELDS if registry == "fields" else POTENTIALS
    seed = 7 * list(makers).index(name) + (0 if registry == "fields" else 1000)
    k_init, k_noise = jax.random.split(_key(seed))
    return (lambda k1, k2: perturb(makers[name](k1), key=k2)), k_init, k_noise


def built(registry: str, name: str):
    """The perturbed module ``name`` of ``registry`` (cached with its checks)."""
    return (field_results if registry == "fields" else potential_results)(name)[0]


def _points(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(BATCH, *shape)))


close = functools.partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-11)


# ------------------------------------------------------------------------------------------
# exact divergences and gradients


def _field_checks(field, xs):
    """The field's velocity and divergence against its call and the Jacobian trace."""
    t = jnp.asarray(T)

    def one(x):
        v, div = field.velocity_and_divergence(t, x)
        return dict(v=v, div=div, call=field(t, x), div_method=field.divergence(t, x),
                    trace=jacobian_trace(lambda y: field(t, y), x))

    return jax.vmap(one)(xs)


@functools.cache
def field_results(name):
    """``(field, results)``: the perturbed field and :func:`_field_checks` (one program)."""
    if name.startswith("monge-ampere-"):  # checked with its potential, in one program
        phi, r = potential_results(name.removeprefix("monge-ampere-"))
        return MongeAmpereField(phi), r["field"]
    build, k_init, k_noise = _perturbed("fields", name)
    xs = _points(eqx.filter_eval_shape(build, k_init, k_noise).shape, 1)

    @eqx.filter_jit
    def run(k_init, k_noise, xs):
        field = build(k_init, k_noise)
        return field, _field_checks(field, xs)

    field, r = run(k_init, k_noise, xs)
    return field, jax.tree.map(np.asarray, r)


@pytest.mark.parametrize("name", list(FIELDS))
def test_divergence_is_the_jacobian_trace(name):
    _, r = field_results(name)
    assert np.abs(r["v"]).max() > 1e-3, "perturbed field is ~zero: the test is vacuous"
    assert np.abs(r["div"]).max() > 1e-3, "perturbed field is divergence-free"
    close(r["v"], r["call"])
    close(r["div"], r["trace"])
    close(r["div_method"], r["div"])


@functools.cache
def potential_results(name):
    """``(phi, results)``: the perturbed potential, its gradient and Laplacian against
    autodiff, and :func:`_field_checks` of its Monge–Ampère field (one program)."""
    build, k_init, k_noise = _perturbed("potentials", name)
    xs = _points(eqx.filter_eval_shape(build, k_init, k_noise).shape, 2)

    @eqx.filter_jit
    def run(k_init, k_noise, xs):
        phi = build(k_init, k_noise)
        t = jnp.asarray(T)

        def one(x):
            g, lap = phi.gradient_and_laplacian(t, x)
            hess = jax.hessian(lambda y: phi(t, y))(x).reshape(x.size, x.size)
            return dict(g=g, lap=lap, gradient=phi.gradient(t, x), laplacian=phi.laplacian(t, x),
                        auto_g=jax.grad(lambda y: phi(t, y))(x), auto_lap=jnp.trace(hess))

        return phi, dict(jax.vmap(one)(xs), field=_field_checks(MongeAmpereField(phi), xs))

    phi, r = run(k_init, k_noise, xs)
    return phi, jax.tree.map(np.asarray, r)


@pytest.mark.parametrize("name", list(POTENTIALS))
def test_potential_gradient_and_laplacian_match_autodiff(name):
    _, r = potential_results(name)
    assert np.abs(r["auto_g"]).max() > 1e-3 and np.abs(r["auto_lap"]).max() > 1e-3
    tight = functools.partial(np.testing.assert_allclose, rtol=1e-12, atol=1e-12)
    tight(r["g"], r["auto_g"])
    tight(r["gradient"], r["auto_g"])
    tight(r["lap"], r["auto_lap"])
    tight(r["laplacian"], r["auto_lap"])


def test_analytic_divergence_flags():
    assert not MLPVelocity.analytic_divergence
    assert MongeAmpereField.analytic_divergence and BackflowField.analytic_divergence
    for make in FIELDS.values():
        assert isinstance(eqx.filter_eval_shape(make, _key(0)), AbstractVelocityField)
    for make in POTENTIALS.values():
        assert isinstance(eqx.filter_eval_shape(make, _key(0)), AbstractPotential)


# ------------------------------------------------------------------------------------------
# initialisation


@functools.cache
def fresh_results():
    """Every freshly built field at random points, in one compiled call."""
    keys = {name: _key(3 + i) for i, name in enumerate(FIELDS)}
    shapes = {name: eqx.filter_eval_shape(FIELDS[name], keys[name]).shape for name in FIELDS}
    xs = {name: _points(shape, 3) for name, shape in shapes.items()}

    @eqx.filter_jit
    def run(keys, xs):
        out = {}
        for name, make in FIELDS.items():
            field = make(keys[name])
            out[name] = jax.vmap(field.velocity_and_divergence, in_axes=(None, 0))(
                jnp.asarray(T), xs[name])
        return out

    return jax.tree.map(np.asarray, run(keys, xs))


@pytest.mark.parametrize("name", list(FIELDS))
def test_fresh_field_is_zero(name):
    v, div = fresh_results()[name]
    assert np.all(v == 0.0) and np.all(div == 0.0)


def test_one_hidden_layer_initialisation():
    phi = OneHiddenLayerPotential((16, 16), hidden=512, key=_key(0))
    assert phi.bias is None and phi.weight.shape == (512, 256)
    assert np.all(np.asarray(phi.out) == 0.0)
    # fan-in scale: W_k . x has unit variance for x ~ N(0, I)
    assert abs(float(jnp.mean(jnp.sum(phi.weight**2, axis=1))) - 1.0) < 0.05
    soft = OneHiddenLayerPotential((4,), hidden=3, z2=False, key=_key(0))
    assert soft.bias is not None and np.all(np.asarray(soft.bias) == 0.0)


@pytest.mark.parametrize("make", [OneHiddenLayerPotential, TranslationInvariantPotential],
                         ids=["dense", "translation"])
def test_uniform_initialisation(make):
    """init="uniform": every layer uniform in +-1/sqrt(fan-in) (PyTorch's nn.Linear), so
    the flow starts as a nonzero map; bad names are one clear error."""
    hidden, shape = 64, (8, 8)
    phi = make(shape, hidden=hidden, z2=False, key=_key(1), init="uniform")
    first = phi.weight if make is OneHiddenLayerPotential else phi.kernel
    for array, bound in ((first, 1 / 8), (phi.bias, 1 / 8), (phi.out, 1 / 8)):
        values = np.asarray(array)
        assert np.all(np.abs(values) <= bound)
        # uniform: variance bound^2 / 3 (loose: 64 to 4096 draws)
        assert abs(values.var() / (bound**2 / 3) - 1) < 0.35
    v, _ = MongeAmpereField(phi).velocity_and_divergence(jnp.zeros(()), jnp.ones(shape))
    assert float(jnp.max(jnp.abs(v))) > 0
    with pytest.raises(ValueError, match="init must be one of"):
        make(shape, hidden=2, key=_key(0), init="zeros")


# ------------------------------------------------------------------------------------------
# the one-hidden-layer potential: Z2, stability


def test_one_hidden_layer_z2_symmetry():
    even = built("potentials", "one-hidden-z2")
    soft = built("potentials", "one-hidden-softplus")

    @eqx.filter_jit
    def run(even, soft, x, y):
        t = jnp.asarray(0.0)
        return (even(t, x), even(t, -x), even.gradient(t, x), even.gradient(t, -x),
                soft(t, y), soft(t, -y))

    x, y = _points((3, 3), 4)[0], _points((5,), 5)[0]
    p, p_neg, g, g_neg, q, q_neg = map(np.asarray, run(even, soft, x, y))
    close(p, p_neg)
    close(g_neg, -g)                 # v(-x) = -v(x): the flow commutes with x -> -x
    assert abs(q - q_neg) > 1e-3     # not vacuous: the softplus potential is not even


def test_one_hidden_layer_is_stable_and_exact_at_extremes():
    phi = built("potentials", "one-hidden-z2")
    t = jnp.asarray(0.0)

    @eqx.filter_jit
    def run(phi, x):
        hess = jax.hessian(lambda y: phi(t, y))(x).reshape(x.size, x.size)
        return phi(t, x), *phi.gradient_and_laplacian(t, x), jnp.trace(hess)

    big = 1e4 * _points((3, 3), 6)[0]
    value, grad, lap, _ = run(phi, big)
    assert np.isfinite(value) and np.all(np.isfinite(grad)) and np.isfinite(lap)
    # ln cosh at z = 0 (x = 0, no bias): autodiff of the custom JVP gives sech^2(0) = 1
    _, grad0, lap0, auto_lap0 = run(phi, jnp.zeros((3, 3)))
    np.testing.assert_array_equal(np.asarray(grad0), 0.0)
    expected = float(jnp.sum(phi.out * jnp.sum(phi.weight**2, axis=1)))
    np.testing.assert_allclose([float(lap0), float(auto_lap0)], expected, rtol=1e-13)


def test_autonomous_potential_ignores_time():
    phi = built("potentials", "mlp-autonomous")
    x = _points((4,), 7)[0]
    g0, g1 = (phi.gradient(jnp.asarray(s), x) for s in (0.0, 1.0))
    np.testing.assert_array_equal(np.asarray(g0), np.asarray(g1))
    timed = built("potentials", "mlp")
    y = _points((2, 3), 7)[0]
    assert abs(float(timed(jnp.asarray(0.0), y) - timed(jnp.asarray(1.0), y))) > 1e-6


# ------------------------------------------------------------------------------------------
# identical particles: permutation and rotation (O(dim)) symmetry


def _orthogonal(dim, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return jnp.asarray(q * np.sign(np.diag(r)))


@functools.cache
def particle_results(name):
    field = built("fields", name)
    n, dim = field.shape
    x = _points((n, dim), 8)[0]
    perm = jnp.asarray(np.random.default_rng(9).permutation(n))
    rot = _orthogonal(dim, 10)
    phi = field.potential if isinstance(field, MongeAmpereField) else None

    @eqx.filter_jit
    def run(field, phi, x, perm, rot):
        t = jnp.asarray(T)
        out = dict(v=field(t, x), v_perm=field(t, x[perm]), v_rot=field(t, x @ rot.T),
                   div=field.divergence(t, x), div_perm=field.divergence(t, x[perm]),
                   div_rot=field.divergence(t, x @ rot.T))
        if phi is not None:
            out.update(phi=phi(t, x), phi_perm=phi(t, x[perm]), phi_rot=phi(t, x @ rot.T))
        return out

    return jax.tree.map(np.asarray, run(field, phi, x, perm, rot)), np.asarray(perm), \
        np.asarray(rot)


@pytest.mark.parametrize("name", PARTICLE_FIELDS)
def test_particle_field_is_permutation_equivariant(name):
    r, perm, _ = particle_results(name)
    assert not np.array_equal(perm, np.arange(len(perm)))
    close(r["v_perm"], r["v"][perm])
    close(r["div_perm"], r["div"])
    if "phi" in r:
        close(r["phi_perm"], r["phi"])


@pytest.mark.parametrize("name", PARTICLE_FIELDS)
def test_particle_field_is_rotation_equivariant(name):
    r, _, rot = particle_results(name)
    close(r["v_rot"], r["v"] @ rot.T)
    close(r["div_rot"], r["div"])
    if "phi" in r:
        close(r["phi_rot"], r["phi"])


def test_particle_potential_gradient_is_smooth_at_coincidence_and_origin():
    field = built("fields", "monge-ampere-particles-2d")
    x = jnp.zeros((4, 2)).at[1].set(jnp.array([0.5, -0.2])).at[2].set(jnp.array([0.5, -0.2]))

    @eqx.filter_jit
    def run(field, x):
        t = jnp.asarray(T)
        return *field.velocity_and_divergence(t, x), jacobian_trace(lambda y: field(t, y), x)

    v, div, trace = map(np.asarray, run(field, x))
    assert np.all(np.isfinite(v)) and np.isfinite(div)
    close(div, trace)


# ------------------------------------------------------------------------------------------
# the symmetrised lattice potential


def _d4(a):
    """The 8 images of an (L, L, ...) array under the square's point group."""
    return [jnp.rot90(b, k, axes=(0, 1)) for b in (a, jnp.swapaxes(a, 0, 1)) for k in range(4)]


def _group_ops(group):
    ops = _d4 if "d4" in group else (lambda a: [a])
    if "z2" in group:
        return lambda a: [s * b for s in (1.0, -1.0) for b in ops(a)]
    return ops


@pytest.mark.parametrize("name,group", [("sym-d4", "d4"), ("sym-z2", "z2"),
                                        ("sym-d4z2-channels", "d4z2"),
                                        ("sym-d4-one-hidden", "d4")])
def test_symmetrized_potential_is_invariant_and_field_equivariant(name, group):
    phi = built("potentials", name)
    inner = phi.potential
    x = _points(phi.shape, 11)[0]
    ops = _group_ops(group)

    @eqx.filter_jit
    def run(phi, inner, x):
        t = jnp.asarray(T)
        images = jnp.stack(ops(x))
        return dict(
            phi=jax.vmap(phi, in_axes=(None, 0))(t, images),
            inner=jax.vmap(inner, in_axes=(None, 0))(t, images),
            v=jax.vmap(phi.gradient, in_axes=(None, 0))(t, images),
            v_of_x=jnp.stack(ops(phi.gradient(t, x))),
            lap=jax.vmap(phi.laplacian, in_axes=(None, 0))(t, images))

    r = jax.tree.map(np.asarray, run(phi, inner, x))
    expected = {"d4": 8, "z2": 2, "d4z2": 16}[group]
    assert len(r["phi"]) == expected
    assert np.ptp(r["inner"]) > 1e-3, "inner potential already invariant: test is vacuous"
    close(r["phi"], np.broadcast_to(r["phi"][0], r["phi"].shape))
    close(r["v"], r["v_of_x"])       # v(g x) = g v(x)
    close(r["lap"], np.broadcast_to(r["lap"][0], r["lap"].shape))


# ------------------------------------------------------------------------------------------
# the translation-invariant potential


@pytest.mark.parametrize("name", ["translation-z2", "translation-softplus", "conv-z2",
                                  "conv-softplus"])
def test_translation_invariant_potential_is_invariant_and_field_equivariant(name):
    phi = built("potentials", name)
    x = _points(phi.shape, 12)[0]
    shifts = [(0, 1), (1, 0), (2, 3), (3, 2), (1, 1)]

    @eqx.filter_jit
    def run(phi, x):
        t = jnp.asarray(T)
        images = jnp.stack([jnp.roll(x, s, axis=(0, 1)) for s in shifts])
        g, lap = jax.vmap(phi.gradient_and_laplacian, in_axes=(None, 0))(t, images)
        return dict(phi=phi(t, x), phis=jax.vmap(phi, in_axes=(None, 0))(t, images),
                    g=g, lap=lap, g_of_x=jnp.stack([jnp.roll(phi.gradient(t, x), s,
                                                             axis=(0, 1)) for s in shifts]),
                    lap_x=phi.laplacian(t, x), neg=phi(t, -x), g_neg=phi.gradient(t, -x),
                    g_x=phi.gradient(t, x))

    r = jax.tree.map(np.asarray, run(phi, x))
    assert np.abs(r["g_x"]).max() > 1e-3, "perturbed potential is ~constant: test is vacuous"
    close(r["phis"], np.broadcast_to(r["phi"], r["phis"].shape))
    close(r["g"], r["g_of_x"])       # v(T x) = T v(x)
    close(r["lap"], np.broadcast_to(r["lap_x"], r["lap"].shape))
    if phi.z2:                       # even potential: the flow commutes with x -> -x
        close(r["neg"], r["phi"])
        close(r["g_neg"], -r["g_x"])
    else:
        assert abs(r["neg"] - r["phi"]) > 1e-3, "softplus potential is not even"


@pytest.mark.parametrize("z2", [True, False])
def test_translation_invariant_potential_is_the_average_of_the_dense_one(z2):
    """Brute force at L = 4: a dense potential with weight rows ``c_k`` evaluated on the 16
    translated copies, averaged (value, gradient pulled back, Laplacian)."""
    size = 4
    k_init, k_noise, k_dense = jax.random.split(_key(21), 3)
    phi = perturb(TranslationInvariantPotential((size, size), hidden=3, z2=z2, key=k_init),
                  key=k_noise)
    dense = OneHiddenLayerPotential((size, size), hidden=3, z2=z2, key=k_dense)
    dense = eqx.tree_at(lambda p: (p.weight, p.out), dense,
                        (phi.kernel.reshape(3, -1), phi.out))
    if not z2:
        dense = eqx.tree_at(lambda p: p.bias, dense, phi.bias)
    x = _points((size, size), 13)[0]
    shifts = [(a, b) for a in range(size) for b in range(size)]

    @eqx.filter_jit
    def run(phi, dense, x):
        t = jnp.asarray(T)
        # T_s x (r) = x(r + s): the dense unit k reads c_k(r) x(s + r)
        images = jnp.stack([jnp.roll(x, (-a, -b), axis=(0, 1)) for a, b in shifts])
        values = jax.vmap(dense, in_axes=(None, 0))(t, images)
        grads, laps = jax.vmap(dense.gradient_and_laplacian, in_axes=(None, 0))(t, images)
        pulled = jnp.stack([jnp.roll(g, s, axis=(0, 1))
                            for g, s in zip(grads, shifts, strict=True)])
        return (phi(t, x), *phi.gradient_and_laplacian(t, x), jnp.mean(values),
                jnp.mean(pulled, axis=0), jnp.mean(laps))

    value, grad, lap, ref_value, ref_grad, ref_lap = map(np.asarray, run(phi, dense, x))
    assert abs(ref_value) > 1e-3 and np.abs(ref_grad).max() > 1e-3
    tight = functools.partial(np.testing.assert_allclose, rtol=1e-12, atol=1e-12)
    tight(value, ref_value)
    tight(grad, ref_grad)
    tight(lap, ref_lap)


@pytest.mark.parametrize("z2", [True, False])
def test_conv_potential_is_a_translation_invariant_one_with_a_local_kernel(z2):
    """``ConvPotential`` equals :class:`TranslationInvariantPotential` whose full-size
    kernels hold the ``k x k`` window at offsets ``-(k-1)/2 .. (k-1)/2`` (mod L) and zeros
    elsewhere, with output weights times ``L1 L2`` (a sum over shifts, not a mean): value,
    gradient and Laplacian. A 5 x 6 lattice with k = 5 wraps the window around."""
    shape, k = (5, 6), 5
    k_init, k_noise, k_ti = jax.random.split(_key(23), 3)
    phi = perturb(ConvPotential(shape, hidden=2, kernel_size=k, z2=z2, key=k_init),
                  key=k_noise)
    full = np.zeros((2, *shape))
    for a in range(k):
        for b in range(k):
            full[:, (a - k // 2) % shape[0], (b - k // 2) % shape[1]] = phi.kernel[:, a, b]
    ti = TranslationInvariantPotential(shape, hidden=2, z2=z2, key=k_ti)
    ti = eqx.tree_at(lambda p: (p.kernel, p.out), ti,
                     (jnp.asarray(full), phi.out * math.prod(shape)))
    if not z2:
        ti = eqx.tree_at(lambda p: p.bias, ti, phi.bias)
    x = _points(shape, 17)[0]

    @eqx.filter_jit
    def run(phi, ti, x):
        t = jnp.asarray(T)
        return (phi(t, x), *phi.gradient_and_laplacian(t, x), ti(t, x),
                *ti.gradient_and_laplacian(t, x))

    value, grad, lap, ref_value, ref_grad, ref_lap = map(np.asarray, run(phi, ti, x))
    assert abs(ref_value) > 1e-3 and np.abs(ref_grad).max() > 1e-3
    tight = functools.partial(np.testing.assert_allclose, rtol=1e-12, atol=1e-12)
    tight(value, ref_value)
    tight(grad, ref_grad)
    tight(lap, ref_lap)


def test_translation_invariant_initialisation():
    phi = TranslationInvariantPotential((16, 16), hidden=64, key=_key(0))
    assert phi.bias is None and phi.kernel.shape == (64, 16, 16)
    assert np.all(np.asarray(phi.out) == 0.0)
    assert abs(float(jnp.mean(jnp.sum(phi.kernel**2, axis=(1, 2)))) - 1.0) < 0.05
    soft = TranslationInvariantPotential((3, 4), hidden=2, z2=False, key=_key(0))
    assert soft.bias is not None and np.all(np.asarray(soft.bias) == 0.0)


# ------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize("name", ["mlp-velocity", "monge-ampere-one-hidden-z2",
                                  "monge-ampere-sym-d4", "backflow-2d",
                                  "monge-ampere-particles-2d"])
def test_wrong_shape_raises(name):
    field = built("fields", name)
    bad = jnp.zeros((2, *field.shape))
    t = jnp.asarray(0.0)
    for call in (field, field.velocity_and_divergence, field.divergence):
        with pytest.raises(ValueError, match="expected a configuration of shape"):
            call(t, bad)


def test_potential_wrong_shape_raises():
    phi = built("potentials", "particles-2d")
    t = jnp.asarray(0.0)
    for call in (phi, phi.gradient, phi.laplacian, phi.gradient_and_laplacian):
        with pytest.raises(ValueError, match=r"ParticlePotential expected a configuration of "
                                             r"shape \(4, 2\)"):
            call(t, jnp.zeros((4, 3)))


@pytest.mark.parametrize("make,match", [
    (lambda k: MLPVelocity((3,), width=0, depth=1, key=k), "width must be >= 1"),
    (lambda k: MLPVelocity((), width=2, depth=1, key=k), "non-empty tuple"),
    (lambda k: MLPPotential((3,), width=2, depth=0, key=k), "depth must be >= 1"),
    (lambda k: OneHiddenLayerPotential((4, 4), hidden=0, key=k), "hidden must be >= 1"),
    (lambda k: TranslationInvariantPotential((4, 4), hidden=0, key=k), "hidden must be >= 1"),
    (lambda k: TranslationInvariantPotential((16,), hidden=2, key=k), r"shape \(L1, L2\)"),
    (lambda k: ConvPotential((4, 4), hidden=0, key=k), "hidden must be >= 1"),
    (lambda k: ConvPotential((4, 4), hidden=2, kernel_size=2, key=k), "odd"),
    (lambda k: ConvPotential((4, 6), hidden=2, kernel_size=5, key=k), "at most the lattice"),
    (lambda k: ConvPotential((16,), hidden=2, key=k), r"shape \(L1, L2\)"),
    (lambda k: ParticlePotential(0, 2, width=2, depth=1, key=k), "n must be >= 1"),
    (lambda k: BackflowField(3, 0, width=2, depth=1, key=k), "dim must be >= 1"),
    (lambda k: SymmetrizedPotential(MLPPotential((3, 4), width=2, depth=1, key=k), "d4"),
     "L x L lattice"),
    (lambda k: SymmetrizedPotential(MLPPotential((9,), width=2, depth=1, key=k), "d4z2"),
     "L x L lattice"),
    (lambda k: SymmetrizedPotential(MLPPotential((3, 3), width=2, depth=1, key=k), "c4"),
     "group must be one of"),
    (lambda k: MongeAmpereField(MLPVelocity((3,), width=2, depth=1, key=k)),
     "AbstractPotential"),
])
def test_bad_configuration_raises(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make(_key(0))
