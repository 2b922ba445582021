r"""The uniform electron gas in a periodic box: the Hamiltonian and the run behind
``thermax run electron-gas``.

Rydberg units, lengths in Bohr radii ``a_B`` (``docs/PHYSICS.md`` §5):

.. math::

    H = -\sum_i \nabla_i^2 + \sum_{i<j} \frac{2}{|x_i - x_j|}
        + (\text{neutralising background, periodic images}),

``N`` electrons in a box of side ``L`` with ``L = sqrt(pi N) r_s`` (2D) or
``(4 pi N / 3)^{1/3} r_s`` (3D); the Coulomb sum is the Ewald sum
(:class:`~thermax.quantum.EwaldSum`, Madelung term included) times 2. The single-particle
basis is the plane waves with a twist (:class:`~thermax.quantum.PlaneWaveBasis`), the flow
the periodic FermiNet-style flow (:func:`~thermax.bijections.periodic_ferminet_flow`), and
the temperature is given as ``T / T_F`` with the spin-polarised ``T_F = k_F^2``
(``k_F = 2 / r_s`` in 2D). The quasiparticle effective mass follows from the
low-temperature entropy, ``m*/m = S / S_0`` (Eich, Holzmann & Vignale, PRB 96, 035132
(2017)), ``S_0`` the exact free-fermion entropy at the same ``N``, ``T``, twist and cutoff.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._ewald import EwaldSum
from ._hamiltonian import AbstractQuantumSystem
from ._planewave import box_length_for_density


class ElectronGas(AbstractQuantumSystem):
    r"""Electrons in a periodic box with a neutralising background (Rydberg units).

    .. math::

        H = -\sum_i \nabla_i^2 + \lambda\, 2 E_{\rm Ewald}(x),

    with ``E_Ewald`` the periodic ``1/r`` energy of unit charges in a uniform background,
    self (Madelung) term included (:class:`EwaldSum`), and ``lambda = coulomb`` (``1``
    physical, ``0`` free fermions). The kinetic prefactor is ``hbar^2/2m = 1``.

    Args:
        n_up: spin-up electrons (``>= 0``; they come first in a configuration).
        n_down: spin-down electrons (``>= 0``; ``0`` for the polarised gas).
        rs: the density parameter ``r_s > 0`` (Bohr radii; the radius of the disc or
            sphere holding one electron).
        dim: 2 (default) or 3.
        coulomb: interaction strength ``lambda >= 0``.
        ewald_tol: the Ewald sum's truncation tolerance (see :class:`EwaldSum`).

    Example:
        >>> gas = ElectronGas(13, 0, rs=5.0)
        >>> gas.potential_energy(jax.random.uniform(key, (13, 2)) * gas.box_length)
    """

    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    rs: float = eqx.field(static=True)
    box_length: float = eqx.field(static=True)
    coulomb: Float[Array, ""]
    ewald: EwaldSum
    kinetic_prefactor: ClassVar[float] = 1.0

    def __init__(self, n_up: int, n_down: int = 0, *, rs: float, dim: int = 2,
                 coulomb: float | Float[ArrayLike, ""] = 1.0, ewald_tol: float = 1e-12):
        for name, value in (("n_up", n_up), ("n_down", n_down)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ElectronGas: {name} must be an int >= 0, got {value!r}")
        if n_up + n_down < 1:
            raise ValueError("ElectronGas: needs at least one electron; n_up and n_down are "
                             "both 0")
        if isinstance(dim, bool) or dim not in (2, 3):
            raise ValueError(f"ElectronGas: dim must be 2 or 3, got {dim!r}")
        rs = float(rs)
        if not (math.isfinite(rs) and rs > 0):
            raise ValueError(f"ElectronGas: rs must be a finite number > 0 (the density "
                             f"parameter in Bohr radii), got {rs}")
        coulomb = jnp.asarray(coulomb, jnp.result_type(float))
        if coulomb.shape != () or (not isinstance(coulomb, jax.core.Tracer)
                                   and not float(coulomb) >= 0):
            raise ValueError(f"ElectronGas: coulomb must be a number >= 0 (0 = free "
                             f"fermions, 1 = physical), got {coulomb}")
        self.n_up, self.n_down, self.dim, self.rs = n_up, n_down, dim, rs
        self.box_length = float(box_length_for_density(n_up + n_down, rs, dim))
        self.coulomb = coulomb
        self.ewald = EwaldSum(dim, self.box_length, tol=ewald_tol)

    @property
    def density(self) -> float:
        """Electrons per unit volume (area in 2D)."""
        return self.n / self.box_length**self.dim

    def _potential_energy(self, x):
        return 2.0 * self.coulomb.astype(x.dtype) * self.ewald.energy(x)

    def initial_positions(self, key: PRNGKeyArray, batch: int, dtype
                          ) -> Float[Array, "batch n dim"]:
        """Walkers spread uniformly over the box (the burn-in equilibrates them)."""
        return self.box_length * jax.random.uniform(key, (batch, *self.shape), dtype)

    def wrap(self, xs: Float[Array, "*batch n dim"]) -> Float[Array, "*batch n dim"]:
        """Positions folded back into the box ``[0, L)^dim`` (for pictures)."""
        return jnp.mod(xs, self.box_length)

    def describe(self) -> dict:
        """Figures that identify this system, for ``results.json``."""
        return {"n_up": self.n_up, "n_down": self.n_down, "dim": self.dim, "rs": self.rs,
                "box_length": self.box_length, "coulomb": float(self.coulomb)}


def _twist(cfg: dict, dim: int) -> tuple[float, ...]:
    twist = cfg.get("twist")
    if twist is None:
        return (0.0,) * dim
    twist = tuple(float(t) for t in twist)
    if len(twist) != dim:
        raise ValueError(f"--twist needs {dim} numbers (one per axis) for --dim {dim}, got "
                         f"{len(twist)}: {twist}")
    if any(not -0.5 <= t <= 0.5 for t in twist):
        raise ValueError(f"--twist entries must lie in [-0.5, 0.5] (a twist is defined "
                         f"modulo 1), got {twist}")
    return twist


def electron_gas_report(results: dict, *, n: int, entropy_free: float) -> dict:
    """Per-particle figures and the effective mass ``m*/m = S / S_0`` of a finished run."""
    out = {"free_energy_per_particle": results["free_energy"] / n,
           "free_energy_per_particle_stderr": results["free_energy_stderr"] / n,
           "energy_per_particle": results["energy"] / n,
           "energy_per_particle_stderr": results["energy_stderr"] / n,
           "entropy_per_particle": results["entropy"] / n,
           "entropy_per_particle_stderr": results["entropy_stderr"] / n,
           "effective_mass_ratio": None, "effective_mass_ratio_stderr": None}
    if entropy_free > 0:
        out["effective_mass_ratio"] = results["entropy"] / entropy_free
        out["effective_mass_ratio_stderr"] = results["entropy_stderr"] / entropy_free
    return out


def build_electron_gas(cfg: dict, mesh):
    """The electron-gas run the options describe (every input checked before any work).

    ``cfg`` holds the ``thermax run electron-gas`` options: ``n``, ``dim``, ``rs``,
    ``t_over_tf`` (``0``: the ground state), ``twist``, ``emax`` (Rydberg; default: the
    Fermi level plus ten temperatures, or the closed shell at ``T = 0``), ``closed_shell``,
    ``coulomb`` and the shared quantum options (flow, Laplacian, optimiser, ``p(K)``).
    """
    from functools import partial

    from ..exact import ELECTRON_GAS_2D_POLARISED, free_fermion_thermodynamics
    from ._density_matrix import DensityMatrix, FixedOccupation
    from ._planewave import PlaneWaveBasis, fermi_temperature, require_closed_shell
    from ._run import (
        QuantumRun,
        _occupation_model,
        quantum_laplacian,
        quantum_optimizer,
        resolve_eval_sweeps,
        resolve_sweeps,
    )
    from ._trainer import QuantumTrainer
    from ._wavefunction import FlowSlater

    dtype = jnp.dtype(cfg["dtype"])
    n, dim, rs, t_over_tf = int(cfg["n"]), int(cfg["dim"]), float(cfg["rs"]), cfg["t_over_tf"]
    if not rs > 0:
        raise ValueError(f"--rs must be > 0 (the density parameter in Bohr radii), got {rs}")
    if not t_over_tf >= 0:
        raise ValueError(f"--t-over-tf must be >= 0 (0: ground state), got {t_over_tf}")
    twist = _twist(cfg, dim)
    cfg["twist"] = list(twist)
    if cfg["closed_shell"]:
        require_closed_shell(n, dim, twist)
    t_fermi = float(fermi_temperature(rs, dim))
    temperature = float(t_over_tf) * t_fermi
    if cfg["emax"] is None:
        probe = PlaneWaveBasis.for_density(n, rs, dim, twist=twist, n_orbitals=n)
        top = float(probe.energies[-1])
        cfg["emax"] = top if temperature == 0 else top + 10.0 * temperature
    basis = PlaneWaveBasis.for_density(n, rs, dim, twist=twist, emax=cfg["emax"], dtype=dtype)
    basis.check_cutoff(n)
    system = ElectronGas(n, 0, rs=rs, dim=dim, coulomb=cfg["coulomb"])
    k_flow, k_occ = jax.random.split(jax.random.key(cfg["seed"]))
    if cfg["flow"] == "identity":
        from ..bijections import Identity

        flow = Identity((n, dim))
    else:
        from ..bijections import periodic_ferminet_flow

        flow = periodic_ferminet_flow(n, dim, system.box_length, layers=cfg["flow_layers"],
                                      width=cfg["flow_width"], depth=cfg["flow_depth"],
                                      key=k_flow, dtype=dtype)
    wavefunction = FlowSlater(basis, flow, n, 0)
    optimizer = quantum_optimizer({**cfg, "temperature": temperature})   # checks first
    levels = basis.energies
    pretrain_kl: list[float] = []
    beta = math.inf if temperature == 0 else 1.0 / temperature
    if temperature == 0:
        occupations = FixedOccupation(jnp.arange(n), jnp.zeros((0,), jnp.int32))
    else:
        occupations, pretrain_kl = _occupation_model(cfg, levels, n, 0, beta, key=k_occ,
                                                     dtype=dtype)
    model = DensityMatrix(occupations, wavefunction)
    trainer = QuantumTrainer(system, optimizer, quantum_laplacian(cfg),
                             temperature=temperature, batch=cfg["batch"],
                             sweeps=resolve_sweeps(cfg, temperature),
                             eval_sweeps=resolve_eval_sweeps(cfg, temperature),
                             burn_in=cfg["burn_in"], width=0.1 * system.box_length / n**0.5,
                             clip=cfg["clip_eloc"] or None, mesh=mesh,
                             chunk_size=cfg["chunk_size"] or None)
    free = free_fermion_thermodynamics(levels, n, beta)
    exact = float(free.free_energy) if cfg["coulomb"] == 0 else None
    reference = {"rs": rs, "dim": dim, "twist": list(twist), "t_over_tf": float(t_over_tf),
                 "fermi_temperature": t_fermi, "box_length": system.box_length,
                 "n_orbitals": basis.n_orbitals, "emax": float(cfg["emax"]),
                 "free_energy_free": float(free.free_energy),
                 "energy_free": float(free.energy), "entropy_free": float(free.entropy),
                 "units": "Rydberg, lengths in Bohr radii"}
    tl = ELECTRON_GAS_2D_POLARISED.get(rs) if dim == 2 else None
    if temperature == 0 and tl is not None and cfg["coulomb"] == 1.0:
        reference.update({"reference_energy_per_particle_tl": tl[0],
                          "reference_correlation_per_particle_tl": tl[3],
                          "reference_exchange_per_particle_tl": tl[2],
                          "reference_source": "thermodynamic limit; " + tl[4]})
    report = partial(electron_gas_report, n=n, entropy_free=float(free.entropy))
    return QuantumRun("electron-gas", cfg, system, model, trainer, exact, reference,
                      pretrain_kl, report=report)


#: The columns of :func:`electron_gas_table`.
TABLE_COLUMNS = ("rs", "t_over_tf", "n", "free_energy_per_particle",
                 "free_energy_per_particle_stderr", "energy_per_particle",
                 "energy_per_particle_stderr", "entropy_per_particle",
                 "entropy_per_particle_stderr", "entropy",
                 "entropy_stderr", "entropy_free", "effective_mass_ratio",
                 "effective_mass_ratio_stderr", "steps")


def electron_gas_table(results: list[dict]) -> list[dict]:
    """One row per run (sorted by ``r_s``): ``F/N``, ``E/N``, ``S/N``, ``S``, ``S_0`` and
    ``m*/m`` with error bars, from ``results.json`` dicts of ``thermax run electron-gas``.

    Example:
        >>> rows = electron_gas_table([json.load(open(d / "results.json")) for d in dirs])
    """
    rows = []
    for r in results:
        if r.get("system") != "electron-gas":
            raise ValueError(f"electron_gas_table: expected results of electron-gas runs, got "
                             f"system {r.get('system')!r}")
        rows.append({c: r.get(c) for c in TABLE_COLUMNS})
    return sorted(rows, key=lambda row: row["rs"])


def format_electron_gas_table(rows: list[dict]) -> str:
    """The rows of :func:`electron_gas_table` as a plain-text table."""

    def pm(row, key):
        value, err = row[key], row.get(key + "_stderr")
        if value is None:
            return "-"
        return f"{value:.6f} +- {err:.6f}" if err is not None else f"{value:.6f}"

    head = f"{'r_s':>6} {'T/T_F':>6} {'F/N (Ry)':>24} {'E/N (Ry)':>24} {'S/N':>9} {'m*/m':>18}"
    lines = [head]
    for row in rows:
        lines.append(f"{row['rs']:>6g} {row['t_over_tf']:>6g} "
                     f"{pm(row, 'free_energy_per_particle'):>24} "
                     f"{pm(row, 'energy_per_particle'):>24} "
                     f"{row['entropy_per_particle']:>9.4f} "
                     f"{pm(row, 'effective_mass_ratio'):>18}")
    return "\n".join(lines)


def sweep_electron_gas(rs_values, options: dict, out_dir, *, progress: bool = True
                       ) -> list[dict]:
    """Run ``thermax run electron-gas`` at each ``r_s`` and tabulate the results.

    Each run goes to ``out_dir/rs-<value>``; a run whose ``results.json`` exists is read,
    not repeated, and an interrupted one resumes from its checkpoint, so the sweep as a
    whole resumes. Writes ``out_dir/table.json``, ``table.csv`` and ``table.png`` (``F/N``,
    ``S/N`` and ``m*/m`` against ``r_s``) and prints the table.

    Args:
        rs_values: the ``r_s`` values (each ``> 0``).
        options: the other options of ``thermax run electron-gas`` (as in
            :func:`thermax.catalog.build_run`; ``rs`` is set per run).
        out_dir: the sweep's directory.

    Returns:
        The rows of :func:`electron_gas_table`.

    Example:
        >>> sweep_electron_gas([1, 5, 10], {"n": 13, "t_over_tf": 0.15, "steps": 200},
        ...                    "sweep-n13")
    """
    import json
    from pathlib import Path

    from ..catalog import build_run

    rs_values = [float(r) for r in rs_values]
    bad = [r for r in rs_values if not (math.isfinite(r) and r > 0)]
    if not rs_values or bad:
        raise ValueError(f"sweep_electron_gas: needs r_s values > 0, got {rs_values}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for rs in rs_values:
        run_dir = out / f"rs-{rs:g}"
        done = run_dir / "results.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
            continue
        run = build_run("electron-gas", {**options, "rs": rs})
        results.append(run.execute(run_dir, resume=(run_dir / "checkpoint").exists(),
                                   progress=progress))
    rows = electron_gas_table(results)
    write_electron_gas_table(rows, out)
    return rows


def write_electron_gas_table(rows: list[dict], out_dir) -> None:
    """``table.json``, ``table.csv`` and ``table.png`` of :func:`electron_gas_table` rows
    in ``out_dir``, and the table printed."""
    import csv
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(out / "table.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot_electron_gas_table(rows, out / "table.png")
    print(format_electron_gas_table(rows))


def plot_electron_gas_table(rows: list[dict], path) -> None:
    """``F/N``, ``S/N`` and ``m*/m`` (with error bars) against ``r_s``, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [row["rs"] for row in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = (("free_energy_per_particle", "F / N (Ry)"), ("entropy_per_particle", "S / N"),
              ("effective_mass_ratio", "m*/m = S / S_0"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        values = [row[key] if row[key] is not None else float("nan") for row in rows]
        errs = [row.get(key + "_stderr") or 0.0 for row in rows]
        ax.errorbar(rs, values, yerr=errs, marker="o", capsize=3)
        ax.set_xlabel("r_s")
        ax.set_ylabel(label)
    axes[2].axhline(1.0, color="grey", lw=0.8, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
