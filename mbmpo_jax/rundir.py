"""A run directory: where one seed's results live, resumable after any stop.

    RUN_DIR/
      config.json        the run's config (``config.to_json``); what a resume reads
      .run_config.json   the config the checkpoints were written with (tells a hand edit)
      metrics.csv, tb/   one row per iteration (``metrics.MetricsWriter``)
      checkpoints/       orbax, one ``TrainState`` per iteration, the last
                         ``checkpoint_keep`` kept (``checkpoint.Checkpointer``)
      .lock              held by the one process running it

``train(cfg, run_dir)`` runs (``resume=True``: continues) a run there: the warm-up, then
iterations until ``config.iterations_of(cfg)``, writing each iteration's metrics row and
then its checkpoint, so a process killed at any moment resumes from its last complete
iteration with no row lost or doubled. An existing run is never overwritten.
``resume_config`` gives the config to continue a run with. The CLI
(``experiments/run.py``) adds flags, signals and progress lines around these two.

Multi-host: every process runs ``train`` on the same (shared) run directory; only
process 0 (``jax.process_index() == 0``) takes the lock and writes config.json and the
metrics, while every process calls the checkpointer, since orbax's saves are collective
(orbax itself lets the primary process write what is replicated).

Everything here is host-side Python (files, processes); nothing is for jit/vmap/grad.
"""

from __future__ import annotations

import fcntl
import functools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import ml_collections

from mbmpo_jax import checkpoint as ckpt_lib
from mbmpo_jax import config as config_lib
from mbmpo_jax import mbmpo, memory
from mbmpo_jax import metrics as metrics_lib

__all__ = [
    "RESUMABLE_CHANGES",
    "RunDirError",
    "is_empty",
    "resume_config",
    "train",
    "train_seeds",
]

# Fields that do not shape the run's state: a resumed run may change them (e.g. extend it,
# continue with the ensemble's matmuls in another precision (parameters stay float32), or
# with another early stop for the fit).
RESUMABLE_CHANGES = (
    "num_iterations",
    "total_steps",
    "checkpoint_keep",
    "ensemble.compute_dtype",
    "ensemble.patience",
    "ensemble.min_improvement",
)
_ORIGINAL_CONFIG = ".run_config.json"
_LOCK = ".lock"


class RunDirError(Exception):
    """A run directory that cannot be used as asked; one-line message."""


class _NoMetrics:
    """The metrics writer of a process other than 0: writes nothing."""

    def truncate(self, last_iteration: int) -> None:
        del last_iteration

    def write(self, row) -> None:
        del row

    def close(self) -> None:
        pass


def is_empty(run_dir: str) -> bool:
    """True if ``run_dir`` does not exist or holds nothing but a lock file.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    return not os.path.exists(run_dir) or not (set(os.listdir(run_dir)) - {_LOCK})


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _lock(run_dir: str) -> int:
    """Holds ``run_dir/.lock`` until closed: one process per run directory."""
    fd = os.open(os.path.join(run_dir, _LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(f"{run_dir} is in use by another process (its {_LOCK} is held)") from None
    return fd


def _load_config(path: str) -> ml_collections.ConfigDict:
    try:
        with open(path) as f:
            return config_lib.from_json(f.read())
    except (OSError, ValueError, KeyError) as e:
        raise RunDirError(
            f"{path} is unreadable or incompatible: {str(e).splitlines()[0]}"
        ) from None


def _differences(a, b, skip: Iterable[str] = ()) -> list[str]:
    fa, fb = dict(config_lib.leaves(a)), dict(config_lib.leaves(b))
    skip = set(skip)
    return [
        f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}"
        for k in sorted(set(fa) | set(fb))
        if k not in skip and fa.get(k) != fb.get(k)
    ]


def resume_config(
    run_dir: str,
    requested: ml_collections.ConfigDict | None = None,
    explicit: Sequence[str] = (),
) -> ml_collections.ConfigDict:
    """The config to continue the run in ``run_dir`` with (validated).

    Raises ``RunDirError`` if its config.json is unreadable, was edited after the run
    began (its checkpoints belong to the original), or disagrees with ``requested`` on one
    of the ``explicit`` fields (dotted paths a user asked for); an explicit field in
    ``RESUMABLE_CHANGES`` takes the requested value instead (e.g. a longer run).

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    path = os.path.join(run_dir, "config.json")
    stored = _load_config(path)
    original = os.path.join(run_dir, _ORIGINAL_CONFIG)
    if os.path.exists(original):
        diffs = _differences(stored, _load_config(original), skip=RESUMABLE_CHANGES)
        if diffs:
            raise RunDirError(
                f"{path} was edited after the run began ({'; '.join(diffs[:3])}): "
                "its checkpoints belong to the original; restore it or start a new run"
            )
    diffs = []
    if explicit and requested is None:
        raise ValueError("resume_config: explicit fields need the requested config")
    for field in dict.fromkeys(explicit):
        *parents, leaf = field.split(".")
        node_s, node_r = stored, requested
        assert node_r is not None
        for k in parents:
            node_s, node_r = node_s[k], node_r[k]
        if field in RESUMABLE_CHANGES:
            node_s[leaf] = node_r[leaf]
        elif node_s[leaf] != node_r[leaf]:
            diffs.append(f"{field}: run has {node_s[leaf]!r}, command asks {node_r[leaf]!r}")
    if diffs:
        raise RunDirError(f"the command's config differs from {path}: " + "; ".join(diffs))
    try:
        config_lib.validate(stored)
        memory.check_memory(stored)
    except config_lib.ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None
    return stored


def _has_rows(metrics_path: str) -> bool:
    if not os.path.exists(metrics_path):
        return False
    with open(metrics_path) as f:
        return sum(1 for line in f if line.strip()) > 1


def _restore(trainer, ckpt, run_dir: str, key, log) -> Any:
    """The state to continue from (None: start afresh, nothing to lose).

    Falls back to older checkpoints when the newest cannot be read, and checks
    metrics.csv against the state (``metrics.check_metrics``) so that no row is lost or
    doubled."""
    metrics_path = os.path.join(run_dir, "metrics.csv")
    if not ckpt.all_steps():
        if _has_rows(metrics_path):
            raise RunDirError(
                f"{run_dir} has metrics rows but no complete checkpoint in checkpoints/: it "
                "cannot be continued; move it away to start afresh"
            )
        log(f"[{run_dir}] no complete checkpoint yet: starting from scratch")
        return None
    # A checkpoint whose state is not the iteration its name says was copied in from
    # elsewhere (or renamed): skipped like a corrupt one.
    reject = lambda step, s: (
        None if int(s.iteration) == step else f"holds iteration {int(s.iteration)}, not {step}"
    )
    step, state, skipped = ckpt.restore_newest(
        trainer.empty_state(key), reject, older=trainer.older_layouts(key)
    )
    for line in skipped:
        log(f"[{run_dir}] skipped: {line}")
    note = metrics_lib.check_metrics(metrics_path, int(state.iteration), int(state.n_timesteps))
    if note:
        log(f"[{run_dir}] warning: {note}")
    log(
        f"[{run_dir}] resumed at iteration {int(state.iteration)} (checkpoint {step}), "
        f"{int(state.n_timesteps):,} real steps"
    )
    return state


def _print(line: str) -> None:
    print(line, flush=True)


def train(
    cfg: ml_collections.ConfigDict,
    run_dir: str,
    *,
    resume: bool = False,
    trainer: mbmpo.Trainer | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_iteration: Callable[[mbmpo.TrainState, dict[str, float]], None] | None = None,
    on_phase: Callable[[int, str], None] | None = None,
    log: Callable[[str], None] = _print,
    primary: bool | None = None,
) -> tuple[mbmpo.TrainState, bool]:
    """Runs, or with ``resume`` continues, the run of ``cfg`` in ``run_dir``.

    Args:
      cfg: a validated run config (``resume_config`` gives the one of an existing run).
      run_dir: created if missing; must be empty unless ``resume`` (``RunDirError``).
        A ``resume`` of a directory without config.json starts it afresh.
      trainer: a ``mbmpo.Trainer`` of ``cfg`` (e.g. with a custom task or models);
        default ``Trainer(cfg)``.
      should_stop: polled after every iteration's checkpoint; True stops the run there
        (resumable).
      on_iteration: ``(state, metrics)`` after every iteration's checkpoint (progress).
      on_phase: ``(iteration, phase)`` after each phase of an iteration ("fit", "meta",
        "collect", "eval"), after its metrics row is written ("write"), and after the
        warm-up's checkpoint (``(0, "warmup")``): fault injection in the tests.
      log: where the one-line notes (warm-up, resumed, skipped checkpoints) go.
      primary: whether this process writes config.json and the metrics and holds the
        lock; default ``jax.process_index() == 0`` (checkpoints: every process, orbax
        coordinates them).

    Returns:
      ``(state, finished)``: the last checkpointed state, and whether the run reached
      ``config.iterations_of(cfg)`` (False: stopped by ``should_stop``).

    Raises:
      RunDirError, metrics.MetricsError (damaged metrics.csv on resume),
      checkpoint.CheckpointError, mbmpo.NonFiniteError: one-line messages.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    on_phase = on_phase or (lambda iteration, phase: None)
    primary = jax.process_index() == 0 if primary is None else primary
    run = _OpenRun(cfg, run_dir, resume, primary)
    try:
        trainer = trainer or mbmpo.Trainer(cfg)
        key = jax.random.PRNGKey(cfg.seed)
        state = run.start(trainer, key, log, on_phase)
        while int(state.iteration) < trainer.num_iterations and not should_stop():
            it = int(state.iteration) + 1
            state, metrics = trainer.iteration(state, functools.partial(on_phase, it))
            run.record(it, state, metrics, on_phase)
            if on_iteration is not None:
                on_iteration(state, metrics)
        run.finish()
    finally:
        run.release()
    return state, int(state.iteration) >= trainer.num_iterations


class _OpenRun:
    """One run directory opened for training: its lock, config files, metrics writer and
    checkpointer (``train`` uses one, ``train_seeds`` one per seed)."""

    def __init__(self, cfg: ml_collections.ConfigDict, run_dir: str, resume: bool, primary: bool):
        self.cfg, self.run_dir, self.primary = cfg, run_dir, primary
        os.makedirs(run_dir, exist_ok=True)
        self.lock = _lock(run_dir) if primary else None
        try:
            cfg_path = os.path.join(run_dir, "config.json")
            if not os.path.exists(cfg_path):
                resume = False  # e.g. a seed of a multi-seed run that had not begun
            elif primary and not resume and not is_empty(run_dir):
                raise RunDirError(f"{run_dir} exists and is not empty: resume it, or use another")
            text = config_lib.to_json(cfg)
            if primary and (not resume or open(cfg_path).read() != text):
                _write_atomic(cfg_path, text)
            original = os.path.join(run_dir, _ORIGINAL_CONFIG)
            if primary and (not resume or not os.path.exists(original)):
                _write_atomic(original, text)
            self.resume = resume
            self.ckpt = ckpt_lib.Checkpointer(run_dir, keep=cfg.checkpoint_keep)
        except BaseException:
            self.release()
            raise
        self.writer: Any = None

    def _new_writer(self, purge_step: int) -> Any:
        if not self.primary:
            return _NoMetrics()
        return metrics_lib.MetricsWriter(self.run_dir, purge_step=purge_step)

    def start(self, trainer, key, log, on_phase) -> mbmpo.TrainState:
        """The state to continue from: the newest usable checkpoint, or the warm-up."""
        start = time.perf_counter()
        state = _restore(trainer, self.ckpt, self.run_dir, key, log) if self.resume else None
        if state is None:
            self.writer = self._new_writer(0)
            self.writer.truncate(-1)
            state = trainer.init(key)
            self.ckpt.save(0, state)
            log(
                f"[{self.run_dir}] warm-up: {int(state.n_timesteps):,} uniform-random real "
                f"steps ({time.perf_counter() - start:.1f}s)"
            )
            on_phase(0, "warmup")
        else:
            self.writer = self._new_writer(int(state.n_timesteps) + 1)
            self.writer.truncate(int(state.iteration))
        return state

    def record(self, it: int, state, metrics, on_phase) -> None:
        """Iteration ``it``'s metrics row, then its checkpoint."""
        self.writer.write(metrics)
        on_phase(it, "write")
        self.ckpt.save(it, state)

    def finish(self) -> None:
        self.writer.close()
        self.ckpt.close()

    def release(self) -> None:
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None


def train_seeds(
    cfgs: Sequence[ml_collections.ConfigDict],
    run_dirs: Sequence[str],
    *,
    resume: bool = False,
    trainer: mbmpo.Trainer | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_iteration: Callable[[int, mbmpo.TrainState, dict[str, float]], None] | None = None,
    on_phase: Callable[[int, str], None] | None = None,
    log: Callable[[str], None] = _print,
    primary: bool | None = None,
) -> tuple[list[mbmpo.TrainState], bool]:
    """``train`` for N seeds at once: one run directory per seed, one program for all.

    ``cfgs[s]`` is seed s's config (equal apart from ``seed``), ``run_dirs[s]`` its run
    directory, as ``train`` writes it (config.json, metrics.csv, a checkpoint per
    iteration); the iterations run as one ``seeds.SeedsTrainer`` program. On resume, seeds
    whose checkpoints are behind the others (a stop between two seeds' saves) are first
    brought level with single-seed iterations. ``on_iteration(s, state, metrics)`` runs per
    seed after its checkpoint; the other arguments are ``train``'s.

    Returns:
      ``(states, finished)``: every seed's last checkpointed state, and whether all reached
      ``config.iterations_of``.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    from mbmpo_jax import seeds as seeds_lib  # imports mbmpo; kept out of rundir's import

    n = len(cfgs)
    if n != len(run_dirs) or n < 1:
        raise ValueError(f"train_seeds: {n} configs for {len(run_dirs)} run directories")
    strip = lambda c: config_lib.to_json(_with_seed(c, 0))
    if any(strip(c) != strip(cfgs[0]) for c in cfgs):
        raise RunDirError("train_seeds: the seeds' configs differ in more than their seed")
    on_phase = on_phase or (lambda iteration, phase: None)
    primary = jax.process_index() == 0 if primary is None else primary
    runs: list[_OpenRun] = []
    try:
        for c, d in zip(cfgs, run_dirs, strict=True):
            runs.append(_OpenRun(c, d, resume, primary))
        trainer = trainer or mbmpo.Trainer(cfgs[0])
        keys = [jax.random.PRNGKey(c.seed) for c in cfgs]
        states = [r.start(trainer, k, log, on_phase) for r, k in zip(runs, keys, strict=True)]
        total = trainer.num_iterations

        def record(s: int, it: int, state, metrics) -> None:
            runs[s].record(it, state, metrics, on_phase)
            if on_iteration is not None:
                on_iteration(s, state, metrics)

        # Level the seeds (a stop between two seeds' checkpoints), one seed at a time.
        level = min(max(int(st.iteration) for st in states), total)
        for s in range(n):
            while int(states[s].iteration) < level and not should_stop():
                it = int(states[s].iteration) + 1
                states[s], metrics = trainer.iteration(states[s], functools.partial(on_phase, it))
                record(s, it, states[s], metrics)
        if all(int(st.iteration) == level for st in states):
            program = seeds_lib.SeedsTrainer(cfgs[0], n, trainer)
            stacked = seeds_lib.stack(states)
            it = level
            while it < total and not should_stop():
                it += 1
                stacked, rows = program.iteration(stacked, functools.partial(on_phase, it))
                states = seeds_lib.unstack(stacked, n)
                for s in range(n):
                    record(s, it, states[s], rows[s])
        for r in runs:
            r.finish()
    finally:
        for r in runs:
            r.release()
    return states, all(int(st.iteration) >= total for st in states)


def _with_seed(cfg: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    c = config_lib.from_json(config_lib.to_json(cfg))
    c.seed = seed
    return c
