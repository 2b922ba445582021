"""The variational density matrix and its trainer: occupations, gradients, limits."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from thermax.bijections import Backflow, Identity
from thermax.distributions import AutoregressiveSet, FreeFermionSets
from thermax.exact import free_fermion_thermodynamics
from thermax.nn import SetMADE
from thermax.quantum import (
    SR,
    DenseSR,
    DensityMatrix,
    FixedOccupation,
    FlowSlater,
    LoopLaplacian,
    OscillatorBasis2D,
    QuantumDot,
    QuantumTrainer,
    SpinOccupations,
    trainable,
)


def _perturbed_set_model(n, m, seed):
    model = AutoregressiveSet(SetMADE(n, m, width=8, depth=1, key=jax.random.key(seed)))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    leaves = [x + 0.7 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys,
                                                                               strict=True)]
    return eqx.combine(jax.tree.unflatten(tree, leaves), static)


def test_spin_occupations_are_normalised_and_sample_what_they_score():
    """p(K_up, K_down) of two perturbed autoregressive set models sums to 1 over all
    (C(4,2) x C(4,1)) occupations; sampled occupations carry their own ln p."""
    p = SpinOccupations(_perturbed_set_model(2, 4, 0), _perturbed_set_model(1, 4, 1))
    total = 0.0
    for up in itertools.combinations(range(4), 2):
        for down in itertools.combinations(range(4), 1):
            total += float(jnp.exp(p.log_prob(jnp.array(up), jnp.array(down))))
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)
    k_up, k_down, log_p = p.sample_and_log_prob_batch(keys=jax.random.split(
        jax.random.key(2), 64))
    assert k_up.shape == (64, 2) and k_down.shape == (64, 1)
    assert bool(jnp.all(k_up[:, 0] < k_up[:, 1]))
    np.testing.assert_allclose(log_p, p.log_prob_batch(k_up, k_down), rtol=0, atol=1e-12)


def test_fixed_occupation_is_a_point_mass():
    p = FixedOccupation(jnp.array([1, 0]), jnp.array([0]))
    k_up, k_down, log_p = p.sample_and_log_prob(key=jax.random.key(0))
    assert k_up.tolist() == [0, 1] and k_down.tolist() == [0] and float(log_p) == 0.0
    assert float(p.log_prob(jnp.array([0, 2]), jnp.array([0]))) == -np.inf


def test_density_matrix_rejects_mismatched_electron_counts():
    basis = OscillatorBasis2D(1.0, n_orbitals=3)
    with pytest.raises(ValueError, match="electrons"):
        DensityMatrix(FixedOccupation([0, 1], [0]),
                      FlowSlater(basis, Identity((2, 2)), 2, 0))


def test_trainable_leaves_out_the_basis():
    basis = OscillatorBasis2D(1.0, n_orbitals=3)
    flow = Backflow(2, 2, width=4, depth=1, key=jax.random.key(0))
    model = DensityMatrix(FixedOccupation([0, 1], []), FlowSlater(basis, flow, 2, 0))
    spec = trainable(model)
    assert spec.wavefunction.basis.omega is False
    assert spec.wavefunction.flow.gain is True


@pytest.fixture(scope="module")
def free_setup():
    """Two polarised free fermions in the 6 orbitals under emax = 3, T = 1."""
    basis = OscillatorBasis2D(1.0, emax=3.0)
    dot = QuantumDot(2, 0, 1.0, coulomb=0.0)
    exact = free_fermion_thermodynamics(basis.energies, 2, 1.0)
    return basis, dot, exact


def test_ground_state_limit_has_constant_local_energy(free_setup):
    """T = 0, no interaction, identity flow: one K, an exact eigenstate; every walker's
    local energy is e_0 + e_1 = 3, so F = E = 3 with zero spread, S = 0."""
    basis, dot, _ = free_setup
    model = DensityMatrix(FixedOccupation([0, 1], []), FlowSlater(basis, Identity((2, 2)), 2))
    trainer = QuantumTrainer(dot, optax.adam(1e-3), LoopLaplacian(), temperature=0.0,
                             batch=8, sweeps=2, burn_in=4)
    state = trainer.init(model, key=jax.random.key(0))
    state, stats = trainer.step(state)
    np.testing.assert_allclose(float(stats.energy), 3.0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(float(stats.energy_stderr), 0.0, atol=1e-10)
    assert float(stats.free_energy) == float(stats.energy) and float(stats.entropy) == 0.0


def test_exact_p_gives_the_exact_free_energy_with_zero_variance(free_setup):
    """With p(K) the exact Boltzmann distribution and Psi_K eigenstates, every sample of
    f = T ln p(K) + E_loc equals F_exact (zero-variance principle)."""
    basis, dot, exact = free_setup
    p = SpinOccupations(FreeFermionSets(basis.energies, 2, 1.0), None)
    model = DensityMatrix(p, FlowSlater(basis, Identity((2, 2)), 2))
    trainer = QuantumTrainer(dot, optax.adam(1e-3), LoopLaplacian(), temperature=1.0,
                             batch=16, sweeps=2, burn_in=4)
    state = trainer.init(model, key=jax.random.key(1))
    _, stats = trainer.step(state)
    np.testing.assert_allclose(float(stats.free_energy), float(exact.free_energy), rtol=1e-10)
    assert float(stats.free_energy_stderr) < 1e-9


def test_sr_trains_p_to_the_free_fermion_distribution(free_setup):
    """Stochastic reconfiguration on p(K) alone (identity flow) from a random MADE: the
    variational F approaches the exact one from above (F >= F_exact - 4 stderr at every
    step) and ends within 5e-3 of it after 60 steps of batch 256."""
    basis, dot, exact = free_setup
    p = SpinOccupations(_perturbed_set_model(2, basis.n_orbitals, 3), None)
    model = DensityMatrix(p, FlowSlater(basis, Identity((2, 2)), 2))
    trainer = QuantumTrainer(dot, SR(DenseSR(), damping=1e-3, learning_rate=0.5,
                                     max_norm=0.5, blocks=("p",)),
                             LoopLaplacian(), temperature=1.0, batch=256, sweeps=1, burn_in=1)
    state = trainer.init(model, key=jax.random.key(2))
    f_exact = float(exact.free_energy)
    first = None
    for _ in range(60):
        state, stats = trainer.step(state)
        f, err = float(stats.free_energy), float(stats.free_energy_stderr)
        first = f if first is None else first
        assert f >= f_exact - 4 * err - 1e-12
    final = trainer.evaluate(state, key=jax.random.key(3), n_samples=4096)
    assert first - f_exact > 0.05            # it started far away
    assert final["free_energy"] - f_exact < 5e-3
    assert final["free_energy"] >= f_exact - 4 * final["free_energy_stderr"]
    # 16 chunks of 256: the errors are blocked by walker, the plain ones are reported too
    assert final["free_energy_stderr_iid"] > 0 and final["energy_stderr_iid"] > 0
    assert 0.5 < final["free_energy_stderr"] / final["free_energy_stderr_iid"] < 2.0


def test_walker_blocked_stderr_sees_what_each_walker_remembers():
    """Per-walker blocking: a walker offset kept through every chunk (perfect correlation
    between one walker's chunks) makes the error sqrt(chunks) times the plain one; with
    independent samples both agree within the blocking's own sampling error."""
    from thermax.quantum._trainer import _mean_and_stderr, _walker_blocked_stderr

    chunks, walkers = 64, 512
    k1, k2 = jax.random.split(jax.random.key(0))
    offset = jax.random.normal(k1, (walkers,), jnp.float64)
    remembered = [offset] * chunks                         # chunk c, walker b -> offset[b]
    plain = float(_mean_and_stderr(jnp.concatenate(remembered))[1])
    blocked = _walker_blocked_stderr(remembered)
    np.testing.assert_allclose(blocked, float(_mean_and_stderr(offset)[1]), rtol=1e-12)
    np.testing.assert_allclose(blocked / plain, np.sqrt(chunks), rtol=0.01)
    iid = jax.random.normal(k2, (chunks * walkers,), jnp.float64)
    ratio = (_walker_blocked_stderr(list(iid.reshape(chunks, walkers)))
             / float(_mean_and_stderr(iid)[1]))
    assert abs(ratio - 1) < 4 / np.sqrt(2 * walkers)      # the relative error of a std
