"""The command line for the uniform electron gas: thermax run electron-gas."""

import json
import math

import pytest

from thermax.cli import main

TINY = ["--steps", "3", "--batch", "8", "--eval-batch", "16", "--sweeps", "2",
        "--burn-in", "4", "--log-every", "1", "--checkpoint-every", "2"]

BAD = {
    "rs zero": (["--rs", "0"], "--rs 0.0 must be > 0"),
    "rs negative": (["--rs", "-2"], "--rs -2.0 must be > 0"),
    "negative temperature": (["--t-over-tf", "-0.1"], "--t-over-tf -0.1 must be >= 0"),
    "not a closed shell": (["--n", "12", "--closed-shell", "1"], "closed shell"),
    "cutoff too small": (["--n", "13", "--emax", "0.1"], "13"),
    "twist length": (["--twist", "0.25"], "--twist needs 2 numbers"),
    "twist range": (["--twist", "0.75", "0"], "[-0.5, 0.5]"),
    "dim": (["--dim", "4"], "invalid choice: 4"),
    "no electrons": (["--n", "0"], "--n 0 must be >= 1"),
    "unknown flow": (["--flow", "backflow"], "invalid choice: 'backflow'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_error_and_nothing_written(tmp_path, capsys, case):
    argv, message = BAD[case]
    out_dir = tmp_path / "out"
    assert main(["run", "electron-gas", *argv, "--out", str(out_dir)]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thermax: error: "), lines
    assert message in lines[0], lines[0]
    assert not out_dir.exists()


def test_list_names_the_electron_gas_options(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("electron-gas:", "--rs", "--t-over-tf", "--twist", "--closed-shell",
                 "--flow {ferminet,identity}"):
        assert text in out, text


@pytest.fixture(scope="module")
def free_gas_run(tmp_path_factory):
    """5 free polarised electrons at T/T_F = 0.3 with a twist and the identity flow: the
    plane-wave determinants are eigenstates, so only p(K) is learned (pretrained)."""
    out_dir = tmp_path_factory.mktemp("cli") / "gas"
    argv = ["run", "electron-gas", "--n", "5", "--rs", "2", "--t-over-tf", "0.3",
            "--twist", "0.25", "0.25", "--coulomb", "0", "--flow", "identity",
            "--occupation-net", "made", "--occupation-width", "8", "--pretrain-steps", "200",
            *TINY, "--out", str(out_dir)]
    assert main(argv) == 0
    return out_dir


def test_free_electron_gas_run_reports_the_gas_figures(free_gas_run):
    results = json.loads((free_gas_run / "results.json").read_text())
    assert results["rs"] == 2.0 and results["t_over_tf"] == 0.3
    assert results["twist"] == [0.25, 0.25]
    # polarised 2D: T_F = k_F^2 = (2 / r_s)^2 Rydberg, L = sqrt(pi N) r_s
    assert results["fermi_temperature"] == pytest.approx(1.0, rel=1e-12)
    assert results["temperature"] == pytest.approx(0.3, rel=1e-12)
    assert results["box_length"] == pytest.approx(math.sqrt(5 * math.pi) * 2, rel=1e-12)
    # free fermions: the exact F is the free-fermion F with the same cutoff and twist
    assert results["exact_free_energy"] == pytest.approx(results["free_energy_free"],
                                                         rel=1e-12)
    f, err = results["free_energy"], results["free_energy_stderr"]
    assert f >= results["exact_free_energy"] - 4 * err
    assert f - results["exact_free_energy"] < 0.05 + 4 * err
    assert results["free_energy_per_particle"] == pytest.approx(f / 5, rel=1e-12)
    assert results["effective_mass_ratio"] == pytest.approx(
        results["entropy"] / results["entropy_free"], rel=1e-12)
    assert results["entropy_free"] > 0
    for name in ("config.json", "history.csv", "free_energy.png",
                 "density_and_occupations.png"):
        assert (free_gas_run / name).is_file(), name


def test_resume_continues_to_the_same_result(free_gas_run, tmp_path):
    """An interrupted and resumed run ends where an uninterrupted one does (the config,
    twist list included, round-trips through config.json)."""
    from thermax.catalog import build_run
    from thermax.train import Interrupted

    config = json.loads((free_gas_run / "config.json").read_text())["config"]
    out_dir = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        build_run("electron-gas", dict(config)).execute(out_dir, stop_after_step=2,
                                                        progress=False)
    resumed = build_run("electron-gas", dict(config)).execute(out_dir, resume=True,
                                                               progress=False)
    full = json.loads((free_gas_run / "results.json").read_text())
    assert resumed["free_energy"] == pytest.approx(full["free_energy"], rel=1e-9, abs=1e-9)


def test_interacting_ground_state_run(tmp_path):
    """T = 0, 5 electrons at r_s = 5 with the periodic flow: runs, reports F = E (S = 0)
    and the per-particle figures."""
    out_dir = tmp_path / "gs"
    argv = ["run", "electron-gas", "--n", "5", "--rs", "5", "--t-over-tf", "0",
            "--flow-width", "4", "--flow-depth", "1", "--flow-layers", "1", *TINY,
            "--out", str(out_dir)]
    assert main(argv) == 0
    results = json.loads((out_dir / "results.json").read_text())
    assert results["temperature"] == 0.0 and results["entropy"] == 0.0
    assert results["free_energy"] == results["energy"]
    assert math.isfinite(results["energy_per_particle"])
    assert results["effective_mass_ratio"] is None      # S_0 = 0 for a closed shell at T = 0


def test_sweep_tabulates_and_resumes(tmp_path, capsys):
    """sweep_electron_gas runs each r_s, writes the table (JSON, CSV, plot) and, called
    again, reads the finished runs instead of repeating them."""
    from thermax.quantum import sweep_electron_gas

    options = {"n": 3, "t_over_tf": 0.5, "coulomb": 0.0, "flow": "identity",
               "occupation_net": "made", "occupation_width": 4, "pretrain_steps": 20,
               "steps": 2, "batch": 8, "eval_batch": 16, "sweeps": 2, "burn_in": 2}
    rows = sweep_electron_gas([2.0, 1.0], options, tmp_path / "sweep", progress=False)
    assert [row["rs"] for row in rows] == [1.0, 2.0]
    for row in rows:
        assert row["n"] == 3 and row["entropy_free"] > 0
        assert row["effective_mass_ratio"] == pytest.approx(
            row["entropy"] / row["entropy_free"], rel=1e-12)
    for name in ("table.json", "table.csv", "table.png"):
        assert (tmp_path / "sweep" / name).is_file(), name
    assert "m*/m" in capsys.readouterr().out
    stamp = (tmp_path / "sweep" / "rs-1" / "results.json").stat().st_mtime_ns
    again = sweep_electron_gas([1.0, 2.0], options, tmp_path / "sweep", progress=False)
    assert again == rows
    assert (tmp_path / "sweep" / "rs-1" / "results.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="r_s values > 0"):
        sweep_electron_gas([1.0, -1.0], options, tmp_path / "bad")
