"""The command line for continuous flows: coulomb-trap and ising-relaxed --flow monge-ampere."""

import json

import numpy as np
import pytest

from thermax.cli import main

TINY = ["--steps", "3", "--batch", "8", "--eval-batch", "32", "--steps-ode", "2",
        "--hidden-width", "4", "--hidden-depth", "1"]

BAD = {
    "no particles": (["run", "coulomb-trap", "--n", "0"], "--n 0 must be >= 1"),
    "dim 4": (["run", "coulomb-trap", "--dim", "4"], "invalid choice: 4"),
    "beta 0": (["run", "coulomb-trap", "--beta", "0"], "--beta 0.0 must be > 0"),
    "beta negative": (["run", "coulomb-trap", "--beta", "-1"], "--beta -1.0 must be > 0"),
    "trap 0": (["run", "coulomb-trap", "--trap", "0"], "--trap 0.0 must be > 0"),
    "pid without tolerances": (["run", "coulomb-trap", "--controller", "pid"],
                               "--controller pid adapts the step size to tolerances"),
    "pid without atol": (["run", "coulomb-trap", "--controller", "pid", "--rtol", "1e-5"],
                         "give both --rtol and --atol"),
    "unknown solver": (["run", "coulomb-trap", "--solver", "rk45"], "invalid choice: 'rk45'"),
    "unknown adjoint": (["run", "coulomb-trap", "--adjoint", "magic"],
                        "invalid choice: 'magic'"),
    "unknown divergence": (["run", "coulomb-trap", "--divergence", "trace"],
                           "invalid choice: 'trace'"),
    "bad flow": (["run", "coulomb-trap", "--flow", "realnvp"], "invalid choice: 'realnvp'"),
    "ode steps 0": (["run", "ising-relaxed", "--flow", "monge-ampere", "--steps-ode", "0"],
                    "--steps-ode 0 must be >= 1"),
    "ode time negative": (["run", "ising-relaxed", "--flow", "monge-ampere", "--ode-time",
                           "-1"], "--ode-time -1.0 must be > 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_error_and_nothing_written(tmp_path, capsys, case):
    argv, message = BAD[case]
    out_dir = tmp_path / "out"
    assert main([*argv, "--out", str(out_dir)]) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermax: error: "), captured.err
    assert message in lines[0], lines[0]
    assert not out_dir.exists()


def test_list_names_the_continuous_options(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("coulomb-trap:", "--flow {cnf,monge-ampere}", "--dim {1,2,3}", "--solver",
                 "rk4", "tsit5", "--adjoint {", "backsolve", "--divergence {exact,hutchinson}",
                 "--steps-ode", "--controller {constant,pid}",
                 "--flow {realnvp,neuralrg,monge-ampere}"):
        assert text in out, text


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("cli") / "pair"
    status = main(["run", "coulomb-trap", "--n", "2", "--dim", "2", "--beta", "2", *TINY,
                   "--divergence", "hutchinson", "--out", str(out_dir)])
    return status, out_dir


def test_coulomb_run_writes_the_record(pair_run):
    status, out_dir = pair_run
    assert status == 0
    r = json.loads((out_dir / "results.json").read_text())
    assert r["particles"] == "labelled"
    assert r["n"] == 2 and r["dim"] == 2
    for key in ("free_energy", "free_energy_stderr", "exact_free_energy", "energy",
                "entropy", "log_z_importance", "ess_fraction", "ground_state_energy",
                "harmonic_energy", "dF_dtrap", "dF_dtrap_stderr", "dF_dcoupling",
                "exact_dF_dtrap", "exact_dF_dcoupling", "energy_per_particle"):
        assert r[key] is not None and np.isfinite(r[key]), key
    assert r["ground_state_energy"] == pytest.approx(1.5, rel=1e-6)  # r = 1, 1/r + r^2/2
    assert r["ground_state_shells"] == [2]
    assert r["free_energy"] >= r["exact_free_energy"] - 4 * r["free_energy_stderr"]
    for name in ("samples.png", "density.png", "free_energy.png", "history.csv"):
        assert (out_dir / name).is_file(), name


def test_coulomb_run_resumes(pair_run, capsys):
    status, out_dir = pair_run
    assert main(["run", "coulomb-trap", "--resume", str(out_dir), "--steps", "5"]) == 0
    r = json.loads((out_dir / "results.json").read_text())
    assert r["steps"] == 5


@pytest.mark.parametrize("potential", ["dense", "translation", "conv"])
def test_monge_ampere_relaxed_ising_runs(tmp_path, potential):
    out_dir = tmp_path / "ma"
    status = main(["run", "ising-relaxed", "--L", "4", "--flow", "monge-ampere",
                   "--potential-width", "8", "--potential", potential, "--steps", "2",
                   "--batch", "8", "--eval-batch", "32", "--steps-ode", "3",
                   "--potential-kernel", "3", "--estimator", "pathwise",
                   "--out", str(out_dir)])
    assert status == 0
    r = json.loads((out_dir / "results.json").read_text())
    assert r["config"]["solver"] == "rk4" and r["config"]["ode_time"] == 5.0
    assert r["config"]["potential"] == potential
    assert r["free_energy"] >= r["exact_free_energy"] - 4 * r["free_energy_stderr"]
    assert (out_dir / "samples.png").is_file()
