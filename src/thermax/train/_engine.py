"""The training engine: explicit state, one jitted step, the batch sharded over devices."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ..distributions import AbstractDistribution
from ..objectives import AbstractFreeEnergy, FreeEnergyStats
from ..systems import AbstractSystem

BATCH_AXIS = "batch"


def annealed_beta(beta: Float[Array, ""], rate: Float[Array, ""],
                  step: Int[Array, ""]) -> Float[Array, ""]:
    """``beta_t = beta (1 - rate^(t+1))``: positive at step 0, ``-> beta``; rate 0 = off."""
    return beta * (1.0 - rate ** (step.astype(beta.dtype) + 1.0))


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device JAX sees) named ``"batch"``."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (BATCH_AXIS,))


class TrainState(eqx.Module):
    """Everything that evolves during training; checkpointing this is enough to resume."""

    model: AbstractDistribution
    opt_state: PyTree
    objective_state: PyTree
    step: Int[Array, ""]
    key: PRNGKeyArray


class Trainer(eqx.Module):
    """Minimise a free-energy objective over a model's parameters with an optax optimizer.

    Components are values: swap the ``objective`` (estimator), the ``optimizer`` or the
    ``system``. ``beta`` and ``beta_anneal`` are 0-d arrays, so a sweep never recompiles.
    The batch is split over the devices of ``mesh`` (a 1-D mesh, :func:`make_mesh`); the
    model is replicated. The same code runs on one CPU, forced CPU devices, or GPUs.

    Example:
        >>> trainer = Trainer(ScoreFunctionFreeEnergy(), optax.adam(1e-3), Ising2D(4),
        ...                   beta=0.4, batch=64)
        >>> state = trainer.init(model, key=jax.random.key(0))
        >>> state, stats = trainer.step(state)
    """

    objective: AbstractFreeEnergy
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    system: AbstractSystem
    beta: Float[Array, ""]
    beta_anneal: Float[Array, ""]
    batch: int = eqx.field(static=True)
    mesh: Mesh = eqx.field(static=True)

    def __init__(self, objective: AbstractFreeEnergy, optimizer: optax.GradientTransformation,
                 system: AbstractSystem, *, beta: float | Array, batch: int,
                 beta_anneal: float | Array = 0.0, mesh: Mesh | None = None):
        mesh = make_mesh() if mesh is None else mesh
        if not isinstance(batch, int) or batch <= 0:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        if batch % mesh.size:
            raise ValueError(f"batch {batch} must be divisible by the number of devices "
                             f"{mesh.size}")
        if not float(beta) > 0:
            raise ValueError(f"beta must be > 0, got {float(beta)}")
        if not 0.0 <= float(beta_anneal) < 1.0:
            raise ValueError(f"beta_anneal must be in [0, 1), got {float(beta_anneal)}")
        self.objective, self.optimizer, self.system = objective, optimizer, system
        self.beta = jnp.asarray(beta, dtype=jnp.result_type(float))
        self.beta_anneal = jnp.asarray(beta_anneal, dtype=jnp.result_type(float))
        self.batch, self.mesh = batch, mesh

    def replicate(self, tree: PyTree) -> PyTree:
        """Copies of every array of ``tree`` on all devices of the mesh (replicated).

        Always copies (never aliases), so donating the training state in :meth:`step`
        never deletes the arrays of the model the caller passed in.
        """
        sharding = NamedSharding(self.mesh, PartitionSpec())
        # an explicit copy first: device_put(may_alias=False) of a 0-d array onto a
        # replicated sharding was seen to keep the caller's buffer as one shard
        return jax.tree.map(
            lambda x: jax.device_put(jnp.array(x, copy=True), sharding)
            if eqx.is_array(x) else x, tree)

    def shard_batch(self, x: Array) -> Array:
        """Constrain the leading (batch) axis of ``x`` to be split over the mesh."""
        return jax.lax.with_sharding_constraint(
            x, NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS)))

    def init(self, model: AbstractDistribution, *, key: PRNGKeyArray) -> TrainState:
        """The state at step 0."""
        key, k_obj = jax.random.split(key)
        params = eqx.filter(model, eqx.is_inexact_array)
        state = TrainState(
            model=model,
            opt_state=self.optimizer.init(params),
            objective_state=self.objective.init(model, self.system, key=k_obj,
                                                batch=self.batch),
            step=jnp.asarray(0, dtype=jnp.int32),
            key=key,
        )
        return self.replicate(state)

    def beta_at(self, step: Int[Array, ""]) -> Float[Array, ""]:
        return annealed_beta(self.beta, self.beta_anneal, step)

    def _step(self, state: TrainState) -> tuple[TrainState, FreeEnergyStats]:
        key, k_step = jax.random.split(state.key)
        keys = self.shard_batch(jax.random.split(k_step, self.batch))
        beta = self.beta_at(state.step)
        params, static = eqx.partition(state.model, eqx.is_inexact_array)

        def loss_fn(p):
            return self.objective.loss(eqx.combine(p, static), self.system, beta,
                                       state.objective_state, keys=keys)

        (_, (stats, obj_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
        model = eqx.combine(optax.apply_updates(params, updates), static)
        new = TrainState(model, opt_state, obj_state, state.step + 1, key)
        return new, stats

    @eqx.filter_jit(donate="all-except-first")
    def step(self, state: TrainState) -> tuple[TrainState, FreeEnergyStats]:
        """One optimisation step: sample a batch, estimate F and its gradient, update."""
        return self._step(state)
