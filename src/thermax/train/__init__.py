"""Training: the jitted step, sharding, checkpoints, the run driver and its records."""

from ._checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from ._engine import Trainer, TrainState, annealed_beta, make_mesh
from ._evaluate import evaluate, sample_energies
from ._guard import FaultInjection, Guard
from ._loop import Interrupted, LoopSettings, NonFiniteError, train_loop
from ._particle_plots import plot_particle_density, plot_particle_samples
from ._records import draw_free_energy
from ._run import Run, execute, format_summary, model_key

__all__ = ["FaultInjection", "Guard", "Interrupted", "LoopSettings", "NonFiniteError", "Run",
           "TrainState", "Trainer", "annealed_beta",
           "draw_free_energy", "evaluate", "execute", "format_summary", "load_checkpoint",
           "make_mesh", "model_key", "plot_particle_density", "plot_particle_samples",
           "read_checkpoint_meta", "sample_energies", "save_checkpoint", "train_loop"]
