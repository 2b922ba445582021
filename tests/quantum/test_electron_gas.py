"""The uniform electron gas: the Hamiltonian, complex plane-wave wavefunctions (exact
eigenstates, Bloch periodicity), the complex VMC gradient against quadrature, and the
run's bad-input errors."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturb

from thermax.bijections import Identity, periodic_ferminet_flow
from thermax.quantum import (
    ElectronGas,
    EwaldSum,
    FlowSlater,
    ForwardLaplacian,
    LoopLaplacian,
    PlaneWaveBasis,
)

TWIST = (0.25, -0.125)


def test_electron_gas_bad_input():
    with pytest.raises(ValueError, match="rs must be"):
        ElectronGas(5, rs=0.0)
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        ElectronGas(5, rs=1.0, dim=1)
    with pytest.raises(ValueError, match="at least one electron"):
        ElectronGas(0, 0, rs=1.0)
    with pytest.raises(ValueError, match="coulomb"):
        ElectronGas(5, rs=1.0, coulomb=-1.0)


def test_potential_is_twice_the_ewald_energy_and_periodic():
    gas = ElectronGas(5, rs=2.0)
    L = gas.box_length
    np.testing.assert_allclose(L, math.sqrt(math.pi * 5) * 2.0, rtol=1e-14)
    x = L * jax.random.uniform(jax.random.key(0), (5, 2))
    v = gas.potential_energy(x)
    np.testing.assert_allclose(v, 2 * EwaldSum(2, L).energy(x), rtol=1e-12)
    moved = x.at[2, 1].add(L)
    np.testing.assert_allclose(gas.potential_energy(moved), v, rtol=1e-10)
    xs = gas.initial_positions(jax.random.key(1), 8, jnp.float64)
    assert xs.shape == (8, 5, 2) and bool(jnp.all((xs >= 0) & (xs < L)))


@pytest.fixture(scope="module")
def free_gas():
    """5 free electrons (coulomb 0) in the 9 lowest twisted plane waves, identity flow."""
    gas = ElectronGas(5, rs=1.5, coulomb=0.0)
    basis = PlaneWaveBasis(gas.box_length, 2, twist=TWIST, n_orbitals=9)
    wf = FlowSlater(basis, Identity((5, 2)), 5, 0)
    return gas, basis, wf


@pytest.mark.parametrize("method", [LoopLaplacian(), ForwardLaplacian()],
                         ids=["loop", "forward"])
def test_plane_wave_determinants_are_exact_eigenstates(free_gas, method):
    """det[exp(i k_a . x_b)] is an eigenstate of -lap with eigenvalue sum |k_a|^2: the
    complex local energy is that constant with zero imaginary part, at any x."""
    gas, basis, wf = free_gas
    k = jnp.array([0, 2, 3, 5, 8])
    xs = gas.initial_positions(jax.random.key(2), 4, jnp.float64)
    e_loc = jax.jit(lambda xs: gas.local_energy_batch(
        lambda x: wf.log_value(x, k), xs, laplacian=method))(xs)
    assert jnp.iscomplexobj(e_loc)
    np.testing.assert_allclose(e_loc.real, float(jnp.sum(basis.energies[k])), rtol=1e-10)
    np.testing.assert_allclose(e_loc.imag, 0.0, atol=1e-9)


def _weights_only(flow):
    """Filter spec: the flow's inexact arrays except its box length (a constant)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: eqx.is_inexact_array(leaf)
        and "box_length" not in jax.tree_util.keystr(path), flow)


def _perturb_weights(flow, seed: int):
    params, static = eqx.partition(flow, _weights_only(flow))
    return eqx.combine(perturb(params, key=jax.random.key(seed), scale=0.3), static)


@pytest.fixture(scope="module")
def flowed():
    """3 interacting electrons, twisted plane waves and a perturbed periodic flow."""
    gas = ElectronGas(3, rs=1.0)
    basis = PlaneWaveBasis(gas.box_length, 2, twist=TWIST, n_orbitals=5)
    flow = periodic_ferminet_flow(3, 2, gas.box_length, layers=2, width=6, depth=1,
                                  key=jax.random.key(3))
    return gas, basis, FlowSlater(basis, _perturb_weights(flow, 4), 3, 0)


def test_flowed_wavefunction_is_bloch_periodic(flowed):
    """Moving one electron by L e_a keeps |Psi| and E_loc and turns the phase by
    2 pi theta_a (the twist): a periodic flow and twisted plane waves."""
    gas, _, wf = flowed
    L = gas.box_length
    k = jnp.array([0, 1, 3])
    x = gas.initial_positions(jax.random.key(5), 1, jnp.float64)[0]
    log_value = jax.jit(lambda x: wf.log_value(x, k))
    e_loc = jax.jit(lambda x: gas.local_energy(lambda y: wf.log_value(y, k), x,
                                               laplacian=LoopLaplacian()))
    base, e_base = log_value(x), e_loc(x)
    for a in range(2):
        moved = x.at[1, a].add(L)
        value = log_value(moved)
        np.testing.assert_allclose(value.real, base.real, atol=1e-10)
        turn = np.angle(np.exp(1j * (float(value.imag - base.imag) - 2 * math.pi * TWIST[a])))
        assert abs(turn) < 1e-9
        np.testing.assert_allclose(e_loc(moved), e_base, rtol=1e-9)
    assert abs(float(e_base.imag)) > 1e-6            # a phase that varies with x


def test_chunked_local_energies_are_the_same(flowed):
    """chunk_size bounds memory (lax.map over chunks, a remainder included) and changes
    nothing in the results."""
    gas, _, wf = flowed
    xs = gas.initial_positions(jax.random.key(8), 8, jnp.float64)
    ks = jnp.tile(jnp.array([0, 1, 3]), (8, 1))
    energies = {c: jax.jit(lambda xs, ks, c=c: gas.local_energy_batch(
        wf.log_value, xs, ks, laplacian=LoopLaplacian(), chunk_size=c))(xs, ks)
        for c in (None, 3)}
    np.testing.assert_allclose(energies[3], energies[None], rtol=1e-12)


def test_complex_vmc_gradient_matches_quadrature():
    """For a complex Psi the energy gradient is 2 E[Re(E_loc - E) d ln|Psi| + Im E_loc
    d arg Psi] (the trainer's surrogate). Checked for 2 free electrons in a 2D box against
    jax.grad of the energy by quadrature (periodic trapezoid rule on a 16^4 grid, which
    converges spectrally for this smooth integrand: the agreement is 7e-7 of the largest
    component here, against 1e-4 on a 10^4 grid), with the same weights on both sides."""
    gas = ElectronGas(2, rs=1.0, coulomb=0.0)
    L = gas.box_length
    basis = PlaneWaveBasis(L, 2, twist=TWIST, n_orbitals=4)
    flow = periodic_ferminet_flow(2, 2, L, layers=1, width=4, depth=1, key=jax.random.key(6))
    flow = _perturb_weights(flow, 7)
    k = jnp.array([0, 2])
    g = jnp.arange(16) * (L / 16)
    h = g + L / 32                                 # electron 2 never on electron 1's points
    grid = jnp.stack(jnp.meshgrid(g, g, h, h, indexing="ij"), -1).reshape(-1, 2, 2)
    params, static = eqx.partition(flow, _weights_only(flow))

    def log_values(p, xs):
        wf = FlowSlater(basis, eqx.combine(p, static), 2, 0)
        return jax.vmap(lambda x: wf.log_value(x, k))(xs), wf

    def fields(p, xs):
        lv, wf = log_values(p, xs)
        e = gas.local_energy_batch(lambda x: wf.log_value(x, k), xs,
                                   laplacian=ForwardLaplacian(backend="forward"))
        return lv, e

    def energy(p, xs):
        lv, e = fields(p, xs)
        w = jnp.exp(2 * (lv.real - jnp.max(lv.real)))
        return jnp.sum(w * e.real) / jnp.sum(w)

    def surrogate(p, xs, w, e, mean):
        lv = log_values(p, xs)[0]
        return 2 * jnp.sum(w * ((e.real - mean) * lv.real + e.imag * lv.imag))

    lv, e = jax.jit(fields)(params, grid)
    w = jnp.exp(2 * (lv.real - jnp.max(lv.real)))
    w = w / jnp.sum(w)
    mean = jnp.sum(w * e.real)
    np.testing.assert_allclose(jnp.sum(w * e.imag), 0.0, atol=1e-6 * abs(float(mean)))
    exact = jax.jit(jax.grad(energy))(params, grid)
    estimate = jax.jit(jax.grad(surrogate))(params, grid, w, e, mean)
    flat_exact = jnp.concatenate([x.ravel() for x in jax.tree.leaves(exact)])
    flat_est = jnp.concatenate([x.ravel() for x in jax.tree.leaves(estimate)])
    assert float(jnp.linalg.norm(flat_exact)) > 1e-2
    np.testing.assert_allclose(flat_est, flat_exact, rtol=0,
                               atol=1e-5 * float(jnp.max(jnp.abs(flat_exact))))
