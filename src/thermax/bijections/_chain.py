"""Composition of bijections: ``Chain`` (a list), ``Scan`` (a stack of identical layers)
and ``Invert`` (the other direction)."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from ._base import AbstractBijection


class Chain(AbstractBijection):
    """The composition ``x = g_n(... g_2(g_1(z)))`` of bijections, applied in order.

    ``ln |det dx/dz| = sum_k ln |det dg_k/dz_{k-1}|``; the inverse applies the inverses in
    reverse order. Each direction is as cheap as the sum of its layers' costs in that
    direction. The layers are unrolled at trace time: for many *identical* layers use
    :class:`Scan`, whose compile time does not grow with depth.

    A ``key``, where given and some layer :attr:`uses_key`, is split into one key per
    layer; layer ``k`` gets the ``k``-th in both directions. The batch methods hand the
    whole batch to each layer's batch method, configuration ``i``'s key split as alone.

    Args:
        bijections: the layers, first applied first; all must act on the same shape.

    Example:
        >>> flow = Chain([ElementwiseAffine((4,)), SinhArcsinh((4,))])
        >>> x, log_det = flow.transform_and_log_det(jnp.zeros(4))
    """

    bijections: tuple[AbstractBijection, ...]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, bijections: Sequence[AbstractBijection]):
        bijections = tuple(bijections)
        if not bijections:
            raise ValueError("Chain needs at least one bijection, got an empty sequence")
        for i, b in enumerate(bijections):
            if not isinstance(b, AbstractBijection):
                raise TypeError(f"Chain: element {i} is a {type(b).__name__}, "
                                "not an AbstractBijection")
        shapes = [tuple(b.shape) for b in bijections]
        if any(s != shapes[0] for s in shapes):
            listing = ", ".join(f"{type(b).__name__}{s}" for b, s in zip(bijections, shapes,
                                                                         strict=True))
            raise ValueError(f"Chain: every bijection must act on the same shape, got {listing}")
        self.bijections, self.shape = bijections, shapes[0]

    @property
    def uses_key(self) -> bool:
        """Whether any bijection in the chain needs a key (then the chain splits one)."""
        return any(b.uses_key for b in self.bijections)

    def _keys(self, key):
        if key is None:
            return [None] * len(self.bijections)
        return list(jax.random.split(key, len(self.bijections)))

    def _transform_and_log_det(self, z, key=None):
        total = 0.0
        for b, k in zip(self.bijections, self._keys(key), strict=True):
            z, log_det = b.transform_and_log_det(z, key=k)
            total = total + log_det
        return z, total

    def _inverse_and_log_det(self, x, key=None):
        total = 0.0
        pairs = list(zip(self.bijections, self._keys(key), strict=True))
        for b, k in reversed(pairs):
            x, log_det = b.inverse_and_log_det(x, key=k)
            total = total + log_det
        return x, total

    def _batch_keys(self, keys):
        if keys is None:
            return [None] * len(self.bijections)
        split = _split_each(keys, len(self.bijections))
        return [split[:, i] for i in range(len(self.bijections))]

    def _transform_and_log_det_batch(self, zs, keys):
        total = 0.0
        for b, k in zip(self.bijections, self._batch_keys(keys), strict=True):
            zs, log_det = b.transform_and_log_det_batch(zs, keys=k)
            total = total + log_det
        return zs, total

    def _inverse_and_log_det_batch(self, xs, keys):
        total = 0.0
        pairs = list(zip(self.bijections, self._batch_keys(keys), strict=True))
        for b, k in reversed(pairs):
            xs, log_det = b.inverse_and_log_det_batch(xs, keys=k)
            total = total + log_det
        return xs, total


def _split_each(keys, n: int):
    """``split(keys[i], n)`` for each key: shape ``(batch, n)``."""
    return jax.vmap(lambda k: jax.random.split(k, n))(keys)


def _promoted(y, tree):
    """``y`` cast to the dtype the layers' floating parameters promote it to."""
    dtypes = [leaf.dtype for leaf in jax.tree.leaves(tree) if eqx.is_inexact_array(leaf)]
    return y.astype(jnp.result_type(y.dtype, *dtypes))


class Scan(AbstractBijection):
    """``n`` layers of identical structure, applied in order by one ``lax.scan``.

    ``stacked`` is one bijection whose array leaves carry an extra leading axis of length
    ``n`` (layer ``k`` is ``tree_map(lambda a: a[k], stacked)``), as built by
    ``eqx.filter_vmap`` over keys -- see :meth:`build`. The maths is that of
    :class:`Chain` over the ``n`` layers, but the layer is traced and compiled once, so
    compile time is flat in depth. Cost per direction: ``n`` times the layer's cost in that
    direction. To alternate masks, make the layer itself a :class:`Chain` of the two
    parities. A ``key``, where given and the layer :attr:`uses_key`, is split into ``n``
    per-layer keys scanned alongside the parameters (layer ``k`` gets the ``k``-th in
    both directions). The batch methods scan the layer's batch method over the layers,
    configuration ``i``'s key split as alone.

    Args:
        stacked: the stacked layer (every array leaf has leading axis ``n``).
        n: the number of layers.

    Example:
        >>> make = lambda k: AffineCoupling(checkerboard_mask((4, 4), 0),
        ...                                 MLPConditioner((4, 4), key=k))
        >>> flow = Scan.build(make, 8, key=jax.random.key(0))
    """

    stacked: AbstractBijection
    n: int = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, stacked: AbstractBijection, n: int):
        if not isinstance(stacked, AbstractBijection):
            raise TypeError(f"Scan: stacked must be an AbstractBijection, got "
                            f"{type(stacked).__name__}")
        n = int(n)
        if n < 1:
            raise ValueError(f"Scan needs at least one layer, got n={n}")
        bad = sorted({str(leaf.shape) for leaf in jax.tree.leaves(stacked)
                      if eqx.is_array(leaf) and (leaf.ndim == 0 or leaf.shape[0] != n)})
        if bad:
            raise ValueError(f"Scan: every array leaf of the stacked layer must have a leading "
                             f"(layer) axis of size n={n}, got leaves of shape {', '.join(bad)}"
                             "; build it with Scan.build or eqx.filter_vmap over n keys")
        self.stacked, self.n, self.shape = stacked, n, tuple(stacked.shape)

    @classmethod
    def build(cls, make_layer: Callable[[PRNGKeyArray], AbstractBijection], n: int, *,
              key: PRNGKeyArray) -> "Scan":
        """``n`` layers ``make_layer(k)`` for ``n`` independent keys, stacked by
        ``eqx.filter_vmap`` (so ``make_layer`` is traced once)."""
        if n < 1:
            raise ValueError(f"Scan.build: n must be >= 1, got {n}")
        return cls(eqx.filter_vmap(make_layer)(jax.random.split(key, n)), n)

    @property
    def uses_key(self) -> bool:
        """Whether the repeated layer needs a key (then each step gets its own)."""
        return self.stacked.uses_key

    def _run(self, y, key, inverse: bool):
        params, static = eqx.partition(self.stacked, eqx.is_array)
        keys = None if key is None else jax.random.split(key, self.n)

        def step(y, xs):
            p, k = xs
            layer = eqx.combine(p, static)
            f = layer.inverse_and_log_det if inverse else layer.transform_and_log_det
            return f(y, key=k)

        y, log_dets = jax.lax.scan(step, _promoted(y, params), (params, keys),
                                   reverse=inverse)
        return y, jnp.sum(log_dets)

    def _run_batch(self, ys, keys, inverse: bool):
        params, static = eqx.partition(self.stacked, eqx.is_array)
        # (n, batch): layer k gets split(keys[i], n)[k] for configuration i.
        keys = None if keys is None else jnp.swapaxes(_split_each(keys, self.n), 0, 1)

        def step(ys, xs):
            p, k = xs
            layer = eqx.combine(p, static)
            f = layer.inverse_and_log_det_batch if inverse else layer.transform_and_log_det_batch
            return f(ys, keys=k)

        ys, log_dets = jax.lax.scan(step, _promoted(ys, params), (params, keys),
                                    reverse=inverse)
        return ys, jnp.sum(log_dets, axis=0)

    def _transform_and_log_det(self, z, key=None):
        return self._run(z, key, inverse=False)

    def _inverse_and_log_det(self, x, key=None):
        return self._run(x, key, inverse=True)

    def _transform_and_log_det_batch(self, zs, keys):
        return self._run_batch(zs, keys, inverse=False)

    def _inverse_and_log_det_batch(self, xs, keys):
        return self._run_batch(xs, keys, inverse=True)


class Invert(AbstractBijection):
    """The inverse bijection: ``transform`` runs ``bijection``'s inverse and vice versa.

    Which direction is fast is swapped with respect to ``bijection``. A ``key`` is handed
    on unchanged, and a batch to ``bijection``'s batch methods.

    Example:
        >>> b = Invert(Affine(3))   # transform is a triangular solve, inverse a matvec
    """

    bijection: AbstractBijection
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, bijection: AbstractBijection):
        if not isinstance(bijection, AbstractBijection):
            raise TypeError(f"Invert needs an AbstractBijection, got {type(bijection).__name__}")
        self.bijection, self.shape = bijection, tuple(bijection.shape)

    @property
    def uses_key(self) -> bool:
        """Whether the wrapped bijection needs a key."""
        return self.bijection.uses_key

    def _transform_and_log_det(self, z, key=None):
        return self.bijection.inverse_and_log_det(z, key=key)

    def _inverse_and_log_det(self, x, key=None):
        return self.bijection.transform_and_log_det(x, key=key)

    def _transform_and_log_det_batch(self, zs, keys):
        return self.bijection.inverse_and_log_det_batch(zs, keys=keys)

    def _inverse_and_log_det_batch(self, xs, keys):
        return self.bijection.transform_and_log_det_batch(xs, keys=keys)
