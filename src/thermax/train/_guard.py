"""Non-finite guard: catch a NaN or inf in a training step, name it, and keep the state good.

Every training step (classical :class:`~thermax.train.Trainer` and
:class:`~thermax.quantum.QuantumTrainer`) checks, on the device and without a host sync,
the quantities a step produces: the free-energy estimate (the loss), the gradients and,
for quantum runs, the Metropolis walkers. When any is not finite the step's update is
thrown away (parameters, optimiser state and walkers stay as they were), the learning-rate
scale is halved and the fault is recorded in the state's :class:`Guard`. The run driver
reads the guard after every step and applies the run's policy (``--on-nonfinite``):

``skip``
    go on from the unchanged state with the halved learning rate (fresh samples next step);
``restore``
    reload the last checkpoint and go on from there with the learning rate halved;
``stop``
    stop with :class:`~thermax.train.NonFiniteError`, the last checkpoint intact.

The message names the quantity (and for gradients the first parameter whose gradient was
not finite) and the step. :class:`FaultInjection` corrupts a chosen quantity at a chosen
step, for testing this machinery.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

#: fault bits of :attr:`Guard.code`
LOSS, GRADIENTS, WALKERS = 1, 2, 4
_NAMES = {LOSS: "free energy (loss)", GRADIENTS: "gradients", WALKERS: "walkers"}
POLICIES = ("skip", "restore", "stop")
#: the learning-rate scale is multiplied by this after each non-finite step
LR_FACTOR = 0.5


class Guard(eqx.Module):
    """The non-finite bookkeeping carried in a training state (0-d arrays).

    ``lr_scale`` multiplies every update (halved at each fault); ``faults`` counts the
    faults handled so far; ``code`` holds the fault bits of the latest step (0: clean;
    1 loss, 2 gradients, 4 walkers) and ``leaf`` the index of its first non-finite
    gradient leaf (-1: none).
    """

    lr_scale: Float[Array, ""]
    faults: Int[Array, ""]
    code: Int[Array, ""]
    leaf: Int[Array, ""]

    @classmethod
    def fresh(cls) -> "Guard":
        """No faults yet, the learning rate unscaled."""
        i32 = jnp.int32
        return cls(jnp.asarray(1.0, jnp.result_type(float)), jnp.asarray(0, i32),
                   jnp.asarray(0, i32), jnp.asarray(-1, i32))


class FaultInjection(eqx.Module):
    """A test hook: make ``quantity`` NaN at training step ``step`` (1-based, the step
    number in ``history.csv``), once — only while no fault has been handled yet, so it
    acts like a transient fault (a cosmic ray, a bad batch) that a retry does not repeat.

    ``quantity`` is ``"gradients"`` (the first gradient leaf), ``"loss"`` (the batch
    free energy) or ``"walkers"`` (one walker's position; quantum trainers only).
    """

    quantity: str = eqx.field(static=True)
    step: int = eqx.field(static=True)

    def __check_init__(self):
        if self.quantity not in ("gradients", "loss", "walkers"):
            raise ValueError(f"FaultInjection: quantity must be 'gradients', 'loss' or "
                             f"'walkers', got {self.quantity!r}")
        if self.step < 1:
            raise ValueError(f"FaultInjection: step must be >= 1, got {self.step}")

    def active(self, step: Int[Array, ""], guard: Guard) -> Array:
        """True at the chosen step while no fault has been handled yet."""
        return (step + 1 == self.step) & (guard.faults == 0)

    def corrupt(self, quantity: str, value: PyTree, step: Int[Array, ""],
                guard: Guard) -> PyTree:
        """``value`` with its first leaf's first entry NaN if this hook fires for
        ``quantity`` now; else ``value`` unchanged."""
        if quantity != self.quantity:
            return value
        leaves, treedef = jax.tree.flatten(value)
        first = leaves[0]
        nan = jnp.where(self.active(step, guard), jnp.nan, 0.0).astype(first.dtype)
        leaves[0] = first + nan * (jnp.arange(first.size).reshape(first.shape) == 0)
        return jax.tree.unflatten(treedef, leaves)


def _all_finite(tree: PyTree) -> Array:
    leaves = [x for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def fault_code(loss: Array, grads: PyTree, walkers: PyTree = None) -> tuple[Array, Array]:
    """The fault bits of one step and the index of the first non-finite gradient leaf."""
    grad_leaves = [x for x in jax.tree.leaves(grads) if eqx.is_inexact_array(x)]
    leaf_ok = jnp.stack([jnp.all(jnp.isfinite(x)) for x in grad_leaves] or [jnp.asarray(True)])
    code = (jnp.where(jnp.isfinite(loss), 0, LOSS)
            + jnp.where(jnp.all(leaf_ok), 0, GRADIENTS)
            + jnp.where(_all_finite(walkers), 0, WALKERS)).astype(jnp.int32)
    leaf = jnp.where(jnp.all(leaf_ok), -1, jnp.argmin(leaf_ok)).astype(jnp.int32)
    return code, leaf


def keep_if(ok: Array, new: PyTree, old: PyTree) -> PyTree:
    """``new`` where ``ok``, else ``old``, leaf by leaf (arrays only; the rest from new)."""
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b) if eqx.is_array(a) else a, new, old)


def scale_updates(updates: PyTree, guard: Guard) -> PyTree:
    """Updates times the guard's learning-rate scale."""
    return jax.tree.map(
        lambda u: (u * guard.lr_scale).astype(u.dtype) if eqx.is_inexact_array(u) else u,
        updates)


def next_guard(guard: Guard, code: Array, leaf: Array) -> Guard:
    """The guard after a step with fault bits ``code``."""
    bad = code != 0
    return Guard(jnp.where(bad, guard.lr_scale * LR_FACTOR, guard.lr_scale),
                 guard.faults + bad.astype(jnp.int32), code, leaf)


def describe(code: int, leaf: int, step: int, leaf_names: list[str] | None = None) -> str:
    """A one-line description of a fault, e.g. ``non-finite gradients (first:
    .net.layers[0].weight) at step 6``."""
    names = []
    for bit, name in _NAMES.items():
        if code & bit:
            if bit == GRADIENTS and leaf >= 0 and leaf_names and leaf < len(leaf_names):
                name += f" (first: {leaf_names[leaf]})"
            names.append(name)
    return f"non-finite {' and '.join(names)} at step {step}"


def gradient_leaf_names(params: PyTree) -> list[str]:
    """Path names of the inexact-array leaves of ``params``, in gradient-leaf order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return [jax.tree_util.keystr(path) for path, leaf in flat if eqx.is_inexact_array(leaf)]
