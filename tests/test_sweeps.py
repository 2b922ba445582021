"""Sweeps (thermax sweep / thermax.sweeps.sweep), thermax report, the TensorBoard logger and
the exact Ising thermodynamics behind the sweep plots."""

import csv
import json
import math

import numpy as np
import pytest

from thermax.cli import main
from thermax.exact import enumerate_thermodynamics, ising_thermodynamics, kaufman_log_z
from thermax.sweeps import SweepError, parse_spec, point_dir, sweep, sweepable
from thermax.systems import Ising2D

# a tiny Ising run: 3x3 lattice, one-layer MADE, a handful of steps
TINY = {"L": 3, "net": "made", "depth": 1, "width": 2, "steps": 4, "batch": 8,
        "eval_batch": 64, "log_every": 2, "checkpoint_every": 2, "beta_anneal": 0.0}
TINY_ARGV = ["--L", "3", "--net", "made", "--depth", "1", "--width", "2", "--steps", "4",
             "--batch", "8", "--eval-batch", "64", "--beta-anneal", "0"]


# --------------------------------------------------------------------- SPEC parsing


@pytest.mark.parametrize(("spec", "kind", "values"), [
    ("0.1:1.0:10", float, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
    ("0.2,0.3,0.5", float, [0.2, 0.3, 0.5]),
    ("0.5", float, [0.5]),
    ("1:2:1", float, [1.0]),
    ("4:8:3", int, [4, 6, 8]),
    ("4,6", int, [4, 6]),
])
def test_parse_spec(spec, kind, values):
    assert parse_spec(spec, kind) == values


@pytest.mark.parametrize(("spec", "kind", "message"), [
    ("0.1:1.0", float, "bad SPEC"), ("a,b", float, "bad SPEC"), ("0.1:1:x", float, "bad SPEC"),
    ("0.1:1:0", float, "num must be >= 1"), ("", float, "bad SPEC"),
    ("0.1,inf", float, "finite"), ("4:5:3", int, "non-integer"),
])
def test_parse_spec_errors(spec, kind, message):
    with pytest.raises(SweepError, match=message):
        parse_spec(spec, kind)


def test_sweepable_options():
    ising = sweepable("ising")
    assert {"beta", "L", "J", "h", "lr"} <= set(ising)
    assert "net" not in ising and "dtype" not in ising
    assert {"rs", "t_over_tf"} <= set(sweepable("electron-gas"))
    assert "twist" not in sweepable("electron-gas")   # a list, not a number
    assert "trap" in sweepable("coulomb-trap")


@pytest.mark.parametrize(("argv", "message"), [
    (["sweep", "ising", "--param", "colour", "0.1,0.2"], "cannot sweep 'colour'"),
    (["sweep", "ising", "--param", "net", "0.1,0.2"], "cannot sweep 'net'"),
    (["sweep", "ising", "--param", "beta", "0.1:0.2"], "bad SPEC"),
    (["sweep", "ising", "--param", "beta", "x,y"], "bad SPEC"),
    (["sweep", "ising", "--param", "beta", "0.1,-0.2"], "--beta -0.2 must be > 0"),
    (["sweep", "ising", "--param", "L", "3.5,4"], "non-integer"),
    (["sweep", "ising", "--param", "beta", "0.1,0.1"], "repeat"),
    (["sweep", "ising", "--param", "beta", "0.1,0.2", "--L", "four"], "invalid int value"),
    (["sweep", "ising", "--param", "beta", "0.1,0.2", "--J", "strong"], "invalid float value"),
    (["sweep", "ising", "--param", "beta", "0.1,0.2", "--beta", "0.3"], "swept parameter"),
    (["sweep", "ising", "--param", "beta", "0.1,0.2", "--colour", "red"], "unrecognized"),
    (["sweep", "potts", "--param", "beta", "0.1"], "unknown system 'potts'"),
    (["sweep", "ising", "--L", "3"], "missing --param"),
    (["sweep"], "missing SYSTEM"),
    (["sweep", "--resume", "nothing-here"], "no sweep there"),
    (["report", "nothing-here"], "neither a finished run"),
])
def test_sweep_bad_input_one_line_error_and_nothing_written(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    argv = [str(tmp_path / a) if a == "nothing-here" else a for a in argv]
    if argv[0] == "sweep" and "--resume" not in argv and len(argv) > 2:
        argv += ["--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermax: error: "), captured.err
    assert message in lines[0]
    assert not out.exists()


# --------------------------------------------------------------------- a tiny sweep


def _rows(out):
    with open(out / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A finished 2-point sweep of beta (3x3 Ising, a few steps) through the command line."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    assert main(["sweep", "ising", "--param", "beta", "0.3,0.5", *TINY_ARGV,
                 "--out", str(out)]) == 0
    return out


def test_tiny_sweep(tiny_sweep, capsys):
    out = tiny_sweep
    for name in ("sweep.json", "sweep.csv", "sweep.png"):
        assert (out / name).is_file(), name
    record = json.loads((out / "sweep.json").read_text())
    assert record["param"] == "beta" and record["values"] == [0.3, 0.5]
    rows = record["points"]
    assert [r["beta"] for r in rows] == [0.3, 0.5]
    assert [r["warm_start"] for r in rows] == [False, True]
    for r, beta in zip(rows, (0.3, 0.5), strict=True):
        res = json.loads((point_dir(out, "beta", beta) / "results.json").read_text())
        assert res["config"]["beta"] == beta and res["steps"] == 4
        assert r["free_energy"] == res["free_energy"]
        exact = ising_thermodynamics(3, beta)
        assert math.isclose(r["exact_free_energy"], exact["free_energy"], rel_tol=1e-9)
        assert math.isclose(r["exact_heat_capacity_per_site"],
                            exact["heat_capacity"] / 9, rel_tol=1e-9)
        assert r["heat_capacity"] >= 0 and r["heat_capacity_stderr"] >= 0
        assert math.isclose(r["free_energy_per_site"], r["free_energy"] / 9)
    assert [float(r["beta"]) for r in _rows(out)] == [0.3, 0.5]

    # the warm start carries the first point's trained weights into the second
    import jax

    from thermax.catalog import build_run
    from thermax.sweeps import trained_model, warm_start

    run3, run5 = (build_run("ising", {**TINY, "beta": b}) for b in (0.3, 0.5))
    first = trained_model(run3.model, point_dir(out, "beta", 0.3))
    from thermax.train import load_checkpoint  # the model part of the full checkpoint

    state, _ = load_checkpoint(point_dir(out, "beta", 0.3) / "checkpoint",
                               run3.trainer.init(run3.model, key=jax.random.key(0)))
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(state.model), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    warm, carried = warm_start(run5.model, run3.model, first)
    assert carried
    for a, b in zip(jax.tree.leaves(warm), jax.tree.leaves(first), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a model of another shape is not warm-started
    run4 = build_run("ising", {**TINY, "L": 4})
    assert warm_start(run4.model, run3.model, first) == (run4.model, False)


def test_sweep_resume_skips_finished_points(tiny_sweep, capsys):
    out = tiny_sweep
    rows = json.loads((out / "sweep.json").read_text())["points"]
    stamp = (point_dir(out, "beta", 0.3) / "results.json").stat().st_mtime_ns
    assert main(["sweep", "--resume", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("done already") == 2
    assert "ising sweep of beta: 2/2 points" in captured.out
    assert (point_dir(out, "beta", 0.3) / "results.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "sweep.json").read_text())["points"] == rows
    # a new sweep into the same directory is refused
    assert main(["sweep", "ising", "--param", "beta", "0.3", *TINY_ARGV,
                 "--out", str(out)]) == 2
    assert "already holds a sweep" in capsys.readouterr().err


def test_report(tiny_sweep, capsys):
    out = tiny_sweep
    (out / "sweep.png").unlink()
    assert main(["report", str(out)]) == 0
    assert "ising sweep of beta" in capsys.readouterr().out
    assert (out / "sweep.png").is_file()
    one = point_dir(out, "beta", 0.5)
    (one / "free_energy.png").unlink()
    assert main(["report", str(one)]) == 0
    assert "relative error" in capsys.readouterr().out
    assert (one / "free_energy.png").is_file()


def test_sweep_resumes_an_interrupted_point(tiny_sweep, tmp_path):
    """A point with a checkpoint but no results.json resumes from it, with the result of
    the uninterrupted sweep."""
    import dataclasses
    import shutil

    from thermax.catalog import build_run
    from thermax.sweeps import trained_model, warm_start
    from thermax.train import Interrupted, execute

    record = json.loads((tiny_sweep / "sweep.json").read_text())
    cut = tmp_path / "cut"
    shutil.copytree(point_dir(tiny_sweep, "beta", 0.3), point_dir(cut, "beta", 0.3))
    (cut / "sweep.json").write_text(json.dumps({**record, "points": record["points"][:1]}))
    # point 2 interrupted after a checkpoint at step 2 (from the warm-started model)
    run3, run5 = (build_run("ising", {**TINY, "beta": b}) for b in (0.3, 0.5))
    model, _ = warm_start(run5.model, run3.model,
                          trained_model(run3.model, point_dir(cut, "beta", 0.3)))
    with pytest.raises(Interrupted):
        execute(dataclasses.replace(run5, model=model), point_dir(cut, "beta", 0.5),
                stop_after_step=2, progress=False)
    lines = []
    resumed = sweep(None, None, None, None, cut, resume=True, progress=False, log=lines.append)
    assert any("beta=0.5: resuming" in line for line in lines), lines
    assert resumed[1]["free_energy"] == pytest.approx(record["points"][1]["free_energy"],
                                                      rel=1e-12)


def test_sweep_python_api_errors(tmp_path):
    with pytest.raises(SweepError, match="cannot sweep"):
        sweep("ising", "colour", [1.0], {}, tmp_path / "a")
    with pytest.raises(SweepError, match="unknown system"):
        sweep("potts", "beta", [1.0], {}, tmp_path / "b")
    with pytest.raises(SweepError, match="--L 1 must be >= 2"):
        sweep("ising", "L", [2, 1], {}, tmp_path / "c")
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------- exact Ising curves


@pytest.mark.parametrize("beta", [0.2, 0.44, 0.9])
def test_ising_thermodynamics_matches_enumeration(beta):
    exact = ising_thermodynamics(4, beta)
    enum = enumerate_thermodynamics(Ising2D(4), beta)
    for key in ("free_energy", "energy", "entropy", "heat_capacity"):
        assert math.isclose(exact[key], enum[key], rel_tol=1e-9), key
    assert math.isclose(exact["log_z"], kaufman_log_z(4, beta), rel_tol=1e-12)


def test_ising_thermodynamics_antiferromagnet_and_errors():
    ferro, anti = ising_thermodynamics(4, 0.3, 1.0), ising_thermodynamics(4, 0.3, -1.0)
    assert ferro == anti
    with pytest.raises(ValueError, match="even lattice"):
        ising_thermodynamics(3, 0.3, -1.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        ising_thermodynamics(4, 0.0)


# --------------------------------------------------------------------- TensorBoard


def _read_scalars(files) -> dict[str, list[tuple[int, float]]]:
    """The scalars in TensorBoard event files (TFRecords of ``Event`` protos)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_logger(tmp_path, capsys):
    pytest.importorskip("tensorboardX", reason="tensorboardX is not installed (optional)")
    out = tmp_path / "run"
    assert main(["run", "ising", *TINY_ARGV, "--logger", "tensorboard", "--log-every", "2",
                 "--out", str(out)]) == 0
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    scalars = _read_scalars(events)
    assert {"train/free_energy", "train/free_energy_stderr", "train/energy",
            "train/entropy", "train/beta"} <= set(scalars)
    assert [step for step, _ in scalars["train/free_energy"]] == [2, 4]
    with open(out / "history.csv", newline="") as f:   # always written, same numbers
        history = list(csv.DictReader(f))
    assert [float(r["free_energy"]) for r in history] == pytest.approx(
        [v for _, v in scalars["train/free_energy"]], rel=1e-6)
    assert (out / "history.csv").is_file()   # always written


def test_tensorboard_missing_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from thermax.train import _loggers

    monkeypatch.setattr(_loggers, "tensorboard_available", lambda: False)
    out = tmp_path / "run"
    assert main(["run", "ising", *TINY_ARGV, "--logger", "tensorboard", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--logger 'tensorboard' needs tensorboardX" in err
    assert not out.exists()


# --------------------------------------------------------------------- acceptance (slow)

#: the command of benchmarks/results/ising_sweep_L8 and docs/tutorials/sweeps.md
ISING_L8_SWEEP = ["sweep", "ising", "--param", "beta", "0.1:1.0:10", "--L", "8",
                  "--steps", "1500", "--beta-anneal", "0"]


@pytest.mark.slow
def test_ising_l8_beta_sweep_reproduces_kaufman(tmp_path):
    """thermax sweep ising --param beta 0.1:1.0:10 --L 8: the variational F is within 1e-3
    (relative) of Kaufman's exact finite-lattice F at every point, and above it (the
    variational bound) within 3 standard errors (about 20 minutes on 2 CPU cores).

    Runs the command in a fresh process with JAX's defaults (one CPU device, float32, full
    XLA optimisation): the test session's settings (four forced devices, optimisation level
    0, x64) make the PixelCNN step ~50x slower.
    """
    import os
    import subprocess
    import sys

    out = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    proc = subprocess.run([sys.executable, "-m", "thermax.cli", *ISING_L8_SWEEP,
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=3 * 3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "sweep.json").read_text())["points"]
    assert [r["beta"] for r in rows] == pytest.approx([0.1 * k for k in range(1, 11)])
    for r in rows:
        exact = ising_thermodynamics(8, r["beta"])["free_energy"]
        assert r["exact_free_energy"] == pytest.approx(exact, rel=1e-9)
        assert r["free_energy"] >= exact - 3 * r["free_energy_stderr"], r
        assert abs(r["relative_error"]) < 1e-3, r
    assert all(r["warm_start"] for r in rows[1:])
