"""The command line for the continuous lattice systems: ising-relaxed and phi4."""

import json

import numpy as np
import pytest

from thermax.cli import main

TINY = ["--steps", "4", "--batch", "8", "--eval-batch", "64", "--coupling-layers", "2",
        "--hidden-width", "2", "--hidden-depth", "1"]

BAD = {
    "neuralrg L not a power of two": (["run", "ising-relaxed", "--L", "6"],
                                      "--flow neuralrg needs --L a power of two"),
    "realnvp odd L": (["run", "ising-relaxed", "--L", "5", "--flow", "realnvp"],
                      "--flow realnvp needs an even --L"),
    "realnvp odd couplings": (["run", "phi4", "--flow", "realnvp", "--coupling-layers", "3"],
                              "even --coupling-layers"),
    "too many scales": (["run", "ising-relaxed", "--L", "4", "--rg-depth", "3"],
                        "--rg-depth 3 is more than"),
    "relaxed beta 0": (["run", "ising-relaxed", "--beta", "0"], "--beta 0.0 must be > 0"),
    "relaxed L 1": (["run", "ising-relaxed", "--L", "1"], "--L 1 must be >= 2"),
    "relaxed J nan": (["run", "ising-relaxed", "--J", "nan"], "--J nan must be a finite"),
    "kappa negative": (["run", "phi4", "--kappa", "-0.1"], "--kappa -0.1 must be >= 0"),
    "lambda negative": (["run", "phi4", "--lam", "-1"], "--lam -1.0 must be >= 0"),
    "free field unbounded": (["run", "phi4", "--lam", "0", "--kappa", "0.3"], "kappa"),
    "phi4 has no beta": (["run", "phi4", "--beta", "1"], "unrecognized arguments"),
    "bad flow": (["run", "phi4", "--flow", "glow"], "invalid choice"),
    "bad estimator": (["run", "phi4", "--estimator", "reinforce"], "invalid choice"),
    "bad potential init": (["run", "ising-relaxed", "--flow", "monge-ampere",
                            "--potential-init", "zero"], "invalid choice"),
    "even conv kernel": (["run", "ising-relaxed", "--L", "8", "--flow", "monge-ampere",
                          "--potential", "conv", "--potential-kernel", "4"],
                         "--potential-kernel must be odd and at most --L 8, got 4"),
    "conv kernel above L": (["run", "ising-relaxed", "--L", "4", "--flow", "monge-ampere",
                             "--potential", "conv", "--potential-kernel", "5"],
                            "--potential-kernel must be odd and at most --L 4, got 5"),
    "negative weight decay": (["run", "phi4", "--weight-decay", "-1"],
                              "--weight-decay -1.0 must be >= 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_error_and_nothing_written(tmp_path, capsys, case):
    argv, message = BAD[case]
    out_dir = tmp_path / "out"
    assert main([*argv, "--out", str(out_dir)]) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermax: error: "), captured.err
    assert message in lines[0]
    assert not out_dir.exists()


def test_list_names_the_field_systems(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("ising-relaxed:", "phi4:", "--flow {realnvp,neuralrg,monge-ampere}",
                 "--kappa", "--lam", "--estimator {pathwise,stl}", "--mcmc-steps"):
        assert text in out, text


@pytest.fixture(scope="module")
def relaxed_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("cli") / "relaxed"
    status = main(["run", "ising-relaxed", "--L", "4", *TINY, "--mcmc-steps", "6",
                   "--mcmc-chains", "8", "--out", str(out_dir)])
    return status, out_dir


def test_relaxed_run_reports_the_ising_free_energy(relaxed_run):
    status, out_dir = relaxed_run
    assert status == 0
    r = json.loads((out_dir / "results.json").read_text())
    for key in ("ising_free_energy", "ising_free_energy_stderr", "exact_ising_free_energy",
                "relaxation_constant", "log_z_importance", "log_z_importance_stderr",
                "ess_fraction", "mcmc_energy", "mcmc_acceptance"):
        assert r[key] is not None and np.isfinite(r[key]), key
    const, beta = r["relaxation_constant"], r["beta"]
    # F_Ising = F_relaxed + C / beta, for the variational and for the exact figures
    assert r["ising_free_energy"] == pytest.approx(r["free_energy"] + const / beta, rel=1e-12)
    assert r["exact_ising_free_energy"] == pytest.approx(
        r["exact_free_energy"] + const / beta, rel=1e-12)
    assert r["free_energy"] >= r["exact_free_energy"] - 4 * r["free_energy_stderr"]
    assert 0 <= r["mcmc_acceptance"] <= 1
    for name in ("samples.png", "latents.png", "free_energy.png", "history.csv"):
        assert (out_dir / name).is_file(), name


def test_phi4_realnvp_run(tmp_path):
    out_dir = tmp_path / "phi4"
    assert main(["run", "phi4", "--L", "4", "--flow", "realnvp", *TINY, "--estimator",
                 "pathwise", "--out", str(out_dir)]) == 0
    r = json.loads((out_dir / "results.json").read_text())
    assert r["beta"] == 1.0 and r["n"] == 16
    assert r["exact_free_energy"] is None  # no tabulated reference for L = 4
    assert r["relative_error"] is None and r["reference_free_energy_stderr"] is None
    assert np.isfinite(r["free_energy"]) and (out_dir / "samples.png").is_file()


def test_weight_decay_is_adam_with_l2():
    """--weight-decay adds wd * params to the gradient before Adam (PyTorch's Adam
    weight_decay): with a zero gradient the first step is -lr * sign(params)."""
    import jax
    import jax.numpy as jnp

    from thermax.catalog import build_run

    params = {"w": jnp.array([2.0, -0.5, 0.25])}
    zero = jax.tree.map(jnp.zeros_like, params)
    steps = {}
    for wd in (0.0, 0.1):
        run = build_run("phi4", {"L": 4, "coupling_layers": 2, "hidden_width": 2,
                                 "hidden_depth": 1, "lr": 0.01, "weight_decay": wd})
        opt = run.trainer.optimizer
        steps[wd], _ = opt.update(zero, opt.init(params), params)
    np.testing.assert_allclose(steps[0.0]["w"], 0.0)
    np.testing.assert_allclose(steps[0.1]["w"], -0.01 * np.sign(params["w"]), rtol=1e-5)
