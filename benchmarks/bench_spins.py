"""Benchmark of the autoregressive spin models: cached vs naive sampling, ln p, a train step.

    python benchmarks/bench_spins.py [--quick] [--out FILE.json]

On an ``L x L`` lattice (default L = 16, batch 1000, float32) for MADE (depth 3, width 4)
and PixelCNN (depth 3, width 64, half_kernel 1, i.e. a 3x3 kernel), both wrapped in
``AutoregressiveSpins`` without Z2 symmetrisation, it times

* ``cached``: a batch from the cached sampler, ``jax.vmap`` of ``sample_and_log_prob``
  under ``eqx.filter_jit``;
* ``naive``: the reference sampler ``naive_sample_and_log_prob`` (one full pass per
  site). It is slow, so by default it runs on a smaller batch and its time is scaled
  linearly to the full batch (``--naive-batch``); the output says when it was;
* ``log_prob``: one teacher-forced ``ln p`` pass over the same batch;
* ``train_step``: one ``Trainer.step`` with ``ScoreFunctionFreeEnergy`` and Adam on
  ``Ising2D(L)`` at beta = 0.44, on one device.

Every function is compiled ahead of time (``lower`` then ``compile``, timed separately),
run once as a warm-up, then timed ``--repeats`` times with ``jax.block_until_ready``;
the median is reported. Targets: cached PixelCNN batch < 4 s, cached MADE batch < 0.5 s,
(cached sample time) / (log_prob time) <= 3.
"""

import argparse
import statistics
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

# _timing.py sits next to this script (on sys.path when run as a script)
from _timing import compile_ahead, environment, load_note, now, time_train_steps, write_results

from thermax.distributions import AutoregressiveSpins
from thermax.nn import MADE, PixelCNN
from thermax.objectives import ScoreFunctionFreeEnergy
from thermax.systems import Ising2D
from thermax.train import Trainer, make_mesh

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_spins.json"

#: Targets: seconds per cached sample batch, and the largest sample / log_prob ratio.
TARGET_SAMPLE_S = {"made": 0.5, "pixelcnn": 4.0}
TARGET_RATIO = 3.0


def build_models(size: int, *, key) -> dict[str, AutoregressiveSpins]:
    k_made, k_cnn = jax.random.split(key)
    return {
        "made": AutoregressiveSpins(
            MADE((size, size), depth=3, width=4, key=k_made, dtype=jnp.float32)),
        "pixelcnn": AutoregressiveSpins(
            PixelCNN(size, depth=3, width=64, half_kernel=1, key=k_cnn, dtype=jnp.float32)),
    }


@eqx.filter_jit
def cached_batch(model, keys):
    return jax.vmap(lambda k: model.sample_and_log_prob(key=k))(keys)


@eqx.filter_jit
def naive_batch(model, keys):
    return jax.vmap(lambda k: model.naive_sample_and_log_prob(key=k))(keys)


@eqx.filter_jit
def log_prob_batch(model, xs):
    return jax.vmap(model.log_prob)(xs)


def time_calls(fn, args, repeats: int) -> dict:
    """Warm-up once, then ``repeats`` timed calls of ``fn(*args)``."""
    t0 = now()
    jax.block_until_ready(fn(*args))
    warmup = now() - t0
    times = []
    for _ in range(repeats):
        t0 = now()
        jax.block_until_ready(fn(*args))
        times.append(now() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "warmup_s": warmup,
            "all_s": times}


def bench_model(name: str, model, *, size: int, batch: int, naive_batch_size: int,
                repeats: int, naive_repeats: int, key) -> dict:
    k_sample, k_naive, k_train = jax.random.split(key, 3)
    keys = jax.random.split(k_sample, batch)
    naive_keys = jax.random.split(k_naive, naive_batch_size)
    compile_s = {}
    timing = {}

    print(f"[{name}] cached sampler ...", file=sys.stderr, flush=True)
    fn, lo, co = compile_ahead(cached_batch, model, keys)
    compile_s["cached_sample"] = {"lower_s": lo, "compile_s": co}
    timing["cached_sample"] = time_calls(fn, (model, keys), repeats)
    xs, _ = fn(model, keys)

    print(f"[{name}] log_prob ...", file=sys.stderr, flush=True)
    fn, lo, co = compile_ahead(log_prob_batch, model, xs)
    compile_s["log_prob"] = {"lower_s": lo, "compile_s": co}
    timing["log_prob"] = time_calls(fn, (model, xs), repeats)

    print(f"[{name}] naive sampler (batch {naive_batch_size}) ...", file=sys.stderr,
          flush=True)
    fn, lo, co = compile_ahead(naive_batch, model, naive_keys)
    compile_s["naive_sample"] = {"lower_s": lo, "compile_s": co}
    naive = time_calls(fn, (model, naive_keys), naive_repeats)
    scale = batch / naive_batch_size
    naive["measured_batch"] = naive_batch_size
    naive["scaled_to_batch"] = batch
    naive["scale_factor"] = scale
    naive["median_s_measured"] = naive["median_s"]
    naive["median_s"] = naive["median_s"] * scale  # estimate for the full batch
    naive["min_s"] = naive["min_s"] * scale
    timing["naive_sample"] = naive

    print(f"[{name}] train step ...", file=sys.stderr, flush=True)
    trainer = Trainer(ScoreFunctionFreeEnergy(), optax.adam(1e-3), Ising2D(size), beta=0.44,
                      batch=batch, mesh=make_mesh(jax.devices()[:1]))
    state = trainer.init(model, key=k_train)
    timing["train_step"], compile_s["train_step"] = time_train_steps(trainer, state, repeats)

    sample_s = timing["cached_sample"]["median_s"]
    ratio = sample_s / timing["log_prob"]["median_s"]
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    return {
        "n_params": int(n_params),
        "compile": compile_s,
        "timing": timing,
        "cached_samples_per_s": batch / sample_s,
        "naive_samples_per_s": batch / timing["naive_sample"]["median_s"],
        "naive_scaled": naive_batch_size != batch,
        "log_prob_samples_per_s": batch / timing["log_prob"]["median_s"],
        "train_steps_per_s": 1.0 / timing["train_step"]["median_s"],
        "speedup_cached_vs_naive": timing["naive_sample"]["median_s"] / sample_s,
        "sample_over_log_prob": ratio,
        "targets": {
            "sample_batch_s": {"target": f"< {TARGET_SAMPLE_S[name]}", "value": sample_s,
                               "holds": sample_s < TARGET_SAMPLE_S[name]},
            "sample_over_log_prob": {"target": f"<= {TARGET_RATIO}", "value": ratio,
                                     "holds": ratio <= TARGET_RATIO},
        },
    }


def format_table(results: dict) -> str:
    cfg = results["config"]
    lines = [f"thermax spin benchmark: L={cfg['L']}, batch={cfg['batch']}, {cfg['dtype']}, "
             f"{cfg['repeats']} repeats (median), backend {results['environment']['backend']}",
             ""]
    head = (f"{'model':<9} {'params':>8} {'cached s':>9} {'samples/s':>10} {'naive s':>9} "
            f"{'speedup':>8} {'log_prob s':>10} {'ratio':>6} {'step s':>8} {'steps/s':>8}")
    lines += [head, "-" * len(head)]
    for name, r in results["models"].items():
        t = r["timing"]
        naive = f"{t['naive_sample']['median_s']:.3f}" + ("*" if r["naive_scaled"] else "")
        lines.append(
            f"{name:<9} {r['n_params']:>8} {t['cached_sample']['median_s']:>9.3f} "
            f"{r['cached_samples_per_s']:>10.0f} {naive:>9} "
            f"{r['speedup_cached_vs_naive']:>7.1f}x {t['log_prob']['median_s']:>10.4f} "
            f"{r['sample_over_log_prob']:>6.2f} {t['train_step']['median_s']:>8.3f} "
            f"{r['train_steps_per_s']:>8.2f}")
    notes = [f"* naive {name}: timed on a batch of {r['timing']['naive_sample']['measured_batch']}"
             f" ({r['timing']['naive_sample']['median_s_measured']:.3f} s) and scaled "
             f"x{r['timing']['naive_sample']['scale_factor']:g} to the batch of {cfg['batch']}"
             for name, r in results["models"].items() if r["naive_scaled"]]
    if notes:
        lines += [""] + notes + ["  (linear scaling; small batches use the CPU less well, so "
                                 "the scaled naive time and the speedup may be overestimates)"]
    lines += ["", "compile times (s): trace+lower / XLA compile"]
    for name, r in results["models"].items():
        parts = [f"{k} {v['lower_s']:.2f}/{v['compile_s']:.2f}" for k, v in r["compile"].items()]
        lines.append(f"  {name:<9} " + ", ".join(parts))
    lines += ["", "targets"]
    for name, r in results["models"].items():
        for what, tgt in r["targets"].items():
            label = "sample batch (s)" if what == "sample_batch_s" else "sample / log_prob"
            status = "OK" if tgt["holds"] else "MISSED"
            lines.append(f"  {name:<9} {label:<18} {tgt['value']:>8.3f}  target "
                         f"{tgt['target']:<6}  {status}")
    note = load_note(results["environment"])
    if note:
        lines.append("\n" + note)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and smaller naive batches (a smoke run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    parser.add_argument("--L", type=int, default=16, help="lattice size")
    parser.add_argument("--batch", type=int, default=1000, help="samples per batch")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats (default 7, --quick 3)")
    parser.add_argument("--naive-batch-made", type=int, default=None,
                        help="batch for the naive MADE sampler, scaled to --batch "
                             "(default 250, --quick 100)")
    parser.add_argument("--naive-batch-pixelcnn", type=int, default=None,
                        help="batch for the naive PixelCNN sampler, scaled to --batch "
                             "(default 50, --quick 20)")
    parser.add_argument("--only", choices=("made", "pixelcnn"), default=None,
                        help="benchmark one model only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", False)  # the benchmark is float32
    repeats = args.repeats or (3 if args.quick else 7)
    naive_repeats = 1 if args.quick else 3
    naive_batches = {
        "made": args.naive_batch_made or (100 if args.quick else 250),
        "pixelcnn": args.naive_batch_pixelcnn or (20 if args.quick else 50),
    }
    for name, b in naive_batches.items():
        if not 0 < b <= args.batch:
            parser.error(f"--naive-batch-{name} must be in 1..{args.batch}, got {b}")

    key_models, key_bench = jax.random.split(jax.random.key(args.seed))
    models = build_models(args.L, key=key_models)
    if args.only:
        models = {args.only: models[args.only]}
    results = {
        "config": {"L": args.L, "batch": args.batch, "dtype": "float32", "repeats": repeats,
                   "naive_repeats": naive_repeats, "naive_batch": naive_batches,
                   "quick": args.quick, "seed": args.seed,
                   "made": {"depth": 3, "width": 4},
                   "pixelcnn": {"depth": 3, "width": 64, "half_kernel": 1},
                   "train": {"objective": "ScoreFunctionFreeEnergy", "optimizer": "adam(1e-3)",
                             "system": f"Ising2D({args.L})", "beta": 0.44, "devices": 1}},
        "environment": environment(),
        "targets": {"sample_batch_s": TARGET_SAMPLE_S, "sample_over_log_prob": TARGET_RATIO},
        "models": {},
    }
    for i, (name, model) in enumerate(models.items()):
        results["models"][name] = bench_model(
            name, model, size=args.L, batch=args.batch, naive_batch_size=naive_batches[name],
            repeats=repeats, naive_repeats=naive_repeats, key=jax.random.fold_in(key_bench, i))
    write_results(results, args.out, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
