"""The run driver behind ``thermax run``: train, checkpoint, resume, evaluate, record.

A :class:`Run` bundles what a run needs (system, model, trainer, options). :func:`execute`
trains it into a directory following the run contract (``shared/docs/RUNS.md``):
``config.json``, ``history.csv``, ``checkpoint/``, ``results.json`` and plots.
"""

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..bijections import exact_log_det
from ..distributions import AbstractDistribution
from ..systems import AbstractSystem
from ._checkpoint import load_checkpoint, read_checkpoint_meta
from ._engine import Trainer, TrainState
from ._evaluate import evaluate
from ._loop import (
    LoopSettings,
    is_writer,
    local_copy,
    train_loop,
    wall_clock,
)
from ._records import (
    History,
    plot_field_samples,
    plot_history,
    plot_latents_by_scale,
    plot_spin_samples,
    summary_table,
    write_json,
)


@dataclasses.dataclass(frozen=True)
class Run:
    """A configured run. ``config`` holds every option (defaults included) as plain values."""

    system_name: str
    config: dict[str, Any]
    system: AbstractSystem
    model: AbstractDistribution
    trainer: Trainer
    exact_free_energy: float | None
    extra_results: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: ``report(results, model=trained_model) -> dict`` adds system-specific keys to
    #: results.json
    report: Callable[[dict], dict] | None = None
    #: ``pictures(out_dir, trained_model)`` draws system-specific pictures (particle
    #: densities...) besides the standard ones
    pictures: Callable[[Path, AbstractDistribution], None] | None = None


def _seed_keys(seed: int):
    root = jax.random.key(seed)
    k_model, k_train, k_eval = jax.random.split(root, 3)
    return k_model, k_train, k_eval


@dataclasses.dataclass
class RunStart:
    """What a run driver holds once :func:`begin_run` has set a run up: the state (fresh,
    or resumed from the newest checkpoint and placed on the trainer's mesh), the history,
    the wall clock (time before a resume included), the loop settings, the checkpoint
    directory, whether this process writes files, and the evaluation key."""

    out: Path
    ckpt_dir: Path
    writer: bool
    settings: LoopSettings
    state: Any
    history: History
    wall: Callable[[], float]
    k_eval: Any


def begin_run(run, out_dir: str | Path, *, resume: bool,
              fields: list[str] | None = None) -> RunStart:
    """Set up a run in ``out_dir``, for any run with ``config``, ``system_name``,
    ``trainer`` (``init``/``place``) and ``model``: write ``config.json`` (process 0),
    initialise the state from the seed, or with ``resume`` load the newest checkpoint
    onto the trainer's mesh and trim ``history.csv`` (columns ``fields``) to it."""
    cfg = run.config
    out = Path(out_dir)
    ckpt_dir = out / "checkpoint"
    writer = is_writer()
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(
            json.dumps({"system": run.system_name, "config": cfg}, indent=2) + "\n")
    _, k_train, k_eval = _seed_keys(cfg["seed"])
    state = run.trainer.init(run.model, key=k_train)
    wall_before, resume_step = 0.0, None
    if resume and read_checkpoint_meta(ckpt_dir) is not None:
        state, meta = load_checkpoint(ckpt_dir, state)
        state = run.trainer.place(state)
        wall_before, resume_step = float(meta.get("wall_time_s", 0.0)), int(state.step)
    history = History(out / "history.csv", resume_step=resume_step, fields=fields,
                      write=writer)
    return RunStart(out, ckpt_dir, writer, LoopSettings.from_config(cfg), state, history,
                    wall_clock(wall_before), k_eval)


def model_key(seed: int):
    """The key a run initialises its model with."""
    return _seed_keys(seed)[0]


def execute(run: Run, out_dir: str | Path, *, resume: bool = False,
            stop_after_step: int | None = None, progress: bool = True,
            loggers: Sequence[Callable[[dict], None]] = ()) -> dict[str, Any]:
    """Train ``run`` in ``out_dir`` and return the final results (also in results.json).

    With ``resume=True`` training continues from the newest checkpoint in
    ``out_dir/checkpoint`` and the result is the same as an uninterrupted run.
    ``stop_after_step`` stops (raising :class:`Interrupted`) once that step is done and
    checkpointed, as a crash right after a checkpoint would. ``loggers`` are called with
    every logged history row (besides ``history.csv``). The options ``on_nonfinite`` and
    ``keep_checkpoints`` of the run's config set the non-finite policy and how many
    checkpoints are kept (:class:`~thermax.train.LoopSettings`).
    """
    cfg = run.config
    trainer = run.trainer
    start = begin_run(run, out_dir, resume=resume)
    state, history, wall, out = start.state, start.history, start.wall, start.out
    n = run.system.n

    def postfix(row: dict) -> str:
        return (f"F/n={row['free_energy'] / n:.5f}±{row['free_energy_stderr'] / n:.5f}"
                f" beta={row['beta']:.4f}")

    state, faults = train_loop(trainer, state, settings=start.settings,
                               ckpt_dir=start.ckpt_dir, history=history, name=run.system_name,
                               wall=wall, postfix=postfix, progress=progress,
                               stop_after_step=stop_after_step, loggers=loggers)

    beta = float(cfg["beta"]) if "beta" in cfg else float(trainer.beta)
    # a Hutchinson divergence trains with a noisy ln p; evaluate with the exact one
    figures = evaluate(exact_log_det(state.model), run.system, beta, key=start.k_eval,
                       n_samples=int(cfg["eval_batch"]), chunk=trainer.batch, mesh=trainer.mesh,
                       chunk_size=trainer.chunk_size)
    if int(cfg.get("mcmc_steps", 0)) > 0:
        # the acceptance ratio needs the exact ln p (a Hutchinson ln p would bias it)
        figures.update(_neural_mcmc(exact_log_det(state.model), run.system, beta, cfg,
                                    key=start.k_eval))
    exact = run.exact_free_energy
    results = {
        "system": run.system_name,
        "config": cfg,
        "n": n,
        "beta": beta,
        **figures,
        "exact_free_energy": exact,
        "relative_error": None if exact is None
        else (figures["free_energy"] - exact) / abs(exact),
        "steps": int(state.step),
        "wall_time_s": wall(),
        "devices": trainer.mesh.size,
        "processes": jax.process_count(),
        "nonfinite_steps": faults,
        "version": _version(),
        **run.extra_results,
    }
    if run.report is not None:
        results.update(run.report(results, model=state.model))
    local = local_copy(state)  # a collective: every process takes part
    if start.writer:
        write_json(out / "results.json", results)
        _plots(out, run, local, history, exact, results)
    return results


def _neural_mcmc(model, system, beta: float, cfg: dict, *, key) -> dict[str, Any]:
    """Neural MCMC with the trained model as proposal: exact-Boltzmann energy, acceptance."""
    from ..mcmc import neural_mcmc

    res = neural_mcmc(model, system, beta, key=jax.random.fold_in(key, 1),
                      n_chains=int(cfg["mcmc_chains"]), n_steps=int(cfg["mcmc_steps"]))
    return {"mcmc_acceptance": float(res.acceptance_rate), "mcmc_energy": float(res.energy_mean),
            "mcmc_energy_stderr": float(res.energy_stderr)}


def _plots(out: Path, run: Run, state: TrainState, history: History, exact,
           results: dict) -> None:
    plot_history(out / "free_energy.png", history.read(), exact, run.system.n,
                 final=results["free_energy"], final_err=results["free_energy_stderr"])
    if run.model.kind == "spins":
        keys = jax.random.split(jax.random.key(0), 8)
        samples = state.model.sample_and_log_prob_batch(keys=keys)[0]
        plot_spin_samples(out / "samples.png", np.asarray(samples),
                          f"{run.system_name}: samples at beta={float(run.trainer.beta):g}")
    elif run.model.kind == "field" and len(run.system.shape) == 2:
        keys = jax.random.split(jax.random.key(0), 8)
        samples = state.model.sample_and_log_prob_batch(keys=keys)[0]
        plot_field_samples(out / "samples.png", np.asarray(samples),
                           f"{run.system_name}: flow samples")
        views = _coarse_views(state.model, key=jax.random.key(1))
        if views is not None:
            plot_latents_by_scale(out / "latents.png", views)
    if run.pictures is not None:
        run.pictures(out, state.model)


def _coarse_views(model, *, key):
    """For a NeuralRG flow: one sample regenerated from its latent variables of scale >= s
    only (finer latents set to 0), for s = 0 (the full sample) up to the coarsest scale.

    Shows what each scale of the hierarchy controls. ``None`` for other models.
    """
    from ..bijections import Chain, NeuralRG
    from ..distributions import Transformed, Z2Symmetrized

    while isinstance(model, Z2Symmetrized):
        model = model.base
    if not isinstance(model, Transformed):
        return None
    bij = model.bijection
    rg = bij.bijections[0] if isinstance(bij, Chain) else bij
    if not isinstance(rg, NeuralRG):
        return None
    z = model.base.sample(key=key)
    scale = rg.scale_of_sites()
    return [(s, np.asarray(bij.transform(jnp.where(scale >= s, z, 0.0))))
            for s in range(rg.depth + 1)]


def _version() -> str:
    from .. import __version__

    return __version__


def format_summary(results: dict) -> str:
    """The plain-text summary table printed at the end of a classical run."""
    return summary_table(results)

