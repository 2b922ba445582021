"""Non-finite faults: injected NaNs are caught, named and handled by the stated policy.

A :class:`FaultInjection` makes the gradients, the loss or a walker NaN at one step (once:
a transient fault). The step must not be applied, the message must name the quantity and
the step, and each policy (skip, restore, stop) must do what the docs say.
"""

import jax
import numpy as np
import pytest

from thermax.catalog import build_run
from thermax.train import (
    FaultInjection,
    NonFiniteError,
    execute,
    load_checkpoint,
    read_checkpoint_meta,
)

OPTIONS = {"L": 2, "beta": 0.4, "net": "made", "depth": 1, "width": 2, "z2": 0,
           "dtype": "float64", "steps": 8, "batch": 8, "eval_batch": 16, "lr": 0.02,
           "beta_anneal": 0.0, "log_every": 1, "checkpoint_every": 4, "seed": 1}
ONE = jax.devices()[:1]


def _run(policy: str, fault: FaultInjection | None):
    run = build_run("ising", {**OPTIONS, "on_nonfinite": policy}, devices=ONE)
    return run if fault is None else \
        type(run)(**{**vars(run), "trainer": run.trainer.replace(fault=fault)})


def _final(out):
    run = _run("skip", None)
    like = run.trainer.init(run.model, key=jax.random.key(0))
    state, meta = load_checkpoint(out / "checkpoint", like)
    return state, meta


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    return out, execute(_run("skip", None), out, progress=False)


@pytest.mark.parametrize("quantity", ["gradients", "loss"])
def test_skip_policy_drops_the_step_and_halves_the_learning_rate(tmp_path, capsys, clean,
                                                                 quantity):
    out = tmp_path / "skip"
    results = execute(_run("skip", FaultInjection(quantity, 6)), out, progress=False)
    [fault] = results["nonfinite_steps"]
    name = "gradients" if quantity == "gradients" else "free energy"
    assert fault["step"] == 6 and name in fault["what"] and "at step 6" in fault["what"]
    if quantity == "gradients":  # names the first parameter whose gradient was NaN
        assert "(first: .net." in fault["what"], fault["what"]
    assert "update skipped" in fault["action"]
    err = capsys.readouterr().err
    assert f"non-finite {name}" in err and "at step 6" in err
    state, meta = _final(out)
    assert meta["step"] == 8 and int(state.guard.faults) == 1
    assert float(state.guard.lr_scale) == 0.5
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.model)
               if hasattr(x, "dtype") and np.issubdtype(x.dtype, np.floating))
    assert np.isfinite(results["free_energy"])
    # history: steps 1..8 except the skipped 6, all finite
    history = (out / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in history] == [1, 2, 3, 4, 5, 7, 8]
    assert "nan" not in "".join(history).lower()
    # up to the fault the run equals the clean one
    clean_rows = (clean[0] / "history.csv").read_text().splitlines()[1:6]
    strip = [",".join(r.split(",")[:-1]) for r in history[:5]]
    assert strip == [",".join(r.split(",")[:-1]) for r in clean_rows]


def test_restore_policy_goes_back_to_the_last_checkpoint(tmp_path, clean):
    out = tmp_path / "restore"
    results = execute(_run("restore", FaultInjection("gradients", 6)), out, progress=False)
    [fault] = results["nonfinite_steps"]
    assert fault["step"] == 6 and "restored the checkpoint at step 4" in fault["action"]
    state, meta = _final(out)
    assert meta["step"] == 8 and int(state.guard.faults) == 1
    assert float(state.guard.lr_scale) == 0.5
    # steps 5 and 6 were redone after the restore: history keeps one row per step
    history = (out / "history.csv").read_text().splitlines()[1:]
    steps = [int(r.split(",")[0]) for r in history]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8] and np.isfinite(results["free_energy"])
    # after the restore the learning rate is halved: a different run from the clean one
    assert results["free_energy"] != clean[1]["free_energy"]


def test_stop_policy_stops_with_the_checkpoint_intact(tmp_path):
    out = tmp_path / "stop"
    with pytest.raises(NonFiniteError, match=r"non-finite gradients .*at step 6.*policy "
                                             r"'stop'.*\(step 4\) is intact"):
        execute(_run("stop", FaultInjection("gradients", 6)), out, progress=False)
    assert read_checkpoint_meta(out / "checkpoint")["step"] == 4
    state, _ = _final(out)
    assert int(state.step) == 4 and int(state.guard.faults) == 0
    assert not (out / "results.json").exists()


def test_fault_injection_rejects_bad_input():
    with pytest.raises(ValueError, match="quantity must be"):
        FaultInjection("weights", 3)
    with pytest.raises(ValueError, match="step must be >= 1"):
        FaultInjection("loss", 0)
    run = build_run("ising", OPTIONS, devices=ONE)
    with pytest.raises(ValueError, match="needs a trainer with walkers"):
        run.trainer.replace(fault=FaultInjection("walkers", 2))


def test_bad_policy_is_one_clear_error():
    from thermax.catalog import OptionError

    with pytest.raises(OptionError, match="--on-nonfinite 'retry' is not allowed; choose "
                                          "from skip, restore, stop"):
        build_run("ising", {**OPTIONS, "on_nonfinite": "retry"})


def test_quantum_walker_fault_is_caught(tmp_path):
    """A NaN walker position in a quantum-dot run: the step is dropped (walkers, model and
    optimiser state kept), the message names the walkers and the step."""
    run = build_run("quantum-dot", {
        "n_up": 1, "n_down": 1, "temperature": 0.0, "flow": "identity", "steps": 4,
        "batch": 8, "eval_batch": 16, "sweeps": 2, "burn_in": 4, "log_every": 1,
        "checkpoint_every": 2}, devices=ONE)
    trainer = eqx_replace_fault(run.trainer, FaultInjection("walkers", 3))
    run = type(run)(**{**vars(run), "trainer": trainer})
    results = run.execute(tmp_path / "q", progress=False)
    [fault] = results["nonfinite_steps"]
    # a NaN walker also makes the loss NaN: both are named
    assert fault["step"] == 3 and fault["what"].startswith("non-finite ")
    assert "walkers at step 3" in fault["what"]
    assert np.isfinite(results["free_energy"]) and results["steps"] == 4


def eqx_replace_fault(trainer, fault):
    import equinox as eqx

    return eqx.tree_at(lambda t: t.fault, trainer, fault, is_leaf=lambda x: x is None)


def test_quantum_checkpoint_from_four_devices_resumes_on_one(tmp_path):
    """Walkers saved split over 4 devices resume on 1 (the checkpoint holds them whole)
    and the run ends where an uninterrupted one-device run does."""
    from thermax.train import Interrupted

    options = {"n_up": 2, "n_down": 0, "temperature": 1.0, "flow": "identity", "emax": 3.0,
               "occupation_net": "made", "occupation_width": 4, "pretrain_steps": 0,
               "steps": 4, "batch": 8, "eval_batch": 16, "sweeps": 2, "burn_in": 4,
               "checkpoint_every": 2}
    with pytest.raises(Interrupted):
        build_run("quantum-dot", options).execute(tmp_path / "r", stop_after_step=2,
                                                  progress=False)
    resumed = build_run("quantum-dot", options, devices=ONE).execute(
        tmp_path / "r", resume=True, progress=False)
    whole = build_run("quantum-dot", options, devices=ONE).execute(tmp_path / "w",
                                                                   progress=False)
    assert resumed["devices"] == 1 and resumed["steps"] == 4
    for key in ("free_energy", "energy", "entropy", "acceptance"):
        np.testing.assert_allclose(resumed[key], whole[key], rtol=1e-8, err_msg=key)
