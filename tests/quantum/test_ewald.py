"""Ewald summation of the 1/r electron gas: Madelung constants of the square and simple-cubic
Wigner lattices, lattice supercells, independence of the splitting parameter, the truncation
bound, symmetries, scaling, derivatives (against finite differences and the virial), vmap /
jit, dtype, and bad input."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.quantum._ewald import EwaldSum, minimum_image

#: ``L xi`` of one charge per cell with its background (1/r in both dimensions). The
#: square-lattice and simple-cubic Madelung constants of the Wigner lattice (Bonsall &
#: Maradudin 1977; Nijboer & de Wette 1957): -3.90026492 and -2.83729747948, i.e. -1.100244
#: / r_s and -0.880059 / r_s per electron in Hartree.
MADELUNG = {2: -3.900264920001956, 3: -2.837297479480620}
BOX = 2.3                  # a box side other than 1, so that factors of L are exercised
N = 7


#: One compiled program per (module structure, shape): faster than op-by-op dispatch.
_energy = eqx.filter_jit(lambda e, x: e.energy(x))
_phi = eqx.filter_jit(lambda e, r: e.pair_potential(r))


def _config(dim, n=N, seed=0, box=BOX):
    return jax.random.uniform(jax.random.key(seed), (n, dim), maxval=box)


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def dim(request):
    return request.param


@pytest.fixture(scope="module")
def ewald(dim):
    return EwaldSum(dim, BOX)


@pytest.fixture(scope="module")
def energy(ewald):
    """The jitted energy of one configuration (shared by the tests of a dimension)."""
    return jax.jit(lambda x: ewald.energy(x))   # (jax.jit cannot hash a bound method)


# --------------------------------------------------------------------------- references

@pytest.mark.parametrize("kappa", [None, 2.0, 5.0])
def test_madelung_constant(dim, kappa):
    """One charge per cell: ``L xi`` is the Madelung constant to 1e-9 (absolute; met to
    ~1e-12), for any box and splitting, and the energy per cell is ``xi/2``."""
    for box in (1.0, BOX):
        alpha = None if kappa is None else kappa / box
        e = EwaldSum(dim, box, alpha=alpha)
        assert abs(float(box * e.madelung) - MADELUNG[dim]) < 1e-9
        x = jnp.full((1, dim), 0.3)
        np.testing.assert_allclose(_energy(e, x), e.madelung / 2, rtol=0, atol=1e-14)


def test_supercell_of_the_lattice(dim, ewald):
    """``k^dim`` charges on the simple lattice of spacing ``L/k`` (shifted off the origin):
    ``E = N M / (2 L/k)``, every pair term of the structure-factor form exercised."""
    for k in (2, 3) if dim == 2 else (2,):
        grid = np.stack(np.meshgrid(*[np.arange(k)] * dim, indexing="ij"), -1)
        x = jnp.asarray((grid.reshape(-1, dim) + 0.37) * BOX / k)
        expected = k**dim * MADELUNG[dim] / (2 * BOX / k)
        np.testing.assert_allclose(_energy(ewald, x), expected, rtol=0, atol=1e-10)


def test_alpha_independence(dim):
    """The total energy of 7 random charges agrees to 1e-10 absolute (on energies of size
    ~3-10) for ``a L`` from 2 to 5, and the pair potential too."""
    x = _config(dim)
    r = jax.random.uniform(jax.random.key(1), (20, dim), minval=-BOX, maxval=BOX)
    energies, potentials = [], []
    for kappa in (2.0, 2.8, 3.5, 5.0):
        e = EwaldSum(dim, BOX, alpha=kappa / BOX)
        energies.append(float(_energy(e, x)))
        potentials.append(_phi(e, r))
    assert max(energies) - min(energies) < 1e-10, energies
    assert abs(energies[0]) > 1.0                        # the check is not on a tiny number
    for phi in potentials[1:]:
        np.testing.assert_allclose(phi, potentials[0], rtol=0, atol=1e-10)


def test_energy_is_the_pair_sum(ewald, energy, dim):
    """The structure-factor form of ``energy`` equals ``sum_{i<j} phi(x_i - x_j) + N xi/2``."""
    x = _config(dim, seed=2)
    i, j = np.triu_indices(N, k=1)
    direct = jnp.sum(_phi(ewald, x[i] - x[j])) + N * ewald.madelung / 2
    np.testing.assert_allclose(energy(x), direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tol", [1e-4, 1e-7])
def test_truncation_within_tol(dim, tol):
    """The pair potential and ``xi`` are within ``tol / L`` of a ``tol = 1e-15`` sum, with
    fewer vectors than it, at the default and at a small splitting."""
    reference = EwaldSum(dim, BOX, tol=1e-15)
    r = jax.random.uniform(jax.random.key(3), (200, dim), minval=-BOX, maxval=BOX)
    for alpha in (None, 1.8 / BOX):
        e = EwaldSum(dim, BOX, alpha=alpha, tol=tol)
        assert e.n_reciprocal < EwaldSum(dim, BOX, alpha=alpha, tol=1e-15).n_reciprocal
        err = jnp.max(jnp.abs(_phi(e, r) - _phi(reference, r)))
        assert BOX * err <= tol
        assert BOX * abs(e.madelung - reference.madelung) <= tol


def test_default_vector_counts(ewald, dim):
    """At the default splitting the 3^dim nearest images suffice; G vectors are few."""
    assert ewald.n_images == 3**dim
    assert 3.4 < ewald.alpha * BOX < 3.6
    assert ewald.n_reciprocal == {2: 48, 3: 423}[dim]
    coarse = EwaldSum(dim, BOX, tol=1e-6)
    assert coarse.n_images == 3**dim
    assert coarse.n_reciprocal <= {2: 12, 3: 61}[dim]


# --------------------------------------------------------------------------- symmetries

def test_translation_and_lattice_invariance(energy, dim):
    x = _config(dim, seed=4)
    e0 = energy(x)
    shift = jax.random.normal(jax.random.key(5), (1, dim))
    np.testing.assert_allclose(energy(x + shift), e0, rtol=0, atol=1e-12)
    for k in range(dim):
        for particle, times in ((0, 1), (3, -2)):
            moved = x.at[particle, k].add(times * BOX)
            np.testing.assert_allclose(energy(moved), e0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(energy(x[::-1]), e0, rtol=0, atol=1e-12)   # relabelling


def test_pair_potential_symmetries(ewald, dim):
    """Even, periodic, and ``phi(r) - 1/|r| -> xi`` at short distance."""
    r = jax.random.uniform(jax.random.key(6), (10, dim), minval=-BOX, maxval=BOX)
    phi = _phi(ewald, r)
    np.testing.assert_allclose(_phi(ewald, -r), phi, rtol=0, atol=1e-12)
    lattice = BOX * jnp.asarray(np.eye(dim)[dim - 1] - 2 * np.eye(dim)[0])
    np.testing.assert_allclose(_phi(ewald, r + lattice[None, :]), phi, rtol=0,
                               atol=1e-12)
    assert _phi(ewald, r[:2].reshape(2, 1, dim)).shape == (2, 1)
    small = jnp.full((dim,), 1e-4 / math.sqrt(dim))
    np.testing.assert_allclose(_phi(ewald, small) - 1e4, ewald.madelung, rtol=0,
                               atol=1e-6)


def test_scaling_with_the_box(dim):
    """Coulomb scaling: ``E(s x; s L) = E(x; L) / s`` (a rescaled default splitting)."""
    x = _config(dim, seed=7)
    np.testing.assert_allclose(_energy(EwaldSum(dim, 3 * BOX), 3 * x),
                               _energy(EwaldSum(dim, BOX), x) / 3, rtol=1e-12)


def test_minimum_image():
    dx = jnp.array([[0.7, -1.6], [2.45, -0.5]])
    mi = minimum_image(dx, 1.0)
    np.testing.assert_allclose(mi, [[-0.3, 0.4], [0.45, -0.5]], atol=1e-15)
    np.testing.assert_allclose((dx - mi) - jnp.round(dx - mi), 0.0, atol=1e-15)
    np.testing.assert_allclose(jax.jacfwd(lambda d: minimum_image(d, 1.0))(dx[0]), np.eye(2))


# --------------------------------------------------------------------------- derivatives

def test_gradient_matches_finite_differences(ewald, energy, dim):
    """``jax.grad`` is finite, sums to zero (no net force), and matches central
    differences (step 1e-5, agreement to 1e-7 relative)."""
    x = _config(dim, seed=8)
    grad = jax.jit(jax.grad(ewald.energy))(x)
    assert bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_allclose(jnp.sum(grad, axis=0), 0.0, atol=1e-10)
    h, scale = 1e-5, float(jnp.max(jnp.abs(grad)))
    for particle, k in ((0, 0), (2, dim - 1), (N - 1, 1)):
        step = jnp.zeros_like(x).at[particle, k].set(h)
        fd = (energy(x + step) - energy(x - step)) / (2 * h)
        np.testing.assert_allclose(grad[particle, k], fd, rtol=0, atol=1e-7 * scale)


def test_box_length_derivative_is_the_virial(dim):
    """At fixed fractional coordinates ``E = E_1 / L``, so ``dE/dL = -E/L`` (the pressure
    of the electron gas); ``box_length`` is a differentiable leaf."""
    s = _config(dim, seed=9, box=1.0)
    e = EwaldSum(dim, BOX)

    def energy_at(box):
        return eqx.tree_at(lambda m: m.box_length, e, box).energy(s * box)

    value, slope = jax.jit(jax.value_and_grad(energy_at))(jnp.asarray(BOX))
    np.testing.assert_allclose(slope, -value / BOX, rtol=1e-9)


def test_vmap_and_jit(ewald, dim):
    xs = jax.random.uniform(jax.random.key(10), (5, N, dim), maxval=BOX)
    batched = jax.jit(jax.vmap(ewald.energy))(xs)
    one_by_one = jnp.stack([ewald.energy(x) for x in xs])             # eager
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-12)
    # the module as a traced argument (its static fields hash; arrays are leaves)
    through = eqx.filter_jit(lambda m, y: jax.vmap(m.energy)(y))(ewald, xs)
    np.testing.assert_allclose(through, one_by_one, rtol=0, atol=1e-12)
    grads = jax.jit(jax.vmap(jax.grad(ewald.energy)))(xs)
    assert grads.shape == xs.shape and bool(jnp.all(jnp.isfinite(grads)))


def test_float32():
    e32 = EwaldSum(2, BOX, dtype=jnp.float32, tol=1e-6)
    x = _config(2, seed=11)
    value = _energy(e32, x.astype(jnp.float32))
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, _energy(EwaldSum(2, BOX), x), rtol=1e-5)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dim": 1}, "dim must be 2"),
    ({"dim": 4}, "dim must be 2"),
    ({"dim": True}, "dim must be 2"),
    ({"box_length": 0.0}, "box_length must be a finite number > 0"),
    ({"box_length": -1.5}, "box_length must be a finite number > 0"),
    ({"box_length": math.inf}, "box_length must be a finite number > 0"),
    ({"box_length": jnp.ones(2)}, "box_length must be a concrete number or 0-d"),
    ({"alpha": 0.0}, "alpha must be a finite number > 0"),
    ({"alpha": -2.0}, "alpha must be a finite number > 0"),
    ({"tol": 0.0}, r"tol must lie in \(0, 1\)"),
    ({"tol": 1.0}, r"tol must lie in \(0, 1\)"),
    ({"tol": -1e-6}, r"tol must lie in \(0, 1\)"),
])
def test_bad_construction(kwargs, match, without_jaxtyping):
    args = {"dim": 2, "box_length": 1.0} | kwargs
    dim, box = args.pop("dim"), args.pop("box_length")
    with pytest.raises(ValueError, match=match):
        EwaldSum(dim, box, **args)


def test_bad_shapes(without_jaxtyping):
    e = EwaldSum(2, 1.0, tol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(n, 2\), got shape \(4, 3\)"):
        e.energy(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="batch with jax.vmap"):
        e.energy(jnp.zeros((5, 4, 2)))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        e.pair_potential(jnp.zeros((4, 3)))
