"""Timing helpers shared by the benchmark scripts: AOT compilation, timed train steps, and
the record of the machine a figure was measured on."""

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

from thermax.train import Trainer

HERE = Path(__file__).resolve().parent


def now() -> float:
    return time.perf_counter()


def compile_ahead(jitted, *args):
    """``(compiled, lower_s, compile_s)``: trace + lower, then XLA compile, timed apart."""
    t0 = now()
    lowered = jitted.lower(*args)
    t1 = now()
    compiled = lowered.compile()
    t2 = now()
    return compiled, t1 - t0, t2 - t1


def time_train_steps(trainer: Trainer, state, repeats: int) -> tuple[dict, dict]:
    """AOT-compile ``trainer.step``; warm up once; time ``repeats`` steps, carrying the
    (donated) state along. Returns ``(timing, compile_times)``; raises on a non-finite F."""
    compiled, lower_s, compile_s = compile_ahead(Trainer.step, trainer, state)
    t0 = now()
    state, stats = compiled(trainer, state)
    jax.block_until_ready((state, stats))
    warmup = now() - t0
    times, cpu = [], []
    for _ in range(repeats):
        t0w, t0c = now(), time.process_time()
        state, stats = compiled(trainer, state)
        jax.block_until_ready((state, stats))
        times.append(now() - t0w)
        cpu.append(time.process_time() - t0c)
    if not bool(jnp.isfinite(stats.free_energy)):
        raise RuntimeError(f"training step produced a non-finite F: {stats.free_energy}")
    timing = {"median_s": statistics.median(times), "min_s": min(times), "warmup_s": warmup,
              "all_s": times, "cpu_median_s": statistics.median(cpu),
              "free_energy_per_site_last": float(stats.free_energy) / trainer.system.n}
    return timing, {"lower_s": lower_s, "compile_s": compile_s}


def environment() -> dict:
    """Where and when the figures were measured (machine, load, versions, commit)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                                text=True, check=False).stdout.strip() or None
    except OSError:
        commit = None
    return {
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "jax": jax.__version__,
        "equinox": eqx.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "git_commit": commit,
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the platform has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def load_note(env: dict) -> str | None:
    """One line on the machine's load during the run (from :func:`environment`, with
    ``load_average_end`` where :func:`write_results` set it): timings are noisy when busy."""
    load, end = env.get("load_average"), env.get("load_average_end")
    if not load:
        return None
    return (f"load average at start {load[0]:.2f}" + (f", at end {end[0]:.2f}" if end else "")
            + f" (cpu count {env['cpu_count']}); timings on a busy machine are noisy")


def write_results(results: dict, out: Path, format_table) -> None:
    """Record the end-of-run load, print ``format_table(results)`` and write the JSON."""
    results["environment"]["load_average_end"] = load_average()
    print(format_table(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten {out}")


def time_quantum_step(system: str, cfg: dict, *, repeats: int) -> dict:
    """Seconds per ``QuantumTrainer.step`` of ``thermax run SYSTEM`` with options ``cfg``
    (built through :func:`thermax.catalog.build_run` on one device, so the command line
    and the benchmark time the same thing): AOT-compiled (timed apart), one warm-up step,
    then ``repeats`` timed steps (median)."""
    from thermax.catalog import build_run
    from thermax.quantum import QuantumTrainer

    run = build_run(system, cfg, devices=jax.devices()[:1])
    state = run.trainer.init(run.model, key=jax.random.key(0))
    compiled, lower_s, compile_s = compile_ahead(QuantumTrainer.step, run.trainer, state)
    state, stats = compiled(run.trainer, state)
    jax.block_until_ready((state, stats))
    times = []
    for _ in range(repeats):
        t0 = now()
        state, stats = compiled(run.trainer, state)
        jax.block_until_ready((state, stats))
        times.append(now() - t0)
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(run.model, eqx.is_inexact_array)))
    return {"median_s": statistics.median(times), "all_s": times, "lower_s": lower_s,
            "compile_s": compile_s, "n_params": int(n_params),
            "free_energy_last": float(stats.free_energy), "options": cfg}
