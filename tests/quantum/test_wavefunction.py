"""The oscillator basis and the flow Slater wavefunction.

Basis: Hermite functions against the closed form; orbitals orthonormal by 2D grid
quadrature; each orbital an eigenfunction of the 2D oscillator (Hessian by autodiff);
ordering, energies and construction errors.

Wavefunction: against a brute-force evaluation; antisymmetry under same-spin exchange;
exact local energy of the non-interacting eigenstates; orthonormality of the Psi_K with
nontrivial bijective flows (FermiNet stack, backflow) by trapezoidal quadrature over the
4D configuration space of N = 2 (the integrand is smooth and Gaussian-decaying, so the
trapezoid rule is spectrally accurate: the error is below 1e-8 at the spacing used,
measured against a finer grid) and a control without the Jacobian factor; a continuous
equivariant flow as the flow; complex orbitals; occupations over the combined index space.
float64 throughout (tests/conftest.py).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import build_perturbed, perturb
from jaxtyping import Array, Complex, Float
from scipy.special import eval_hermite

from thermax.bijections import (
    Backflow,
    Chain,
    ElementwiseAffine,
    FermiNetLayer,
    continuous_flow,
)
from thermax.nn import BackflowField
from thermax.quantum import (
    AbstractBasis,
    FlowSlater,
    OscillatorBasis2D,
    hermite_functions,
    join_occupation,
    split_occupation,
)

OMEGA = 1.3
BASIS = OscillatorBasis2D(OMEGA, emax=5 * OMEGA)  # shells 0..4: 15 orbitals


def _grid(h, half_width, dims):
    g = np.arange(-half_width, half_width + h / 2, h)
    return np.stack(np.meshgrid(*[g] * dims, indexing="ij"), -1).reshape(-1, dims)


# ----------------------------------------------------------------------------------------
# Basis
# ----------------------------------------------------------------------------------------

def test_hermite_functions_closed_form():
    """The recursion against pi^{-1/4} H_n(xi) e^{-xi^2/2} / sqrt(2^n n!) (factorials are
    fine for n <= 12)."""
    xi = np.linspace(-4, 4, 17)
    h = np.asarray(hermite_functions(jnp.asarray(xi), 12))
    for n in range(13):
        exact = (np.pi ** -0.25 * eval_hermite(n, xi) * np.exp(-xi**2 / 2)
                 / math.sqrt(2.0**n * math.factorial(n)))
        np.testing.assert_allclose(h[n], exact, atol=1e-12, rtol=1e-12)


def test_orbitals_orthonormal():
    """<phi_k|phi_l> = delta_kl for all 15 orbitals, trapezoid rule on a 2D grid, 1e-8."""
    h = 0.1
    points = jnp.asarray(_grid(h, 7.0, 2))
    phi = np.asarray(eqx.filter_jit(lambda b, p: b.orbitals(p))(BASIS, points))
    gram = phi.T @ phi * h**2
    np.testing.assert_allclose(gram, np.eye(BASIS.n_orbitals), atol=1e-8)


def test_orbitals_are_eigenfunctions():
    """-lap phi / 2 + omega^2 |r|^2 phi / 2 = e_k phi at random points (Hessian by
    autodiff), 1e-8."""
    points = jax.random.normal(jax.random.key(0), (6, 2)) / math.sqrt(OMEGA)

    @jax.jit
    def residuals(r):
        phi = lambda r: BASIS.orbitals(r[None])[0]  # noqa: E731
        lap = jnp.trace(jax.hessian(phi)(r), axis1=1, axis2=2)
        return -0.5 * lap + 0.5 * OMEGA**2 * jnp.sum(r**2) * phi(r) - BASIS.energies * phi(r)

    res = jax.vmap(residuals)(points)
    assert np.max(np.abs(res)) < 1e-8


def test_order_and_energies():
    assert BASIS.n_orbitals == 15
    assert BASIS.quanta[:6] == ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
    expected = OMEGA * np.array([nx + ny + 1 for nx, ny in BASIS.quanta])
    np.testing.assert_allclose(BASIS.energies, expected, rtol=1e-15)
    assert np.all(np.diff(np.asarray(BASIS.energies)) >= 0)
    partial = OscillatorBasis2D(2.0, n_orbitals=4)  # stops inside shell 2
    assert partial.quanta == ((0, 0), (1, 0), (0, 1), (2, 0))
    np.testing.assert_allclose(partial.energies, [2.0, 4.0, 4.0, 6.0])
    assert OscillatorBasis2D(1.0, emax=2.999).n_orbitals == 3
    assert OscillatorBasis2D(0.1, emax=0.3).n_orbitals == 6  # 0.3 / 0.1 rounds to 3 shells


@pytest.mark.parametrize("kwargs, match", [
    (dict(omega=0.0, n_orbitals=3), "omega must be positive"),
    (dict(omega=-1.0, emax=3.0), "omega must be positive"),
    (dict(omega=1.0), "exactly one of n_orbitals"),
    (dict(omega=1.0, n_orbitals=3, emax=3.0), "exactly one of n_orbitals"),
    (dict(omega=1.0, n_orbitals=0), "n_orbitals must be >= 1"),
    (dict(omega=1.0, emax=0.5), "below the lowest"),
])
def test_basis_bad_arguments(kwargs, match):
    omega = kwargs.pop("omega")
    with pytest.raises(ValueError, match=match):
        OscillatorBasis2D(omega, **kwargs)


def test_orbitals_bad_shape():
    with pytest.raises(ValueError, match=r"positions of shape \(n, 2\)"):
        BASIS.orbitals(jnp.zeros((3, 3)))


# ----------------------------------------------------------------------------------------
# Flow Slater wavefunction
# ----------------------------------------------------------------------------------------

def _strong(flow, gain=2.0):
    return eqx.tree_at(lambda f: f.gain, flow, jnp.asarray(gain))


@pytest.fixture(scope="module")
def spinful():
    """N = 4 (2 up, 2 down) with a perturbed Backflow then a FermiNet layer (Chain)."""
    def make(key):
        k = jax.random.split(key, 2)
        return Chain([_strong(Backflow(4, 2, width=6, depth=1, key=k[0])),
                      _strong(FermiNetLayer(4, 2, width=6, depth=1, key=k[1]))])

    flow = build_perturbed(make, 11)
    return FlowSlater(BASIS, flow, 2, 2)


def test_matches_brute_force(spinful):
    """ln|Psi| and sign against numpy determinants of the orbitals at the flowed points,
    the flow's Jacobian by jacfwd, and the 1/sqrt(n_up! n_down!) normalisation."""
    x = jax.random.normal(jax.random.key(1), (4, 2))
    k_up, k_down = jnp.array([3, 0]), jnp.array([1, 5])

    @eqx.filter_jit
    def evaluate(w, x):
        zeta = w.flow.transform(x)
        return (*w.log_abs_and_sign(x, k_up, k_down), w.log_abs(x, k_up, k_down), zeta,
                jax.jacfwd(w.flow.transform)(x), w.basis.orbitals(zeta))

    log_abs, sign, log_abs_only, zeta, jac, phi = map(np.asarray, evaluate(spinful, x))
    jac = jac.reshape(8, 8)
    psi = (np.linalg.det(phi[:2][:, [3, 0]]) * np.linalg.det(phi[2:][:, [1, 5]])
           * np.sqrt(abs(np.linalg.det(jac))) / math.sqrt(2 * 2))
    np.testing.assert_allclose(float(sign) * np.exp(float(log_abs)), psi, rtol=1e-10)
    assert float(sign) in (-1.0, 1.0)
    assert float(log_abs_only) == float(log_abs)


def test_antisymmetric_under_same_spin_exchange(spinful):
    """Exchanging two up (0, 1) or two down (2, 3) electrons flips the sign and keeps
    |Psi|; reordering k_up flips the sign too."""
    x = jax.random.normal(jax.random.key(2), (4, 2))
    k_up, k_down = jnp.array([0, 4]), jnp.array([2, 1])
    swaps = [x, x[jnp.array([1, 0, 2, 3])], x[jnp.array([0, 1, 3, 2])]]
    f = eqx.filter_jit(lambda w, xs, ku: jax.vmap(lambda x: w.log_abs_and_sign(x, ku, k_down)
                                                  )(xs))
    log_abs, sign = f(spinful, jnp.stack(swaps), k_up)
    np.testing.assert_allclose(log_abs, log_abs[0], atol=1e-12, rtol=0)
    np.testing.assert_array_equal(sign, [sign[0], -sign[0], -sign[0]])
    log_abs_r, sign_r = f(spinful, jnp.stack(swaps[:1]), k_up[::-1])
    np.testing.assert_allclose(log_abs_r[0], log_abs[0], atol=1e-12, rtol=0)
    assert float(sign_r[0]) == -float(sign[0])


def test_hessian_through_residual_flows(spinful):
    """The Hessian of ln|Psi| (what a Laplacian needs: third derivatives of the residual
    flows through their slogdet) by forward-over-reverse autodiff against central
    differences of the gradient (step 1e-4, so agreement to ~1e-7 of entries of order 1-10);
    symmetric to rounding."""
    x = jax.random.normal(jax.random.key(4), (4, 2))  # away from a node of Psi
    k_up, k_down = jnp.array([0, 4]), jnp.array([2, 1])

    @eqx.filter_jit
    def hessians(w, x):
        f = lambda v: w.log_abs(v.reshape(4, 2), k_up, k_down)  # noqa: E731
        v, eps = x.reshape(-1), 1e-4
        fd = jax.vmap(lambda e: (jax.grad(f)(v + eps * e) - jax.grad(f)(v - eps * e))
                      / (2 * eps))(jnp.eye(8))
        return jax.hessian(f)(v), fd

    hess, fd = map(np.asarray, hessians(spinful, x))
    assert np.max(np.abs(hess)) > 1.0
    np.testing.assert_allclose(hess, fd, atol=1e-6, rtol=0)
    np.testing.assert_allclose(hess, hess.T, atol=1e-10, rtol=0)


def test_noninteracting_eigenstates_local_energy():
    """With the identity flow each Psi_K is an eigenstate of the non-interacting dot:
    -(lap ln|Psi| + |grad ln|Psi||^2)/2 + omega^2 sum |x_i|^2 / 2 = sum_k e_k at every x."""
    wf = FlowSlater(BASIS, ElementwiseAffine((3, 2)), 2, 1)
    xs = jax.random.normal(jax.random.key(3), (4, 3, 2)) / math.sqrt(OMEGA)
    occupations = [(jnp.array([0, 1]), jnp.array([0])), (jnp.array([1, 3]), jnp.array([2])),
                   (jnp.array([4, 2]), jnp.array([9]))]

    @jax.jit
    def local_energy(x, k_up, k_down):
        f = lambda v: wf.log_abs(v.reshape(3, 2), k_up, k_down)  # noqa: E731
        v = x.reshape(-1)
        grad, hess = jax.grad(f)(v), jax.hessian(f)(v)
        return -0.5 * (jnp.trace(hess) + grad @ grad) + 0.5 * OMEGA**2 * jnp.sum(v**2)

    for k_up, k_down in occupations:
        exact = float(jnp.sum(BASIS.energies[k_up]) + jnp.sum(BASIS.energies[k_down]))
        e_loc = jax.vmap(local_energy, in_axes=(0, None, None))(xs, k_up, k_down)
        np.testing.assert_allclose(e_loc, exact, atol=1e-8, rtol=0)


def _gram(wf, occupations, h, half_width):
    """<Psi_K|Psi_K'> for N = 2 by the trapezoid rule on a 4D grid, and the same without
    the Jacobian factor |det dzeta/dx|^{1/2} (the control)."""
    points = jnp.asarray(_grid(h, half_width, 4).reshape(-1, 2, 2))
    ks = jnp.asarray(occupations)

    @eqx.filter_jit
    def gram(wf, points):
        def values(x):
            log_abs, sign = jax.vmap(lambda k: wf.log_abs_and_sign(
                x, k[:wf.n_up], k[wf.n_up:]))(ks)
            psi = sign * jnp.exp(log_abs)
            return psi, psi * jnp.exp(-0.5 * wf.flow.transform_and_log_det(x)[1])

        psi, control = jax.lax.map(values, points, batch_size=8192)
        return psi.T @ psi * h**4, control.T @ control * h**4

    return [np.asarray(g) for g in gram(wf, points)]


def test_orthonormal_with_ferminet_layer_polarised():
    """N = 2 spin-polarised, a strong FermiNet layer: <Psi_K|Psi_K'> = delta to 1e-7 over
    five occupations (grid spacing 0.4: error 2.5e-8, 6e-9 at 0.35). The control without
    the Jacobian factor is off by 1.3e-2: the test sees the flow."""
    def make(key):
        layer = FermiNetLayer(2, 2, width=8, depth=2, key=key)
        return eqx.tree_at(lambda f: f.gain, layer, jnp.asarray(2.0))

    wf = FlowSlater(OscillatorBasis2D(1.0, emax=3.0), build_perturbed(make, 21), 2, 0)
    gram, control = _gram(wf, [[0, 1], [0, 2], [1, 2], [0, 3], [1, 4]], 0.4, 5.6)
    np.testing.assert_allclose(gram, np.eye(5), atol=1e-7)
    assert np.max(np.abs(control - np.eye(5))) > 1e-3


def test_orthonormal_with_backflow_spin_split():
    """N = 2, one up and one down (normalisation 1/sqrt(1! 1!)), a strong Backflow:
    <Psi_K|Psi_K'> = delta to 1e-7 over five (k_up, k_down) (grid spacing 0.35: error
    1.6e-8, 2e-7 at 0.4). The control without the Jacobian factor is off by 0.8. The
    smooth (squared-distance) backflow: the grid rule's spectral accuracy needs a smooth
    integrand, and the cusp of the distance form limits it to about 1e-3 at this spacing."""
    def make(key):
        backflow = Backflow(2, 2, width=6, depth=1, lipschitz=0.95, radial="squared",
                            key=key)
        return eqx.tree_at(lambda f: f.gain, backflow, jnp.asarray(3.0))

    wf = FlowSlater(OscillatorBasis2D(1.0, emax=3.0), build_perturbed(make, 21), 1, 1)
    gram, control = _gram(wf, [[0, 0], [0, 1], [1, 0], [2, 3], [1, 1]], 0.35, 5.6)
    np.testing.assert_allclose(gram, np.eye(5), atol=1e-7)
    assert np.max(np.abs(control - np.eye(5))) > 1e-1


@pytest.mark.slow  # its XLA compile segfaulted twice late in the full default suite
# (passes alone and in tests/quantum); kept out of the default run until that is understood
def test_continuous_flow_as_wavefunction_flow():
    """A continuous equivariant flow (BackflowField, RK4) is a valid flow: antisymmetry
    with 2 up + 1 down, and for one electron (where BackflowField's one-body term still
    moves it) the Psi_k are orthonormal to the ODE's accuracy (2D grid, 2e-6)."""
    k = jax.random.split(jax.random.key(31), 4)
    basis = OscillatorBasis2D(1.0, emax=3.0)
    field = perturb(BackflowField(3, 2, width=6, depth=1, key=k[0]), key=k[1])
    wf = FlowSlater(basis, continuous_flow(field, solver="rk4", steps=8), 2, 1)
    x = jax.random.normal(k[2], (3, 2))
    xs = jnp.stack([x, x[jnp.array([1, 0, 2])]])
    log_abs, sign = eqx.filter_jit(lambda w, xs: jax.vmap(
        lambda x: w.log_abs_and_sign(x, jnp.array([0, 2]), jnp.array([1])))(xs))(wf, xs)
    np.testing.assert_allclose(log_abs[1], log_abs[0], atol=1e-12, rtol=0)
    assert float(sign[1]) == -float(sign[0])

    field1 = perturb(BackflowField(1, 2, width=6, depth=1, key=k[3]), key=k[1], scale=0.1)
    flow1 = continuous_flow(field1, solver="rk4", steps=8)
    wf1 = FlowSlater(basis, flow1, 1, 0)
    h = 0.15
    points = jnp.asarray(_grid(h, 10.0, 2).reshape(-1, 1, 2))

    @eqx.filter_jit
    def values(wf, points):
        zeta, log_det = wf.flow.transform_and_log_det_batch(points)
        control = jax.vmap(wf.basis.orbitals)(zeta)[:, 0, :]
        def psi(x, kk):
            log_abs, sign = wf.log_abs_and_sign(x, kk[None])
            return sign * jnp.exp(log_abs)

        return jax.vmap(lambda x: jax.vmap(lambda kk: psi(x, kk))(jnp.arange(6)))(points), \
            control, zeta

    psi, control, zeta = map(np.asarray, values(wf1, points))
    np.testing.assert_allclose(psi.T @ psi * h**2, np.eye(6), atol=2e-6)
    assert np.max(np.abs(control.T @ control * h**2 - np.eye(6))) > 1e-3
    assert np.max(np.abs(zeta - np.asarray(points))) > 1e-2


class _PlaneWaves(AbstractBasis):
    """Test-only complex basis: e^{i k.z} / L on a periodic 2D box of side L."""

    ks: Float[Array, "m 2"]
    side: float = eqx.field(static=True)
    n_orbitals: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def __init__(self, side):
        self.side = side
        grid = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
        grid.sort(key=lambda q: q[0]**2 + q[1]**2)
        self.ks = 2 * np.pi / side * jnp.asarray(grid, float)
        self.n_orbitals, self.dim = len(grid), 2

    @property
    def energies(self) -> Float[Array, " m"]:
        return 0.5 * jnp.sum(self.ks**2, axis=1)

    def _orbitals(self, z) -> Complex[Array, "n m"]:
        return jnp.exp(1j * z @ self.ks.T) / self.side


def test_complex_orbitals_give_a_phase():
    """A complex basis: the sign is a unit complex phase and sign * exp(log|Psi|) is the
    brute-force determinant; exchanging two electrons negates it."""
    basis = _PlaneWaves(3.0)
    wf = FlowSlater(basis, ElementwiseAffine((3, 2)), 3, 0)
    x = jax.random.uniform(jax.random.key(4), (3, 2)) * 3.0
    k_up = jnp.array([0, 1, 3])
    log_abs, phase = wf.log_abs_and_sign(x, k_up)
    assert jnp.iscomplexobj(phase) and not jnp.iscomplexobj(log_abs)
    np.testing.assert_allclose(abs(complex(phase)), 1.0, atol=1e-14)
    phi = np.exp(1j * np.asarray(x) @ np.asarray(basis.ks).T) / 3.0
    exact = np.linalg.det(phi[:, [0, 1, 3]]) / math.sqrt(6)
    np.testing.assert_allclose(complex(phase) * np.exp(float(log_abs)), exact, rtol=1e-12)
    log_swapped, phase_swapped = wf.log_abs_and_sign(x[jnp.array([1, 0, 2])], k_up)
    np.testing.assert_allclose(complex(phase_swapped), -complex(phase), atol=1e-13)
    np.testing.assert_allclose(log_swapped, log_abs, atol=1e-13)


def test_occupation_forms_and_invalid_indices():
    """join/split round trip; a repeated orbital gives ln|Psi| = -inf (Pauli); an index
    outside [0, M) gives NaN, never a silently wrapped orbital; a split with the wrong
    number of up entries therefore gives NaN."""
    k_up, k_down = jnp.array([4, 1]), jnp.array([0, 3])
    joined = join_occupation(k_up, k_down, 15)
    np.testing.assert_array_equal(joined, [1, 4, 15, 18])
    up, down = split_occupation(joined, 2, 15)
    np.testing.assert_array_equal(up, [1, 4])
    np.testing.assert_array_equal(down, [0, 3])
    wf = FlowSlater(BASIS, ElementwiseAffine((4, 2)), 2, 2)
    x = jax.random.normal(jax.random.key(5), (4, 2))
    assert np.isfinite(float(wf.log_abs(x, up, down)))
    assert float(wf.log_abs(x, jnp.array([1, 1]), down)) == -np.inf
    assert np.isnan(float(wf.log_abs(x, jnp.array([1, 15]), down)))
    assert np.isnan(float(wf.log_abs(x, up, jnp.array([-1, 3]))))
    assert np.isnan(float(wf.log_abs(x, jnp.array([15, 15]), down)))   # invalid beats Pauli
    bad_up, bad_down = split_occupation(jnp.array([1, 15, 16, 18]), 2, 15)
    assert np.isnan(float(wf.log_abs(x, bad_up, bad_down)))


def test_wavefunction_bad_arguments():
    flow = ElementwiseAffine((3, 2))
    with pytest.raises(ValueError, match="acts on shape"):
        FlowSlater(BASIS, flow, 2, 2)
    with pytest.raises(ValueError, match="at least one electron"):
        FlowSlater(BASIS, ElementwiseAffine((0, 2)), 0, 0)
    with pytest.raises(ValueError, match="do not fit in 3 orbitals"):
        FlowSlater(OscillatorBasis2D(1.0, n_orbitals=3), ElementwiseAffine((4, 2)), 4, 0)
    wf = FlowSlater(BASIS, flow, 2, 1)
    with pytest.raises(ValueError, match=r"expected a configuration of shape \(3, 2\)"):
        wf.log_abs(jnp.zeros((2, 2)), jnp.array([0, 1]), jnp.array([0]))
    with pytest.raises(ValueError, match="k_down must be 1 integer"):
        wf.log_abs(jnp.zeros((3, 2)), jnp.array([0, 1]), jnp.array([0, 1]))
    with pytest.raises(ValueError, match="k_down must be 1 integer"):
        wf.log_abs(jnp.zeros((3, 2)), jnp.array([0, 1]))


def test_wavefunction_bad_types(without_jaxtyping):
    """Without jaxtyping's checks, the constructor's own TypeErrors."""
    with pytest.raises(TypeError, match="flow must be an AbstractBijection"):
        FlowSlater(BASIS, lambda x: x, 3, 0)
    with pytest.raises(TypeError, match="basis must be an AbstractBasis"):
        FlowSlater(object(), ElementwiseAffine((3, 2)), 3, 0)
