"""The run driver of quantum systems behind ``thermax run quantum-dot``.

Follows the run contract (``shared/docs/RUNS.md``): ``config.json``, ``history.csv`` (with
the Metropolis acceptance), ``checkpoint/`` (model, optimiser state, walkers, step, key),
``results.json`` and plots (free energy against step, electron density, ``p(K)``).
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..train._loop import local_copy, train_loop
from ..train._records import History, plot_history, write_json
from ..train._run import _version, begin_run, model_key
from ._density_matrix import DensityMatrix
from ._hamiltonian import AbstractQuantumSystem
from ._trainer import QuantumTrainer, QuantumTrainState

QUANTUM_HISTORY_FIELDS = ["step", "beta", "temperature", "free_energy", "free_energy_stderr",
                          "energy", "energy_stderr", "entropy", "entropy_stderr", "acceptance",
                          "wall_time_s"]


@dataclasses.dataclass(frozen=True)
class QuantumRun:
    """A configured quantum run: the system, the density-matrix model, the trainer, the
    exact (free fermions) or reference (published ground state) free energy, the KL
    divergence left by pretraining ``p(K)`` (one per pretrained spin; empty at T = 0), and
    the system's derived figures (``report``)."""

    system_name: str
    config: dict[str, Any]
    system: AbstractQuantumSystem
    model: DensityMatrix
    trainer: QuantumTrainer
    exact_free_energy: float | None
    reference: dict[str, Any] = dataclasses.field(default_factory=dict)
    pretrain_kl: list[float] = dataclasses.field(default_factory=list)
    #: ``report(results) -> dict``: figures derived from the final results (per particle,
    #: the effective mass), merged into ``results.json``
    report: Callable[[dict], dict] | None = None

    @staticmethod
    def summary(results: dict) -> str:
        """The printed summary table (:func:`quantum_summary`)."""
        return quantum_summary(results)

    def execute(self, out_dir: str | Path, *, resume: bool = False,
                stop_after_step: int | None = None, progress: bool = True,
                loggers: Sequence[Callable[[dict], None]] = ()) -> dict[str, Any]:
        """Train into ``out_dir`` (see :func:`execute_quantum`)."""
        return execute_quantum(self, out_dir, resume=resume, stop_after_step=stop_after_step,
                               progress=progress, loggers=loggers)


def execute_quantum(run: QuantumRun, out_dir: str | Path, *, resume: bool = False,
                    stop_after_step: int | None = None, progress: bool = True,
                    loggers: Sequence[Callable[[dict], None]] = ()) -> dict[str, Any]:
    """Train ``run`` in ``out_dir`` and return the final results (also in results.json).

    With ``resume=True`` training continues from the newest checkpoint (walkers included),
    so the result equals an uninterrupted run's. ``stop_after_step`` stops (raising
    :class:`~thermax.train.Interrupted`) once that step is done and checkpointed.
    """
    cfg = run.config
    trainer = run.trainer
    start = begin_run(run, out_dir, resume=resume, fields=QUANTUM_HISTORY_FIELDS)
    state, history, wall, out = start.state, start.history, start.wall, start.out

    def postfix(row: dict) -> str:
        return (f"F={row['free_energy']:.5f}±{row['free_energy_stderr']:.5f}"
                f" acc={row['acceptance']:.2f}")

    state, faults = train_loop(trainer, state, settings=start.settings,
                               ckpt_dir=start.ckpt_dir, history=history, name=run.system_name,
                               wall=wall, postfix=postfix, progress=progress,
                               stop_after_step=stop_after_step, loggers=loggers)
    n = run.system.n

    figures = trainer.evaluate(state, key=start.k_eval, n_samples=int(cfg["eval_batch"]))
    exact = run.exact_free_energy
    temperature = float(trainer.temperature)
    results = {
        "system": run.system_name,
        "config": cfg,
        "n": n,
        "beta": None if temperature == 0 else 1.0 / temperature,
        "temperature": temperature,
        **{k: figures[k] for k in ("free_energy", "free_energy_stderr", "energy",
                                   "energy_stderr", "entropy", "entropy_stderr")},
        # the errors above are blocked by walker; these assume every sample independent
        "free_energy_stderr_iid": figures["free_energy_stderr_iid"],
        "energy_stderr_iid": figures["energy_stderr_iid"],
        "acceptance": figures["acceptance"],
        "exact_free_energy": exact,
        "relative_error": None if exact is None
        else (figures["free_energy"] - exact) / abs(exact),
        "log_z_importance": None,
        "log_z_importance_stderr": None,
        "ess_fraction": None,
        "steps": int(state.step),
        "wall_time_s": wall(),
        "devices": trainer.mesh.size,
        "processes": jax.process_count(),
        "nonfinite_steps": faults,
        "version": _version(),
        **run.reference,
        **({"pretrain_kl": run.pretrain_kl} if run.pretrain_kl else {}),
    }
    if run.report is not None:
        results.update(run.report(results))
    local = local_copy(state)  # a collective: every process takes part
    if start.writer:
        write_json(out / "results.json", results)
        _plots(out, run, local, history, results)
    return results


def _plots(out: Path, run: QuantumRun, state: QuantumTrainState, history: History,
           results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_history(out / "free_energy.png", history.read(), results["exact_free_energy"],
                 run.system.n, final=results["free_energy"],
                 final_err=results["free_energy_stderr"])
    xs = state.walkers.positions
    wrap = getattr(run.system, "wrap", None)     # periodic systems: fold into the box
    xs = np.asarray(xs if wrap is None else wrap(xs)).reshape(-1, run.system.dim)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    if run.system.dim >= 2:
        if wrap is None:
            lim = float(np.quantile(np.abs(xs), 0.995)) + 1e-6
            extent = [[-lim, lim], [-lim, lim]]
        else:
            extent = [[0.0, run.system.box_length]] * 2
        axes[0].hist2d(xs[:, 0], xs[:, 1], bins=60, range=extent, cmap="viridis")
        axes[0].set_aspect("equal")
        axes[0].set_title("electron density (walkers)")
    keys = jax.random.split(jax.random.key(0), 2048)
    k_up, k_down, log_p = state.model.occupations.sample_and_log_prob_batch(keys=keys)
    labels, counts = np.unique(
        [f"{tuple(map(int, u))}|{tuple(map(int, d))}" for u, d in zip(np.asarray(k_up),
                                                                       np.asarray(k_down),
                                                                       strict=True)],
        return_counts=True)
    order = np.argsort(-counts)[:12]
    axes[1].bar(range(len(order)), counts[order] / counts.sum())
    axes[1].set_xticks(range(len(order)), labels[order], rotation=70, fontsize=6)
    axes[1].set_ylabel("frequency among 2048 samples")
    axes[1].set_title("p(K): most frequent occupations (up|down)")
    fig.tight_layout()
    fig.savefig(out / "density_and_occupations.png", dpi=120)
    plt.close(fig)


def quantum_summary(results: dict) -> str:
    """A short plain-text table of a quantum run's final figures."""
    def fmt(value, err=None):
        if value is None:
            return "-"
        return f"{value:.6f} +- {err:.6f}" if err is not None else f"{value:.6f}"

    rows = [
        ("free energy F", fmt(results["free_energy"], results["free_energy_stderr"])),
        ("exact (or reference) F", fmt(results["exact_free_energy"])),
        ("relative error", "-" if results["relative_error"] is None
         else f"{results['relative_error']:.3e}"),
        ("energy E", fmt(results["energy"], results["energy_stderr"])),
        ("entropy S of p(K)", fmt(results["entropy"], results["entropy_stderr"])),
        ("Metropolis acceptance", fmt(results["acceptance"])),
    ]
    if results.get("reference_energy") is not None:
        rows.append(("reference E", f"{results['reference_energy']}  "
                                    f"({results.get('reference_source', '')})"))
    if results.get("reference_energy_per_particle_tl") is not None:
        rows.append(("E / N", fmt(results["energy_per_particle"],
                                  results["energy_per_particle_stderr"])))
        rows.append(("E / N, thermodynamic limit",
                     f"{results['reference_energy_per_particle_tl']:.6f}  "
                     f"({results.get('reference_source', '')})"))
    if results.get("effective_mass_ratio") is not None:
        rows.append(("F / N", fmt(results["free_energy_per_particle"],
                                  results["free_energy_per_particle_stderr"])))
        rows.append(("S / S_0 = m*/m", fmt(results["effective_mass_ratio"],
                                           results["effective_mass_ratio_stderr"])))
    if results.get("pretrain_kl"):
        rows.append(("pretraining KL of p(K)",
                     ", ".join(f"{kl:.2e}" for kl in results["pretrain_kl"])))
    width = max(len(r[0]) for r in rows)
    head = (f"{results['system']}  n={results['n']}  T={results['temperature']:g}  "
            f"steps={results['steps']}")
    return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


#: Metropolis sweeps per step when --sweeps is not given: at T = 0 the occupation is fixed
#: and the walkers only follow the parameters; at T > 0 every step redraws K, and the
#: walkers must re-thermalise in |Psi_K'|^2 (measured on the polarised N = 6 dot at
#: T = 0.6: F 20.9855 with 10 sweeps, 20.8789 with 50, 20.8643 with 100 for one model;
#: trained with 50, S = -dF/dT agrees with the entropy estimator)
DEFAULT_SWEEPS = {"ground": 10, "thermal": 50}


def resolve_sweeps(cfg: dict, temperature: float) -> int:
    """``cfg["sweeps"]``, or the default for ``temperature`` when it is ``None`` (written
    back into ``cfg`` so ``config.json`` records it)."""
    if cfg.get("sweeps") is None:
        cfg["sweeps"] = DEFAULT_SWEEPS["ground" if temperature == 0 else "thermal"]
    return int(cfg["sweeps"])


def resolve_eval_sweeps(cfg: dict, temperature: float) -> int:
    """``cfg["eval_sweeps"]``, or by default twice the training sweeps at ``T > 0`` and the
    training sweeps at ``T = 0``; written back into ``cfg``.

    Every evaluation chunk redraws ``K``, and the result is only as good as the walkers'
    re-thermalisation. The margin is cheap (one evaluation per run) and measured on the
    polarised N = 6 dot: a model trained with 10 sweeps evaluated at T = 0.6 gave F =
    20.9855, 20.8789, 20.8643 with 10, 50, 100 sweeps per chunk; models trained with 50
    sweeps moved by at most 0.013 (about 3 standard errors of F) between 50, 100 and 200
    sweeps at T = 0.4 to 1.1, with no trend in the sweep count."""
    if cfg.get("eval_sweeps") is None:
        sweeps = resolve_sweeps(cfg, temperature)
        cfg["eval_sweeps"] = sweeps if temperature == 0 else 2 * sweeps
    return int(cfg["eval_sweeps"])


def quantum_optimizer(cfg: dict):
    """Adam (with the run's schedule and clipping) or stochastic reconfiguration (with the
    run's schedule)."""
    from ._sr import SR, MinSR

    lr = (cfg["lr"] if cfg["lr_schedule"] == "constant"
          else optax.cosine_decay_schedule(cfg["lr"], max(1, cfg["steps"]), cfg["lr_final"]))
    if cfg["optimizer"] == "sr":
        if cfg.get("weight_decay", 0.0) > 0:
            raise ValueError(f"--weight-decay {cfg['weight_decay']} is an Adam L2 penalty; "
                             "with --optimizer sr use --sr-damping (or --optimizer adam)")
        blocks = ("psi",) if cfg["temperature"] == 0 else ("p", "psi")
        if cfg["flow"] == "identity":
            blocks = tuple(b for b in blocks if b != "psi") or ("p",)
        return SR(MinSR(), damping=cfg["sr_damping"], learning_rate=lr,
                  max_norm=cfg["sr_max_norm"] or None, blocks=blocks)
    chain = [optax.clip_by_global_norm(cfg["clip_grad"])] if cfg["clip_grad"] > 0 else []
    if cfg.get("weight_decay", 0.0) > 0:
        chain.append(optax.add_decayed_weights(cfg["weight_decay"]))
    return optax.chain(*chain, optax.adam(lr))


def quantum_laplacian(cfg: dict):
    """The Laplacian method of ``--laplacian``."""
    from ._laplacian import ForwardLaplacian, HutchinsonLaplacian, LoopLaplacian

    return {"forward": ForwardLaplacian(), "loop": LoopLaplacian(),
            "hutchinson": HutchinsonLaplacian()}[cfg["laplacian"]]


def _flow(cfg: dict, n: int, dim: int, *, key, dtype):
    from ..bijections import Identity, backflow_flow, continuous_flow, ferminet_flow
    from ..nn import BackflowField

    if cfg["flow"] == "identity":
        return Identity((n, dim))
    if cfg["flow"] == "ferminet":
        return ferminet_flow(n, dim, layers=cfg["flow_layers"], width=cfg["flow_width"],
                             depth=cfg["flow_depth"], key=key, dtype=dtype)
    if cfg["flow"] == "backflow":
        return backflow_flow(n, dim, layers=cfg["flow_layers"], width=cfg["flow_width"],
                             depth=cfg["flow_depth"], key=key, dtype=dtype)
    field = BackflowField(n, dim, width=cfg["flow_width"], depth=cfg["flow_depth"], key=key,
                          dtype=dtype)
    # the local energy differentiates ln|Psi| forward-over-reverse: "direct" supports it
    # (the recursive checkpoint adjoint is reverse-only)
    return continuous_flow(field, solver="rk4", steps=cfg["flow_layers"] * 4,
                           adjoint="direct")


def _occupation_model(cfg: dict, levels, n_up: int, n_down: int, beta, *, key, dtype):
    """``p(K)``: an autoregressive set model per spin, pretrained to the free-fermion
    Boltzmann distribution at the run's temperature (``--pretrain-steps``), and the KL
    divergence (nats) left by the pretraining of each pretrained spin."""
    from ..distributions import AutoregressiveSet, pretrain_sets
    from ..nn import SetMADE, SetTransformer
    from ._density_matrix import SpinOccupations

    m = int(levels.shape[0])
    parts, kls = [], []
    for count, k in zip((n_up, n_down), jax.random.split(key, 2), strict=True):
        if count == 0:
            parts.append(None)
            continue
        k_net, k_pre = jax.random.split(k)
        if cfg["occupation_net"] == "transformer":
            net = SetTransformer(count, m, d=cfg["occupation_width"], heads=4,
                                 depth=cfg["occupation_depth"], key=k_net, dtype=dtype)
        else:
            net = SetMADE(count, m, width=cfg["occupation_width"],
                          depth=cfg["occupation_depth"], key=k_net, dtype=dtype)
        model = AutoregressiveSet(net)
        if cfg["pretrain_steps"] > 0 and count < m:
            model, kl = pretrain_sets(model, levels, beta, key=k_pre,
                                      steps=cfg["pretrain_steps"], batch=cfg["batch"])
            kls.append(float(kl))
        parts.append(model)
    return SpinOccupations(*parts), kls


def build_quantum_dot(cfg: dict, mesh) -> QuantumRun:
    """The quantum-dot run the options describe (checked before any work)."""
    from ..exact import QUANTUM_DOT_REFERENCE, free_fermion_log_z
    from ._basis import OscillatorBasis2D
    from ._density_matrix import FixedOccupation
    from ._hamiltonian import QuantumDot
    from ._jastrow import Jastrow
    from ._wavefunction import FlowSlater

    dtype = jnp.dtype(cfg["dtype"])
    n_up, n_down, omega = cfg["n_up"], cfg["n_down"], cfg["omega"]
    if n_up + n_down < 1:
        raise ValueError("--n-up and --n-down: need at least one electron")
    temperature = cfg["temperature"]
    if cfg["beta"] is not None:
        if temperature is not None and not math.isclose(temperature, 1.0 / cfg["beta"]):
            raise ValueError(f"give --temperature or --beta, not both (got --temperature "
                             f"{temperature} and --beta {cfg['beta']})")
        temperature = 1.0 / cfg["beta"]
    temperature = 0.0 if temperature is None else float(temperature)
    cfg["temperature"], cfg["beta"] = temperature, (None if temperature == 0
                                                    else 1.0 / temperature)
    n_max = max(n_up, n_down)
    if cfg["emax"] is None:   # the closed shells holding n_max, plus two more
        shells = next(s for s in range(1, 100) if s * (s + 1) // 2 >= n_max) + 2
        cfg["emax"] = float(shells * omega)
    basis = OscillatorBasis2D(omega, emax=cfg["emax"], dtype=dtype)
    m = basis.n_orbitals
    if n_max > m:
        raise ValueError(f"{n_max} electrons of one spin do not fit in the {m} orbitals "
                         f"under --emax {cfg['emax']} (energies up to {cfg['emax']}); raise "
                         "--emax")
    system = QuantumDot(n_up, n_down, omega, coulomb=cfg["coulomb"])
    k_flow, k_occ = jax.random.split(model_key(cfg["seed"]))
    flow = _flow(cfg, n_up + n_down, 2, key=k_flow, dtype=dtype)
    wavefunction = FlowSlater(basis, flow, n_up, n_down)
    if cfg["jastrow"] != "none":
        if temperature > 0:
            raise ValueError(f"--jastrow {cfg['jastrow']} is for the ground state "
                             f"(--temperature 0), got --temperature {temperature:g}: a "
                             "Jastrow factor makes the states Psi_K non-orthonormal, so "
                             "rho = sum_K p(K)|Psi_K><Psi_K| would not have entropy "
                             "-sum p ln p; use --jastrow none at T > 0")
        wavefunction = Jastrow(wavefunction, coulomb=cfg["coulomb"],
                               width=cfg["jastrow_width"],
                               key=jax.random.fold_in(k_flow, 1), dtype=dtype)
    optimizer = quantum_optimizer(cfg)   # its checks come before the pretraining
    levels = basis.energies
    pretrain_kl = []
    if temperature == 0:
        occupations = FixedOccupation(jnp.arange(n_up), jnp.arange(n_down))
    else:
        occupations, pretrain_kl = _occupation_model(cfg, levels, n_up, n_down,
                                                     1.0 / temperature, key=k_occ, dtype=dtype)
    model = DensityMatrix(occupations, wavefunction)
    trainer = QuantumTrainer(system, optimizer, quantum_laplacian(cfg),
                             temperature=temperature, batch=cfg["batch"],
                             sweeps=resolve_sweeps(cfg, temperature),
                             eval_sweeps=resolve_eval_sweeps(cfg, temperature),
                             burn_in=cfg["burn_in"], clip=cfg["clip_eloc"] or None, mesh=mesh,
                             chunk_size=cfg["chunk_size"] or None)
    exact, reference = None, {}
    if cfg["coulomb"] == 0:   # free fermions: exact with the same cutoff
        if temperature == 0:
            exact = float(jnp.sum(levels[:n_up]) + jnp.sum(levels[:n_down]))
        else:
            beta = 1.0 / temperature
            exact = float(-free_fermion_log_z(levels, (n_up, n_down), beta) / beta)
    elif temperature == 0:
        ref = QUANTUM_DOT_REFERENCE.get((n_up, n_down, float(omega)))
        if ref is not None and cfg["coulomb"] == 1.0:
            exact = float(ref[0])
            reference = {"reference_energy": float(ref[0]),
                         "reference_energy_error": float(ref[1]),
                         "reference_source": ref[2]}
    return QuantumRun("quantum-dot", cfg, system, model, trainer, exact, reference,
                      pretrain_kl)
