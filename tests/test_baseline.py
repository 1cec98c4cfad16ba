"""The model-free baseline CLI (`python -m experiments.baseline`) in subprocesses.

One tiny PPO run on MJX inverted_pendulum (brax compiles its training step and evaluator
on CPU: ~1 min on 2 cores) on the installed jax: on jax >= 0.10 it goes through
`mbmpo_jax._compat.device_put_replicated`. Then a failure inside training (one line, exit
1, nothing left behind), and bad inputs, which must fail before JAX does any work.
"""

import csv
import json
import math
import os
import subprocess
import sys

import pytest

from experiments import baseline
from tests._cli import ROOT, forced_devices_env, one_line_error, run_module

TINY = [
    "--env=inverted_pendulum",
    "--num_timesteps=160",  # one training step: 8 envs x 5 steps x 4 minibatches
    "--num_envs=8",
    "--batch_size=8",
    "--num_minibatches=4",
    "--unroll_length=5",
    "--num_updates_per_batch=1",
    "--num_evals=2",  # one evaluation before training, one after
    "--num_eval_envs=4",
]


def _run(*args, timeout=300):
    return run_module("experiments.baseline", *args, timeout=timeout)


def _assert_one_line_error(proc, *fragments):
    line = one_line_error(proc, 2)
    for frag in fragments:
        assert frag in line, line


@pytest.mark.slow
def test_tiny_ppo_run_writes_metrics(tmp_path):
    run_dir = str(tmp_path / "ppo")
    # 100 steps asked: less than one update (160), which brax runs whole; the CLI says so.
    proc = _run(*TINY, "--num_timesteps=100", "--seed=3", f"--logdir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "note: brax runs 160 steps, not 100" in proc.stdout
    assert "warp" not in console.lower() and "JAXopt" not in console

    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["algo"] == "ppo" and config["env"] == "inverted_pendulum"
    assert config["seed"] == 3 and config["horizon"] == 200 and config["num_envs"] == 8
    assert config["devices"] == 1  # JAX's one CPU device unless --cpu_devices says otherwise

    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    steps = [float(r["n_timesteps"]) for r in rows]
    returns = [float(r["PrePolicy/AverageReturn"]) for r in rows]
    assert steps == [0.0, 160.0]  # brax's own count, as baseline.ppo_schedule predicts
    assert baseline.ppo_schedule(baseline.ppo_config("inverted_pendulum", config))[0] == 160
    # Reward is 1 per step until the pole falls, so a return is an episode length.
    for r, ret in zip(rows, returns, strict=True):
        assert math.isfinite(ret) and 1.0 <= ret <= 200.0
        assert ret == pytest.approx(float(r["PrePolicy/AverageEpisodeLength"]))
    # One progress line per evaluation.
    progress = [ln for ln in proc.stdout.splitlines() if "| return" in ln]
    assert len(progress) == 2 and "steps" in progress[0] and "elapsed" in progress[0]

    # The run directory is not empty now: a second run must refuse to overwrite it.
    again = _run(*TINY, f"--logdir={run_dir}")
    _assert_one_line_error(again, "not empty")


@pytest.mark.slow
def test_cpu_devices_run_ppo_data_parallel(tmp_path):
    # --cpu_devices=2 splits the host into two XLA devices: brax pmaps its updates over
    # them (4 envs each), the run directory records them, and the schedule is unchanged.
    run_dir = tmp_path / "ppo2"
    proc = _run(*TINY, "--cpu_devices=2", f"--logdir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "device: CPU cpu x2 |" in proc.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["devices"] == 2 and config["num_envs"] == 8
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["n_timesteps"]) for r in rows] == [0.0, 160.0]
    for r in rows:
        ret = float(r["PrePolicy/AverageReturn"])
        assert 1.0 <= ret <= 200.0 and ret == pytest.approx(
            float(r["PrePolicy/AverageEpisodeLength"])
        )


def test_ppo_schedule_derived_by_hand():
    # halfcheetah: updates of 512 x 20 x 32 = 327,680 steps.
    cfg = baseline.ppo_config("halfcheetah", {"num_timesteps": 6_000_000, "num_evals": 25})
    # 24 epochs, each ceil(6e6 / (24 x 327,680)) = 1 update: 7,864,320 steps.
    assert baseline.ppo_schedule(cfg) == (7_864_320, 24, 327_680)
    # The fewest: ceil(6e6 / 327,680) = 19 updates = 6,225,920, one per epoch: 20 evals.
    assert baseline.closest_schedule(cfg) == (6_225_920, 20)
    # brax's default 50M over 19 epochs: ceil(50e6 / (19 x 327,680)) = 9 updates each,
    # 56,033,280; the fewest is 153 = 9 x 17 updates: 17 epochs of 9, --num_evals=18.
    cfg = baseline.ppo_config("halfcheetah", {})
    assert baseline.ppo_schedule(cfg) == (56_033_280, 19, 327_680)
    assert baseline.closest_schedule(cfg) == (153 * 327_680, 18)


@pytest.mark.parametrize("existed", [False, True])
def test_failure_in_training_is_one_line_and_leaves_nothing(tmp_path, existed):
    # 3 forced host devices: brax needs --num_envs to be a multiple of the device count,
    # which train() checks after the run directory, config.json and the metrics writer
    # (tb/) exist, before anything compiles.
    run_dir = tmp_path / "ppo"
    if existed:
        run_dir.mkdir()
    env = forced_devices_env(3)
    proc = run_module("experiments.baseline", *TINY, f"--logdir={run_dir}", env=env, timeout=120)
    line = one_line_error(proc, 1)
    assert "ValueError" in line and "multiple of the 3 local devices" in line, line
    # The same --logdir is usable again: an empty directory stays (the user made it), one
    # this run made is gone.
    assert (list(run_dir.iterdir()) == []) if existed else not run_dir.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--env=pong"], "valid envs: halfcheetah"),
        (["--algo=sac"], "unknown algo"),
        (["--num_envs=0"], "--num_envs must be positive"),
        (["--discounting=1.5"], "--discounting"),
        (["--num_envs=8", "--batch_size=3", "--num_minibatches=1"], "multiple of --num_envs"),
        (["--num_envs=abc"], "num_envs"),
        (["--cpu_devices=0"], "--cpu_devices must be positive"),
        (["--cpu_devices=3"], "--num_envs (2048) must be a multiple of --cpu_devices (3)"),
        (["--no_such_flag=1"], "no_such_flag"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    run_dir = tmp_path / "run"
    proc = _run("--env=inverted_pendulum", *args, f"--logdir={run_dir}", timeout=60)
    _assert_one_line_error(proc, fragment)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "nv, limit",
    [
        # jaxlib's chunk: max(ceil(batch / threads), ceil(200,000 / cost)), cost = nv**3 // 3;
        # the batch is split when the chunk is smaller than it (2 or more threads).
        (9, 824),  # HalfCheetah, Walker2d: cost 243, 200,000 / 243 = 823.05
        (14, 219),  # Ant: cost 914, 200,000 / 914 = 218.8
        (6, 2778),  # Hopper: cost 72, 200,000 / 72 = 2777.8
        (2, 100_000),  # inverted pendulum: cost 8 // 3 = 2
    ],
)
def test_max_envs_per_device_is_jaxlibs_smallest_chunk(nv, limit):
    assert baseline.max_envs_per_device(nv) == limit
    cost = nv**3 // 3
    for threads in (2, 3, 16):
        for batch, split in ((limit, False), (limit + 1, True)):
            chunk = max(-(-batch // threads), -(-200_000 // cost))
            if batch * cost < 200_000:  # jaxlib's shortcut: one chunk
                chunk = batch
            assert (chunk < batch) == split


def test_cpu_devices_hang_only_when_every_thread_holds_a_splitting_device():
    # HalfCheetah (nv 9) on 2 cores: 1024 envs per device hung at 0% CPU in brax's first
    # pmapped reset (measured: 800 per device ran, 850 hung); 512 per device runs.
    why = baseline.cpu_devices_hang(2048, 2, 9, 2)
    assert why is not None
    assert "--cpu_devices=2 on 2 cores would hang" in why and "1024 envs per device" in why
    assert "--cpu_devices=4 (512 each)" in why and "--num_envs up to 1648" in why
    assert baseline.cpu_devices_hang(2048, 4, 9, 2) is None  # below the split
    assert baseline.cpu_devices_hang(1648, 2, 9, 2) is None
    assert baseline.cpu_devices_hang(2048, 2, 9, 3) is None  # a free thread runs the pieces
    assert baseline.cpu_devices_hang(2048, 1, 9, 1) is None  # one device: nothing waits
    assert "--cpu_devices=32 (128 each)" in baseline.cpu_devices_hang(4096, 2, 14, 2)
    assert baseline.cpu_devices_hang(128, 2, 14, 2) is None  # the Ant run of docs/results


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 schedulable cores")
def test_cpu_devices_that_would_hang_is_one_line_exit_2(tmp_path):
    # On 2 cores (the child's affinity, set before the CLI starts), brax's 2048 HalfCheetah
    # envs over 2 devices.
    cores = sorted(os.sched_getaffinity(0))[:2]
    run_dir = tmp_path / "run"
    child = (
        "import os, runpy, sys; "
        f"os.sched_setaffinity(0, {cores!r}); "
        "runpy.run_module('experiments.baseline', run_name='__main__', alter_sys=True)"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            child,
            "--env=halfcheetah",
            "--cpu_devices=2",
            f"--logdir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    _assert_one_line_error(proc, "would hang", "--cpu_devices=4 (512 each)")
    assert not run_dir.exists()
