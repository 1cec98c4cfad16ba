"""The run CLI end to end, in subprocesses: smoke run, bad input, SIGKILL + resume."""

import csv
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests._cli import ROOT, run_module

NONDETERMINISTIC = ("Time/", "Meta/ModelStepsPerSec")


@pytest.fixture(scope="module")
def env():
    # No persistent XLA compilation cache here: with jaxlib 0.9.2 on the CPU, loading a
    # cached executable written by an earlier (killed) process deadlocked in
    # DeserializeExecutable. Instead each compiling run below serves several checks.
    return dict(os.environ, PYTHONUNBUFFERED="1")


def run_cli(args, env, **kw):
    return run_module("experiments.run", *args, env=env, **kw)


def read_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(NONDETERMINISTIC)} for r in rows]


SMOKE = ["--env=ant", "--preset=smoke", "--config.num_iterations=3"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env=cheetah"], "unknown env 'cheetah'; valid: halfcheetah"),
        (["--preset=huge"], "unknown preset"),
        (["--config.ensemble.hidden=-1,32"], "ensemble.hidden sizes must be positive"),
        (["--config.meta.meta_batch_size=7"], "must be a multiple of ensemble.num_models"),
        (["--config.meta.horizon=0"], "meta.horizon must be positive"),
        (["--config.meta.inner_lr=abc"], "expected float"),
        (["--config.nosuch.field=1"], "unknown config field"),
        (["--nosuchflag=1"], "nosuchflag"),
        (["--resume"], "--resume needs --logdir"),
    ],
)
def test_bad_input_one_line_exit_2(args, message, env):
    r = run_cli(args, env)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env):
    """One uninterrupted smoke run (3 iterations), shared by the tests below."""
    run_dir = str(tmp_path_factory.mktemp("runs") / "a")
    r = run_cli([*SMOKE, f"--logdir={run_dir}"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, r


def test_smoke_run_writes_run_dir(uninterrupted, env):
    run_dir, r = uninterrupted
    assert "device: CPU" in r.stdout and "it   3/3" in r.stdout and "ETA" in r.stdout
    assert "warp" not in (r.stdout + r.stderr).lower()
    assert r.stderr.strip() == "", r.stderr[-2000:]  # no warning spam
    for name in ("config.json", "metrics.csv", "tb", "checkpoints"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(run_dir, "tb")))
    rows = read_rows(run_dir)
    assert [int(float(r["iteration"])) for r in rows] == [1, 2, 3]
    keys = (
        "n_timesteps",
        "PrePolicy/AverageReturn",
        "PostPolicy/AverageReturn",
        "Model/ValidLoss",
        "Model/EnsembleStd",
        "Meta/KLPrePost",
        "Diag/ImaginedEnsembleStd",
        "Diag/StdKLCorrStates",
        "Meta/ImaginedPreReturn",
        "Time/Meta",
        "Meta/ModelStepsPerSec",
    )
    for row in rows:
        for key in keys:
            assert math.isfinite(float(row[key])), key

    # An existing run directory is refused without --resume and left untouched.
    before = open(os.path.join(run_dir, "metrics.csv")).read()
    r = run_cli([*SMOKE, f"--logdir={run_dir}"], env)
    assert r.returncode == 2 and "pass --resume" in r.stderr
    assert open(os.path.join(run_dir, "metrics.csv")).read() == before

    # Resuming with another env names the mismatch.
    r = run_cli(["--env=hopper", f"--logdir={run_dir}", "--resume"], env)
    assert r.returncode == 2 and "env: run has 'ant', command asks 'hopper'" in r.stderr


def _final_arrays(run_dir):
    import jax

    from mbmpo_jax import config as config_lib
    from mbmpo_jax import mbmpo
    from mbmpo_jax.checkpoint import Checkpointer

    with open(os.path.join(run_dir, "config.json")) as f:
        cfg = config_lib.from_json(f.read())
    ck = Checkpointer(run_dir, keep=cfg.checkpoint_keep)
    template = mbmpo.Trainer(cfg).empty_state(jax.random.PRNGKey(0))
    state = ck.restore(ck.latest_step(), template)
    return int(state.iteration), [np.asarray(x) for x in jax.tree.leaves(state)]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, env, uninterrupted):
    a, _ = uninterrupted
    b = str(tmp_path / "b")
    # Run b (2 iterations) is killed with SIGKILL in the middle of iteration 2 (after its
    # meta phase, before its real data is collected), through the CLI's fault hook.
    killed = [*SMOKE[:-1], "--config.num_iterations=2", f"--logdir={b}"]
    r = run_cli(killed, dict(env, MBMPO_FAULT_INJECT="sigkill:2:meta"))
    assert r.returncode == -signal.SIGKILL
    assert len(read_rows(b)) == 1

    # Resumed, and extended to 3 iterations (num_iterations may change on resume).
    r = run_cli([f"--logdir={b}", "--resume", "--config.num_iterations=3"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed at iteration 1" in r.stdout
    rows_a, rows_b = read_rows(a), read_rows(b)
    assert [row["iteration"] for row in rows_b] == ["1.0", "2.0", "3.0"]  # none lost or doubled
    assert stable(rows_a) == stable(rows_b)
    it_a, leaves_a = _final_arrays(a)
    it_b, leaves_b = _final_arrays(b)
    assert it_a == it_b == 3
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_sigint_stops_safely_and_says_how_to_resume(tmp_path, env):
    run_dir = str(tmp_path / "c")
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *SMOKE, f"--logdir={run_dir}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ck0 = os.path.join(run_dir, "checkpoints", "0")
    deadline = time.time() + 300
    while not os.path.isdir(ck0) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # during iteration 1 (it compiles for many seconds)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert f"--logdir={run_dir} --resume" in err and "Traceback" not in err
    assert [row["iteration"] for row in read_rows(run_dir)] == ["1.0"]
    assert os.path.isdir(os.path.join(run_dir, "checkpoints", "1"))  # written before stopping
