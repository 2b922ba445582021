"""Thermodynamic consistency of quantum-dot runs at several temperatures.

    python benchmarks/quantum_dot_thermo.py RUN_DIR_OR_RESULTS_JSON ... [--ground RUN]
        [--out benchmarks/results/quantum_dot_thermo.json] [--plot FILE.png]

Reads the ``results.json`` of ``thermax run quantum-dot`` runs that differ only in the
temperature and prints ``F``, ``E`` and ``S`` (the entropy estimator ``-E[ln p(K)]``, with
standard errors) against ``T``. At every interior temperature with neighbours on both sides
it compares the entropy estimator with the thermodynamic entropy from finite differences of
the free energies, ``S = -dF/dT``:

* the central difference ``-(F(T+) - F(T-)) / (T+ - T-)`` (second-order accurate at the
  midpoint, which need not be ``T``; the table gives the midpoint);
* its standard error from the two runs' ``F`` errors (independent runs), and the gap to the
  estimator in units of the combined error;
* where the three temperatures are equally spaced, the same difference against Simpson's
  average of the estimator over ``[T-, T+]``, ``(S(T-) + 4 S(T) + S(T+)) / 6``. The central
  difference is exactly the mean of ``S`` over that interval (``F(T+) - F(T-) = -integral
  of S dT``), so this comparison carries no ``O(delta^2)`` truncation error; it matters at
  low ``T``, where ``S(T)`` curves steeply.

With ``--ground`` (a ``T = 0`` run of the same system) it also prints ``E(T) - E_0`` for the
lowest temperatures: as ``T -> 0`` the energy must meet the ground-state energy.

``--plot`` draws ``F``, ``E`` (with the ground state at ``T = 0``) and ``S`` against ``T``,
with the entropies from the finite differences on the ``S`` panel. ``--group-size 3`` takes
the differences only within each consecutive group of three runs as given (one group per
``quantum_dot_entropy.py`` protocol), so several protocols can share one table and plot.

The finite difference and the estimator measure the same entropy only if every run is
variationally converged to the same accuracy: a bias ``delta F`` that differs between two
runs adds ``(delta F+ - delta F-) / (T+ - T-)`` to the finite difference, which the error
bars do not include.
"""

import argparse
import json
import math
from pathlib import Path

DEFAULT_OUT = Path(__file__).parent / "results" / "quantum_dot_thermo.json"


def load(path: str) -> dict:
    p = Path(path)
    return json.loads((p / "results.json" if p.is_dir() else p).read_text())


def central_differences(runs: list[dict]) -> list[dict]:
    """``S = -dF/dT`` at each run with a colder and a hotter neighbour (sorted by ``T``)."""
    rows = []
    for cold, mid, hot in zip(runs, runs[1:], runs[2:], strict=False):
        dt = hot["temperature"] - cold["temperature"]
        s_fd = -(hot["free_energy"] - cold["free_energy"]) / dt
        s_fd_err = math.hypot(hot["free_energy_stderr"], cold["free_energy_stderr"]) / dt
        gap = s_fd - mid["entropy"]
        combined = math.hypot(s_fd_err, mid["entropy_stderr"])
        simpson = simpson_err = simpson_gap = None
        if math.isclose(mid["temperature"] - cold["temperature"],
                        hot["temperature"] - mid["temperature"], rel_tol=1e-9):
            simpson = (cold["entropy"] + 4 * mid["entropy"] + hot["entropy"]) / 6
            simpson_err = math.sqrt(cold["entropy_stderr"] ** 2
                                    + 16 * mid["entropy_stderr"] ** 2
                                    + hot["entropy_stderr"] ** 2) / 6
            both = math.hypot(s_fd_err, simpson_err)
            simpson_gap = (s_fd - simpson) / both if both > 0 else None
        rows.append({"temperature": mid["temperature"],
                     "midpoint": 0.5 * (hot["temperature"] + cold["temperature"]),
                     "t_minus": cold["temperature"], "t_plus": hot["temperature"],
                     "entropy_estimator": mid["entropy"],
                     "entropy_estimator_stderr": mid["entropy_stderr"],
                     "entropy_fd": s_fd, "entropy_fd_stderr": s_fd_err,
                     "gap": gap, "gap_in_errors": gap / combined if combined > 0 else None,
                     "entropy_estimator_simpson": simpson,
                     "entropy_estimator_simpson_stderr": simpson_err,
                     "gap_simpson_in_errors": simpson_gap})
    return rows


def plot(runs: list[dict], diffs: list[dict], ground: dict | None, path: Path) -> None:
    """``F`` and ``E`` (left) and ``S`` (right) against ``T``, with error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["temperature"] for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key, label, marker in (("free_energy", "F", "o"), ("energy", "E", "s")):
        left.errorbar(t, [r[key] for r in runs], [r[f"{key}_stderr"] for r in runs],
                      fmt=marker, ms=4, capsize=2, label=label)
    if ground is not None:
        left.errorbar([0.0], [ground["energy"]], [ground["energy_stderr"]], fmt="k*", ms=8,
                      label="T = 0 (ground state)")
    left.set_xlabel("T (Hartree)")
    left.set_ylabel("Hartree")
    left.legend()
    right.errorbar(t, [r["entropy"] for r in runs], [r["entropy_stderr"] for r in runs],
                   fmt="o", ms=4, capsize=2, label="S = -E[ln p(K)] (estimator)")
    if diffs:
        right.errorbar([d["midpoint"] for d in diffs], [d["entropy_fd"] for d in diffs],
                       [d["entropy_fd_stderr"] for d in diffs], fmt="rx", ms=8, capsize=3,
                       label="S = -dF/dT (central differences)")
    right.set_xlabel("T (Hartree)")
    right.set_ylabel("S")
    right.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories or results.json files")
    parser.add_argument("--ground", help="a T = 0 run of the same system")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--plot", type=Path, help="draw F, E and S against T to this file")
    parser.add_argument("--group-size", type=int, default=0,
                        help="take central differences only within consecutive groups of "
                        "this many runs, in the order given (e.g. 3: one group per "
                        "quantum_dot_entropy.py protocol); 0: across all runs")
    args = parser.parse_args()
    given = [load(r) for r in args.runs]
    if args.group_size < 0 or (args.group_size and len(given) % args.group_size):
        raise SystemExit(f"quantum_dot_thermo: --group-size {args.group_size} must divide "
                         f"the {len(given)} runs")
    size = args.group_size or len(given)
    groups = [sorted(given[i:i + size], key=lambda r: r["temperature"])
              for i in range(0, len(given), size)]
    runs = sorted(given, key=lambda r: r["temperature"])
    if any(r["temperature"] <= 0 for r in runs):
        raise SystemExit("quantum_dot_thermo: the temperature series needs T > 0 runs; pass "
                         "the T = 0 run with --ground")
    print(f"{'T':>8} {'beta':>8} {'F':>22} {'E':>22} {'S (estimator)':>20}")
    for r in runs:
        print(f"{r['temperature']:8.4f} {1 / r['temperature']:8.4f} "
              f"{r['free_energy']:12.6f} ± {r['free_energy_stderr']:.6f} "
              f"{r['energy']:12.6f} ± {r['energy_stderr']:.6f} "
              f"{r['entropy']:10.5f} ± {r['entropy_stderr']:.5f}")
    diffs = [d for group in groups for d in central_differences(group)]
    if diffs:
        print("\nS = -dF/dT by central differences against the entropy estimator:")
    for d in diffs:
        print(f"  T = {d['temperature']:.4f} (from T = {d['t_minus']:.4f}, {d['t_plus']:.4f}; "
              f"midpoint {d['midpoint']:.4f}): -dF/dT = {d['entropy_fd']:.4f} ± "
              f"{d['entropy_fd_stderr']:.4f}, estimator {d['entropy_estimator']:.4f} ± "
              f"{d['entropy_estimator_stderr']:.4f}, gap {d['gap']:+.4f} "
              f"({d['gap_in_errors']:+.2f} sigma)")
        if d["entropy_estimator_simpson"] is not None:
            print(f"    estimator averaged over [T-, T+] (Simpson): "
                  f"{d['entropy_estimator_simpson']:.4f} ± "
                  f"{d['entropy_estimator_simpson_stderr']:.4f}, gap "
                  f"{d['entropy_fd'] - d['entropy_estimator_simpson']:+.4f} "
                  f"({d['gap_simpson_in_errors']:+.2f} sigma)")
    ground = None
    if args.ground:
        g = load(args.ground)
        ground = {"energy": g["energy"], "energy_stderr": g["energy_stderr"]}
        print(f"\nT = 0: E_0 = {g['energy']:.6f} ± {g['energy_stderr']:.6f}")
        for r in runs[:2]:
            excess = r["energy"] - g["energy"]
            err = math.hypot(r["energy_stderr"], g["energy_stderr"])
            print(f"  T = {r['temperature']:.4f}: E - E_0 = {excess:+.6f} ± {err:.6f}")
    out = {"runs": [{k: r.get(k) for k in ("temperature", "beta", "free_energy",
                                           "free_energy_stderr", "energy", "energy_stderr",
                                           "entropy", "entropy_stderr", "steps", "config")}
                    for r in runs],
           "central_differences": diffs, "ground_state": ground}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        plot(runs, diffs, ground, args.plot)
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
