"""Benchmark of the electron-gas training step: seconds per step against N, batch and the
Laplacian method.

    python benchmarks/bench_electron_gas.py [--cases 13:256:forward,13:256:loop,...]
                                            [--repeats 2] [--out FILE.json]

A step is ``QuantumTrainer.step`` of ``thermax run electron-gas`` (built through
:func:`thermax.catalog.build_run`): draw ``K ~ p`` (the set transformer) for every walker,
10 Metropolis sweeps, the local energies (exact Laplacian of the complex ``ln Psi`` through
the periodic FermiNet-style flow, 2 layers of width 16; Ewald sums), the REINFORCE and VMC
gradients and an Adam step. Spin-polarised 2D gas, r_s = 10, T/T_F = 0.15, twist 0,
float64, one CPU device. The issue's reference: the original JAX code needs about 31 s per
step at N = 13, batch 256, exact Laplacian, on 2 CPU cores. Each case is a string
``N:batch:laplacian[:chunk]`` (``chunk``: ``--chunk-size``, local energies of that many
walkers at a time, which N = 37 needs on a machine with tens of GB); the step is compiled
ahead of time (timed apart), run once as a warm-up, then timed ``--repeats`` times
(median).
"""

import argparse
import json
import sys
from pathlib import Path

import jax
from _timing import environment, time_quantum_step

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_electron_gas.json"
DEFAULT_CASES = ("13:256:forward,13:256:loop,13:64:forward,13:1024:forward,"
                 "21:256:forward,29:256:forward,37:256:forward:32")
ORIGINAL_N13_B256_S = 31.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    results = {"environment": environment(), "cases": {},
               "original_code_n13_batch256_s": ORIGINAL_N13_B256_S}
    print("electron-gas training step, 2D polarised, r_s = 10, T/T_F = 0.15, one CPU device, "
          "float64")
    print(f"{'N':>4}{'batch':>7}{'laplacian':>11}{'chunk':>7}{'s/step':>10}{'compile s':>11}"
          f"{'params':>9}{'vs 31 s':>9}")
    for case in args.cases.split(","):
        n, batch, laplacian, *chunk = case.split(":")
        cfg = {"n": int(n), "rs": 10.0, "t_over_tf": 0.15, "batch": int(batch),
               "laplacian": laplacian, "pretrain_steps": 0, "burn_in": 1, "sweeps": 10,
               "dtype": "float64", "chunk_size": int(chunk[0]) if chunk else 0}
        try:
            r = time_quantum_step("electron-gas", cfg, repeats=args.repeats)
        except Exception as err:  # noqa: BLE001 - a case that fails is reported, not fatal
            results["cases"][case] = {"error": f"{type(err).__name__}: {err}"[:300]}
            print(f"{case}: failed: {type(err).__name__}: {str(err)[:200]}")
            continue
        speedup = (ORIGINAL_N13_B256_S / r["median_s"]
                   if (n, batch) == ("13", "256") else None)
        r["speedup_vs_original"] = speedup
        results["cases"][case] = r
        print(f"{n:>4}{batch:>7}{laplacian:>11}{cfg['chunk_size'] or '-':>7}"
              f"{r['median_s']:>10.3f}"
              f"{r['lower_s'] + r['compile_s']:>11.1f}{r['n_params']:>9d}"
              f"{'' if speedup is None else f'{speedup:.1f}x':>9}", flush=True)
    results["environment_end"] = environment()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"load average {results['environment_end']['load_average']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
