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
