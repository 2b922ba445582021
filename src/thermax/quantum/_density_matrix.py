r"""The variational density matrix ``rho = sum_K p(K) |Psi_K><Psi_K|``.

The neural canonical transformation (Xie, Zhang & Wang, arXiv 2105.08644): ``p(K)`` is a
normalized distribution over occupations ``K = (K_up, K_down)`` of single-particle
orbitals and ``Psi_K`` the orthonormal flow wavefunctions of :class:`FlowSlater`. Then

.. math::

    F[\rho] = E_{K\sim p}\bigl[T \ln p(K) + E_{x\sim|\Psi_K|^2} E_{\rm loc}(x; K)\bigr].

An occupation model is a value: :class:`SpinOccupations` (independent autoregressive set
models for each spin; the exact free-fermion distribution factorises this way) or
:class:`FixedOccupation` (``p`` concentrated on one ``K``: the ``T = 0`` limit, plain
ground-state VMC).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Inexact, Int, Key, PRNGKeyArray

from ..distributions import AbstractSetDistribution
from ._wavefunction import AbstractWavefunction


class AbstractOccupations(eqx.Module):
    """A normalized distribution ``p(K)`` over spin occupations ``K = (k_up, k_down)``.

    ``k_up`` holds ``n_up`` sorted orbital indices, ``k_down`` ``n_down``. Subclasses
    implement :meth:`log_prob` and :meth:`sample_and_log_prob` (one occupation); the batch
    methods ``vmap`` them.
    """

    n_up: eqx.AbstractVar[int]
    n_down: eqx.AbstractVar[int]

    @abc.abstractmethod
    def log_prob(self, k_up: Int[Array, " n_up"], k_down: Int[Array, " n_down"]
                 ) -> Float[Array, ""]:
        """Exact normalized ``ln p(K)``."""
        raise NotImplementedError

    @abc.abstractmethod
    def sample_and_log_prob(self, *, key: PRNGKeyArray
                            ) -> tuple[Int[Array, " n_up"], Int[Array, " n_down"],
                                       Float[Array, ""]]:
        """One occupation ``K ~ p`` and its ``ln p(K)``."""
        raise NotImplementedError

    def sample_and_log_prob_batch(self, *, keys: Key[Array, " batch"]
                                  ) -> tuple[Int[Array, "batch n_up"],
                                             Int[Array, "batch n_down"], Float[Array, " batch"]]:
        """One occupation per key (``vmap`` of :meth:`sample_and_log_prob`)."""
        return jax.vmap(lambda k: self.sample_and_log_prob(key=k))(keys)

    def log_prob_batch(self, k_up: Int[Array, "batch n_up"], k_down: Int[Array, "batch n_down"]
                       ) -> Float[Array, " batch"]:
        """:meth:`log_prob` of each occupation of a batch."""
        return jax.vmap(self.log_prob)(k_up, k_down)


class SpinOccupations(AbstractOccupations):
    """``p(K) = p_up(K_up) p_down(K_down)``: one set distribution per spin species.

    Each factor is an :class:`~thermax.distributions.AbstractSetDistribution` (an
    :class:`~thermax.distributions.AutoregressiveSet`, or the exact
    :class:`~thermax.distributions.FreeFermionSets`) over the ``M`` orbitals, or ``None``
    for a species with no electrons. The product is exact for free fermions at fixed
    ``n_up, n_down`` (independent canonical ensembles); with interactions it leaves out
    correlations between the two species' occupations (a variational restriction).

    Example:
        >>> net = SetTransformer(3, 10, key=jax.random.key(0))
        >>> p = SpinOccupations(AutoregressiveSet(net), None)     # 3 polarised electrons
    """

    up: AbstractSetDistribution | None
    down: AbstractSetDistribution | None
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)

    def __init__(self, up: AbstractSetDistribution | None,
                 down: AbstractSetDistribution | None):
        for name, part in (("up", up), ("down", down)):
            if part is not None and not isinstance(part, AbstractSetDistribution):
                raise TypeError(f"SpinOccupations: {name} must be a set distribution or None, "
                                f"got {type(part).__name__}")
        if up is None and down is None:
            raise ValueError("SpinOccupations: need at least one spin species")
        self.up, self.down = up, down
        self.n_up = 0 if up is None else up.shape[0]
        self.n_down = 0 if down is None else down.shape[0]

    def log_prob(self, k_up, k_down):
        total = jnp.zeros(())
        for part, k in ((self.up, k_up), (self.down, k_down)):
            if part is not None:
                total = total + part.log_prob(k)
        return total

    def sample_and_log_prob(self, *, key):
        k_a, k_b = jax.random.split(key)
        out, total = [], jnp.zeros(())
        for part, k in ((self.up, k_a), (self.down, k_b)):
            if part is None:
                out.append(jnp.zeros((0,), jnp.int32))
            else:
                ks, lp = part.sample_and_log_prob(key=k)
                out.append(ks.astype(jnp.int32))
                total = total + lp
        return out[0], out[1], total


class FixedOccupation(AbstractOccupations):
    """``p(K) = delta_{K, K0}``: the ``T = 0`` limit (ground-state VMC), ``ln p = 0``.

    Example:
        >>> p = FixedOccupation(jnp.array([0, 1, 2]), jnp.array([0, 1, 2]))   # N = 6 dot
    """

    k_up: Int[Array, " n_up"]
    k_down: Int[Array, " n_down"]
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)

    def __init__(self, k_up, k_down):
        self.k_up = jnp.sort(jnp.asarray(k_up, jnp.int32).reshape(-1))
        self.k_down = jnp.sort(jnp.asarray(k_down, jnp.int32).reshape(-1))
        self.n_up, self.n_down = int(self.k_up.shape[0]), int(self.k_down.shape[0])

    def log_prob(self, k_up, k_down):
        same = jnp.all(k_up == self.k_up) & jnp.all(k_down == self.k_down)
        return jnp.where(same, 0.0, -jnp.inf)

    def sample_and_log_prob(self, *, key):
        del key
        return self.k_up, self.k_down, jnp.zeros(())


class DensityMatrix(eqx.Module):
    """``rho = sum_K p(K) |Psi_K><Psi_K|``: an occupation model and the wavefunctions.

    Example:
        >>> rho = DensityMatrix(SpinOccupations(AutoregressiveSet(net), None),
        ...                     FlowSlater(basis, flow, n_up=3))
    """

    occupations: AbstractOccupations
    wavefunction: AbstractWavefunction

    def __init__(self, occupations: AbstractOccupations, wavefunction: AbstractWavefunction):
        if not isinstance(occupations, AbstractOccupations):
            raise TypeError(f"DensityMatrix: occupations must be an AbstractOccupations, got "
                            f"{type(occupations).__name__}")
        if (occupations.n_up, occupations.n_down) != (wavefunction.n_up, wavefunction.n_down):
            raise ValueError(f"DensityMatrix: the occupations hold ({occupations.n_up}, "
                             f"{occupations.n_down}) electrons but the wavefunction "
                             f"({wavefunction.n_up}, {wavefunction.n_down})")
        self.occupations, self.wavefunction = occupations, wavefunction

    def log_psi(self, x: Float[Array, "n dim"], k_up: Int[Array, " n_up"],
                k_down: Int[Array, " n_down"]) -> Float[Array, ""]:
        """``ln|Psi_K(x)|`` of one configuration."""
        return self.wavefunction.log_abs(x, k_up, k_down)

    def log_value(self, x: Float[Array, "n dim"], k_up: Int[Array, " n_up"],
                  k_down: Int[Array, " n_down"]) -> Inexact[Array, ""]:
        """``ln Psi_K(x)``: ``ln|Psi_K|`` for a real wavefunction, ``ln|Psi_K| + i arg
        Psi_K`` for a complex one (what the local energy and the gradient differentiate;
        see :meth:`AbstractWavefunction.log_value`)."""
        return self.wavefunction.log_value(x, k_up, k_down)

    def log_psi_batch(self, xs: Float[Array, "batch n dim"], k_up: Int[Array, "batch n_up"],
                      k_down: Int[Array, "batch n_down"]) -> Float[Array, " batch"]:
        """``ln|Psi_K(x)|`` of each walker (each with its own ``K``)."""
        return jax.vmap(self.log_psi)(xs, k_up, k_down)
