"""The spin-polarised 2D electron gas at finite temperature, and its effective mass.

The neural canonical transformation (PHYSICS.md §5) in a periodic box: p(K) over sets of
occupied twisted plane waves, Psi_K = det[exp(i k . zeta)] |det dzeta/dx|^{1/2} with a
periodic FermiNet-style flow zeta(x), the Coulomb energy by Ewald sums (Rydberg units).
This script

1. builds the pieces for N = 5 electrons at r_s = 5 and T = 0.3 T_F with twist (1/4, 1/4);
2. trains p(K) for free electrons (identity flow: every Psi_K is an exact eigenstate) and
   compares F, E, S with the exact canonical values at the same cutoff and twist;
3. switches the Coulomb energy on with the periodic flow, trains both parts, and prints F/N
   and the effective mass m*/m = S / S_0 (Eich, Holzmann & Vignale 2017).

Run: python examples/electron_gas.py [--steps 200]  (a few minutes on a laptop CPU).
"""

import argparse

import jax
import optax

jax.config.update("jax_enable_x64", True)

from thermax.bijections import Identity, periodic_ferminet_flow  # noqa: E402
from thermax.distributions import AutoregressiveSet, pretrain_sets  # noqa: E402
from thermax.exact import free_fermion_thermodynamics  # noqa: E402
from thermax.nn import SetTransformer  # noqa: E402
from thermax.quantum import (  # noqa: E402
    DensityMatrix,
    ElectronGas,
    FlowSlater,
    ForwardLaplacian,
    PlaneWaveBasis,
    QuantumTrainer,
    SpinOccupations,
    fermi_temperature,
)


def train(trainer, model, steps, *, key):
    state = trainer.init(model, key=key)
    for i in range(steps):
        state, stats = trainer.step(state)
        if (i + 1) % 50 == 0:
            print(f"  step {i + 1:4d}  F = {float(stats.free_energy):.5f} "
                  f"+- {float(stats.free_energy_stderr):.5f}")
    return trainer.evaluate(state, key=jax.random.key(99), n_samples=8192)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)

    n, rs, t_over_tf, twist = 5, 5.0, 0.3, (0.25, 0.25)
    temperature = t_over_tf * float(fermi_temperature(rs, 2))       # T_F = (2 / r_s)^2 Ry
    basis = PlaneWaveBasis.for_density(n, rs, 2, twist=twist, n_orbitals=16)
    exact = free_fermion_thermodynamics(basis.energies, n, 1.0 / temperature)
    print(f"N = {n}, r_s = {rs}, T = {t_over_tf} T_F = {temperature:.5f} Ry, box "
          f"{float(basis.box_length):.3f} a_B, {basis.n_orbitals} plane waves, twist {twist}\n"
          f"  exact free fermions: F = {float(exact.free_energy):.6f}  "
          f"E = {float(exact.energy):.6f}  S = {float(exact.entropy):.6f}")

    k_net, k_pre, k_flow, k_train = jax.random.split(jax.random.key(0), 4)
    p = AutoregressiveSet(SetTransformer(n, basis.n_orbitals, key=k_net))
    p, kl = pretrain_sets(p, basis.energies, 1.0 / temperature, key=k_pre, steps=500,
                          batch=256)
    print(f"  p(K) pretrained to the free-fermion distribution, KL = {float(kl):.2e}")

    # 1. free electrons: only p(K) is learned
    free_gas = ElectronGas(n, rs=rs, coulomb=0.0)
    free = DensityMatrix(SpinOccupations(p, None), FlowSlater(basis, Identity((n, 2)), n))
    trainer = QuantumTrainer(free_gas, optax.adam(1e-3), ForwardLaplacian(),
                             temperature=temperature, batch=256)
    res = train(trainer, free, args.steps, key=k_train)
    print(f"  variational F = {res['free_energy']:.6f} +- {res['free_energy_stderr']:.6f} "
          f"(exact {float(exact.free_energy):.6f})")

    # 2. Coulomb on: the periodic flow correlates the electrons
    gas = ElectronGas(n, rs=rs)
    flow = periodic_ferminet_flow(n, 2, gas.box_length, layers=2, width=16, depth=2,
                                  key=k_flow)
    model = DensityMatrix(SpinOccupations(p, None), FlowSlater(basis, flow, n))
    trainer = QuantumTrainer(gas, optax.adam(3e-3), ForwardLaplacian(),
                             temperature=temperature, batch=256)
    res = train(trainer, model, args.steps, key=k_train)
    s0 = float(exact.entropy)
    print(f"interacting: F/N = {res['free_energy'] / n:.6f} +- "
          f"{res['free_energy_stderr'] / n:.6f} Ry,  S = {res['entropy']:.4f} +- "
          f"{res['entropy_stderr']:.4f},  m*/m = S/S_0 = {res['entropy'] / s0:.3f} +- "
          f"{res['entropy_stderr'] / s0:.3f}")


if __name__ == "__main__":
    main()
