"""Benchmark of the Laplacian methods: local-energy evaluations per second for a quantum dot
with the real flow wavefunction.

    python benchmarks/bench_laplacian.py [--flow backflow|ferminet] [--batch 1024]
        [--n 6,20] [--width 16,32] [--methods loop,forward,...] [--chunk 32] [--out FILE.json]

The wavefunction is the neural canonical transformation of thermax,
``FlowSlater(OscillatorBasis2D(1, n_orbitals=M), flow, N/2, N/2)`` with ``flow`` either
``backflow_flow(N, 2, layers=2, width=W, depth=2)`` (``--flow backflow``, the default of
``thermax run quantum-dot``: closed-form layer Jacobians) or ``ferminet_flow(N, 2, layers=2,
width=W, depth=2)`` (``--flow ferminet``: ``jacfwd`` layer Jacobians) (unpolarised,
``N/2`` electrons of each spin in the lowest orbitals;
``M`` = the closed shells that hold them plus the next shell), with every layer's gain set to
0.5 so the flow is not the identity (at initialisation it is; the cost is the same). Its
``ln|Psi|`` includes the flow's exact log-Jacobian (each layer's Jacobian + ``slogdet``),
so every exact Laplacian differentiates third derivatives of the layers.

For each ``(N, W)`` a batch of local energies ``E_loc = -1/2 (lap ln|Psi| + |grad ln|Psi||^2)
+ V`` of ``QuantumDot(N/2, N/2, omega=1)`` is computed by ``local_energy_batch`` with each
method:

* ``loop``: exact, ``LoopLaplacian()`` (``fori_loop`` over the ``d`` coordinates);
* ``loop-vmapped``: exact, ``LoopLaplacian(vmapped=True)``;
* ``forward``: exact, ``ForwardLaplacian()`` (the default: folx, dense Jacobians, scans
  unrolled);
* ``forward-sparse``: exact, ``ForwardLaplacian(backend="folx", sparsity_threshold=0.6)``;
* ``forward-ffwd``: exact, ``ForwardLaplacian(backend="forward")`` (vmapped jvp-of-jvp);
* ``hutchinson``: stochastic, ``HutchinsonLaplacian(1)`` (one Gaussian probe).

The batch is evaluated in chunks of ``--chunk`` configurations (``lax.map`` over vmapped
chunks, the same for every method) so that the forward methods, which hold ``d`` Jacobian
columns of every intermediate, fit in memory at ``N = 20``. Each function is jitted and
compiled ahead of time (``lower`` then ``compile``, timed apart; XLA's temporary-buffer size
is recorded), run once as a warm-up, then timed ``--repeats`` times (median reported,
``block_until_ready``). The configurations are drawn from ``|Psi|^2`` by a short jitted
Metropolis burn-in (once per system, shared by all methods). The exact methods are checked
against ``loop``: the largest and the median ``|E - E_loop| / (1 + |E_loop|)`` over the batch
(float32 rounding of a determinant's Laplacian is amplified near nodes).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

# _timing.py sits next to this script (on sys.path when run as a script)
from _timing import compile_ahead, environment, load_average, load_note, write_results

from thermax.bijections import Chain, backflow_flow, ferminet_flow
from thermax.quantum import FlowSlater, OscillatorBasis2D
from thermax.quantum._hamiltonian import QuantumDot
from thermax.quantum._laplacian import (
    ForwardLaplacian,
    HutchinsonLaplacian,
    LoopLaplacian,
)
from thermax.quantum._metropolis import adapt_width, init_walkers, metropolis_step

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_laplacian.json"

METHODS = {
    "loop": LoopLaplacian(),
    "loop-vmapped": LoopLaplacian(vmapped=True),
    "forward": ForwardLaplacian(),
    "forward-sparse": ForwardLaplacian(backend="folx", sparsity_threshold=0.6),
    "forward-ffwd": ForwardLaplacian(backend="forward"),
    "hutchinson": HutchinsonLaplacian(1),
}
EXACT = ("loop", "loop-vmapped", "forward", "forward-sparse", "forward-ffwd")


def n_orbitals_for(n_per_spin: int) -> int:
    """The closed 2D oscillator shells (1, 3, 6, 10, 15, ... orbitals) holding
    ``n_per_spin`` electrons, plus the next shell."""
    shell, total = 0, 0
    while total < n_per_spin:
        shell += 1
        total += shell
    return total + shell + 1


def make_flow(kind: str, n: int, width: int, *, key, dtype):
    """The flow of the module docs, every layer's gain set to 0.5."""
    half = lambda g: jnp.full_like(g, 0.5)  # noqa: E731
    if kind == "ferminet":
        flow = ferminet_flow(n, 2, layers=2, width=width, depth=2, key=key, dtype=dtype)
        return eqx.tree_at(lambda f: f.stacked.gain, flow, replace_fn=half)
    flow = backflow_flow(n, 2, layers=2, width=width, depth=2, key=key, dtype=dtype)
    return Chain([eqx.tree_at(lambda b: b.gain, b, replace_fn=half) for b in flow.bijections])


def make_log_psi(n: int, width: int, *, flow: str = "backflow", key, dtype):
    """``ln|Psi|`` of one configuration ``(n, 2)``: the ground-state occupation of the flow
    wavefunction (see the module docs)."""
    n_up = n // 2
    flow = make_flow(flow, n, width, key=key, dtype=dtype)
    basis = OscillatorBasis2D(1.0, n_orbitals=n_orbitals_for(max(n_up, n - n_up)), dtype=dtype)
    psi = FlowSlater(basis, flow, n_up, n - n_up)
    k_up, k_down = jnp.arange(n_up), jnp.arange(n - n_up)
    return (lambda x: psi.log_abs(x, k_up, k_down)), basis.n_orbitals


def thermalised_walkers(log_psi, n: int, *, batch: int, dtype, seed: int, rounds: int = 10,
                        sweeps: int = 10):
    """Configurations drawn from ``|Psi|^2`` by Metropolis walkers (one jitted burn-in of
    ``rounds x sweeps`` all-electron sweeps with width adaptation), so that the local
    energies are those of typical configurations rather than of near-nodal ones."""
    log_psi_batch = jax.vmap(log_psi)
    xs0 = 1.5 * jax.random.normal(jax.random.key(seed + 1), (batch, n, 2), dtype)
    state = init_walkers(log_psi_batch, xs0, 0.3)

    @jax.jit
    def burn_in(state, key):
        def body(state, k):
            state = metropolis_step(log_psi_batch, state, key=k, n_sweeps=sweeps)
            return adapt_width(state), None
        return jax.lax.scan(body, state, jax.random.split(key, rounds))[0]

    return burn_in(state, jax.random.key(seed + 3)).positions


def bench(system, log_psi, xs, method_name: str, *, chunk: int, repeats: int, seed: int,
          max_temp_bytes: float):
    method = METHODS[method_name]
    batch = xs.shape[0]

    def energies(xs, key):
        def block(args):
            x, k = args
            return system.local_energy(log_psi, x, laplacian=method, key=k)
        return jax.lax.map(block, (xs, jax.random.split(key, batch)), batch_size=chunk)

    key = jax.random.key(seed + 2)
    compiled, lower_s, compile_s = compile_ahead(jax.jit(energies), xs, key)
    try:
        temp_bytes = int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        temp_bytes = None
    if temp_bytes is not None and temp_bytes > max_temp_bytes:
        return {"skipped": f"needs {temp_bytes / 2**30:.1f} GiB of XLA temporaries (limit "
                f"{max_temp_bytes / 2**30:.1f}; lower --chunk or raise --max-temp-gb)",
                "lower_s": lower_s, "compile_s": compile_s, "xla_temp_bytes": temp_bytes}, None
    t0 = time.perf_counter()
    e = jax.block_until_ready(compiled(xs, key))
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(xs, key))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "all_s": times, "warmup_s": warmup,
            "lower_s": lower_s, "compile_s": compile_s, "evals_per_s": batch / median,
            "xla_temp_bytes": temp_bytes, "finite": bool(jnp.all(jnp.isfinite(e)))}, e


def format_table(results: dict) -> str:
    cfg = results["config"]
    lines = [f"thermax Laplacian benchmark: local energies of a 2D quantum dot, "
             f"FlowSlater({cfg['flow']}_flow(layers=2, depth=2)), {cfg['dtype']}, median of the "
             f"repeats, backend {results['environment']['backend']} (batch / chunk / repeats "
             "per system in brackets)", ""]
    head = (f"{'system':<22} {'method':<15} {'evals/s':>9} {'median s':>9} {'lower s':>8} "
            f"{'compile s':>9} {'vs loop':>8} {'max dE':>8} {'med dE':>8}")
    lines += [head, "-" * len(head)]
    for label, row in results["results"].items():
        lines.append(f"[{label}: batch {row['batch']} / chunk {row['chunk']} / "
                     f"{row['repeats']} repeats, {row['dtype']}]")
        loop = row["methods"]["loop"]["median_s"]
        for name, r in row["methods"].items():
            if "skipped" in r:
                lines.append(f"{label:<22} {name:<15} skipped: {r['skipped']}")
                continue
            dev, med = r.get("max_rel_diff_vs_loop"), r.get("median_rel_diff_vs_loop")
            lines.append(
                f"{label:<22} {name:<15} {r['evals_per_s']:>9.2f} {r['median_s']:>9.3f} "
                f"{r['lower_s']:>8.1f} {r['compile_s']:>9.1f} {loop / r['median_s']:>7.2f}x "
                f"{'' if dev is None else f'{dev:.1e}':>8} "
                f"{'' if med is None else f'{med:.1e}':>8}")
    lines.append("")
    for label, ratio in results["forward_over_loop_speedup"].items():
        lines.append(f"{label}: forward is {ratio:.2f}x faster than the exact loop")
    note = load_note(results["environment"])
    if note:
        lines.append(note)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flow", choices=("backflow", "ferminet"), default="backflow")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=32,
                        help="configurations per vmapped chunk (memory of the forward methods)")
    parser.add_argument("--n", type=str, default="6,20",
                        help="comma-separated electron counts (even: N/2 of each spin)")
    parser.add_argument("--width", type=str, default="16,32", help="comma-separated widths")
    parser.add_argument("--methods", type=str, default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-temp-gb", type=float, default=6.0,
                        help="skip a method whose compiled function needs more XLA temporary "
                        "memory than this (checked after compiling, before running)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output file")
    parser.add_argument("--merge", action="store_true",
                        help="keep the systems already in --out that this run does not "
                        "measure (each row records its own batch, chunk and repeats)")
    args = parser.parse_args(argv)

    jax.config.update("jax_enable_x64", args.dtype == "float64")
    dtype = jnp.dtype(args.dtype)
    ns = [int(s) for s in args.n.split(",") if s]
    widths = [int(s) for s in args.width.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    if any(n < 2 or n % 2 for n in ns):
        parser.error(f"--n must be even electron counts >= 2, got {ns}")
    if "loop" not in methods:
        methods.insert(0, "loop")                 # the reference for ratios and agreement
    chunk = min(args.chunk, args.batch)

    results = {
        "config": {"flow": args.flow, "batch": args.batch, "chunk": chunk, "n": ns,
                   "width": widths, "dim": 2,
                   "layers": 2, "depth": 2, "methods": methods, "repeats": args.repeats,
                   "dtype": args.dtype, "seed": args.seed, "omega": 1.0, "gain": 0.5,
                   "wavefunction": f"FlowSlater(OscillatorBasis2D, {args.flow}_flow), N/2 up "
                   "+ N/2 down in the lowest orbitals"},
        "environment": environment(),
        "results": {},
        "forward_over_loop_speedup": {},
    }
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        results["results"] = old.get("results", {})
        results["forward_over_loop_speedup"] = old.get("forward_over_loop_speedup", {})
        results["earlier_runs"] = old.get("earlier_runs", []) + [
            {"config": old.get("config"), "environment": old.get("environment"),
             "systems": list(old.get("results", {}))}]
    for n in ns:
        system = QuantumDot(n // 2, n - n // 2, omega=1.0)
        for width in widths:
            label = f"{args.flow} N={n} W={width}"
            log_psi, n_orb = make_log_psi(n, width, flow=args.flow, key=jax.random.key(args.seed),
                                          dtype=dtype)
            print(f"[{label}] thermalising walkers ...", file=sys.stderr, flush=True)
            xs = thermalised_walkers(log_psi, n, batch=args.batch, dtype=dtype, seed=args.seed)
            row, ref = {}, None
            for name in methods:
                print(f"[{label} {name}] compiling and timing ...", file=sys.stderr,
                      flush=True)
                r, e = bench(system, log_psi, xs, name, chunk=chunk, repeats=args.repeats,
                             seed=args.seed,
                             # the reference is never skipped (its loop needs little memory)
                             max_temp_bytes=(float("inf") if name == "loop"
                                             else args.max_temp_gb * 2**30))
                if e is None:
                    print(f"[{label} {name}] skipped: {r['skipped']}", file=sys.stderr,
                          flush=True)
                    row[name] = r
                    continue
                if name == "loop":
                    ref = e
                elif name in EXACT and ref is not None:
                    rel = jnp.abs(e - ref) / (1 + jnp.abs(ref))
                    r["max_rel_diff_vs_loop"] = float(jnp.max(rel))
                    r["median_rel_diff_vs_loop"] = float(jnp.median(rel))
                row[name] = r
                print(f"[{label} {name}] {r['evals_per_s']:.2f} evals/s, compile "
                      f"{r['lower_s'] + r['compile_s']:.1f} s", file=sys.stderr, flush=True)
            results["results"][label] = {
                "n": n, "width": width, "n_orbitals": n_orb, "batch": args.batch,
                "chunk": chunk, "repeats": args.repeats, "dtype": args.dtype,
                "load_average_after": load_average(),
                "methods": row}
            if "median_s" in row.get("forward", {}):
                results["forward_over_loop_speedup"][label] = (
                    row["loop"]["median_s"] / row["forward"]["median_s"])
            args.out.parent.mkdir(parents=True, exist_ok=True)     # partial results
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    write_results(results, args.out, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
