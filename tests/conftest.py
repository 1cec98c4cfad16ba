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


# The suite runs on 2 xdist workers, one test file at a time each (`--dist=loadfile`, so a
# file's module fixtures compile once). xdist would hand out files by test count, which
# leaves the few-test, compile-heavy files (one 40-70 s test each) for last and one worker
# idle at the end; `--no-loadscope-reorder` keeps this order instead: the costliest files
# first (seconds of a core per file, `taskset -c 1 python -m pytest -n 1 --durations=0`,
# 2026-12-02: 120-125 s for the first two down to 22 s for test_imagine.py), the cheap ones
# after them in file order, so the two workers finish close together.
_COSTLIEST_FIRST = (
    "test_mjx_env.py", "test_transforms.py", "test_maml.py", "test_dynamics.py",
    "test_run_cli.py", "test_benchmark.py", "test_examples.py", "test_executors.py",
    "test_collect.py", "test_seeds.py", "test_rundir.py", "test_precision.py",
    "test_sharding.py", "test_plot_render.py", "test_tasks.py", "test_policy_plasticity.py",
    "test_mbmpo.py", "test_imagine.py",
)  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_COSTLIEST_FIRST)}
    # sort is stable: tests keep their order within a file, and unlisted files theirs.
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
