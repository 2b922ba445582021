"""The command line for quantum systems: thermax run quantum-dot."""

import json

import numpy as np
import pytest

from thermax.cli import main

TINY = ["--steps", "4", "--batch", "8", "--eval-batch", "16", "--sweeps", "2",
        "--burn-in", "4", "--log-every", "2", "--checkpoint-every", "2"]

BAD = {
    "n-up negative": (["--n-up", "-1"], "--n-up -1 must be >= 0"),
    "n-down negative": (["--n-down", "-2"], "--n-down -2 must be >= 0"),
    "no electrons": (["--n-up", "0", "--n-down", "0"], "need at least one electron"),
    "too many for the cutoff": (["--n-up", "4", "--emax", "2"],
                                "4 electrons of one spin do not fit in the 3 orbitals"),
    "negative temperature": (["--temperature", "-0.5"], "--temperature -0.5 must be >= 0"),
    "omega zero": (["--omega", "0"], "--omega 0.0 must be > 0"),
    "omega negative": (["--omega", "-1"], "--omega -1.0 must be > 0"),
    "temperature and beta": (["--temperature", "1", "--beta", "2"],
                             "give --temperature or --beta, not both"),
    "unknown laplacian": (["--laplacian", "hessian"], "invalid choice: 'hessian'"),
    "unknown flow": (["--flow", "realnvp"], "invalid choice: 'realnvp'"),
    "jastrow at T > 0": (["--jastrow", "pade", "--temperature", "0.5"],
                         "--jastrow pade is for the ground state"),
    "weight decay with sr": (["--optimizer", "sr", "--weight-decay", "1e-3"],
                             "--weight-decay 0.001 is an Adam L2 penalty"),
    "negative jastrow width": (["--jastrow", "pade", "--jastrow-width", "-1"],
                               "--jastrow-width -1 must be >= 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_error_and_nothing_written(tmp_path, capsys, case):
    argv, message = BAD[case]
    out_dir = tmp_path / "out"
    assert main(["run", "quantum-dot", *argv, "--out", str(out_dir)]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermax: error: "), lines
    assert message in lines[0], lines[0]
    assert not out_dir.exists()


def test_list_names_the_quantum_options(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("quantum-dot:", "--n-up", "--n-down", "--omega", "--temperature", "--beta",
                 "--coulomb", "--flow {ferminet,backflow,cnf,identity}",
                 "--laplacian {forward,loop,hutchinson}", "--optimizer {adam,sr}", "--emax"):
        assert text in out, text


@pytest.fixture(scope="module")
def free_run(tmp_path_factory):
    """Two polarised free fermions at T = 1 with the identity flow: every Psi_K is an
    eigenstate, so the only thing learned is p(K) (pretrained to the exact one)."""
    out_dir = tmp_path_factory.mktemp("cli") / "free"
    argv = ["run", "quantum-dot", "--n-up", "2", "--n-down", "0", "--coulomb", "0",
            "--temperature", "1", "--flow", "identity", "--emax", "3",
            "--occupation-net", "made", "--occupation-width", "8", "--pretrain-steps", "200",
            *TINY, "--out", str(out_dir)]
    assert main(argv) == 0
    return out_dir


def test_free_fermion_run_leaves_the_record(free_run):
    results = json.loads((free_run / "results.json").read_text())
    for key in ("free_energy", "free_energy_stderr", "energy", "entropy", "temperature",
                "acceptance", "exact_free_energy", "relative_error", "n", "config",
                "log_z_importance"):
        assert key in results, key
    assert results["n"] == 2 and results["temperature"] == 1.0
    assert results["log_z_importance"] is None   # quantum: no importance weights
    # exact: the two lowest of the 6 orbitals under emax 3 (energies 1, 2, 2, 3, 3, 3)
    levels = np.array([1.0, 2, 2, 3, 3, 3])
    sets = [(a, b) for a in range(6) for b in range(a + 1, 6)]
    log_z = np.log(sum(np.exp(-(levels[a] + levels[b])) for a, b in sets))
    assert results["exact_free_energy"] == pytest.approx(-log_z, rel=1e-10)
    # variational: F >= F_exact - 4 stderr, and close after pretraining (KL < 0.05)
    f, err = results["free_energy"], results["free_energy_stderr"]
    assert f >= results["exact_free_energy"] - 4 * err
    assert f - results["exact_free_energy"] < 0.05 + 4 * err
    assert 0 < results["entropy"] <= np.log(15)
    assert 0.2 < results["acceptance"] < 0.8
    # the KL left by pretraining (exact: C(6, 2) sets are enumerated), one per spin present
    assert len(results["pretrain_kl"]) == 1 and 0 <= results["pretrain_kl"][0] < 0.05
    for name in ("config.json", "history.csv", "free_energy.png",
                 "density_and_occupations.png"):
        assert (free_run / name).is_file(), name
    header = (free_run / "history.csv").read_text().splitlines()[0]
    assert "acceptance" in header and "temperature" in header


def test_resume_continues_to_the_same_result(free_run, tmp_path, capsys):
    """A run interrupted after step 2 and resumed ends where an uninterrupted one does."""
    from thermax.catalog import build_run
    from thermax.train import Interrupted

    config = json.loads((free_run / "config.json").read_text())["config"]
    run = build_run("quantum-dot", dict(config))
    out_dir = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        run.execute(out_dir, stop_after_step=2, progress=False)
    resumed = build_run("quantum-dot", dict(config)).execute(out_dir, resume=True,
                                                              progress=False)
    full = json.loads((free_run / "results.json").read_text())
    assert resumed["steps"] == full["steps"]
    assert resumed["free_energy"] == pytest.approx(full["free_energy"], rel=1e-9, abs=1e-9)


def test_ground_state_run_of_two_electrons(tmp_path):
    """T = 0, one up and one down electron, a FermiNet flow: runs and reports the exact
    reference E = 3 (Taut); the energy after 4 steps is above it (variational)."""
    out_dir = tmp_path / "gs"
    argv = ["run", "quantum-dot", "--n-up", "1", "--n-down", "1", "--flow-width", "4",
            "--flow-depth", "1", "--flow-layers", "1", *TINY, "--out", str(out_dir)]
    assert main(argv) == 0
    results = json.loads((out_dir / "results.json").read_text())
    assert results["exact_free_energy"] == 3.0 and results["temperature"] == 0.0
    assert results["entropy"] == 0.0
    assert "pretrain_kl" not in results      # p fixed on the ground state: no pretraining
    assert results["energy"] > 3.0 - 4 * results["energy_stderr"]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_sr_follows_the_learning_rate_schedule(schedule):
    """--lr-schedule applies to stochastic reconfiguration as it does to Adam: cosine
    decays lr to lr * lr_final over --steps (a constant SR step kept the free-fermion p(K)
    jumping away from a good fit late in training)."""
    from thermax.quantum._run import quantum_optimizer

    cfg = {"optimizer": "sr", "temperature": 0.5, "flow": "backflow", "lr": 0.1,
           "lr_schedule": schedule, "lr_final": 0.05, "steps": 200, "sr_damping": 1e-3,
           "sr_max_norm": 0.1, "clip_grad": 0.0}
    sr = quantum_optimizer(cfg)
    lr = sr.learning_rate
    first, last = (float(lr(0)), float(lr(200))) if callable(lr) else (float(lr),) * 2
    assert first == pytest.approx(0.1)
    assert last == pytest.approx(0.1 if schedule == "constant" else 0.005)


def test_default_sweeps_depend_on_temperature():
    """--sweeps defaults to 10 at T = 0 (K fixed) and 50 at T > 0 (the walkers must
    re-thermalise after every redraw of K), --eval-sweeps to twice that at T > 0; given
    values are kept; config records them."""
    from thermax.catalog import build_run

    small = {"n_up": 2, "n_down": 0, "batch": 8, "pretrain_steps": 0, "emax": 3.0}
    cold = build_run("quantum-dot", small)
    assert cold.trainer.sweeps == 10 and cold.trainer.eval_sweeps == 10
    hot = build_run("quantum-dot", {**small, "temperature": 0.5})
    assert hot.trainer.sweeps == 50 and hot.config["sweeps"] == 50
    # the final evaluation redraws K every chunk: twice the sweeps by default
    assert hot.trainer.eval_sweeps == 100 and hot.config["eval_sweeps"] == 100
    given = build_run("quantum-dot", {**small, "temperature": 0.5, "sweeps": 7})
    assert given.trainer.sweeps == 7 and given.trainer.eval_sweeps == 14
    assert build_run("quantum-dot", {**small, "temperature": 0.5, "sweeps": 7,
                                     "eval_sweeps": 9}).trainer.eval_sweeps == 9
