"""The library owns the run directory: a researcher composing `rundir.train` can stop a
run and resume it, with the same rows and state as an uninterrupted run (in-process; the
CLI's SIGKILL/SIGTERM checks are in test_run_cli.py)."""

import csv
import dataclasses
import fcntl
import os
import shutil

import jax
import numpy as np
import pytest

from mbmpo_jax import checkpoint as ckpt_lib
from mbmpo_jax import config as config_lib
from mbmpo_jax import mbmpo, rundir

NONDETERMINISTIC = ("Time/", "Meta/ModelStepsPerSec")


def _cfg(num_iterations):
    cfg = config_lib.get_config("hopper", "smoke")
    cfg.num_iterations = num_iterations
    cfg.seed = 4
    return cfg


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if not k.startswith(NONDETERMINISTIC)} for r in rows]


@pytest.fixture(scope="module")
def trainer():
    return mbmpo.Trainer(_cfg(2))  # one compilation serves every run below


def test_stop_and_resume_equals_uninterrupted(tmp_path, trainer):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    seen = []
    state_a, finished = rundir.train(
        _cfg(2), a, trainer=trainer, on_iteration=lambda s, m: seen.append(int(s.iteration))
    )
    assert finished and seen == [1, 2]

    phases, done = [], []
    state_b, finished = rundir.train(
        _cfg(2),
        b,
        trainer=trainer,
        should_stop=lambda: bool(done),
        on_iteration=lambda s, m: done.append(m),
        on_phase=lambda it, phase: phases.append((it, phase)),
        log=lambda line: None,
    )
    assert not finished and int(state_b.iteration) == 1
    assert phases == [(0, "warmup"), *[(1, p) for p in ("fit", "meta", "collect", "eval", "write")]]

    # a run directory in use, or not empty without resume, is refused and left as it was
    before = open(os.path.join(b, "metrics.csv")).read()
    with pytest.raises(rundir.RunDirError, match="not empty"):
        rundir.train(_cfg(2), b, trainer=trainer)
    assert open(os.path.join(b, "metrics.csv")).read() == before

    cfg = rundir.resume_config(b)
    lines = []
    state_b, finished = rundir.train(cfg, b, resume=True, trainer=trainer, log=lines.append)
    assert finished and any("resumed at iteration 1" in line for line in lines)
    assert _rows(a) == _rows(b) and len(_rows(b)) == 2
    for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_config_checks_edits_and_requests(tmp_path):
    run_dir = str(tmp_path / "r")
    os.makedirs(run_dir)
    cfg = _cfg(2)
    text = config_lib.to_json(cfg)
    for name in ("config.json", ".run_config.json"):
        with open(os.path.join(run_dir, name), "w") as f:
            f.write(text)

    # a field that does not shape the state may change on resume; others must agree
    longer = _cfg(5)
    assert rundir.resume_config(run_dir, longer, ["num_iterations"]).num_iterations == 5
    other = _cfg(2)
    other.meta.inner_lr = 0.0
    with pytest.raises(rundir.RunDirError, match="meta.inner_lr: run has 0.001"):
        rundir.resume_config(run_dir, other, ["meta.inner_lr"])

    # config.json edited after the run began: its checkpoints belong to the original
    edited = _cfg(2)
    edited.meta.max_kl = 0.05
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config_lib.to_json(edited))
    with pytest.raises(rundir.RunDirError, match="edited after the run began"):
        rundir.resume_config(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(rundir.RunDirError, match="unreadable or incompatible"):
        rundir.resume_config(run_dir)


def test_only_process_zero_writes_metrics_and_config(tmp_path, trainer):
    """Multi-host: a process other than 0 writes no config.json, metrics or TensorBoard
    and takes no lock (so it can share process 0's run directory); checkpoints are
    orbax's collective saves, called by every process."""
    run_dir = str(tmp_path / "other")
    lock = os.path.join(run_dir, ".lock")
    os.makedirs(run_dir)
    with open(lock, "w") as f:  # process 0 holds the lock of the shared directory
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        state, finished = rundir.train(
            _cfg(2), run_dir, trainer=trainer, primary=False, should_stop=lambda: True
        )
    assert not finished and int(state.iteration) == 0
    assert sorted(os.listdir(run_dir)) == [".lock", "checkpoints"]


def test_resumes_a_checkpoint_of_the_older_layout(tmp_path, trainer):
    """Checkpoints written before TrainState lost `post_params` (issue 16) still resume,
    and the resumed run equals an uninterrupted one."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    quiet = lambda line: None
    state_a, _ = rundir.train(_cfg(2), a, trainer=trainer, log=quiet)
    done = []
    rundir.train(
        _cfg(2),
        b,
        trainer=trainer,
        should_stop=lambda: bool(done),
        on_iteration=lambda s, m: done.append(1),
        log=quiet,
    )
    # Rewrite b's checkpoint 1 in the older layout (the extra leaves hold garbage: they
    # were never read).
    key = jax.random.PRNGKey(_cfg(2).seed)
    ck = ckpt_lib.Checkpointer(b, keep=3)
    state_1 = ck.restore(1, trainer.empty_state(key))
    ck.close()
    shutil.rmtree(os.path.join(b, "checkpoints"))
    old, _ = trainer.older_layouts(key)[0]
    garbage = jax.tree.map(lambda x: np.full(np.shape(x), 7, np.asarray(x).dtype), old.post_params)
    ck = ckpt_lib.Checkpointer(b, keep=3)
    ck.save(1, old.replace(post_params=garbage, **vars_of(state_1)))
    ck.close()
    with pytest.raises(ckpt_lib.CheckpointError, match="could not be restored"):
        ckpt_lib.Checkpointer(b).restore(1, trainer.empty_state(key))  # not the new layout

    lines = []
    state_b, finished = rundir.train(
        rundir.resume_config(b), b, resume=True, trainer=trainer, log=lines.append
    )
    assert finished and any("resumed at iteration 1" in line for line in lines), lines
    assert isinstance(state_b, mbmpo.TrainState)
    assert _rows(a) == _rows(b)
    for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def vars_of(state):
    """The fields of a flax struct dataclass, by name."""
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
