"""Normalizing flow (NeuralRG or Real NVP) for lattice phi^4 theory, trained from Python.

    python examples/phi4_flow.py                     # L = 8, kappa = 0.15, NeuralRG, 1-2 min
    python examples/phi4_flow.py --kappa 0.3         # the broken phase (harder)
    python examples/phi4_flow.py --L 4 --steps 20 --eval-batch 512   # a smoke run

The action (energy, at beta = 1) on a periodic L x L lattice is

    S(phi) = sum_x [ -2 kappa sum_mu phi_x phi_{x+mu} + phi_x^2 + lam (phi_x^2 - 1)^2 ].

A flow ``phi = g(z)``, ``z ~ N(0, I)``, Z2 symmetrised, is trained with the pathwise
("sticking the landing") estimator to minimise ``F[p] = E_p[S + ln p] >= -ln Z``. It prints
F against the Monte Carlo reference (``thermax.exact.phi4_reference_lookup``: HMC with
thermodynamic integration, tabulated for L = 8, lam = 1.1, kappa = 0.15 and 0.3) with its
error bar, the importance-weighted ln Z, the effective sample size, and the energy from
neural MCMC (exact Boltzmann samples, the model as proposal) against the model's own; it
saves a plot of F per site against the step with a few samples and, for NeuralRG, the
latent variables of Boltzmann samples by scale.
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
from thermax.exact import phi4_reference_lookup
from thermax.mcmc import neural_mcmc
from thermax.objectives import PathwiseFreeEnergy
from thermax.systems import Phi4
from thermax.train import Trainer, draw_free_energy, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--L", type=int, default=8, help="linear lattice size")
    parser.add_argument("--kappa", type=float, default=0.15, help="hopping parameter")
    parser.add_argument("--lam", type=float, default=1.1, help="quartic coupling lambda")
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
                        help="Z2 symmetrisation (p(phi) + p(-phi))/2")
    parser.add_argument("--estimator", choices=("stl", "pathwise"), default="stl")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-batch", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam, cosine decay to lr/10")
    parser.add_argument("--mcmc-chains", type=int, default=64)
    parser.add_argument("--mcmc-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="phi4_flow.png", help="where to save the plot")
    args = parser.parse_args()

    system = Phi4(args.L, args.kappa, args.lam)
    beta, n, shape = 1.0, system.n, system.shape   # the action is dimensionless: F = -ln Z
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

    # (F, standard error, how it was computed), or None where nothing is tabulated;
    # at kappa = 0 the sites decouple and F is exact
    reference = phi4_reference_lookup(args.L, args.kappa, args.lam)
    if reference is None and system.exact_free_energy(beta) is not None:
        reference = (system.exact_free_energy(beta), 0.0, "exact (decoupled sites)")
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
    log_z, log_z_err = final["log_z_importance"], final["log_z_importance_stderr"]
    mcmc = neural_mcmc(state.model, system, beta, key=key_mcmc, n_chains=args.mcmc_chains,
                       n_steps=args.mcmc_steps)

    print(f"\nphi^4 L={args.L} kappa={args.kappa} lam={args.lam}, {args.flow}, {args.steps} "
          f"steps ({time.perf_counter() - t0:.0f} s)")
    print(f"  F = -ln Z bound   {f:9.4f} +- {f_err:.4f}   (F/n {f / n:.5f} +- {f_err / n:.5f})")
    if reference is None:
        print("  reference         none tabulated for these parameters "
              "(docs/tutorials/fields-reference.md says how to compute one)")
        print(f"  ln Z (importance) {log_z:9.4f} +- {log_z_err:.4f}")
    else:
        ref, ref_err, method = reference
        both = math.hypot(f_err, ref_err)
        print(f"  reference F       {ref:9.4f} +- {ref_err:.4f}   (F/n {ref / n:.5f} +- "
              f"{ref_err / n:.5f}; {method.split(':')[0]})")
        print(f"  F - reference     {f - ref:9.4f} +- {both:.4f}   ({(f - ref) / both:+.1f} "
              f"combined errors; >= 0 up to noise), relative {(f - ref) / abs(ref):.2e}")
        both = math.hypot(log_z_err, ref_err)
        print(f"  ln Z (importance) {log_z:9.4f} +- {log_z_err:.4f}   reference {-ref:9.4f}   "
              f"({(log_z + ref) / both:+.1f} combined errors)")
    print(f"  ESS fraction      {final['ess_fraction']:.4f} "
          f"({final['ess_fraction'] * args.eval_batch:.0f} of {args.eval_batch} samples)")
    print(f"  energy S/n        model {final['energy'] / n:.5f} +- "
          f"{final['energy_stderr'] / n:.5f}   neural MCMC {float(mcmc.energy_mean) / n:.5f} "
          f"+- {float(mcmc.energy_stderr) / n:.5f} (acceptance {float(mcmc.acceptance_rate):.3f})")

    samples = np.asarray(jax.vmap(lambda k: state.model.sample(key=k))(
        jax.random.split(key_show, 4)))
    latents = None
    if args.flow == "neuralrg":
        # z = g^{-1}(phi) of the Boltzmann samples the MCMC chains ended on, scale by scale:
        # N(0, 1) at every scale if the flow alone were exact
        latents = [np.asarray(z) for z in
                   jax.vmap(lambda x: neuralrg_latents(state.model, x))(mcmc.state.x)]
        print("  latent std by scale (fine to coarse): "
              + "  ".join(f"{z.std():.2f}" for z in latents))

    rows = 2 if latents is None else 3
    fig = plt.figure(figsize=(9, 3.4 * rows / 2 + 1.2))
    grid = fig.add_gridspec(rows, 4)
    ax = fig.add_subplot(grid[:2, :2])
    draw_free_energy(ax, steps, f_per_site, None if reference is None else reference[0] / n,
                     final=f / n, final_err=f_err / n)
    for text in ax.get_legend().get_texts():            # a Monte Carlo reference, mostly
        if text.get_text().startswith("exact"):
            text.set_text("reference F / n" if reference[1] > 0 else "exact F / n")
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
    fig.suptitle(f"{args.flow}, phi^4 {args.L}x{args.L}, kappa={args.kappa}, lam={args.lam}")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"  plot: {args.plot}")


def neuralrg_latents(model, phi):
    """NeuralRG's latent variables of ``phi``, by scale (fine to coarse)."""
    while isinstance(model, Z2Symmetrized):
        model = model.base
    bijection = model.bijection
    if isinstance(bijection, Chain):           # NeuralRG, then SpectralScale
        bijection, spectral = bijection.bijections
        phi = spectral.inverse(phi)
    return bijection.latents_by_scale(phi)


if __name__ == "__main__":
    main()
