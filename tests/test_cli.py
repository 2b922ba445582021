"""The command line: thermax list / run, bad input, a tiny run, resume, results.json."""

import csv
import json
import shutil

import numpy as np
import pytest

from thermax.catalog import build_run
from thermax.cli import main

# results.json keys required by the run contract (shared/docs/RUNS.md)
RESULT_KEYS = {
    "system", "config", "n", "beta", "free_energy", "free_energy_stderr", "energy",
    "energy_stderr", "entropy", "entropy_stderr", "exact_free_energy", "relative_error",
    "log_z_importance", "log_z_importance_stderr", "ess_fraction", "steps", "wall_time_s",
    "devices", "version",
}
TINY = ["--steps", "5", "--batch", "8", "--eval-batch", "64"]


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("ising:", "sk:", "--L", "--beta", "--couplings", "--net {made,pixelcnn}",
                 "--eval-batch", "--seed", "--beta-anneal"):
        assert text in out, text


def test_help_and_missing_command(capsys):
    assert main(["--help"]) == 0
    assert "thermax run SYSTEM" in capsys.readouterr().out
    assert main([]) == 2


def _matrices() -> dict[str, np.ndarray]:
    sym = np.array([[0.0, 0.5, -0.2], [0.5, 0.0, 0.1], [-0.2, 0.1, 0.0]])
    asym = sym.copy()
    asym[0, 2] = 0.3
    nan = sym.copy()
    nan[0, 1] = nan[1, 0] = np.nan
    return {"sym": sym, "rect": np.zeros((3, 4)), "asym": asym, "nan": nan}


# argv (a "{name}.npy" entry is a couplings file written from _matrices()), expected text
BAD = {
    "L < 2": (["run", "ising", "--L", "1"], "--L 1 must be >= 2"),
    "beta 0": (["run", "ising", "--beta", "0"], "--beta 0.0 must be > 0"),
    "beta negative": (["run", "ising", "--beta", "-1"], "--beta -1.0 must be > 0"),
    "beta nan": (["run", "ising", "--beta", "nan"], "--beta nan must be a finite number"),
    "batch 0": (["run", "ising", "--batch", "0"], "--batch 0 must be > 0"),
    "batch not divisible": (["run", "ising", "--batch", "6"], "divisible"),
    "L not an integer": (["run", "ising", "--L", "3.5"], "invalid int value"),
    "unknown system": (["run", "potts"], "unknown system 'potts'"),
    "unknown option": (["run", "ising", "--colour", "red"], "unrecognized arguments"),
    "bad choice": (["run", "ising", "--net", "transformer"], "invalid choice"),
    "bad dtype": (["run", "ising", "--dtype", "float16"], "invalid choice"),
    "anneal 1": (["run", "ising", "--beta-anneal", "1"], "must be in [0, 1)"),
    "couplings missing": (["run", "sk", "--couplings", "missing.npy"], "does not exist"),
    "couplings not square": (["run", "sk", "--couplings", "rect.npy"], "square"),
    "couplings not symmetric": (["run", "sk", "--couplings", "asym.npy"], "symmetric"),
    "couplings not finite": (["run", "sk", "--couplings", "nan.npy"], "finite"),
    "couplings n mismatch": (["run", "sk", "--couplings", "sym.npy", "--n", "4"],
                             "does not match"),
    "pixelcnn for sk": (["run", "sk", "--n", "6", "--net", "pixelcnn"],
                        "--net pixelcnn needs a square 2D lattice"),
    "resume of nothing": (["run", "ising", "--resume", "nothing"], "no run there"),
}


def _argv(argv: list[str], tmp_path) -> list[str]:
    out = []
    for a in argv:
        if a.endswith(".npy") or a == "nothing":
            matrix = _matrices().get(a.removesuffix(".npy"))
            if matrix is not None:
                np.save(tmp_path / a, matrix)
            a = str(tmp_path / a)
        out.append(a)
    return out


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("thermax: error: ")
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_error_and_nothing_written(tmp_path, capsys, case):
    argv, message = BAD[case]
    out_dir = tmp_path / "out"
    status = main([*_argv(argv, tmp_path), "--out", str(out_dir)])
    assert status != 0
    assert message in _one_error_line(capsys)
    assert not out_dir.exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["run"], "missing SYSTEM"), (["fly"], "unknown command 'fly'"),
    (["run", "--L", "3"], "missing SYSTEM")])
def test_bad_command_one_line_error(capsys, argv, message):
    assert main(argv) != 0
    assert message in _one_error_line(capsys)


def test_infinite_beta_rejected(tmp_path, capsys):
    """beta = inf (T = 0) is not a usable inverse temperature; expect one clear line."""
    out_dir = tmp_path / "out"
    # tiny options, so that a failure of this test (inf accepted) costs only a short run
    status = main(["run", "ising", "--L", "3", "--beta", "inf", "--net", "made", "--depth", "1",
                   *TINY, "--out", str(out_dir)])
    assert status != 0
    assert "--beta" in _one_error_line(capsys)
    assert not out_dir.exists()


def test_zero_coupling_builds(tmp_path):
    """--J 0 (free spins) passes validation, so building the run must not crash (the CLI
    only turns OptionError into one line; any other exception is a traceback)."""
    run = build_run("ising", {"L": 3, "J": 0.0, "beta": 0.5, "net": "made"})
    assert run.exact_free_energy == pytest.approx(-9 * np.log(2) / 0.5, rel=1e-12)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``thermax run ising --L 3 --steps 5 --batch 8 --eval-batch 64`` (default network)."""
    out_dir = tmp_path_factory.mktemp("cli") / "ising-3"
    status = main(["run", "ising", "--L", "3", *TINY, "--out", str(out_dir)])
    return status, out_dir


def test_tiny_run_writes_the_record(tiny_run):
    status, out_dir = tiny_run
    assert status == 0
    for name in ("results.json", "history.csv", "free_energy.png", "samples.png",
                 "config.json"):
        assert (out_dir / name).is_file(), name
    assert (out_dir / "checkpoint").is_dir() and any((out_dir / "checkpoint").iterdir())
    results = json.loads((out_dir / "results.json").read_text())
    missing = RESULT_KEYS - set(results)
    assert not missing, f"results.json lacks {sorted(missing)}"
    assert results["system"] == "ising" and results["n"] == 9 and results["steps"] == 5
    assert results["devices"] == 4
    cfg = results["config"]
    assert cfg["L"] == 3 and cfg["batch"] == 8 and cfg["net"] == "pixelcnn"
    assert {"lr", "seed", "dtype", "beta_anneal", "half_kernel", "z2"} <= set(cfg)
    with open(out_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [5]
    assert {"step", "beta", "free_energy", "free_energy_stderr", "energy", "entropy",
            "wall_time_s"} <= set(rows[0])


def test_results_relative_error(tiny_run):
    _, out_dir = tiny_run
    r = json.loads((out_dir / "results.json").read_text())
    assert r["exact_free_energy"] is not None
    assert r["relative_error"] == pytest.approx(
        (r["free_energy"] - r["exact_free_energy"]) / abs(r["exact_free_energy"]), rel=1e-12)
    # five steps on a 3x3 lattice: the bound holds even though the model is untrained
    assert r["free_energy"] >= r["exact_free_energy"] - 4 * r["free_energy_stderr"]
    assert all(np.isfinite(r[k]) for k in ("energy", "entropy", "log_z_importance",
                                           "ess_fraction"))


def test_existing_out_rejected(tiny_run, capsys):
    _, out_dir = tiny_run
    before = (out_dir / "results.json").read_text()
    status = main(["run", "ising", "--L", "3", *TINY, "--out", str(out_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and len(err) == 1
    assert err[0].startswith("thermax: error: ") and "--resume" in err[0]
    assert (out_dir / "results.json").read_text() == before


def test_resume_continues(tiny_run, tmp_path, capsys):
    _, out_dir = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out_dir, copy)
    assert main(["run", "ising", "--resume", str(copy), "--steps", "10"]) == 0
    r = json.loads((copy / "results.json").read_text())
    assert r["steps"] == 10 and r["config"]["steps"] == 10
    with open(copy / "history.csv", newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == [5, 10]
    assert "results in" in capsys.readouterr().out


def test_resume_rejects_changed_options(tiny_run, capsys):
    _, out_dir = tiny_run
    assert main(["run", "ising", "--resume", str(out_dir), "--lr", "0.1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only --steps may change" in err[0]
    assert main(["run", "sk", "--resume", str(out_dir)]) != 0
    assert "of system 'ising'" in capsys.readouterr().err


def test_resume_rejects_another_out(tiny_run, tmp_path, capsys):
    _, out_dir = tiny_run
    other = tmp_path / "elsewhere"
    assert main(["run", "ising", "--resume", str(out_dir), "--out", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop --out" in err[0]
    assert not other.exists()


def test_unknown_exact_is_null_not_absent(tmp_path):
    """SK with 25 spins: no exact value; the keys are present with null."""
    out_dir = tmp_path / "sk"
    assert main(["run", "sk", "--n", "25", "--depth", "1", "--width", "1", "--steps", "2",
                 "--batch", "8", "--eval-batch", "16", "--out", str(out_dir)]) == 0
    r = json.loads((out_dir / "results.json").read_text())
    assert RESULT_KEYS <= set(r)
    assert r["exact_free_energy"] is None and r["relative_error"] is None
    assert r["n"] == 25 and r["config"]["couplings"] is None
