"""Argument checks shared by every family of modules (run at trace time, once)."""

from jaxtyping import Array


def check_shape(x: Array, shape: tuple[int, ...], what: str) -> None:
    """Raise a clear ``ValueError`` when ``x`` does not have ``shape`` (trace time)."""
    if tuple(x.shape) != tuple(shape):
        raise ValueError(
            f"{what} expected a configuration of shape {tuple(shape)}, got shape "
            f"{tuple(x.shape)}; batch with jax.vmap rather than passing a batch."
        )
