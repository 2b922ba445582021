"""Test configuration: float64, strict rank promotion, four forced host CPU devices.

XLA flags must be set before JAX is imported anywhere, so this runs first. Besides the
device count, the CPU backend's LLVM optimisation level is lowered: the suite is dominated
by compiling many tiny programs, which this makes 3-5x faster (numerics are unchanged in
kind; every comparison below is against the same build or has a stated tolerance).
"""

import os

_FLAGS = {
    "xla_force_host_platform_device_count": "4",
    "xla_backend_optimization_level": "0",
}
_existing = os.environ.get("XLA_FLAGS", "")
_extra = [f"--{k}={v}" for k, v in _FLAGS.items() if k not in _existing]
os.environ["XLA_FLAGS"] = " ".join([_existing, *_extra]).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import equinox as eqx  # noqa: E402
import pytest  # noqa: E402

from thermax.nn import MADE, PixelCNN  # noqa: E402

#: Every autoregressive network on a 3x3 lattice, by name (small: width 3, depth 3).
NETWORKS = {
    "made": lambda key: MADE((3, 3), depth=3, width=3, key=key),
    "made-residual": lambda key: MADE((3, 3), depth=3, width=3, residual=True, key=key),
    "pixelcnn-k1": lambda key: PixelCNN(3, depth=3, width=3, half_kernel=1, key=key),
    "pixelcnn-k2": lambda key: PixelCNN(3, depth=3, width=3, half_kernel=2, key=key),
    "pixelcnn-residual-k1": lambda key: PixelCNN(3, depth=3, width=3, half_kernel=1,
                                                 residual=True, key=key),
    "pixelcnn-residual-k2": lambda key: PixelCNN(3, depth=3, width=3, half_kernel=2,
                                                 residual=True, key=key),
    "pixelcnn-dilated": lambda key: PixelCNN(3, depth=3, width=3, half_kernel=1, dilation=2,
                                             key=key),
}


def perturb(tree, *, key, scale: float = 0.5):
    """Add N(0, scale^2) noise to every inexact array (biases start at zero, slopes at 0.5)."""
    params, static = eqx.partition(tree, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape, x.dtype)
              for x, k in zip(leaves, keys, strict=True)]
    return eqx.combine(jax.tree.unflatten(treedef, leaves), static)


def build_perturbed(constructor, seed: int):
    """``perturb(constructor(key))``, built in one compiled call (eager init is slow)."""
    k_init, k_noise = jax.random.split(jax.random.key(seed))
    return eqx.filter_jit(lambda k1, k2: perturb(constructor(k1), key=k2))(k_init, k_noise)


def pytest_generate_tests(metafunc):
    if "net_name" in metafunc.fixturenames:
        metafunc.parametrize("net_name", list(NETWORKS), scope="session")


@pytest.fixture(scope="session")
def make_net():
    """``make_net(name)``: that network of :data:`NETWORKS`, randomly perturbed (cached)."""
    cache = {}

    def make(name: str):
        if name not in cache:
            cache[name] = build_perturbed(NETWORKS[name], 100 + list(NETWORKS).index(name))
        return cache[name]

    return make


@pytest.fixture
def without_jaxtyping():
    """jaxtyping's runtime checks off for one test, so that it sees the library's own
    argument checks (what a user who does not run jaxtyping gets)."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. Fixtures share compilations
    within a module; across modules the caches only grow, and late in the full suite an
    XLA compilation segfaulted (twice, in the same module, passing on its own)."""
    yield
    jax.clear_caches()
