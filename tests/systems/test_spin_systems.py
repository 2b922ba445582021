"""Ising2D and Sherrington-Kirkpatrick: energies, symmetries, bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.systems import Ising2D, SherringtonKirkpatrick

_energies = eqx.filter_jit(lambda system, xs: jax.vmap(system.energy)(xs))


def _spins(key, shape):
    return jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0)


@pytest.mark.parametrize("size", [2, 3, 4])
@pytest.mark.parametrize(("coupling", "field"), [(1.0, 0.0), (-0.7, 0.0), (1.3, 0.25),
                                                  (0.5, -1.5)])
def test_ising_all_up_energy(size, coupling, field):
    system = Ising2D(size, coupling=coupling, field=field)
    up = jnp.ones((size, size))
    expected = -2 * coupling * size**2 - field * size**2
    np.testing.assert_allclose(system.energy(up), expected, rtol=1e-14)
    np.testing.assert_allclose(system.energy(-up), -2 * coupling * size**2 + field * size**2,
                               rtol=1e-14)


def test_ising_energy_against_loop():
    size, coupling, field = 4, 0.8, 0.3
    xs = _spins(jax.random.key(0), (16, size, size))
    energies = np.asarray(_energies(Ising2D(size, coupling=coupling, field=field), xs))
    for x, e in zip(np.asarray(xs), energies, strict=True):
        ref = 0.0
        for r in range(size):
            for c in range(size):
                ref -= coupling * x[r, c] * (x[(r + 1) % size, c] + x[r, (c + 1) % size])
                ref -= field * x[r, c]
        np.testing.assert_allclose(e, ref, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("size", [3, 4])
def test_ising_z2_symmetry_at_zero_field(size):
    xs = _spins(jax.random.key(1), (32, size, size))
    system = Ising2D(size, coupling=1.0)
    e = np.asarray(_energies(system, xs))
    np.testing.assert_array_equal(e, np.asarray(_energies(system, -xs)))
    assert np.all(np.isfinite(e)) and len(set(e)) > 1
    # a field breaks it
    biased = Ising2D(size, coupling=1.0, field=0.5)
    assert not np.allclose(_energies(biased, xs), _energies(biased, -xs))


def test_ising_energy_gradient_finite():
    system = Ising2D(3, coupling=1.0, field=0.2)
    grad = jax.grad(system.energy)(_spins(jax.random.key(2), (3, 3)))
    assert grad.shape == (3, 3) and bool(jnp.all(jnp.isfinite(grad)))


def test_sk_energy_against_loop():
    system = SherringtonKirkpatrick.from_seed(7, seed=5)
    j = np.asarray(system.couplings)
    xs = _spins(jax.random.key(3), (16, 7))
    energies = np.asarray(_energies(system, xs))
    for x, e in zip(np.asarray(xs), energies, strict=True):
        ref = -sum(j[a, b] * x[a] * x[b] for a in range(7) for b in range(a + 1, 7))
        np.testing.assert_allclose(e, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(energies, _energies(system, -xs), rtol=1e-13)


def test_sk_couplings_from_seed():
    a = SherringtonKirkpatrick.from_seed(20, seed=1)
    b = SherringtonKirkpatrick.from_seed(20, seed=1)
    j = np.asarray(a.couplings)
    np.testing.assert_array_equal(j, np.asarray(b.couplings))
    assert not np.array_equal(j, np.asarray(SherringtonKirkpatrick.from_seed(20, 2).couplings))
    np.testing.assert_array_equal(j, j.T)
    assert np.all(np.diag(j) == 0)
    upper = j[np.triu_indices(20, 1)]
    # J_ij ~ N(0, 1/n): 190 draws; the variance within ~4 standard errors of 1/n
    assert abs(upper.var() * 20 - 1) < 4 * np.sqrt(2 / 190)
    assert a.n == 20 and a.shape == (20,)


def test_sk_from_file_roundtrip(tmp_path):
    j = np.asarray(SherringtonKirkpatrick.from_seed(6, seed=0).couplings)
    np.save(tmp_path / "j.npy", j)
    system = SherringtonKirkpatrick.from_file(tmp_path / "j.npy")
    np.testing.assert_array_equal(np.asarray(system.couplings), j)


def test_energy_bad_shape_raises():
    with pytest.raises(ValueError, match=r"Ising2D.energy expected .* shape \(3, 3\)"):
        Ising2D(3).energy(jnp.ones((9,)))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        SherringtonKirkpatrick.from_seed(4, 0).energy(jnp.ones((5,)))


@pytest.mark.parametrize("size", [1, 0, -3])
def test_ising_small_size_raises(size):
    with pytest.raises(ValueError, match=r"L >= 2.*L=" + str(size)):
        Ising2D(size)


def test_ising_non_finite_coupling_raises():
    with pytest.raises(ValueError, match="finite J and h"):
        Ising2D(3, coupling=float("inf"))
    with pytest.raises(ValueError, match="finite J and h"):
        Ising2D(3, field=float("nan"))


def test_sk_small_n_raises():
    with pytest.raises(ValueError, match="n >= 2"):
        SherringtonKirkpatrick.from_seed(1, seed=0)


def _bad_matrices():
    rng = np.random.default_rng(0)
    good = np.triu(rng.normal(size=(4, 4)), 1)
    good = good + good.T
    asym = good.copy()
    asym[0, 1] += 0.1
    nan = good.copy()
    nan[1, 2] = nan[2, 1] = np.nan
    inf = good.copy()
    inf[0, 3] = inf[3, 0] = np.inf
    diag = good.copy()
    diag[2, 2] = 0.5
    return {
        "not square": (np.zeros((3, 4)), "square"),
        "one dimensional": (np.zeros(4), "square"),
        "not symmetric": (asym, "symmetric"),
        "nan": (nan, "finite"),
        "inf": (inf, "finite"),
        "nonzero diagonal": (diag, "zero diagonal"),
        "too small": (np.zeros((1, 1)), "n >= 2"),
        "strings": (np.array([["a", "b"], ["c", "d"]]), "finite numbers"),
    }


@pytest.mark.parametrize("case", list(_bad_matrices()))
def test_sk_couplings_file_bad_content_raises(tmp_path, case):
    matrix, message = _bad_matrices()[case]
    path = tmp_path / "j.npy"
    np.save(path, matrix)
    with pytest.raises(ValueError, match=message) as err:
        SherringtonKirkpatrick.from_file(path)
    assert str(path) in str(err.value)  # says which file


def test_sk_couplings_file_missing_raises(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        SherringtonKirkpatrick.from_file(tmp_path / "missing.npy")


def test_sk_couplings_file_unreadable_raises(tmp_path):
    path = tmp_path / "j.npy"
    path.write_text("not an array")
    with pytest.raises(ValueError, match="not a readable .npy"):
        SherringtonKirkpatrick.from_file(path)
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable .npy"):
        SherringtonKirkpatrick.from_file(pickled)


def test_sk_constructor_bad_matrix_raises():
    with pytest.raises(ValueError, match="symmetric"):
        SherringtonKirkpatrick(np.array([[0.0, 1.0], [2.0, 0.0]]))
