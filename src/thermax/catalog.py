"""The systems ``thermax run`` knows, their options, and how a run is built from them.

Each entry of :data:`SYSTEMS` lists its options (name, type, default, help, check) and a
builder that turns validated options into a :class:`thermax.train.Run`. The command line
and Python share it::

    from thermax.catalog import build_run
    from thermax.train import execute
    run = build_run("ising", {"L": 8, "beta": 0.4, "steps": 200})
    results = execute(run, "runs/ising-8")

Every check runs before any work, so bad input gets one clear error naming the option,
what came and what is allowed.
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .distributions import AbstractDistribution, AutoregressiveSpins, Z2Symmetrized
from .nn import MADE, PixelCNN
from .objectives import AbstractFreeEnergy, ScoreFunctionFreeEnergy
from .systems import AbstractSystem, Ising2D, SherringtonKirkpatrick
from .train import Run, Trainer, make_mesh, model_key
from .train._engine import fit_chunk_size


class OptionError(ValueError):
    """A bad option value: the message names the option, the value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One command-line option: ``--name`` (underscores become dashes on the command line)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error text or None
    nargs: str | None = None

    @property
    def flag(self) -> str:
        """The command-line spelling, ``--name-with-dashes``."""
        return "--" + self.name.replace("_", "-")


def _positive(x) -> str | None:
    return None if x > 0 else "must be > 0"


def _non_negative(x) -> str | None:
    return None if x >= 0 else "must be >= 0"


def _at_least(k):
    return lambda x: None if x >= k else f"must be >= {k}"


def _logger_check(name) -> str | None:
    from .train._loggers import check_logger

    return check_logger(name)


def _unit_interval(x) -> str | None:
    return None if 0 <= x < 1 else "must be in [0, 1)"


COMMON = (
    Option("steps", int, 1000, "training steps", check=_non_negative),
    Option("batch", int, 1000, "samples per training step", check=_positive),
    Option("eval_batch", int, 10000, "fresh samples for the final evaluation", check=_positive),
    Option("lr", float, 1e-3, "Adam learning rate", check=_positive),
    Option("lr_schedule", str, "constant",
           "learning-rate schedule: constant, or cosine decay over --steps",
           choices=("constant", "cosine")),
    Option("lr_final", float, 0.1, "cosine schedule: final learning rate as a fraction of lr",
           check=lambda x: None if 0 <= x <= 1 else "must be in [0, 1]"),
    Option("clip_grad", float, 0.0, "clip the gradient's global norm (0: off)",
           check=_non_negative),
    Option("weight_decay", float, 0.0, "Adam: L2 penalty, weight_decay x params added to "
           "the gradient before Adam (PyTorch's Adam weight_decay, not AdamW) (0: off)",
           check=_non_negative),
    Option("seed", int, 0, "random seed (model, training and evaluation)"),
    Option("dtype", str, "float32", "floating-point precision", choices=("float32", "float64")),
    Option("log_every", int, 10, "write a history row every this many steps", check=_positive),
    Option("checkpoint_every", int, 100, "checkpoint every this many steps (0: only at end)",
           check=_non_negative),
    Option("logger", str, "csv", "training log besides history.csv (always written): csv "
           "(nothing more) or tensorboard (scalars in DIR/tensorboard; needs tensorboardX)",
           choices=("csv", "tensorboard"), check=_logger_check),
    Option("keep_checkpoints", int, 2, "how many of the newest checkpoints to keep",
           check=_at_least(1)),
    Option("on_nonfinite", str, "skip", "what to do when the loss, a gradient or a walker "
           "is NaN or infinite (the step is never applied): skip it and halve the learning "
           "rate, restore the last checkpoint and halve the learning rate, or stop",
           choices=("skip", "restore", "stop")),
    Option("chunk_size", int, 0, "process the batch this many samples at a time: sampling, "
           "energies (quantum: local energies), gradients and SR's score rows, to bound "
           "memory (same results; must divide --batch; 0: all at once)",
           check=_non_negative),
    Option("memory_cap", float, 0.0, "classical systems: the most memory (GiB per device) a "
           "training step may use; the largest --chunk-size that fits is chosen (0: no cap)",
           check=_non_negative),
)

CLASSICAL = (
    Option("beta", float, 0.44, "target inverse temperature", check=_positive),
    Option("beta_anneal", float, 0.998,
           "annealing rate A in beta_t = beta (1 - A^(t+1)); 0 turns annealing off",
           check=_unit_interval),
)

SPIN_MODEL = (
    Option("net", str, "pixelcnn", "autoregressive network", choices=("made", "pixelcnn")),
    Option("depth", int, 3, "masked layers", check=_at_least(1)),
    Option("width", int, 16, "hidden channels per site", check=_at_least(1)),
    Option("half_kernel", int, 3, "PixelCNN half kernel size k (kernel 2k+1)",
           check=_at_least(1)),
    Option("dilation", int, 1, "PixelCNN dilation of the middle convolutions",
           check=_at_least(1)),
    Option("residual", int, 0, "residual blocks (1) or plain (0)", choices=(0, 1)),
    Option("z2", int, 1, "Z2 symmetrisation (p(s)+p(-s))/2 (1) or none (0)", choices=(0, 1)),
)

FLOW_MODEL = (
    Option("flow", str, "neuralrg", "normalizing flow: Real NVP (checkerboard couplings, "
           "conv conditioners), the hierarchical neural RG, or the continuous Monge-Ampere "
           "flow (one-hidden-layer potential; see the ODE options)",
           choices=("realnvp", "neuralrg", "monge-ampere")),
    Option("coupling_layers", int, 8, "affine coupling layers (realnvp: in total; neuralrg: per "
           "2x2 block)", check=_at_least(1)),
    Option("hidden_width", int, 10, "conditioner width (neuralrg: MLP units; realnvp: conv "
           "channels)", check=_at_least(1)),
    Option("hidden_depth", int, 3, "conditioner hidden layers", check=_at_least(1)),
    Option("rg_depth", int, 0, "neuralrg: number of scales (0: all log2 L)",
           check=_non_negative),
    Option("spectral", int, 1, "end the flow with a learnable translation-invariant linear "
           "layer (SpectralScale: fits the two-point function) (1) or not (0)", choices=(0, 1)),
    Option("z2", int, 1, "Z2 symmetry: (q(x)+q(-x))/2, or for monge-ampere an even potential "
           "(1), or none (0)", choices=(0, 1)),
    Option("potential_width", int, 512, "monge-ampere: hidden units of the one-hidden-layer "
           "potential", check=_at_least(1)),
    Option("potential", str, "dense", "monge-ampere: the one-hidden-layer potential, dense "
           "(the paper's), translation-invariant (averaged over lattice translations, by FFT) "
           "or conv (local translation-invariant features: --potential-width channels of "
           "--potential-kernel sized kernels, summed over the lattice)",
           choices=("dense", "translation", "conv")),
    Option("potential_kernel", int, 5, "monge-ampere --potential conv: the odd kernel size, "
           "at most L", check=_at_least(1)),
    Option("potential_init", str, "identity", "monge-ampere: initial potential, identity "
           "(zero output weights: the flow starts as the identity) or uniform (every layer "
           "uniform in +-1/sqrt(fan-in), PyTorch's default as in the original code: a small "
           "random map, which trains faster)", choices=("identity", "uniform")),
    Option("symmetrize", str, "none", "monge-ampere: conjugate the field at every evaluation "
           "by a random lattice translation and transpose, as the original code's -symmetrize "
           "(random), or not (none)", choices=("none", "random")),
    Option("estimator", str, "stl", "gradient estimator: pathwise (reparametrisation) or "
           "stl (sticking the landing)", choices=("pathwise", "stl")),
)

def _solver_names() -> tuple[str, ...]:
    from .bijections import SOLVERS

    return tuple(SOLVERS)


def _adjoint_names() -> tuple[str, ...]:
    """The adjoints training can use: reverse-mode ones (``forward`` mode is for
    ``jax.jacfwd`` through a solve, not for gradients of a loss)."""
    from .bijections import ADJOINTS

    return tuple(a for a in ADJOINTS if a != "forward")


ODE = (
    Option("solver", str, "tsit5", "continuous flows: the ODE solver (Diffrax)",
           choices=_solver_names()),
    Option("steps_ode", int, 20, "continuous flows: ODE steps over the flow time (constant "
           "steps; with --controller pid the first step is time/steps)", check=_at_least(1)),
    Option("ode_time", float, 1.0, "continuous flows: integration time of the flow",
           check=_positive),
    Option("controller", str, "constant", "continuous flows: step-size controller, constant "
           "steps or adaptive PID (needs --rtol and --atol)", choices=("constant", "pid")),
    Option("rtol", float, None, "continuous flows, --controller pid: relative tolerance",
           check=_positive),
    Option("atol", float, None, "continuous flows, --controller pid: absolute tolerance",
           check=_positive),
    Option("adjoint", str, "recursive", "continuous flows: how gradients pass the solver: "
           "recursive (discretise-then-optimise, checkpointed), backsolve (continuous "
           "adjoint, O(1) memory) or direct", choices=_adjoint_names()),
    Option("divergence", str, "exact", "continuous flows: divergence for d ln p/dt, exact or "
           "the Hutchinson estimator (unbiased, one JVP; evaluation stays exact)",
           choices=("exact", "hutchinson")),
    Option("probe", str, "gaussian", "continuous flows, --divergence hutchinson: probe "
           "vectors", choices=("gaussian", "rademacher")),
)


MCMC = (
    Option("mcmc_steps", int, 0, "after training, neural MCMC steps per chain with the model "
           "as proposal (0: off)", check=_non_negative),
    Option("mcmc_chains", int, 256, "neural MCMC: independent chains", check=_positive),
)


def _score_function(cfg: dict) -> AbstractFreeEnergy:
    """The default estimator: score function (REINFORCE) with a leave-one-out baseline."""
    return ScoreFunctionFreeEnergy()


def _beta_option(cfg: dict) -> float:
    """The default inverse temperature: the ``--beta`` option."""
    return cfg["beta"]


@dataclasses.dataclass(frozen=True)
class SystemEntry:
    """How ``thermax run NAME`` builds a run.

    ``groups`` are the option groups after the system's own ``options``; ``build_model``,
    ``objective`` and ``report`` pick the model, the gradient estimator and any extra
    result keys (``report(system, cfg, results) -> dict``). ``beta`` gives the trainer's
    inverse temperature (default: the ``--beta`` option).
    """

    name: str
    summary: str
    options: tuple[Option, ...]
    build_system: Callable[[dict], AbstractSystem] | None
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    groups: tuple[tuple[Option, ...], ...] = (CLASSICAL, SPIN_MODEL, MCMC)
    build_model: Callable[..., AbstractDistribution] | None = None
    objective: Callable[[dict], AbstractFreeEnergy] = _score_function
    beta: Callable[[dict], float] = _beta_option
    report: Callable[..., dict] | None = None
    #: ``pictures(system, cfg, out_dir, model)`` draws system-specific pictures
    pictures: Callable[..., None] | None = None
    #: ``build_run(cfg, mesh)`` builds the whole run itself (quantum systems), instead
    #: of the classical system/model/trainer assembly
    build_run: Callable[..., Any] | None = None

    def all_options(self) -> tuple[Option, ...]:
        """The system's options, then its groups', then the common ones, with the
        system's defaults applied."""
        opts = self.options + sum(self.groups, ()) + COMMON
        return tuple(dataclasses.replace(o, default=self.defaults.get(o.name, o.default))
                     for o in opts)


def _ising(cfg: dict) -> AbstractSystem:
    return Ising2D(cfg["L"], coupling=cfg["J"], field=cfg["h"])


def _sk(cfg: dict) -> AbstractSystem:
    if cfg["couplings"] is not None:
        system = SherringtonKirkpatrick.from_file(cfg["couplings"])
        if cfg["n"] is not None and cfg["n"] != system.n:
            raise OptionError(f"--n {cfg['n']} does not match the couplings file's "
                              f"n = {system.n}")
        return system
    return SherringtonKirkpatrick.from_seed(cfg["n"] or 20, cfg["coupling_seed"])


def _finite(x) -> str | None:
    return None if math.isfinite(x) else "must be finite"


def _relaxed_ising(cfg: dict) -> AbstractSystem:
    from .systems import RelaxedIsing

    return RelaxedIsing(cfg["L"], cfg["beta"], coupling=cfg["J"])


def _phi4(cfg: dict) -> AbstractSystem:
    from .systems import Phi4

    return Phi4(cfg["L"], kappa=cfg["kappa"], lam=cfg["lam"])


def _is_power_of_two(n: int) -> bool:
    return n >= 2 and n & (n - 1) == 0


def build_flow(system: AbstractSystem, cfg: dict, *, key) -> AbstractDistribution:
    """The normalizing flow the options describe (:func:`thermax.distributions.lattice_flow`),
    after checking the options against the lattice with errors that name the flags."""
    from .distributions import lattice_flow

    L = system.shape[0]
    depth = cfg["rg_depth"] or None
    if cfg["flow"] == "monge-ampere":
        return _monge_ampere_lattice(system, cfg, key=key)
    if cfg["flow"] == "neuralrg":
        if not _is_power_of_two(L):
            raise OptionError(f"--flow neuralrg needs --L a power of two >= 2 (its 2x2 "
                              f"hierarchy halves the lattice at each scale), got --L {L}; "
                              "use --flow realnvp")
        if depth is not None and depth > int(math.log2(L)):
            raise OptionError(f"--rg-depth {depth} is more than the log2(L) = "
                              f"{int(math.log2(L))} scales of an {L}x{L} lattice")
    else:
        if L % 2:
            raise OptionError(f"--flow realnvp needs an even --L (checkerboard masks), got "
                              f"--L {L}")
        if cfg["coupling_layers"] % 2:
            raise OptionError(f"--flow realnvp needs an even --coupling-layers (the two "
                              f"checkerboard parities alternate), got {cfg['coupling_layers']}")
    return lattice_flow(system.shape, flow=cfg["flow"], n_couplings=cfg["coupling_layers"],
                        hidden_width=cfg["hidden_width"], hidden_depth=cfg["hidden_depth"],
                        rg_depth=depth, spectral=bool(cfg["spectral"]), z2=bool(cfg["z2"]),
                        key=key, dtype=jnp.dtype(cfg["dtype"]))


def ode_flow(field, cfg: dict, symmetry=None):
    """The :class:`thermax.bijections.ContinuousFlow` of ``field`` the ODE options describe
    (with the random ``symmetry`` conjugating the field, if given)."""
    from .bijections import continuous_flow

    if cfg["controller"] == "pid" and (cfg["rtol"] is None or cfg["atol"] is None):
        raise OptionError("--controller pid adapts the step size to tolerances; give both "
                          f"--rtol and --atol (got --rtol {cfg['rtol']}, --atol {cfg['atol']})")
    return continuous_flow(field, solver=cfg["solver"], steps=cfg["steps_ode"],
                           controller=cfg["controller"], rtol=cfg["rtol"], atol=cfg["atol"],
                           adjoint=cfg["adjoint"], divergence=cfg["divergence"],
                           probe=cfg["probe"], t1=cfg["ode_time"], symmetry=symmetry)


def _monge_ampere_lattice(system: AbstractSystem, cfg: dict, *, key) -> AbstractDistribution:
    """Zhang, E & Wang's Monge-Ampere flow: v = grad phi with a one-hidden-layer potential
    (even in x with --z2 1, so the flow commutes with x -> -x and no symmetrisation pass is
    needed; with --potential translation averaged over the lattice translations, so the flow
    is also translation-equivariant; with --potential conv local translation-invariant
    features), integrated from a standard normal."""
    from .bijections import RandomLatticeSymmetry
    from .distributions import StandardNormal, Transformed
    from .nn import (
        ConvPotential,
        MongeAmpereField,
        OneHiddenLayerPotential,
        TranslationInvariantPotential,
    )

    dtype = jnp.dtype(cfg["dtype"])
    extra = {}
    if cfg["potential"] == "conv":
        k = cfg["potential_kernel"]
        if k % 2 == 0 or k > min(system.shape):
            raise OptionError(f"--potential-kernel must be odd and at most --L "
                              f"{min(system.shape)}, got {k}")
        extra = {"kernel_size": k}
    make = {"dense": OneHiddenLayerPotential,
            "translation": TranslationInvariantPotential,
            "conv": ConvPotential}[cfg["potential"]]
    potential = make(system.shape, hidden=cfg["potential_width"], z2=bool(cfg["z2"]),
                     key=key, dtype=dtype, init=cfg["potential_init"], **extra)
    symmetry = (RandomLatticeSymmetry(system.shape) if cfg["symmetrize"] == "random"
                else None)
    flow = ode_flow(MongeAmpereField(potential), cfg, symmetry=symmetry)
    return Transformed(StandardNormal(system.shape, kind="field", dtype=dtype), flow)


def _refined_ode(model, factor: int = 2):
    """``model`` with every constant-step :class:`ContinuousFlow` taking ``factor`` times
    more steps (same field), or ``None`` when it has no such flow."""
    from .bijections import ContinuousFlow

    found = []

    def refine(node):
        if isinstance(node, ContinuousFlow) and isinstance(
                node.stepsize_controller, diffrax.ConstantStepSize):
            found.append(node)
            return ContinuousFlow(node.field, solver=node.solver,
                                  stepsize_controller=node.stepsize_controller,
                                  dt0=node.dt0 / factor, adjoint=node.adjoint,
                                  divergence=node.divergence, t0=node.t0, t1=node.t1,
                                  max_steps=node.max_steps * factor,
                                  symmetry=node.symmetry,
                                  symmetry_steps=node.symmetry_steps * factor)
        return node

    refined = jax.tree.map(refine, model, is_leaf=lambda n: isinstance(n, ContinuousFlow))
    return refined if found else None


def ode_discretisation_check(model, system: AbstractSystem, beta: float, cfg: dict
                             ) -> dict[str, Any]:
    """How much the ODE discretisation moves F: the same samples' keys through the flow
    with twice the steps. The integrated divergence is the log-det of the continuous-time
    map, not of the discretised one, so F is a bound only up to this solver error."""
    from .bijections import exact_log_det
    from .objectives import mean_and_stderr

    exact = exact_log_det(model)
    refined = _refined_ode(exact)
    if refined is None:
        return {"ode_refined_free_energy": None, "ode_refinement_shift": None,
                "ode_refinement_shift_stderr": None}
    keys = jax.random.split(jax.random.key(cfg["seed"] + 3), min(cfg["eval_batch"], 2048))

    @eqx.filter_jit
    def per_sample_f(m):
        xs, lps = m.sample_and_log_prob_batch(keys=keys)
        return jax.vmap(system.energy)(xs) + lps / beta

    coarse, fine = per_sample_f(exact), per_sample_f(refined)
    f_fine, _ = mean_and_stderr(fine)
    shift, shift_err = mean_and_stderr(fine - coarse)
    return {"ode_refined_free_energy": float(f_fine), "ode_refinement_shift": float(shift),
            "ode_refinement_shift_stderr": float(shift_err)}


def _pathwise(cfg: dict) -> AbstractFreeEnergy:
    from .objectives import PathwiseFreeEnergy

    return PathwiseFreeEnergy(stick_the_landing=cfg["estimator"] == "stl")


def _relaxed_report(system, cfg: dict, results: dict, model=None) -> dict:
    """The Ising free energy the relaxed one implies: F_Ising = F_relaxed + C / beta."""
    beta = cfg["beta"]
    const = system.relaxation_constant()
    f = results["free_energy"]
    exact = system.ising_free_energy(results["exact_free_energy"]) \
        if results["exact_free_energy"] is not None else None
    ising = None if f is None else system.ising_free_energy(f)
    return {
        "relaxation_constant": const,
        "ising_free_energy": ising,
        "ising_free_energy_stderr": results["free_energy_stderr"],
        "exact_ising_free_energy": exact,
        "ising_relative_error": None if ising is None or exact is None
        else (ising - exact) / abs(exact),
        "relaxed_log_z_per_site": None if results["exact_free_energy"] is None
        else -beta * results["exact_free_energy"] / system.n,
        **(ode_discretisation_check(model, system, beta, cfg)
           if model is not None and cfg["flow"] == "monge-ampere" else {}),
    }


PARTICLE_FLOW = (
    Option("flow", str, "cnf", "continuous flow of the particle coordinates: cnf (equivariant "
           "backflow field v_i = sum_j eta(|x_i - x_j|^2)(x_i - x_j) + mu(|x_i|^2) x_i) or "
           "monge-ampere (v = grad phi, phi a symmetric sum of pair and one-body terms)",
           choices=("cnf", "monge-ampere")),
    Option("hidden_width", int, 32, "hidden units of the field's networks", check=_at_least(1)),
    Option("hidden_depth", int, 2, "hidden layers of the field's networks", check=_at_least(1)),
    Option("estimator", str, "pathwise", "gradient estimator: pathwise (reparametrisation) or "
           "stl (sticking the landing; one extra inverse solve)", choices=("pathwise", "stl")),
)


def _coulomb(cfg: dict) -> AbstractSystem:
    from .systems import CoulombTrap

    return CoulombTrap(cfg["n"], cfg["dim"], trap=cfg["trap"], coupling=cfg["coupling"])


@functools.lru_cache(maxsize=8)
def _coulomb_ground_state(n: int, dim: int, trap: float, coupling: float):
    from .exact import coulomb_ground_state

    return coulomb_ground_state(n, dim, trap=trap, coupling=coupling)


def _rotational_zero_modes(n: int, dim: int) -> int:
    """Flat directions of a classical cluster's energy at its minimum: rigid rotations."""
    if n == 1 or dim == 1:
        return 0
    if dim == 2:
        return 1
    return 2 if n == 2 else 3  # a linear molecule has two rotations in 3D


def build_particle_flow(system: AbstractSystem, cfg: dict, *, key) -> AbstractDistribution:
    """A permutation- and rotation-equivariant continuous flow for identical particles:
    ``x = CNF(s z)``, ``z ~ N(0, I)``, with a learnable overall scale ``s`` started at the
    width of the cloud (ground-state radius and thermal spread)."""
    from .bijections import Chain, Scale
    from .distributions import StandardNormal, Transformed
    from .nn import BackflowField, MongeAmpereField, ParticlePotential

    n, dim = system.shape
    dtype = jnp.dtype(cfg["dtype"])
    width, depth = cfg["hidden_width"], cfg["hidden_depth"]
    if cfg["flow"] == "cnf":
        field = BackflowField(n, dim, width=width, depth=depth, key=key, dtype=dtype)
    else:
        field = MongeAmpereField(ParticlePotential(n, dim, width=width, depth=depth, key=key,
                                                   dtype=dtype))
    ground = _coulomb_ground_state(n, dim, float(cfg["trap"]), float(cfg["coupling"]))
    spread = float(ground.radii @ ground.radii) / (n * dim) + 1.0 / (2 * cfg["beta"] * cfg["trap"])
    scale = Scale(system.shape, log_scale=0.5 * math.log(spread))
    return Transformed(StandardNormal(system.shape, kind="particles", dtype=dtype),
                       Chain([scale, ode_flow(field, cfg)]))


def _coulomb_report(system, cfg: dict, results: dict, model=None) -> dict:
    """Labelled particles; the ground state and its harmonic low-temperature energy; dF/d
    trap and dF/d coupling by automatic differentiation (and exactly for n = 2)."""
    from .systems import CoulombTrap

    n, dim = system.shape
    beta = results["beta"]
    ground = _coulomb_ground_state(n, dim, float(cfg["trap"]), float(cfg["coupling"]))
    harmonic = ground.energy + (n * dim - _rotational_zero_modes(n, dim)) / (2 * beta)
    out: dict[str, Any] = {
        "particles": "labelled",
        "dim": dim,
        "energy_per_particle": results["energy"] / n,
        "ground_state_energy": ground.energy,
        "ground_state_energy_per_particle": ground.energy / n,
        "ground_state_shells": list(ground.shells),
        "harmonic_energy": harmonic,
    }
    if model is not None:
        from .bijections import exact_log_det
        from .objectives import free_energy_derivatives

        def make(trap, coupling):
            return CoulombTrap(n, dim, trap=trap, coupling=coupling)

        d = free_energy_derivatives(
            exact_log_det(model), make, {"trap": cfg["trap"], "coupling": cfg["coupling"]},
            beta, key=jax.random.key(cfg["seed"] + 1), n_samples=min(cfg["eval_batch"], 4096))
        out.update({"dF_dtrap": d["dF/dtrap"], "dF_dtrap_stderr": d["dF/dtrap_stderr"],
                    "dF_dcoupling": d["dF/dcoupling"],
                    "dF_dcoupling_stderr": d["dF/dcoupling_stderr"]})
        out.update(ode_discretisation_check(model, system, beta, cfg))
    exact = _coulomb_exact_derivatives(n, dim, beta, cfg["trap"], cfg["coupling"])
    out.update({"exact_dF_dtrap": exact[0], "exact_dF_dcoupling": exact[1]})
    return out


def _coulomb_pictures(system, cfg: dict, out_dir: Path, model) -> None:
    """samples.png (a few samples over the ground state) and density.png (the particle
    density of 4096 samples, with the ground state's shell radii)."""
    from .train import plot_particle_density, plot_particle_samples

    n, dim = system.shape
    ground = _coulomb_ground_state(n, dim, float(cfg["trap"]), float(cfg["coupling"]))
    keys = jax.random.split(jax.random.key(cfg["seed"] + 2), 4096)
    xs = np.asarray(model.sample_and_log_prob_batch(keys=keys)[0])
    plot_particle_samples(xs, out_dir / "samples.png", ground_state=ground)
    plot_particle_density(xs, out_dir / "density.png", ground_state=ground)


def _coulomb_exact_derivatives(n: int, dim: int, beta: float, trap: float, coupling: float):
    """dF/dtrap and dF/dcoupling of the exact n = 2 free energy by autodiff (else None)."""
    if n != 2:
        return None, None
    from .exact import coulomb_pair_log_z

    def free_energy(trap, coupling):
        return -coulomb_pair_log_z(beta, dim, trap, coupling) / beta

    grads = jax.grad(free_energy, argnums=(0, 1))(jnp.asarray(trap, float),
                                                   jnp.asarray(coupling, float))
    return float(grads[0]), float(grads[1])


def _phi4_report(system, cfg: dict, results: dict, model=None) -> dict:
    from .exact._phi4 import phi4_reference_lookup

    ref = phi4_reference_lookup(cfg["L"], cfg["kappa"], cfg["lam"])
    return {"reference_free_energy_stderr": None if ref is None else ref[1],
            "reference_method": None if ref is None else ref[2]}


QUANTUM_DOT = (
    Option("n_up", int, 3, "spin-up electrons", check=_non_negative),
    Option("n_down", int, 3, "spin-down electrons (0: polarised)", check=_non_negative),
    Option("omega", float, 1.0, "trap frequency (Hartree units, hbar = m = e = 1)",
           check=_positive),
    Option("coulomb", float, 1.0, "Coulomb strength (0: free fermions, exact reference)",
           check=_non_negative),
    Option("temperature", float, None, "temperature T (0: ground state, p fixed on the "
           "lowest occupation); default 0 unless --beta is given", check=_non_negative),
    Option("beta", float, None, "inverse temperature 1/T (instead of --temperature)",
           check=_positive),
    Option("emax", float, None, "single-particle energy cutoff of the oscillator orbitals "
           "(default: two shells above the occupied ones)", check=_positive),
    Option("flow", str, "backflow", "equivariant flow of the electron coordinates: "
           "FermiNet-style residual layers, Feynman backflow (closed-form Jacobian: the "
           "cheapest Laplacian), a continuous backflow field, or the identity (plain Slater "
           "determinants)",
           choices=("ferminet", "backflow", "cnf", "identity")),
    Option("jastrow", str, "none", "T = 0 only: multiply Psi by a Jastrow factor exp(J), "
           "pade = the cusp-exact Pade pair term plus a learnable pair network of "
           "--jastrow-width units (the states stop being orthonormal, so T > 0 refuses it)",
           choices=("none", "pade")),
    Option("jastrow_width", int, 16, "--jastrow pade: hidden units of the pair network "
           "(0: the Pade term only)", check=_non_negative),
)

#: Options shared by the quantum systems (flow, Laplacian, optimiser, p(K), walkers).
QUANTUM = (
    Option("flow_layers", int, 2, "ferminet, backflow: residual layers; cnf: RK4 steps / 4",
           check=_at_least(1)),
    Option("flow_width", int, 16, "hidden units of the flow's networks", check=_at_least(1)),
    Option("flow_depth", int, 2, "hidden layers of the flow's networks", check=_at_least(1)),
    Option("laplacian", str, "loop", "Laplacian of ln Psi in the local energy: exact loop "
           "over coordinates, forward Laplacian (folx), or Hutchinson (one probe, unbiased)",
           choices=("forward", "loop", "hutchinson")),
    Option("optimizer", str, "adam", "adam, or stochastic reconfiguration (minSR) with "
           "separate blocks for p(K) and Psi", choices=("adam", "sr")),
    Option("sr_damping", float, 1e-3, "sr: damping lambda of S + lambda I", check=_positive),
    Option("sr_max_norm", float, 0.1, "sr: largest step length in the metric (0: no limit)",
           check=_non_negative),
    Option("occupation_net", str, "transformer", "autoregressive model of p(K) (T > 0)",
           choices=("transformer", "made")),
    Option("occupation_width", int, 32, "p(K) network width", check=_at_least(1)),
    Option("occupation_depth", int, 2, "p(K) network depth", check=_at_least(1)),
    Option("pretrain_steps", int, 300, "steps pretraining p(K) to the free-fermion "
           "Boltzmann distribution (T > 0)", check=_non_negative),
    Option("sweeps", int, None, "Metropolis sweeps per training step "
           "(walkers re-thermalise for the newly drawn K; default 10 at T = 0, where K is "
           "fixed, and 50 at T > 0: 10 left F 0.1 too high for a polarised N = 6 dot at "
           "T = 0.6)", check=_at_least(1)),
    Option("eval_sweeps", int, None, "Metropolis sweeps per chunk of the final evaluation "
           "(default: twice --sweeps at T > 0, where each chunk redraws K and the result is "
           "only as good as the walkers' re-thermalisation; --sweeps at T = 0)",
           check=_at_least(1)),
    Option("burn_in", int, 200, "Metropolis sweeps before training", check=_at_least(1)),
    Option("clip_eloc", float, 5.0, "clip local energies in the Psi gradient to median +- "
           "this many mean absolute deviations (0: off)", check=_non_negative),
)


ELECTRON_GAS = (
    Option("n", int, 13, "electrons (spin polarised); closed shells of the 2D square momentum "
           "lattice: 1, 5, 9, 13, 21, 25, 29, 37, 45, 49, ...", check=_at_least(1)),
    Option("dim", int, 2, "spatial dimension", choices=(2, 3)),
    Option("rs", float, 5.0, "density parameter r_s (Bohr radii)", check=_positive),
    Option("t_over_tf", float, 0.15, "temperature in units of the Fermi temperature T_F = "
           "k_F^2 (Rydberg; 0: ground state)", check=_non_negative),
    Option("twist", float, None, "twist theta of the momenta k = 2 pi (n + theta) / L, one "
           "number per axis in [-0.5, 0.5] (None: 0 on every axis)", nargs="+"),
    Option("emax", float, None, "single-particle energy cutoff in Rydberg of the plane waves "
           "(None: the Fermi level plus 10 T; at T = 0 the closed shell)", check=_positive),
    Option("closed_shell", int, 0, "1: require n to fill closed shells of the momentum "
           "lattice", choices=(0, 1)),
    Option("coulomb", float, 1.0, "Coulomb strength (0: free fermions, exact reference)",
           check=_non_negative),
    Option("flow", str, "ferminet", "periodic FermiNet-style flow of the electron coordinates "
           "(translation-equivariant, exactly periodic), or the identity (plane-wave "
           "determinants)", choices=("ferminet", "identity")),
)


def _electron_gas_run(cfg: dict, mesh):
    from .quantum import build_electron_gas

    return build_electron_gas(cfg, mesh)


def _quantum_dot_run(cfg: dict, mesh):
    from .quantum import build_quantum_dot

    return build_quantum_dot(cfg, mesh)


SYSTEMS: dict[str, SystemEntry] = {
    "ising": SystemEntry(
        "ising", "2D Ising model on an L x L periodic square lattice (exact: Kaufman)",
        (Option("L", int, 16, "linear lattice size", check=_at_least(2)),
         Option("J", float, 1.0, "coupling (J > 0 ferromagnetic, J < 0 antiferromagnetic)",
                check=_finite),
         Option("h", float, 0.0, "magnetic field", check=_finite)),
        _ising,
        defaults={"steps": 1000, "batch": 256, "net": "pixelcnn", "depth": 3, "width": 16,
                  "half_kernel": 3, "dilation": 3, "lr": 3e-3, "lr_schedule": "cosine",
                  "beta_anneal": 0.99},
    ),
    "sk": SystemEntry(
        "sk", "Sherrington-Kirkpatrick spin glass (exact by enumeration for n <= 24)",
        (Option("n", int, None, "number of spins (default 20; from the file if given)",
                check=_at_least(2)),
         Option("couplings", str, None, ".npy file with a symmetric n x n matrix, zero diagonal"),
         Option("coupling_seed", int, 0, "seed of the random couplings J_ij ~ N(0, 1/n)")),
        _sk,
        defaults={"beta": 1.0, "net": "made", "depth": 2, "width": 8, "steps": 1000,
                  "batch": 1000, "lr": 3e-3, "lr_schedule": "cosine", "beta_anneal": 0.99},
    ),
    "ising-relaxed": SystemEntry(
        "ising-relaxed", "2D Ising model relaxed to a continuous field (Hubbard-Stratonovich; "
        "exact: Kaufman + a closed-form constant)",
        (Option("L", int, 8, "linear lattice size", check=_at_least(2)),
         Option("J", float, 1.0, "Ising coupling", check=_finite)),
        _relaxed_ising,
        defaults={"beta": 0.4406867935097715, "beta_anneal": 0.0, "steps": 1000, "batch": 256,
                  "eval_batch": 8192, "lr": 3e-3, "lr_schedule": "cosine",
                  "coupling_layers": 10, "solver": "rk4", "steps_ode": 50, "ode_time": 5.0},
        groups=(CLASSICAL, FLOW_MODEL, ODE, MCMC),
        build_model=build_flow,
        objective=_pathwise,
        report=_relaxed_report,
    ),
    "phi4": SystemEntry(
        "phi4", "lattice phi^4 field theory on an L x L periodic lattice (reference: HMC + "
        "thermodynamic integration where tabulated)",
        (Option("L", int, 8, "linear lattice size", check=_at_least(2)),
         Option("kappa", float, 0.15, "hopping parameter (>= 0)", check=_non_negative),
         Option("lam", float, 1.1, "quartic coupling lambda (>= 0)", check=_non_negative)),
        _phi4,
        defaults={"steps": 1000, "batch": 256, "eval_batch": 8192, "lr": 1e-2,
                  "lr_schedule": "cosine", "coupling_layers": 10, "solver": "rk4",
                  "steps_ode": 50, "ode_time": 5.0},
        groups=(FLOW_MODEL, ODE, MCMC),
        build_model=build_flow,
        objective=_pathwise,
        beta=lambda cfg: 1.0,
        report=_phi4_report,
    ),
    "coulomb-trap": SystemEntry(
        "coulomb-trap", "classical Coulomb gas in a harmonic trap, H = sum 1/r_ij + sum |x_i|^2 "
        "(labelled particles; exact for n <= 2; ground state by minimisation)",
        (Option("n", int, 6, "number of particles", check=_at_least(1)),
         Option("dim", int, 2, "spatial dimension", choices=(1, 2, 3)),
         Option("trap", float, 1.0, "trap strength (H has trap * sum |x_i|^2)", check=_positive),
         Option("coupling", float, 1.0, "Coulomb coupling (H has coupling * sum 1/r_ij)",
                check=_non_negative)),
        _coulomb,
        defaults={"beta": 10.0, "beta_anneal": 0.0, "steps": 1000, "batch": 256,
                  "eval_batch": 8192, "lr": 3e-3, "lr_schedule": "cosine", "clip_grad": 10.0},
        groups=(CLASSICAL, PARTICLE_FLOW, ODE, MCMC),
        build_model=build_particle_flow,
        objective=_pathwise,
        report=_coulomb_report,
        pictures=_coulomb_pictures,
    ),
    "quantum-dot": SystemEntry(
        "quantum-dot", "electrons in a 2D harmonic trap with Coulomb repulsion, at T = 0 "
        "(ground-state VMC) or T > 0 (neural canonical transformation); exact for free "
        "fermions, published ground states for reference",
        (), None,
        defaults={"steps": 1000, "batch": 256, "eval_batch": 4096, "lr": 1e-2,
                  "lr_schedule": "cosine", "lr_final": 0.05, "dtype": "float64"},
        groups=(QUANTUM_DOT, QUANTUM),
        build_run=_quantum_dot_run,
    ),
    "electron-gas": SystemEntry(
        "electron-gas", "spin-polarised uniform electron gas in a periodic box (Ewald sums, "
        "plane waves with a twist), at T/T_F >= 0; exact for free fermions, effective mass "
        "from the entropy",
        (), None,
        defaults={"steps": 1000, "batch": 256, "eval_batch": 4096, "lr": 1e-2,
                  "lr_schedule": "cosine", "lr_final": 0.05, "dtype": "float64",
                  "laplacian": "forward", "chunk_size": 32},
        groups=(ELECTRON_GAS, QUANTUM),
        build_run=_electron_gas_run,
    ),
}


def defaults(system: str) -> dict[str, Any]:
    """Every option of ``system`` with its default value."""
    return {o.name: o.default for o in entry(system).all_options()}


def entry(system: str) -> SystemEntry:
    """The catalog entry of ``system``; :class:`OptionError` naming the known systems if
    there is none."""
    if system not in SYSTEMS:
        raise OptionError(f"unknown system {system!r}; known systems: {', '.join(SYSTEMS)}")
    return SYSTEMS[system]


def validate(system: str, options: dict[str, Any]) -> dict[str, Any]:
    """All options of ``system`` (defaults filled in), checked; raise :class:`OptionError`."""
    ent = entry(system)
    known = {o.name: o for o in ent.all_options()}
    unknown = sorted(set(options) - set(known))
    if unknown:
        flags = ", ".join("--" + u.replace("_", "-") for u in unknown)
        raise OptionError(f"unknown option(s) {flags} for system {system!r}; "
                          f"see 'thermax list'")
    cfg = {name: o.default for name, o in known.items()}
    cfg.update({k: v for k, v in options.items() if v is not None})
    for name, o in known.items():
        value = cfg[name]
        if value is None:
            continue
        if o.type is float and not all(math.isfinite(v) for v in (
                value if isinstance(value, list | tuple) else [value])):
            raise OptionError(f"{o.flag} {value!r} must be a finite number")
        if o.choices is not None and value not in o.choices:
            raise OptionError(f"{o.flag} {value!r} is not allowed; choose from "
                              f"{', '.join(map(str, o.choices))}")
        if o.check is not None:
            problem = o.check(value)
            if problem:
                raise OptionError(f"{o.flag} {value!r} {problem}")
    return cfg


def build_model(system: AbstractSystem, cfg: dict, *, key) -> AbstractDistribution:
    """The autoregressive spin model the options describe, in the requested dtype."""
    dtype = jnp.dtype(cfg["dtype"])
    if cfg["net"] == "pixelcnn":
        shape = system.shape
        if len(shape) != 2 or shape[0] != shape[1]:
            raise OptionError(f"--net pixelcnn needs a square 2D lattice; system "
                              f"{type(system).__name__} has configuration shape {shape}; "
                              "use --net made")
        net = PixelCNN(shape[0], depth=cfg["depth"], width=cfg["width"],
                       half_kernel=cfg["half_kernel"], residual=bool(cfg["residual"]),
                       dilation=cfg["dilation"], key=key, dtype=dtype)
    else:
        net = MADE(system.shape, depth=cfg["depth"], width=cfg["width"],
                   residual=bool(cfg["residual"]), key=key, dtype=dtype)
    model: AbstractDistribution = AutoregressiveSpins(net)
    if cfg["z2"]:
        model = Z2Symmetrized(model)
    return model


def _optimizer(cfg: dict) -> optax.GradientTransformation:
    lr = cfg["lr"]
    if cfg["lr_schedule"] == "cosine":
        lr = optax.cosine_decay_schedule(lr, max(cfg["steps"], 1), alpha=cfg["lr_final"])
    chain = [optax.clip_by_global_norm(cfg["clip_grad"])] if cfg["clip_grad"] > 0 else []
    if cfg.get("weight_decay", 0.0) > 0:
        chain.append(optax.add_decayed_weights(cfg["weight_decay"]))
    return optax.chain(*chain, optax.adam(lr)) if chain else optax.adam(lr)


def build_run(system: str, options: dict[str, Any], *, devices=None) -> Any:
    """Validate ``options`` and build everything a run needs; no training happens here.

    Raises :class:`OptionError` (a ``ValueError``) on any bad input.
    """
    cfg = validate(system, options)
    if cfg["dtype"] == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    ent = entry(system)
    if ent.build_run is not None:
        if cfg["memory_cap"] > 0:
            raise OptionError(f"--memory-cap is for classical systems; for {system!r} set "
                              "--chunk-size")
        mesh = make_mesh(devices)
        if cfg["batch"] % mesh.size:
            raise OptionError(f"--batch {cfg['batch']} must be divisible by the number of "
                              f"devices ({mesh.size})")
        try:
            return ent.build_run(cfg, mesh)
        except ValueError as err:
            raise OptionError(str(err)) from None
    try:
        sys_ = ent.build_system(cfg)
    except OptionError:
        raise
    except ValueError as err:
        raise OptionError(str(err)) from None
    if system == "sk" and cfg.get("couplings"):  # an absolute path: --resume from anywhere
        cfg["couplings"] = str(Path(cfg["couplings"]).resolve())
    mesh = make_mesh(devices)
    if cfg["batch"] % mesh.size:
        raise OptionError(f"--batch {cfg['batch']} must be divisible by the number of "
                          f"devices ({mesh.size})")
    make_model = ent.build_model or build_model
    try:
        model = make_model(sys_, cfg, key=model_key(cfg["seed"]))
    except OptionError:
        raise
    except ValueError as err:
        raise OptionError(str(err)) from None
    beta = ent.beta(cfg)
    try:
        trainer = Trainer(ent.objective(cfg), _optimizer(cfg), sys_, beta=beta,
                          beta_anneal=cfg.get("beta_anneal", 0.0), batch=cfg["batch"],
                          mesh=mesh, chunk_size=cfg["chunk_size"] or None)
    except ValueError as err:
        raise OptionError(f"--chunk-size {cfg['chunk_size']}: {err}") from None
    if cfg["memory_cap"] > 0:
        try:
            trainer = fit_chunk_size(trainer, model, cfg["memory_cap"] * 2**30,
                                     key=model_key(cfg["seed"]))
        except ValueError as err:
            raise OptionError(f"--memory-cap {cfg['memory_cap']}: {err}") from None
        cfg["chunk_size"] = trainer.chunk_size or 0
    exact = sys_.exact_free_energy(beta)
    report = None if ent.report is None else functools.partial(ent.report, sys_, cfg)
    pictures = None if ent.pictures is None else functools.partial(ent.pictures, sys_, cfg)
    return Run(system, cfg, sys_, model, trainer, exact, report=report, pictures=pictures)
