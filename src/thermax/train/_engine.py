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
from ..objectives._chunks import check_chunk_size
from ..systems import AbstractSystem
from ._guard import FaultInjection, Guard, fault_code, keep_if, next_guard, scale_updates

BATCH_AXIS = "batch"


def annealed_beta(beta: Float[Array, ""], rate: Float[Array, ""],
                  step: Int[Array, ""]) -> Float[Array, ""]:
    """``beta_t = beta (1 - rate^(t+1))``: positive at step 0, ``-> beta``; rate 0 = off."""
    return beta * (1.0 - rate ** (step.astype(beta.dtype) + 1.0))


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device JAX sees) named ``"batch"``."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (BATCH_AXIS,))


def put_global(x: Array, sharding: NamedSharding) -> Array:
    """A copy of ``x`` (the same value in every process) laid out by ``sharding``, which
    may span the devices of several processes (``jax.distributed``)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = put_global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    if sharding.is_fully_addressable:
        # an explicit copy first: device_put(may_alias=False) of a 0-d array onto a
        # replicated sharding was seen to keep the caller's buffer as one shard
        return jax.device_put(jnp.array(x, copy=True), sharding)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        # already spread over processes: move it between layouts on the devices
        return jax.jit(lambda a: a, out_shardings=sharding)(x)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every array of ``tree`` copied onto all devices of ``mesh`` (replicated)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: put_global(x, sharding) if eqx.is_array(x) else x, tree)


def shard_leading(tree: PyTree, mesh: Mesh) -> PyTree:
    """Arrays of ``tree`` with at least one axis split over ``mesh`` along the first axis
    (the batch); 0-d arrays replicated."""
    batch = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    rep = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(
        lambda x: put_global(x, batch if x.ndim >= 1 else rep) if eqx.is_array(x) else x,
        tree)


class TrainState(eqx.Module):
    """Everything that evolves during training; checkpointing this is enough to resume.

    ``guard`` holds the non-finite bookkeeping (:class:`~thermax.train.Guard`: the
    learning-rate scale, the faults handled so far, the latest step's fault bits).
    """

    model: AbstractDistribution
    opt_state: PyTree
    objective_state: PyTree
    step: Int[Array, ""]
    key: PRNGKeyArray
    guard: Guard


class Trainer(eqx.Module):
    """Minimise a free-energy objective over a model's parameters with an optax optimizer.

    Components are values: swap the ``objective`` (estimator), the ``optimizer`` or the
    ``system``. ``beta`` and ``beta_anneal`` are 0-d arrays, so a sweep never recompiles.
    The batch is split over the devices of ``mesh`` (a 1-D mesh, :func:`make_mesh`); the
    model is replicated. The same code runs on one CPU, forced CPU devices, several GPUs or
    several processes (``jax.distributed``). ``chunk_size`` (a divisor of ``batch``) bounds
    memory: samples are drawn, evaluated and differentiated that many at a time, with the
    same result. A step whose loss or gradients are not finite is not applied (see
    :mod:`thermax.train._guard`); ``fault`` injects such a fault, for tests.

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
    chunk_size: int | None = eqx.field(static=True)
    fault: FaultInjection | None

    def __init__(self, objective: AbstractFreeEnergy, optimizer: optax.GradientTransformation,
                 system: AbstractSystem, *, beta: float | Array, batch: int,
                 beta_anneal: float | Array = 0.0, mesh: Mesh | None = None,
                 chunk_size: int | None = None, fault: FaultInjection | None = None):
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
        check_chunk_size(chunk_size, batch, mesh.size)
        if chunk_size is not None and chunk_size < batch and not objective.supports_chunks:
            raise ValueError(f"{type(objective).__name__} does not work in chunks; drop "
                             "chunk_size")
        if fault is not None and fault.quantity == "walkers":
            raise ValueError("FaultInjection('walkers') needs a trainer with walkers "
                             "(QuantumTrainer)")
        self.chunk_size = None if chunk_size is None or chunk_size >= batch else chunk_size
        self.fault = fault
        self.objective, self.optimizer, self.system = objective, optimizer, system
        self.beta = jnp.asarray(beta, dtype=jnp.result_type(float))
        self.beta_anneal = jnp.asarray(beta_anneal, dtype=jnp.result_type(float))
        self.batch, self.mesh = batch, mesh

    def replace(self, **changes) -> "Trainer":
        """A copy with some constructor arguments changed (checked again), e.g.
        ``trainer.replace(chunk_size=64)``."""
        args = dict(objective=self.objective, optimizer=self.optimizer, system=self.system,
                    beta=self.beta, batch=self.batch, beta_anneal=self.beta_anneal,
                    mesh=self.mesh, chunk_size=self.chunk_size, fault=self.fault)
        args.update(changes)
        return Trainer(args.pop("objective"), args.pop("optimizer"), args.pop("system"),
                       **args)

    def replicate(self, tree: PyTree) -> PyTree:
        """Copies of every array of ``tree`` on all devices of the mesh (replicated).

        Always copies (never aliases), so donating the training state in :meth:`step`
        never deletes the arrays of the model the caller passed in.
        """
        return replicate(tree, self.mesh)

    def place(self, state: TrainState) -> TrainState:
        """A state read from a checkpoint (host arrays, any device count it was saved
        on), put onto this trainer's mesh."""
        return self.replicate(state)

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
            guard=Guard.fresh(),
        )
        return self.replicate(state)

    def beta_at(self, step: Int[Array, ""]) -> Float[Array, ""]:
        """The annealed inverse temperature used at ``step`` (:func:`annealed_beta`)."""
        return annealed_beta(self.beta, self.beta_anneal, step)

    def _step(self, state: TrainState) -> tuple[TrainState, FreeEnergyStats]:
        key, k_step = jax.random.split(state.key)
        keys = self.shard_batch(jax.random.split(k_step, self.batch))
        beta = self.beta_at(state.step)
        params, static = eqx.partition(state.model, eqx.is_inexact_array)
        grads, (stats, obj_state) = self.objective.grad_and_stats(
            params, static, self.system, beta, state.objective_state, keys=keys,
            chunk_size=self.chunk_size, shard=self.shard_batch)
        loss = stats.free_energy
        if self.fault is not None:
            loss = self.fault.corrupt("loss", loss, state.step, state.guard)
            grads = self.fault.corrupt("gradients", grads, state.step, state.guard)
            stats = eqx.tree_at(lambda s: s.free_energy, stats, loss)
        code, leaf = fault_code(loss, grads)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, scale_updates(updates, state.guard))
        # a non-finite step changes nothing but the step, the key and the guard
        ok = code == 0
        model = eqx.combine(keep_if(ok, new_params, params), static)
        opt_state = keep_if(ok, opt_state, state.opt_state)
        obj_state = keep_if(ok, obj_state, state.objective_state)
        new = TrainState(model, opt_state, obj_state, state.step + 1, key,
                         next_guard(state.guard, code, leaf))
        return new, stats

    @eqx.filter_jit(donate="all-except-first")
    def step(self, state: TrainState) -> tuple[TrainState, FreeEnergyStats]:
        """One optimisation step: sample a batch, estimate F and its gradient, update."""
        return self._step(state)


def step_memory(trainer: Trainer, state: TrainState) -> int:
    """Bytes one device needs for a compiled training step of ``trainer`` on ``state``
    (XLA's own accounting: arguments, outputs and temporaries, less donated buffers)."""
    compiled = eqx.filter_jit(trainer._step).lower(state).compile().compiled
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
               - m.alias_size_in_bytes)


def fit_chunk_size(trainer: Trainer, model: AbstractDistribution, cap_bytes: float, *,
                   key: PRNGKeyArray, log=None) -> Trainer:
    """``trainer`` with the largest ``chunk_size`` whose compiled step fits in
    ``cap_bytes`` per device (the batch unchunked if it fits).

    Candidates are the divisors of the batch that the device count divides, tried from
    the largest down; each is compiled (not run) to read its memory. Raises
    ``ValueError`` if even the smallest chunk does not fit.
    """
    state = trainer.init(model, key=key)
    devices = trainer.mesh.size
    candidates = [c for c in range(trainer.batch, 0, -1)
                  if trainer.batch % c == 0 and c % devices == 0]
    tried = []
    for c in candidates:
        candidate = trainer.replace(chunk_size=c)
        need = step_memory(candidate, state)
        tried.append((c, need))
        if log is not None:
            log(f"chunk size {c}: the step needs {need / 2**20:.1f} MiB per device")
        if need <= cap_bytes:
            return candidate
        if len(tried) >= 2 and need > 0.95 * tried[-2][1]:
            break  # memory no longer falls with the chunk: smaller ones will not fit
    raise ValueError(f"no chunk size fits the memory cap {cap_bytes / 2**20:.1f} MiB: "
                     + ", ".join(f"{c} needs {m / 2**20:.1f} MiB" for c, m in tried))
