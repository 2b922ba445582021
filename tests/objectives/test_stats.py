"""Batch statistics: mean/stderr, free-energy stats, importance-weighted ln Z and ESS."""

import jax.numpy as jnp
import numpy as np

from thermax.objectives import FreeEnergyStats, ImportanceStats, mean_and_stderr


def test_mean_and_stderr_matches_numpy():
    x = np.random.default_rng(0).normal(size=37)
    mean, err = mean_and_stderr(jnp.asarray(x))
    np.testing.assert_allclose(mean, x.mean(), rtol=1e-14)
    np.testing.assert_allclose(err, x.std(ddof=1) / np.sqrt(37), rtol=1e-12)


def test_free_energy_stats_from_samples():
    rng = np.random.default_rng(1)
    energy, log_prob, beta = rng.normal(size=50), -rng.uniform(1, 5, size=50), 0.7
    stats = FreeEnergyStats.from_samples(jnp.asarray(energy), jnp.asarray(log_prob),
                                         jnp.asarray(beta))
    f = energy + log_prob / beta
    d = stats.as_dict()
    np.testing.assert_allclose(d["free_energy"], f.mean(), rtol=1e-13)
    np.testing.assert_allclose(d["free_energy_stderr"], f.std(ddof=1) / np.sqrt(50), rtol=1e-12)
    np.testing.assert_allclose(d["energy"], energy.mean(), rtol=1e-13)
    np.testing.assert_allclose(d["entropy"], -log_prob.mean(), rtol=1e-13)
    np.testing.assert_allclose(d["entropy_stderr"], log_prob.std(ddof=1) / np.sqrt(50),
                               rtol=1e-12)
    assert d["beta"] == beta
    assert set(d) == {"free_energy", "free_energy_stderr", "energy", "energy_stderr",
                      "entropy", "entropy_stderr", "beta"}


def test_importance_exact_when_p_is_boltzmann():
    """p(x) = exp(-beta H(x)) / Z exactly: every weight is Z, so ln Z is exact, ESS = 1."""
    rng = np.random.default_rng(2)
    beta = 0.8
    levels = rng.normal(size=6) * 3.0          # a toy system with 6 states
    log_z = np.log(np.exp(-beta * levels).sum())
    states = rng.integers(0, 6, size=40)       # any batch of states
    energy = levels[states]
    log_prob = -beta * energy - log_z
    imp = ImportanceStats.from_samples(jnp.asarray(energy), jnp.asarray(log_prob),
                                       jnp.asarray(beta)).as_dict()
    np.testing.assert_allclose(imp["log_z"], log_z, rtol=0, atol=1e-12)
    assert imp["log_z_stderr"] < 1e-12
    np.testing.assert_allclose(imp["ess_fraction"], 1.0, rtol=0, atol=1e-12)


def test_importance_uniform_proposal_over_all_states():
    """Uniform p over all K states, each drawn once: mean(w) = Z exactly; ESS from w."""
    beta, levels = 1.3, np.array([-2.0, -1.0, 0.5, 3.0])
    k = len(levels)
    imp = ImportanceStats.from_samples(jnp.asarray(levels), jnp.full(k, -np.log(k)),
                                       jnp.asarray(beta)).as_dict()
    w = np.exp(-beta * levels) * k
    np.testing.assert_allclose(imp["log_z"], np.log(np.exp(-beta * levels).sum()), rtol=1e-13)
    np.testing.assert_allclose(imp["ess_fraction"], w.sum() ** 2 / (k * (w**2).sum()),
                               rtol=1e-12)
    np.testing.assert_allclose(imp["log_z_stderr"], w.std(ddof=1) / np.sqrt(k) / w.mean(),
                               rtol=1e-12)
    assert 0 < imp["ess_fraction"] < 1


def test_importance_stable_for_huge_weights():
    energy = jnp.asarray([-1000.0, -999.0, -998.0])
    imp = ImportanceStats.from_samples(energy, jnp.asarray([-1.0, -1.0, -1.0]),
                                       jnp.asarray(1.0)).as_dict()
    assert all(np.isfinite(v) for v in imp.values())
    np.testing.assert_allclose(imp["log_z"],
                               1.0 + np.log(np.exp([1000.0, 999.0, 998.0] - np.float64(1000)
                                                   ).mean()) + 1000.0, rtol=1e-13)
