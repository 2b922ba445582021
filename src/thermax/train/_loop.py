"""The training loop shared by every run driver: steps, history, checkpoints, faults.

:func:`train_loop` drives any trainer with a jitted ``step(state) -> (state, stats)`` and
a ``place(state)`` that puts a state read from disk onto its device mesh (classical
:class:`~thermax.train.Trainer` and :class:`~thermax.quantum.QuantumTrainer`). It

- logs a row to ``history.csv`` (and any extra loggers) every ``log_every`` steps,
- writes an atomic checkpoint every ``checkpoint_every`` steps, keeping the last ``keep``,
- reads the state's :class:`~thermax.train.Guard` after every step and applies the
  non-finite policy (``skip``, ``restore`` or ``stop``; see :mod:`thermax.train._guard`),
- on Ctrl-C saves the state it holds, so nothing but the step in flight is lost,
- in a multi-process run (``jax.distributed``) lets only process 0 write files, while
  every process takes part in gathering a sharded state for a checkpoint.
"""

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
from tqdm.auto import tqdm

from ._checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from ._guard import LR_FACTOR, POLICIES, describe, gradient_leaf_names


class Interrupted(Exception):
    """Raised by a run driver when it stops early on request (tests, Ctrl-C)."""


class NonFiniteError(RuntimeError):
    """Training met a NaN or infinity and the policy is to stop; the last checkpoint is
    kept."""


def is_writer() -> bool:
    """True in the process that writes files (process 0; the only one without
    ``jax.distributed``)."""
    return jax.process_index() == 0


@dataclasses.dataclass
class LoopSettings:
    """How :func:`train_loop` runs: from the run's options (``steps``, ``log_every``,
    ``checkpoint_every``, ``keep_checkpoints``, ``on_nonfinite``)."""

    steps: int
    log_every: int = 10
    checkpoint_every: int = 100
    keep: int = 2
    policy: str = "skip"
    #: stop after this many non-finite steps in a row (a fault that skipping or restoring
    #: does not cure)
    max_in_a_row: int = 5

    @classmethod
    def from_config(cls, cfg: dict) -> "LoopSettings":
        """Settings from a run's option dictionary (missing options get defaults)."""
        policy = cfg.get("on_nonfinite", "skip")
        if policy not in POLICIES:
            raise ValueError(f"on_nonfinite must be one of {', '.join(POLICIES)}, got "
                             f"{policy!r}")
        return cls(steps=int(cfg["steps"]), log_every=max(1, int(cfg.get("log_every", 10))),
                   checkpoint_every=int(cfg.get("checkpoint_every", 0)),
                   keep=max(1, int(cfg.get("keep_checkpoints", 2))), policy=policy)


def train_loop(trainer, state, *, settings: LoopSettings, ckpt_dir: Path, history,
               name: str, wall: Callable[[], float], postfix: Callable[[dict], str],
               progress: bool = True, stop_after_step: int | None = None,
               loggers: Sequence[Callable[[dict], None]] = (),
               log: Callable[[str], None] | None = None) -> tuple[Any, list[dict]]:
    """Train ``state`` with ``trainer`` up to ``settings.steps``; return the final state
    and the list of faults met (``{"step", "what", "action"}`` each).

    ``history`` is a :class:`~thermax.train._records.History`; ``postfix(row)`` gives the
    progress-bar text; ``loggers`` are called with every logged row; ``log`` prints a
    message (default: to stderr, above the progress bar).
    """
    writer = is_writer()
    log = log or (lambda msg: tqdm.write(f"thermax: {msg}", file=sys.stderr))
    leaf_names = gradient_leaf_names(_params(state))
    faults: list[dict] = []
    in_a_row = 0
    restores: dict[int, int] = {}

    def checkpoint(s) -> None:
        save_checkpoint(ckpt_dir, s, {"wall_time_s": wall(), "system": name},
                        keep=settings.keep, write=writer)

    start = int(state.step)
    bar = tqdm(total=settings.steps, initial=start, disable=not (progress and writer),
               unit="step", dynamic_ncols=True, desc=name)
    try:
        while int(state.step) < settings.steps:
            state, stats = trainer.step(state)
            done = int(state.step)
            code = int(state.guard.code)
            if code:
                what = describe(code, int(state.guard.leaf), done, leaf_names)
                meta = read_checkpoint_meta(ckpt_dir)
                last = "none" if meta is None else f"step {meta['step']}"
                if settings.policy == "stop":
                    raise NonFiniteError(
                        f"{what}; stopped (policy 'stop') without saving this step; the last "
                        f"checkpoint ({last}) is intact. Try a lower --lr or --clip-grad, "
                        "then --resume.")
                in_a_row += 1
                if in_a_row >= settings.max_in_a_row:
                    raise NonFiniteError(
                        f"{what}; {in_a_row} non-finite steps in a row (policy "
                        f"{settings.policy!r}); stopped with the last checkpoint ({last}) "
                        "intact. Try a lower --lr or --clip-grad, then --resume.")
                if settings.policy == "restore" and meta is not None:
                    restores[meta["step"]] = restores.get(meta["step"], 0) + 1
                    if restores[meta["step"]] > settings.max_in_a_row:
                        raise NonFiniteError(
                            f"{what}; restored the checkpoint at {last} "
                            f"{settings.max_in_a_row} times already; stopped with it intact")
                    state = _restore(trainer, state, ckpt_dir)
                    history.truncate(int(state.step))
                    action = (f"restored the checkpoint at {last}, learning rate x{LR_FACTOR} "
                              f"(now x{float(state.guard.lr_scale):g})")
                    bar.n = int(state.step)
                else:  # skip (or restore with no checkpoint yet)
                    action = (f"update skipped, learning rate x{LR_FACTOR} "
                              f"(now x{float(state.guard.lr_scale):g})")
                faults.append({"step": done, "what": what, "action": action})
                log(f"{what}: {action}")
                bar.refresh()
                continue
            in_a_row = 0
            if done % settings.log_every == 0 or done == settings.steps:
                row = {"step": done, **stats.as_dict(), "wall_time_s": wall()}
                if writer:
                    history.append(row)
                    for logger in loggers:
                        logger(row)
                bar.set_postfix_str(postfix(row))
            bar.update(done - bar.n)
            if settings.checkpoint_every and done % settings.checkpoint_every == 0:
                checkpoint(state)
                in_a_row = 0
            if stop_after_step is not None and done >= stop_after_step:
                raise Interrupted(f"stopped after step {done} on request")
    except KeyboardInterrupt:
        bar.close()
        try:  # the step in flight may have consumed (donated) ``state``; then the last
            checkpoint(state)  # periodic checkpoint stands
        except RuntimeError:
            pass
        raise
    finally:
        bar.close()
    checkpoint(state)
    return state, faults


def local_copy(tree):
    """``tree`` with every array local to this process (a no-op with one process): for
    host-side work on a trained state (plots) in a multi-process run."""
    if jax.process_count() == 1:
        return tree
    import jax.numpy as jnp

    from ._checkpoint import _to_host

    def local(x):
        if not isinstance(x, jax.Array):
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(jnp.asarray(_to_host(jax.random.key_data(x))),
                                            impl=jax.random.key_impl(x))
        return jnp.asarray(_to_host(x))

    return jax.tree.map(local, tree)


def _params(state):
    import equinox as eqx

    return eqx.filter(state.model, eqx.is_inexact_array)


def _restore(trainer, state, ckpt_dir: Path):
    """The last checkpoint, on the trainer's devices, with the fault counted and the
    learning-rate scale of ``state`` (already reduced) carried over."""
    import equinox as eqx
    import jax.numpy as jnp

    loaded, _ = load_checkpoint(ckpt_dir, state)
    guard = eqx.tree_at(lambda g: (g.lr_scale, g.faults), loaded.guard,
                        (jnp.asarray(state.guard.lr_scale), jnp.asarray(state.guard.faults)))
    return trainer.place(eqx.tree_at(lambda s: s.guard, loaded, guard))


def wall_clock(before: float = 0.0) -> Callable[[], float]:
    """Seconds since now plus ``before`` (time already spent before a resume)."""
    t0 = time.perf_counter()
    return lambda: before + time.perf_counter() - t0
