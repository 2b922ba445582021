"""Affine bijections: elementwise (diagonal), full lower-triangular, and one shared scale."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._base import AbstractBijection


def _default_dtype(dtype, *arrays):
    """``dtype`` if given, else that of the first array given, else the default float."""
    if dtype is not None:
        return jnp.dtype(dtype)
    for a in arrays:
        if a is not None and jnp.issubdtype(jnp.result_type(a), jnp.floating):
            return jnp.dtype(jnp.result_type(a))
    return jnp.dtype(jnp.result_type(float))


def _array_of_shape(value, shape: tuple[int, ...], dtype, name: str, cls: str) -> Array:
    if value is None:
        return jnp.zeros(shape, dtype)
    value = jnp.asarray(value, dtype)
    if value.shape != shape:
        raise ValueError(f"{cls}: {name} must have shape {shape}, got {value.shape}")
    return value


class ElementwiseAffine(AbstractBijection):
    """Elementwise affine map ``x = loc + exp(log_scale) * z``.

    ``ln |det dx/dz| = sum(log_scale)``; the inverse is ``z = (x - loc) * exp(-log_scale)``.
    Both directions are equally cheap (elementwise).

    Args:
        shape: the configuration shape.
        loc: shift, an array of ``shape`` (default zeros).
        log_scale: log of the scale, an array of ``shape`` (default zeros: the identity).
        dtype: dtype of the parameters (default: that of ``loc``/``log_scale``, else the
            default float).

    Example:
        >>> b = ElementwiseAffine((3,), loc=jnp.ones(3), log_scale=jnp.zeros(3))
        >>> b.transform_and_log_det(jnp.zeros(3))
        (Array([1., 1., 1.]), Array(0.))
    """

    loc: Float[Array, "*shape"]
    log_scale: Float[Array, "*shape"]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, loc: Float[ArrayLike, "*shape"] | None = None,
                 log_scale: Float[ArrayLike, "*shape"] | None = None, dtype=None):
        self.shape = tuple(int(s) for s in shape)
        dtype = _default_dtype(dtype, loc, log_scale)
        self.loc = _array_of_shape(loc, self.shape, dtype, "loc", "ElementwiseAffine")
        self.log_scale = _array_of_shape(log_scale, self.shape, dtype, "log_scale",
                                         "ElementwiseAffine")

    def _transform_and_log_det(self, z):
        return self.loc + jnp.exp(self.log_scale) * z, jnp.sum(self.log_scale)

    def _inverse_and_log_det(self, x):
        return (x - self.loc) * jnp.exp(-self.log_scale), -jnp.sum(self.log_scale)


class Affine(AbstractBijection):
    """Full affine map of a vector, ``x = loc + L z``, ``L`` lower triangular.

    ``L = tril + diag(exp(log_diag))`` with ``tril`` the strict lower part (its diagonal
    and upper part are ignored), so ``L`` is always invertible and
    ``ln |det dx/dz| = sum(log_diag)``. The inverse is the triangular solve
    ``z = L^{-1} (x - loc)``. The forward direction is a matvec (``O(d^2)``), the inverse
    a triangular solve (also ``O(d^2)``, a little slower in practice).

    Any Gaussian ``N(loc, L L^T)`` is this map applied to a standard normal.

    Args:
        dim: the length ``d`` of the vector (the bijection's shape is ``(d,)``).
        loc: shift, shape ``(d,)`` (default zeros).
        scale_tril: the matrix ``L``, lower triangular with a positive diagonal, shape
            ``(d, d)`` (default the identity). Its upper part is ignored. It is stored as
            its strict lower part and the log of its diagonal.
        dtype: dtype of the parameters (default: that of ``loc``/``scale_tril``, else the
            default float).

    Example:
        >>> b = Affine(2, loc=jnp.array([1.0, 0.0]),
        ...            scale_tril=jnp.array([[2.0, 0.0], [0.5, 1.0]]))
        >>> x, log_det = b.transform_and_log_det(jnp.ones(2))   # x = [3, 1.5], ln 2
    """

    loc: Float[Array, " dim"]
    tril: Float[Array, "dim dim"]
    log_diag: Float[Array, " dim"]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, dim: int, *, loc: Float[ArrayLike, " dim"] | None = None,
                 scale_tril: Float[ArrayLike, "dim dim"] | None = None, dtype=None):
        dim = int(dim)
        if dim < 1:
            raise ValueError(f"Affine: dim must be >= 1, got {dim}")
        self.shape = (dim,)
        dtype = _default_dtype(dtype, loc, scale_tril)
        self.loc = _array_of_shape(loc, (dim,), dtype, "loc", "Affine")
        if scale_tril is None:
            self.tril = jnp.zeros((dim, dim), dtype)
            self.log_diag = jnp.zeros((dim,), dtype)
        else:
            scale_tril = _array_of_shape(scale_tril, (dim, dim), dtype, "scale_tril", "Affine")
            diag = jnp.diagonal(scale_tril)
            message = "Affine: the diagonal of scale_tril must be positive"
            log_diag = jnp.log(diag)
            if isinstance(diag, jax.core.Tracer):
                log_diag = eqx.error_if(log_diag, jnp.any(diag <= 0), message)
            elif np.any(np.asarray(diag) <= 0):
                raise ValueError(f"{message}, got {np.asarray(diag)}")
            self.tril = jnp.tril(scale_tril, -1)
            self.log_diag = log_diag

    @property
    def scale_tril(self) -> Float[Array, "dim dim"]:
        """The lower-triangular matrix ``L``."""
        return jnp.tril(self.tril, -1) + jnp.diag(jnp.exp(self.log_diag))

    def _transform_and_log_det(self, z):
        return self.loc + self.scale_tril @ z, jnp.sum(self.log_diag)

    def _inverse_and_log_det(self, x):
        z = jsl.solve_triangular(self.scale_tril, x - self.loc, lower=True)
        return z, -jnp.sum(self.log_diag)



class Scale(AbstractBijection):
    """One learnable scale shared by every entry, ``x = exp(a) z``.

    ``ln |det dx/dz| = a * size`` (``size`` the number of entries); the inverse is
    ``z = exp(-a) x``. A multiple of the identity commutes with permutations and rotations,
    so it keeps a particle flow permutation and rotation equivariant (unlike
    :class:`ElementwiseAffine`). Both directions are equally cheap.

    Args:
        shape: the configuration shape.
        log_scale: the initial ``a`` (default 0: the identity).
        dtype: dtype of ``a`` (default: that of ``log_scale`` if an array, else the
            default float).

    Example:
        >>> b = Scale((2, 3), log_scale=jnp.log(2.0))
        >>> x, log_det = b.transform_and_log_det(jnp.ones((2, 3)))   # x = 2, 6 ln 2
    """

    log_scale: Float[Array, ""]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], log_scale: Float[ArrayLike, ""] = 0.0, *,
                 dtype=None):
        self.shape = tuple(int(s) for s in shape)
        if any(s < 1 for s in self.shape):
            raise ValueError(f"Scale: every axis of shape must be >= 1, got {self.shape}")
        dtype = _default_dtype(dtype, log_scale if eqx.is_array(log_scale) else None)
        self.log_scale = _array_of_shape(log_scale, (), dtype, "log_scale", "Scale")

    def _transform_and_log_det(self, z):
        size = math.prod(self.shape)
        return jnp.exp(self.log_scale) * z, self.log_scale * size

    def _inverse_and_log_det(self, x):
        size = math.prod(self.shape)
        return jnp.exp(-self.log_scale) * x, -self.log_scale * size


class Identity(AbstractBijection):
    """The identity map ``x = z``, ``ln |det| = 0``; no parameters.

    The non-interacting limit of a flow wavefunction (``Psi_K`` = plain Slater
    determinants) and a placeholder where a bijection is required.

    Example:
        >>> Identity((3, 2)).transform_and_log_det(jnp.ones((3, 2)))   # (ones, 0.0)
    """

    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(int(s) for s in shape)
        if any(s < 1 for s in self.shape):
            raise ValueError(f"Identity: every axis of shape must be >= 1, got {self.shape}")

    def _transform_and_log_det(self, z):
        return z, jnp.zeros((), z.dtype)

    def _inverse_and_log_det(self, x):
        return x, jnp.zeros((), x.dtype)
