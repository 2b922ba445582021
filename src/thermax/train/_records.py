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
    ``write=False`` (the non-writing processes of a multi-process run) touches no file.
    """

    def __init__(self, path: Path, *, resume_step: int | None = None,
                 fields: list[str] | None = None, write: bool = True):
        self.path = Path(path)
        self.fields = HISTORY_FIELDS if fields is None else list(fields)
        self.write = write
        if not write:
            return
        rows = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def truncate(self, step: int) -> None:
        """Drop the rows after ``step`` (a run restored to a checkpoint redoes them)."""
        if not self.write:
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, row: dict) -> None:
        """Add one row (the keys of ``fields`` taken from ``row``) and flush it."""
        if not self.write:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({k: row[k] for k in self.fields})

    def read(self) -> list[dict[str, float]]:
        with open(self.path, newline="") as f:
            return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()}
                    for r in csv.DictReader(f)]


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
    unit = "particle" if results.get("particles") else "site"
    rows = [
        ("free energy F", fmt(results["free_energy"], results["free_energy_stderr"])),
        (f"F per {unit}", fmt(results["free_energy"] / n, results["free_energy_stderr"] / n)),
        ("exact (or reference) F", fmt(results["exact_free_energy"])),
        ("relative error", "-" if results["relative_error"] is None
         else f"{results['relative_error']:.3e}"),
        ("energy E", fmt(results["energy"], results["energy_stderr"])),
        ("entropy S", fmt(results["entropy"], results["entropy_stderr"])),
        ("ln Z (importance)", fmt(results["log_z_importance"],
                                   results["log_z_importance_stderr"])),
        ("ESS fraction", fmt(results["ess_fraction"])),
    ]
    if results.get("ising_free_energy") is not None:  # a relaxed Ising run
        rows += [
            ("implied Ising F", fmt(results["ising_free_energy"],
                                    results["ising_free_energy_stderr"])),
            ("exact Ising F", fmt(results.get("exact_ising_free_energy"))),
            ("Ising rel. error", "-" if results.get("ising_relative_error") is None
             else f"{results['ising_relative_error']:.3e}"),
        ]
    if results.get("ground_state_energy") is not None:  # a particle system
        rows += [
            ("E per particle", fmt(results["energy_per_particle"],
                                   results["energy_stderr"] / n)),
            ("ground state E/n", fmt(results["ground_state_energy_per_particle"])
             + f"  shells {tuple(results['ground_state_shells'])}"),
            ("harmonic E/n", fmt(results["harmonic_energy"] / n)),
        ]
        if results.get("dF_dtrap") is not None:
            rows.append(("dF/dtrap (autodiff)", fmt(results["dF_dtrap"],
                                                    results["dF_dtrap_stderr"])
                         + ("" if results.get("exact_dF_dtrap") is None
                            else f"  exact {results['exact_dF_dtrap']:.6f}")))
    if results.get("ode_refinement_shift") is not None:  # a continuous flow
        rows.append(("F shift at 2x ODE steps", fmt(results["ode_refinement_shift"],
                                                     results["ode_refinement_shift_stderr"])))
    if results.get("mcmc_energy") is not None:
        rows += [
            ("neural MCMC E", fmt(results["mcmc_energy"], results["mcmc_energy_stderr"])),
            ("MCMC acceptance", fmt(results["mcmc_acceptance"])),
        ]
    width = max(len(r[0]) for r in rows)
    head = f"{results['system']}  n={n}  beta={results['beta']:g}  steps={results['steps']}"
    return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def draw_free_energy(ax, steps, f_per_site, exact_per_site: float | None = None, *,
                     final: float | None = None, final_err: float | None = None,
                     errors=None) -> None:
    """Draw a free-energy-per-site trace on a matplotlib ``ax``.

    The trace (with ``errors`` as error bars if given), the exact value as a dashed line,
    and the final evaluation as a point; the y range is fitted to the second half of the
    trace so the annealing transient does not squash the end of training.
    """
    steps, f_per_site = list(steps), list(f_per_site)
    if errors is None:
        ax.plot(steps, f_per_site, lw=1, label="variational F / n (annealed beta)")
    else:
        ax.errorbar(steps, f_per_site, yerr=list(errors), lw=1,
                    label="variational F / n (annealed beta)")
    if exact_per_site is not None:
        ax.axhline(exact_per_site, color="k", ls="--", label="exact F / n at target beta")
    if final is not None and steps:
        ax.errorbar([steps[-1]], [final], yerr=None if final_err is None else [final_err],
                    fmt="o", color="C3", label="final evaluation")
    tail = f_per_site[len(f_per_site) // 2:] + [
        v for v in (exact_per_site, final) if v is not None]
    if tail:
        pad = 0.3 * (max(tail) - min(tail)) + 1e-3
        ax.set_ylim(min(tail) - pad, max(tail) + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("free energy per site")
    ax.legend(fontsize=7)


def plot_history(path: Path, history: list[dict], exact: float | None, n: int, *,
                 final: float | None = None, final_err: float | None = None) -> None:
    """Free energy per site against step, with the exact value as a line and the final
    evaluation (total ``final`` with its error ``final_err``) as a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    draw_free_energy(ax, [r["step"] for r in history],
                     [r["free_energy"] / n for r in history],
                     None if exact is None else exact / n,
                     errors=[r["free_energy_stderr"] / n for r in history],
                     final=None if final is None else final / n,
                     final_err=None if final_err is None else final_err / n)
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


def plot_field_samples(path: Path, samples, title: str) -> None:
    """A row of sampled lattice fields (2D arrays), on one symmetric colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    samples = np.asarray(samples)
    k = min(len(samples), 8)
    vmax = float(np.max(np.abs(samples[:k]))) or 1.0
    fig, axes = plt.subplots(1, k, figsize=(1.6 * k, 2.0))
    for ax, x in zip(np.atleast_1d(axes), samples[:k], strict=False):
        im = ax.imshow(x, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(np.atleast_1d(axes)), shrink=0.8)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latents_by_scale(path: Path, views) -> None:
    """NeuralRG scales: a sample regenerated from its latents of scale >= s, for each s.

    ``views`` is a list of ``(s, field)``; ``s = 0`` is the full sample, larger ``s`` keep
    only coarser latent variables (finer ones set to 0), so the panels show the structure
    each scale of the hierarchy carries.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = len(views)
    vmax = max(float(np.max(np.abs(x))) for _, x in views) or 1.0
    fig, axes = plt.subplots(1, k, figsize=(2.2 * k, 2.6), squeeze=False)
    for ax, (s, x) in zip(axes[0], views, strict=True):
        ax.imshow(np.asarray(x), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title("all latents" if s == 0 else f"latents of scale >= {s}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("NeuralRG: one sample from its coarse latent variables only")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
