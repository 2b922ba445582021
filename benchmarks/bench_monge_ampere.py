"""Benchmark of the Monge-Ampere flow on the relaxed Ising model: seconds per epoch against
the original code.

    python benchmarks/bench_monge_ampere.py [--quick] [--out FILE.json]

One *epoch* of the original PyTorch code (wangleiphy/MongeAmpereFlow,
``variational_free_energy.py``) is one optimisation step: sample a batch from the flow,
integrating dx/dt = grad phi and d ln p/dt = -Laplacian phi with 50 hand-written RK4 steps
of 0.1 (the one-hidden-layer ``Simple_MLP`` potential with 512 ln cosh units and its
hand-coded gradient and Laplacian), compute ``mean(ln p - ln pi)`` and its gradient by
backpropagation through the 200 field evaluations, and take one Adam step. Its
configuration for the L = 16 relaxed Ising model at the critical temperature: batch 64,
lr 1e-3. It takes 1.6 s per epoch on two CPU cores here.

Here the same step is ``Trainer.step`` of
``thermax run ising-relaxed --flow monge-ampere --solver rk4 --steps-ode 50 --ode-time 5
--potential-width 512 --batch 64 --estimator pathwise`` (built through
:func:`thermax.catalog.build_run`), on one CPU device, float32. Variants
(``--variants``): ``analytic`` (the potential's hand-coded Laplacian, as the original),
``forward`` (the Laplacian by forward-mode autodiff of the field: d JVPs) and
``hutchinson`` (one JVP with a Gaussian probe).

Every step is compiled ahead of time (``lower`` then ``compile``, timed apart), run once as
a warm-up, then timed ``--repeats`` times; the median is reported. Target: at least 3x
faster than 1.6 s, i.e. <= 0.53 s per epoch.
"""

import argparse
import sys
from pathlib import Path

import equinox as eqx
import jax

# _timing.py sits next to this script (on sys.path when run as a script)
from _timing import environment, load_note, time_train_steps, write_results

from thermax.bijections import ContinuousFlow, ExactDivergence
from thermax.catalog import build_run

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_monge_ampere.json"

ORIGINAL_S_PER_EPOCH = 1.6
REQUIRED_SPEEDUP = 3.0
VARIANTS = ("analytic", "forward", "hutchinson")


def _with_forward_laplacian(model):
    """The model with its flow's exact divergence computed by forward-mode autodiff."""
    return eqx.tree_at(lambda m: m.bijection.divergence, model,
                       ExactDivergence(method="forward"))


def bench(variant: str, options: dict, *, repeats: int) -> dict:
    opts = {**options, "divergence": "hutchinson" if variant == "hutchinson" else "exact"}
    run = build_run("ising-relaxed", opts, devices=jax.devices()[:1])
    model = run.model
    assert isinstance(model.bijection, ContinuousFlow)
    if variant == "forward":
        model = _with_forward_laplacian(model)
    state = run.trainer.init(model, key=jax.random.key(0))
    print(f"[{variant}] compiling and timing {repeats} epochs ...", file=sys.stderr,
          flush=True)
    timing, compile_s = time_train_steps(run.trainer, state, repeats)
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    s = timing["median_s"]
    return {"n_params": int(n_params), "compile": compile_s, "timing": timing,
            "speedup_vs_original": ORIGINAL_S_PER_EPOCH / s,
            "target": {"max_s_per_epoch": ORIGINAL_S_PER_EPOCH / REQUIRED_SPEEDUP, "value": s,
                       "holds": s <= ORIGINAL_S_PER_EPOCH / REQUIRED_SPEEDUP}}


def format_table(results: dict) -> str:
    cfg = results["config"]
    dt = cfg["ode_time"] / cfg["steps_ode"]
    lines = [f"thermax Monge-Ampere benchmark: relaxed Ising L={cfg['L']} at beta_c, batch "
             f"{cfg['batch']}, {cfg['steps_ode']} RK4 steps of {dt:g}, "
             f"potential width {cfg['potential_width']}, float32, {cfg['repeats']} epochs "
             f"(median), backend {results['environment']['backend']}", ""]
    head = (f"{'Laplacian':<11} {'params':>7} {'s/epoch':>8} {'min s':>7} {'vs 1.6 s':>9} "
            f"{'compile s':>9}  target <= {ORIGINAL_S_PER_EPOCH / REQUIRED_SPEEDUP:.2f} s")
    lines += [head, "-" * len(head)]
    for name, r in results["variants"].items():
        t = r["timing"]
        status = "OK" if r["target"]["holds"] else "MISSED"
        lines.append(f"{name:<11} {r['n_params']:>7} {t['median_s']:>8.3f} {t['min_s']:>7.3f} "
                     f"{r['speedup_vs_original']:>8.1f}x {r['compile']['compile_s']:>9.1f}  "
                     f"{status}")
    note = load_note(results["environment"])
    if note:
        lines.append("\n" + note)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the analytic variant only, 3 repeats (a smoke run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    parser.add_argument("--L", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--potential-width", type=int, default=512)
    parser.add_argument("--steps-ode", type=int, default=50)
    parser.add_argument("--ode-time", type=float, default=5.0)
    parser.add_argument("--variants", type=str, default=None,
                        help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed epochs per variant (default 7, --quick 3)")
    args = parser.parse_args(argv)

    if jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", False)  # the benchmark is float32
    variants = (args.variants.split(",") if args.variants
                else ["analytic"] if args.quick else list(VARIANTS))
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    repeats = args.repeats or (3 if args.quick else 7)
    options = {"L": args.L, "flow": "monge-ampere", "solver": "rk4",
               "steps_ode": args.steps_ode, "ode_time": args.ode_time,
               "potential_width": args.potential_width, "batch": args.batch,
               "estimator": "pathwise", "z2": 1, "lr": 1e-3, "dtype": "float32"}
    results = {
        "config": {**options, "repeats": repeats, "quick": args.quick, "devices": 1},
        "original": {"s_per_epoch": ORIGINAL_S_PER_EPOCH, "cpu_cores": 2,
                     "code": "wangleiphy/MongeAmpereFlow (PyTorch)",
                     "required_speedup": REQUIRED_SPEEDUP},
        "environment": environment(),
        "variants": {},
    }
    for v in variants:
        results["variants"][v] = bench(v, options, repeats=repeats)
    write_results(results, args.out, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
