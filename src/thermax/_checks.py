"""Argument checks shared by every family of modules (run at trace time, once)."""

from jaxtyping import Array


def check_shape(x: Array, shape: tuple[int, ...], what: str) -> None:
    """Raise a clear ``ValueError`` when ``x`` does not have ``shape`` (trace time)."""
    if tuple(x.shape) != tuple(shape):
        raise ValueError(
            f"{what} expected a configuration of shape {tuple(shape)}, got shape "
            f"{tuple(x.shape)}; batch with jax.vmap rather than passing a batch."
        )


def check_batch(xs: Array | None, shape: tuple[int, ...], keys: Array | None,
                what: str) -> None:
    """Raise a clear ``ValueError`` unless ``xs`` is a batch ``(batch, *shape)`` and
    ``keys`` (where given) holds one key per configuration (trace time).

    ``xs=None`` checks only the keys (a batch of samples to draw)."""
    if xs is not None and (xs.ndim != len(shape) + 1 or tuple(xs.shape[1:]) != tuple(shape)):
        raise ValueError(
            f"{what} expected a batch of configurations of shape "
            f"(batch{''.join(f', {s}' for s in shape)}), got shape {tuple(xs.shape)}; for one "
            "configuration use the method without _batch.")
    if keys is None:
        return
    if keys.ndim != 1 or (xs is not None and keys.shape[0] != xs.shape[0]):
        expected = "(batch,)" if xs is None else f"({xs.shape[0]},)"
        raise ValueError(
            f"{what} expected one PRNG key per configuration, a key array of shape "
            f"{expected}, got shape {tuple(keys.shape)}; make them with "
            "jax.random.split(key, batch) from a jax.random.key.")
