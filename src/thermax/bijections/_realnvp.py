"""A ready-made Real NVP flow for lattice fields: checkerboard couplings, conv conditioners."""

import jax
from jaxtyping import PRNGKeyArray

from ..nn import ConvConditioner
from ._chain import Chain, Scan
from ._coupling import AffineCoupling, checkerboard_mask


def lattice_real_nvp(shape: tuple[int, int], *, n_couplings: int = 8, width: int = 16,
                     depth: int = 3, kernel: int = 3, key: PRNGKeyArray, dtype=None) -> Scan:
    """Real NVP on an ``L x W`` periodic lattice field (Dinh et al.; Albergo et al. 2019).

    ``n_couplings`` affine couplings (an even number) alternate the two checkerboard
    parities, so each site is transformed every other layer conditioned on its neighbours;
    each conditioner is a periodic :class:`thermax.nn.ConvConditioner` (``depth``
    convolutions of ``width`` channels), zero-initialised so the untrained flow is the
    identity. The pairs are stacked and applied with one ``lax.scan``.

    Sampling (``transform``) and density evaluation (``inverse``) cost the same: one
    conditioner pass per coupling.

    Example:
        >>> flow = Transformed(StandardNormal((8, 8)),
        ...                    lattice_real_nvp((8, 8), n_couplings=8, key=jax.random.key(0)))
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 2 or shape[0] % 2 or shape[1] % 2:
        raise ValueError(f"lattice_real_nvp needs a 2D lattice with even sides (checkerboard "
                         f"masks on a periodic lattice), got shape {shape}")
    if n_couplings < 2 or n_couplings % 2:
        raise ValueError(f"lattice_real_nvp: n_couplings must be an even number >= 2 (the two "
                         f"checkerboard parities alternate), got {n_couplings}")

    def pair(k: PRNGKeyArray) -> Chain:
        k0, k1 = jax.random.split(k)
        return Chain([
            AffineCoupling(checkerboard_mask(shape, parity),
                           ConvConditioner(shape, width=width, depth=depth, kernel=kernel,
                                           key=kk, dtype=dtype))
            for parity, kk in ((0, k0), (1, k1))])

    return Scan.build(pair, n_couplings // 2, key=key)


