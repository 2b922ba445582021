"""Variational autoregressive network (VAN) for the Sherrington-Kirkpatrick spin glass.

    python examples/sk_van.py                     # n = 20 spins, MADE, under a minute on 2 cores
    python examples/sk_van.py --n 10 --steps 50   # a smoke run

Couplings ``J_ij ~ N(0, 1/n)`` are fixed by ``--coupling-seed``. Trains ``p(s)`` (MADE, Z2
symmetrised) to minimise ``F[p] = E_p[H + T ln p]``, compares with the exact free energy
from enumerating all ``2^n`` configurations and saves a plot of F per spin against the
step, with the distribution of the overlap ``q = s.s'/n`` of pairs of model samples.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optax

from thermax.distributions import AutoregressiveSpins, Z2Symmetrized
from thermax.exact import enumerate_thermodynamics
from thermax.nn import MADE
from thermax.objectives import ScoreFunctionFreeEnergy
from thermax.systems import SherringtonKirkpatrick
from thermax.train import Trainer, draw_free_energy, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="number of spins (<= 24 for exact)")
    parser.add_argument("--coupling-seed", type=int, default=0)
    parser.add_argument("--beta", type=float, default=1.0, help="target inverse temperature")
    parser.add_argument("--beta-anneal", type=float, default=0.99,
                        help="beta_t = beta (1 - A^(t+1)); 0 turns annealing off")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--eval-batch", type=int, default=10000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="sk_van.png", help="where to save the plot")
    args = parser.parse_args()

    system = SherringtonKirkpatrick.from_seed(args.n, args.coupling_seed)
    key_model, key_train, key_eval, key_show = jax.random.split(jax.random.key(args.seed), 4)
    net = MADE(system.shape, depth=args.depth, width=args.width, key=key_model)
    model = Z2Symmetrized(AutoregressiveSpins(net))   # H(s) = H(-s)

    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
    trainer = Trainer(ScoreFunctionFreeEnergy(), optimizer, system, beta=args.beta,
                      beta_anneal=args.beta_anneal, batch=args.batch)
    state = trainer.init(model, key=key_train)

    n = system.n
    exact = enumerate_thermodynamics(system, args.beta)  # also system.exact_free_energy(beta)
    steps, f_per_spin = [], []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        state, stats = trainer.step(state)
        steps.append(step)
        f_per_spin.append(float(stats.free_energy) / n)
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            print(f"step {step:5d}  beta {float(stats.beta):.4f}  F/n {f_per_spin[-1]:.5f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    final = evaluate(state.model, system, args.beta, key=key_eval, n_samples=args.eval_batch,
                     chunk=args.batch, mesh=trainer.mesh)
    f, f_err = final["free_energy"], final["free_energy_stderr"]
    f_exact = exact["free_energy"]
    rel = (f - f_exact) / abs(f_exact)
    print(f"\nSK n={n} (coupling seed {args.coupling_seed}) beta={args.beta}  "
          f"({args.steps} steps, {time.perf_counter() - t0:.0f} s)")
    print(f"  F        = {f:.5f} +- {f_err:.5f}   (F/n = {f / n:.6f})")
    print(f"  exact F  = {f_exact:.5f}              (F/n = {f_exact / n:.6f}, enumeration)")
    print(f"  relative error (F - F_exact)/|F_exact| = {rel:.3e}")
    print(f"  E = {final['energy']:.4f} (exact {exact['energy']:.4f}),  "
          f"S = {final['entropy']:.4f} (exact {exact['entropy']:.4f})")

    # overlap q = s.s'/n between independent samples: the spin-glass order parameter
    xs = jax.vmap(lambda k: state.model.sample(key=k))(jax.random.split(key_show, 4000))
    q = np.asarray(jnp.sum(xs[:2000] * xs[2000:], axis=1) / n)

    fig, (ax, ax_q) = plt.subplots(1, 2, figsize=(9, 3.6))
    draw_free_energy(ax, steps, f_per_spin, f_exact / n, final=f / n, final_err=f_err / n)
    ax_q.hist(q, bins=np.arange(n + 2) * 2 / n - 1 - 1 / n, density=True, color="C2")
    ax_q.set_xlabel("overlap q of two model samples")
    ax_q.set_ylabel("P(q)")
    fig.suptitle(f"VAN, SK n={n}, beta={args.beta}: rel. error {rel:.2e}")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"  plot: {args.plot}")


if __name__ == "__main__":
    main()
