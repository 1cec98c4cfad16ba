"""Fixtures shared by test files, and the suite's XLA setting."""

import os

# The suite is compile-bound (most of its time is XLA compiling small programs, in this
# process and in the CLI subprocesses, which inherit the environment), so it runs XLA's
# CPU backend with LLVM at -O0: compile times fall about 2x (a 3-iteration smoke run of
# the CLI: 67 s -> 29 s); the programs are the same HLO.
# Set before any backend starts; the tests that set XLA_FLAGS for a subprocess (forced
# host devices) append to it. Export MBMPO_TEST_FULL_OPT=1 to test with the optimisation
# level users run.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if os.environ.get("MBMPO_TEST_FULL_OPT") != "1":
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in _flags:
        os.environ["XLA_FLAGS"] = f"{_flags} {_FAST_COMPILE}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """float64 for one test (jax's x64 flag is process-global: restored afterwards)."""
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)
