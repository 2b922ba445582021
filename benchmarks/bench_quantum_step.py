"""Benchmark of the quantum-dot training step: seconds per step.

    python benchmarks/bench_quantum_step.py [--batch 1024] [--repeats 3] [--out FILE.json]

A step is ``QuantumTrainer.step`` of ``thermax run quantum-dot`` (built through
:func:`thermax.catalog.build_run`, so the command line and this script time the same
thing): draw ``K ~ p`` for every walker, ``--sweeps`` Metropolis sweeps of all walkers,
the local energies (the Laplacian of ``ln|Psi|``), the REINFORCE and VMC gradients and an
Adam step. N = 6 electrons (3 up + 3 down), omega = 1, T = 0.5 (so ``p(K)`` is trained
too), float64, one CPU device. Variants: each flow with the exact loop Laplacian, and
the forward Laplacian where it works on that flow. The step is compiled ahead of time
(timed apart), run once as a warm-up, then timed ``--repeats`` times (median).
"""

import argparse
import json
import sys
from pathlib import Path

import jax
from _timing import environment, time_quantum_step

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_quantum_step.json"

VARIANTS = {
    "backflow/loop": {"flow": "backflow", "laplacian": "loop"},
    "backflow/forward": {"flow": "backflow", "laplacian": "forward"},
    "backflow/hutchinson": {"flow": "backflow", "laplacian": "hutchinson"},
    "ferminet/loop": {"flow": "ferminet", "laplacian": "loop"},
    "identity/loop": {"flow": "identity", "laplacian": "loop"},
}


def bench(options: dict, *, batch: int, repeats: int) -> dict:
    cfg = {"n_up": 3, "n_down": 3, "temperature": 0.5, "batch": batch, "pretrain_steps": 0,
           "sweeps": 10, "burn_in": 1, "dtype": "float64", **options}
    return time_quantum_step("quantum-dot", cfg, repeats=repeats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    results = {"batch": args.batch, "environment": environment(), "variants": {}}
    print(f"quantum-dot training step, N = 6 (3+3), T = 0.5, batch {args.batch}, "
          "one CPU device, float64")
    print(f"{'variant':<22}{'s/step':>10}{'compile s':>11}{'params':>9}")
    for name in args.variants.split(","):
        try:
            r = bench(VARIANTS[name], batch=args.batch, repeats=args.repeats)
        except Exception as err:  # noqa: BLE001 - a variant that fails is reported, not fatal
            results["variants"][name] = {"error": f"{type(err).__name__}: {err}"[:300]}
            print(f"{name:<22}failed: {type(err).__name__}")
            continue
        results["variants"][name] = r
        print(f"{name:<22}{r['median_s']:>10.3f}{r['lower_s'] + r['compile_s']:>11.1f}"
              f"{r['n_params']:>9d}", flush=True)
    results["environment_end"] = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"load average {results['environment_end']['load_average']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
