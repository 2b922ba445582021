"""The abstract bijection every normalizing-flow layer of thermax implements."""

import abc
from typing import ClassVar

import equinox as eqx
import jax
from jaxtyping import Array, Float, Key, PRNGKeyArray

from .._checks import check_batch, check_shape


class AbstractBijection(eqx.Module):
    """An invertible map ``x = g(z)`` of one configuration, with its log-Jacobian.

    It acts on **one** configuration of shape ``shape``; the ``*_batch`` methods act on a
    batch (a leading axis), by default ``jax.vmap`` of the per-configuration methods.

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

    **Batches.** :meth:`transform_and_log_det_batch` and :meth:`inverse_and_log_det_batch`
    take configurations ``(batch, *shape)`` and optionally one key per configuration;
    they check shapes once and call the private hooks ``_transform_and_log_det_batch`` /
    ``_inverse_and_log_det_batch`` (which get ``keys`` only where ``uses_key``, else
    ``None``). The default hooks ``jax.vmap`` the per-configuration methods, so a
    bijection needs no batch code. A bijection overrides them where a whole-batch
    computation is cheaper: :class:`ContinuousFlow` solves one ODE for the whole batch
    (its parameters' cotangents are then summed by its matmuls rather than carried per
    sample through the solver's loop), and the composites hand the batch to their
    children's batch methods. An override must return what the default returns, to float
    rounding (with an adaptive ODE solver, to its tolerance).
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

    def transform_and_log_det_batch(
        self, zs: Float[Array, " batch *shape"], *, keys: Key[Array, " batch"] | None = None
    ) -> tuple[Float[Array, " batch *shape"], Float[Array, " batch"]]:
        """:meth:`transform_and_log_det` of each configuration of ``zs``, configuration
        ``i`` with ``keys[i]`` (where given and ``uses_key``).

        Equals ``jax.vmap`` of :meth:`transform_and_log_det` over ``zs`` and ``keys``.

        Example:
            >>> xs, log_dets = flow.transform_and_log_det_batch(
            ...     zs, keys=jax.random.split(jax.random.key(0), zs.shape[0]))
        """
        check_batch(zs, self.shape, keys, f"{type(self).__name__}.transform_and_log_det_batch")
        return self._transform_and_log_det_batch(zs, keys if self.uses_key else None)

    def inverse_and_log_det_batch(
        self, xs: Float[Array, " batch *shape"], *, keys: Key[Array, " batch"] | None = None
    ) -> tuple[Float[Array, " batch *shape"], Float[Array, " batch"]]:
        """:meth:`inverse_and_log_det` of each configuration of ``xs``, configuration ``i``
        with ``keys[i]`` (where given and ``uses_key``).

        Equals ``jax.vmap`` of :meth:`inverse_and_log_det` over ``xs`` and ``keys``.
        """
        check_batch(xs, self.shape, keys, f"{type(self).__name__}.inverse_and_log_det_batch")
        return self._inverse_and_log_det_batch(xs, keys if self.uses_key else None)

    def _transform_and_log_det_batch(self, zs: Array, keys: Array | None
                                     ) -> tuple[Array, Array]:
        if keys is None:
            return jax.vmap(lambda z: self.transform_and_log_det(z))(zs)
        return jax.vmap(lambda z, k: self.transform_and_log_det(z, key=k))(zs, keys)

    def _inverse_and_log_det_batch(self, xs: Array, keys: Array | None
                                   ) -> tuple[Array, Array]:
        if keys is None:
            return jax.vmap(lambda x: self.inverse_and_log_det(x))(xs)
        return jax.vmap(lambda x, k: self.inverse_and_log_det(x, key=k))(xs, keys)

    @abc.abstractmethod
    def _transform_and_log_det(self, z: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    @abc.abstractmethod
    def _inverse_and_log_det(self, x: Array) -> tuple[Array, Array]:
        raise NotImplementedError
