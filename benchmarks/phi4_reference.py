"""Reference free energies of lattice phi^4 by thermodynamic integration with HMC.

    python benchmarks/phi4_reference.py [--quick] [--out FILE.json]

For each ``kappa`` (default 0.15, symmetric phase, and 0.3, near-critical/broken) at
``L = 8``, ``lam = 1.1`` it computes ``F = -ln Z`` of ``thermax.systems.Phi4`` with
``thermax.exact.phi4_thermodynamic_integration``:

    ln Z(kappa) = N ln z0 + int_0^kappa <2 sum_x sum_mu phi_x phi_{x+mu}>_{kappa'} dkappa',

Gauss–Legendre in ``kappa'`` (``--n-nodes``), at every node ``--chains`` independent HMC
chains (``--leapfrog`` steps per trajectory, step size adapted to 0.8 acceptance during
``--warmup`` steps, then fixed for ``--steps`` steps); the error bar comes from the spread
of per-chain means. Runs in float64. Prints the figures and a ``PHI4_REFERENCE`` snippet
for ``src/thermax/exact/_phi4.py``, and writes everything to
``benchmarks/results/phi4_reference.json``. The published values were computed pinned to
one core (``taskset -c 0``); each ``kappa`` takes about 4 minutes there.
"""

import argparse
import datetime
import json
import math
import platform
import subprocess
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from thermax.exact import phi4_thermodynamic_integration  # noqa: E402

DEFAULT_OUT = Path(__file__).parent / "results" / "phi4_reference.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--L", type=int, default=8)
    parser.add_argument("--kappa", type=float, nargs="+", default=[0.15, 0.3])
    parser.add_argument("--lam", type=float, default=1.1)
    parser.add_argument("--n-nodes", type=int, default=16)
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--leapfrog", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="short chains (64 x 500, 8 nodes) to check the script runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.quick:
        args.n_nodes, args.chains, args.steps, args.warmup = 8, 64, 500, 200

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    settings = {"n_nodes": args.n_nodes, "n_chains": args.chains, "n_steps": args.steps,
                "n_warmup": args.warmup, "n_leapfrog": args.leapfrog,
                "target_acceptance": 0.8, "seed": args.seed}
    results = []
    snippet = []
    for i, kappa in enumerate(args.kappa):
        print(f"L={args.L} kappa={kappa} lam={args.lam}", flush=True)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = phi4_thermodynamic_integration(
            args.L, kappa, args.lam, key=jax.random.fold_in(jax.random.key(args.seed), i),
            n_nodes=args.n_nodes, n_chains=args.chains, n_steps=args.steps,
            n_warmup=args.warmup, n_leapfrog=args.leapfrog, verbose=True)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        n = args.L**2
        f, err = out["free_energy"], out["free_energy_stderr"]
        print(f"  F = -ln Z = {f:.6f} +- {err:.6f}   (F/N = {f / n:.7f} +- {err / n:.7f}; "
              f"-N ln z0 = {-n * out['log_z0']:.6f}; {seconds:.0f} s wall, "
              f"{cpu_seconds:.0f} s CPU)", flush=True)
        results.append({"L": args.L, "kappa": kappa, "lam": args.lam, **out,
                        "seconds": seconds, "cpu_seconds": cpu_seconds,
                        "settings": settings})
        provenance = (f"benchmarks/phi4_reference.py: TI, {args.n_nodes} Gauss-Legendre "
                      f"nodes, {args.chains} HMC chains x {args.steps} steps "
                      f"(+{args.warmup} warm-up, {args.leapfrog} leapfrog), float64, "
                      f"{seconds:.0f} s wall on one shared CPU core")
        snippet.append(f"    ({args.L}, {kappa}, {args.lam}): ({f!r}, {err!r},\n"
                       f"        {provenance!r}),")

    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit, "jax": jax.__version__, "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "devices": [str(d) for d in jax.devices()], "quick": args.quick, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    print("PHI4_REFERENCE entries:\n" + "\n".join(snippet))
    assert all(math.isfinite(r["free_energy"]) for r in results)


if __name__ == "__main__":
    main()
