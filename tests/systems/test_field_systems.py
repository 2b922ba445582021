"""RelaxedIsing and Phi4: energies, exact relaxation constant, reference free energies."""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.exact import (
    PHI4_REFERENCE,
    enumerate_free_energy,
    phi4_reference_free_energy,
    phi4_site_log_z,
)
from thermax.systems import Ising2D, Phi4, RelaxedIsing

BETA_C = math.log(1 + math.sqrt(2)) / 2

_energies = eqx.filter_jit(lambda system, xs: jax.vmap(system.energy)(xs))


def _adjacency(size: int) -> np.ndarray:
    """``A = sum_mu (P_mu + P_mu^T)`` built site by site (entries 2 for L = 2)."""
    n = size * size
    a = np.zeros((n, n))
    for r, c in itertools.product(range(size), range(size)):
        i = r * size + c
        for j in (((r + 1) % size) * size + c, r * size + (c + 1) % size):
            a[i, j] += 1
            a[j, i] += 1
    return a


def _dense_k(size, beta, coupling):
    scaled = beta * coupling * _adjacency(size)
    return scaled + (0.1 - np.linalg.eigvalsh(scaled).min()) * np.eye(size * size)


def _logsumexp(a):
    top = np.max(a)
    return top + math.log(np.sum(np.exp(a - top)))


# ---------------------------------------------------------------- RelaxedIsing

@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize(("beta", "coupling"), [(0.44, 1.0), (0.3, -0.7), (1.0, 0.5)])
def test_relaxed_closed_form_by_enumeration(size, beta, coupling):
    """ln[(2 pi)^{N/2} det(K)^{1/2} 2^{-N} sum_s exp(s^T K s / 2)] over all 2^N spins
    = ln Z_Ising (enumeration) + C, and exact_free_energy is -that/beta."""
    n = size * size
    k = _dense_k(size, beta, coupling)
    spins = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))
    log_sum = _logsumexp(0.5 * np.einsum("si,ij,sj->s", spins, k, spins))
    log_z_relaxed = (0.5 * n * math.log(2 * math.pi) + 0.5 * np.linalg.slogdet(k)[1]
                     - n * math.log(2) + log_sum)
    system = RelaxedIsing(size, beta, coupling=coupling)
    log_z_ising = -beta * enumerate_free_energy(Ising2D(size, coupling=coupling), beta)
    np.testing.assert_allclose(log_z_ising + system.relaxation_constant(), log_z_relaxed,
                               rtol=1e-12)
    np.testing.assert_allclose(system.exact_free_energy(beta), -log_z_relaxed / beta,
                               rtol=1e-12)
    np.testing.assert_allclose(system.ising_free_energy(system.exact_free_energy(beta)),
                               -log_z_ising / beta, rtol=1e-12)


@pytest.mark.parametrize(("beta", "coupling"), [(BETA_C, 1.0), (0.3, -0.7)])
def test_relaxed_partition_function_by_quadrature(beta, coupling):
    """int exp(-beta E(x)) dx for L = 2 (N = 4) by a 24^4-point Gauss–Hermite rule after
    whitening with K^{1/2} (the integrand is then prod cosh x_i, entire and of exponential
    growth, so the rule converges fast) equals exp(ln Z_Ising + C) to 1e-9."""
    size, nodes = 2, 24
    system = RelaxedIsing(size, beta, coupling=coupling)
    k = _dense_k(size, beta, coupling)
    evals, evecs = np.linalg.eigh(k)
    sqrt_k = evecs @ np.diag(np.sqrt(evals)) @ evecs.T
    z1, w1 = np.polynomial.hermite_e.hermegauss(nodes)       # weight exp(-z^2 / 2)
    z = np.array(list(itertools.product(z1, repeat=4)))
    log_w = np.log(np.array(list(itertools.product(w1, repeat=4)))).sum(1)
    x = (z @ sqrt_k.T).reshape(-1, size, size)
    energy = np.asarray(_energies(system, jnp.asarray(x)))
    log_z = (0.5 * np.sum(np.log(evals))
             + _logsumexp(log_w + 0.5 * np.sum(z**2, axis=1) - beta * energy))
    np.testing.assert_allclose(log_z, -beta * system.exact_free_energy(beta), rtol=0,
                               atol=1e-9)


def test_relaxed_monge_ampere_reference_figure():
    """L = 16, J = 1, beta_c: -ln Z_relaxed / N = -2.3159208588 (Zhang, E & Wang 2018)."""
    system = RelaxedIsing(16, BETA_C)
    assert abs(BETA_C * system.exact_free_energy(BETA_C) / 256 - (-2.3159208588)) < 1e-9
    np.testing.assert_allclose(system.ising_free_energy(system.exact_free_energy(BETA_C)),
                               Ising2D(16).exact_free_energy(BETA_C), rtol=1e-13)
    described = system.describe()
    assert described["relaxation_constant"] == system.relaxation_constant()
    np.testing.assert_allclose(described["shift"], 0.1 + 4 * BETA_C, rtol=1e-14)


@pytest.mark.parametrize(("size", "coupling"), [(2, 1.0), (3, -0.7), (4, 1.3)])
def test_relaxed_energy_against_dense_formula(size, coupling):
    """FFT energy = [x^T K^{-1} x / 2 - sum ln cosh x] / beta with a dense K; E(x) = E(-x);
    finite gradient; stable ln cosh far out."""
    beta = 0.4
    system = RelaxedIsing(size, beta, coupling=coupling)
    assert system.kind == "field" and system.shape == (size, size)
    k_inv = np.linalg.inv(_dense_k(size, beta, coupling))
    xs = 2.0 * jax.random.normal(jax.random.key(0), (16, size, size))
    flat = np.asarray(xs).reshape(16, -1)
    expected = (0.5 * np.einsum("si,ij,sj->s", flat, k_inv, flat)
                - np.sum(np.log(np.cosh(flat)), axis=1)) / beta
    np.testing.assert_allclose(_energies(system, xs), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_energies(system, -xs), _energies(system, xs), rtol=1e-13)
    grad = jax.grad(system.energy)(xs[0])
    assert grad.shape == (size, size) and bool(jnp.all(jnp.isfinite(grad)))
    far = jnp.full((size, size), 800.0).at[0, 0].set(-900.0)   # cosh overflows float64
    assert bool(jnp.isfinite(system.energy(far)))
    assert bool(jnp.all(jnp.isfinite(jax.grad(system.energy)(far))))


def test_relaxed_beta_must_match():
    system = RelaxedIsing(4, 0.4)
    system.exact_free_energy(0.4 * (1 + 1e-9))
    with pytest.raises(ValueError, match="beta it was built with"):
        system.exact_free_energy(0.5)


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    ((1, 0.4), {}, "L >= 2"), ((0, 0.4), {}, "L >= 2"),
    ((4, 0.0), {}, "beta > 0"), ((4, -1.0), {}, "beta > 0"), ((4, math.inf), {}, "beta > 0"),
    ((4, math.nan), {}, "beta > 0"),
    ((4, 0.4), {"coupling": 0.0}, "nonzero"), ((4, 0.4), {"coupling": math.nan}, "nonzero"),
    ((4, 0.4), {"coupling": math.inf}, "nonzero"),
])
def test_relaxed_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RelaxedIsing(*args, **kwargs)


# Wrong types: ValueError from the constructor, or TypeError from jaxtyping's runtime checks
# (the test suite runs with them on).
@pytest.mark.parametrize("args", [(2.5, 0.4), (True, 0.4), (4, "0.4")])
def test_relaxed_bad_types(args):
    with pytest.raises((ValueError, TypeError)):
        RelaxedIsing(*args)


# ---------------------------------------------------------------- Phi4

def _phi4_transfer_log_z(kappa, lam, grid):
    """ln Z of the 2x2 periodic lattice on a product grid: the four sites form a ring with
    doubled bonds, so sum_{ijkl} = Tr T^4 with T_ab = h sqrt(w_a w_b) exp(4 kappa phi_a phi_b).
    """
    h = grid[1] - grid[0]
    log_w = -(grid**2) - lam * (grid**2 - 1) ** 2
    log_t = np.log(h) + 0.5 * (log_w[:, None] + log_w[None, :]) + 4 * kappa * np.outer(grid,
                                                                                      grid)
    top = log_t.max()
    t = np.exp(log_t - top)
    return 4 * top + math.log(np.trace(np.linalg.matrix_power(t, 4)))


def _phi4_product_grid_log_z(kappa, lam, grid, chunk=16):
    """The same 4D product-grid sum, site by site (checks the transfer-matrix shortcut)."""
    system = Phi4(2, kappa, lam)
    action = jax.jit(jax.vmap(system.energy))
    h4 = 4 * math.log(grid[1] - grid[0])
    rest = np.array(list(itertools.product(grid, repeat=3)))
    parts = []
    for start in range(0, len(grid), chunk):
        first = np.repeat(grid[start:start + chunk], len(rest))
        phi = np.concatenate([first[:, None], np.tile(rest, (len(grid[start:start + chunk]), 1))],
                             axis=1)
        parts.append(_logsumexp(-np.asarray(action(jnp.asarray(phi.reshape(-1, 2, 2))))))
    return h4 + _logsumexp(np.array(parts))


def test_phi4_thermodynamic_integration_against_quadrature():
    """L = 2: TI + HMC F within 4 standard errors of -ln Z by quadrature (a 600-point grid
    per site through the transfer matrix, itself checked against the direct 36^4-point
    product-grid sum)."""
    kappa, lam = 0.2, 1.1
    fine = _phi4_transfer_log_z(kappa, lam, np.linspace(-4, 4, 601))
    coarse = np.linspace(-4, 4, 36)
    np.testing.assert_allclose(_phi4_product_grid_log_z(kappa, lam, coarse),
                               _phi4_transfer_log_z(kappa, lam, coarse), rtol=1e-12)
    assert abs(_phi4_transfer_log_z(kappa, lam, coarse) - fine) < 1e-4
    f, err = phi4_reference_free_energy(2, kappa, lam, key=jax.random.key(0), n_nodes=6,
                                        n_chains=32, n_steps=600, n_warmup=200, n_leapfrog=6)
    assert 0 < err < 0.01
    assert abs(f - (-fine)) < 4 * err, (f, err, -fine)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.1, 20.0])
def test_phi4_site_log_z(lam):
    grid = np.linspace(-8, 8, 400001)
    log_f = -(grid**2) - lam * (grid**2 - 1) ** 2
    expected = _logsumexp(log_f) + math.log(grid[1] - grid[0])
    np.testing.assert_allclose(phi4_site_log_z(lam), expected, rtol=0, atol=1e-11)


@pytest.mark.parametrize("size", [2, 3])
def test_phi4_free_energy_at_zero_kappa(size):
    """kappa = 0: sites decouple, F = -N ln z0 exactly (stderr 0); for L = 2 it agrees
    with the 2x2 quadrature."""
    lam = 1.1
    system = Phi4(size, 0.0, lam)
    expected = -size * size * phi4_site_log_z(lam)
    assert system.exact_free_energy(1.0) == expected
    assert system.reference_free_energy_stderr(1.0) == 0.0
    assert phi4_reference_free_energy(size, 0.0, lam, key=jax.random.key(0)) == (expected, 0.0)
    if size == 2:
        log_z = _phi4_transfer_log_z(0.0, lam, np.linspace(-4, 4, 601))
        np.testing.assert_allclose(expected, -log_z, rtol=1e-10)


def test_phi4_reference_table():
    for (size, kappa, lam), (f, err, provenance) in PHI4_REFERENCE.items():
        system = Phi4(size, kappa, lam)
        assert system.exact_free_energy(1.0) == f
        assert system.reference_free_energy_stderr() == err
        assert 0 < err < 1e-2 * abs(f) and "phi4_reference.py" in provenance
    assert (8, 0.15, 1.1) in PHI4_REFERENCE and (8, 0.3, 1.1) in PHI4_REFERENCE
    unknown = Phi4(5, 0.123, 0.7)
    assert unknown.exact_free_energy(1.0) is None
    assert unknown.reference_free_energy_stderr(1.0) is None
    with pytest.raises(ValueError, match="beta"):
        unknown.exact_free_energy(0.5)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_phi4_energy_against_loop(size):
    kappa, lam = 0.27, 0.9
    system = Phi4(size, kappa, lam)
    assert system.kind == "field" and system.shape == (size, size)
    xs = 1.5 * jax.random.normal(jax.random.key(size), (8, size, size))
    energies = np.asarray(_energies(system, xs))
    for x, e in zip(np.asarray(xs), energies, strict=True):
        ref = 0.0
        for r, c in itertools.product(range(size), range(size)):
            ref += -2 * kappa * x[r, c] * (x[(r + 1) % size, c] + x[r, (c + 1) % size])
            ref += x[r, c] ** 2 + lam * (x[r, c] ** 2 - 1) ** 2
        np.testing.assert_allclose(e, ref, rtol=1e-12)
    np.testing.assert_allclose(_energies(system, -xs), energies, rtol=1e-13)
    grad = jax.grad(system.energy)(xs[0])
    assert grad.shape == (size, size) and bool(jnp.all(jnp.isfinite(grad)))
    assert system.describe() == {"n": size * size, "L": size, "kappa": kappa, "lam": lam}


@pytest.mark.parametrize(("args", "match"), [
    ((1, 0.1, 1.0), "L >= 2"), ((-3, 0.1, 1.0), "L >= 2"),
    ((4, 0.1, -0.5), "lam >= 0"), ((4, 0.1, math.nan), "lam >= 0"),
    ((4, 0.1, math.inf), "lam >= 0"),
    ((4, -0.1, 1.0), "kappa >= 0"), ((4, math.nan, 1.0), "kappa >= 0"),
    ((4, math.inf, 1.0), "kappa >= 0"), ((4, 0.25, 0.0), "kappa < 1/4"),
])
def test_phi4_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        Phi4(*args)


@pytest.mark.parametrize("args", [(2.0, 0.1, 1.0), (4, "a", 1.0), (4, np.ones(2), 1.0)])
def test_phi4_bad_types(args):
    with pytest.raises((ValueError, TypeError)):
        Phi4(*args)
