"""Continuous distributions: the standard normal base and flows (base + bijection)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from ..bijections._base import AbstractBijection
from ._base import AbstractDistribution

_LOG_2PI = math.log(2.0 * math.pi)


class StandardNormal(AbstractDistribution):
    """``z ~ N(0, I)`` over configurations of ``shape``; the usual base of a flow.

    ``kind`` says what the configurations are (``"field"`` or ``"particles"``), so that a
    flow built on it inherits it. ``dtype`` is that of the samples.
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    dtype: jnp.dtype = eqx.field(static=True)

    def __init__(self, shape: tuple[int, ...], *, kind: str = "field", dtype=None):
        if kind not in ("field", "particles"):
            raise ValueError(f"StandardNormal kind must be 'field' or 'particles', got {kind!r}")
        self.shape = tuple(int(s) for s in shape)
        self.kind = kind
        self.dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)

    def _log_prob(self, x):
        return -0.5 * jnp.sum(x**2) - 0.5 * x.size * _LOG_2PI

    def _sample_and_log_prob(self, key):
        z = jax.random.normal(key, self.shape, self.dtype)
        return z, self._log_prob(z)


class Transformed(AbstractDistribution):
    """The flow ``x = g(z)``, ``z ~ base``: ``ln p(x) = ln base(z) - ln |det dx/dz|``.

    Sampling runs the bijection forward, once per sample; :meth:`log_prob` of a given ``x``
    runs it backward. Gradients of samples and log-densities flow through both, so the
    same object serves the pathwise and the score-function estimators.

    A bijection that :attr:`~thermax.bijections.AbstractBijection.uses_key` (a continuous
    flow with a Hutchinson log-det estimate) gets its own key when sampling, split from
    ``key``: its ``ln p`` is then an unbiased *estimate*. :meth:`log_prob` of a given
    ``x`` passes no key and is exact (use it for importance weights).

    The batch methods sample the base in a batch and hand the whole batch to the
    bijection's batch methods (one ODE solve for a whole batch through a
    :class:`~thermax.bijections.ContinuousFlow`), with each configuration's key split as
    :meth:`sample_and_log_prob` splits it, so they return what ``jax.vmap`` of the
    per-configuration methods returns.

    Example:
        >>> flow = Transformed(StandardNormal((8, 8)), bijection)
        >>> x, lp = flow.sample_and_log_prob(key=jax.random.key(0))
    """

    base: AbstractDistribution
    bijection: AbstractBijection

    def __init__(self, base: AbstractDistribution, bijection: AbstractBijection):
        if tuple(base.shape) != tuple(bijection.shape):
            raise ValueError(f"the base distribution has shape {tuple(base.shape)} but the "
                             f"bijection acts on shape {tuple(bijection.shape)}")
        self.base, self.bijection = base, bijection

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample, that of the base distribution (a bijection keeps it)."""
        return self.base.shape

    @property
    def kind(self) -> str:
        """Kind of configuration, that of the base distribution."""
        return self.base.kind

    def _log_prob(self, x):
        z, log_det = self.bijection.inverse_and_log_det(x)
        return self.base.log_prob(z) + log_det

    def _sample_and_log_prob(self, key):
        bijection_key = None
        if self.bijection.uses_key:
            key, bijection_key = jax.random.split(key)
        z, lp_z = self.base.sample_and_log_prob(key=key)
        x, log_det = self.bijection.transform_and_log_det(z, key=bijection_key)
        return x, lp_z - log_det

    def _log_prob_batch(self, xs):
        zs, log_dets = self.bijection.inverse_and_log_det_batch(xs)
        return self.base.log_prob_batch(zs) + log_dets

    def _sample_and_log_prob_batch(self, keys):
        bijection_keys = None
        if self.bijection.uses_key:
            pairs = jax.vmap(jax.random.split)(keys)
            keys, bijection_keys = pairs[:, 0], pairs[:, 1]
        zs, lp_z = self.base.sample_and_log_prob_batch(keys=keys)
        xs, log_dets = self.bijection.transform_and_log_det_batch(zs, keys=bijection_keys)
        return xs, lp_z - log_dets


def lattice_flow(shape: tuple[int, int], *, flow: str = "neuralrg", n_couplings: int = 10,
                 hidden_width: int = 10, hidden_depth: int = 3, rg_depth: int | None = None,
                 spectral: bool = True, z2: bool = True, key: PRNGKeyArray,
                 dtype=None) -> AbstractDistribution:
    """A ready-made flow for a real field on an ``L x L`` periodic lattice.

    ``Transformed(StandardNormal(shape), bijection)`` with ``bijection``

    - ``flow="neuralrg"``: :class:`thermax.bijections.NeuralRG` (``L`` a power of two;
      ``n_couplings`` per 2x2 block, MLP conditioners ``hidden_width`` x ``hidden_depth``,
      ``rg_depth`` scales, default all);
    - ``flow="realnvp"``: :func:`thermax.bijections.lattice_real_nvp` (even ``L`` and
      ``n_couplings``; conv conditioners of ``hidden_width`` channels, ``hidden_depth``
      convolutions);

    followed, with ``spectral``, by :class:`thermax.bijections.SpectralScale` (fits the
    two-point function) and wrapped, with ``z2``, in :class:`Z2Symmetrized` (for
    ``H(x) = H(-x)``). This is the model ``thermax run ising-relaxed`` and ``phi4`` train.

    Example:
        >>> model = lattice_flow((8, 8), key=jax.random.key(0))
        >>> x, lp = model.sample_and_log_prob(key=jax.random.key(1))
    """
    from ..bijections import Chain, NeuralRG, SpectralScale, lattice_real_nvp
    from ._autoregressive import Z2Symmetrized

    shape = tuple(int(s) for s in shape)
    if flow == "neuralrg":
        bij: AbstractBijection = NeuralRG(shape[0], depth=rg_depth, n_couplings=n_couplings,
                                          hidden=(hidden_width,) * hidden_depth, key=key,
                                          dtype=dtype)
    elif flow == "realnvp":
        bij = lattice_real_nvp(shape, n_couplings=n_couplings, width=hidden_width,
                               depth=hidden_depth, key=key, dtype=dtype)
    else:
        raise ValueError(f"lattice_flow: flow must be 'neuralrg' or 'realnvp', got {flow!r}")
    if spectral:
        bij = Chain([bij, SpectralScale(shape, dtype=dtype)])
    model: AbstractDistribution = Transformed(StandardNormal(shape, dtype=dtype), bij)
    return Z2Symmetrized(model) if z2 else model
