"""Every flow density integrates to one (quadrature), and a flow's samples carry the same
``ln p`` that ``log_prob`` gives them.

Quadrature: the substitution ``x = sinh(u)`` (``dx = cosh(u) du``) maps the real line to
itself with tails reaching ``|x| ~ 1e5`` for ``|u| <= 12``, so a uniform trapezoid rule in
``u`` covers heavy-tailed flows (stacked sinh-arcsinh layers) and narrow peaks alike. The
integrands are smooth and decay at both ends, where the trapezoid rule converges
exponentially: these grids give 1 to ~1e-10 or better, and the tolerance ``TOL = 1e-7`` leaves a
wide margin while still catching any error in a log-determinant.
"""

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
    Scan,
    SinhArcsinh,
    checkerboard_mask,
)
from thermax.distributions import StandardNormal, Transformed
from thermax.nn import ConvConditioner, MLPConditioner


def _mlp(shape, key, dtype):
    return MLPConditioner(shape, hidden=(8, 8), key=key, dtype=dtype)


#: Flows of shape (1,), by name: ``bijection(key, dtype)``.
FLOWS_1D = {
    "elementwise-affine": lambda key, dtype: ElementwiseAffine((1,), dtype=dtype),
    "affine": lambda key, dtype: Affine(1, dtype=dtype),
    "sinh-arcsinh": lambda key, dtype: SinhArcsinh((1,), dtype=dtype),
    "invert-sinh-arcsinh": lambda key, dtype: Invert(SinhArcsinh((1,), dtype=dtype)),
    "chain": lambda key, dtype: Chain([SinhArcsinh((1,), dtype=dtype),
                                       ElementwiseAffine((1,), dtype=dtype),
                                       SinhArcsinh((1,), dtype=dtype)]),
    "scan": lambda key, dtype: Scan.build(
        lambda k: Chain([ElementwiseAffine((1,), dtype=dtype), SinhArcsinh((1,), dtype=dtype)]),
        2, key=key),
}

#: Flows of shape (2,), by name.
FLOWS_2D = {
    "affine": lambda key, dtype: Affine(2, dtype=dtype),
    "coupling": lambda key, dtype: AffineCoupling(np.array([True, False]),
                                                  _mlp((2,), key, dtype)),
    "coupling-identity-scale": lambda key, dtype: AffineCoupling(
        np.array([False, True]), _mlp((2,), key, dtype), scale_fn="identity"),
    "real-nvp": lambda key, dtype: Chain([
        Affine(2, dtype=dtype),
        AffineCoupling(np.array([True, False]), _mlp((2,), jax.random.fold_in(key, 0), dtype)),
        AffineCoupling(np.array([False, True]), _mlp((2,), jax.random.fold_in(key, 1), dtype)),
        SinhArcsinh((2,), dtype=dtype)]),
}

#: Larger flows (no quadrature): samples vs log_prob only.
FLOWS_LATTICE = {
    "real-nvp-4x4-scan-conv": lambda key, dtype: Chain([
        ElementwiseAffine((4, 4), dtype=dtype),
        Scan.build(lambda k: Chain([
            AffineCoupling(checkerboard_mask((4, 4), p),
                           ConvConditioner((4, 4), width=3, depth=2, key=kk, dtype=dtype))
            for p, kk in zip((0, 1), jax.random.split(k), strict=True)]), 2, key=key)]),
}

ALL = {**{f"1d-{n}": f for n, f in FLOWS_1D.items()},
       **{f"2d-{n}": f for n, f in FLOWS_2D.items()},
       **{f"lattice-{n}": f for n, f in FLOWS_LATTICE.items()}}

U_MAX = 12.0
N_1D = 2401           # du = 1e-2
N_2D = 361            # du = 1/15 (130321 points)
TOL = 1e-7
N_SAMPLES = 32


def _perturb(tree, *, key, scale=0.5):
    params, static = eqx.partition(tree, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    return eqx.combine(unravel(flat + scale * jax.random.normal(key, flat.shape, flat.dtype)),
                       static)


def _trapezoid_weights(n):
    u = np.linspace(-U_MAX, U_MAX, n)
    w = np.full(n, 2 * U_MAX / (n - 1))
    w[[0, -1]] /= 2
    return u, w * np.cosh(u)   # x = sinh(u): dx = cosh(u) du


@functools.cache
def results(name: str):
    """``(integral or None, sampled ln p, log_prob of the samples)``, one compiled call."""
    seed = 2000 + list(ALL).index(name)
    k_init, k_noise, k_sample = jax.random.split(jax.random.key(seed, impl="rbg"), 3)
    dim = 0 if name.startswith("lattice") else int(name[0])
    grid = None
    if dim == 1:
        u, w = _trapezoid_weights(N_1D)
        grid = (np.sinh(u)[:, None], w)
    elif dim == 2:
        u, w = _trapezoid_weights(N_2D)
        x1, x2 = np.meshgrid(np.sinh(u), np.sinh(u), indexing="ij")
        grid = (np.stack([x1.ravel(), x2.ravel()], -1), np.outer(w, w).ravel())

    @eqx.filter_jit
    def run(k_init, k_noise, k_sample, grid):
        bijection = _perturb(ALL[name](k_init, jnp.float64), key=k_noise)
        flow = Transformed(StandardNormal(bijection.shape), bijection)
        x, lp = jax.vmap(lambda k: flow.sample_and_log_prob(key=k))(
            jax.random.split(k_sample, N_SAMPLES))
        lp_again = jax.vmap(flow.log_prob)(x)
        integral = None
        if grid is not None:
            points, weights = grid
            integral = jnp.sum(weights * jnp.exp(jax.vmap(flow.log_prob)(points)))
        return integral, lp, lp_again

    return jax.tree.map(np.asarray, run(k_init, k_noise, k_sample, grid))


@pytest.mark.parametrize("name", [n for n in ALL if not n.startswith("lattice")])
def test_density_integrates_to_one(name):
    integral, *_ = results(name)
    assert abs(integral - 1.0) < TOL, f"{name}: integral of p = {integral!r}"


@pytest.mark.parametrize("name", list(ALL))
def test_sample_log_prob_matches_log_prob(name):
    _, lp, lp_again = results(name)
    assert np.all(np.isfinite(lp))
    np.testing.assert_allclose(lp, lp_again, rtol=1e-10, atol=1e-10)
