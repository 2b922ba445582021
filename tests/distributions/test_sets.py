"""Distributions over sets of occupied states (thermax.distributions._sets) and the set
networks (thermax.nn._sets): exact normalisation by enumerating all C(M, N) sets, valid
samples whose frequencies match exp(ln p) (chi-square, fixed seeds), ln p against a naive
per-step reference, the exact free-fermion sampler, and pretraining. float64 (conftest)."""

import functools
from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import build_perturbed
from scipy.special import logsumexp
from scipy.stats import chi2

from thermax.distributions import AutoregressiveSet, FreeFermionSets, pretrain_sets
from thermax.exact import all_sets, free_fermion_log_z
from thermax.nn import SetMADE, SetTransformer

M, N = 6, 3
SETS = all_sets(M, N)
N_SAMPLES = 4000

#: Every set network at (N, M) = (3, 6), small, by name.
SET_NETWORKS = {
    "transformer": lambda key: SetTransformer(N, M, d=8, heads=2, depth=2, mlp=16, key=key),
    "made": lambda key: SetMADE(N, M, width=8, depth=3, key=key),
}


def compile_methods(dist):
    """One distribution and its jitted methods, shared by the tests of that distribution;
    ``logits`` are the unmasked logits (the network's, or the free-fermion conditionals')."""
    logits = dist.net.logits if isinstance(dist, AutoregressiveSet) else dist._logits
    return SimpleNamespace(
        dist=dist,
        log_prob_batch=eqx.filter_jit(lambda d, ks: d.log_prob_batch(ks)),
        sample_batch=eqx.filter_jit(lambda d, keys: d.sample_and_log_prob_batch(keys=keys)),
        logits=eqx.filter_jit(logits))


@functools.cache
def get_case(name: str):
    """A perturbed network's distribution (weights and biases all non-zero), or the exact
    free-fermion distribution, with its jitted methods (built once per module)."""
    if name == "fermions":
        return compile_methods(FreeFermionSets(jnp.array([0.0, 0.4, 0.5, 1.1, 1.3, 2.0]), N,
                                               1.7))
    net = build_perturbed(SET_NETWORKS[name], 7 + list(SET_NETWORKS).index(name))
    return compile_methods(AutoregressiveSet(net))


@pytest.fixture(params=[*SET_NETWORKS, "fermions"])
def any_case(request):
    return get_case(request.param)


@pytest.fixture(params=list(SET_NETWORKS))
def net_case(request):
    return get_case(request.param)


@pytest.fixture
def fermion_case():
    return get_case("fermions")


def chi_square_pvalue(samples, probs):
    """p-value of the sample counts of every set against ``probs`` (sets with expected count
    below 5 pooled into one bin)."""
    index = {tuple(s): i for i, s in enumerate(SETS.tolist())}
    counts = np.bincount([index[tuple(s)] for s in np.asarray(samples).tolist()],
                         minlength=len(SETS))
    expected = N_SAMPLES * probs
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    stat = np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep])
    return chi2.sf(stat, keep.sum() - 1)


def test_normalised_by_enumeration(any_case):
    lp = np.asarray(any_case.log_prob_batch(any_case.dist, jnp.asarray(SETS)))
    assert np.all(np.isfinite(lp))
    assert abs(np.exp(lp).sum() - 1.0) < 1e-10


def test_samples_are_sets_with_their_log_prob_and_frequencies(any_case):
    keys = jax.random.split(jax.random.key(2024), N_SAMPLES)
    ks, lps = any_case.sample_batch(any_case.dist, keys)
    ks, lps = np.asarray(ks), np.asarray(lps)
    assert ks.shape == (N_SAMPLES, N) and np.issubdtype(ks.dtype, np.integer)
    assert np.all(np.diff(ks, axis=1) > 0) and ks.min() >= 0 and ks.max() < M
    lp_all = np.asarray(any_case.log_prob_batch(any_case.dist, jnp.asarray(SETS)))
    index = {tuple(s): i for i, s in enumerate(SETS.tolist())}
    np.testing.assert_allclose(lps, lp_all[[index[tuple(k)] for k in ks.tolist()]],
                               rtol=1e-12, atol=1e-12)
    assert chi_square_pvalue(ks, np.exp(lp_all)) > 1e-3


def test_log_prob_matches_naive_per_step_reference(any_case):
    """ln p(k) = sum_t [logit_t(k_t) - logsumexp over k_{t-1} < j <= M - N + t of logit_t(j)],
    the logits of each step taken from a full pass and the mask written out by hand."""
    lp = np.asarray(any_case.log_prob_batch(any_case.dist, jnp.asarray(SETS)))
    for k, got in zip(SETS, lp, strict=True):
        logits = np.asarray(any_case.logits(jnp.asarray(k)))
        want, prev = 0.0, -1
        for t in range(N):
            allowed = [j for j in range(M) if prev < j <= M - N + t]
            want += logits[t, k[t]] - logsumexp(logits[t, allowed])
            prev = k[t]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_network_is_autoregressive(net_case):
    """Row t of the logits depends only on k_<t: changing k_t.. leaves rows 0..t alone."""
    rng = np.random.default_rng(0)
    base = np.asarray(net_case.logits(jnp.asarray(SETS[0])))
    for t in range(N):
        k = SETS[0].copy()
        k[t:] = rng.integers(0, M, N - t)
        rows = np.asarray(net_case.logits(jnp.asarray(k)))
        np.testing.assert_allclose(rows[: t + 1], base[: t + 1], rtol=0, atol=1e-13)
    # and row t does depend on k_{t-1}
    k = SETS[0].copy()
    k[0] = 2
    assert np.abs(np.asarray(net_case.logits(jnp.asarray(k)))[1] - base[1]).max() > 1e-6


def test_invalid_sets_have_zero_probability(net_case):
    bad = jnp.array([[2, 1, 4], [0, 0, 3], [0, 1, 6], [-1, 2, 3]])
    lp = net_case.log_prob_batch(net_case.dist, bad)
    assert np.all(np.asarray(lp) == -np.inf)


def test_free_fermion_sets_are_boltzmann(fermion_case):
    dist = fermion_case.dist
    lp = np.asarray(fermion_case.log_prob_batch(dist, jnp.asarray(SETS)))
    energies = np.asarray(dist.levels)[SETS].sum(axis=1)
    log_z = float(free_fermion_log_z(dist.levels, N, dist.beta))
    np.testing.assert_allclose(lp, -1.7 * energies - log_z, rtol=1e-12, atol=1e-12)
    assert float(dist.log_z()) == pytest.approx(log_z, rel=1e-14)
    assert float(dist.energy(jnp.asarray(SETS[5]))) == pytest.approx(energies[5])


def test_free_fermion_sets_stable_at_large_beta(fermion_case):
    dist = FreeFermionSets(fermion_case.dist.levels, N, 300.0)  # same structure: no recompile
    lp = np.asarray(fermion_case.log_prob_batch(dist, jnp.asarray(SETS)))
    assert np.all(np.isfinite(lp))
    assert abs(np.exp(lp).sum() - 1.0) < 1e-12
    assert lp[0] == pytest.approx(0.0, abs=1e-12)  # {0, 1, 2}: the ground state


def test_pretraining_reaches_the_free_fermion_distribution():
    """KL(exact || model) < 0.01 nats after 300 steps (M = 6, N = 2, exact-KL loss)."""
    levels = jnp.array([0.0, 0.5, 1.0, 1.0, 1.5, 2.5])
    target = FreeFermionSets(levels, 2, 1.5)
    sets = jnp.asarray(all_sets(6, 2))
    lp = target.log_prob_batch(sets)

    @eqx.filter_jit
    def kl_enumerated(model):
        return jnp.sum(jnp.exp(lp) * (lp - model.log_prob_batch(sets)))

    untrained = AutoregressiveSet(SetMADE(2, 6, width=8, key=jax.random.key(3)))
    model, kl = pretrain_sets(untrained, levels, 1.5, key=jax.random.key(4), steps=300,
                              optimizer=optax.adam(0.05))
    assert float(kl_enumerated(untrained)) > 0.05
    assert float(kl) < 0.01
    # the returned KL is the enumerated KL of the returned model
    assert float(kl) == pytest.approx(float(kl_enumerated(model)), rel=1e-10)


def test_bad_arguments(without_jaxtyping):
    with pytest.raises(ValueError, match="n <= m"):
        SetMADE(4, 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="divisible"):
        SetTransformer(2, 5, d=6, heads=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="1 <= n <= m"):
        FreeFermionSets(jnp.arange(3.0), 4, 1.0)
    with pytest.raises(ValueError, match="finite beta >= 0"):
        FreeFermionSets(jnp.arange(3.0), 2, -1.0)
    with pytest.raises(TypeError, match="set network"):
        AutoregressiveSet(FreeFermionSets(jnp.arange(3.0), 2, 1.0))
    dist = FreeFermionSets(jnp.arange(5.0), 2, 1.0)
    with pytest.raises(ValueError, match="shape"):
        dist.log_prob(jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="pretrain_sets"):
        pretrain_sets(AutoregressiveSet(SetMADE(2, 6, key=jax.random.key(0))), jnp.arange(5.0),
                      1.0, key=jax.random.key(1), steps=1)
