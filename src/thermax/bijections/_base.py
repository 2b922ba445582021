"""The abstract bijection every normalizing-flow layer of thermax implements."""

import abc
from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float, PRNGKeyArray

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

    **Randomness.** A few bijections are *stochastic estimators* of an exact map (a
    continuous flow whose log-det is estimated by Hutchinson's trace estimator). They set
    ``uses_key`` to true and their hooks take a keyword ``key``; the public methods accept
    an optional ``key`` and hand it to the hook only then. Without a key every bijection
    is exact. Deterministic bijections ignore a key they are given, and their hooks take
    none. Composites (:class:`Chain`, :class:`Scan`, :class:`Invert`) report ``uses_key``
    from their children and split the key among them.
    """

    shape: eqx.AbstractVar[tuple[int, ...]]
    #: Whether the hooks consume a ``key`` (a stochastic log-det estimate). Composites
    #: override it with a property of their children.
    uses_key: ClassVar[bool] = False

    def transform_and_log_det(self, z: Float[Array, "*shape"], *,
                              key: PRNGKeyArray | None = None
                              ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """``x = g(z)`` and ``ln |det dx/dz|`` (estimated with ``key`` where
        ``uses_key``; exact without one)."""
        check_shape(z, self.shape, f"{type(self).__name__}.transform_and_log_det")
        if self.uses_key:
            return self._transform_and_log_det(z, key=key)
        return self._transform_and_log_det(z)

    def inverse_and_log_det(self, x: Float[Array, "*shape"], *,
                            key: PRNGKeyArray | None = None
                            ) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
        """``z = g^{-1}(x)`` and ``ln |det dz/dx|`` (estimated with ``key`` where
        ``uses_key``; exact without one)."""
        check_shape(x, self.shape, f"{type(self).__name__}.inverse_and_log_det")
        if self.uses_key:
            return self._inverse_and_log_det(x, key=key)
        return self._inverse_and_log_det(x)

    def transform(self, z: Float[Array, "*shape"], *, key: PRNGKeyArray | None = None
                  ) -> Float[Array, "*shape"]:
        """``x = g(z)``."""
        return self.transform_and_log_det(z, key=key)[0]

    def inverse(self, x: Float[Array, "*shape"], *, key: PRNGKeyArray | None = None
                ) -> Float[Array, "*shape"]:
        """``z = g^{-1}(x)``."""
        return self.inverse_and_log_det(x, key=key)[0]

    @abc.abstractmethod
    def _transform_and_log_det(self, z: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    @abc.abstractmethod
    def _inverse_and_log_det(self, x: Array) -> tuple[Array, Array]:
        raise NotImplementedError
