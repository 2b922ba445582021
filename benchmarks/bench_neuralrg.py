"""Benchmark of the NeuralRG flow: seconds per training epoch against the original code.

    python benchmarks/bench_neuralrg.py [--quick] [--out FILE.json]

One *epoch* of the original PyTorch NeuralRG (li012589/NeuralRG, ``train.learn``) is one
optimisation step: sample a batch from the flow, compute the loss
``mean(ln p(x) + beta E(x))`` (the variational free energy, up to ``1/beta``) and its
gradient through the samples (pathwise), and take one Adam step (lr 1e-3, weight decay
1e-3). Here the same step is ``Trainer.step`` with :class:`PathwiseFreeEnergy` and
``optax.adam`` on :class:`RelaxedIsing` (the Hubbard-Stratonovich relaxed 2D Ising model
that NeuralRG trains on, ``x^T K^{-1} x / 2 - sum ln cosh x``) at the critical
temperature, on one CPU device, float32.

Default configuration: L = 16, batch 512, NeuralRG with every scale (4), one decimator and
one disentangler per scale, kernels of 10 affine couplings with 3 x 10 conditioners.
Variants timed (``--variants``):

* ``plain``: the flow as it is (the original without ``-symmetry``);
* ``z2``: ``Z2Symmetrized(flow)`` (the original's ``-symmetry``): ``ln p`` of every sample
  needs two more inverse passes;
* ``library``: the same hierarchy with kernels built from the generic bijection library,
  a ``Scan`` of ``Chain``s of masked ``AffineCoupling``s with ``MLPConditioner``s, for
  comparison with the dedicated ``PlaquetteRealNVP`` kernel.

Every step is compiled ahead of time (``lower`` then ``compile``, timed apart), run once as
a warm-up, then timed ``--repeats`` times with ``jax.block_until_ready``; the median is
reported. Target: an epoch at least 3x faster than the original's 3.4 s per epoch on two
CPU cores, i.e. <= 1.13 s.
"""

import argparse
import math
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

# _timing.py sits next to this script (on sys.path when run as a script)
from _timing import environment, load_note, time_train_steps, write_results

from thermax.bijections import AffineCoupling, Chain, NeuralRG, Scan, channel_mask
from thermax.distributions import StandardNormal, Transformed, Z2Symmetrized
from thermax.nn import MLPConditioner
from thermax.objectives import PathwiseFreeEnergy
from thermax.systems import RelaxedIsing
from thermax.train import Trainer, make_mesh

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_neuralrg.json"

#: The original PyTorch code: seconds per epoch on 2 CPU cores (L = 16, batch 512,
#: 10 couplings per block, 3 x 10 conditioners), and the required speed-up.
ORIGINAL_S_PER_EPOCH = 3.4
REQUIRED_SPEEDUP = 3.0
BETA_C = 0.5 * math.log(1.0 + math.sqrt(2.0))
VARIANTS = ("plain", "z2", "library")


def library_kernel(n_couplings: int, hidden: tuple[int, ...], dtype):
    """``key -> kernel``: the generic-library plaquette kernel, ``n_couplings / 2`` pairs of
    masked couplings (first half, then second half of the 4 variables) in one ``Scan``."""
    def pair(key):
        k0, k1 = jax.random.split(key)
        return Chain([AffineCoupling(channel_mask((4,), parity=p),
                                     MLPConditioner((4,), hidden, key=k, dtype=dtype))
                      for p, k in ((0, k0), (1, k1))])

    def make(key):
        return Scan.build(pair, max(n_couplings // 2, 1), key=key)

    return make


def build_model(variant: str, *, size: int, n_couplings: int, hidden: tuple[int, ...], key):
    dtype = jnp.float32
    kernel = library_kernel(n_couplings, hidden, dtype) if variant == "library" else None
    flow = Transformed(StandardNormal((size, size), dtype=dtype),
                       NeuralRG(size, n_couplings=n_couplings, hidden=hidden, kernel=kernel,
                                key=key, dtype=dtype))
    return Z2Symmetrized(flow) if variant == "z2" else flow


def bench_variant(variant: str, *, size: int, batch: int, n_couplings: int,
                  hidden: tuple[int, ...], repeats: int, key) -> dict:
    k_model, k_train = jax.random.split(key)
    model = build_model(variant, size=size, n_couplings=n_couplings, hidden=hidden,
                        key=k_model)
    system = RelaxedIsing(size, BETA_C)
    optimizer = optax.chain(optax.add_decayed_weights(1e-3), optax.adam(1e-3))
    trainer = Trainer(PathwiseFreeEnergy(), optimizer, system, beta=BETA_C, batch=batch,
                      mesh=make_mesh(jax.devices()[:1]))
    state = trainer.init(model, key=k_train)
    print(f"[{variant}] compiling and timing {repeats} epochs ...", file=sys.stderr,
          flush=True)
    timing, compile_s = time_train_steps(trainer, state, repeats)
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    s = timing["median_s"]
    return {
        "n_params": int(n_params),
        "compile": compile_s,
        "timing": timing,
        "epochs_per_s": 1.0 / s,
        "speedup_vs_original": ORIGINAL_S_PER_EPOCH / s,
        "target": {"max_s_per_epoch": ORIGINAL_S_PER_EPOCH / REQUIRED_SPEEDUP, "value": s,
                   "holds": s <= ORIGINAL_S_PER_EPOCH / REQUIRED_SPEEDUP},
    }


def format_table(results: dict) -> str:
    cfg = results["config"]
    lines = [f"thermax NeuralRG benchmark: L={cfg['L']}, batch={cfg['batch']}, "
             f"{cfg['n_couplings']} couplings x conditioner {cfg['hidden']}, float32, "
             f"{cfg['repeats']} epochs (median), backend {results['environment']['backend']}",
             ""]
    head = (f"{'variant':<8} {'params':>7} {'s/epoch':>8} {'min s':>7} {'cpu s':>7} "
            f"{'vs 3.4 s':>9} {'compile s':>9}  target <= "
            f"{ORIGINAL_S_PER_EPOCH / REQUIRED_SPEEDUP:.2f} s")
    lines += [head, "-" * len(head)]
    for name, r in results["variants"].items():
        t = r["timing"]
        status = "OK" if r["target"]["holds"] else "MISSED"
        lines.append(f"{name:<8} {r['n_params']:>7} {t['median_s']:>8.3f} {t['min_s']:>7.3f} "
                     f"{t['cpu_median_s']:>7.3f} {r['speedup_vs_original']:>8.1f}x "
                     f"{r['compile']['compile_s']:>9.1f}  {status}")
    note = load_note(results["environment"])
    if note:
        lines.append("\n" + note)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the plain variant only, 3 repeats (a smoke run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    parser.add_argument("--L", type=int, default=16, help="lattice size (a power of two)")
    parser.add_argument("--batch", type=int, default=512, help="samples per epoch")
    parser.add_argument("--n-couplings", type=int, default=10,
                        help="affine couplings per plaquette kernel")
    parser.add_argument("--hidden", type=str, default="10,10,10",
                        help="conditioner hidden widths, comma separated")
    parser.add_argument("--variants", type=str, default=None,
                        help=f"comma-separated subset of {','.join(VARIANTS)} "
                             "(default: all; --quick: plain)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed epochs per variant (default 7, --quick 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", False)  # the benchmark is float32
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    variants = (args.variants.split(",") if args.variants
                else ["plain"] if args.quick else list(VARIANTS))
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    repeats = args.repeats or (3 if args.quick else 7)

    results = {
        "config": {"L": args.L, "batch": args.batch, "n_couplings": args.n_couplings,
                   "hidden": list(hidden), "depth": int(math.log2(args.L)),
                   "dtype": "float32", "repeats": repeats, "quick": args.quick,
                   "seed": args.seed, "objective": "PathwiseFreeEnergy",
                   "optimizer": "add_decayed_weights(1e-3) + adam(1e-3)",
                   "system": f"RelaxedIsing({args.L}, beta_c)", "beta": BETA_C, "devices": 1},
        "original": {"s_per_epoch": ORIGINAL_S_PER_EPOCH, "cpu_cores": 2,
                     "code": "li012589/NeuralRG (PyTorch)",
                     "required_speedup": REQUIRED_SPEEDUP},
        "environment": environment(),
        "variants": {},
    }
    key = jax.random.key(args.seed)
    for i, v in enumerate(variants):
        results["variants"][v] = bench_variant(
            v, size=args.L, batch=args.batch, n_couplings=args.n_couplings, hidden=hidden,
            repeats=repeats, key=jax.random.fold_in(key, i))
    write_results(results, args.out, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
