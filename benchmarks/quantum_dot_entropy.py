"""S = -dF/dT against the entropy estimator, from runs that share one training history.

    python benchmarks/quantum_dot_entropy.py --centre 0.5 --delta 0.1 \\
        [--base-steps 600] [--steps 300] [--out /tmp/entropy-check] [--options JSON]

The finite difference ``-(F(T+) - F(T-)) / (T+ - T-)`` and the estimator ``-E[ln p(K)]``
measure the same entropy only if every run is variationally converged to the same
accuracy (``benchmarks/quantum_dot_thermo.py`` explains why): independent runs from
scratch at each temperature leave biases that differ from run to run. This script removes
that difference by construction:

1. a base run at the centre temperature ``T0`` (``--base-steps``, ``p(K)`` pretrained as
   usual);
2. three continuations from the base run's trained model (both ``p(K)`` and the flow), at
   ``T0 - delta``, ``T0`` and ``T0 + delta``, each ``--steps`` steps with the same options
   and seed, and no pretraining (the model is already trained).

``--then-steps N --then-options JSON`` adds a third leg: ``N`` more steps from each
continuation's trained model with the options changed (e.g. stochastic reconfiguration
after Adam), in ``T<t>-then``; the table is then made from those.

The three runs have the same history up to the temperature of their last leg, so their
remaining distances from the optimum are alike, and the envelope theorem
(``dF_var/dT = -S_var`` at the optimum) applies to the differences. Each run is a standard
run directory; the table and JSON are written by ``quantum_dot_thermo.py`` on the three
continuations.

``--options`` holds the other ``thermax run quantum-dot`` options as JSON, with the
option names of ``config.json``, e.g.
``'{"n_up": 6, "n_down": 0, "flow_layers": 3, "flow_width": 32, "laplacian": "forward"}'``.
"""

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--centre", type=float, default=0.5)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--base-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("entropy-check"))
    parser.add_argument("--json", type=Path,
                        default=HERE / "results" / "quantum_dot_entropy.json")
    parser.add_argument("--options", type=json.loads, default={},
                        help="other run options as JSON (config.json names)")
    parser.add_argument("--then-steps", type=int, default=0,
                        help="a further leg of this many steps from each continuation's "
                             "trained model (0: none)")
    parser.add_argument("--then-options", type=json.loads, default={},
                        help="options of that leg on top of --options, as JSON (e.g. "
                             "another optimiser)")
    args = parser.parse_args()
    if not 0 < args.delta < args.centre:
        raise SystemExit(f"need 0 < --delta < --centre, got {args.delta}, {args.centre}")
    if args.then_steps < 0 or (args.then_options and not args.then_steps):
        raise SystemExit(f"--then-steps must be >= 1 with --then-options, got "
                         f"{args.then_steps}")

    from thermax.catalog import build_run

    options = dict(args.options)
    base_dir = args.out / f"base-T{args.centre:g}"
    if not (base_dir / "results.json").is_file():
        base = build_run("quantum-dot", {**options, "temperature": args.centre,
                                         "steps": args.base_steps})
        resume = (base_dir / "checkpoint" / "latest.json").is_file()
        print(f"base run at T = {args.centre:g}: {args.base_steps} steps in {base_dir}")
        base.execute(base_dir, resume=resume)
    temperatures = (args.centre - args.delta, args.centre, args.centre + args.delta)
    dirs = [_leg(base_dir, args.out / f"T{t:g}", t, options, args.steps)
            for t in temperatures]
    if args.then_steps:
        then = {**options, **args.then_options}
        dirs = [_leg(d, d.with_name(d.name + "-then"), t, then, args.then_steps)
                for d, t in zip(dirs, temperatures, strict=True)]
    subprocess.run([sys.executable, str(HERE / "quantum_dot_thermo.py"), *map(str, dirs),
                    "--out", str(args.json)], check=True)
    record = json.loads(args.json.read_text())
    record["protocol"] = {"centre": args.centre, "delta": args.delta,
                          "base_steps": args.base_steps, "steps": args.steps,
                          "options": options, "then_steps": args.then_steps,
                          "then_options": args.then_options}
    args.json.write_text(json.dumps(record, indent=2) + "\n")


def _leg(src: Path, d: Path, t: float, options: dict, steps: int) -> Path:
    """``steps`` steps at ``t`` from the trained model of ``src``, in ``d`` (resumed if it
    was interrupted, skipped if done)."""
    from thermax.catalog import build_run
    from thermax.sweeps import trained_model

    if (d / "results.json").is_file():
        print(f"T = {t:g}: done already ({d})")
        return d
    run = build_run("quantum-dot", {**options, "temperature": t, "steps": steps,
                                    "pretrain_steps": 0})
    resume = (d / "checkpoint" / "latest.json").is_file()
    if not resume:
        run = dataclasses.replace(run, model=trained_model(run.model, src))
    print(f"T = {t:g}: {steps} steps from the model of {src} in {d}")
    run.execute(d, resume=resume)
    return d


if __name__ == "__main__":
    main()
