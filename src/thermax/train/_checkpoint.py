"""Atomic checkpoints of the training state with Equinox serialisation (no pickle).

Layout of ``DIR/checkpoint/``: ``state-<step>.eqx`` (the leaves of :class:`TrainState`,
typed PRNG keys stored as their raw key data) and ``latest.json`` naming the newest
complete file plus run metadata. Both are written to a temporary name and moved into
place with ``os.replace``, so a crash at any moment leaves the previous checkpoint
readable. The last ``keep`` state files are kept.

Arrays are gathered to the host whole (a state sharded over devices or processes is
stored unsharded), so a checkpoint resumes on any number of devices: the trainer's
``place`` puts the loaded state back onto its own mesh. In a multi-process run every
process must call :func:`save_checkpoint` (to take part in the gather); only the one
given ``write=True`` writes.
"""

import json
import os
from pathlib import Path

import equinox as eqx
import jax
import numpy as np


def _to_raw(state: eqx.Module) -> eqx.Module:
    return eqx.tree_at(lambda s: s.key, state, jax.random.key_data(state.key))


def _to_host(x):
    """A whole array on the host: fully replicated or local arrays directly, arrays
    sharded across processes through an all-gather."""
    if not isinstance(x, jax.Array):
        return x
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(directory: str | Path, state: eqx.Module, meta: dict, *,
                    keep: int = 2, write: bool = True) -> Path:
    """Write ``state`` (a :class:`~thermax.train.TrainState` or any Equinox state with
    ``step`` and ``key`` fields) and ``meta`` atomically; return the state file's path.

    ``write=False`` gathers the state but writes nothing (the other processes of a
    multi-process run).
    """
    directory = Path(directory)
    step = int(state.step)
    path = directory / f"state-{step:09d}.eqx"
    host = jax.tree.map(_to_host, _to_raw(state))
    if not write:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.tmp"):  # left by a crash in an earlier write
        stale.unlink(missing_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        eqx.tree_serialise_leaves(f, host)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _atomic_write_text(directory / "latest.json",
                       json.dumps({"file": path.name, "step": step, **meta}, indent=1))
    for old in sorted(directory.glob("state-*.eqx"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint_meta(directory: str | Path) -> dict | None:
    """The metadata of the newest checkpoint in ``directory``, or ``None`` if there is none."""
    latest = Path(directory) / "latest.json"
    if not latest.is_file():
        return None
    return json.loads(latest.read_text())


def load_checkpoint(directory: str | Path, like: eqx.Module) -> tuple[eqx.Module, dict]:
    """Read the newest checkpoint into the structure of ``like`` (a freshly made state)."""
    meta = read_checkpoint_meta(directory)
    if meta is None:
        raise FileNotFoundError(f"no checkpoint in {str(directory)!r}")
    raw = eqx.tree_deserialise_leaves(Path(directory) / meta["file"], _to_raw(like))
    key = jax.random.wrap_key_data(raw.key, impl=jax.random.key_impl(like.key))
    return eqx.tree_at(lambda s: s.key, raw, key), meta
