"""Model-free baseline: brax's PPO on the MJX version of a task.

  python -m experiments.baseline --algo=ppo --env=halfcheetah [--num_timesteps=N] [--seed=0]
      [--logdir=runs/ppo-halfcheetah-s0] [--num_envs=N] [--num_evals=N] [--batch_size=N] ...

Trains `brax.training.agents.ppo.train.train` unchanged on `mbmpo_jax.envs.mjx_env.MjxEnv`
(the same task definition, reward and termination as MB-MPO's real environment), with
episodes of the task's horizon (200 steps). The run directory gets `config.json` and
`metrics.csv`: one row per evaluation with `n_timesteps` (real env steps the learner has
consumed, brax's count; evaluation episodes are not counted) and `PrePolicy/AverageReturn`
(mean undiscounted return of `num_eval_envs` evaluation episodes, stopped at the first
done), the columns `experiments.plot` overlays on MB-MPO's curves. brax runs one
evaluation before training when --num_evals > 1, so the first row is at step 0.

Hyperparameters default to brax's published PPO settings for these envs (discount and
rollout sizes kept, episode length is the task's); every one is a flag. They are sized
for a GPU (thousands of parallel envs); on a CPU pass e.g. --num_envs=32 --batch_size=32,
and --cpu_devices=N to spread the envs and each update over N cores (brax's data-parallel
PPO over N XLA host devices; the same algorithm with other random streams). With as many
devices as cores, keep each device's envs at most `max_envs_per_device` (brax's 2048
HalfCheetah envs: --cpu_devices=4 on 2 cores); the CLI refuses what would hang.
Bad input prints one line `error: ...` and exits with code 2; an existing non-empty run
directory is never overwritten. A failure during training (brax, JAX, the disk) prints one
line and exits with code 1, Ctrl-C exits with 130; either way the metrics writer is closed,
and a run that had written no evaluation yet leaves nothing behind (the same --logdir works
again), while one that had keeps its rows and says where.

brax 0.14.2's PPO calls `jax.device_put_replicated`, which jax 0.10 removed: on such a jax
`mbmpo_jax._compat` defines it again before training.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import math
import os
import shutil
import time

from absl import flags, logging

from experiments import _quiet  # noqa: F401  (keeps brax/JAX chatter off the console)
from experiments._cli import fail, own_flags_parser, run_and_exit
from mbmpo_jax.envs.tasks import TASKS

# A FlagValues of its own: the CLIs can be imported together (tests) without clashing flags.
_FLAGS = flags.FlagValues()


def _opt(kind, name, help_):
    define = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float}[kind]
    return define(name, None, help_ + " (default: per env)", flag_values=_FLAGS)


_ALGO = flags.DEFINE_string("algo", "ppo", "model-free algorithm: ppo", flag_values=_FLAGS)
_ENV = flags.DEFINE_string("env", "halfcheetah", "task name", flag_values=_FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "random seed", flag_values=_FLAGS)
_LOGDIR = flags.DEFINE_string(
    "logdir", None, "run directory (default runs/ALGO-ENV-sSEED-TIME)", flag_values=_FLAGS
)
_DETERMINISTIC_EVAL = flags.DEFINE_bool(
    "deterministic_eval", False, "evaluate the policy's mean action", flag_values=_FLAGS
)
_QUIET = flags.DEFINE_bool("quiet", False, "no per-evaluation progress lines", flag_values=_FLAGS)
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices",
    None,
    "on a CPU host, split it into this many XLA devices, over which brax's PPO runs "
    "data-parallel (its pmap): the same updates, other random streams, about 1.7x the "
    "steps/s of one device on 2 cores; must divide --num_envs, and is refused where jaxlib's "
    "batched LAPACK would hang it (as many devices as cores and more envs per device than "
    "max_envs_per_device: 824 for HalfCheetah and Walker2d, 219 for Ant) (default: JAX's, one)",
    flag_values=_FLAGS,
)
_OVERRIDES = {
    "num_timesteps": _opt("int", "num_timesteps", "total training env steps"),
    "num_envs": _opt("int", "num_envs", "parallel training envs"),
    "num_evals": _opt("int", "num_evals", "evaluations (rows of metrics.csv)"),
    "num_eval_envs": _opt("int", "num_eval_envs", "episodes per evaluation"),
    "batch_size": _opt("int", "batch_size", "minibatch size (in unrolls)"),
    "num_minibatches": _opt("int", "num_minibatches", "minibatches per update epoch"),
    "unroll_length": _opt("int", "unroll_length", "steps per unroll"),
    "num_updates_per_batch": _opt("int", "num_updates_per_batch", "epochs per batch"),
    "learning_rate": _opt("float", "learning_rate", "Adam learning rate"),
    "entropy_cost": _opt("float", "entropy_cost", "entropy bonus coefficient"),
    "discounting": _opt("float", "discounting", "discount factor"),
    "reward_scaling": _opt("float", "reward_scaling", "reward multiplier in the loss"),
}

# brax's PPO settings for its versions of these envs (brax training colab); swimmer and
# hopper (not given for PPO there) follow halfcheetah and walker2d, with the long-horizon
# discount swimmer needs.
_COMMON = dict(num_eval_envs=128, normalize_observations=True, learning_rate=3e-4)
PPO_DEFAULTS: dict[str, dict] = {
    "halfcheetah": dict(
        num_timesteps=50_000_000, num_evals=20, reward_scaling=1.0, unroll_length=20,
        num_minibatches=32, num_updates_per_batch=8, discounting=0.95, entropy_cost=1e-3,
        num_envs=2048, batch_size=512,
    ),
    "ant": dict(
        num_timesteps=50_000_000, num_evals=10, reward_scaling=10.0, unroll_length=5,
        num_minibatches=32, num_updates_per_batch=4, discounting=0.97, entropy_cost=1e-2,
        num_envs=4096, batch_size=2048,
    ),
    "walker2d": dict(
        num_timesteps=7_864_320, num_evals=20, reward_scaling=5.0, unroll_length=10,
        num_minibatches=32, num_updates_per_batch=8, discounting=0.97, entropy_cost=1e-2,
        num_envs=128, batch_size=128, learning_rate=6e-4,
    ),
    "swimmer": dict(
        num_timesteps=50_000_000, num_evals=20, reward_scaling=1.0, unroll_length=20,
        num_minibatches=32, num_updates_per_batch=8, discounting=0.995, entropy_cost=1e-3,
        num_envs=2048, batch_size=512,
    ),
    "inverted_pendulum": dict(
        num_timesteps=2_000_000, num_evals=20, reward_scaling=10.0, unroll_length=5,
        num_minibatches=32, num_updates_per_batch=4, discounting=0.97, entropy_cost=1e-2,
        num_envs=2048, batch_size=1024,
    ),
}  # fmt: skip
# brax publishes no PPO settings for hopper: it takes walker2d's (same body plan).
PPO_DEFAULTS["hopper"] = dict(PPO_DEFAULTS["walker2d"])
_POSITIVE = (
    "num_timesteps", "num_envs", "num_evals", "num_eval_envs", "batch_size",
    "num_minibatches", "unroll_length", "num_updates_per_batch", "learning_rate",
    "reward_scaling",
)  # fmt: skip


def ppo_config(env: str, overrides: dict) -> dict:
    """The PPO keyword arguments for `env`: defaults, then the non-None overrides.

    Raises:
      ValueError: unknown env or a bad value (one-line message).
    """
    if env not in PPO_DEFAULTS:
        raise ValueError(f"unknown env {env!r}; valid envs: {', '.join(TASKS)}")
    cfg = {**_COMMON, **PPO_DEFAULTS[env]}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    for k in _POSITIVE:
        if not (math.isfinite(cfg[k]) and cfg[k] > 0):
            raise ValueError(f"--{k} must be positive, got {cfg[k]}")
    if not (math.isfinite(cfg["entropy_cost"]) and cfg["entropy_cost"] >= 0):
        raise ValueError(f"--entropy_cost must be >= 0, got {cfg['entropy_cost']}")
    if not 0 < cfg["discounting"] <= 1:
        raise ValueError(f"--discounting must be in (0, 1], got {cfg['discounting']}")
    if (cfg["batch_size"] * cfg["num_minibatches"]) % cfg["num_envs"]:
        raise ValueError(
            f"--batch_size * --num_minibatches ({cfg['batch_size']} * "
            f"{cfg['num_minibatches']}) must be a multiple of --num_envs ({cfg['num_envs']})"
        )
    return cfg


def ppo_schedule(cfg: dict) -> tuple[int, int, int]:
    """How brax's PPO splits `cfg["num_timesteps"]`, as its `train` computes it: returns
    `(total, evals_after_init, steps_per_update)`. Each of the `num_evals - 1` training
    epochs runs a whole number (at least one) of updates of `batch_size * unroll_length *
    num_minibatches` env steps, so brax runs `total >= num_timesteps` steps, more when the
    evaluations are too many for the budget."""
    per_update = cfg["batch_size"] * cfg["unroll_length"] * cfg["num_minibatches"]
    evals = max(cfg["num_evals"] - 1, 1)
    updates_per_epoch = max(math.ceil(cfg["num_timesteps"] / (evals * per_update)), 1)
    return evals * updates_per_epoch * per_update, evals, per_update


def closest_schedule(cfg: dict) -> tuple[int, int]:
    """The fewest steps brax can run for `cfg["num_timesteps"]` (whole updates: the budget
    rounded up to one) and the `num_evals` nearest the asked one that runs exactly that."""
    _, evals, per_update = ppo_schedule(cfg)
    updates = max(math.ceil(cfg["num_timesteps"] / per_update), 1)
    ok = [m for m in range(1, updates + 1) if m * math.ceil(updates / m) == updates]
    m = min(ok, key=lambda m: (abs(m - evals), m))
    return updates * per_update, m + 1


# jaxlib's batched LAPACK kernels (MJX factors each env's dense nv x nv mass matrix, and
# its Newton solver a Hessian of that size, with `cho_factor`) split a batch over the host's
# intra-op thread pool, in chunks of at least ceil(200,000 / cost) matrices (`cost`: their
# FLOP estimate, nv**3 // 3 for a Cholesky), and wait for the pieces on a pool thread. That
# pool has one thread per schedulable core and runs the devices' programs too: when every
# thread holds a device program waiting so, none is left for the pieces and the process
# hangs at 0% CPU.
_LAPACK_MIN_WORK = 200_000


def max_envs_per_device(nv: int) -> int:
    """The most envs one XLA host device can step without jaxlib splitting its batched
    Cholesky of nv x nv matrices over the thread pool: a batch of at most
    `ceil(200,000 / (nv**3 // 3))` is one chunk (jaxlib's `GetLapackBatchChunkSize`)."""
    cost = max(nv**3 // 3, 1)
    return -(-_LAPACK_MIN_WORK // cost)


def cpu_devices_hang(num_envs: int, devices: int, nv: int, threads: int) -> str | None:
    """Why brax's PPO over `devices` XLA host devices on `threads` schedulable cores would
    hang (see above), with what to pass instead; None when it cannot. It can only when the
    devices are at least as many as the pool's threads and each steps a batch large enough
    to be split."""
    per_device = num_envs // devices
    limit = max_envs_per_device(nv)
    if devices < 2 or devices < threads or per_device <= limit:
        return None
    ok = [
        d for d in range(devices + 1, num_envs + 1) if not num_envs % d and num_envs // d <= limit
    ]
    instead = f"--cpu_devices={ok[0]} ({num_envs // ok[0]} each)" if ok else "fewer --num_envs"
    return (
        f"--cpu_devices={devices} on {threads} cores would hang: {per_device} envs per device "
        f"make jaxlib split each device's batched Cholesky (nv={nv}) over the thread pool "
        f"that the {devices} devices' programs already hold; at most {limit} envs per "
        f"device: pass {instead}, or a --num_envs up to {limit * devices}"
    )


def train(env_name: str, cfg: dict, seed: int, writer, deterministic_eval: bool, quiet):
    """Runs brax's PPO, writing one row per evaluation to `writer`. Returns the last row."""
    import jax

    from mbmpo_jax import _compat
    from mbmpo_jax.envs.mjx_env import MjxEnv

    # brax imports mujoco.mjx, which prints "Failed to import warp" (an optional GPU
    # backend) the first time; keep it off the console.
    with contextlib.redirect_stdout(io.StringIO()):
        from brax.training.agents.ppo import train as ppo

    env = MjxEnv(env_name)
    if cfg["num_envs"] % jax.local_device_count():
        raise ValueError(
            f"--num_envs ({cfg['num_envs']}) must be a multiple of the "
            f"{jax.local_device_count()} local devices"
        )
    _compat.install_device_put_replicated()
    run_dir = os.path.dirname(writer.path)
    start = time.time()
    last: dict[str, float] = {}

    def progress(step, metrics):
        elapsed = time.time() - start
        row = {
            "iteration": float(len(writer.rows)),
            "n_timesteps": float(step),
            "PrePolicy/AverageReturn": float(metrics["eval/episode_reward"]),
            "PrePolicy/StdReturn": float(metrics["eval/episode_reward_std"]),
            "PrePolicy/AverageEpisodeLength": float(metrics["eval/avg_episode_length"]),
            "Time/Elapsed": elapsed,
        }
        if "training/sps" in metrics:
            row["Train/SPS"] = float(metrics["training/sps"])
        writer.write(row)
        last.update(row)
        if not quiet:
            print(
                f"[{run_dir}] steps {int(step):>11,} | return "
                f"{row['PrePolicy/AverageReturn']:9.2f} +- {row['PrePolicy/StdReturn']:7.2f} | "
                f"ep len {row['PrePolicy/AverageEpisodeLength']:5.1f} | elapsed {elapsed:7.1f}s",
                flush=True,
            )

    ppo.train(
        environment=env,
        episode_length=env.task.horizon,
        seed=seed,
        deterministic_eval=deterministic_eval,
        progress_fn=progress,
        **cfg,
    )
    return last


# What a run writes into its (empty or new) run directory.
_OUTPUTS = ("config.json", "metrics.csv", "metrics.csv.tmp", "tb")


def _close(writer) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()


def _after_failure(run_dir: str, created: bool) -> str:
    """Cleans up after a failed run; returns what to append to the error line.

    No evaluation in metrics.csv: removes this run's files (and the directory if this run
    made it), so the same --logdir can be used again. Otherwise keeps the rows, names them.
    """
    from mbmpo_jax.metrics import read_metrics

    try:  # the file, not the writer's memory: the failure may have been that write
        rows = len(read_metrics(os.path.join(run_dir, "metrics.csv")))
    except (OSError, ValueError):
        rows = 0
    if rows:
        evals = f"{rows} evaluation{'s' * (rows != 1)}"
        return f" (metrics of {evals} kept in {run_dir}; remove it or pass another --logdir)"
    for name in _OUTPUTS:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    if created:
        with contextlib.suppress(OSError):
            os.rmdir(run_dir)
    return ""


def main(argv):
    # brax logs every evaluation's metrics at INFO; our progress line replaces them.
    logging.set_verbosity(logging.WARNING)
    extra = argv[1:]
    if extra:
        fail(f"unexpected argument {extra[0]!r}")
    if _ALGO.value != "ppo":
        fail(f"unknown algo {_ALGO.value!r}; valid algos: ppo")
    try:
        cfg = ppo_config(_ENV.value, {k: f.value for k, f in _OVERRIDES.items()})
    except ValueError as e:
        fail(str(e))
    cpu_devices = _CPU_DEVICES.value
    if cpu_devices is not None:
        if cpu_devices < 1:
            fail(f"--cpu_devices must be positive, got {cpu_devices}")
        if cfg["num_envs"] % cpu_devices:
            fail(
                f"--num_envs ({cfg['num_envs']}) must be a multiple of "
                f"--cpu_devices ({cpu_devices})"
            )
        hang = cpu_devices_hang(
            cfg["num_envs"],
            cpu_devices,
            TASKS[_ENV.value].model.nv,
            len(os.sched_getaffinity(0)),
        )
        if hang:
            fail(hang)
    env_name, seed = _ENV.value, _SEED.value
    if _LOGDIR.value:
        run_dir = _LOGDIR.value
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = os.path.join("runs", f"{_ALGO.value}-{env_name}-s{seed}-{stamp}")
    if os.path.exists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        fail(f"{run_dir} exists and is not empty: pass another --logdir")

    import jax

    if cpu_devices is not None:  # before the first JAX operation creates the CPU backend
        jax.config.update("jax_num_cpu_devices", cpu_devices)
    task = TASKS[env_name]
    config = {
        "algo": _ALGO.value,
        "env": env_name,
        "seed": seed,
        "backend": "mjx",
        "horizon": task.horizon,
        "deterministic_eval": _DETERMINISTIC_EVAL.value,
        "devices": jax.local_device_count(),  # data-parallel over these (not configuration)
        **cfg,
    }
    created = not os.path.exists(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
    except OSError as e:
        _after_failure(run_dir, created)
        fail(f"could not write {run_dir}: {e.strerror or e}")
    dev = jax.devices()[0]
    total, evals, per_update = ppo_schedule(cfg)
    if total > 1.05 * cfg["num_timesteps"]:
        best, fits = closest_schedule(cfg)
        print(
            f"note: brax runs {total:,} steps, not {cfg['num_timesteps']:,}: {evals} "
            f"evaluations after the first, each after whole updates of {per_update:,} steps; "
            f"--num_evals={fits} runs {best:,}",
            flush=True,
        )
    devices = f" x{config['devices']}" if config["devices"] > 1 else ""
    print(
        f"baseline | {_ALGO.value} on mjx {env_name} (H={task.horizon}) | device: "
        f"{dev.platform.upper()} {dev.device_kind}{devices} | {cfg['num_timesteps']:,} steps, "
        f"{cfg['num_envs']} envs, {cfg['num_evals']} evals | seed {seed} -> {run_dir}",
        flush=True,
    )
    from mbmpo_jax.metrics import MetricsWriter

    writer = None
    try:
        writer = MetricsWriter(run_dir)
        last = train(env_name, cfg, seed, writer, _DETERMINISTIC_EVAL.value, _QUIET.value)
    except KeyboardInterrupt:
        _close(writer)
        fail(f"interrupted{_after_failure(run_dir, created)}", code=130)
    except Exception as e:  # brax and XLA raise many kinds; each is one line here
        _close(writer)
        first = (str(e).strip().splitlines() or [""])[0]
        what = f"{type(e).__name__}: {first}" if first else type(e).__name__
        fail(what + _after_failure(run_dir, created), code=1)
    writer.close()
    if last:
        print(
            f"done: return {last['PrePolicy/AverageReturn']:.2f} after "
            f"{int(last['n_timesteps']):,} steps in {last['Time/Elapsed']:.0f}s; "
            f"wrote {os.path.join(run_dir, 'metrics.csv')}",
            flush=True,
        )


if __name__ == "__main__":
    run_and_exit(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
