"""How much per-evaluation symmetrisation lowers the free-energy estimate of a Monge–Ampère
flow, against the per-step symmetrisation thermax trains with.

    python benchmarks/monge_ampere_symmetrize_bias.py RUN_DIR [--n 4096]
        [--out benchmarks/results/monge_ampere_symmetrize_bias.json]

``RUN_DIR`` is a ``thermax run ising-relaxed --flow monge-ampere --symmetrize random`` run.
The same trained potential and the same base samples go through two RK4 solves of
``dx/dt = g^T grad phi(g x)``, ``d ln p/dt = -lap phi(g x)``:

* **per step** (thermax): one random lattice symmetry ``g`` per RK4 step, shared by its
  four stages. Each sample's map is an RK4 solve of one smooth field per step, and its
  integrated ``ln p`` matches that map's log-det to the solver's order: ``F`` is a
  variational bound (up to the ODE error, which ``results.json`` reports);
* **per evaluation** (the original code, Zhang, E & Wang, wangleiphy/MongeAmpereFlow):
  a fresh ``g`` at each of the four stages. The RK4 combination of four different fields
  is not a consistent solve of any one of them, and the integrated divergence is not the
  log-det of the map the samples went through.

It prints ``beta F / N`` from both (mean ± standard error over ``--n`` samples) and
their difference, the bias of the original's estimator on this model. The per-step value
must agree with the run's own evaluation in ``results.json`` (a check of this script).
"""

import argparse
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_OUT = Path(__file__).parent / "results" / "monge_ampere_symmetrize_bias.json"


def main() -> None:
    from thermax.catalog import build_run
    from thermax.sweeps import trained_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--n", type=int, default=4096, help="samples (a multiple of --chunk)")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.n % args.chunk:
        raise SystemExit(f"--n {args.n} must be a multiple of --chunk {args.chunk}")
    cfg = json.loads((args.run_dir / "config.json").read_text())["config"]
    if cfg.get("flow") != "monge-ampere" or cfg.get("symmetrize") != "random":
        raise SystemExit(f"{args.run_dir}: needs an ising-relaxed run with --flow "
                         "monge-ampere --symmetrize random")
    run = build_run("ising-relaxed", cfg)
    model = trained_model(run.model, args.run_dir)
    flow, system = model.bijection, run.system
    field, symmetry = flow.field, flow.symmetry
    beta, n_steps = float(cfg["beta"]), int(cfg["steps_ode"])
    dt = float(cfg["ode_time"]) / n_steps

    def velocity(x, g):
        v, div = field.velocity_and_divergence(jnp.zeros((), x.dtype), symmetry.act(g, x))
        return symmetry.act_transpose(g, v), div

    def sample(key, per_stage: bool):
        k_base, k_sym = jax.random.split(key)
        z = jax.random.normal(k_base, system.shape)
        log_p = -0.5 * jnp.sum(z**2) - 0.5 * z.size * math.log(2 * math.pi)

        def step(carry, k):
            x, lp = carry
            keys = jax.random.split(k, 4) if per_stage else jnp.stack([k] * 4)
            g = [symmetry.sample(key=kk) for kk in keys]
            k1, d1 = velocity(x, g[0])
            k2, d2 = velocity(x + 0.5 * dt * k1, g[1])
            k3, d3 = velocity(x + 0.5 * dt * k2, g[2])
            k4, d4 = velocity(x + dt * k3, g[3])
            x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            lp = lp - dt / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
            return (x, lp), None

        (x, log_p), _ = jax.lax.scan(step, (z, log_p), jax.random.split(k_sym, n_steps))
        return x, log_p

    def beta_f_per_site(per_stage: bool) -> tuple[float, float]:
        @jax.jit
        def chunk(keys):
            x, log_p = jax.vmap(lambda k: sample(k, per_stage))(keys)
            return beta * jax.vmap(system.energy)(x) + log_p

        keys = jax.random.split(jax.random.key(args.seed), args.n)
        values = np.concatenate([np.asarray(chunk(k))
                                 for k in jnp.split(keys, args.n // args.chunk)])
        return (float(values.mean() / system.n),
                float(values.std(ddof=1) / math.sqrt(values.size) / system.n))

    per_step = beta_f_per_site(False)
    per_eval = beta_f_per_site(True)   # the same keys: the same base samples
    own = json.loads((args.run_dir / "results.json").read_text())
    own_value = own["free_energy"] * beta / system.n
    exact = own["exact_free_energy"] * beta / system.n
    record = {"run_dir": str(args.run_dir), "n": args.n, "exact_beta_f_per_site": exact,
              "run_evaluation_beta_f_per_site": own_value,
              "per_step": {"beta_f_per_site": per_step[0], "stderr": per_step[1]},
              "per_evaluation": {"beta_f_per_site": per_eval[0], "stderr": per_eval[1]},
              "bias_per_site": per_eval[0] - per_step[0]}
    print(f"exact                      beta F/N = {exact:.5f}")
    print(f"run's own evaluation       beta F/N = {own_value:.5f}")
    print(f"per-step symmetry (thermax) beta F/N = {per_step[0]:.5f} ± {per_step[1]:.5f}")
    print(f"per-evaluation (original)   beta F/N = {per_eval[0]:.5f} ± {per_eval[1]:.5f}")
    print(f"bias of the per-evaluation estimate: {per_eval[0] - per_step[0]:+.5f} per site")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
