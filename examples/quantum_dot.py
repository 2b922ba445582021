"""Electrons in a 2D quantum dot at finite temperature: from free fermions to Coulomb.

The neural canonical transformation (PHYSICS.md §5): rho = sum_K p(K) |Psi_K><Psi_K| with
p(K) an autoregressive model over sets of occupied oscillator orbitals and Psi_K Slater
determinants at flowed coordinates. This script

1. trains p(K) for three polarised free electrons (identity flow, every Psi_K an exact
   eigenstate) and compares F, E, S with the exact canonical values;
2. switches the Coulomb repulsion on, adds a FermiNet-style flow, and trains both;
3. plots the electron density and the most probable occupations.

Run: python examples/quantum_dot.py [--steps 300] [--out quantum_dot.png]  (a few minutes
on a laptop CPU).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from thermax.bijections import Identity, ferminet_flow  # noqa: E402
from thermax.distributions import AutoregressiveSet, pretrain_sets  # noqa: E402
from thermax.exact import free_fermion_thermodynamics  # noqa: E402
from thermax.nn import SetTransformer  # noqa: E402
from thermax.quantum import (  # noqa: E402
    DensityMatrix,
    FlowSlater,
    LoopLaplacian,
    OscillatorBasis2D,
    QuantumDot,
    QuantumTrainer,
    SpinOccupations,
)


def train(trainer, model, steps, *, key):
    state = trainer.init(model, key=key)
    for i in range(steps):
        state, stats = trainer.step(state)
        if (i + 1) % 50 == 0:
            print(f"  step {i + 1:4d}  F = {float(stats.free_energy):.5f} "
                  f"+- {float(stats.free_energy_stderr):.5f}  "
                  f"acceptance {float(stats.acceptance):.2f}")
    return state, trainer.evaluate(state, key=jax.random.key(99), n_samples=8192)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="quantum_dot.png")
    args = parser.parse_args(argv)

    n, omega, temperature = 3, 1.0, 0.5
    basis = OscillatorBasis2D(omega, emax=4.0)            # 10 orbitals, shells 0..3
    levels = basis.energies
    exact = free_fermion_thermodynamics(levels, n, 1.0 / temperature)
    print(f"free fermions, N = {n} polarised, T = {temperature}, {basis.n_orbitals} orbitals:"
          f"\n  exact F = {float(exact.free_energy):.6f}  E = {float(exact.energy):.6f}  "
          f"S = {float(exact.entropy):.6f}")

    key = jax.random.key(0)
    k_net, k_pre, k_flow, k_train = jax.random.split(key, 4)
    p = AutoregressiveSet(SetTransformer(n, basis.n_orbitals, key=k_net))
    p, kl = pretrain_sets(p, levels, 1.0 / temperature, key=k_pre, steps=500, batch=256)
    print(f"  p(K) pretrained to the free-fermion distribution, KL = {float(kl):.2e}")

    # 1. free fermions: only p(K) is learned
    free = DensityMatrix(SpinOccupations(p, None), FlowSlater(basis, Identity((n, 2)), n))
    dot = QuantumDot(n, 0, omega, coulomb=0.0)
    trainer = QuantumTrainer(dot, optax.adam(1e-3), LoopLaplacian(), temperature=temperature,
                             batch=256)
    _, res = train(trainer, free, args.steps, key=k_train)
    print(f"  variational F = {res['free_energy']:.6f} +- {res['free_energy_stderr']:.6f} "
          f"(exact {float(exact.free_energy):.6f})")

    # 2. Coulomb on: a FermiNet flow makes the wavefunctions correlated
    flow = ferminet_flow(n, 2, layers=2, width=16, depth=2, key=k_flow)
    model = DensityMatrix(SpinOccupations(p, None), FlowSlater(basis, flow, n))
    dot = QuantumDot(n, 0, omega, coulomb=1.0)
    trainer = QuantumTrainer(dot, optax.adam(3e-3), LoopLaplacian(), temperature=temperature,
                             batch=256)
    state, res = train(trainer, model, args.steps, key=k_train)
    print(f"interacting: F = {res['free_energy']:.5f} +- {res['free_energy_stderr']:.5f}  "
          f"E = {res['energy']:.5f} +- {res['energy_stderr']:.5f}  "
          f"S = {res['entropy']:.4f} +- {res['entropy_stderr']:.4f}")

    # 3. pictures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.asarray(state.walkers.positions).reshape(-1, 2)
    ks, _, _ = state.model.occupations.sample_and_log_prob_batch(
        keys=jax.random.split(jax.random.key(1), 4096))
    labels, counts = np.unique([str(tuple(map(int, k))) for k in np.asarray(ks)],
                               return_counts=True)
    order = np.argsort(-counts)[:10]
    exact_p = np.exp(np.array([-float(jnp.sum(levels[jnp.array(eval(lab))])) / temperature
                               for lab in labels[order]]) - float(exact.log_z))
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].hist2d(xs[:, 0], xs[:, 1], bins=60, range=[[-3.5, 3.5], [-3.5, 3.5]])
    ax[0].set_aspect("equal")
    ax[0].set_title(f"electron density, N = {n}, T = {temperature}, Coulomb on")
    ax[1].bar(np.arange(len(order)) - 0.2, counts[order] / counts.sum(), 0.4,
              label="p(K), interacting (sampled)")
    ax[1].bar(np.arange(len(order)) + 0.2, exact_p, 0.4, label="free fermions (exact)")
    ax[1].set_xticks(range(len(order)), labels[order], rotation=60, fontsize=7)
    ax[1].legend(fontsize=8)
    ax[1].set_title("most probable occupations K")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
