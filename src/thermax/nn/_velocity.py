"""The abstract velocity field ``v(t, x)`` a continuous normalizing flow integrates.

A continuous flow solves ``dx/dt = v(t, x)`` and ``d ln p/dt = -div v``. The field only
has to give the velocity; the divergence comes from a divergence estimator of
:class:`thermax.bijections.ContinuousFlow` (exact by forward-mode autodiff, or
Hutchinson). Fields that know a cheaper *exact* divergence (the Laplacian of a
Monge–Ampère potential, say) set ``analytic_divergence = True`` and override
:meth:`velocity_and_divergence`; the exact estimator then uses it.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_shape


def jacobian_trace(fn, x: Array) -> Array:
    """``tr d fn/dx`` at ``x`` by forward mode: one JVP per coordinate, vmapped.

    ``fn`` maps an array of ``x``'s shape to one of the same shape. Cost: ``x.size``
    forward passes batched into one (memory ``x.size`` times one pass).
    """
    flat = x.reshape(-1)
    basis = jnp.eye(flat.size, dtype=x.dtype)

    def diagonal_entry(e):
        _, tangent = jax.jvp(lambda y: fn(y.reshape(x.shape)).reshape(-1), (flat,), (e,))
        return jnp.vdot(e, tangent)

    return jnp.sum(jax.vmap(diagonal_entry)(basis))


class AbstractVelocityField(eqx.Module):
    """A velocity field ``v(t, x)`` on configurations of shape ``shape``.

    Subclasses set ``shape`` and implement ``_velocity(t, x)``. ``__call__`` checks the
    shape once (at trace time). :meth:`divergence` is exact: the field's own formula
    where ``analytic_divergence`` is true, otherwise the trace of the forward-mode
    Jacobian (:func:`jacobian_trace`).
    """

    shape: eqx.AbstractVar[tuple[int, ...]]
    #: True when :meth:`velocity_and_divergence` is overridden with an exact formula
    #: cheaper than differentiating the field.
    analytic_divergence: ClassVar[bool] = False

    def __call__(self, t: Float[Array, ""], x: Float[Array, "*shape"]
                 ) -> Float[Array, "*shape"]:
        """The velocity ``v(t, x)``, of ``x``'s shape."""
        check_shape(x, self.shape, f"{type(self).__name__}")
        return self._velocity(t, x)

    def velocity_and_divergence(self, t: Float[Array, ""], x: Float[Array, "*shape"]
                                ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """``v(t, x)`` and its exact divergence ``sum_i dv_i/dx_i``."""
        check_shape(x, self.shape, f"{type(self).__name__}")
        return self._velocity(t, x), jacobian_trace(lambda y: self._velocity(t, y), x)

    def divergence(self, t: Float[Array, ""], x: Float[Array, "*shape"]) -> Float[Array, ""]:
        """The exact divergence ``sum_i dv_i/dx_i`` at ``(t, x)``."""
        return self.velocity_and_divergence(t, x)[1]

    @abc.abstractmethod
    def _velocity(self, t: Array, x: Array) -> Array:
        raise NotImplementedError
