"""Continuous normalizing flow for the Coulomb gas in a harmonic trap, trained from Python.

    python examples/coulomb_trap.py                         # 2 particles in 2D, beta = 10: exact F
    python examples/coulomb_trap.py --n 6                   # a Wigner molecule, shells (1, 5)
    python examples/coulomb_trap.py --n 6 --dim 3           # the octahedron
    python examples/coulomb_trap.py --field monge-ampere    # v = grad phi, symmetric potential
    python examples/coulomb_trap.py --steps 3 --batch 8 --eval-batch 32   # a smoke run

``H = coupling sum_{i<j} 1/|x_i - x_j| + trap sum_i |x_i|^2`` for ``n`` labelled particles in
``dim`` dimensions (``Z`` integrates all ``n dim`` coordinates, no ``1/n!``). The model is
``x = Phi(s z)``, ``z ~ N(0, I)``: a learnable overall scale ``s`` (``Scale``), then the time-1
map of a permutation- and rotation-equivariant velocity field, either the backflow field
``v_i = sum_j eta(|x_i - x_j|^2, t) (x_i - x_j) + mu(|x_i|^2, t) x_i`` or the Monge-Ampere
field ``v = grad phi`` of a symmetric pair + one-body potential. It is trained with the
pathwise estimator to minimise ``F[p] = E_p[H + T ln p]``.

It prints F, E, S against the exact values for n = 2 (centre of mass and relative
coordinate; n = 1 is Gaussian), otherwise against the ground-state energy and the harmonic
low-temperature energy ``E_0 + (n dim - rotational zero modes) / (2 beta)``; then dF/dtrap,
dF/dcoupling and the energy by automatic differentiation of the variational F
(``free_energy_derivatives``), against the exact ones for n = 2, and the virial theorem
``2 trap dF/dtrap - coupling dF/dcoupling = n dim T``. It saves the free energy against the
step, a few samples over the ground state, and the particle density.
"""

import argparse
import math
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optax

from thermax.bijections import Chain, Scale, continuous_flow, exact_log_det
from thermax.distributions import StandardNormal, Transformed
from thermax.exact import coulomb_pair_log_z
from thermax.nn import BackflowField, MongeAmpereField, ParticlePotential
from thermax.objectives import PathwiseFreeEnergy, free_energy_derivatives
from thermax.systems import CoulombTrap
from thermax.train import (
    Trainer,
    draw_free_energy,
    evaluate,
    plot_particle_density,
    plot_particle_samples,
)


def rotational_zero_modes(n: int, dim: int) -> int:
    """Rigid rotations of the ground state: flat directions that carry no energy."""
    if n == 1 or dim == 1:
        return 0
    if dim == 2:
        return 1
    return 2 if n == 2 else 3    # a pair in 3D is a linear molecule: two rotations


def exact_pair(beta: float, dim: int, trap: float, coupling: float) -> dict[str, float]:
    """F, U = d(beta F)/d beta, dF/dtrap and dF/dcoupling of two labelled particles, by
    autodiff of the exact ln Z (Gauss-Legendre quadrature of the relative coordinate)."""
    def beta_f(b, t, c):
        return -coulomb_pair_log_z(b, dim, t, c)

    args = [jnp.asarray(v, dtype=float) for v in (beta, trap, coupling)]
    value, (d_beta, d_trap, d_coupling) = jax.value_and_grad(beta_f, argnums=(0, 1, 2))(*args)
    return {"free_energy": float(value) / beta, "energy": float(d_beta),
            "dF/dtrap": float(d_trap) / beta, "dF/dcoupling": float(d_coupling) / beta}


def build_model(system: CoulombTrap, beta: float, args, *, key) -> Transformed:
    """``x = Phi(s z)``: the scale starts at the cloud's width, the ODE at the identity."""
    n, dim = system.shape
    width, depth = args.hidden_width, args.hidden_depth
    if args.field == "backflow":
        field = BackflowField(n, dim, width=width, depth=depth, key=key)
    else:
        field = MongeAmpereField(ParticlePotential(n, dim, width=width, depth=depth, key=key))
    flow = continuous_flow(field, solver=args.solver, steps=args.steps_ode, t1=args.ode_time,
                           adjoint=args.adjoint, divergence=args.divergence)
    # mean square coordinate: ground-state radii plus the trap's thermal spread 1/(2 beta trap)
    ground = system.ground_state()
    spread = float(ground.radii @ ground.radii) / (n * dim) + 1 / (2 * beta * args.trap)
    scale = Scale(system.shape, log_scale=0.5 * math.log(spread))
    return Transformed(StandardNormal(system.shape, kind="particles"), Chain([scale, flow]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2, help="number of particles")
    parser.add_argument("--dim", type=int, choices=(1, 2, 3), default=2)
    parser.add_argument("--beta", type=float, default=10.0, help="inverse temperature")
    parser.add_argument("--trap", type=float, default=1.0)
    parser.add_argument("--coupling", type=float, default=1.0)
    parser.add_argument("--field", choices=("backflow", "monge-ampere"), default="backflow")
    parser.add_argument("--hidden-width", type=int, default=32)
    parser.add_argument("--hidden-depth", type=int, default=2)
    parser.add_argument("--solver", default="tsit5", help="a key of thermax.bijections.SOLVERS")
    parser.add_argument("--steps-ode", type=int, default=20, help="constant ODE steps")
    parser.add_argument("--ode-time", type=float, default=1.0, help="integration time")
    parser.add_argument("--adjoint", choices=("recursive", "backsolve", "direct"),
                        default="recursive")
    parser.add_argument("--divergence", choices=("exact", "hutchinson"), default="exact",
                        help="training only; the evaluation is always exact")
    parser.add_argument("--estimator", choices=("pathwise", "stl"), default="pathwise")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-batch", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam, cosine decay to lr/10")
    parser.add_argument("--clip-grad", type=float, default=10.0, help="global norm clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plots", default="coulomb",
                        help="prefix of the pictures: PREFIX_free_energy.png, "
                        "PREFIX_samples.png, PREFIX_density.png")
    args = parser.parse_args()

    system = CoulombTrap(args.n, args.dim, trap=args.trap, coupling=args.coupling)
    beta, n, dim, temperature = args.beta, args.n, args.dim, 1 / args.beta
    key_model, key_train, key_eval, key_diff, key_show = jax.random.split(
        jax.random.key(args.seed), 5)
    model = build_model(system, beta, args, key=key_model)

    schedule = optax.cosine_decay_schedule(args.lr, max(args.steps, 1), alpha=0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(args.clip_grad), optax.adam(schedule))
    objective = PathwiseFreeEnergy(stick_the_landing=args.estimator == "stl")
    trainer = Trainer(objective, optimizer, system, beta=beta, batch=args.batch)
    state = trainer.init(model, key=key_train)

    exact_f = system.exact_free_energy(beta)       # n = 1, n = 2 or coupling = 0; else None
    ground = system.ground_state()
    harmonic = ground.energy + (n * dim - rotational_zero_modes(n, dim)) / (2 * beta)
    steps, f_per_particle = [], []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        state, stats = trainer.step(state)
        steps.append(step)
        f_per_particle.append(float(stats.free_energy) / n)
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"step {step:5d}  F/n {f_per_particle[-1]:.5f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    # evaluation with the exact divergence (importance weights need the exact ln p)
    model = exact_log_det(state.model)
    final = evaluate(model, system, beta, key=key_eval, n_samples=args.eval_batch,
                     chunk=min(args.batch, args.eval_batch), mesh=trainer.mesh)
    f, f_err = final["free_energy"], final["free_energy_stderr"]
    e, e_err = final["energy"], final["energy_stderr"]
    print(f"\nCoulomb trap n={n} dim={dim} beta={beta:g} trap={args.trap:g} "
          f"coupling={args.coupling:g}, {args.field} field, {args.steps} steps "
          f"({time.perf_counter() - t0:.0f} s); labelled particles")
    print(f"  F            {f:10.6f} +- {f_err:.6f}   (identical particles: "
          f"F + T ln n! = {f + temperature * math.lgamma(n + 1):.6f})")
    if exact_f is not None:
        print(f"  exact F      {exact_f:10.6f}   rel. error {(f - exact_f) / abs(exact_f):.2e}"
              f"   ({(f - exact_f) / f_err:+.1f} standard errors)")
    print(f"  E            {e:10.6f} +- {e_err:.6f}   harmonic E_0 + (n d - m)/(2 beta) "
          f"{harmonic:.6f}")
    print(f"  ground state E_0 {ground.energy:.6f} (E_0/n {ground.energy_per_particle:.6f}), "
          f"shells {ground.shells}")
    print(f"  S            {final['entropy']:10.6f} +- {final['entropy_stderr']:.6f}")
    print(f"  ln Z (importance) {final['log_z_importance']:.5f} +- "
          f"{final['log_z_importance_stderr']:.5f}"
          + ("" if exact_f is None else f"   exact {-beta * exact_f:.5f}")
          + f"   ESS fraction {final['ess_fraction']:.3f}")

    # thermodynamics by autodiff of the variational F at the trained model
    derivs = free_energy_derivatives(
        model, lambda trap, coupling: CoulombTrap(n, dim, trap=trap, coupling=coupling),
        {"trap": args.trap, "coupling": args.coupling}, beta, key=key_diff,
        n_samples=min(args.eval_batch, 4096))
    exact = exact_pair(beta, dim, args.trap, args.coupling) \
        if n == 2 and args.coupling > 0 else None
    for name, label in (("energy", "U = d(beta F)/d beta"), ("dF/dtrap", "dF/dtrap"),
                        ("dF/dcoupling", "dF/dcoupling")):
        line = f"  {label:<21} {derivs[name]:10.6f} +- {derivs[name + '_stderr']:.6f}"
        if exact is not None:
            line += f"   exact {exact[name]:.6f}"
        print(line)
    virial = 2 * args.trap * derivs["dF/dtrap"] - args.coupling * derivs["dF/dcoupling"]
    print(f"  virial 2 trap dF/dtrap - coupling dF/dcoupling = {virial:.5f}   "
          f"n dim T = {n * dim * temperature:.5f}")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    draw_free_energy(ax, steps, f_per_particle, None if exact_f is None else exact_f / n,
                     final=f / n, final_err=f_err / n)
    if exact_f is None:
        ax.axhline(ground.energy_per_particle, color="0.5", ls=":", label="ground state E_0/n")
        ax.legend(fontsize=7)
    ax.set_ylabel("free energy per particle")
    fig.tight_layout()
    fig.savefig(f"{args.plots}_free_energy.png", dpi=110)
    plt.close(fig)
    keys = jax.random.split(key_show, min(args.eval_batch, 4096))
    xs, _ = state.model.sample_and_log_prob_batch(keys=keys)
    plot_particle_samples(xs, f"{args.plots}_samples.png", ground_state=ground)
    plot_particle_density(xs, f"{args.plots}_density.png", ground_state=ground)
    print(f"  plots: {args.plots}_free_energy.png, {args.plots}_samples.png, "
          f"{args.plots}_density.png")


if __name__ == "__main__":
    main()
