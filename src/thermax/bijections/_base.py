"""The abstract bijection every normalizing-flow layer of thermax implements."""

import abc

import equinox as eqx
from jaxtyping import Array, Float

from .._checks import check_shape


class AbstractBijection(eqx.Module):
    """An invertible map ``x = g(z)`` of one configuration, with its log-Jacobian.

    It acts on **one** configuration of shape ``shape`` (batch with ``jax.vmap``).

    - :meth:`transform_and_log_det` maps ``z -> x`` and returns ``ln |det dx/dz|``;
    - :meth:`inverse_and_log_det` maps ``x -> z`` and returns ``ln |det dz/dx|``
      (the negative of the forward log-det at the same point).

    A flow ``x = g(z)``, ``z ~ N(0, I)`` is trained on its own samples: sampling uses
    the forward direction, ``ln p`` of a *given* ``x`` (importance weights of outside
    samples, Z2 symmetrisation, neural MCMC) uses the inverse. Each concrete class says
    which direction is cheap.

    Subclasses set ``shape`` and implement the private hooks ``_transform_and_log_det``
    and ``_inverse_and_log_det``; the public methods check the argument's shape once, here.
    """

    shape: eqx.AbstractVar[tuple[int, ...]]

    def transform_and_log_det(self, z: Float[Array, "*shape"]
                              ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """``x = g(z)`` and ``ln |det dx/dz|``."""
        check_shape(z, self.shape, f"{type(self).__name__}.transform_and_log_det")
        return self._transform_and_log_det(z)

    def inverse_and_log_det(self, x: Float[Array, "*shape"]
                            ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """``z = g^{-1}(x)`` and ``ln |det dz/dx|``."""
        check_shape(x, self.shape, f"{type(self).__name__}.inverse_and_log_det")
        return self._inverse_and_log_det(x)

    def transform(self, z: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """``x = g(z)``."""
        return self.transform_and_log_det(z)[0]

    def inverse(self, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """``z = g^{-1}(x)``."""
        return self.inverse_and_log_det(x)[0]

    @abc.abstractmethod
    def _transform_and_log_det(self, z: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    @abc.abstractmethod
    def _inverse_and_log_det(self, x: Array) -> tuple[Array, Array]:
        raise NotImplementedError
