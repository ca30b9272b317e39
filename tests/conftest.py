"""Test-wide JAX settings: strict dtype and rank promotion catch silent promotions."""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Runs a test with 64-bit types enabled (float64 oracles, order-2 gradient checks)."""
    with jax.enable_x64(True):
        yield
