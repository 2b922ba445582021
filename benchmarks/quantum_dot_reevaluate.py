"""Re-evaluate trained quantum-dot runs with other Metropolis sweeps per evaluation chunk.

    python benchmarks/quantum_dot_reevaluate.py RUN_DIR ... --sweeps 100 200 \\
        [--eval-batch N] [--eval-seed S] --out DIR

At ``T > 0`` every evaluation chunk draws fresh occupations ``K`` and the walkers must
relax from ``|Psi_K|^2`` to ``|Psi_K'|^2`` in the run's ``--sweeps`` sweeps. Too few leave
``E_loc`` averaged over the wrong distribution, a bias that grows with ``T`` (hotter runs
draw more varied ``K``). This script reads each run's trained state (newest checkpoint:
model and walkers) and repeats the final evaluation with each ``--sweeps`` value, with the
run's own evaluation key (the same occupations are drawn, so only the sweeps differ).
Each evaluation is written as ``DIR/<run>-sw<S>/results.json`` with the keys of a run's
``results.json`` that ``quantum_dot_thermo.py`` reads, and ``config.eval_sweeps`` set to
``S``; a finished one is not repeated. (Runs made since ``--eval-sweeps`` exist evaluate
with twice their training sweeps at ``T > 0`` by default.)

``--eval-seed S`` draws an independent evaluation instead (the run's evaluation key folded
with ``S``: other occupations and other Metropolis moves), written to
``DIR/<run>-sw<sweeps>-seed<S>/``: a second, larger evaluation of the same trained model
whose error bar does not share the first one's samples.
"""

import argparse
import json
from pathlib import Path

import jax


def reevaluate(run_dir: Path, sweeps: int, eval_batch: int | None,
               eval_seed: int | None = None) -> dict:
    from thermax.catalog import build_run
    from thermax.train import load_checkpoint
    from thermax.train._run import _seed_keys

    saved = json.loads((run_dir / "config.json").read_text())
    cfg = {**saved["config"], "eval_sweeps": sweeps, "pretrain_steps": 0}
    if eval_batch:
        cfg["eval_batch"] = eval_batch
    run = build_run(saved["system"], cfg)
    _, k_train, k_eval = _seed_keys(cfg["seed"])
    if eval_seed is not None:
        k_eval = jax.random.fold_in(k_eval, eval_seed)
    state = run.trainer.init(run.model, key=k_train)
    state, _ = load_checkpoint(run_dir / "checkpoint", state)
    state = run.trainer.place(state)
    figures = run.trainer.evaluate(state, key=k_eval, n_samples=int(cfg["eval_batch"]))
    temperature = float(run.trainer.temperature)
    return {"temperature": temperature, "beta": 1.0 / temperature,
            **{k: figures[k] for k in ("free_energy", "free_energy_stderr", "energy",
                                       "energy_stderr", "entropy", "entropy_stderr",
                                       "free_energy_stderr_iid", "energy_stderr_iid",
                                       "acceptance")},
            "steps": int(state.step), "config": run.config, "reevaluated_from": str(run_dir),
            "eval_seed": eval_seed, "samples": figures["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="trained run directories")
    parser.add_argument("--sweeps", nargs="+", type=int, required=True)
    parser.add_argument("--eval-batch", type=int, help="default: each run's own")
    parser.add_argument("--eval-seed", type=int,
                        help="an independent evaluation: the run's key folded with this")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for s in args.sweeps:
        if s < 1:
            raise SystemExit(f"--sweeps must be >= 1, got {s}")
    for run_dir in args.runs:
        if not (run_dir / "checkpoint" / "latest.json").is_file():
            raise SystemExit(f"{run_dir}: no checkpoint to re-evaluate")
    for run_dir in args.runs:
        for s in args.sweeps:
            tag = "" if args.eval_seed is None else f"-seed{args.eval_seed}"
            target = args.out / f"{run_dir.name}-sw{s}{tag}" / "results.json"
            if target.is_file():
                print(f"{target}: done already")
                continue
            r = reevaluate(run_dir, s, args.eval_batch, args.eval_seed)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(r, indent=2) + "\n")
            print(f"{run_dir.name}, {s} sweeps: F = {r['free_energy']:.5f} ± "
                  f"{r['free_energy_stderr']:.5f}, E = {r['energy']:.5f} ± "
                  f"{r['energy_stderr']:.5f}, S = {r['entropy']:.4f}", flush=True)


if __name__ == "__main__":
    main()
