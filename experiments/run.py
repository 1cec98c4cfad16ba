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

import datetime
import os
import signal
import sys
import time

from absl import app, flags

from experiments import _quiet  # noqa: F401  (keeps brax/JAX chatter off the console)
from experiments._cli import fail
from mbmpo_jax import config as config_lib

_ENV = flags.DEFINE_string("env", "halfcheetah", "task name")
_PRESET = flags.DEFINE_string("preset", "paper", "paper | cpu | smoke")
_SEED = flags.DEFINE_integer("seed", 0, "first seed")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 1, "seeds run one after another, seed..seed+N-1")
_LOGDIR = flags.DEFINE_string("logdir", None, "run directory (default runs/ENV-PRESET-TIME)")
_RESUME = flags.DEFINE_bool("resume", False, "continue the run in --logdir")
_QUIET = flags.DEFINE_bool("quiet", False, "no per-iteration progress lines")

_OVERRIDES: list[str] = []
# Fields that do not shape the run's state: a resumed run may change them (e.g. extend it).
_RESUMABLE_CHANGES = ("num_iterations", "total_steps", "checkpoint_keep")
# Fault injection for the reliability tests: MBMPO_FAULT_INJECT=sigkill:ITERATION:PHASE kills
# this process with SIGKILL right after PHASE (fit | meta | collect | eval) of ITERATION.
_FAULT = os.environ.get("MBMPO_FAULT_INJECT", "")
_STOP = {"requested": False}


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
    except flags.Error as e:
        fail(str(e).splitlines()[0])
    return []


def _build_config():
    try:
        cfg = config_lib.get_config(_ENV.value, _PRESET.value)
        config_lib.apply_overrides(cfg, _OVERRIDES)
        cfg.seed = _SEED.value
        config_lib.validate(cfg)
    except config_lib.ConfigError as e:
        fail(str(e))
    if _NUM_SEEDS.value < 1:
        fail(f"--num_seeds must be >= 1, got {_NUM_SEEDS.value}")
    return cfg


def _resume_config(run_dir: str, requested):
    """The stored config of `run_dir`; errors if the flags given on this command differ."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        fail(f"--resume: {run_dir} has no config.json (not a run directory?)")
    try:
        with open(path) as f:
            stored = config_lib.from_json(f.read())
    except (ValueError, KeyError) as e:
        fail(f"--resume: {path} is unreadable or incompatible: {e}")
    explicit = _OVERRIDES + [
        name
        for name, flag in (("env", _ENV), ("preset", _PRESET), ("seed", _SEED))
        if flags.FLAGS[flag.name].present
    ]
    diffs = []
    for field in dict.fromkeys(item.split("=", 1)[0] for item in explicit):
        if field in _RESUMABLE_CHANGES:
            stored[field] = requested[field]
            continue
        node_s, node_r = stored, requested
        for k in field.split("."):
            node_s, node_r = node_s[k], node_r[k]
        if node_s != node_r:
            diffs.append(f"{field}: run has {node_s!r}, command asks {node_r!r}")
    if diffs:
        fail(f"--resume: the command's config differs from {path}: " + "; ".join(diffs))
    return stored


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


def _on_signal(signum, frame):
    del frame
    if _STOP["requested"]:  # a second Ctrl-C stops at once
        raise KeyboardInterrupt
    _STOP["requested"] = True
    name = signal.Signals(signum).name
    print(f"\n{name}: stopping after this iteration's checkpoint ...", file=sys.stderr, flush=True)


def _json_differs(path: str, cfg) -> bool:
    with open(path) as f:
        return f.read() != config_lib.to_json(cfg)


def _fault_hook(iteration: int):
    """on_phase callback implementing MBMPO_FAULT_INJECT (see above)."""
    if not _FAULT:
        return None
    kind, it, phase = _FAULT.split(":")
    if kind != "sigkill" or int(it) != iteration:
        return None

    def hook(name: str) -> None:
        if name == phase:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def run_one(cfg, run_dir: str, resume: bool) -> None:
    import jax

    from mbmpo_jax import checkpoint as ckpt_lib
    from mbmpo_jax import mbmpo
    from mbmpo_jax.metrics import MetricsWriter

    os.makedirs(run_dir, exist_ok=True)
    cfg_path = os.path.join(run_dir, "config.json")
    if not resume or not os.path.exists(cfg_path) or _json_differs(cfg_path, cfg):
        tmp = cfg_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(config_lib.to_json(cfg))
        os.replace(tmp, cfg_path)

    trainer = mbmpo.Trainer(cfg)
    ckpt = ckpt_lib.Checkpointer(run_dir, keep=cfg.checkpoint_keep)
    writer = MetricsWriter(run_dir)
    key = jax.random.PRNGKey(cfg.seed)
    step = ckpt.latest_step() if resume else None
    start = time.perf_counter()
    if step is not None:
        state = ckpt.restore(step, trainer.empty_state(key))
        writer.truncate(int(state.iteration))
        print(
            f"[{run_dir}] resumed at iteration {int(state.iteration)}, "
            f"{int(state.n_timesteps):,} real steps",
            flush=True,
        )
    else:
        if resume:
            print(f"[{run_dir}] no complete checkpoint yet: starting from scratch", flush=True)
        writer.truncate(-1)
        state = trainer.init(key)
        ckpt.save(0, state)
        print(
            f"[{run_dir}] warm-up: {int(state.n_timesteps):,} uniform-random real steps "
            f"({time.perf_counter() - start:.1f}s)",
            flush=True,
        )
    total_iters = trainer.num_iterations
    total_steps = int(state.n_timesteps) + (total_iters - int(state.iteration)) * (
        trainer.steps_per_iteration
    )
    # Seconds per real step over the iterations after the first of this process (the first
    # includes compilation); the fit grows with the buffer, so the ETA is a lower bound.
    timed: list[tuple[float, int]] = []
    while int(state.iteration) < total_iters:
        t0 = time.perf_counter()
        steps0 = int(state.n_timesteps)
        state, metrics = trainer.iteration(state, _fault_hook(int(state.iteration) + 1))
        writer.write(metrics)
        ckpt.save(int(state.iteration), state)
        timed.append((time.perf_counter() - t0, int(state.n_timesteps) - steps0))
        recent = timed[1:] or timed
        secs_per_step = sum(t for t, _ in recent) / max(sum(n for _, n in recent), 1)
        if not _QUIET.value:
            print(_progress(metrics, total_iters, total_steps, secs_per_step), flush=True)
        if _STOP["requested"]:
            writer.close()
            ckpt.close()
            print(
                f"stopped safely at iteration {int(state.iteration)} (checkpoint written). "
                f"Resume with: python -m experiments.run --logdir={run_dir} --resume",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(130)
    writer.close()
    ckpt.close()
    print(
        f"[{run_dir}] done: {total_iters} iterations, {int(state.n_timesteps):,} real steps "
        f"in {_fmt_time(time.perf_counter() - start)}"
    )


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
    if _RESUME.value:
        cfgs = [_resume_config(d, cfg) for d in run_dirs]
        if len(seeds) > 1:
            for c, s in zip(cfgs, seeds, strict=True):
                c.seed = s
    else:
        for d in run_dirs:
            if os.path.exists(d) and os.listdir(d):
                fail(
                    f"{d} exists and is not empty: "
                    "pass --resume to continue it, or another --logdir"
                )
        cfgs = []
        for s in seeds:
            c = config_lib.from_json(config_lib.to_json(cfg))
            c.seed = s
            cfgs.append(c)

    import jax

    from mbmpo_jax.checkpoint import CheckpointError
    from mbmpo_jax.mbmpo import NonFiniteError
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
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    for c, d in zip(cfgs, run_dirs, strict=True):
        try:
            run_one(c, d, _RESUME.value)
        except (CheckpointError, NonFiniteError, OSError, ValueError) as e:
            fail(f"{type(e).__name__}: {str(e).splitlines()[0]}", code=1)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
