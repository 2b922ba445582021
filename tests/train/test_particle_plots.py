"""Particle pictures: samples over the ground state, and the particle density (smoke tests)."""

import numpy as np
import pytest

from thermax.exact import coulomb_ground_state
from thermax.train import plot_particle_density, plot_particle_samples

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ground_states():
    return {dim: coulomb_ground_state(4, dim, starts=2) for dim in (1, 2, 3)}


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("with_ground_state", [True, False])
def test_pictures_are_written(tmp_path, ground_states, dim, with_ground_state):
    """Samples scattered about the ground state (rows of a strip in 1D, the x-y projection
    in 3D) and the density pictures, with and without the ground state drawn."""
    ground = ground_states[dim] if with_ground_state else None
    xs = 0.1 * np.random.default_rng(dim).normal(size=(256, 4, dim))
    if ground is not None:
        xs = xs + ground.positions
    plot_particle_samples(xs, tmp_path / "samples.png", ground_state=ground, n_show=3)
    plot_particle_density(xs, tmp_path / "density.png", ground_state=ground, bins=20)
    assert _is_png(tmp_path / "samples.png") and _is_png(tmp_path / "density.png")


def test_fewer_samples_than_shown_and_a_single_particle(tmp_path):
    xs = np.random.default_rng(0).normal(size=(2, 1, 2))
    plot_particle_samples(xs, str(tmp_path / "one.png"), n_show=8)
    plot_particle_density(xs, str(tmp_path / "one-density.png"),
                          ground_state=coulomb_ground_state(1, 2))
    assert _is_png(tmp_path / "one.png") and _is_png(tmp_path / "one-density.png")


BAD = {
    "no batch axis": (lambda p, g: plot_particle_samples(np.zeros((4, 2)), p),
                      # the runtime type checker (annotation "batch n dim") may refuse it first
                      r"shape \(batch, n, dim\) .* got shape \(4, 2\)|parameter 'x'"),
    "dim 4": (lambda p, g: plot_particle_density(np.zeros((3, 4, 4)), p),
              r"dim in \(1, 2, 3\), got shape \(3, 4, 4\)"),
    "ground state of another system": (
        lambda p, g: plot_particle_samples(np.zeros((3, 5, 2)), p, ground_state=g[2]),
        r"ground state has shape \(4, 2\) but the samples have \(n, dim\) = \(5, 2\)"),
    "n_show 0": (lambda p, g: plot_particle_samples(np.zeros((3, 4, 2)), p, n_show=0),
                 r"n_show >= 1, got n_show=0"),
    "bins 1": (lambda p, g: plot_particle_density(np.zeros((3, 4, 2)), p, bins=1),
               r"bins >= 2, got bins=1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments(tmp_path, ground_states, case):
    draw, message = BAD[case]
    with pytest.raises((ValueError, TypeError), match=message):
        draw(tmp_path / "bad.png", ground_states)
    assert not (tmp_path / "bad.png").exists()
