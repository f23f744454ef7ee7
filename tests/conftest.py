"""Strict test configuration (as equinox, diffrax and optimistix run their suites)."""

import os

import jax

# Before any device is touched: four CPU devices so that sharded sweeps are really sharded.
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_numpy_rank_promotion", "raise")  # catches (n, 1) * (n,) bugs
jax.config.update("jax_numpy_dtype_promotion", "strict")

import jax.random as jr  # noqa: E402
import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")

SEED = int(os.environ.get("DPFLOWS_TEST_SEED", "0"))  # fixed in CI; override to hunt locally


@pytest.fixture
def seed() -> int:
    return SEED


@pytest.fixture
def key():
    return jr.key(SEED)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop JAX's compiled executables after each test module.

    Every XLA:CPU executable holds ~18 memory mappings; a whole suite in one process keeps thousands of
    them alive, and past the kernel's ``vm.max_map_count`` (65530 by default) the next compilation
    segfaults inside LLVM. Clearing the caches between modules keeps the count bounded.
    """
    yield
    import gc

    jax.clear_caches()
    gc.collect()
