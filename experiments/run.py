"""The MB-MPO run: `python -m experiments.run --env=ant`.

Flags:
  --env, --preset (paper | cpu | smoke), --seed, --num_seeds, --logdir, --resume,
  --config.FIELD=VALUE for any config field (e.g. --config.meta.inner_lr=0,
  --config.ensemble.hidden=256,256). Bad values: one-line error, exit code 2.

A run directory holds config.json, metrics.csv, tb/ (TensorBoard) and checkpoints/ (orbax,
one per iteration, the last `checkpoint_keep` kept). An existing run directory is never
overwritten: `--resume` continues it from its last complete checkpoint. Ctrl-C (SIGINT) or
SIGTERM stops after the current iteration's checkpoint and prints how to resume.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

# Signals go to a thread of their own, set up before the heavy imports below: Python runs
# a signal handler only between bytecodes of the main thread, which can sit for minutes in
# an XLA compile or a blocking transfer. The first SIGINT/SIGTERM asks the run to stop
# after its next checkpoint; a second one (or one before the run began) exits at once,
# which is as safe as SIGKILL: checkpoints and metrics are written by atomic renames.
_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_STOP = {"requested": False, "run_dir": None, "resume_cmd": ""}


def _signal_watcher() -> None:
    while True:
        name = signal.Signals(signal.sigwait(_SIGNALS)).name
        if _STOP["run_dir"] is None:
            print(f"error: {name}: stopped before a run began", file=sys.stderr, flush=True)
            os._exit(130)
        if _STOP["requested"]:
            print(
                f"error: {name} again: stopped at once; the last complete checkpoint is kept. "
                f"Resume with: {_STOP['resume_cmd']}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(130)
        _STOP["requested"] = True
        print(
            f"\n{name}: stopping after this iteration's checkpoint (again: at once) ...",
            file=sys.stderr,
            flush=True,
        )


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    threading.Thread(target=_signal_watcher, name="signals", daemon=True).start()

import datetime  # noqa: E402
import fcntl  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

from experiments import _quiet  # noqa: E402, F401  (keeps brax/JAX chatter off the console)
from experiments._cli import fail, run_and_exit  # noqa: E402
from mbmpo_jax import config as config_lib  # noqa: E402

_ENV = flags.DEFINE_string("env", "halfcheetah", "task name")
_PRESET = flags.DEFINE_string("preset", "paper", "paper | cpu | smoke")
_SEED = flags.DEFINE_integer("seed", 0, "first seed")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 1, "seeds run one after another, seed..seed+N-1")
_LOGDIR = flags.DEFINE_string("logdir", None, "run directory (default runs/ENV-PRESET-TIME)")
_RESUME = flags.DEFINE_bool("resume", False, "continue the run in --logdir")
_QUIET = flags.DEFINE_bool("quiet", False, "no per-iteration progress lines")

_OVERRIDES: list[str] = []
# Fields that do not shape the run's state: a resumed run may change them (e.g. extend it,
# or continue with the ensemble's matmuls in another precision: parameters stay float32).
_RESUMABLE_CHANGES = ("num_iterations", "total_steps", "checkpoint_keep", "ensemble.compute_dtype")
# The config the run's checkpoints were written with (config.json is the one to read; this
# copy tells a hand-edited config.json from the run's own).
_ORIGINAL_CONFIG = ".run_config.json"
_LOCK = ".lock"
# Fault injection for the reliability tests: MBMPO_FAULT_INJECT=KIND:ITERATION:PHASE sends
# this process SIGKILL (KIND sigkill) or SIGTERM (sigterm) right after PHASE (fit | meta |
# collect | eval | write: its metrics row written, its checkpoint not yet) of ITERATION, or
# after the warm-up's checkpoint (0:warmup).
_FAULT = os.environ.get("MBMPO_FAULT_INJECT", "")


class RunDirError(Exception):
    """A run directory that cannot be continued as asked; one-line message."""


def _parse(argv: list[str]) -> list[str]:
    """absl parsing, with --config.* taken out first and errors as one line + exit 2."""
    rest = [argv[0]]
    for arg in argv[1:]:
        if arg.startswith("--config."):
            _OVERRIDES.append(arg[len("--config.") :])
        else:
            rest.append(arg)
    try:
        return flags.FLAGS(rest)
    except (flags.Error, OverflowError) as e:
        fail(str(e).splitlines()[0])
    return []


def _checked(cfg, where: str = ""):
    """`validate` and `check_memory`, as one-line errors (exit 2) naming `where`."""
    try:
        config_lib.validate(cfg)
        config_lib.check_memory(cfg)
    except config_lib.ConfigError as e:
        fail(f"{where}{e}")
    return cfg


def _build_config():
    try:
        cfg = config_lib.get_config(_ENV.value, _PRESET.value)
        config_lib.apply_overrides(cfg, _OVERRIDES)
    except config_lib.ConfigError as e:
        fail(str(e))
    cfg.seed = _SEED.value
    if _NUM_SEEDS.value < 1:
        fail(f"--num_seeds must be >= 1, got {_NUM_SEEDS.value}")
    if not 0 <= _SEED.value <= _SEED.value + _NUM_SEEDS.value - 1 < 2**31:
        fail(
            f"seeds must be in [0, 2**31), got {_SEED.value}..{_SEED.value + _NUM_SEEDS.value - 1}"
        )
    return _checked(cfg)


def _load_config(path: str):
    try:
        with open(path) as f:
            return config_lib.from_json(f.read())
    except (OSError, ValueError, KeyError) as e:
        fail(f"--resume: {path} is unreadable or incompatible: {str(e).splitlines()[0]}")


def _differences(a, b, skip=()) -> list[str]:
    flat = lambda c: dict(config_lib._leaves(c))  # noqa: SLF001
    fa, fb = flat(a), flat(b)
    return [
        f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}"
        for k in sorted(set(fa) | set(fb))
        if k not in skip and fa.get(k) != fb.get(k)
    ]


def _resume_config(run_dir: str, requested):
    """The stored config of `run_dir`; errors if the flags given on this command differ, if
    config.json was edited since the run began, or if it is not a valid config."""
    path = os.path.join(run_dir, "config.json")
    stored = _load_config(path)
    original = os.path.join(run_dir, _ORIGINAL_CONFIG)
    if os.path.exists(original):
        diffs = _differences(stored, _load_config(original), skip=_RESUMABLE_CHANGES)
        if diffs:
            fail(
                f"--resume: {path} was edited after the run began ({'; '.join(diffs[:3])}): "
                "its checkpoints belong to the original; restore it or start a new run"
            )
    explicit = _OVERRIDES + [
        name
        for name, flag in (("env", _ENV), ("preset", _PRESET), ("seed", _SEED))
        if flags.FLAGS[flag.name].present
    ]
    diffs = []
    for field in dict.fromkeys(item.split("=", 1)[0] for item in explicit):
        *parents, leaf = field.split(".")
        node_s, node_r = stored, requested
        for k in parents:
            node_s, node_r = node_s[k], node_r[k]
        if field in _RESUMABLE_CHANGES:
            node_s[leaf] = node_r[leaf]
        elif node_s[leaf] != node_r[leaf]:
            diffs.append(f"{field}: run has {node_s[leaf]!r}, command asks {node_r[leaf]!r}")
    if diffs:
        fail(f"--resume: the command's config differs from {path}: " + "; ".join(diffs))
    return _checked(stored, f"--resume: {path}: ")


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _progress(m: dict, total_iters: int, total_steps: int, secs_per_step: float) -> str:
    """One line per iteration; the ETA is in real steps, the run's unit of length."""
    it, steps = int(m["iteration"]), int(m["n_timesteps"])
    eta = max(total_steps - steps, 0) * secs_per_step
    return (
        f"it {it:>3}/{total_iters} | steps {steps:>7,}/{total_steps:,} | "
        f"pre {m['PrePolicy/AverageReturn']:8.1f} (len {m['PrePolicy/AverageLength']:5.1f}) "
        f"post {m['PostPolicy/AverageReturn']:8.1f} | "
        f"model val {m['Model/ValidLoss']:.4f} ep {m['Model/EpochsMean']:.0f} | "
        f"fit {m['Time/Fit']:.1f}s meta {m['Time/Meta']:.1f}s "
        f"collect {m['Time/Collect']:.1f}s eval {m['Time/Eval']:.1f}s | "
        f"{m['Meta/ModelStepsPerSec'] / 1e6:.2f}M model steps/s | ETA {_fmt_time(eta)}"
    )


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _lock(run_dir: str) -> int:
    """Holds `run_dir/.lock` for this process's life: one process per run directory."""
    fd = os.open(os.path.join(run_dir, _LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(f"{run_dir} is in use by another process (its {_LOCK} is held)") from None
    return fd


def _is_empty(run_dir: str) -> bool:
    return not os.path.exists(run_dir) or not (set(os.listdir(run_dir)) - {_LOCK})


def _fault_hook(iteration: int):
    """on_phase callback implementing MBMPO_FAULT_INJECT (see above); a no-op without it."""
    if not _FAULT:
        return lambda name: None
    kind, it, phase = _FAULT.split(":")
    signum = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}.get(kind)
    if signum is None or int(it) != iteration:
        return lambda name: None

    def hook(name: str) -> None:
        if name == phase:
            os.kill(os.getpid(), signum)
            time.sleep(0.5)  # SIGTERM: let the signal thread take it before going on

    return hook


def _has_rows(metrics_path: str) -> bool:
    if not os.path.exists(metrics_path):
        return False
    with open(metrics_path) as f:
        return sum(1 for line in f if line.strip()) > 1


def _restore(trainer, ckpt, run_dir: str, key):
    """The state to continue from (None: start afresh, nothing to lose).

    Falls back to older checkpoints when the newest cannot be read, and checks
    metrics.csv against the state (`metrics.check_metrics`) so that no row is lost or
    doubled."""
    from mbmpo_jax.metrics import check_metrics

    metrics_path = os.path.join(run_dir, "metrics.csv")
    if not ckpt.all_steps():
        if _has_rows(metrics_path):
            raise RunDirError(
                f"{run_dir} has metrics rows but no complete checkpoint in checkpoints/: it "
                "cannot be continued; move it away to start afresh"
            )
        print(f"[{run_dir}] no complete checkpoint yet: starting from scratch", flush=True)
        return None
    # A checkpoint whose state is not the iteration its name says was copied in from
    # elsewhere (or renamed): skipped like a corrupt one.
    reject = lambda step, s: (
        None if int(s.iteration) == step else f"holds iteration {int(s.iteration)}, not {step}"
    )
    step, state, skipped = ckpt.restore_newest(trainer.empty_state(key), reject)
    for line in skipped:
        print(f"[{run_dir}] skipped: {line}", flush=True)
    note = check_metrics(metrics_path, int(state.iteration), int(state.n_timesteps))
    if note:
        print(f"[{run_dir}] warning: {note}", flush=True)
    print(
        f"[{run_dir}] resumed at iteration {int(state.iteration)} (checkpoint {step}), "
        f"{int(state.n_timesteps):,} real steps",
        flush=True,
    )
    return state


def run_one(cfg, run_dir: str, resume: bool) -> bool:
    """Runs (or continues) one seed in `run_dir`; returns False if stopped by a signal."""
    import jax

    from mbmpo_jax import checkpoint as ckpt_lib
    from mbmpo_jax import mbmpo
    from mbmpo_jax.metrics import MetricsWriter

    os.makedirs(run_dir, exist_ok=True)
    lock = _lock(run_dir)
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(cfg_path):
        resume = False  # a seed of a multi-seed run that had not begun
    text = config_lib.to_json(cfg)
    if not resume or open(cfg_path).read() != text:
        _write_atomic(cfg_path, text)
    if not resume or not os.path.exists(os.path.join(run_dir, _ORIGINAL_CONFIG)):
        _write_atomic(os.path.join(run_dir, _ORIGINAL_CONFIG), text)

    trainer = mbmpo.Trainer(cfg)
    ckpt = ckpt_lib.Checkpointer(run_dir, keep=cfg.checkpoint_keep)
    key = jax.random.PRNGKey(cfg.seed)
    start = time.perf_counter()
    state = _restore(trainer, ckpt, run_dir, key) if resume else None
    if state is None:
        writer = MetricsWriter(run_dir, purge_step=0)
        writer.truncate(-1)
        state = trainer.init(key)
        ckpt.save(0, state)
        print(
            f"[{run_dir}] warm-up: {int(state.n_timesteps):,} uniform-random real steps "
            f"({time.perf_counter() - start:.1f}s)",
            flush=True,
        )
        _fault_hook(0)("warmup")
    else:
        writer = MetricsWriter(run_dir, purge_step=int(state.n_timesteps) + 1)
        writer.truncate(int(state.iteration))
    total_iters = trainer.num_iterations
    total_steps = int(state.n_timesteps) + (total_iters - int(state.iteration)) * (
        trainer.steps_per_iteration
    )
    # Seconds per real step over the iterations after the first of this process (the first
    # includes compilation); the fit grows with the buffer, so the ETA errs short.
    timed: list[tuple[float, int]] = []
    while int(state.iteration) < total_iters and not _STOP["requested"]:
        t0 = time.perf_counter()
        steps0 = int(state.n_timesteps)
        state, metrics = trainer.iteration(state, _fault_hook(int(state.iteration) + 1))
        writer.write(metrics)
        _fault_hook(int(state.iteration))("write")
        ckpt.save(int(state.iteration), state)
        timed.append((time.perf_counter() - t0, int(state.n_timesteps) - steps0))
        recent = timed[1:] or timed
        secs_per_step = sum(t for t, _ in recent) / max(sum(n for _, n in recent), 1)
        if not _QUIET.value:
            print(_progress(metrics, total_iters, total_steps, secs_per_step), flush=True)
    writer.close()
    ckpt.close()
    os.close(lock)
    if int(state.iteration) < total_iters:
        print(
            f"stopped safely at iteration {int(state.iteration)} (checkpoint written). "
            f"Resume with: {_STOP['resume_cmd']}",
            file=sys.stderr,
            flush=True,
        )
        return False
    print(
        f"[{run_dir}] done: {total_iters} iterations, {int(state.n_timesteps):,} real steps "
        f"in {_fmt_time(time.perf_counter() - start)}",
        flush=True,
    )
    return True


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    cfg = _build_config()
    if _RESUME.value and not _LOGDIR.value:
        fail("--resume needs --logdir=RUN_DIR")
    if _LOGDIR.value:
        base = _LOGDIR.value
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = os.path.join("runs", f"{cfg.env}-{cfg.preset}-{stamp}")
    seeds = list(range(_SEED.value, _SEED.value + _NUM_SEEDS.value))
    run_dirs = [base] if len(seeds) == 1 else [os.path.join(base, f"seed{s}") for s in seeds]
    for d in dict.fromkeys([base, *run_dirs]):
        if os.path.exists(d) and not os.path.isdir(d):
            fail(f"--logdir: {d} exists and is not a directory")
    template = cfg
    if _RESUME.value:
        # Seeds of a multi-seed run that had not begun take the started seeds' config.
        started = [d for d in run_dirs if os.path.exists(os.path.join(d, "config.json"))]
        if not started:
            fail(f"--resume: {run_dirs[0]} has no config.json (not a run directory?)")
        template = _resume_config(started[0], cfg)
    cfgs = []
    for s, d in zip(seeds, run_dirs, strict=True):
        if _RESUME.value and os.path.exists(os.path.join(d, "config.json")):
            c = _resume_config(d, cfg)
        elif not _is_empty(d):
            fail(f"{d} exists and is not empty: pass --resume to continue it, or another --logdir")
        else:
            c = config_lib.from_json(config_lib.to_json(template))
        c.seed = s
        cfgs.append(c)
    resume_args = [f"--logdir={base}", "--resume"]
    if len(seeds) > 1:
        resume_args += [f"--seed={seeds[0]}", f"--num_seeds={len(seeds)}"]
    _STOP["resume_cmd"] = "python -m experiments.run " + " ".join(resume_args)

    import jax

    from mbmpo_jax.checkpoint import CheckpointError
    from mbmpo_jax.mbmpo import NonFiniteError
    from mbmpo_jax.metrics import MetricsError
    from mbmpo_jax.sharding import task_mesh

    dev = jax.devices()[0]
    c0 = cfgs[0]
    n_mesh = task_mesh(c0.meta.meta_batch_size).devices.size
    print(
        f"mbmpo_jax | device: {dev.platform.upper()} {dev.device_kind} x{jax.device_count()} "
        f"(tasks split over {n_mesh}) | jax {jax.__version__}"
    )
    print(
        f"config: env={c0.env} preset={c0.preset} "
        f"real steps={c0.initial_random_steps:,} warm-up + "
        f"{config_lib.iterations_of(c0)} x {config_lib.steps_per_iteration(c0):,} "
        f"models={c0.ensemble.num_models}x{tuple(c0.ensemble.hidden)} "
        f"tasks={c0.meta.meta_batch_size} rollouts/task={c0.meta.rollouts_per_task} "
        f"H={c0.meta.horizon} meta_steps={c0.meta.num_meta_steps} outer={c0.meta.outer} "
        f"inner_lr={c0.meta.inner_lr} seeds={seeds} -> {base}",
        flush=True,
    )
    for c, d in zip(cfgs, run_dirs, strict=True):
        _STOP["run_dir"] = d
        try:
            finished = run_one(c, d, _RESUME.value)
        except RunDirError as e:
            fail(str(e))
        except (MetricsError, config_lib.ConfigError) as e:
            fail(f"--resume: {e}")
        except (CheckpointError, NonFiniteError, OSError, ValueError) as e:
            fail(f"{type(e).__name__}: {str(e).splitlines()[0]}", code=1)
        if not finished:
            sys.exit(130)
        if _STOP["requested"] and d != run_dirs[-1]:
            print(
                f"stopped before the next seed. Resume with: {_STOP['resume_cmd']}",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(130)


if __name__ == "__main__":
    run_and_exit(main, flags_parser=_parse)
