"""Stochastic reconfiguration: solvers against the dense solve, score matrices against
brute-force covariances, the optimiser's blocks / trust region / schedules, natural-gradient
invariance under reparametrisation, and SR on an exactly enumerable free energy."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from thermax.quantum import CGSR, SR, DenseSR, MinSR, SRState, score_matrix

SOLVERS = {"minsr": MinSR(), "cg": CGSR(maxiter=500, tol=1e-14),
           "cg-jacobi": CGSR(maxiter=500, tol=1e-14, jacobi=True)}


def _random_problem(batch, n_params, seed):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    o = jax.random.normal(k1, (batch, n_params)) / np.sqrt(batch)
    o = o * jnp.exp(jax.random.normal(k3, (1, n_params)))        # uneven parameter scales
    return o, jax.random.normal(k2, (n_params,))


# --------------------------------------------------------------------------- solvers

@pytest.mark.parametrize("shape", [(16, 40), (40, 16)])
@pytest.mark.parametrize("name", list(SOLVERS))
def test_solvers_equal_dense(name, shape):
    o, g = _random_problem(*shape, seed=shape[0])
    lam = jnp.asarray(0.1)
    dense = DenseSR().solve(o, g, lam)
    exact = np.linalg.solve(np.asarray(o.T @ o) + 0.1 * np.eye(shape[1]), np.asarray(g))
    np.testing.assert_allclose(dense, exact, rtol=0, atol=1e-10 * np.abs(exact).max())
    delta = SOLVERS[name].solve(o, g, lam)
    np.testing.assert_allclose(delta, dense, rtol=0, atol=1e-8)
    np.testing.assert_allclose(o.T @ (o @ delta) + 0.1 * delta, g, rtol=0, atol=1e-8)


def test_minsr_is_woodbury_of_the_vmc_form():
    """For g = O^T e (the VMC gradient) the Woodbury solve equals minSR's sample-space
    form O^T (O O^T + lambda)^{-1} e, even at small damping."""
    o, _ = _random_problem(16, 40, seed=3)
    e = jax.random.normal(jax.random.key(4), (16,))
    lam = 1e-6
    minsr = o.T @ np.linalg.solve(np.asarray(o @ o.T) + lam * np.eye(16), np.asarray(e))
    np.testing.assert_allclose(MinSR().solve(o, o.T @ e, jnp.asarray(lam)), minsr,
                               rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- score matrix

def _gauss_log(params, x):
    """ln N(x; mu, sigma^2 I) in 2-d, params a dict pytree."""
    s = jnp.exp(params["log_sigma"])
    return -0.5 * jnp.sum((x - params["mu"]) ** 2) / s**2 - 2 * params["log_sigma"]


def _gauss_scores(params, xs):                       # analytic, in ravel order (log_sigma, mu)
    s2 = np.exp(2 * float(params["log_sigma"]))
    r = np.asarray(xs) - np.asarray(params["mu"])
    return np.concatenate([(np.sum(r**2, 1) / s2 - 2)[:, None], r / s2], axis=1)


PARAMS = {"mu": jnp.array([0.3, -0.2]), "log_sigma": jnp.array(0.1)}


def test_score_matrix_is_the_covariance():
    xs = jax.random.normal(jax.random.key(0), (12, 2))
    d = _gauss_scores(PARAMS, xs)
    o = score_matrix(_gauss_log, PARAMS, xs)
    assert o.shape == (12, 3)
    np.testing.assert_allclose(o, (d - d.mean(0)) / np.sqrt(12), atol=1e-12)
    np.testing.assert_allclose(o.T @ o, np.cov(d.T, bias=True), atol=1e-12)
    f = np.sin(np.asarray(xs[:, 0]))                   # the gradient from O: E[(f - mean f) d]
    np.testing.assert_allclose(o.T @ (f - f.mean()) / np.sqrt(12),
                               np.mean((f - f.mean())[:, None] * d, 0), atol=1e-12)


def test_score_matrix_groups_and_weights():
    """group_size = W: O^T O = sum_g W_g Cov_{w|g}, by brute force per group."""
    xs = jax.random.normal(jax.random.key(1), (12, 2))
    w = jax.random.uniform(jax.random.key(2), (12,), minval=0.1)
    d = _gauss_scores(PARAMS, xs)
    wn = np.asarray(w) / np.asarray(w).sum()
    expected = np.zeros((3, 3))
    for gr in range(3):
        sl = slice(4 * gr, 4 * gr + 4)
        wg = wn[sl]
        expected += wg.sum() * np.cov(d[sl].T, aweights=wg, bias=True)
    o = score_matrix(_gauss_log, PARAMS, xs, weights=w, group_size=4)
    np.testing.assert_allclose(o.T @ o, expected, atol=1e-12)
    np.testing.assert_allclose(score_matrix(_gauss_log, PARAMS, xs, group_size=12),
                               score_matrix(_gauss_log, PARAMS, xs), atol=1e-14)


def test_score_matrix_complex_log_psi():
    """Complex ln Psi: O^T O = Re Cov[d ln Psi^*, d ln Psi], with analytic derivatives
    (and the samples as a pytree (K, x))."""
    def log_psi(p, sample):
        k, x = sample
        return p["a"] @ x + k + 1j * jnp.sin(p["b"] @ x)

    params = {"a": jnp.array([0.5, -1.0]), "b": jnp.array([0.7, 0.2])}
    xs = jax.random.normal(jax.random.key(3), (10, 2))
    ks = jnp.arange(10.0)
    x = np.asarray(xs)
    d = np.concatenate([x, 1j * np.cos(x @ np.asarray(params["b"]))[:, None] * x], axis=1)
    dc = d - d.mean(0)
    expected = np.real(dc.conj().T @ dc) / 10
    o = score_matrix(log_psi, params, (ks, xs))
    assert o.shape == (20, 4) and o.dtype == jnp.float64
    np.testing.assert_allclose(o.T @ o, expected, atol=1e-12)


# --------------------------------------------------------------------------- optimiser

def test_pytree_round_trip_and_blocks_are_separate():
    """Updates keep each block's pytree structure, equal the dense solve of the flattened
    gradient block by block (no mixing), and the state counts steps."""
    k = jax.random.split(jax.random.key(5), 4)
    params_p = {"w": jax.random.normal(k[0], (2, 3)), "b": jnp.zeros(4), "s": jnp.array(1.0)}
    params_psi = (jax.random.normal(k[1], (5,)), None)
    flat_p, unravel_p = ravel_pytree(params_p)
    np.testing.assert_array_equal(ravel_pytree(unravel_p(flat_p))[0], flat_p)
    assert jax.tree.structure(unravel_p(flat_p)) == jax.tree.structure(params_p)
    o_p, g_p = _random_problem(8, 11, seed=6)
    o_psi, g_psi = _random_problem(8, 5, seed=7)
    grads = {"p": unravel_p(g_p), "psi": (g_psi, None)}
    sr = SR({"p": DenseSR(), "psi": MinSR()}, damping={"p": 0.1, "psi": 0.01},
            learning_rate=0.5)
    updates, state = sr.update(grads, {"p": o_p, "psi": o_psi}, sr.init())
    assert jax.tree.structure(updates["p"]) == jax.tree.structure(params_p)
    assert jax.tree.structure(updates["psi"]) == jax.tree.structure(params_psi)
    np.testing.assert_allclose(ravel_pytree(updates["p"])[0],
                               -0.5 * DenseSR().solve(o_p, g_p, jnp.asarray(0.1)), atol=1e-12)
    np.testing.assert_allclose(updates["psi"][0],
                               -0.5 * DenseSR().solve(o_psi, g_psi, jnp.asarray(0.01)),
                               atol=1e-10)
    assert int(state.count) == 1
    step = 0.5 * DenseSR().solve(o_p, g_p, jnp.asarray(0.1))
    norm = np.sqrt(np.sum((o_p @ step) ** 2) + 0.1 * np.sum(step**2))
    np.testing.assert_allclose(state.metric_norm["p"], norm, rtol=1e-12)


def test_trust_region_and_schedules():
    """max_norm clips the step to metric length max_norm (and leaves short steps alone);
    schedules are read at the state's count; as_optax gives the same updates."""
    o, g = _random_problem(10, 6, seed=8)
    grads, scores = {"p": g}, {"p": o}

    def metric(step, lam):
        return np.sqrt(np.sum((o @ step) ** 2) + lam * np.sum(step**2))

    free = SR(DenseSR(), damping=0.1, learning_rate=1.0, blocks=("p",))
    u_free, s_free = free.update(grads, scores, free.init())
    big = float(s_free.metric_norm["p"])
    clipped = SR(DenseSR(), damping=0.1, learning_rate=1.0, max_norm=0.25 * big,
                 blocks=("p",))
    u_clip, _ = clipped.update(grads, scores, clipped.init())
    np.testing.assert_allclose(metric(u_clip["p"], 0.1), 0.25 * big, rtol=1e-12)
    np.testing.assert_allclose(u_clip["p"], 0.25 * u_free["p"], atol=1e-12)
    loose = SR(DenseSR(), damping=0.1, learning_rate=1.0, max_norm=2 * big, blocks=("p",))
    np.testing.assert_allclose(loose.update(grads, scores, loose.init())[0]["p"], u_free["p"],
                               atol=1e-14)

    sched = SR(DenseSR(), damping=lambda n: 0.1 * 10.0 ** (-n), blocks=("p",),
               learning_rate=optax.exponential_decay(1.0, 1, 0.5))
    state = SRState(jnp.asarray(2, jnp.int32), {"p": jnp.asarray(0.0)})
    u2, state = sched.update(grads, scores, state)
    np.testing.assert_allclose(u2["p"], -0.25 * DenseSR().solve(o, g, jnp.asarray(1e-3)),
                               atol=1e-12)
    assert int(state.count) == 3

    tx = optax.chain(free.as_optax(), optax.scale(2.0))
    u_tx, _ = tx.update(grads, tx.init(grads), grads, scores=scores)
    np.testing.assert_allclose(u_tx["p"], 2 * u_free["p"], atol=1e-12)


# --------------------------------------------------------------------------- natural gradient

ENERGIES = jnp.array([0.0, 0.7, -0.4, 1.5, 0.2, 2.5])
T = 0.5


def _free_energy(logits):
    """F = sum_k p_k (T ln p_k + E_k), exact by enumeration."""
    lp = jax.nn.log_softmax(logits)
    return jnp.sum(jnp.exp(lp) * (T * lp + ENERGIES[: logits.shape[0]]))


def _sr_direction(to_logits, theta, solver, lam):
    """delta = (S + lambda)^{-1} grad F with S the exact Fisher matrix by enumeration."""
    n = to_logits(theta).shape[0]
    log_p = lambda th, k: jax.nn.log_softmax(to_logits(th))[k]
    probs = jax.nn.softmax(to_logits(theta))
    o = score_matrix(log_p, theta, jnp.arange(n), weights=probs)
    g = jax.grad(lambda th: _free_energy(to_logits(th)))(theta)
    return solver.solve(o, g, jnp.asarray(lam)), g


@pytest.mark.parametrize("solver", [DenseSR(), MinSR()], ids=["dense", "minsr"])
def test_natural_gradient_is_reparametrisation_invariant(solver):
    """Categorical over 5 states, logits = theta versus logits = A phi (A invertible): the
    SR step moves the distribution identically (d p / d lr at lr = 0); plain gradient does
    not."""
    a = jax.random.normal(jax.random.key(9), (5, 5)) + 2 * jnp.eye(5)
    theta = jnp.array([0.3, -0.5, 0.1, 0.8, -0.2])
    phi = jnp.linalg.solve(a, theta)
    param1, param2 = (lambda th: th), (lambda ph: a @ ph)
    d1, g1 = _sr_direction(param1, theta, solver, 1e-9)
    d2, g2 = _sr_direction(param2, phi, solver, 1e-9)

    def dp(to_logits, x, v):
        return jax.jvp(lambda y: jax.nn.softmax(to_logits(y)), (x,), (v,))[1]

    np.testing.assert_allclose(dp(param1, theta, d1), dp(param2, phi, d2), rtol=0, atol=1e-6)
    assert np.max(np.abs(dp(param1, theta, g1) - dp(param2, phi, g2))) > 1e-2


def test_sr_reaches_boltzmann_faster_than_gradient_descent():
    """Minimise F over logits = A theta (A badly conditioned): 30 SR steps reach the
    Boltzmann distribution (KL < 1e-6); 30 plain gradient steps at the same rate, or ten
    times it, do not."""
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(10), (6, 6)))
    a = q * jnp.array([[1.0, 0.5, 0.2, 0.1, 0.05, 0.02]])
    to_logits = lambda th: a @ th
    target = jax.nn.log_softmax(-ENERGIES / T)
    sr = SR(MinSR(), damping=1e-10, learning_rate=1.0, blocks=("p",))

    def kl(th):
        lp = jax.nn.log_softmax(to_logits(th))
        return jnp.sum(jnp.exp(lp) * (lp - target))

    @eqx.filter_jit
    def run(theta0):
        def sr_step(carry, _):
            th, state = carry
            g = jax.grad(lambda t: _free_energy(to_logits(t)))(th)
            log_p = lambda t, k: jax.nn.log_softmax(to_logits(t))[k]
            o = score_matrix(log_p, th, jnp.arange(6), weights=jax.nn.softmax(to_logits(th)))
            upd, state = sr.update({"p": g}, {"p": o}, state)
            return (th + upd["p"], state), None

        def gd_steps(lr):
            step = lambda th, _: (th - lr * jax.grad(lambda t: _free_energy(to_logits(t)))(th),
                                  None)
            return kl(jax.lax.scan(step, theta0, None, length=30)[0])

        (th_sr, _), _ = jax.lax.scan(sr_step, (theta0, sr.init()), None, length=30)
        return kl(theta0), kl(th_sr), gd_steps(1.0), gd_steps(10.0)

    kl0, kl_sr, kl_gd, kl_gd_fast = run(jnp.zeros(6))
    assert kl0 > 0.5
    assert kl_sr < 1e-6                     # measured ~1e-16: contraction 1 - lr T = 1/2
    assert min(kl_gd, kl_gd_fast) > 1e-2    # measured 0.95 and 0.25


# --------------------------------------------------------------------------- bad input

def test_bad_arguments_raise(without_jaxtyping):
    o, g = _random_problem(6, 4, seed=11)
    with pytest.raises(ValueError, match="O of shape"):
        MinSR().solve(o, g[:3], jnp.asarray(0.1))
    with pytest.raises(ValueError, match="0-d damping"):
        DenseSR().solve(o, g, jnp.ones(2))
    with pytest.raises(ValueError, match="maxiter"):
        CGSR(maxiter=0)
    with pytest.raises(ValueError, match="damping must be > 0"):
        SR(MinSR(), damping=0.0, learning_rate=0.1)
    with pytest.raises(ValueError, match="exactly the blocks"):
        SR(MinSR(), damping={"p": 0.1}, learning_rate=0.1)
    with pytest.raises(TypeError, match="AbstractSRSolver"):
        SR("minsr", damping=0.1, learning_rate=0.1)
    sr = SR(MinSR(), damping=0.1, learning_rate=0.1, blocks=("p",))
    with pytest.raises(ValueError, match="exactly the blocks"):
        sr.update({"psi": g}, {"psi": o}, sr.init())
    with pytest.raises(ValueError, match="same parameter pytree"):
        sr.update({"p": g[:3]}, {"p": o}, sr.init())
    xs = jnp.zeros((6, 2))
    with pytest.raises(ValueError, match="group_size"):
        score_matrix(_gauss_log, PARAMS, xs, group_size=4)
    with pytest.raises(ValueError, match="scalar"):
        score_matrix(lambda p, x: x * p["log_sigma"], PARAMS, xs)
