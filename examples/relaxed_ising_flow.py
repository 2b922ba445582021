"""Normalizing flow (NeuralRG or Real NVP) for the relaxed 2D Ising model, trained from Python.

    python examples/relaxed_ising_flow.py                    # L = 8, NeuralRG, 1-2 minutes
    python examples/relaxed_ising_flow.py --flow realnvp     # checkerboard Real NVP instead
    python examples/relaxed_ising_flow.py --L 4 --steps 20 --eval-batch 512   # a smoke run

The relaxed Ising model is the Hubbard-Stratonovich transform of the periodic L x L Ising
model into a continuous field x, with ``ln Z_relaxed = ln Z_Ising + C`` for a closed-form
constant ``C`` (``RelaxedIsing.relaxation_constant()``). A flow ``x = g(z)``,
``z ~ N(0, I)``, Z2 symmetrised, is trained with the pathwise ("sticking the landing")
estimator to minimise ``F[p] = E_p[H + T ln p]`` at ``beta`` (default the critical point).
It prints F per site against the exact relaxed value, the Ising free energy it implies
against Kaufman's, the importance-weighted ln Z against the exact one, the effective
sample size, and neural-MCMC energies; it saves a plot of F per site against the step with
a few samples and, for NeuralRG, the latent variables of Boltzmann samples by scale.
"""

import argparse
import math
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optax

from thermax.bijections import Chain
from thermax.distributions import Z2Symmetrized, lattice_flow
from thermax.mcmc import neural_mcmc
from thermax.objectives import PathwiseFreeEnergy
from thermax.systems import RelaxedIsing
from thermax.train import Trainer, draw_free_energy, evaluate

BETA_C = 0.5 * math.log(1 + math.sqrt(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--L", type=int, default=8, help="linear lattice size")
    parser.add_argument("--beta", type=float, default=BETA_C,
                        help="inverse temperature (default ln(1+sqrt 2)/2)")
    parser.add_argument("--flow", choices=("neuralrg", "realnvp"), default="neuralrg")
    parser.add_argument("--coupling-layers", type=int, default=8,
                        help="affine couplings (neuralrg: per 2x2 block; realnvp: in total)")
    parser.add_argument("--hidden-width", type=int, default=10,
                        help="conditioner width (neuralrg: MLP units; realnvp: conv channels)")
    parser.add_argument("--hidden-depth", type=int, default=3, help="conditioner hidden layers")
    parser.add_argument("--spectral", type=int, choices=(0, 1), default=1,
                        help="end the flow with a learnable translation-invariant linear "
                        "layer (SpectralScale)")
    parser.add_argument("--z2", type=int, choices=(0, 1), default=1,
                        help="Z2 symmetrisation (p(x) + p(-x))/2")
    parser.add_argument("--estimator", choices=("stl", "pathwise"), default="stl")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-batch", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam, cosine decay to lr/10")
    parser.add_argument("--mcmc-chains", type=int, default=64)
    parser.add_argument("--mcmc-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="relaxed_ising_flow.png", help="where to save the plot")
    args = parser.parse_args()

    system = RelaxedIsing(args.L, args.beta)   # K, hence E, depends on beta
    beta, n, shape = args.beta, system.n, system.shape
    key_model, key_train, key_eval, key_mcmc, key_show = jax.random.split(
        jax.random.key(args.seed), 5)
    # NeuralRG (or Real NVP) -> SpectralScale (fits the two-point function exactly),
    # Z2-symmetrised since the energy is even; see lattice_flow for the pieces
    model = lattice_flow(shape, flow=args.flow, n_couplings=args.coupling_layers,
                         hidden_width=args.hidden_width, hidden_depth=args.hidden_depth,
                         spectral=bool(args.spectral), z2=bool(args.z2), key=key_model)

    optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, max(args.steps, 1), alpha=0.1))
    objective = PathwiseFreeEnergy(stick_the_landing=args.estimator == "stl")
    trainer = Trainer(objective, optimizer, system, beta=beta, batch=args.batch)
    state = trainer.init(model, key=key_train)

    exact = system.exact_free_energy(beta)          # -(ln Z_Ising + C) / beta
    exact_ising = system.ising_free_energy(exact)   # Kaufman's F of the Ising model
    steps, f_per_site = [], []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        state, stats = trainer.step(state)
        steps.append(step)
        f_per_site.append(float(stats.free_energy) / n)
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"step {step:5d}  F/n {f_per_site[-1]:.5f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    final = evaluate(state.model, system, beta, key=key_eval, n_samples=args.eval_batch,
                     chunk=args.batch, mesh=trainer.mesh)
    f, f_err = final["free_energy"], final["free_energy_stderr"]
    f_ising = system.ising_free_energy(f)           # F + C / beta: same error bar
    log_z, log_z_err = final["log_z_importance"], final["log_z_importance_stderr"]
    exact_log_z = -beta * exact
    mcmc = neural_mcmc(state.model, system, beta, key=key_mcmc, n_chains=args.mcmc_chains,
                       n_steps=args.mcmc_steps)

    print(f"\nrelaxed Ising L={args.L} beta={beta:.6f}, {args.flow}, {args.steps} steps "
          f"({time.perf_counter() - t0:.0f} s)")
    print(f"  relaxed F/n       {f / n:10.6f} +- {f_err / n:.6f}   exact {exact / n:10.6f}   "
          f"rel. error {(f - exact) / abs(exact):.2e}")
    print(f"  implied Ising F/n {f_ising / n:10.6f} +- {f_err / n:.6f}   Kaufman "
          f"{exact_ising / n:8.6f}   rel. error {(f_ising - exact_ising) / abs(exact_ising):.2e}")
    print(f"  ln Z (importance) {log_z:10.4f} +- {log_z_err:.4f}     exact {exact_log_z:10.4f}"
          f"   ({(log_z - exact_log_z) / log_z_err:+.1f} standard errors)")
    print(f"  ESS fraction      {final['ess_fraction']:.4f} "
          f"({final['ess_fraction'] * args.eval_batch:.0f} of {args.eval_batch} samples)")
    print(f"  energy E/n        model {final['energy'] / n:.5f} +- {final['energy_stderr'] / n:.5f}"
          f"   neural MCMC {float(mcmc.energy_mean) / n:.5f} +- "
          f"{float(mcmc.energy_stderr) / n:.5f} (acceptance {float(mcmc.acceptance_rate):.3f})")

    samples = np.asarray(jax.vmap(lambda k: state.model.sample(key=k))(
        jax.random.split(key_show, 4)))
    latents = None
    if args.flow == "neuralrg":
        # z = g^{-1}(x) of the Boltzmann samples the MCMC chains ended on, scale by scale:
        # N(0, 1) at every scale if the flow alone were exact
        latents = [np.asarray(z) for z in
                   jax.vmap(lambda x: neuralrg_latents(state.model, x))(mcmc.state.x)]
        print("  latent std by scale (fine to coarse): "
              + "  ".join(f"{z.std():.2f}" for z in latents))

    rows = 2 if latents is None else 3
    fig = plt.figure(figsize=(9, 3.4 * rows / 2 + 1.2))
    grid = fig.add_gridspec(rows, 4)
    ax = fig.add_subplot(grid[:2, :2])
    draw_free_energy(ax, steps, f_per_site, exact / n, final=f / n, final_err=f_err / n)
    vmax = float(np.abs(samples).max())
    for i, x in enumerate(samples):
        sub = fig.add_subplot(grid[i // 2, 2 + i % 2])
        sub.imshow(x, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        sub.set_xticks([])
        sub.set_yticks([])
    if latents is not None:
        grid_z = grid[2, :].subgridspec(1, len(latents))
        u = np.linspace(-4, 4, 200)
        for s, z in enumerate(latents):
            sub = fig.add_subplot(grid_z[0, s])
            sub.hist(z.ravel(), bins=30, range=(-4, 4), density=True, color=f"C{s}")
            sub.plot(u, np.exp(-u**2 / 2) / math.sqrt(2 * math.pi), "k--", lw=0.8)
            sub.set_title(f"scale {s} ({z[0].size} per sample)", fontsize=8)
            sub.set_yticks([])
    fig.suptitle(f"{args.flow}, relaxed Ising {args.L}x{args.L}, beta={beta:.4f}: "
                 f"rel. error {(f - exact) / abs(exact):.2e}")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"  plot: {args.plot}")


def neuralrg_latents(model, x):
    """NeuralRG's latent variables of ``x``, by scale (fine to coarse)."""
    while isinstance(model, Z2Symmetrized):
        model = model.base
    bijection = model.bijection
    if isinstance(bijection, Chain):           # NeuralRG, then SpectralScale
        bijection, spectral = bijection.bijections
        x = spectral.inverse(x)
    return bijection.latents_by_scale(x)


if __name__ == "__main__":
    main()
