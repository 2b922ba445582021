r"""A Jastrow factor for ground-state (T = 0) wavefunctions.

``Psi(x) = exp(J(x)) Psi_inner(x)`` with a symmetric pair function

.. math::

    J(x) = \sum_{i<j} \Bigl[\frac{a_{s_i s_j} r_{ij}}{1 + b_{s_i s_j} r_{ij}}
        + u_{s_i s_j}(r_{ij}^2)\Bigr],

``a`` fixed by the electron--electron cusp conditions of a Coulomb repulsion
``lambda / r`` in ``d`` dimensions (Kato; for ``d = 2`` the antiparallel cusp is
``lambda`` and the parallel one ``lambda / 3``):

* antiparallel spins: ``a = lambda / (d - 1)``;
* parallel spins: ``a = lambda / (d + 1)``;

``b > 0`` learnable per spin channel (the Padé form), and ``u`` a small network of the
squared distance, zero at initialisation, whose derivative in ``r`` vanishes at
``r = 0`` so the cusps stay exact. The factor is positive and symmetric under every
permutation of same-spin electrons, so antisymmetry and nodes are the inner
wavefunction's.

A Jastrow factor is not a change of variables: the states ``exp(J) Psi_K`` are neither
normalised nor orthogonal for different ``K``. The density matrix
``rho = sum_K p(K) |Psi_K><Psi_K|`` of the neural canonical transformation needs
orthonormal states, so this factor is for the ground state (``T = 0``, one occupation)
only, where VMC needs neither; :func:`thermax.quantum.build_quantum_dot` refuses it at
``T > 0``.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._wavefunction import AbstractWavefunction


class Jastrow(AbstractWavefunction):
    r"""``exp(J(x)) Psi_inner(x)``: a cusp-exact Padé--Jastrow factor (plus a learnable pair
    network) on a ground-state wavefunction. See the module docstring for ``J``.

    Args:
        wavefunction: the inner wavefunction (e.g. a
            :class:`~thermax.quantum.FlowSlater`), real.
        coulomb: the strength ``lambda`` of the repulsion ``lambda / r`` (sets the cusps;
            ``0`` gives no cusp term, only the learnable ``b``-free network part).
        width: hidden units of the pair network ``u`` (``0``: Padé term only).
        key: initialisation key of ``u`` (needed when ``width > 0``).
        dtype: parameter dtype (default: the default float).

    Example:
        >>> psi = Jastrow(FlowSlater(basis, flow, 3, 3), coulomb=1.0, width=16,
        ...               key=jax.random.key(0))
        >>> log_abs, sign = psi.log_abs_and_sign(x, jnp.arange(3), jnp.arange(3))
    """

    wavefunction: AbstractWavefunction
    log_b: Float[Array, "2"]
    pair_in: Float[Array, "2 width"] | None
    pair_bias: Float[Array, "2 width"] | None
    pair_out: Float[Array, "2 width"] | None
    cusp: tuple[float, float] = eqx.field(static=True)
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def __init__(self, wavefunction: AbstractWavefunction, *, coulomb: float = 1.0,
                 width: int = 16, key: PRNGKeyArray | None = None, dtype=None):
        if not isinstance(wavefunction, AbstractWavefunction):
            raise TypeError(f"Jastrow: wavefunction must be an AbstractWavefunction, got "
                            f"{type(wavefunction).__name__}")
        if wavefunction.is_complex:
            raise ValueError("Jastrow: the inner wavefunction is complex (plane waves); this "
                             "factor is for real, open-boundary wavefunctions (quantum dots)")
        if not (math.isfinite(coulomb) and coulomb >= 0):
            raise ValueError(f"Jastrow: coulomb must be finite and >= 0, got {coulomb}")
        if int(width) < 0:
            raise ValueError(f"Jastrow: width must be >= 0, got {width}")
        if int(width) > 0 and key is None:
            raise ValueError("Jastrow: a pair network (width > 0) needs a key")
        dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
        self.wavefunction = wavefunction
        self.n_up, self.n_down, self.dim = (wavefunction.n_up, wavefunction.n_down,
                                            wavefunction.dim)
        d = self.dim
        # (parallel, antiparallel)
        self.cusp = (float(coulomb) / (d + 1), float(coulomb) / max(d - 1, 1))
        self.log_b = jnp.zeros((2,), dtype)
        width = int(width)
        if width > 0:
            k_in, k_bias = jax.random.split(key)
            self.pair_in = jax.random.normal(k_in, (2, width), dtype)
            self.pair_bias = jax.random.normal(k_bias, (2, width), dtype)
            self.pair_out = jnp.zeros((2, width), dtype)
        else:
            self.pair_in = self.pair_bias = self.pair_out = None

    def factor(self, x: Float[Array, "n dim"]) -> Float[Array, ""]:
        """``J(x)``, the logarithm of the Jastrow factor."""
        n = self.n_up + self.n_down
        if n < 2:
            return jnp.zeros((), x.dtype)
        i, j = jnp.triu_indices(n, k=1)
        r2 = jnp.sum((x[i] - x[j]) ** 2, axis=-1)
        r = jnp.sqrt(r2)
        antiparallel = ((i < self.n_up) != (j < self.n_up)).astype(jnp.int32)
        a = jnp.asarray(self.cusp, x.dtype)[antiparallel]
        b = jnp.exp(self.log_b.astype(x.dtype))[antiparallel]
        total = jnp.sum(a * r / (1.0 + b * r))
        if self.pair_out is not None:
            w_in = self.pair_in.astype(x.dtype)[antiparallel]
            w_b = self.pair_bias.astype(x.dtype)[antiparallel]
            w_out = self.pair_out.astype(x.dtype)[antiparallel]
            # a function of r^2, so d/dr = 0 at r = 0: the cusps stay a's
            total = total + jnp.sum(w_out * jnp.tanh(w_in * r2[:, None] + w_b))
        return total

    @property
    def is_complex(self) -> bool:
        """Always ``False`` (the factor is for real wavefunctions)."""
        return False

    def _log_abs_and_sign(self, x, k_up, k_down):
        log_abs, sign = self.wavefunction.log_abs_and_sign(x, k_up, k_down)
        return log_abs + self.factor(x), sign
