"""Random symmetry conjugation of a continuous flow's velocity field.

Zhang, E & Wang's Monge--Ampère flow (arXiv 1809.10188) trains the relaxed Ising model
with its potential fed a randomly translated and transposed copy of the configuration at
every evaluation of the field. Each evaluation then uses ``v_g(t, x) = g^T v(t, g x)`` for
a fresh lattice symmetry ``g``: the solve is a product of short flows of conjugated fields
which, over many steps, averages the field over the group at the cost of a single
evaluation. This module gives that as a value: :class:`RandomLatticeSymmetry`.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray


class AbstractRandomSymmetry(eqx.Module):
    """A distribution over orthogonal maps ``g`` (symmetries of the target) with which a
    :class:`~thermax.bijections.ContinuousFlow` conjugates its field at each evaluation.

    With ``g`` orthogonal, ``v_g(t, x) = g^T v(t, g x)`` has divergence
    ``div v_g(x) = (div v)(g x)``, so any divergence estimator applies unchanged.
    Subclasses implement :meth:`sample`, :meth:`act` and :meth:`act_transpose`.
    """

    shape: eqx.AbstractVar[tuple[int, ...]]

    @abc.abstractmethod
    def sample(self, *, key: PRNGKeyArray) -> Int[Array, " n_params"]:
        """A random element, as integers."""
        raise NotImplementedError

    @abc.abstractmethod
    def act(self, element: Int[Array, " n_params"], x: Array) -> Array:
        """``g x``."""
        raise NotImplementedError

    @abc.abstractmethod
    def act_transpose(self, element: Int[Array, " n_params"], y: Array) -> Array:
        """``g^T y = g^{-1} y``."""
        raise NotImplementedError


class RandomLatticeSymmetry(AbstractRandomSymmetry):
    """Uniform random translations (and transposes) of a field on an ``L x L`` lattice.

    ``g x`` rolls the first two axes of ``x`` (shape ``(L, L)`` or ``(L, L, ...)``) by
    ``(a, b)``, uniform in ``{0..L-1}^2``, then with ``transpose`` swaps them with
    probability 1/2: the group the original Monge--Ampère code samples. Each element is a
    permutation of sites, so orthogonal.

    Args:
        shape: the configuration shape, ``(L, L, ...)``.
        transpose: include the transposition (default ``True``).

    Example:
        >>> flow = ContinuousFlow(field, ..., symmetry=RandomLatticeSymmetry((16, 16)))
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    transpose: bool = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], transpose: bool = True):
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2 or shape[0] != shape[1] or shape[0] < 1:
            raise ValueError(f"RandomLatticeSymmetry acts on an L x L lattice: shape must "
                             f"be (L, L) or (L, L, ...), got {shape}")
        self.shape, self.transpose = shape, bool(transpose)

    def sample(self, *, key):
        k_shift, k_flip = jax.random.split(key)
        shift = jax.random.randint(k_shift, (2,), 0, self.shape[0], jnp.int32)
        flip = (jax.random.bernoulli(k_flip).astype(jnp.int32) if self.transpose
                else jnp.zeros((), jnp.int32))
        return jnp.concatenate([shift, flip[None]])

    def _swap(self, flip: Array, x: Array) -> Array:
        return jnp.where(flip == 1, jnp.swapaxes(x, 0, 1), x)

    def act(self, element, x):
        rolled = jnp.roll(x, (element[0], element[1]), axis=(0, 1))
        return self._swap(element[2], rolled)

    def act_transpose(self, element, y):
        return jnp.roll(self._swap(element[2], y), (-element[0], -element[1]), axis=(0, 1))
