"""Variational autoregressive network (VAN) for the 2D Ising model, trained from Python.

    python examples/ising_van.py                     # L = 8, PixelCNN, about 2 minutes on 2 cores
    python examples/ising_van.py --L 4 --steps 50    # a smoke run

Trains ``p(s)`` to minimise ``F[p] = E_p[H + T ln p]`` at inverse temperature ``beta``
(annealed up from small beta), evaluates F on fresh samples, compares with Kaufman's exact
free energy of the periodic L x L lattice and saves a plot of F per site against the step
with a few samples.
"""

import argparse
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optax

from thermax.distributions import AutoregressiveSpins, Z2Symmetrized
from thermax.nn import MADE, PixelCNN
from thermax.objectives import ScoreFunctionFreeEnergy
from thermax.systems import Ising2D
from thermax.train import Trainer, draw_free_energy, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--L", type=int, default=8, help="linear lattice size")
    parser.add_argument("--beta", type=float, default=0.44, help="target inverse temperature")
    parser.add_argument("--beta-anneal", type=float, default=0.99,
                        help="beta_t = beta (1 - A^(t+1)); 0 turns annealing off")
    parser.add_argument("--net", choices=("pixelcnn", "made"), default="pixelcnn")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--half-kernel", type=int, default=2, help="PixelCNN kernel 2k+1")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-batch", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="ising_van.png", help="where to save the plot")
    args = parser.parse_args()

    system = Ising2D(args.L)
    key_model, key_train, key_eval, key_show = jax.random.split(jax.random.key(args.seed), 4)
    if args.net == "pixelcnn":
        net = PixelCNN(args.L, depth=args.depth, width=args.width,
                       half_kernel=args.half_kernel, key=key_model)
    else:
        net = MADE(system.shape, depth=args.depth, width=args.width, key=key_model)
    model = Z2Symmetrized(AutoregressiveSpins(net))   # H(s) = H(-s)

    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
    trainer = Trainer(ScoreFunctionFreeEnergy(), optimizer, system, beta=args.beta,
                      beta_anneal=args.beta_anneal, batch=args.batch)
    state = trainer.init(model, key=key_train)

    n = system.n
    exact = system.exact_free_energy(args.beta)
    steps, f_per_site, betas = [], [], []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        state, stats = trainer.step(state)
        # F is only a bound at the *target* beta; record the annealed beta too
        steps.append(step)
        f_per_site.append(float(stats.free_energy) / n)
        betas.append(float(stats.beta))
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"step {step:5d}  beta {betas[-1]:.4f}  F/n {f_per_site[-1]:.5f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    final = evaluate(state.model, system, args.beta, key=key_eval, n_samples=args.eval_batch,
                     chunk=args.batch, mesh=trainer.mesh)
    f, f_err = final["free_energy"], final["free_energy_stderr"]
    rel = (f - exact) / abs(exact)
    print(f"\nIsing L={args.L} beta={args.beta}  ({args.steps} steps, "
          f"{time.perf_counter() - t0:.0f} s)")
    print(f"  F        = {f:.5f} +- {f_err:.5f}   (F/n = {f / n:.6f})")
    print(f"  exact F  = {exact:.5f}              (F/n = {exact / n:.6f}, Kaufman)")
    print(f"  relative error (F - F_exact)/|F_exact| = {rel:.3e}")
    print(f"  ln Z (importance weighted) = {final['log_z_importance']:.4f} "
          f"+- {final['log_z_importance_stderr']:.4f}   exact {-args.beta * exact:.4f}, "
          f"ESS fraction {final['ess_fraction']:.3f}")

    samples = jax.vmap(lambda k: state.model.sample(key=k))(jax.random.split(key_show, 4))
    fig = plt.figure(figsize=(9, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    draw_free_energy(ax, steps, f_per_site, exact / n, final=f / n, final_err=f_err / n)
    for i, s in enumerate(np.asarray(samples)):
        sub = fig.add_subplot(2, 4, 3 + i + 2 * (i // 2))
        sub.imshow(s, cmap="gray", vmin=-1, vmax=1)
        sub.set_xticks([])
        sub.set_yticks([])
    fig.suptitle(f"VAN, Ising {args.L}x{args.L}, beta={args.beta}: rel. error {rel:.2e}")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"  plot: {args.plot}")


if __name__ == "__main__":
    main()
