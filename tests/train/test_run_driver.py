"""Training end to end (build_run + execute): variational bound, sharding, resume, records.

Module fixtures train a 3x3 Ising model once per configuration and share the results:
``reference`` (1 device, uninterrupted), ``sharded`` (4 devices) and ``resumed`` (1
device, interrupted twice and resumed each time with a freshly built run).
"""

import csv
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.catalog import build_run
from thermax.systems import AbstractSystem
from thermax.train import (
    Interrupted,
    NonFiniteError,
    Run,
    execute,
    load_checkpoint,
    read_checkpoint_meta,
)

OPTIONS = {
    "L": 3, "beta": 0.4, "net": "made", "depth": 2, "width": 4, "z2": 1, "dtype": "float64",
    "steps": 60, "batch": 64, "eval_batch": 4096, "lr": 0.02, "beta_anneal": 0.9,
    "log_every": 10, "checkpoint_every": 20, "seed": 3,
}
ONE_DEVICE = jax.devices()[:1]


def _history(path) -> list[dict]:
    with open(path / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _final_params(out_dir, devices):
    """The model parameters of the newest checkpoint in ``out_dir``, as numpy arrays."""
    fresh = build_run("ising", OPTIONS, devices=devices)
    like = fresh.trainer.init(fresh.model, key=jax.random.key(0))
    state, meta = load_checkpoint(out_dir / "checkpoint", like)
    leaves = jax.tree.leaves(eqx.filter(state.model, eqx.is_inexact_array))
    return [np.asarray(x) for x in leaves], meta


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    results = execute(build_run("ising", OPTIONS, devices=ONE_DEVICE), out, progress=False)
    return out, results


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    assert len(jax.devices()) == 4, "conftest forces 4 host devices"
    out = tmp_path_factory.mktemp("sharded")
    results = execute(build_run("ising", OPTIONS, devices=jax.devices()), out, progress=False)
    return out, results


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Stop right after the step-40 checkpoint; resume and stop at 50 (between checkpoints,
    so history.csv is ahead of the checkpoint); resume to the end."""
    out = tmp_path_factory.mktemp("resumed")
    with pytest.raises(Interrupted):
        execute(build_run("ising", OPTIONS, devices=ONE_DEVICE), out, stop_after_step=40,
                progress=False)
    first = {"meta": read_checkpoint_meta(out / "checkpoint"), "history": _history(out)}
    with pytest.raises(Interrupted):
        execute(build_run("ising", OPTIONS, devices=ONE_DEVICE), out, resume=True,
                stop_after_step=50, progress=False)
    second = {"meta": read_checkpoint_meta(out / "checkpoint"), "history": _history(out)}
    results = execute(build_run("ising", OPTIONS, devices=ONE_DEVICE), out, resume=True,
                      progress=False)
    return out, results, first, second


@pytest.fixture(scope="module")
def resharded(tmp_path_factory):
    """Saved on 4 devices (stopped after the step-40 checkpoint), resumed on 1."""
    out = tmp_path_factory.mktemp("resharded")
    with pytest.raises(Interrupted):
        execute(build_run("ising", OPTIONS, devices=jax.devices()), out, stop_after_step=40,
                progress=False)
    results = execute(build_run("ising", OPTIONS, devices=ONE_DEVICE), out, resume=True,
                      progress=False)
    return out, results


def test_checkpoint_from_four_devices_resumes_on_one(reference, resharded):
    """The checkpoint holds whole arrays, so it resumes on another device count; the run
    ends where the uninterrupted one-device run does (up to the order of sums)."""
    (out_1, r_1), (out_r, r_r) = reference, resharded
    assert r_r["devices"] == 1 and r_r["steps"] == 60
    for key in ("free_energy", "energy", "entropy", "log_z_importance"):
        np.testing.assert_allclose(r_r[key], r_1[key], rtol=1e-6, err_msg=key)
    p_1, _ = _final_params(out_1, ONE_DEVICE)
    p_r, _ = _final_params(out_r, ONE_DEVICE)
    for a, b in zip(p_1, p_r, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)


def test_variational_bound_and_accuracy(reference):
    _, r = reference
    exact, f, err = r["exact_free_energy"], r["free_energy"], r["free_energy_stderr"]
    assert exact is not None and np.isfinite(exact)
    assert err > 0
    assert f >= exact - 4 * err, f"F = {f} +- {err} below the exact {exact}: a bug"
    # 60 steps on a 3x3 lattice reach a few 1e-3; 5e-2 leaves a wide margin
    assert abs(r["relative_error"]) < 5e-2
    # importance-weighted ln Z agrees with the exact ln Z within its error bar
    log_z_exact = -exact * r["beta"]
    assert abs(r["log_z_importance"] - log_z_exact) < 5 * r["log_z_importance_stderr"] + 1e-3
    assert 0.5 < r["ess_fraction"] <= 1.0


def test_history_rows_and_annealing(reference):
    out, r = reference
    history = _history(out)
    assert [row["step"] for row in history] == [10, 20, 30, 40, 50, 60]
    # the row of step s (s steps done) used beta_t = beta (1 - 0.9^(t+1)) with t = s - 1
    np.testing.assert_allclose([row["beta"] for row in history],
                               [0.4 * (1 - 0.9**s) for s in range(10, 61, 10)], rtol=1e-12)
    assert all(row["free_energy_stderr"] > 0 for row in history)
    assert r["beta"] == 0.4 and r["steps"] == 60 and r["devices"] == 1


def test_sharded_run_matches_single_device(reference, sharded):
    (out_1, r_1), (out_4, r_4) = reference, sharded
    assert r_4["devices"] == 4
    h_1, h_4 = _history(out_1), _history(out_4)
    assert [r["step"] for r in h_1] == [r["step"] for r in h_4]
    for key in ("free_energy", "free_energy_stderr", "energy", "entropy", "beta"):
        np.testing.assert_allclose([r[key] for r in h_4], [r[key] for r in h_1], rtol=1e-6,
                                   err_msg=key)
    for key in ("free_energy", "free_energy_stderr", "energy", "energy_stderr", "entropy",
                "entropy_stderr", "log_z_importance", "ess_fraction"):
        np.testing.assert_allclose(r_4[key], r_1[key], rtol=1e-6, err_msg=key)
    p_1, _ = _final_params(out_1, ONE_DEVICE)
    p_4, _ = _final_params(out_4, jax.devices())
    for a, b in zip(p_1, p_4, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)


def test_interrupted_run_checkpoints(resumed):
    _, _, first, second = resumed
    assert first["meta"]["step"] == 40
    assert [r["step"] for r in first["history"]] == [10, 20, 30, 40]
    # stopped at 50: history is ahead of the newest checkpoint (40)
    assert second["meta"]["step"] == 40
    assert [r["step"] for r in second["history"]] == [10, 20, 30, 40, 50]


def test_resumed_run_is_bitwise_identical(reference, resumed):
    (out_ref, r_ref), (out_res, r_res, _, _) = reference, resumed
    p_ref, meta_ref = _final_params(out_ref, ONE_DEVICE)
    p_res, meta_res = _final_params(out_res, ONE_DEVICE)
    assert meta_ref["step"] == meta_res["step"] == 60
    for a, b in zip(p_ref, p_res, strict=True):
        np.testing.assert_array_equal(a, b)
    for key in set(r_ref) - {"wall_time_s"}:
        assert r_res[key] == r_ref[key], key
    # history: no duplicated steps, and the rows equal the uninterrupted run's
    h_ref, h_res = _history(out_ref), _history(out_res)
    steps = [r["step"] for r in h_res]
    assert steps == sorted(set(steps)) == [10, 20, 30, 40, 50, 60]
    for a, b in zip(h_ref, h_res, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_time_s"} == \
            {k: v for k, v in b.items() if k != "wall_time_s"}


def test_run_records(reference):
    out, r = reference
    for name in ("results.json", "history.csv", "config.json", "free_energy.png",
                 "samples.png", "checkpoint/latest.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text()) == r
    saved = json.loads((out / "config.json").read_text())
    assert saved["system"] == "ising" and saved["config"] == r["config"]
    assert {k: r["config"][k] for k in OPTIONS} == OPTIONS
    assert r["relative_error"] == (r["free_energy"] - r["exact_free_energy"]) / abs(
        r["exact_free_energy"])
    assert r["n"] == 9
    # heat capacity beta^2 Var(E) from the evaluation samples; energy_stderr is
    # sqrt(Var_{ddof=1} / n), so beta^2 Var_{ddof=0} = beta^2 stderr^2 (n - 1)
    n_eval = OPTIONS["eval_batch"]
    assert r["heat_capacity"] > 0 and r["heat_capacity_stderr"] > 0
    assert math.isclose(r["heat_capacity"],
                        r["beta"] ** 2 * r["energy_stderr"] ** 2 * (n_eval - 1), rel_tol=1e-9)


def test_execute_does_not_consume_the_run(tmp_path):
    """A Run can be executed twice (the model it holds must survive the donated step)."""
    options = {**OPTIONS, "steps": 2, "eval_batch": 64, "checkpoint_every": 0}
    run = build_run("ising", options, devices=ONE_DEVICE)
    first = execute(run, tmp_path / "a", progress=False)
    second = execute(run, tmp_path / "b", progress=False)
    assert first["free_energy"] == second["free_energy"]


class _NanEnergy(AbstractSystem):
    """A 2x2 spin system whose energy is NaN: the run must stop, naming the step."""

    shape = (2, 2)
    kind = "spins"

    def _energy(self, x):
        return jnp.sum(x) * jnp.nan


def test_non_finite_free_energy_stops_the_run(tmp_path):
    run = build_run("ising", {"L": 2, "steps": 20, "batch": 8, "eval_batch": 16,
                              "log_every": 5, "checkpoint_every": 5, "net": "made",
                              "depth": 1}, devices=jax.devices()[:1])
    system = _NanEnergy()
    trainer = eqx.tree_at(lambda t: t.system, run.trainer, system)
    bad = Run("nan", run.config, system, run.model, trainer, None)
    with pytest.raises(NonFiniteError, match="at step 5"):
        execute(bad, tmp_path / "nan", progress=False)
    assert not (tmp_path / "nan" / "results.json").exists()
    assert read_checkpoint_meta(tmp_path / "nan" / "checkpoint") is None
