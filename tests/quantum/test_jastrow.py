"""The ground-state Jastrow factor.

Kato's cusp conditions through the local energy: with the factor the local energy stays
finite as two electrons meet (antiparallel and parallel spins, both Laplacian methods),
without it the Coulomb term diverges as 1/r. The pair network keeps the cusps (it is a
function of r^2). Same-spin exchange still flips the sign. At T > 0 the run refuses the
factor (the states would not be orthonormal); bad arguments are one clear error.
float64 throughout (tests/conftest.py).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermax.bijections import Identity
from thermax.catalog import OptionError, build_run
from thermax.quantum import (
    FlowSlater,
    ForwardLaplacian,
    Jastrow,
    LoopLaplacian,
    OscillatorBasis2D,
    PlaneWaveBasis,
    QuantumDot,
)

BASIS = OscillatorBasis2D(1.0, emax=3.0)


def _local_energy(wf, system, x, k_up, k_down, laplacian):
    return float(system.local_energy(lambda v: wf.log_abs(v, k_up, k_down), x,
                                     laplacian=laplacian))


def _trained_like(wf):
    """The factor with a nonzero pair network and b != 1, as after training."""
    k1, k2 = jax.random.split(jax.random.key(5))
    return eqx.tree_at(lambda w: (w.pair_out, w.log_b), wf,
                       (jax.random.normal(k1, wf.pair_out.shape) * 0.3,
                        jax.random.normal(k2, (2,)) * 0.5))


@pytest.mark.parametrize("n_up, n_down", [(1, 1), (2, 0)])
@pytest.mark.parametrize("laplacian", [LoopLaplacian(), ForwardLaplacian()],
                         ids=["loop", "forward"])
def test_cusp_keeps_local_energy_finite(n_up, n_down, laplacian):
    inner = FlowSlater(BASIS, Identity((2, 2)), n_up, n_down)
    wf = _trained_like(Jastrow(inner, coulomb=1.0, width=8, key=jax.random.key(0)))
    system = QuantumDot(n_up, n_down, 1.0, coulomb=1.0)
    k_up = jnp.arange(n_up)
    k_down = jnp.arange(n_down) if n_down else None
    with_factor, without = [], []
    for r in (1e-3, 1e-4, 1e-5):
        x = jnp.array([[0.3, -0.2], [0.3 + 0.6 * r, -0.2 + 0.8 * r]])
        with_factor.append(_local_energy(wf, system, x, k_up, k_down, laplacian))
        without.append(_local_energy(inner, system, x, k_up, k_down, laplacian))
    # cusp: E_loc(r) = E_loc(0) + O(r)
    assert abs(with_factor[2] - with_factor[1]) < 1e-3
    assert abs(with_factor[1] - with_factor[0]) < 1e-2
    # control: the bare determinant leaves the 1/r of the repulsion
    np.testing.assert_allclose(without[2] / without[1], 10.0, rtol=1e-2)


def test_pair_network_starts_at_zero_and_keeps_symmetry():
    inner = FlowSlater(BASIS, Identity((4, 2)), 2, 2)
    pade = Jastrow(inner, coulomb=1.0, width=0)
    wf = Jastrow(inner, coulomb=1.0, width=8, key=jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (4, 2))
    k_up, k_down = jnp.array([0, 2]), jnp.array([1, 0])
    np.testing.assert_allclose(wf.log_abs(x, k_up, k_down), pade.log_abs(x, k_up, k_down),
                               rtol=0, atol=1e-12)
    wf = _trained_like(wf)
    log_abs, sign = wf.log_abs_and_sign(x, k_up, k_down)
    for swap in ([1, 0, 2, 3], [0, 1, 3, 2]):    # same-spin exchanges
        log_abs_p, sign_p = wf.log_abs_and_sign(x[jnp.array(swap)], k_up, k_down)
        np.testing.assert_allclose(log_abs_p, log_abs, rtol=0, atol=1e-12)
        assert float(sign_p) == -float(sign)
    # the factor itself is invariant under any permutation within a spin channel and
    # depends on the spins only through which pairs are parallel
    assert float(wf.factor(x)) != 0.0


def test_bad_arguments():
    inner = FlowSlater(BASIS, Identity((2, 2)), 1, 1)
    with pytest.raises(ValueError, match="needs a key"):
        Jastrow(inner, width=4)
    with pytest.raises(ValueError, match="coulomb must be"):
        Jastrow(inner, coulomb=-1.0, width=0)
    with pytest.raises(TypeError, match="AbstractWavefunction"):
        Jastrow(BASIS, width=0)
    waves = PlaneWaveBasis(4.0, 2, n_orbitals=5)
    with pytest.raises(ValueError, match="complex"):
        Jastrow(FlowSlater(waves, Identity((2, 2)), 2, 0), width=0)


def test_run_refuses_jastrow_at_finite_temperature():
    with pytest.raises(OptionError, match="--jastrow pade is for the ground state"):
        build_run("quantum-dot", {"n_up": 1, "n_down": 1, "temperature": 0.5,
                                  "jastrow": "pade", "pretrain_steps": 0})


def test_run_builds_jastrow_at_zero_temperature():
    run = build_run("quantum-dot", {"n_up": 1, "n_down": 1, "jastrow": "pade",
                                    "jastrow_width": 4, "batch": 8})
    assert isinstance(run.model.wavefunction, Jastrow)
    assert run.model.wavefunction.pair_out.shape == (2, 4)
