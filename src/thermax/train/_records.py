"""The record a run leaves: history.csv, results.json, plots, the summary table."""

import csv
import json
import math
import os
from pathlib import Path

HISTORY_FIELDS = ["step", "beta", "free_energy", "free_energy_stderr", "energy",
                  "energy_stderr", "entropy", "entropy_stderr", "wall_time_s"]


class History:
    """``history.csv``: one row per logged step, appended and flushed as training goes.

    On resume, rows after the checkpoint's step are dropped so the file matches the state.
    """

    def __init__(self, path: Path, *, resume_step: int | None = None):
        self.path = Path(path)
        rows = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, HISTORY_FIELDS).writerow({k: row[k] for k in HISTORY_FIELDS})

    def read(self) -> list[dict[str, float]]:
        with open(self.path, newline="") as f:
            return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (non-finite floats become null)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({k: _clean(v) for k, v in data.items()}, indent=2) + "\n")
    os.replace(tmp, path)


def summary_table(results: dict) -> str:
    """A short plain-text table of the final figures."""
    def fmt(value, err=None):
        if value is None:
            return "-"
        return f"{value:.6f} +- {err:.6f}" if err is not None else f"{value:.6f}"

    n = results["n"]
    rows = [
        ("free energy F", fmt(results["free_energy"], results["free_energy_stderr"])),
        ("F per site", fmt(results["free_energy"] / n, results["free_energy_stderr"] / n)),
        ("exact F", fmt(results["exact_free_energy"])),
        ("relative error", "-" if results["relative_error"] is None
         else f"{results['relative_error']:.3e}"),
        ("energy E", fmt(results["energy"], results["energy_stderr"])),
        ("entropy S", fmt(results["entropy"], results["entropy_stderr"])),
        ("ln Z (importance)", fmt(results["log_z_importance"],
                                   results["log_z_importance_stderr"])),
        ("ESS fraction", fmt(results["ess_fraction"])),
    ]
    width = max(len(r[0]) for r in rows)
    head = f"{results['system']}  n={n}  beta={results['beta']:g}  steps={results['steps']}"
    return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def plot_history(path: Path, history: list[dict], exact: float | None, n: int) -> None:
    """Free energy per site against step, with the exact value as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if history:
        step = [r["step"] for r in history]
        f = [r["free_energy"] / n for r in history]
        err = [r["free_energy_stderr"] / n for r in history]
        ax.errorbar(step, f, yerr=err, lw=1, label="variational F / n")
        lo = min(f)
        hi = sorted(f)[len(f) // 2]
        if exact is not None:
            lo = min(lo, exact / n)
        pad = 0.1 * max(hi - lo, 1e-6)
        ax.set_ylim(lo - pad, hi + 3 * pad)
    if exact is not None:
        ax.axhline(exact / n, color="k", ls="--", label="exact F / n")
    ax.set_xlabel("step")
    ax.set_ylabel("free energy per site")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_spin_samples(path: Path, samples, title: str) -> None:
    """A grid of sampled spin configurations (2D lattices) or rows of spins (1D)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    samples = np.asarray(samples)
    if samples.ndim == 2:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.imshow(samples, cmap="gray", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_xlabel("site")
        ax.set_ylabel("sample")
    else:
        k = min(len(samples), 8)
        fig, axes = plt.subplots(1, k, figsize=(1.6 * k, 1.9))
        for ax, s in zip(np.atleast_1d(axes), samples[:k], strict=False):
            ax.imshow(s, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
