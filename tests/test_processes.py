"""Runs across processes: killed and resumed, and split over two JAX processes.

Both start ``thermax run`` in subprocesses (one CPU device each, a persistent compilation
cache shared by the restarts so each costs seconds, not a compilation).

- A run killed with SIGKILL at random moments (while it trains and writes a checkpoint
  every step) and resumed each time ends bit-identical to an uninterrupted run.
- A run over two processes on localhost (``--coordinator``, Gloo collectives on CPU) gives
  the free energy of a one-process run with the same global batch and seed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

OPTIONS = ["--L", "3", "--net", "made", "--depth", "1", "--width", "4", "--steps", "150",
           "--batch", "16", "--eval-batch", "256", "--dtype", "float64", "--beta", "0.4",
           "--lr", "0.01", "--log-every", "1", "--checkpoint-every", "1"]


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env.update({"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0",
                "JAX_COMPILATION_CACHE_DIR": str(cache),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
                "TQDM_DISABLE": "1"})
    return env


def _thermax(args, env, log: Path) -> subprocess.Popen:
    """Start ``thermax run ising ARGS`` with its output to the file ``log`` (a pipe that
    nobody drains while the test waits could fill up and block the run)."""
    with open(log, "a") as f:
        proc = subprocess.Popen([sys.executable, "-m", "thermax.cli", "run", "ising", *args],
                                env=env, stdout=f, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    proc.wait(timeout=timeout)
    out = proc.log.read_text()
    assert proc.returncode == 0, out[-3000:]
    return out


def _results(out_dir: Path) -> dict:
    r = json.loads((out_dir / "results.json").read_text())
    return {k: v for k, v in r.items() if k not in ("wall_time_s",)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax-cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("reference") / "run"
    _finish(_thermax([*OPTIONS, "--out", str(out)], _env(cache), out.parent / "log"))
    return out


def _checkpoint_step(out: Path) -> int:
    try:
        return json.loads((out / "checkpoint" / "latest.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def test_sigkill_at_random_moments_then_resume_is_bit_identical(reference, cache, tmp_path):
    rng = np.random.default_rng(2026)
    out = tmp_path / "killed"
    env = _env(cache)
    kills = []
    for target in sorted(rng.choice(np.arange(10, 140), size=3, replace=False)):
        resume = ["--resume", str(out)] if (out / "config.json").exists() else \
            [*OPTIONS, "--out", str(out)]
        proc = _thermax(resume, env, tmp_path / "log")
        deadline = time.monotonic() + 120
        while _checkpoint_step(out) < target and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.02))  # anywhere in a step or a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(_checkpoint_step(out))
    assert not (out / "results.json").exists(), "a kill came after the end; raise steps"
    assert kills == sorted(kills) and kills[0] >= 10
    _finish(_thermax(["--resume", str(out)], env, tmp_path / "log"))
    assert _results(out) == _results(reference)
    ref_hist = (reference / "history.csv").read_text().splitlines()
    hist = (out / "history.csv").read_text().splitlines()
    assert [r.rsplit(",", 1)[0] for r in hist] == [r.rsplit(",", 1)[0] for r in ref_hist]
    ckpt = out / "checkpoint"
    assert not list(ckpt.glob("*.tmp"))
    assert (ckpt / "state-000000150.eqx").read_bytes() == \
        (reference / "checkpoint" / "state-000000150.eqx").read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(reference, tmp_path):
    out = tmp_path / "two"
    port = _free_port()
    env = _env(tmp_path / "cache2")  # a separate cache: two processes compile at once
    procs = [_thermax([*OPTIONS, "--out", str(out), "--coordinator", f"localhost:{port}",
                       "--num-processes", "2", "--process-id", str(i)], env,
                      tmp_path / f"log{i}")
             for i in range(2)]
    logs = [_finish(p) for p in procs]
    assert "2 device(s), 2 processes" in logs[0]
    two, one = _results(out), _results(reference)
    assert two["devices"] == 2 and two["processes"] == 2 and one["processes"] == 1
    for key in ("free_energy", "free_energy_stderr", "energy", "entropy",
                "log_z_importance"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-9, err_msg=key)
    assert two["steps"] == one["steps"] == 150


@pytest.mark.slow
def test_two_processes_quantum_dot_match_one_process_with_two_devices(tmp_path):
    """Quantum walkers sharded over two processes (gathered for checkpoints and plots):
    the same figures as one process with two devices."""
    options = ["--n-up", "1", "--n-down", "1", "--temperature", "0.5", "--flow", "backflow",
               "--flow-layers", "1", "--flow-width", "4", "--occupation-net", "made",
               "--occupation-width", "4", "--pretrain-steps", "10", "--emax", "3",
               "--steps", "6", "--batch", "8", "--eval-batch", "16", "--sweeps", "2",
               "--burn-in", "4", "--checkpoint-every", "3"]

    def start(args, env, log):
        with open(log, "a") as f:
            proc = subprocess.Popen([sys.executable, "-m", "thermax.cli", "run", "quantum-dot",
                                     *args], env=env, stdout=f, stderr=subprocess.STDOUT)
        proc.log = log
        return proc

    env = _env(tmp_path / "cache")
    port = _free_port()
    procs = [start([*options, "--out", str(tmp_path / "two"), "--coordinator",
                    f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
                   env, tmp_path / f"log{i}") for i in range(2)]
    for p in procs:
        _finish(p)
    env_one = {**env, "XLA_FLAGS": env["XLA_FLAGS"]
               + " --xla_force_host_platform_device_count=2"}
    _finish(start([*options, "--out", str(tmp_path / "one")], env_one, tmp_path / "log"))
    two, one = _results(tmp_path / "two"), _results(tmp_path / "one")
    assert two["processes"] == 2 and one["processes"] == 1 and two["devices"] == 2
    for key in ("free_energy", "energy", "entropy", "acceptance"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-9, err_msg=key)


@pytest.mark.parametrize("argv, message", [
    (["--coordinator", "nohost"], "--coordinator must be HOST:PORT, got 'nohost'"),
    (["--coordinator", "localhost:1"], "--coordinator needs --num-processes P and "
                                       "--process-id I"),
    (["--num-processes", "2"], "--num-processes and --process-id need --coordinator"),
    (["--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be in [0, 2)"),
])
def test_bad_process_options_are_one_clear_error(tmp_path, capsys, argv, message):
    from thermax.cli import main

    assert main(["run", "ising", *argv, "--out", str(tmp_path / "x")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermax: error: ") and message in lines[0]
    assert not (tmp_path / "x").exists()
