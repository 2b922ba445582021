"""Run every benchmark script in ``benchmarks/`` and combine their JSON records into one file.

    benchmarks/run_all [--quick] [--only NAME ...] [--out FILE.json] [--results-dir DIR]
                       [--timeout SECONDS] [--list] [--dry-run]

Each benchmark runs as its own process (``python benchmarks/SCRIPT.py ... --out FILE``), one
after the other (they time themselves, so never two at once), and its record is read back
from ``FILE``. A benchmark that fails (non-zero exit, a time-out, no or unreadable JSON) is
recorded with its exit status and the tail of its output, and the others still run; the
driver then exits with status 1. Variants that a script itself reports as failed (an
``"error"`` entry inside its record) mark the benchmark ``"partial"``.

Two modes:

* default (full): the settings of the records published in ``benchmarks/results/`` (the
  figures quoted in ``docs/performance.md``). Each script writes its usual
  ``benchmarks/results/NAME.json``, and the combined record goes to
  ``benchmarks/results/all.json``. A full run takes hours on 2 CPU cores.
* ``--quick``: each script with its smallest settings (``--quick`` where it has one, small
  lattices, batches and repeats), to check that every script still runs: a few minutes.
  The per-script records go to a temporary directory (the published ones are left alone)
  and the combined record to ``benchmarks/results/all-quick.json``. Quick figures are not
  measurements worth quoting.

``--results-dir`` puts the per-script records somewhere else, ``--out`` the combined one.
``electron_gas_sweep`` tabulates the stored electron-gas runs
(``benchmarks/results/runs/electron-gas-n13-rs*-t015.json``) rather than training new ones;
``quantum_dot_thermo`` post-processes ``thermax run quantum-dot`` runs at several
temperatures and runs only when they are given with ``--quantum-dot-runs``.

The combined JSON::

    {"mode": "full" | "quick", "started_utc", "finished_utc", "environment": {...},
     "benchmarks": {NAME: {"status": "ok" | "partial" | "failed" | "skipped", "command",
                           "returncode", "wall_s", "result": <the script's JSON>,
                           "errors", "reason", "output_tail"}}}
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
STORED_RUNS = RESULTS / "runs"
ELECTRON_GAS_RUNS = ("electron-gas-n13-rs1-t015", "electron-gas-n13-rs5-t015",
                     "electron-gas-n13-rs10-t015")


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark: a script, its arguments in each mode, and where its JSON lands.

    ``out_flag`` is the option that names the JSON output (``None``: the script writes
    ``DIR/out_file`` under the directory given by ``out_dir_flag``).
    """

    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    summary: str
    out_flag: str | None = "--out"
    out_dir_flag: str | None = None
    out_file: str | None = None


BENCHMARKS = (
    Benchmark("bench_spins", "bench_spins.py", (),
              ("--quick", "--L", "8", "--batch", "100"),
              "autoregressive spins (MADE, PixelCNN): cached vs naive sampling, ln p, a step"),
    Benchmark("bench_neuralrg", "bench_neuralrg.py", (),
              ("--quick", "--L", "8", "--batch", "64"),
              "NeuralRG flow on the relaxed Ising model: s / epoch vs the original code"),
    Benchmark("bench_monge_ampere", "bench_monge_ampere.py",
              ("--variants", "analytic,hutchinson", "--repeats", "5"),
              ("--quick", "--L", "8", "--batch", "16", "--steps-ode", "10"),
              "Monge-Ampere flow on the relaxed Ising model: s / epoch vs the original code"),
    Benchmark("bench_cnf", "bench_cnf.py", ("--repeats", "3"),
              ("--quick", "--batch", "32", "--steps-ode", "8", "--repeats", "1"),
              "continuous flows on the Coulomb trap: divergence x adjoint, scaling with N"),
    Benchmark("bench_laplacian", "bench_laplacian.py",
              ("--n", "6,20", "--width", "16", "--repeats", "2",
               "--methods", "loop,forward,forward-sparse,hutchinson"),
              ("--n", "4", "--width", "8", "--batch", "32", "--chunk", "16",
               "--methods", "loop,forward,hutchinson", "--repeats", "1"),
              "Laplacian methods: local energies per second, quantum-dot flow wavefunction"),
    Benchmark("bench_quantum_step", "bench_quantum_step.py",
              ("--batch", "1024", "--repeats", "2", "--variants", "backflow/loop,backflow/forward"),
              ("--batch", "32", "--repeats", "1", "--variants", "backflow/loop"),
              "quantum-dot training step (N = 6, T = 0.5): s / step"),
    Benchmark("bench_electron_gas", "bench_electron_gas.py", (),
              ("--cases", "5:16:loop", "--repeats", "1"),
              "electron-gas training step: s / step vs N, batch, Laplacian"),
    Benchmark("bench_electron_gas_chunked", "bench_electron_gas.py",
              ("--cases", "13:256:forward:32,29:256:forward:32"),
              ("--cases", "5:16:forward:8", "--repeats", "1"),
              "electron-gas training step with --chunk-size 32"),
    Benchmark("phi4_reference", "phi4_reference.py", (),
              ("--quick", "--L", "4", "--kappa", "0.15"),
              "lattice phi^4 reference free energies (HMC + thermodynamic integration)"),
    Benchmark("electron_gas_sweep", "electron_gas_sweep.py", (), (),
              "electron gas N = 13 against r_s, tabulated from the stored runs",
              out_flag=None, out_dir_flag="--out", out_file="table.json"),
    Benchmark("quantum_dot_thermo", "quantum_dot_thermo.py", (), (),
              "quantum-dot thermodynamic consistency across temperatures (needs runs)"),
)
NAMES = tuple(b.name for b in BENCHMARKS)


def environment() -> dict:
    """The machine and software a record was made on (without importing JAX)."""
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "jax": version("jax"), "jaxlib": version("jaxlib"), "equinox": version("equinox"),
            "thermax": version("thermax"), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "git_commit": commit}


def errors_in(record, path: str = "") -> list[str]:
    """Where a script's record reports a failed variant (an ``"error"`` key), with the
    message: ``["variants/ferminet/loop: ValueError: ..."]``."""
    found = []
    if isinstance(record, dict):
        for key, value in record.items():
            where = f"{path}/{key}" if path else str(key)
            if key == "error" and isinstance(value, str):
                found.append(f"{path or '.'}: {value}")
            else:
                found.extend(errors_in(value, where))
    elif isinstance(record, list):
        for i, value in enumerate(record):
            found.extend(errors_in(value, f"{path}[{i}]"))
    return found


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def command_for(bench: Benchmark, *, quick: bool, out_dir: Path,
                quantum_dot_runs: list[Path] | None,
                scratch: Path) -> tuple[list[str] | None, Path | None, str | None]:
    """``(argv, json_path, skip_reason)`` for one benchmark."""
    argv = [sys.executable, str(HERE / bench.script)]
    argv += list(bench.quick if quick else bench.full)
    if bench.name == "electron_gas_sweep":
        # The script reads RUN_DIR/results.json; the stored runs are bare JSON files.
        run_dirs = []
        for stem in ELECTRON_GAS_RUNS:
            src = STORED_RUNS / f"{stem}.json"
            if not src.exists():
                return None, None, f"stored run {src.relative_to(ROOT)} is missing"
            run_dir = scratch / "electron_gas_runs" / stem
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, run_dir / "results.json")
            run_dirs.append(str(run_dir))
        table_dir = out_dir / "electron_gas_n13_t015"
        argv += ["--runs", *run_dirs, bench.out_dir_flag, str(table_dir)]
        return argv, table_dir / bench.out_file, None
    if bench.name == "quantum_dot_thermo":
        if not quantum_dot_runs:
            return None, None, ("post-processes quantum-dot runs at several temperatures; "
                                "pass them with --quantum-dot-runs RUN ...")
        argv += [str(p) for p in quantum_dot_runs]
    out = out_dir / f"{bench.name}.json"
    argv += [bench.out_flag, str(out)]
    return argv, out, None


def run_one(bench: Benchmark, argv: list[str], out: Path, *, timeout: float | None) -> dict:
    """Run one benchmark process; never raises for the benchmark's own failures."""
    display = " ".join([Path(argv[0]).name, *[os.path.relpath(a, ROOT) if a.startswith(
        str(ROOT)) else a for a in argv[1:]]])
    entry = {"summary": bench.summary, "command": display, "returncode": None,
             "wall_s": None, "status": "failed", "result": None, "errors": [],
             "reason": None, "output_tail": ""}
    if out.exists():
        out.unlink()          # a stale record must not pass for this run's
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    print(f"\n== {bench.name}: {display}", flush=True)
    t0 = time.perf_counter()
    output = []
    try:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    except OSError as err:
        entry["reason"] = f"could not start: {err}"
        return entry
    assert proc.stdout is not None

    def pump():                               # stream the output, keep it for the record
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            output.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the benchmark's own process group only
        proc.wait()
        entry["reason"] = f"timed out after {timeout:g} s"
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    reader.join(timeout=10)
    entry["wall_s"] = round(time.perf_counter() - t0, 2)
    entry["returncode"] = proc.returncode
    entry["output_tail"] = _tail("".join(output))
    if entry["reason"] is None and proc.returncode != 0:
        entry["reason"] = f"exit status {proc.returncode}"
    if out.exists():
        try:
            entry["result"] = json.loads(out.read_text())
        except (OSError, json.JSONDecodeError) as err:
            entry["reason"] = entry["reason"] or f"unreadable JSON {out}: {err}"
    elif entry["reason"] is None:
        entry["reason"] = f"wrote no JSON at {out}"
    if entry["reason"] is None:
        entry["errors"] = errors_in(entry["result"])
        entry["status"] = "partial" if entry["errors"] else "ok"
    return entry


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, write the combined JSON; 0 if every one succeeded."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smallest settings, to check every script runs (minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=NAMES,
                        help=f"run only these benchmarks (of: {', '.join(NAMES)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="combined JSON (default benchmarks/results/all.json, "
                        "--quick: benchmarks/results/all-quick.json)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where each script writes its JSON (default: "
                        "benchmarks/results, --quick: a temporary directory)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds one benchmark may run before it is stopped")
    parser.add_argument("--quantum-dot-runs", type=Path, nargs="+", default=None,
                        metavar="RUN", help="quantum-dot runs for quantum_dot_thermo")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands without running them")
    args = parser.parse_args(argv)

    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:<28}{b.summary}")
        return 0
    selected = [b for b in BENCHMARKS if args.only is None or b.name in args.only]
    mode = "quick" if args.quick else "full"
    out = args.out or RESULTS / ("all-quick.json" if args.quick else "all.json")

    with tempfile.TemporaryDirectory(prefix="thermax-bench-") as tmp:
        scratch = Path(tmp)
        results_dir = args.results_dir or (scratch / "results" if args.quick else RESULTS)
        record = {"mode": mode,
                  "started_utc": datetime.datetime.now(datetime.UTC).isoformat(
                      timespec="seconds"),
                  "finished_utc": None, "environment": environment(),
                  "results_dir": (None if args.quick and args.results_dir is None
                                  else os.path.relpath(results_dir, ROOT)),
                  "benchmarks": {}}
        for bench in selected:
            cmd, json_path, skip = command_for(bench, quick=args.quick, out_dir=results_dir,
                                               quantum_dot_runs=args.quantum_dot_runs,
                                               scratch=scratch)
            if skip is not None:
                print(f"\n== {bench.name}: skipped ({skip})", flush=True)
                record["benchmarks"][bench.name] = {"summary": bench.summary,
                                                    "status": "skipped", "reason": skip}
                continue
            if args.dry_run:
                print(" ".join(cmd))
                continue
            record["benchmarks"][bench.name] = run_one(bench, cmd, json_path,
                                                       timeout=args.timeout)
        if args.dry_run:
            return 0
        record["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")

    print(f"\n{'benchmark':<28}{'status':<9}{'wall s':>9}  note")
    failed = False
    for name, entry in record["benchmarks"].items():
        note = entry.get("reason") or "; ".join(entry.get("errors") or [])[:100]
        wall = entry.get("wall_s")
        print(f"{name:<28}{entry['status']:<9}{'' if wall is None else f'{wall:.0f}':>9}  "
              f"{note or ''}")
        failed |= entry["status"] == "failed"
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
