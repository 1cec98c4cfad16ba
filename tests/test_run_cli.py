"""The run CLI end to end, in subprocesses: smoke run, bad input, SIGKILL + resume."""

import csv
import fcntl
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests._cli import ROOT, forced_devices_env, one_line_error, run_module

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


# Seed 1, not the default 0: a one-seed run resumes without --seed and must keep its own.
SMOKE = ["--env=ant", "--preset=smoke", "--seed=1", "--config.num_iterations=3"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env=cheetah"], "unknown env 'cheetah'; valid: halfcheetah"),
        (["--preset=huge"], "unknown preset"),
        (["--config.ensemble.hidden=-1,32"], "ensemble.hidden sizes must be positive"),
        (["--config.meta.meta_batch_size=7"], "must be a multiple of ensemble.num_models"),
        (["--config.meta.horizon=0"], "meta.horizon must be positive"),
        (["--config.meta.inner_lr=abc"], "expected float"),
        (["--config.meta.inner_update=natural"], "meta.inner_update must be pg or std_invariant"),
        (["--config.nosuch.field=1"], "unknown config field"),
        (["--nosuchflag=1"], "nosuchflag"),
        (["--resume"], "--resume needs --logdir"),
        (["--num_processes=2", "--logdir=x"], "missing --coordinator_address, --process_id"),
        (
            ["--coordinator_address=localhost:1", "--num_processes=2", "--process_id=2"],
            "--process_id must be in [0, --num_processes), got 2 of 2",
        ),
        (
            ["--coordinator_address=localhost:1", "--num_processes=2", "--process_id=0"],
            "a multi-process run needs --logdir",
        ),
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
        # TRPO's accepted step stays inside the trust region (the preset's max_kl 0.01) and
        # its line search within its 15 tries
        assert 0.0 <= float(row["Meta/StepKL"]) <= 0.01, row["Meta/StepKL"]
        assert 0.0 <= float(row["Meta/Backtracks"]) < 15

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


# A whole-CLI check (two compiling runs, about a minute of a core): in the slow set, with
# the in-process stop/resume equality (tests/test_rundir.py) left in the README's suite.
@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, env, uninterrupted):
    a, _ = uninterrupted
    b = str(tmp_path / "b")
    # Run b (2 iterations) is killed with SIGKILL at the worst moment of iteration 2: its
    # metrics row and TensorBoard points are written, its checkpoint is not (fault hook).
    killed = [*SMOKE[:-1], "--config.num_iterations=2", f"--logdir={b}"]
    r = run_cli(killed, dict(env, MBMPO_FAULT_INJECT="sigkill:2:write"))
    assert r.returncode == -signal.SIGKILL
    assert len(read_rows(b)) == 2
    assert len(tensorboard_points(os.path.join(b, "tb"))["n_timesteps"]) == 2

    # Resumed, and extended to 3 iterations (num_iterations may change on resume); a
    # SIGTERM during the last iteration lets it finish (exit 0, no resume advice).
    r = run_cli(
        [f"--logdir={b}", "--resume", "--config.num_iterations=3"],
        dict(env, MBMPO_FAULT_INJECT="sigterm:3:meta"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed at iteration 1" in r.stdout and "done: 3 iterations" in r.stdout
    assert "stopped safely" not in r.stderr
    # The printed resume command has no --seed: the run keeps its seed (config.json too).
    assert "seeds=[1]" in r.stdout
    assert json.load(open(os.path.join(b, "config.json")))["seed"] == 1
    assert json.load(open(os.path.join(b, ".run_config.json")))["seed"] == 1
    rows_a, rows_b = read_rows(a), read_rows(b)
    assert [row["iteration"] for row in rows_b] == ["1.0", "2.0", "3.0"]  # none lost or doubled
    assert stable(rows_a) == stable(rows_b)
    # TensorBoard shows each iteration once, with the values of metrics.csv.
    points = tensorboard_points(os.path.join(b, "tb"))
    for tag in ("n_timesteps", "PrePolicy/AverageReturn", "Model/ValidLoss"):
        want = [(int(float(r["n_timesteps"])), float(r[tag])) for r in rows_b]
        assert [(s, pytest.approx(v, rel=1e-6)) for s, v in points[tag]] == want, tag
    it_a, leaves_a = _final_arrays(a)
    it_b, leaves_b = _final_arrays(b)
    assert it_a == it_b == 3
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y)


def tensorboard_points(tb_dir):
    """`{tag: [(step, value), ...]}` as TensorBoard shows the event files of `tb_dir`.

    Read record by record (TFRecord framing: u64 length, u32 crc, data, u32 crc), in the
    order the files were written; a `SessionLog.START` at step s (what a writer opened
    with `purge_step=s` writes first) discards the points at steps >= s seen before it,
    as TensorBoard's loader does with orphaned data.
    """
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    points: dict[str, list[tuple[int, float]]] = {}
    files = sorted(f for f in os.listdir(tb_dir) if f.startswith("events.out.tfevents"))
    for name in sorted(files, key=lambda f: int(f.split(".")[3])):  # creation time
        data = open(os.path.join(tb_dir, name), "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = np.frombuffer(data[pos : pos + 8], "<u8")
            event = Event.FromString(data[pos + 12 : pos + 12 + int(length)])
            pos += 12 + int(length) + 4
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                points = {t: [p for p in ps if p[0] < event.step] for t, ps in points.items()}
            for v in event.summary.value:
                points.setdefault(v.tag, []).append((event.step, v.simple_value))
    return points


def _start(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path, proc, timeout=300):
    deadline = time.time() + timeout
    while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(path), proc.communicate()[1][-2000:]


@pytest.mark.slow
def test_sigterm_stops_safely_then_resume_continues_every_seed(tmp_path, env):
    """SIGTERM during seed 0 of a 2-seed run (after its warm-up's checkpoint, through the
    fault hook): exit 130 with the resume command; that command continues seed 0 and starts
    seed 1, which had not begun. (A real SIGINT is sent in the next test.)"""
    base = str(tmp_path / "c")
    args = [*SMOKE[:-1], "--seed=0", "--config.num_iterations=2", "--num_seeds=2", "--novmap_seeds"]
    r = run_cli([*args, f"--logdir={base}"], dict(env, MBMPO_FAULT_INJECT="sigterm:0:warmup"))
    assert r.returncode == 130, r.stderr[-2000:]
    resume = f"--logdir={base} --resume --seed=0 --num_seeds=2"
    assert resume in r.stderr and "Traceback" not in r.stderr
    assert os.path.isdir(os.path.join(base, "seed0", "checkpoints", "0"))
    assert not os.path.exists(os.path.join(base, "seed1"))

    # The ensemble's precision and the fit's early stop are resumable changes (parameters
    # stay float32; neither shapes the state).
    r = run_cli(
        [
            *resume.split(),
            "--novmap_seeds",
            "--config.ensemble.compute_dtype=bfloat16",
            "--config.ensemble.patience=3",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed at iteration 0" in r.stdout
    for seed in ("seed0", "seed1"):
        assert [row["iteration"] for row in read_rows(os.path.join(base, seed))] == ["1.0", "2.0"]
        stored = json.load(open(os.path.join(base, seed, "config.json")))
        assert stored["ensemble"]["compute_dtype"] == "bfloat16"
        assert stored["ensemble"]["patience"] == 3
    assert json.load(open(os.path.join(base, "seed1", "config.json")))["seed"] == 1
    original = json.load(open(os.path.join(base, "seed0", ".run_config.json")))
    assert original["ensemble"]["compute_dtype"] == "float32"  # what the run began with
    assert original["ensemble"]["patience"] == 0


@pytest.mark.slow
def test_seeds_in_one_program_stop_and_resume(tmp_path, env):
    """--num_seeds=2 (one program, the default): SIGTERM after iteration 1's first metrics
    row stops after both seeds' checkpoints of iteration 1; the printed command finishes
    both seeds, each in its own run directory with rows 1 and 2."""
    base = str(tmp_path / "v")
    args = [*SMOKE[:-1], "--config.num_iterations=2", "--num_seeds=2", "--seed=3"]
    r = run_cli([*args, f"--logdir={base}"], dict(env, MBMPO_FAULT_INJECT="sigterm:1:write"))
    assert r.returncode == 130, r.stderr[-2000:]
    assert "stopped safely at iterations 1, 1" in r.stderr and "Traceback" not in r.stderr
    resume = f"--logdir={base} --resume --seed=3 --num_seeds=2"
    assert resume in r.stderr
    r = run_cli(resume.split(), env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[seed 4] it   2/2" in r.stdout and "2 seeds in" in r.stdout
    for seed in (3, 4):
        d = os.path.join(base, f"seed{seed}")
        assert [row["iteration"] for row in read_rows(d)] == ["1.0", "2.0"]
        assert json.load(open(os.path.join(d, "config.json")))["seed"] == seed


def test_sigint_during_compile_then_again_exits_at_once_in_one_line(tmp_path, env):
    """Ctrl-C while iteration 1 compiles asks for a stop after it; a second one stops at
    once (the main thread is inside XLA: only the signal thread can act), saying how to
    resume from checkpoint 0."""
    run_dir = str(tmp_path / "d")
    proc = _start([*SMOKE, f"--logdir={run_dir}"], env)
    _wait_for(os.path.join(run_dir, "checkpoints", "0"), proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in out + err and len(err) < 1000, err[-3000:]
    assert "stopping after this iteration's checkpoint" in err
    assert f"--logdir={run_dir} --resume" in err.strip().splitlines()[-1]


def test_sigint_during_imports_exits_in_one_line(tmp_path, env):
    """Ctrl-C before the run began (here: while JAX is imported) exits at once, 130, one
    line, nothing written."""
    run_dir = str(tmp_path / "never")
    proc = _start(["--env=hopper", "--preset=smoke", f"--logdir={run_dir}"], env)
    # The CLI blocks SIGINT in its main thread right before starting the signal thread;
    # wait for that (Linux: /proc), then send while JAX is still being imported (seconds).
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(f"/proc/{proc.pid}/status") as f:
            blocked = int(next(ln for ln in f if ln.startswith("SigBlk:")).split()[1], 16)
        if blocked & (1 << (signal.SIGINT - 1)):
            break
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip() == "error: SIGINT: stopped before a run began", err[-2000:]
    assert not os.path.exists(run_dir)


# ---------------------------------------------------------------------------------------
# Damaged or edited run directories (issue 17): each refused in one line, nothing lost.


def _copy(uninterrupted, tmp_path, name):
    src, _ = uninterrupted
    dst = str(tmp_path / name)
    shutil.copytree(src, dst)
    return dst


def _resume_fails(run_dir, env, message, code=2):
    before = (
        open(os.path.join(run_dir, "metrics.csv")).read()
        if os.path.isfile(os.path.join(run_dir, "metrics.csv"))
        else None
    )
    r = run_cli([f"--logdir={run_dir}", "--resume", "--config.num_iterations=4"], env)
    line = one_line_error(r, code)
    assert message in line, line
    if before is not None:
        assert open(os.path.join(run_dir, "metrics.csv")).read() == before  # untouched


def test_resume_without_checkpoints_keeps_metrics(uninterrupted, tmp_path, env):
    d = _copy(uninterrupted, tmp_path, "no_ckpt")
    shutil.rmtree(os.path.join(d, "checkpoints"))
    _resume_fails(d, env, "has metrics rows but no complete checkpoint")
    d = _copy(uninterrupted, tmp_path, "ckpt_file")
    shutil.rmtree(os.path.join(d, "checkpoints"))
    open(os.path.join(d, "checkpoints"), "w").write("junk")
    r = run_cli([f"--logdir={d}", "--resume"], env)
    assert "no complete checkpoint in checkpoints/" in one_line_error(r)
    assert len(read_rows(d)) == 3


def test_resume_refuses_damaged_metrics(uninterrupted, tmp_path, env):
    """One CLI case; every kind of damage is checked in-process in test_checkpoint_metrics."""
    d = _copy(uninterrupted, tmp_path, "damaged")
    path = os.path.join(d, "metrics.csv")
    text = open(path).read()
    open(path, "w").write(text[: text.rindex(",") - 3])  # the last row cut mid-row
    _resume_fails(d, env, "cells, the header")


def test_resume_refuses_edited_or_invalid_config(uninterrupted, tmp_path, env):
    d = _copy(uninterrupted, tmp_path, "edited")
    path = os.path.join(d, "config.json")
    cfg = json.load(open(path))
    cfg["meta"]["inner_lr"] = 0.5
    json.dump(cfg, open(path, "w"))
    _resume_fails(d, env, "was edited after the run began (meta.inner_lr: 0.5 vs 0.001)")
    os.remove(os.path.join(d, ".run_config.json"))  # a run from before the copy existed
    cfg["meta"]["inner_lr"], cfg["meta"]["horizon"] = 0.001, -5
    json.dump(cfg, open(path, "w"))
    _resume_fails(d, env, "meta.horizon must be positive")
    open(path, "w").write('{"env": "ant", "ensemble": 5}')  # more in test_config.py
    r = run_cli([f"--logdir={d}", "--resume"], env)
    assert "config.json" in one_line_error(r)


def test_corrupt_or_stray_checkpoints_fall_back_to_the_newest_intact(uninterrupted, tmp_path, env):
    d = _copy(uninterrupted, tmp_path, "corrupt")
    # a stray copy (checkpoint 2 under another step's name) and a corrupt newest one
    shutil.copytree(os.path.join(d, "checkpoints", "2"), os.path.join(d, "checkpoints", "7"))
    newest = os.path.join(d, "checkpoints", "3")
    for root, _, files in os.walk(newest):
        for f in files:
            if f.startswith("manifest") or f.endswith(".ocdbt"):
                os.remove(os.path.join(root, f))
    # Resumed as a 2-iteration run (nothing left to compute after checkpoint 2; the
    # SIGKILL test shows that redone iterations equal the uninterrupted ones).
    r = run_cli([f"--logdir={d}", "--resume", "--config.num_iterations=2"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipped: checkpoint 7: holds iteration 2, not 7" in r.stdout
    assert "skipped: checkpoint 3" in r.stdout and "resumed at iteration 2" in r.stdout
    moved = sorted(os.listdir(os.path.join(d, "checkpoints.unreadable")))
    assert moved == ["3", "7"]  # kept, not deleted
    assert "Traceback" not in r.stdout + r.stderr and r.stderr.strip() == "", r.stderr[-2000:]
    src, _ = uninterrupted
    assert read_rows(d) == read_rows(src)[:2]  # the rows of the restored state


def test_a_run_directory_is_used_by_one_process_at_a_time(uninterrupted, tmp_path, env):
    d = _copy(uninterrupted, tmp_path, "locked")
    fd = os.open(os.path.join(d, ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        _resume_fails(d, env, "is in use by another process")
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "args, message",
    [
        # the hang of issue 17; the other sizes are checked in-process (test_config.py)
        (["--config.ensemble.hidden=100000,100000"], "needs about 298"),
        (["--seed=99999999999999999999"], "seed"),
    ],
)
def test_impossible_configs_refused_before_anything_runs(tmp_path, env, args, message):
    run_dir = str(tmp_path / "never")
    start = time.time()
    r = run_cli(["--env=hopper", "--preset=smoke", f"--logdir={run_dir}", *args], env)
    assert message in one_line_error(r)
    assert time.time() - start < 60
    assert not os.path.exists(run_dir)


def test_logdir_that_is_a_file_is_refused(tmp_path, env):
    path = tmp_path / "file"
    path.write_text("x")
    r = run_cli(["--env=hopper", "--preset=smoke", f"--logdir={path}"], env)
    assert "is not a directory" in one_line_error(r)
    assert path.read_text() == "x"


def run_processes(args, envs, timeout=600):
    """`python -m experiments.run *args` as the processes of one multi-process run on this
    host (one per environment in `envs`, one CPU device each, collectives through gloo);
    returns their (returncode, stdout, stderr)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    n = len(envs)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments.run", *args]
            + [f"--coordinator_address=localhost:{port}", f"--num_processes={n}"]
            + [f"--process_id={i}"],
            cwd=ROOT,
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, e in enumerate(envs)
    ]
    deadline = time.time() + timeout
    try:
        outs = [p.communicate(timeout=max(deadline - time.time(), 1)) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)]


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory, env):
    """The smoke run in one process on 2 forced host devices: the program a run of two
    processes with one device each runs, the tasks split the same way."""
    run_dir = str(tmp_path_factory.mktemp("runs") / "forced2")
    r = run_cli([*SMOKE, f"--logdir={run_dir}"], dict(forced_devices_env(2), PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir


def test_two_processes_run_one_run_directory(two_devices, tmp_path, env):
    """A multi-process run (jax.distributed on this host, the tasks split over both
    processes' devices, their all-reduces through gloo): every process runs the iteration,
    process 0 alone writes the metrics and prints the progress, and the run equals the one
    process with two devices (the same mesh) exactly. (Against one device it differs by
    rounding in the sums over tasks, which the closed loop carries into the real returns:
    the smoke run's Ant returns then differ by tens of percent.)"""
    run_dir = str(tmp_path / "mp")
    out = run_processes([*SMOKE, f"--logdir={run_dir}"], [env, env])
    for code, _, err in out:
        assert code == 0, err[-3000:]
    (_, out0, _), (_, out1, _) = out
    assert "process 0 of 2" in out0 and "it   3/3" in out0
    assert "process 1 of 2 (progress lines: process 0)" in out1 and "it   1/3" not in out1
    assert "tasks split over 2" in out0
    assert stable(read_rows(run_dir)) == stable(read_rows(two_devices))

    # Bad input in a multi-process run: every process gives the one line and exits 2 (the
    # checks of the run directories end in a barrier, so none writes before all have
    # checked; none is left waiting for the others).
    before = open(os.path.join(run_dir, "metrics.csv")).read()
    for code, out_i, err in run_processes([*SMOKE, f"--logdir={run_dir}"], [env, env]):
        assert "pass --resume" in one_line_error(subprocess.CompletedProcess([], code, out_i, err))
    assert open(os.path.join(run_dir, "metrics.csv")).read() == before


@pytest.mark.slow
def test_two_processes_stop_together_and_resume(two_devices, tmp_path, env):
    """SIGTERM to process 1 alone (during iteration 2's fit): both processes stop after
    iteration 2's checkpoint (had process 0 gone on, it would wait in the next collective
    for ever), and both resume to the end."""
    run_dir = str(tmp_path / "mp")
    args = [*SMOKE, f"--logdir={run_dir}"]
    out = run_processes(args, [env, dict(env, MBMPO_FAULT_INJECT="sigterm:2:fit")])
    for code, _, err in out:
        assert code == 130, err[-3000:]
        assert "stopped safely at iteration 2" in err and "Traceback" not in err
    assert [r["iteration"] for r in read_rows(run_dir)] == ["1.0", "2.0"]
    out = run_processes([*args, "--resume"], [env, env])
    for code, _, err in out:
        assert code == 0, err[-3000:]
    assert "resumed at iteration 2" in out[0][1]
    assert stable(read_rows(run_dir)) == stable(read_rows(two_devices))


def test_processes_whose_states_differ_are_one_error():
    """`_check_agree` (after every iteration of a multi-process run): equal fingerprints
    pass; a state that differs in any of its parts (here one model weight, by one ulp of
    its sum) is refused with the processes' fingerprints."""
    import jax

    from experiments.run import ProcessesDivergedError, _check_agree, _fingerprint
    from mbmpo_jax import config as config_lib
    from mbmpo_jax import mbmpo

    state = mbmpo.Trainer(config_lib.get_config("hopper", "smoke")).empty_state(
        jax.random.PRNGKey(0)
    )
    _check_agree(state, gather=lambda fp: np.stack([fp, fp, fp]))
    ens = state.ensemble
    leaves, treedef = jax.tree.flatten(ens.params)
    leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].add(1e-3)
    other = state.replace(ensemble=ens.replace(params=jax.tree.unflatten(treedef, leaves)))
    assert _fingerprint(other)[0] != _fingerprint(state)[0]
    assert np.array_equal(_fingerprint(other)[1:], _fingerprint(state)[1:])
    with pytest.raises(ProcessesDivergedError, match="differ after iteration 0"):
        _check_agree(state, gather=lambda fp: np.stack([fp, _fingerprint(other)]))
