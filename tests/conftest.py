"""Fixtures shared by test files."""

import jax
import pytest


@pytest.fixture
def x64():
    """float64 for one test (jax's x64 flag is process-global: restored afterwards)."""
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)
