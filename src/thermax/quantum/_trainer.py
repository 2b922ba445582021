r"""Training the variational density matrix: walkers, local energies and gradients.

One step of :class:`QuantumTrainer`:

1. draw ``K_b ~ p`` for each of the ``B`` walkers (a fresh occupation every step);
2. move walker ``b`` by ``sweeps`` Metropolis sweeps in ``|Psi_{K_b}|^2`` (re-thermalising
   it for its new ``K``) and adapt the proposal width toward acceptance 1/2;
3. local energies ``E_loc(x_b; K_b)`` with the Laplacian method of the trainer;
4. ``f_b = T ln p(K_b) + E_loc(x_b; K_b)``, ``F = mean f`` (``T = 0``: ``F = E``), and the
   gradients

   .. math::

       g_p = E[(f - \bar f)\,\nabla \ln p(K)], \qquad
       g_\psi = 2 E[(E_{\rm loc} - \bar E_{\rm loc})\,\nabla \ln|\Psi_K(x)|]

   (REINFORCE with the batch-mean baseline; the VMC gradient, unbiased with any constant
   baseline as every ``Psi_K`` stays normalised), optionally with the local energies
   clipped to ``median +- clip * mean|E_loc - median|`` in ``g_psi`` only. For a complex
   wavefunction (plane waves) ``E_loc`` is complex and
   ``g_psi = 2 Re E[(E_loc - E)^* ... ]`` becomes
   ``2 E[Re(E_loc - E) d ln|Psi| + Im E_loc d arg Psi]`` (``E`` the real mean; the
   statistics use ``Re E_loc``);
5. an Adam (any optax) or stochastic-reconfiguration (:class:`SR`) update.

All randomness comes from the state's key; the walkers, the optimiser state and the step
are explicit state, so a checkpoint of :class:`QuantumTrainState` resumes exactly.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ..objectives._chunks import accumulate_grad, to_chunks
from ..train._engine import replicate, shard_leading
from ..train._guard import FaultInjection, Guard, fault_code, keep_if, next_guard, scale_updates
from ._density_matrix import DensityMatrix
from ._hamiltonian import AbstractQuantumSystem
from ._laplacian import AbstractLaplacian
from ._metropolis import WalkerState, adapt_width, init_walkers, metropolis_step
from ._sr import SR, score_matrix

BATCH_AXIS = "batch"


class QuantumStats(eqx.Module):
    """Figures of one step or evaluation (0-d arrays): ``F``, ``E``, ``S`` of ``p(K)``
    with standard errors, the temperature and the Metropolis acceptance."""

    temperature: Float[Array, ""]
    free_energy: Float[Array, ""]
    free_energy_stderr: Float[Array, ""]
    energy: Float[Array, ""]
    energy_stderr: Float[Array, ""]
    entropy: Float[Array, ""]
    entropy_stderr: Float[Array, ""]
    acceptance: Float[Array, ""]

    def as_dict(self) -> dict[str, float]:
        """The figures as Python floats, plus ``beta = 1/T`` (``inf`` at ``T = 0``)."""
        out = {k: float(v) for k, v in vars(self).items()}
        t = out["temperature"]
        out["beta"] = float("inf") if t == 0 else 1.0 / t
        return out


class QuantumTrainState(eqx.Module):
    """Everything that evolves: the model, optimiser state, walkers, step, key and the
    non-finite guard (:class:`~thermax.train.Guard`)."""

    model: DensityMatrix
    opt_state: PyTree
    walkers: WalkerState
    step: Int[Array, ""]
    key: PRNGKeyArray
    guard: Guard


def trainable(model: DensityMatrix) -> PyTree:
    """The filter spec of the trained parameters: every inexact array of the occupation
    model and of the wavefunction's flow (the basis, e.g. the trap frequency, stays fixed,
    and so does a periodic flow's ``box_length``, a constant of the geometry)."""
    spec = jax.tree_util.tree_map_with_path(
        lambda path, leaf: eqx.is_inexact_array(leaf)
        and not jax.tree_util.keystr(path).endswith(".box_length"), model)
    basis = getattr(model.wavefunction, "basis", None)
    if basis is not None:
        spec = eqx.tree_at(lambda m: m.wavefunction.basis, spec,
                           jax.tree.map(lambda _: False, basis))
    return spec


def _mean_and_stderr(values: Array) -> tuple[Array, Array]:
    n = values.shape[0]
    return jnp.mean(values), jnp.std(values) * jnp.sqrt(1.0 / max(n - 1, 1))


def _walker_blocked_stderr(chunks: list[Array]) -> float:
    """The standard error of the mean over ``chunks`` (arrays of one sample per walker,
    in walker order) from the per-walker means: valid however strongly one walker's
    samples are correlated, as long as different walkers are independent. Element-wise
    sums only, so a batch sharded over devices stays as it is."""
    per_walker = sum(chunks[1:], chunks[0]) / len(chunks)
    return float(_mean_and_stderr(per_walker)[1])


def _clipped(e_loc: Array, clip: float | None) -> Array:
    if clip is None:
        return e_loc
    centre = jnp.median(e_loc)
    spread = jnp.mean(jnp.abs(e_loc - centre))
    return jnp.clip(e_loc, centre - clip * spread, centre + clip * spread)


class QuantumTrainer(eqx.Module):
    """Minimise the quantum free energy of a :class:`DensityMatrix` (see the module docs).

    Components are values: the ``system``, the ``laplacian`` method, the ``optimizer``
    (an optax transformation, or :class:`SR` for stochastic reconfiguration with separate
    blocks ``"p"`` and ``"psi"``). ``temperature`` is a 0-d array (``0``: ground state,
    with a :class:`FixedOccupation`). Walkers and occupation samples are split over the
    devices of ``mesh`` along the batch; the model is replicated.

    Args:
        system: the Hamiltonian.
        optimizer: an ``optax.GradientTransformation`` or an :class:`SR`.
        laplacian: the Laplacian method of the local energy.
        temperature: ``T >= 0`` (energy units of the system).
        batch: walkers, one occupation each (divisible by the number of devices).
        sweeps: Metropolis sweeps per step (re-thermalise after ``K`` is redrawn).
        eval_sweeps: Metropolis sweeps per chunk of :meth:`evaluate` (each chunk redraws
            ``K``), or None: ``sweeps``.
        burn_in: sweeps at :meth:`init`.
        width: the initial proposal width.
        clip: local-energy clipping in ``g_psi`` (in mean absolute deviations), or None.
        mesh: a 1-D device mesh named ``"batch"`` (default: all devices).
        chunk_size: local energies, gradients and the score rows of SR for
            ``chunk_size`` walkers at a time (bounds the memory of the Laplacian and of
            the backward passes; same results), or None: all at once. For the gradients
            and SR it must divide ``batch``; local energies take any value.
        fault: a :class:`~thermax.train.FaultInjection` for tests (``"walkers"``,
            ``"gradients"`` or ``"loss"``), or None.

    A step whose loss, gradients or walkers are not finite changes nothing but the step,
    the key and the guard (see :mod:`thermax.train._guard`).
    """

    system: AbstractQuantumSystem
    optimizer: optax.GradientTransformation | SR
    laplacian: AbstractLaplacian
    temperature: Float[Array, ""]
    batch: int = eqx.field(static=True)
    sweeps: int = eqx.field(static=True)
    eval_sweeps: int = eqx.field(static=True)
    burn_in: int = eqx.field(static=True)
    width: float = eqx.field(static=True)
    clip: float | None = eqx.field(static=True)
    mesh: Mesh = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    fault: FaultInjection | None

    def __init__(self, system: AbstractQuantumSystem, optimizer, laplacian: AbstractLaplacian,
                 *, temperature: float, batch: int, sweeps: int = 10,
                 eval_sweeps: int | None = None, burn_in: int = 200,
                 width: float = 0.5, clip: float | None = 5.0, mesh: Mesh | None = None,
                 chunk_size: int | None = None, fault: FaultInjection | None = None):
        mesh = Mesh(jax.devices(), (BATCH_AXIS,)) if mesh is None else mesh
        if not isinstance(batch, int) or batch < 2 or batch % mesh.size:
            raise ValueError(f"QuantumTrainer: batch must be an integer >= 2 divisible by the "
                             f"{mesh.size} device(s), got {batch!r}")
        if not float(temperature) >= 0:
            raise ValueError(f"QuantumTrainer: temperature must be >= 0, got {temperature}")
        eval_sweeps = sweeps if eval_sweeps is None else eval_sweeps
        for name, value in (("sweeps", sweeps), ("eval_sweeps", eval_sweeps),
                            ("burn_in", burn_in)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"QuantumTrainer: {name} must be an integer >= 1, got "
                                 f"{value!r}")
        if not width > 0:
            raise ValueError(f"QuantumTrainer: width must be > 0, got {width}")
        if clip is not None and not clip > 0:
            raise ValueError(f"QuantumTrainer: clip must be > 0 or None, got {clip}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
                chunk_size, int) or chunk_size < 1):
            raise ValueError(f"QuantumTrainer: chunk_size must be an integer >= 1 or None, "
                             f"got {chunk_size!r}")
        self.system, self.optimizer, self.laplacian = system, optimizer, laplacian
        self.temperature = jnp.asarray(temperature, jnp.result_type(float))
        self.batch, self.sweeps, self.burn_in = batch, sweeps, burn_in
        self.eval_sweeps = eval_sweeps
        self.width, self.clip, self.mesh = float(width), clip, mesh
        self.chunk_size = chunk_size
        self.fault = fault

    # ------------------------------------------------------------------ sharding helpers
    def replicate(self, tree: PyTree) -> PyTree:
        """Copies of every array of ``tree`` on all devices (never aliases)."""
        return replicate(tree, self.mesh)

    def place(self, state: QuantumTrainState) -> QuantumTrainState:
        """A state read from a checkpoint (host arrays, saved on any device count) put
        onto this trainer's mesh: replicated, with the walkers split along the batch."""
        return self.shard_walkers(self.replicate(state))

    def _shard(self, x: Array) -> Array:
        return jax.lax.with_sharding_constraint(
            x, NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS)))

    # ------------------------------------------------------------------ pieces of a step
    def _occupations(self, model: DensityMatrix, key: PRNGKeyArray, batch: int):
        keys = self._shard(jax.random.split(key, batch))
        return model.occupations.sample_and_log_prob_batch(keys=keys)

    def _walk(self, model: DensityMatrix, walkers: WalkerState, k_up, k_down, key, sweeps):
        walkers = metropolis_step(lambda xs: model.log_psi_batch(xs, k_up, k_down), walkers,
                                  key=key, n_sweeps=sweeps)
        return adapt_width(walkers)

    def _local_energies(self, model: DensityMatrix, xs, k_up, k_down, key):
        """Local energies: real, or complex for a complex wavefunction."""
        return self.system.local_energy_batch(model.log_value, xs, k_up, k_down,
                                              laplacian=self.laplacian, key=key,
                                              chunk_size=self.chunk_size)

    def _stats(self, log_p, e_loc, walkers) -> tuple[QuantumStats, Array]:
        e_loc = jnp.real(e_loc)
        f = self.temperature * log_p + e_loc
        free, free_err = _mean_and_stderr(f)
        energy, energy_err = _mean_and_stderr(e_loc)
        entropy, entropy_err = _mean_and_stderr(-log_p)
        return QuantumStats(self.temperature, free, free_err, energy, energy_err, entropy,
                            entropy_err, walkers.mean_acceptance), f

    def init(self, model: DensityMatrix, *, key: PRNGKeyArray) -> QuantumTrainState:
        """Step 0: walkers at the system's initial positions, burnt in for the first
        occupations."""
        key, k_occ, k_pos, k_walk = jax.random.split(key, 4)
        k_up, k_down, _ = self._occupations(model, k_occ, self.batch)
        dtype = jnp.result_type(float)
        xs = self._shard(self.system.initial_positions(k_pos, self.batch, dtype))
        walkers = init_walkers(lambda x: model.log_psi_batch(x, k_up, k_down), xs, self.width)
        walkers = eqx.filter_jit(self._walk, donate="none")(
            model, walkers, k_up, k_down, k_walk, self.burn_in)
        params = eqx.filter(model, trainable(model))
        opt_state = (self.optimizer.init() if isinstance(self.optimizer, SR)
                     else self.optimizer.init(params))
        state = self.replicate(
            QuantumTrainState(model, opt_state, walkers, jnp.asarray(0, jnp.int32), key,
                              Guard.fresh()))
        return self.shard_walkers(state)

    def shard_walkers(self, state: QuantumTrainState) -> QuantumTrainState:
        """``state`` with the walkers' per-walker arrays split over the devices along the
        batch (as a training step returns them, so the step compiles once)."""
        return eqx.tree_at(lambda s: s.walkers, state,
                           shard_leading(state.walkers, self.mesh))

    def _gradients(self, model: DensityMatrix, k_up, k_down, xs, f, e_loc):
        spec = trainable(model)
        params, static = eqx.partition(model, spec)
        f_c = jax.lax.stop_gradient(f - jnp.mean(f))
        # clip and centre the real part (the energy); the imaginary part of a complex
        # E_loc has mean zero and is kept as it is
        e_re = _clipped(jnp.real(e_loc), self.clip)
        e_c = jax.lax.stop_gradient(e_re - jnp.mean(e_re))
        e_im = jax.lax.stop_gradient(jnp.imag(e_loc))

        batch = xs.shape[0]

        def surrogate(p, chunk):
            x, ku, kd, fc, ec, ei = chunk
            m = eqx.combine(p, static)
            log_p = m.occupations.log_prob_batch(ku, kd)
            # f - mean is zero where p is fixed (T = 0), so log p adds nothing there
            reinforce = jnp.sum(fc * jnp.where(jnp.isfinite(log_p), log_p, 0.0))
            # 2 Re E[(E_loc - E)^* d ln Psi] with d ln Psi = d ln|Psi| + i d arg Psi (the
            # imaginary parts are zero for a real wavefunction)
            log_value = jax.vmap(m.log_value)(x, ku, kd)
            return (reinforce + 2.0 * jnp.sum(ec * jnp.real(log_value)
                                              + ei * jnp.imag(log_value))) / batch, None

        data = (xs, k_up, k_down, f_c, e_c, e_im)
        if self._grad_chunk is None:
            grads = jax.grad(surrogate, has_aux=True)(params, data)[0]
        else:
            grads, _ = accumulate_grad(surrogate, params, to_chunks(data, self._grad_chunk))
        return grads, params, static, e_c, f_c

    @property
    def _grad_chunk(self) -> int | None:
        """The chunk of the gradient and SR passes: ``chunk_size`` when it divides the
        batch and is smaller, else None (all at once)."""
        c = self.chunk_size
        return c if c is not None and c < self.batch and self.batch % c == 0 else None

    def _sr_update(self, state, params, static, grads, k_up, k_down, xs):
        """Stochastic reconfiguration with the blocks ``p`` (occupations) and ``psi``."""
        occ_params, psi_params = params.occupations, params.wavefunction

        def log_p(prm, sample):
            m = eqx.combine(eqx.tree_at(lambda q: q.occupations, params, prm), static)
            return m.occupations.log_prob(*sample)

        def log_psi(prm, sample):  # complex ln Psi for a complex wavefunction (2 B rows)
            m = eqx.combine(eqx.tree_at(lambda q: q.wavefunction, params, prm), static)
            return m.log_value(*sample)

        blocks = self.optimizer.blocks
        scores, block_grads = {}, {}
        if "p" in blocks:
            scores["p"] = score_matrix(log_p, occ_params, (k_up, k_down),
                                       chunk_size=self.chunk_size)
            block_grads["p"] = grads.occupations
        if "psi" in blocks:
            scores["psi"] = score_matrix(log_psi, psi_params, (xs, k_up, k_down),
                                         chunk_size=self.chunk_size)
            block_grads["psi"] = grads.wavefunction
        block_updates, opt_state = self.optimizer.update(block_grads, scores, state.opt_state)
        # a block the optimiser does not hold (p at T = 0: no parameters) gets no update
        updates = jax.tree.map(jnp.zeros_like, grads)
        if "p" in blocks:
            updates = eqx.tree_at(lambda q: q.occupations, updates, block_updates["p"],
                                  is_leaf=lambda x: x is None)
        if "psi" in blocks:
            updates = eqx.tree_at(lambda q: q.wavefunction, updates, block_updates["psi"],
                                  is_leaf=lambda x: x is None)
        return updates, opt_state

    def _step(self, state: QuantumTrainState) -> tuple[QuantumTrainState, QuantumStats]:
        key, k_occ, k_walk, k_lap = jax.random.split(state.key, 4)
        model = state.model
        k_up, k_down, log_p = self._occupations(model, k_occ, self.batch)
        walkers = self._walk(model, state.walkers, k_up, k_down, k_walk, self.sweeps)
        if self.fault is not None:
            walkers = eqx.tree_at(lambda w: w.positions, walkers, self.fault.corrupt(
                "walkers", walkers.positions, state.step, state.guard))
        xs = self._shard(walkers.positions)
        e_loc = self._local_energies(model, xs, k_up, k_down, k_lap)
        stats, f = self._stats(log_p, e_loc, walkers)
        grads, params, static, _, _ = self._gradients(model, k_up, k_down, xs, f, e_loc)
        loss = stats.free_energy
        if self.fault is not None:
            loss = self.fault.corrupt("loss", loss, state.step, state.guard)
            grads = self.fault.corrupt("gradients", grads, state.step, state.guard)
            stats = eqx.tree_at(lambda s: s.free_energy, stats, loss)
        code, leaf = fault_code(loss, grads, walkers.positions)
        if isinstance(self.optimizer, SR):
            updates, opt_state = self._sr_update(state, params, static, grads, k_up, k_down,
                                                 xs)
        else:
            updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, scale_updates(updates, state.guard))
        # a non-finite step changes nothing but the step, the key and the guard
        ok = code == 0
        model = eqx.combine(keep_if(ok, new_params, params), static)
        opt_state = keep_if(ok, opt_state, state.opt_state)
        walkers = keep_if(ok, walkers, state.walkers)
        return QuantumTrainState(model, opt_state, walkers, state.step + 1, key,
                                 next_guard(state.guard, code, leaf)), stats

    @eqx.filter_jit(donate="all-except-first")
    def step(self, state: QuantumTrainState) -> tuple[QuantumTrainState, QuantumStats]:
        """One optimisation step (see the module docs)."""
        return self._step(state)

    @eqx.filter_jit
    def _evaluate_chunk(self, model, walkers, key):
        k_occ, k_walk, k_lap = jax.random.split(key, 3)
        k_up, k_down, log_p = self._occupations(model, k_occ, self.batch)
        walkers = self._walk(model, walkers, k_up, k_down, k_walk, self.eval_sweeps)
        e_loc = self._local_energies(model, walkers.positions, k_up, k_down, k_lap)
        return walkers, log_p, e_loc

    def evaluate(self, state: QuantumTrainState, *, key: PRNGKeyArray, n_samples: int
                 ) -> dict[str, float]:
        """``F``, ``E``, ``S`` with standard errors from ``n_samples`` fresh occupations
        (in chunks of ``batch``; each chunk re-thermalises the walkers for its ``K`` with
        ``eval_sweeps`` sweeps).

        Walker ``b`` carries its position from one chunk to the next, so its samples are
        correlated however many sweeps separate them; the walkers are independent of each
        other. The standard errors of ``F`` and ``E`` are therefore those of the ``batch``
        per-walker means (blocking by walker: no independence between chunks assumed);
        ``S`` depends on the independent draws of ``K`` only and keeps the plain error.
        ``free_energy_stderr_iid`` and ``energy_stderr_iid`` are the plain errors (every
        sample independent), for comparison: their ratio to the blocked ones shows how much
        the chunks of one walker remember each other.
        """
        chunks = max(1, -(-int(n_samples) // self.batch))
        walkers, log_ps, e_locs, acc = state.walkers, [], [], []
        for k in jax.random.split(key, chunks):
            walkers, log_p, e_loc = self._evaluate_chunk(state.model, walkers, k)
            log_ps.append(log_p)
            e_locs.append(e_loc)
            acc.append(walkers.mean_acceptance)
        log_p, e_loc = jnp.concatenate(log_ps), jnp.concatenate(e_locs)
        stats, _ = self._stats(log_p, e_loc, walkers)
        out = stats.as_dict()
        out["free_energy_stderr_iid"] = out["free_energy_stderr"]
        out["energy_stderr_iid"] = out["energy_stderr"]
        if chunks > 1:
            e_re = [jnp.real(e) for e in e_locs]
            out["free_energy_stderr"] = _walker_blocked_stderr(
                [self.temperature * lp + e for lp, e in zip(log_ps, e_re, strict=True)])
            out["energy_stderr"] = _walker_blocked_stderr(e_re)
        out["acceptance"] = float(jnp.mean(jnp.stack(acc)))
        out["samples"] = int(log_p.shape[0])
        return out
