"""Benchmark of continuous flows on the Coulomb gas in a trap: seconds per training step.

    python benchmarks/bench_cnf.py [--quick] [--out FILE.json]

A training step is ``Trainer.step`` of ``thermax run coulomb-trap`` (built through
:func:`thermax.catalog.build_run`, so the command line and this script time the same
thing): draw a batch from the flow (one ODE solve with the log-density alongside), compute
the pathwise free-energy loss and its gradient through the solver, and take one Adam step.
One CPU device, float32.

Two tables:

* **estimators x adjoints** at N = 6 in 2D, batch 256 (the issue's configuration): exact
  divergence (the backflow field's analytic formula) against Hutchinson (one JVP with a
  Gaussian probe), each with the recursive-checkpoint (discretise-then-optimise),
  backsolve (continuous adjoint) and direct adjoints; plus the Monge-Ampere field of the
  symmetric pair + one-body potential (its Laplacian is analytic too);
* **scaling with N** (4, 8, 16, 32) for exact and Hutchinson divergence.

Every step is compiled ahead of time (``lower`` then ``compile``, timed apart), run once as
a warm-up, then timed ``--repeats`` times; the median is reported.
"""

import argparse
import sys
from pathlib import Path

import equinox as eqx
import jax

# _timing.py sits next to this script (on sys.path when run as a script)
from _timing import environment, load_note, time_train_steps, write_results

from thermax.catalog import build_run

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_cnf.json"

#: (name, options) of the estimator x adjoint table
VARIANTS = {
    "exact/recursive": {"divergence": "exact", "adjoint": "recursive"},
    "exact/backsolve": {"divergence": "exact", "adjoint": "backsolve"},
    "exact/direct": {"divergence": "exact", "adjoint": "direct"},
    "hutchinson/recursive": {"divergence": "hutchinson", "adjoint": "recursive"},
    "hutchinson/backsolve": {"divergence": "hutchinson", "adjoint": "backsolve"},
    "hutchinson/direct": {"divergence": "hutchinson", "adjoint": "direct"},
    "monge-ampere/exact": {"flow": "monge-ampere", "divergence": "exact"},
    "monge-ampere/hutchinson": {"flow": "monge-ampere", "divergence": "hutchinson"},
}
SCALING_N = (4, 8, 16, 32)


def bench(options: dict, *, repeats: int) -> dict:
    run = build_run("coulomb-trap", {"dtype": "float32", **options},
                    devices=jax.devices()[:1])
    state = run.trainer.init(run.model, key=jax.random.key(options.get("seed", 0)))
    timing, compile_s = time_train_steps(run.trainer, state, repeats)
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(run.model, eqx.is_inexact_array)))
    return {"options": options, "n_params": int(n_params), "compile": compile_s,
            "timing": timing}


def format_tables(results: dict) -> str:
    cfg = results["config"]
    lines = [f"thermax continuous-flow benchmark: Coulomb gas in a trap, batch {cfg['batch']}, "
             f"solver {cfg['solver']} x {cfg['steps_ode']} steps, float32, "
             f"{cfg['repeats']} steps (median), backend {results['environment']['backend']}",
             ""]
    head = f"{'N=6 2D: field/divergence/adjoint':<34} {'s/step':>8} {'min s':>7} {'compile s':>9}"
    lines += [head, "-" * len(head)]
    for name, r in results["variants"].items():
        t = r["timing"]
        label = name if name.startswith("monge") else f"cnf/{name}"
        lines.append(f"{label:<34} {t['median_s']:>8.4f} {t['min_s']:>7.4f} "
                     f"{r['compile']['compile_s']:>9.1f}")
    if results["scaling"]:
        lines += ["", f"{'N (2D, cnf, recursive)':<24} {'exact s/step':>12} "
                      f"{'hutchinson s/step':>17} {'ratio':>6}"]
        for n, r in results["scaling"].items():
            e, h = r["exact"]["timing"]["median_s"], r["hutchinson"]["timing"]["median_s"]
            lines.append(f"{n:<24} {e:>12.4f} {h:>17.4f} {e / h:>6.2f}")
    note = load_note(results["environment"])
    if note:
        lines.append("\n" + note)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="two variants, no scaling table, 3 repeats (a smoke run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--solver", type=str, default="tsit5")
    parser.add_argument("--steps-ode", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed steps per variant (default 5, --quick 3)")
    parser.add_argument("--scaling", type=str, default=",".join(map(str, SCALING_N)),
                        help="comma-separated N for the scaling table ('' to skip)")
    args = parser.parse_args(argv)

    if jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", False)  # the benchmark is float32
    repeats = args.repeats or (3 if args.quick else 5)
    common = {"batch": args.batch, "solver": args.solver, "steps_ode": args.steps_ode,
              "beta": 10.0}
    variants = (["exact/recursive", "hutchinson/recursive"] if args.quick else list(VARIANTS))
    scaling = [] if args.quick or not args.scaling else [int(n) for n in args.scaling.split(",")]

    results = {
        "config": {**common, "n": 6, "dim": 2, "repeats": repeats, "quick": args.quick,
                   "dtype": "float32", "devices": 1},
        "environment": environment(),
        "variants": {},
        "scaling": {},
    }
    for name in variants:
        print(f"[{name}] compiling and timing ...", file=sys.stderr, flush=True)
        results["variants"][name] = bench({**common, "n": 6, "dim": 2, **VARIANTS[name]},
                                          repeats=repeats)
    for n in scaling:
        row = {}
        for div in ("exact", "hutchinson"):
            print(f"[N={n} {div}] compiling and timing ...", file=sys.stderr, flush=True)
            row[div] = bench({**common, "n": n, "dim": 2, "divergence": div}, repeats=repeats)
        results["scaling"][str(n)] = row
    write_results(results, args.out, format_tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
