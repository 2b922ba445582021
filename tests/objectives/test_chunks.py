"""Chunked and unchunked training steps give the same losses and gradients.

``chunk_size`` draws, evaluates and differentiates the batch a chunk at a time; the only
difference from the whole batch at once is the order of floating-point sums, so float64
results agree to ~1e-12. Checked for the score-function estimator (spins), the pathwise
estimator with sticking the landing (a lattice field flow), the quantum VMC gradient with
stochastic reconfiguration's score rows, and the memory cap that picks a chunk itself.
"""

import equinox as eqx
import jax
import numpy as np
import pytest

from thermax.catalog import build_run
from thermax.objectives._chunks import check_chunk_size, from_chunks, to_chunks
from thermax.train._engine import step_memory

RTOL = 1e-10


def _two_steps(trainer, model, key):
    state = trainer.init(model, key=key)
    stats = []
    for _ in range(2):
        state, s = trainer.step(state)
        stats.append(s)
    return state, stats


def _assert_same(a, b):
    (state_a, stats_a), (state_b, stats_b) = a, b
    for sa, sb in zip(stats_a, stats_b, strict=True):
        for name in ("free_energy", "free_energy_stderr", "energy", "entropy"):
            np.testing.assert_allclose(float(getattr(sb, name)), float(getattr(sa, name)),
                                       rtol=RTOL, atol=1e-12, err_msg=name)
    pa = jax.tree.leaves(eqx.filter(state_a.model, eqx.is_inexact_array))
    pb = jax.tree.leaves(eqx.filter(state_b.model, eqx.is_inexact_array))
    for x, y in zip(pa, pb, strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=RTOL, atol=1e-12)


def test_chunks_round_trip_and_spread_over_devices():
    x = np.arange(24).reshape(12, 2)
    c = to_chunks(x, 4)
    assert c.shape == (3, 4, 2)
    # chunk 0 holds samples 0, 3, 6, 9: every chunk touches every device's block
    np.testing.assert_array_equal(c[0][:, 0], [0, 6, 12, 18])
    np.testing.assert_array_equal(from_chunks(c), x)


@pytest.mark.parametrize("bad, message", [(5, "must divide the batch 16"),
                                          (2, "divisible by the number of devices 4"),
                                          (0, "positive integer"), (True, "positive integer")])
def test_bad_chunk_sizes(bad, message):
    with pytest.raises(ValueError, match=message):
        check_chunk_size(bad, 16, 4)


def test_score_function_chunked_equals_unchunked():
    """Ising 3x3 (MADE, Z2), batch 32 over 4 devices, chunks of 8."""
    run = build_run("ising", {"L": 3, "net": "made", "depth": 2, "width": 4,
                              "dtype": "float64", "batch": 32, "beta": 0.4})
    key = jax.random.key(5)
    whole = _two_steps(run.trainer, run.model, key)
    chunked = _two_steps(run.trainer.replace(chunk_size=8), run.model, key)
    _assert_same(whole, chunked)


def test_pathwise_chunked_equals_unchunked():
    """phi^4 on 4x4 with a small Real NVP and sticking the landing, batch 16, chunks of 4."""
    run = build_run("phi4", {"L": 4, "flow": "realnvp", "coupling_layers": 2,
                             "hidden_width": 2, "hidden_depth": 1, "spectral": 0,
                             "dtype": "float64", "batch": 16})
    key = jax.random.key(6)
    whole = _two_steps(run.trainer, run.model, key)
    chunked = _two_steps(run.trainer.replace(chunk_size=4), run.model, key)
    _assert_same(whole, chunked)


def test_quantum_chunked_equals_unchunked_with_sr():
    """Quantum dot, 1 + 1 electrons at T = 0.5 with a backflow: the VMC and REINFORCE
    gradients and SR's score rows in chunks of 4 walkers (batch 8 over 4 devices)."""
    options = {"n_up": 1, "n_down": 1, "temperature": 0.5, "flow": "backflow",
               "flow_layers": 1, "flow_width": 4, "occupation_net": "made",
               "occupation_width": 4, "pretrain_steps": 0, "optimizer": "sr", "batch": 8,
               "sweeps": 2, "burn_in": 4, "emax": 3.0}
    whole = build_run("quantum-dot", options)
    chunked = build_run("quantum-dot", {**options, "chunk_size": 4})
    assert chunked.trainer.chunk_size == 4
    key = jax.random.key(7)
    _assert_same(_two_steps(whole.trainer, whole.model, key),
                 _two_steps(chunked.trainer, chunked.model, key))


def test_memory_cap_chooses_chunks_and_gives_the_same_run():
    """A batch whose step exceeds the memory cap runs in chunks, with the same result."""
    options = {"L": 4, "net": "made", "depth": 2, "width": 16, "dtype": "float64",
               "batch": 256, "beta": 0.4}
    devices = jax.devices()[:1]
    plain = build_run("ising", options, devices=devices)
    state = plain.trainer.init(plain.model, key=jax.random.key(0))
    full = step_memory(plain.trainer, state)
    cap = 0.75 * full
    capped = build_run("ising", {**options, "memory_cap": cap / 2**30}, devices=devices)
    chunk = capped.trainer.chunk_size
    assert chunk is not None and chunk < 256 and capped.config["chunk_size"] == chunk
    assert step_memory(capped.trainer, state) <= cap
    key = jax.random.key(8)
    _assert_same(_two_steps(plain.trainer, plain.model, key),
                 _two_steps(capped.trainer, capped.model, key))
    from thermax.catalog import OptionError

    with pytest.raises(OptionError, match="no chunk size fits the memory cap"):
        build_run("ising", {**options, "batch": 8, "memory_cap": 1e-9}, devices=devices)


def test_evaluation_in_chunks_draws_the_same_samples():
    from thermax.train import make_mesh, sample_energies

    run = build_run("ising", {"L": 3, "net": "made", "depth": 1, "width": 2,
                              "dtype": "float64", "batch": 16, "beta": 0.4})
    args = dict(key=jax.random.key(9), n_samples=40, chunk=16, mesh=make_mesh())
    e_1, lp_1 = sample_energies(run.model, run.system, **args)
    e_c, lp_c = sample_energies(run.model, run.system, chunk_size=4, **args)
    assert e_1.shape == (40,)
    np.testing.assert_array_equal(np.asarray(e_c), np.asarray(e_1))
    np.testing.assert_allclose(np.asarray(lp_c), np.asarray(lp_1), rtol=1e-12)
