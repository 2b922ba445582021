"""Trainer, annealing, checkpoints: validation, round trips, donation safety."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from thermax.distributions import AutoregressiveSpins
from thermax.nn import MADE
from thermax.objectives import ScoreFunctionFreeEnergy
from thermax.systems import Ising2D
from thermax.train import (
    Trainer,
    annealed_beta,
    load_checkpoint,
    make_mesh,
    read_checkpoint_meta,
    save_checkpoint,
)

ONE = make_mesh(jax.devices()[:1])


def _trainer(**kwargs):
    kwargs = {"beta": 0.4, "batch": 8, "mesh": ONE, **kwargs}
    return Trainer(ScoreFunctionFreeEnergy(), optax.adam(1e-2), Ising2D(2), **kwargs)


@pytest.fixture(scope="module")
def model():
    return AutoregressiveSpins(MADE((2, 2), depth=2, width=2, key=jax.random.key(0)))


def test_annealed_beta():
    beta, rate = jnp.asarray(0.5), jnp.asarray(0.9)
    steps = jnp.arange(4, dtype=jnp.int32)
    got = jax.vmap(lambda t: annealed_beta(beta, rate, t))(steps)
    np.testing.assert_allclose(got, 0.5 * (1 - 0.9 ** (np.arange(4) + 1)), rtol=1e-14)
    assert annealed_beta(beta, jnp.asarray(0.0), jnp.asarray(0, jnp.int32)) == 0.5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch": 0}, "batch must be a positive integer"),
    ({"batch": 6, "mesh": make_mesh()}, "divisible by the number of devices 4"),
    ({"beta": 0.0}, "beta must be > 0"),
    ({"beta": -1.0}, "beta must be > 0"),
    ({"beta_anneal": 1.0}, r"beta_anneal must be in \[0, 1\)"),
])
def test_trainer_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _trainer(**kwargs)


def test_make_mesh_default_uses_every_device():
    assert make_mesh().size == 4 and make_mesh().axis_names == ("batch",)


@pytest.fixture(scope="module")
def stepped(model):
    """Init and two steps on one device; returns (trainer, state, per-step stats).

    Nothing else may hold the model's buffers here (a numpy view of them would make XLA
    copy instead of donating, hiding the donation bug tested below).
    """
    trainer = _trainer(beta_anneal=0.5)
    state = trainer.init(model, key=jax.random.key(1))
    state, stats_0 = trainer.step(state)
    state, stats_1 = trainer.step(state)
    return trainer, state, (stats_0, stats_1)


def test_trainer_steps(stepped):
    _, state, (stats_0, stats_1) = stepped
    assert int(state.step) == 2
    np.testing.assert_allclose(stats_0.beta, 0.4 * 0.5, rtol=1e-14)
    np.testing.assert_allclose(stats_1.beta, 0.4 * 0.75, rtol=1e-14)
    assert np.isfinite(float(stats_1.free_energy))


def test_model_given_to_init_survives_steps(model, stepped):
    """The step donates its state; that must not delete the arrays of the caller's model.

    On a one-device mesh ``Trainer.init`` places the model with ``jax.device_put``, which
    returns arrays sharing the caller's buffers; ``Trainer.step`` (donate="all-except-first")
    then deletes them.
    """
    deleted = [x.shape for x in jax.tree.leaves(model) if x.is_deleted()]
    assert not deleted, f"arrays of the model given to Trainer.init were deleted: {deleted}"
    assert np.isfinite(float(model.log_prob(jnp.ones((2, 2)))))


def test_checkpoint_round_trip(tmp_path, stepped):
    trainer, state, _ = stepped
    path = save_checkpoint(tmp_path, state, {"note": "x"})
    assert path.name == "state-000000002.eqx"
    meta = read_checkpoint_meta(tmp_path)
    assert meta == {"file": path.name, "step": 2, "note": "x"}
    like = trainer.init(AutoregressiveSpins(MADE((2, 2), depth=2, width=2,
                                                 key=jax.random.key(5))),
                        key=jax.random.key(9))
    loaded, _ = load_checkpoint(tmp_path, like)
    a_leaves, b_leaves = jax.tree.leaves(state), jax.tree.leaves(loaded)
    assert len(a_leaves) == len(b_leaves)
    for a, b in zip(a_leaves, b_leaves, strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert read_checkpoint_meta(tmp_path / "nothing") is None
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing", like)


def test_checkpoint_keeps_the_newest(tmp_path, stepped):
    _, state, _ = stepped
    for step in (3, 5, 8):
        save_checkpoint(tmp_path, state.__class__(state.model, state.opt_state,
                                                  state.objective_state,
                                                  jnp.asarray(step, jnp.int32), state.key,
                                                  state.guard),
                        {}, keep=2)
    names = sorted(p.name for p in tmp_path.glob("state-*.eqx"))
    assert names == ["state-000000005.eqx", "state-000000008.eqx"]
    assert read_checkpoint_meta(tmp_path)["step"] == 8
    assert not list(tmp_path.glob("*.tmp"))

