"""thermax: deep variational free energy on JAX."""

import importlib.metadata as _metadata
import warnings as _warnings

__version__ = "0.1.0"

# jaxlib 0.10.0-0.10.2 can hang on CPU: a batched LAPACK kernel (LU for determinants,
# Cholesky, ...) splits its batch over XLA's intra-op thread pool and blocks waiting for the
# pieces, so as many concurrent batched kernels as there are pool threads deadlock with the
# process idle. pyproject.toml excludes these versions; warn anyone who installed one anyway.
_AFFECTED_JAXLIB = ("0.10.0", "0.10.1", "0.10.2")
try:
    _jaxlib_version = _metadata.version("jaxlib")
except _metadata.PackageNotFoundError:   # pragma: no cover - jax always brings jaxlib
    _jaxlib_version = None
if _jaxlib_version in _AFFECTED_JAXLIB:
    _warnings.warn(
        f"thermax: jaxlib {_jaxlib_version} can deadlock on CPU when batched linear-algebra "
        "kernels run concurrently (e.g. two Slater determinants over a batch of walkers); "
        "install jax/jaxlib 0.9.2 or >= 0.11.2 (pip install 'jax[cpu]==0.9.2')",
        RuntimeWarning, stacklevel=2)


def __getattr__(name: str):
    """``thermax.sweep`` (:func:`thermax.sweeps.sweep`), imported on first use so that
    ``import thermax`` stays light."""
    if name == "sweep":
        from .sweeps import sweep

        return sweep
    raise AttributeError(f"module 'thermax' has no attribute {name!r}")
