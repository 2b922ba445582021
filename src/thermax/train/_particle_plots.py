"""Pictures of particle systems: sampled configurations and the particle density.

Both take a batch ``x`` of shape ``(batch, n, dim)`` and write a PNG. In 3D the picture is
the ``x``-``y`` projection; in 1D a strip. A :class:`thermax.exact.CoulombGroundState` given
as ``ground_state`` is drawn over the samples (its positions and, dashed, the mean radius of
each of its shells); the ground state's orientation is arbitrary (the trap is isotropic), so
compare radii and shell structure, not angles.
"""

import math
import os

import numpy as np
from jaxtyping import ArrayLike, Float

from ..exact import CoulombGroundState


def _batch(x, ground_state: CoulombGroundState | None, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[2] not in (1, 2, 3):
        raise ValueError(f"{what} needs particle samples of shape (batch, n, dim) with "
                         f"batch >= 1 and dim in (1, 2, 3), got shape {x.shape}")
    if ground_state is not None and ground_state.positions.shape != x.shape[1:]:
        raise ValueError(f"{what}: the ground state has shape {ground_state.positions.shape} "
                         f"but the samples have (n, dim) = {x.shape[1:]}")
    return x


def _shell_radii(ground_state: CoulombGroundState) -> list[float]:
    """Mean radius of each shell, innermost first."""
    edges = np.cumsum((0, *ground_state.shells))
    return [float(np.mean(ground_state.radii[a:b])) for a, b in zip(edges[:-1], edges[1:],
                                                                     strict=True)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_ground_state(ax, ground_state: CoulombGroundState, *, label: bool) -> None:
    pos = ground_state.positions
    ax.scatter(pos[:, 0], pos[:, 1], s=60, marker="x", color="k", lw=1.2,
               label="ground state" if label else None, zorder=3)
    for r in _shell_radii(ground_state):
        if r > 0:
            ax.add_patch(_circle(r))


def _circle(r: float):
    from matplotlib.patches import Circle

    return Circle((0.0, 0.0), r, fill=False, ls="--", lw=0.8, color="0.4")


def plot_particle_samples(x: Float[ArrayLike, "batch n dim"], path: str | os.PathLike, *,
                          ground_state: CoulombGroundState | None = None,
                          n_show: int = 4) -> None:
    """The particle positions of the first ``n_show`` samples, one panel each (2D, or the
    ``x``-``y`` projection in 3D), or one row per sample on a strip (1D), with the ground
    state drawn over them if given.

    Example:
        >>> xs = np.random.default_rng(0).normal(size=(8, 6, 2))
        >>> plot_particle_samples(xs, "samples.png", ground_state=coulomb_ground_state(6, 2))
    """
    what = "plot_particle_samples"
    x = _batch(x, ground_state, what)
    if isinstance(n_show, bool) or not isinstance(n_show, int) or n_show < 1:
        raise ValueError(f"{what} needs an integer n_show >= 1, got n_show={n_show!r}")
    plt = _pyplot()
    shown = x[:n_show]
    k, n, dim = len(shown), x.shape[1], x.shape[2]
    if dim == 1:
        fig, ax = plt.subplots(figsize=(6, 1.0 + 0.35 * (k + 1)))
        for row, sample in enumerate(shown):
            ax.scatter(sample[:, 0], np.full(n, row), s=14, color=f"C{row % 10}")
        if ground_state is not None:
            ax.scatter(ground_state.positions[:, 0], np.full(n, -1), s=50, marker="x",
                       color="k")
        ax.set_yticks(range(-1 if ground_state is not None else 0, k))
        ax.set_yticklabels((["ground"] if ground_state is not None else [])
                           + [f"sample {i}" for i in range(k)], fontsize=7)
        ax.set_xlabel("x")
    else:
        reach = float(np.max(np.abs(shown[..., :2])))
        if ground_state is not None:
            reach = max(reach, float(ground_state.radii.max()))
        reach = 1.1 * reach or 1.0
        fig, axes = plt.subplots(1, k, figsize=(2.4 * k, 2.7), squeeze=False)
        for i, (ax, sample) in enumerate(zip(axes[0], shown, strict=True)):
            ax.scatter(sample[:, 0], sample[:, 1], s=18, color="C0", zorder=2)
            if ground_state is not None:
                _draw_ground_state(ax, ground_state, label=i == 0)
            ax.set_xlim(-reach, reach)
            ax.set_ylim(-reach, reach)
            ax.set_aspect("equal")
            ax.set_title(f"sample {i}", fontsize=8)
            ax.tick_params(labelsize=6)
        if ground_state is not None:
            axes[0, 0].legend(fontsize=6, loc="lower left")
    projection = " (x-y projection)" if dim == 3 else ""
    fig.suptitle(f"{n} particles in {dim}D{projection}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ball_volume(r: np.ndarray, dim: int) -> np.ndarray:
    return math.pi ** (dim / 2) / math.gamma(dim / 2 + 1) * r**dim


def plot_particle_density(x: Float[ArrayLike, "batch n dim"], path: str | os.PathLike, *,
                          ground_state: CoulombGroundState | None = None,
                          bins: int = 60) -> None:
    """The particle density of a batch: a 2D histogram of all positions (``x``-``y``
    projection in 3D; a histogram along the line in 1D), and the radial density

        n(r) = <number of particles with |x| in [r, r + dr)> / (V_dim(r + dr) - V_dim(r)),

    (``V_dim`` the volume of the ``dim``-ball, so ``int n(r) dV = n``), with the ground
    state's shell radii as dashed lines.

    Example:
        >>> xs = np.random.default_rng(0).normal(size=(512, 6, 2))
        >>> plot_particle_density(xs, "density.png", ground_state=coulomb_ground_state(6, 2))
    """
    what = "plot_particle_density"
    x = _batch(x, ground_state, what)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"{what} needs an integer bins >= 2, got bins={bins!r}")
    plt = _pyplot()
    batch, n, dim = x.shape
    points = x.reshape(-1, dim)
    shells = [] if ground_state is None else _shell_radii(ground_state)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    if dim == 1:
        left.hist(points[:, 0], bins=bins, density=True, color="C0", alpha=0.8)
        if ground_state is not None:
            for i, p in enumerate(ground_state.positions[:, 0]):
                left.axvline(p, color="k", ls="--", lw=0.8,
                             label="ground state" if i == 0 else None)
            left.legend(fontsize=7)
        left.set_xlabel("x")
        left.set_ylabel("density per particle")
    else:
        reach = float(np.quantile(np.abs(points[:, :2]), 0.999)) * 1.05 or 1.0
        _, _, _, image = left.hist2d(points[:, 0], points[:, 1], bins=bins,
                                     range=[[-reach, reach], [-reach, reach]], cmap="viridis")
        fig.colorbar(image, ax=left, shrink=0.8, label="count")
        if ground_state is not None:
            _draw_ground_state(left, ground_state, label=True)
            left.legend(fontsize=7, loc="lower left")
        left.set_xlim(-reach, reach)
        left.set_ylim(-reach, reach)
        left.set_aspect("equal")
        left.set_xlabel("x")
        left.set_ylabel("y")
    left.set_title(f"positions of {batch} samples x {n} particles"
                   + (" (x-y projection)" if dim == 3 else ""), fontsize=8)
    radii = np.linalg.norm(points, axis=1)
    edges = np.linspace(0.0, float(np.quantile(radii, 0.999)) * 1.05 or 1.0, bins + 1)
    counts, _ = np.histogram(radii, bins=edges)
    density = counts / (batch * np.diff(_ball_volume(edges, dim)))
    right.step(edges[:-1], density, where="post", color="C0")
    for i, r in enumerate(shells):
        right.axvline(r, color="k", ls="--", lw=0.8,
                      label="ground-state shells" if i == 0 else None)
    if shells:
        right.legend(fontsize=7)
    right.set_xlabel("r = |x|")
    right.set_ylabel("n(r)  (particles per unit volume)")
    right.set_title("radial density", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
