"""Timing helpers shared by the benchmark scripts: AOT compilation, timed train steps, and
the record of the machine a figure was measured on."""

import datetime
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
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "equinox": eqx.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "git_commit": commit,
    }
