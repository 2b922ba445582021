"""Chunks of a batch: memory bounded by the chunk, results the same as all at once.

A batch of ``B`` samples is cut into ``B / chunk`` chunks that are processed one after
the other (``jax.lax.map`` / ``jax.lax.scan``), so the largest intermediate (a network's
activations, a Laplacian, a backward pass) holds ``chunk`` samples, not ``B``. Chunk ``c``
holds the samples ``c, c + n, c + 2n, ...`` (``n = B / chunk``): with the batch split over
devices in contiguous blocks, every chunk is itself split over all devices, so chunking
and sharding compose. Sample ``i`` keeps its own key, so chunked and unchunked runs draw
the same samples; only the order of floating-point sums changes.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import PyTree


def check_chunk_size(chunk_size: int | None, batch: int, devices: int = 1,
                     owner: str = "chunk_size") -> None:
    """Raise ``ValueError`` unless ``chunk_size`` is None or a divisor of ``batch`` that
    the device count divides."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{owner} must be a positive integer or None, got {chunk_size!r}")
    if batch % chunk_size:
        raise ValueError(f"{owner} {chunk_size} must divide the batch {batch}")
    if chunk_size % devices:
        raise ValueError(f"{owner} {chunk_size} must be divisible by the number of devices "
                         f"{devices} (every chunk is split over all devices)")


def to_chunks(tree: PyTree, chunk_size: int) -> PyTree:
    """``(B, ...)`` leaves -> ``(B / chunk_size, chunk_size, ...)``, chunk ``c`` holding
    samples ``c, c + n, ...``."""
    def cut(x):
        n = x.shape[0] // chunk_size
        return jnp.swapaxes(x.reshape(chunk_size, n, *x.shape[1:]), 0, 1)
    return jax.tree.map(cut, tree)


def from_chunks(tree: PyTree) -> PyTree:
    """The inverse of :func:`to_chunks`."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:]), tree)


def map_chunks(fn: Callable, tree: PyTree, chunk_size: int | None) -> PyTree:
    """``fn(tree)`` computed ``chunk_size`` samples at a time (``fn`` maps a batch to a
    batch along the leading axis); ``chunk_size=None``: all at once."""
    if chunk_size is None or chunk_size >= jax.tree.leaves(tree)[0].shape[0]:
        return fn(tree)
    return from_chunks(jax.lax.map(fn, to_chunks(tree, chunk_size)))


def accumulate_grad(fn: Callable, params: PyTree, chunks: PyTree) -> tuple[PyTree, PyTree]:
    """Sum over chunks of ``jax.grad`` of ``fn(params, chunk) -> (value, aux)``.

    Returns the summed gradient and the per-chunk ``aux`` stacked along a leading chunk
    axis. The gradient of each chunk is taken inside the loop, so the backward pass holds
    one chunk's intermediates at a time.
    """
    grad_fn = jax.grad(fn, has_aux=True)

    def body(acc, chunk):
        g, aux = grad_fn(params, chunk)
        return jax.tree.map(jnp.add, acc, g), aux

    zeros = jax.tree.map(jnp.zeros_like, params)
    return jax.lax.scan(body, zeros, chunks)

