r"""Flow wavefunctions: Slater determinants of basis orbitals at flowed coordinates.

The neural canonical transformation (``docs/PHYSICS.md`` §5): for a bijection
``zeta = f(x)`` of the electron coordinates and an occupation ``K`` of basis orbitals,

.. math::

    \Psi_K(x) = \frac{1}{\sqrt{N_\uparrow!\,N_\downarrow!}}
        \det[\phi_{k^\uparrow_a}(\zeta_b)]_{a,b < N_\uparrow}\,
        \det[\phi_{k^\downarrow_a}(\zeta_{N_\uparrow + b})]_{a,b < N_\downarrow}\,
        \Bigl|\det\frac{\partial\zeta}{\partial x}\Bigr|^{1/2}.

The Jacobian factor makes ``x -> zeta`` unitary, ``<Psi_K|Psi_K'> = <D_K|D_K'>``, so
the ``Psi_K`` are orthonormal whenever the orbitals are.
"""

import abc
import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Inexact, Int

from ..bijections import AbstractBijection
from ._basis import AbstractBasis


def join_occupation(k_up: Int[Array, " n_up"], k_down: Int[Array, " n_down"],
                    n_orbitals: int) -> Int[Array, " n"]:
    """An occupation ``(k_up, k_down)`` as one sorted set over ``2 M`` spin-orbitals.

    Spin-orbital ``k`` is orbital ``k`` spin up for ``k < M`` and orbital ``k - M`` spin
    down for ``k >= M`` (``M = n_orbitals``): the set ``sort(k_up) ++ sort(k_down) + M``.
    An autoregressive set model samples such a set ``k_1 < ... < k_N``; a wavefunction
    with fixed ``n_up`` needs exactly ``n_up`` of them below ``M`` (mask accordingly).

    Example:
        >>> join_occupation(jnp.array([1, 0]), jnp.array([0]), 6)   # [0, 1, 6]
    """
    return jnp.concatenate([jnp.sort(k_up), jnp.sort(k_down) + n_orbitals])


def split_occupation(k: Int[Array, " n"], n_up: int, n_orbitals: int
                     ) -> tuple[Int[Array, " n_up"], Int[Array, " n_down"]]:
    """The inverse of :func:`join_occupation`: ``(k[:n_up], k[n_up:] - M)`` of a sorted set.

    Where the set does not hold exactly ``n_up`` spin-up entries, some index falls
    outside ``[0, M)`` and :meth:`AbstractWavefunction.log_abs_and_sign` returns NaN.

    Example:
        >>> split_occupation(jnp.array([0, 1, 6]), 2, 6)   # ([0, 1], [0])
    """
    if not 0 <= int(n_up) <= k.shape[0]:
        raise ValueError(f"split_occupation: n_up must lie in [0, {k.shape[0]}] for a set "
                         f"of {k.shape[0]} spin-orbitals, got {n_up}")
    return k[:n_up], k[n_up:] - n_orbitals


class AbstractWavefunction(eqx.Module):
    r"""A family of ``N``-electron wavefunctions ``Psi_K(x)`` labelled by occupations ``K``.

    Electrons ``0 .. n_up - 1`` are spin up, ``n_up .. N - 1`` spin down (fixed labels);
    ``Psi_K`` is antisymmetric under exchanging two electrons of the same spin. An
    occupation is two integer arrays: ``k_up`` (``n_up`` distinct orbital indices) and
    ``k_down`` (``n_down``; ``None`` or an empty array when ``n_down = 0``). Their order
    fixes the overall sign only; :func:`join_occupation` gives the one-set form.

    :meth:`log_abs_and_sign` checks the shapes once and calls the private hook
    ``_log_abs_and_sign(x, k_up, k_down)`` of the subclass. One configuration at a time;
    batch with ``jax.vmap``.
    """

    n_up: eqx.AbstractVar[int]
    n_down: eqx.AbstractVar[int]
    dim: eqx.AbstractVar[int]

    @property
    def shape(self) -> tuple[int, int]:
        """The configuration shape ``(n_up + n_down, dim)``."""
        return (self.n_up + self.n_down, self.dim)

    def log_abs_and_sign(self, x: Float[Array, "n dim"], k_up: Int[Array, " n_up"],
                         k_down: Int[Array, " n_down"] | None = None
                         ) -> tuple[Float[Array, ""], Inexact[Array, ""]]:
        """``(ln |Psi_K(x)|, Psi_K(x) / |Psi_K(x)|)``.

        The second is the sign (``+-1``, real dtype) for a real basis, a complex phase for
        a complex one. ``ln |Psi| = -inf`` where ``Psi = 0`` (a repeated orbital).

        Args:
            x: one configuration, shape ``(n_up + n_down, dim)``.
            k_up: the ``n_up`` occupied spin-up orbitals (integers).
            k_down: the ``n_down`` occupied spin-down orbitals (``None`` when
                ``n_down = 0``).
        """
        name = f"{type(self).__name__}.log_abs_and_sign"
        if tuple(x.shape) != self.shape:
            raise ValueError(f"{name} expected a configuration of shape {self.shape} "
                             f"(n_up + n_down, dim), got {tuple(x.shape)}; batch with "
                             "jax.vmap")
        if k_down is None:
            k_down = jnp.zeros((0,), jnp.int32)
        for what, k, size in (("k_up", k_up, self.n_up), ("k_down", k_down, self.n_down)):
            if k.shape != (size,) or not jnp.issubdtype(k.dtype, jnp.integer):
                raise ValueError(f"{name}: {what} must be {size} integer orbital indices, "
                                 f"shape ({size},), got dtype {k.dtype} and shape "
                                 f"{tuple(k.shape)}")
        return self._log_abs_and_sign(x, k_up, k_down)

    def log_abs(self, x: Float[Array, "n dim"], k_up: Int[Array, " n_up"],
                k_down: Int[Array, " n_down"] | None = None) -> Float[Array, ""]:
        """``ln |Psi_K(x)|`` (see :meth:`log_abs_and_sign`)."""
        return self.log_abs_and_sign(x, k_up, k_down)[0]

    @property
    def is_complex(self) -> bool:
        """Whether ``Psi_K`` is complex (then it has a phase, not a sign)."""
        return False

    def log_value(self, x: Float[Array, "n dim"], k_up: Int[Array, " n_up"],
                  k_down: Int[Array, " n_down"] | None = None) -> Inexact[Array, ""]:
        """``ln Psi_K(x)`` as the local energy and the variational gradient need it.

        Real wavefunctions: ``ln|Psi|`` (the sign is constant between nodes, so it has no
        gradient). Complex ones (:attr:`is_complex`): ``ln|Psi| + i arg Psi``, with the
        phase differentiable (its value jumps by ``2 pi`` across the branch cut of
        ``arg``, its derivatives do not).
        """
        log_abs, sign = self.log_abs_and_sign(x, k_up, k_down)
        if not self.is_complex:
            return log_abs
        return log_abs + 1j * jnp.angle(sign)

    @abc.abstractmethod
    def _log_abs_and_sign(self, x: Array, k_up: Array, k_down: Array
                          ) -> tuple[Array, Array]:
        raise NotImplementedError


def _slater(phi: Array, k: Array) -> tuple[Array, Array]:
    """``slogdet`` of ``phi[:, k]`` (rows: electrons, columns: occupied orbitals).

    An index outside ``[0, M)`` gives a NaN column (never a silently wrapped orbital). A
    repeated index among valid ones gives exactly ``(0, -inf)`` (Pauli), set here rather
    than left to the round-off of the LU factorisation of two equal columns."""
    if k.shape[0] == 0:
        return jnp.ones((), phi.dtype), jnp.zeros((), jnp.finfo(phi.dtype).dtype)
    m, n = phi.shape[1], k.shape[0]
    valid = (k >= 0) & (k < m)
    repeated = jnp.all(valid) & jnp.any((k[:, None] == k[None, :]) & ~jnp.eye(n, dtype=bool))
    columns = phi.at[:, jnp.where(valid, k, m)].get(mode="fill", fill_value=jnp.nan)
    sign, log_abs = jnp.linalg.slogdet(columns)
    return (jnp.where(repeated, jnp.zeros_like(sign), sign),
            jnp.where(repeated, -jnp.inf, log_abs))


class FlowSlater(AbstractWavefunction):
    r"""``Psi_K(x) = D_K(f(x)) |det df/dx|^{1/2}``: Slater determinants at flowed coordinates.

    ``zeta = flow.transform(x)`` (the flow's ``transform`` direction maps electrons to
    quasi-particles; wrap in :class:`~thermax.bijections.Invert` to use the other one),
    and with ``Phi[b, k] = phi_k(zeta_b)``:

    .. math::

        \ln|\Psi_K(x)| = \ln|\det \Phi^\uparrow_K| + \ln|\det \Phi^\downarrow_K|
            + \tfrac12 \ln|\det \partial\zeta/\partial x|
            - \tfrac12 \ln(N_\uparrow!\,N_\downarrow!),

    ``Phi^up_K = Phi[:n_up, k_up]``, ``Phi^down_K = Phi[n_up:, k_down]``. The constant
    ``-ln(n_up! n_down!)/2`` makes each ``Psi_K`` normalised over ``R^{N dim}`` with the
    electrons' spins fixed by their labels (``int |D_up D_down|^2 = n_up! n_down!`` for
    orthonormal orbitals). Change of variables gives ``<Psi_K|Psi_K'> = delta_KK'`` for
    any bijection. The sign is the product of the two determinants' signs (phases for a
    complex basis); the flow's Jacobian factor is positive.

    Any :class:`~thermax.bijections.AbstractBijection` on ``(n_up + n_down, dim)`` is a
    flow: a permutation-equivariant one (:class:`~thermax.bijections.Backflow`,
    :func:`~thermax.bijections.ferminet_flow`, ``continuous_flow(BackflowField(...))``)
    keeps the antisymmetry. The flow's log-det is taken without a key, so a stochastic
    estimator (Hutchinson) falls back to the exact one. Cost: one flow evaluation (with
    its log-det), ``N M`` orbital values and two ``slogdet`` s.

    Args:
        basis: the single-particle basis (``basis.dim`` is the spatial dimension).
        flow: the bijection ``x -> zeta`` on shape ``(n_up + n_down, basis.dim)``.
        n_up: number of spin-up electrons (``>= 0``, at most ``basis.n_orbitals``).
        n_down: number of spin-down electrons (``>= 0``, at most ``basis.n_orbitals``;
            ``0`` for a polarised system). ``n_up + n_down >= 1``.

    Example:
        >>> basis = OscillatorBasis2D(1.0, emax=3.0)
        >>> psi = FlowSlater(basis, Backflow(3, 2, width=8, depth=2, key=key), 2, 1)
        >>> log_abs, sign = psi.log_abs_and_sign(x, jnp.array([0, 1]), jnp.array([0]))
    """

    basis: AbstractBasis
    flow: AbstractBijection
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def __init__(self, basis: AbstractBasis, flow: AbstractBijection, n_up: int,
                 n_down: int = 0):
        if not isinstance(basis, AbstractBasis):
            raise TypeError(f"FlowSlater: basis must be an AbstractBasis, got "
                            f"{type(basis).__name__}")
        if not isinstance(flow, AbstractBijection):
            raise TypeError(f"FlowSlater: flow must be an AbstractBijection, got "
                            f"{type(flow).__name__}")
        n_up, n_down = int(n_up), int(n_down)
        if n_up < 0 or n_down < 0 or n_up + n_down < 1:
            raise ValueError(f"FlowSlater: need n_up >= 0, n_down >= 0 and at least one "
                             f"electron, got n_up={n_up}, n_down={n_down}")
        if max(n_up, n_down) > basis.n_orbitals:
            raise ValueError(f"FlowSlater: {max(n_up, n_down)} electrons of one spin do "
                             f"not fit in {basis.n_orbitals} orbitals (Pauli); enlarge the "
                             "basis (n_orbitals or emax)")
        shape = (n_up + n_down, basis.dim)
        if tuple(flow.shape) != shape:
            raise ValueError(f"FlowSlater: the flow acts on shape {tuple(flow.shape)}, but "
                             f"{n_up} + {n_down} electrons in {basis.dim} dimensions need "
                             f"{shape}")
        self.basis, self.flow = basis, flow
        self.n_up, self.n_down, self.dim = n_up, n_down, int(basis.dim)

    @property
    def is_complex(self) -> bool:
        """Whether the basis orbitals are complex (plane waves)."""
        return bool(self.basis.is_complex)

    def _log_abs_and_sign(self, x, k_up, k_down):
        zeta, log_jacobian = self.flow.transform_and_log_det(x)
        phi = self.basis.orbitals(zeta)
        sign_up, log_up = _slater(phi[: self.n_up], k_up)
        sign_down, log_down = _slater(phi[self.n_up:], k_down)
        norm = 0.5 * (math.lgamma(self.n_up + 1) + math.lgamma(self.n_down + 1))
        log_abs = log_up + log_down + 0.5 * log_jacobian - norm
        return log_abs, sign_up * sign_down
