"""Atomic checkpoints of the training state with Equinox serialisation (no pickle).

Layout of ``DIR/checkpoint/``: ``state-<step>.eqx`` (the leaves of :class:`TrainState`,
typed PRNG keys stored as their raw key data) and ``latest.json`` naming the newest
complete file plus run metadata. Both are written to a temporary name and moved into
place with ``os.replace``, so a crash at any moment leaves the previous checkpoint
readable. The last ``keep`` state files are kept.
"""

import json
import os
from pathlib import Path

import equinox as eqx
import jax


def _to_raw(state: eqx.Module) -> eqx.Module:
    return eqx.tree_at(lambda s: s.key, state, jax.random.key_data(state.key))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(directory: str | Path, state: eqx.Module, meta: dict, *,
                    keep: int = 2) -> Path:
    """Write ``state`` (a :class:`~thermax.train.TrainState` or any Equinox state with
    ``step`` and ``key`` fields) and ``meta`` atomically; return the state file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = int(state.step)
    path = directory / f"state-{step:09d}.eqx"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        eqx.tree_serialise_leaves(f, _to_raw(state))
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
