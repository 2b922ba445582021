"""Laplacian methods and local energies: against the trace of the full Hessian (small
functions and the real flow wavefunctions), exact eigenstates of the quantum dot (constant
local energy), scan unrolling, the folx fallback, and bad input."""

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.bijections import Backflow, Identity, ferminet_flow
from thermax.quantum import FlowSlater, OscillatorBasis2D
from thermax.quantum._hamiltonian import QuantumDot
from thermax.quantum._laplacian import (
    ForwardLaplacian,
    HutchinsonLaplacian,
    LoopLaplacian,
    kinetic_energy,
    unroll_scans,
)

#: Every exact method, by name.
EXACT = {
    "loop": LoopLaplacian(),
    "loop-vmapped": LoopLaplacian(vmapped=True),
    "forward": ForwardLaplacian(),                            # auto: dense folx
    "forward-sparse": ForwardLaplacian(backend="folx", sparsity_threshold=0.6),
    "forward-sparse-abs": ForwardLaplacian(backend="folx", sparsity_threshold=3),
    "forward-ffwd": ForwardLaplacian(backend="forward"),      # vmapped jvp-of-jvp
}
N, DIM = 3, 2


def _mlp_fn():
    """A small tanh MLP of a (3, 2) configuration, with random weights."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    w1 = jax.random.normal(k1, (N * DIM, 8)) / math.sqrt(N * DIM)
    b1 = 0.3 * jax.random.normal(k2, (8,))
    w2 = jax.random.normal(k3, (8, 5)) / math.sqrt(8)
    w3 = jax.random.normal(k4, (5,))

    def f(x):
        h = jnp.tanh(x.reshape(-1) @ w1 + b1)
        return jnp.tanh(h @ w2) @ w3

    return f


def _slater_fn():
    """ln|det| of Gaussians * polynomials of 3 particles in 2D, with a pair (backflow-like)
    shift of the coordinates, so the determinant mixes all inputs non-trivially."""
    a = jax.random.normal(jax.random.key(1), (N, DIM))
    c = jnp.array([0.7, 0.9, 1.2])

    def f(x):
        diff = x[:, None, :] - x[None, :, :]
        shift = jnp.sum(jnp.exp(-jnp.sum(diff**2, -1))[:, :, None] * diff, axis=1)
        z = x + 0.3 * shift                                       # (n, dim)
        poly = jnp.stack([jnp.ones(N), 1 + z @ a[1], z[:, 0] * z[:, 1] + z @ a[2]], -1)
        m = poly * jnp.exp(-c[None, :] * jnp.sum(z**2, -1)[:, None])
        return jnp.linalg.slogdet(m)[1] + 0.1 * jnp.sum(jnp.tanh(z))

    return f


FUNCTIONS = {"mlp": _mlp_fn(), "slater": _slater_fn()}
X = 0.8 * jax.random.normal(jax.random.key(2), (N, DIM))


@pytest.fixture(scope="module")
def reference():
    """Brute force: jax.grad and the trace of jax.hessian (flattened)."""
    out = {}
    for name, f in FUNCTIONS.items():
        grad, hess = jax.jit(lambda x, f=f: (jax.grad(f)(x), jax.hessian(f)(x)))(X)
        hess = hess.reshape(N * DIM, N * DIM)
        out[name] = (grad, jnp.trace(hess), hess)
    return out


@pytest.mark.parametrize("fn_name", list(FUNCTIONS))
@pytest.mark.parametrize("method_name", list(EXACT))
def test_exact_methods_match_hessian_trace(method_name, fn_name, reference):
    method, f = EXACT[method_name], FUNCTIONS[fn_name]
    grad, lap = jax.jit(lambda x: method(f, x))(X)
    grad_ref, lap_ref, _ = reference[fn_name]
    assert grad.shape == X.shape and lap.shape == ()
    np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(lap, lap_ref, rtol=0, atol=1e-8)
    assert abs(float(lap_ref)) > 0.1                      # a non-trivial Laplacian


def _complex_slater_fn():
    """ln det of plane waves exp(i k.z) at backflow-shifted coordinates: a complex ln Psi
    (log-magnitude + i phase) whose phase varies with every input."""
    k = jnp.array([[0.3, 0.2], [1.1, -0.4], [-0.5, 0.9]])

    def f(x):
        diff = x[:, None, :] - x[None, :, :]
        shift = jnp.sum(jnp.exp(-jnp.sum(diff**2, -1))[:, :, None] * diff, axis=1)
        z = x + 0.3 * shift
        m = jnp.exp(1j * (z @ k.T)) * (1 + 0.2 * jnp.sum(z**2, -1))[:, None]
        sign, log_abs = jnp.linalg.slogdet(m)
        return log_abs + 1j * jnp.angle(sign)

    return f


@pytest.fixture(scope="module")
def complex_reference():
    f = _complex_slater_fn()
    parts = (lambda x: f(x).real, lambda x: f(x).imag)
    grads = [jax.grad(p)(X) for p in parts]
    laps = [jnp.trace(jax.hessian(p)(X).reshape(N * DIM, N * DIM)) for p in parts]
    return f, grads[0] + 1j * grads[1], laps[0] + 1j * laps[1]


@pytest.mark.parametrize("method_name", ["loop", "loop-vmapped", "forward", "forward-ffwd"])
def test_exact_methods_on_complex_log_psi(method_name, complex_reference):
    """A complex ln Psi: the real and imaginary parts' gradients and Laplacians, in one
    pass of every exact method, against the Hessian trace of each part."""
    f, grad_ref, lap_ref = complex_reference
    grad, lap = jax.jit(lambda x: EXACT[method_name](f, x))(X)
    assert jnp.iscomplexobj(grad) and jnp.iscomplexobj(lap)
    np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(lap, lap_ref, rtol=0, atol=1e-8)
    assert abs(float(lap_ref.imag)) > 0.1


def test_complex_kinetic_energy_is_minus_laplacian_of_psi_over_psi(complex_reference):
    """-c (lap ln Psi + (grad ln Psi)^2) equals -c lap Psi / Psi for the complex Psi."""
    f, _, _ = complex_reference
    psi = lambda x: jnp.exp(f(x))                                  # noqa: E731
    re_part, im_part = (jnp.trace(jax.hessian(lambda x, p=p: p(psi(x)))(X).reshape(
        N * DIM, N * DIM)) for p in (jnp.real, jnp.imag))
    lap_psi = re_part + 1j * im_part
    expected = -1.0 * lap_psi / psi(X)
    kinetic = kinetic_energy(f, X, LoopLaplacian(), mass_factor=1.0)
    np.testing.assert_allclose(kinetic, expected, rtol=1e-9)
    # the Hutchinson estimate of a complex ln Psi: unbiased in both parts
    keys = jax.random.split(jax.random.key(5), 2000)
    laps = jax.jit(jax.vmap(lambda k: HutchinsonLaplacian(1, probe="rademacher")(
        f, X, key=k)[1]))(keys)
    _, _, lap_ref = complex_reference
    for part in (jnp.real, jnp.imag):
        stderr = float(jnp.std(part(laps))) / math.sqrt(laps.size)
        assert abs(float(jnp.mean(part(laps)) - part(lap_ref))) < 4 * stderr


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
@pytest.mark.parametrize("fn_name", list(FUNCTIONS))
def test_hutchinson_unbiased(probe, fn_name, reference):
    """Single-probe estimates over 4000 fixed keys: mean within 4 standard errors of the
    exact trace; the variance agrees with its closed form; the gradient is exact."""
    f = FUNCTIONS[fn_name]
    method = HutchinsonLaplacian(1, probe=probe)
    keys = jax.random.split(jax.random.key(3), 4000)
    grads, laps = jax.jit(jax.vmap(lambda k: method(f, X, key=k)))(keys)
    grad_ref, lap_ref, hess = reference[fn_name]
    np.testing.assert_allclose(grads, jnp.broadcast_to(grad_ref, grads.shape), atol=1e-8)
    stderr = float(jnp.std(laps)) / math.sqrt(laps.size)
    assert abs(float(jnp.mean(laps) - lap_ref)) < 4 * stderr
    off = hess - jnp.diag(jnp.diag(hess))
    var = 2 * jnp.sum(hess**2) if probe == "gaussian" else 2 * jnp.sum(off**2)
    np.testing.assert_allclose(jnp.var(laps), var, rtol=0.15)


def test_hutchinson_probes_average_and_rademacher_exact_on_diagonal_hessian():
    f = FUNCTIONS["slater"]
    key = jax.random.key(4)
    g = lambda x: jnp.sum(jnp.sin(x) * x**2)                    # noqa: E731

    @jax.jit
    def compute(x):
        _, lap8 = HutchinsonLaplacian(8, probe="rademacher")(f, x, key=key)
        probes = jax.random.rademacher(key, (8, N * DIM), x.dtype)
        hvp = jax.vmap(lambda v: jax.jvp(jax.grad(lambda y: f(y.reshape(N, DIM))),
                                         (x.reshape(-1),), (v,))[1])(probes)
        _, lap_g = HutchinsonLaplacian(1, probe="rademacher")(g, x, key=key)
        return lap8, jnp.mean(jnp.sum(probes * hvp, -1)), lap_g, jax.hessian(g)(x)

    lap8, lap8_ref, lap_g, hess_g = compute(X)
    # n_probes = P is the mean of P single-probe estimates drawn with the same probes
    np.testing.assert_allclose(lap8, lap8_ref, atol=1e-10)
    # separable g: diagonal Hessian, Rademacher probes give v^T H v = tr H exactly
    np.testing.assert_allclose(lap_g, jnp.trace(hess_g.reshape(6, 6)), atol=1e-10)


# ------------------------------------------------------------------ flow wavefunctions

def _perturbed(flow):
    """Every gain set to 0.8 (0 at initialisation is the identity map), so the flow and its
    log-det genuinely depend on the coordinates."""
    def gains(m):
        inner = m.stacked if hasattr(m, "stacked") else m
        return inner.gain
    return eqx.tree_at(gains, flow, replace_fn=lambda g: jnp.full_like(g, 0.8))


def _flow_wavefunction(flow_name, n_up, n_down):
    n, key = n_up + n_down, jax.random.key(8)
    flow = {"ferminet": lambda: _perturbed(ferminet_flow(n, 2, layers=2, width=8, depth=2,
                                                         key=key)),
            "backflow": lambda: _perturbed(Backflow(n, 2, width=8, depth=2, key=key)),
            "identity": lambda: Identity((n, 2))}[flow_name]()
    psi = FlowSlater(OscillatorBasis2D(1.0, n_orbitals=4), flow, n_up, n_down)
    k_up = jnp.array([2, 0, 1][:n_up])
    k_down = jnp.array([1, 3][:n_down]) if n_down else None
    return lambda x: psi.log_abs(x, k_up, k_down)


#: (flow, n_up, n_down) -> the methods checked on it by default: polarised and unpolarised
#: (N = 3: 2 up + 1 down), every method on some flow wavefunction, within the time budget
#: (through ferminet_flow the loop and sparse folx each compile for ~10 s on CPU). The
#: full matrix, every exact method on every case, is test_flow_wavefunctions_full (slow).
FLOW_CASES = {
    ("ferminet", 2, 1): ("forward", "forward-ffwd"),
    ("backflow", 2, 1): ("loop", "forward", "forward-sparse", "forward-ffwd"),
    ("backflow", 3, 0): ("loop", "forward"),
}
ALL_FLOW_CASES = [("ferminet", 2, 1), ("ferminet", 2, 0), ("backflow", 2, 1),
                  ("backflow", 3, 0), ("identity", 2, 1), ("identity", 3, 0)]


def _flow_check(spec, methods):
    """Per wavefunction, one jit: its methods and the brute-force reference (``jax.grad``
    and the trace of ``jax.hessian``) on two configurations; asserts agreement to 1e-8."""
    f = _flow_wavefunction(*spec)
    n = spec[1] + spec[2]
    xs = 0.9 * jax.random.normal(jax.random.key(9), (2, n, 2))

    def one(x):
        hess = jax.hessian(f)(x).reshape(2 * n, 2 * n)
        return jax.grad(f)(x), jnp.trace(hess), {m: EXACT[m](f, x) for m in methods}

    grad_ref, lap_ref, res = jax.jit(jax.vmap(one))(xs)
    assert float(jnp.min(jnp.abs(lap_ref))) > 0.1
    assert set(res) == set(methods)
    for name, (grad, lap) in res.items():
        np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(lap, lap_ref, rtol=0, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("spec", list(FLOW_CASES), ids=lambda s: f"{s[0]}-{s[1]}+{s[2]}")
def test_exact_methods_on_flow_wavefunctions(spec):
    """ForwardLaplacian (every backend) and LoopLaplacian against the Hessian trace of
    FlowSlater wavefunctions: ferminet_flow (a Scan of layers with jacfwd log-dets, which
    folx alone cannot trace) and Backflow, polarised and unpolarised."""
    _flow_check(spec, FLOW_CASES[spec])


@pytest.mark.slow
@pytest.mark.parametrize("spec", ALL_FLOW_CASES, ids=lambda s: f"{s[0]}-{s[1]}+{s[2]}")
def test_flow_wavefunctions_full(spec):
    """Every exact method on every flow wavefunction (ferminet_flow, Backflow, Identity;
    polarised and unpolarised)."""
    _flow_check(spec, tuple(EXACT))


def test_perturbed_ferminet_flow_is_not_the_identity():
    f_flow = _flow_wavefunction("ferminet", 2, 1)
    f_id = _flow_wavefunction("identity", 2, 1)
    x = 0.9 * jax.random.normal(jax.random.key(9), (3, 2))
    assert abs(float(f_flow(x) - f_id(x))) > 1e-2


# ------------------------------------------------------------------ scans and fallback

def test_unroll_scans_same_values_and_derivatives():
    """A reverse scan with scanned inputs and stacked outputs, nested in a jitted function
    inside another scan: unrolled, the value and gradient are unchanged and no scan is
    left in the jaxpr."""
    w = jnp.array([0.3, -0.7, 1.1])

    @jax.jit
    def inner(c):
        return jax.lax.scan(lambda c, wi: (jnp.sin(c) * wi + c, c * wi), c, w, reverse=True)

    def f(x):
        def outer(c, _):
            c, ys = inner(c)
            return c, jnp.sum(ys)
        c, zs = jax.lax.scan(outer, x, None, length=2)
        return jnp.sum(c**2) + jnp.sum(zs * jnp.arange(1.0, 3.0))

    g = unroll_scans(f)
    x = jnp.array([0.4, -1.2])
    np.testing.assert_allclose(g(x), f(x), rtol=1e-14)
    np.testing.assert_allclose(jax.grad(g)(x), jax.grad(f)(x), rtol=1e-13)
    assert "scan" not in str(jax.make_jaxpr(g)(x))
    assert "scan" in str(jax.make_jaxpr(f)(x))


def _while_fn(x):
    y = jax.lax.while_loop(lambda c: c[0] < 3,
                           lambda c: (c[0] + 1, jnp.sin(c[1]) + c[1]), (0, x))[1]
    return jnp.sum(y**2)


def test_auto_falls_back_when_folx_cannot_trace(without_jaxtyping):
    """folx has no rule for while_loop: backend="folx" raises, "auto" warns and uses the
    forward-over-forward backend, exact against forward-mode Hessians."""
    x = jnp.array([[0.3, 0.5], [0.1, -0.2]])
    hess = jax.jacfwd(jax.jacfwd(lambda v: _while_fn(v.reshape(2, 2))))(x.reshape(-1))
    with pytest.raises(Exception):  # noqa: B017 - whatever folx raises for a missing rule
        ForwardLaplacian(backend="folx")(_while_fn, x)
    with pytest.warns(UserWarning, match="using the 'forward' backend"):
        grad, lap = ForwardLaplacian()(_while_fn, x)
    np.testing.assert_allclose(lap, jnp.trace(hess), atol=1e-12)
    np.testing.assert_allclose(grad, jax.jacfwd(_while_fn)(x), atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # folx works on the MLP: no fallback
        ForwardLaplacian()(FUNCTIONS["mlp"], X)


# ------------------------------------------------------------------ exact eigenstates

OMEGA = 1.3


def _polarised_log_psi(x):
    """ln|det [phi_00(x_j), phi_10(x_j)]|, phi_00 = exp(-w r^2/2), phi_10 = x exp(-w r^2/2)."""
    g = jnp.exp(-0.5 * OMEGA * jnp.sum(x**2, -1))
    m = jnp.stack([g, x[:, 0] * g], axis=0)
    return jnp.linalg.slogdet(m)[1]


def _unpolarised_log_psi(x):
    """Both electrons in phi_00 (one up, one down): ln Psi = -w (r_1^2 + r_2^2) / 2."""
    return -0.5 * OMEGA * jnp.sum(x**2)


def _taut_log_psi(x):
    """Taut's exact N = 2 ground state at omega = 1 with Coulomb: E = 3."""
    return jnp.log1p(jnp.linalg.norm(x[0] - x[1])) - 0.5 * jnp.sum(x**2)


EIGENSTATES = {
    # name: (system, ln|Psi|, exact energy)
    "polarised": (QuantumDot(2, 0, OMEGA, coulomb=0.0), _polarised_log_psi, 3 * OMEGA),
    "unpolarised": (QuantumDot(1, 1, OMEGA, coulomb=0.0), _unpolarised_log_psi, 2 * OMEGA),
    "taut": (QuantumDot(1, 1, 1.0, coulomb=1.0), _taut_log_psi, 3.0),
}
XS = 1.2 * jax.random.normal(jax.random.key(5), (6, 2, 2))


@pytest.mark.parametrize("state", list(EIGENSTATES))
@pytest.mark.parametrize("method_name", ["loop", "loop-vmapped", "forward", "forward-sparse",
                                         "forward-ffwd"])
def test_local_energy_of_eigenstate_is_constant(method_name, state):
    system, log_psi, energy = EIGENSTATES[state]
    e = jax.jit(lambda xs: system.local_energy_batch(log_psi, xs,
                                                     laplacian=EXACT[method_name]))(XS)
    assert e.shape == (XS.shape[0],)
    np.testing.assert_allclose(e, energy, rtol=0, atol=1e-8)


def test_local_energy_hutchinson_eigenstates():
    """Rademacher probes are exact for the unpolarised state (its Hessian is -omega I);
    for the polarised one the estimate is unbiased: mean over 2000 keys within 4 SE."""
    hutch = HutchinsonLaplacian(1, probe="rademacher")
    system, log_psi, energy = EIGENSTATES["unpolarised"]
    e = jax.jit(lambda xs: system.local_energy_batch(log_psi, xs, laplacian=hutch,
                                                     key=jax.random.key(6)))(XS)
    np.testing.assert_allclose(e, energy, atol=1e-10)
    system, log_psi, energy = EIGENSTATES["polarised"]
    keys = jax.random.split(jax.random.key(7), 2000)
    es = jax.jit(jax.vmap(lambda k: system.local_energy(log_psi, XS[0], laplacian=hutch,
                                                        key=k)))(keys)
    assert float(jnp.std(es)) > 1e-3                       # genuinely stochastic here
    assert abs(float(jnp.mean(es)) - energy) < 4 * float(jnp.std(es)) / math.sqrt(es.size)


def test_local_energy_batch_per_walker_arguments():
    """Extra per-walker arguments are batched: ln Psi = -k r^2/2 is the ground state of a
    dot with omega = k, E = 2 k (two electrons), for each walker's own k."""
    dot = QuantumDot(1, 1, 1.0, coulomb=0.0)
    ks = jnp.linspace(0.5, 2.0, XS.shape[0])
    log_psi = lambda x, k: -0.5 * k * jnp.sum(x**2)           # noqa: E731
    e = dot.local_energy_batch(log_psi, XS, ks, laplacian=LoopLaplacian())
    kin = jax.vmap(lambda x, k: kinetic_energy(lambda y: log_psi(y, k), x, LoopLaplacian()))
    pot = jax.vmap(dot.potential_energy)(XS)
    np.testing.assert_allclose(e, kin(XS, ks) + pot, atol=1e-12)
    np.testing.assert_allclose(kin(XS, ks), 2 * ks - 0.5 * ks**2 * jnp.sum(XS**2, (1, 2)),
                               atol=1e-12)


def test_kinetic_energy_mass_factor():
    log_psi = lambda x: -0.5 * jnp.sum(x**2)                  # noqa: E731
    x = jnp.array([[0.3, -0.4]])
    # -c (lap + |grad|^2) = -c (-2 + 0.25)
    for c in (0.5, 1.0):
        np.testing.assert_allclose(kinetic_energy(log_psi, x, LoopLaplacian(), mass_factor=c),
                                   -c * (-2 + 0.25), atol=1e-14)


# ------------------------------------------------------------------ the quantum dot

def test_quantum_dot_potential_and_gradient_in_omega():
    dot = QuantumDot(2, 1, omega=2.0, coulomb=0.5)
    x = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, -2.0]])
    expected = 0.5 * 4 * (1 + 1 + 4) + 0.5 * (1 / math.sqrt(2) + 1 / math.sqrt(5) + 1 / 3)
    np.testing.assert_allclose(dot.potential_energy(x), expected, atol=1e-14)
    assert dot.n == 3 and dot.shape == (3, 2) and dot.kinetic_prefactor == 0.5
    assert dot.omega.shape == () and dot.coulomb.shape == ()
    d_omega = jax.grad(lambda d: d.potential_energy(x), allow_int=True)(dot).omega
    np.testing.assert_allclose(d_omega, 2.0 * 6, atol=1e-12)   # d/dw (w^2/2 sum r^2)
    one = QuantumDot(1, 0, omega=1.0, dim=3)
    np.testing.assert_allclose(one.potential_energy(jnp.ones((1, 3))), 1.5, atol=1e-14)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_up": -1, "n_down": 1, "omega": 1.0}, "n_up"),
    ({"n_up": 1, "n_down": -2, "omega": 1.0}, "n_down"),
    ({"n_up": 0, "n_down": 0, "omega": 1.0}, "at least one electron"),
    ({"n_up": 1, "n_down": 1, "omega": 0.0}, "omega must be > 0"),
    ({"n_up": 1, "n_down": 1, "omega": -1.0}, "omega must be > 0"),
    ({"n_up": 1, "n_down": 1, "omega": 1.0, "coulomb": -0.1}, "coulomb must be >= 0"),
    ({"n_up": 1, "n_down": 1, "omega": 1.0, "dim": 4}, "dim must be 1, 2 or 3"),
    ({"n_up": 1, "n_down": 1, "omega": jnp.ones(2)}, "0-d"),
])
def test_quantum_dot_bad_construction(kwargs, match, without_jaxtyping):
    with pytest.raises(ValueError, match=match):
        QuantumDot(**kwargs)


def test_bad_inputs(without_jaxtyping):
    dot = QuantumDot(1, 1, 1.0)
    f = FUNCTIONS["mlp"]
    with pytest.raises(ValueError, match="needs key"):
        HutchinsonLaplacian(2)(f, X)
    with pytest.raises(ValueError, match="n_probes"):
        HutchinsonLaplacian(0)
    with pytest.raises(ValueError, match="probe must be"):
        HutchinsonLaplacian(1, probe="uniform")
    with pytest.raises(ValueError, match="sparsity_threshold"):
        ForwardLaplacian(sparsity_threshold=-1)
    with pytest.raises(ValueError, match="backend must be"):
        ForwardLaplacian(backend="jet")
    with pytest.raises(ValueError, match="real or complex 0-d"):
        LoopLaplacian()(lambda x: x, X)
    with pytest.raises(TypeError, match="floating"):
        LoopLaplacian()(lambda x: jnp.sum(x) * 1.0, jnp.ones((2, 2), int))
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        dot.local_energy(_unpolarised_log_psi, jnp.ones((3, 2)), laplacian=LoopLaplacian())
    with pytest.raises(ValueError, match="batch of configurations"):
        dot.local_energy_batch(_unpolarised_log_psi, jnp.ones((2, 2)),
                               laplacian=LoopLaplacian())
