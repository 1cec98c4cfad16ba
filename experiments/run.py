"""The MB-MPO run: `python -m experiments.run --env=ant`.

Flags:
  --env, --preset (paper | cpu | smoke), --seed, --num_seeds (--novmap_seeds: one after
  another instead of one program), --logdir, --resume,
  --config.FIELD=VALUE for any config field (e.g. --config.meta.inner_lr=0,
  --config.ensemble.hidden=256,256). Bad values: one-line error, exit code 2.
  Several processes (hosts) running one run: the same command on each with
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I and a shared --logdir.

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
_STOP = {
    "requested": False,
    "run_dir": None,
    "resume_cmd": "",
    "faulted": False,
    "progress": True,  # False in the processes other than 0 of a multi-process run
}


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
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from experiments import _quiet  # noqa: E402, F401  (keeps brax/JAX chatter off the console)
from experiments._cli import eta_seconds, fail, run_and_exit  # noqa: E402
from mbmpo_jax import config as config_lib  # noqa: E402
from mbmpo_jax import memory, rundir  # noqa: E402

_ENV = flags.DEFINE_string("env", "halfcheetah", "task name")
_PRESET = flags.DEFINE_string("preset", "paper", "paper | cpu | smoke")
_SEED = flags.DEFINE_integer("seed", 0, "first seed")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 1, "seeds seed..seed+N-1, one run directory each")
_VMAP_SEEDS = flags.DEFINE_bool(
    "vmap_seeds",
    True,
    "with --num_seeds > 1: all seeds as one program (their fits and meta phases vmapped); "
    "--novmap_seeds runs them one after another",
)
_LOGDIR = flags.DEFINE_string("logdir", None, "run directory (default runs/ENV-PRESET-TIME)")
_RESUME = flags.DEFINE_bool("resume", False, "continue the run in --logdir")
_QUIET = flags.DEFINE_bool("quiet", False, "no per-iteration progress lines")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "multi-process run: HOST:PORT of process 0 (with --num_processes and --process_id; "
    "jax.distributed.initialize, WORKSPACE.md 'Multi-device and multi-host')",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-process run: processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-process run: this process's id")

_OVERRIDES: list[str] = []
# Fault injection for the reliability tests: MBMPO_FAULT_INJECT=KIND:ITERATION:PHASE sends
# this process SIGKILL (KIND sigkill) or SIGTERM (sigterm) right after PHASE (fit | meta |
# collect | eval | write: its metrics row written, its checkpoint not yet) of ITERATION, or
# after the warm-up's checkpoint (0:warmup).
_FAULT = os.environ.get("MBMPO_FAULT_INJECT", "")


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


def _checked(cfg):
    """`validate` and `check_memory`, as one-line errors (exit 2)."""
    try:
        config_lib.validate(cfg)
        memory.check_memory(cfg)
    except config_lib.ConfigError as e:
        fail(str(e))
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


def _resume_config(run_dir: str, requested):
    """The stored config of `run_dir` (`rundir.resume_config`), errors as one line + exit 2."""
    explicit = [item.split("=", 1)[0] for item in _OVERRIDES] + [
        name
        for name, flag in (("env", _ENV), ("preset", _PRESET), ("seed", _SEED))
        if flags.FLAGS[flag.name].present
    ]
    try:
        return rundir.resume_config(run_dir, requested, explicit)
    except rundir.RunDirError as e:
        fail(f"--resume: {e}")


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _progress(m: dict, total_iters: int, total_steps: int, eta: float) -> str:
    """One line per iteration: real steps (the run's unit of length), returns, phases, ETA."""
    it, steps = int(m["iteration"]), int(m["n_timesteps"])
    return (
        f"it {it:>3}/{total_iters} | steps {steps:>7,}/{total_steps:,} | "
        f"pre {m['PrePolicy/AverageReturn']:8.1f} (len {m['PrePolicy/AverageLength']:5.1f}) "
        f"post {m['PostPolicy/AverageReturn']:8.1f} | "
        f"model val {m['Model/ValidLoss']:.4f} ep {m['Model/EpochsMean']:.0f} | "
        f"fit {m['Time/Fit']:.1f}s meta {m['Time/Meta']:.1f}s "
        f"collect {m['Time/Collect']:.1f}s eval {m['Time/Eval']:.1f}s | "
        f"{m['Meta/ModelStepsPerSec'] / 1e6:.2f}M model steps/s | ETA {_fmt_time(eta)}"
    )


def _fault_hook(iteration: int, phase: str) -> None:
    """`rundir.train`'s on_phase implementing MBMPO_FAULT_INJECT (see above)."""
    if not _FAULT:
        return
    kind, it, at = _FAULT.split(":")
    signum = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}.get(kind)
    if signum is not None and int(it) == iteration and phase == at and not _STOP["faulted"]:
        _STOP["faulted"] = True  # once per process (seeds repeat the phases)
        os.kill(os.getpid(), signum)
        time.sleep(0.5)  # SIGTERM: let the signal thread take it before going on


class _Progress:
    """`rundir.train`'s on_iteration: one progress line per iteration, ETA in real steps.

    The ETA (`_cli.eta_seconds`) extrapolates the fit's time in proportion to the buffer and
    the other phases' as constant, from this process's iterations after its first."""

    def __init__(self, cfg, prefix: str = ""):
        self.prefix = prefix
        self.total_iters = config_lib.iterations_of(cfg)
        self.per_iteration = config_lib.steps_per_iteration(cfg)
        self.history: list[tuple[float, float, int]] = []
        self.last = time.perf_counter()

    def __call__(self, state, metrics) -> None:
        now = time.perf_counter()
        steps, it = int(state.n_timesteps), int(state.iteration)
        capacity = int(state.buffer.obs.shape[0])
        fitted = min(max(steps - self.per_iteration, 1), capacity)  # before this collection
        self.history.append((now - self.last, float(metrics["Time/Fit"]), fitted))
        self.last = now
        remaining = self.total_iters - it
        total_steps = steps + remaining * self.per_iteration
        eta = eta_seconds(
            self.history, min(steps, capacity), self.per_iteration, remaining, capacity
        )
        if not _QUIET.value and _STOP["progress"]:
            line = _progress(metrics, self.total_iters, total_steps, eta)
            print(self.prefix + line, flush=True)


def _should_stop() -> bool:
    """Whether to stop after this iteration: a signal to this process or, in a
    multi-process run, to any of them (all must stop at the same iteration, or the
    others would wait in the next collective for ever)."""
    import jax

    if jax.process_count() == 1:
        return bool(_STOP["requested"])
    from jax.experimental import multihost_utils

    flags_all = multihost_utils.process_allgather(np.array([_STOP["requested"]], np.int32))
    return bool(np.any(flags_all))


class ProcessesDivergedError(ValueError):
    """The processes of a multi-process run hold different states (see `_check_agree`)."""


def _fingerprint(state) -> np.ndarray:
    """[4] float64: the sums of the models' parameters, the policy's parameters and the
    buffer's observations, and the real steps: what each process computes on its own."""
    import jax

    def total(tree) -> float:
        return sum(float(np.sum(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree))

    return np.array(
        [
            total(state.ensemble.params),
            total(state.meta.params),
            total(state.buffer.obs),
            float(state.n_timesteps),
        ]
    )


def _check_agree(state, gather=None) -> None:
    """In a multi-process run, fails if the processes' states differ after an iteration.

    Every process fits its own copy of the ensemble and collects its own copy of the real
    data (the same key: the same data); the meta phase then takes them as replicated
    inputs, which XLA does not check. Hosts of different kinds can round differently (the
    bfloat16 fit, MuJoCo's contacts), and the run would silently mix their states: this
    makes that one error. `gather`: the all-gather over processes (tests).
    """
    import jax

    if gather is None:
        if jax.process_count() == 1:
            return
        from jax.experimental import multihost_utils

        gather = multihost_utils.process_allgather
    prints = np.asarray(gather(_fingerprint(state)))
    if not np.array_equal(prints, np.broadcast_to(prints[0], prints.shape)):
        raise ProcessesDivergedError(
            f"the processes' states differ after iteration {int(state.iteration)} (sums of "
            "models, policy, buffer, steps per process: "
            f"{np.array2string(prints, precision=6)}); run every process on the same kind "
            "of host and software"
        )


def _agreed(on_iteration):
    """`on_iteration` after `_check_agree` (a no-op in one process)."""

    def call(state, metrics) -> None:
        _check_agree(state)
        on_iteration(state, metrics)

    return call


def run_one(cfg, run_dir: str, resume: bool) -> bool:
    """Runs (or continues) one seed in `run_dir`; returns False if stopped by a signal."""
    start = time.perf_counter()
    state, finished = rundir.train(
        cfg,
        run_dir,
        resume=resume,
        should_stop=_should_stop,
        on_iteration=_agreed(_Progress(cfg)),
        on_phase=_fault_hook,
    )
    if not finished:
        print(
            f"stopped safely at iteration {int(state.iteration)} (checkpoint written). "
            f"Resume with: {_STOP['resume_cmd']}",
            file=sys.stderr,
            flush=True,
        )
        return False
    print(
        f"[{run_dir}] done: {int(state.iteration)} iterations, {int(state.n_timesteps):,} "
        f"real steps in {_fmt_time(time.perf_counter() - start)}",
        flush=True,
    )
    return True


def run_seeds(cfgs, run_dirs: list[str], resume: bool) -> bool:
    """Runs (or continues) the seeds as one program; returns False if stopped by a signal."""
    start = time.perf_counter()
    progress = [_Progress(c, prefix=f"[seed {c.seed}] ") for c in cfgs]
    states, finished = rundir.train_seeds(
        cfgs,
        run_dirs,
        resume=resume,
        should_stop=_should_stop,
        on_iteration=lambda s, state, metrics: _agreed(progress[s])(state, metrics),
        on_phase=_fault_hook,
    )
    if not finished:
        its = ", ".join(str(int(st.iteration)) for st in states)
        print(
            f"stopped safely at iterations {its} (checkpoints written). "
            f"Resume with: {_STOP['resume_cmd']}",
            file=sys.stderr,
            flush=True,
        )
        return False
    for st, d in zip(states, run_dirs, strict=True):
        print(
            f"[{d}] done: {int(st.iteration)} iterations, {int(st.n_timesteps):,} real steps",
            flush=True,
        )
    print(f"{len(cfgs)} seeds in {_fmt_time(time.perf_counter() - start)}", flush=True)
    return True


# The measured bfloat16 / float32 matmul speed below which the run notes that bfloat16 is
# the slower precision on this CPU (a margin for a check of a fraction of a second).
_BF16_SLOWER_BELOW = 0.9


def _recency_note(ens) -> str:
    """The config line's words for the fit's recency weight (empty when it is off)."""
    if ens.recent_rows == 0 or ens.recent_weight == 1.0:
        return ""
    return f"recent_weight={ens.recent_weight:g} on the newest {ens.recent_rows:,} rows "


def _devices_note(platform: str, n_mesh: int, processes: int = 1) -> str:
    """A note when the tasks are split over several CPU devices ('' otherwise).

    Several CPU devices in one process are forced host devices (`XLA_FLAGS=
    --xla_force_host_platform_device_count=N`); in several processes, a multi-process
    run (`--coordinator_address` ...). Whole runs on forced devices used to hang (a batched
    LAPACK QR in the baseline fit waiting on the thread pool that the devices' programs
    held); the meta step now fits without LAPACK there (WORKSPACE.md, "Multi-device and
    multi-host"), but the results in WORKSPACE.md were all made with one CPU device.
    """
    if platform != "cpu" or n_mesh <= 1:
        return ""
    where = f"{processes} processes" if processes > 1 else "forced host devices"
    return (
        f"note: the tasks are split over {n_mesh} CPU devices ({where}); "
        "the results in WORKSPACE.md were made with one CPU device per run"
    )


def _precision_note(
    platform: str,
    compute_dtype: str,
    cpuinfo: str | None = None,
    speedup: float | None = None,
) -> str:
    """A note when bfloat16 models run slower than float32 would on this CPU ('' otherwise).

    CPUs with AMX are not checked (bfloat16 measured 2-4x faster on them); elsewhere the
    speed-up is measured (`hostinfo.bf16_matmul_speedup`) unless ``speedup`` is given.
    """
    from mbmpo_jax import hostinfo

    if platform != "cpu" or compute_dtype != "bfloat16" or hostinfo.bf16_units(cpuinfo):
        return ""
    if speedup is None:
        speedup = hostinfo.bf16_matmul_speedup()
    if speedup >= _BF16_SLOWER_BELOW:
        return ""
    return (
        f"note: on this CPU ({hostinfo.cpu_model(cpuinfo)}, no {' or '.join(hostinfo.BF16_FLAGS)}) "
        f"a bfloat16 matmul ran at {speedup:.2f}x float32's speed in a check at start; the "
        "bfloat16 models run slower than float32 here (--config.ensemble.compute_dtype=float32 "
        "is faster; it changes the numbers, not the algorithm)"
    )


def _init_distributed() -> bool:
    """`jax.distributed.initialize` when the multi-process flags are given; False otherwise.

    All three flags or none: `--coordinator_address=HOST:PORT --num_processes=N
    --process_id=I`, the same command on every process otherwise. On CPUs the processes'
    collectives go through gloo (XLA:CPU has no other cross-process implementation).
    Must run before anything touches a JAX backend.
    """
    given = {
        "--coordinator_address": _COORDINATOR.value,
        "--num_processes": _NUM_PROCESSES.value,
        "--process_id": _PROCESS_ID.value,
    }
    if all(v is None for v in given.values()):
        return False
    missing = [k for k, v in given.items() if v is None]
    if missing:
        fail(f"a multi-process run needs all of {', '.join(given)}; missing {', '.join(missing)}")
    n, i = _NUM_PROCESSES.value, _PROCESS_ID.value
    if n < 1 or not 0 <= i < n:
        fail(f"--process_id must be in [0, --num_processes), got {i} of {n}")
    if not _LOGDIR.value:
        fail("a multi-process run needs --logdir (the run directory every process shares)")
    import jax

    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value, num_processes=n, process_id=i
        )
    except (RuntimeError, ValueError) as e:
        fail(f"jax.distributed.initialize: {str(e).splitlines()[0]}", code=1)
    return True


def _barrier(name: str) -> None:
    """Waits until every process of a multi-process run reaches `name`.

    Through the coordination service's own barrier where this jax exposes it (no collective
    program to compile, and no gloo context, whose set-up prints to stderr, before a
    one-line error); otherwise `multihost_utils.sync_global_devices`.
    """
    try:
        from jax._src import distributed

        client = distributed.global_state.client
    except (ImportError, AttributeError):  # a private module: absent in some jax
        client = None
    if client is not None and hasattr(client, "wait_at_barrier"):
        client.wait_at_barrier(name, 10 * 60 * 1000)
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _plan(cfg) -> tuple[str, list[int], list[str], list]:
    """The run directories and each seed's config (resumed ones read back), checked before
    anything is written: (base, seeds, run_dirs, cfgs). Errors: one line + exit 2."""
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
            requested = config_lib.from_json(config_lib.to_json(cfg))
            requested.seed = s  # --seed names the first seed; this directory is seed s
            # The run's own seed: a one-seed run resumes without --seed (the printed
            # command), and an explicit --seed that differs is refused there.
            c = _resume_config(d, requested)
        elif not rundir.is_empty(d):
            fail(f"{d} exists and is not empty: pass --resume to continue it, or another --logdir")
        else:
            c = config_lib.from_json(config_lib.to_json(template))
            c.seed = s
        cfgs.append(c)
    seeds = [int(c.seed) for c in cfgs]
    resume_args = [f"--logdir={base}", "--resume"]
    if len(seeds) > 1:
        resume_args += [f"--seed={seeds[0]}", f"--num_seeds={len(seeds)}"]
    _STOP["resume_cmd"] = "python -m experiments.run " + " ".join(resume_args)
    return base, seeds, run_dirs, cfgs


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    cfg = _build_config()
    distributed = _init_distributed()
    try:
        base, seeds, run_dirs, cfgs = _plan(cfg)
    finally:  # also on a one-line error: every process reaches the barrier, none waits
        if distributed:
            _barrier("mbmpo_jax: run directories checked")

    import jax

    from mbmpo_jax.sharding import processes_in, task_mesh

    dev = jax.devices()[0]
    _STOP["progress"] = jax.process_index() == 0
    c0 = cfgs[0]
    mesh = task_mesh(c0.meta.meta_batch_size)
    n_mesh = mesh.devices.size
    if processes_in(mesh) < jax.process_count():
        fail(
            f"the {c0.meta.meta_batch_size} tasks (meta.meta_batch_size) split over at most "
            f"{n_mesh} of the {jax.device_count()} devices, which leaves out some of the "
            f"{jax.process_count()} processes; use a process count whose devices divide the tasks"
        )
    print(
        f"mbmpo_jax | device: {dev.platform.upper()} {dev.device_kind} x{jax.device_count()} "
        f"(tasks split over {n_mesh}) | jax {jax.__version__}"
        + (
            f" | process {jax.process_index()} of {jax.process_count()}"
            f"{'' if jax.process_index() == 0 else ' (progress lines: process 0)'}"
            if jax.process_count() > 1
            else ""
        )
    )
    print(
        f"config: env={c0.env} preset={c0.preset} "
        f"real steps={c0.initial_random_steps:,} warm-up + "
        f"{config_lib.iterations_of(c0)} x {config_lib.steps_per_iteration(c0):,} "
        f"models={c0.ensemble.num_models}x{tuple(c0.ensemble.hidden)} "
        f"{c0.ensemble.compute_dtype} patience={c0.ensemble.patience} "
        f"{_recency_note(c0.ensemble)}"
        f"tasks={c0.meta.meta_batch_size} rollouts/task={c0.meta.rollouts_per_task} "
        f"H={c0.meta.horizon} meta_steps={c0.meta.num_meta_steps} outer={c0.meta.outer}"
        f"{'' if c0.meta.fvp_subsample == 1 else f' fvp_subsample={c0.meta.fvp_subsample}'} "
        f"inner_lr={c0.meta.inner_lr}"
        f"{'' if c0.meta.inner_update == 'pg' else ' (' + c0.meta.inner_update + ')'} "
        f"{f'entropy_coeff={c0.meta.entropy_coeff} ' if c0.meta.entropy_coeff else ''}"
        f"seeds={seeds} -> {base}",
        flush=True,
    )
    warning = _devices_note(dev.platform, n_mesh, jax.process_count())
    if warning:
        print(warning, file=sys.stderr, flush=True)
    note = _precision_note(dev.platform, c0.ensemble.compute_dtype)
    if note:
        print(note, flush=True)
    errors = _run_errors()
    if len(cfgs) > 1 and _VMAP_SEEDS.value:
        _STOP["run_dir"] = base
        try:
            finished = run_seeds(cfgs, run_dirs, _RESUME.value)
        except errors as e:
            _fail_run(e)
        if not finished:
            sys.exit(130)
        return
    for c, d in zip(cfgs, run_dirs, strict=True):
        _STOP["run_dir"] = d
        try:
            finished = run_one(c, d, _RESUME.value)
        except errors as e:
            _fail_run(e)
        if not finished:
            sys.exit(130)
        if _STOP["requested"] and d != run_dirs[-1]:
            print(
                f"stopped before the next seed. Resume with: {_STOP['resume_cmd']}",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(130)


def _run_errors() -> tuple[type[BaseException], ...]:
    from mbmpo_jax.checkpoint import CheckpointError
    from mbmpo_jax.mbmpo import NonFiniteError
    from mbmpo_jax.metrics import MetricsError

    return (
        rundir.RunDirError,
        MetricsError,
        config_lib.ConfigError,
        CheckpointError,
        NonFiniteError,
        OSError,
        ValueError,
    )


def _fail_run(e: BaseException) -> None:
    """A run's error as one line: exit 2 for bad input, 1 for a failure during the run."""
    from mbmpo_jax.metrics import MetricsError

    if isinstance(e, rundir.RunDirError):
        fail(str(e))
    if isinstance(e, MetricsError | config_lib.ConfigError):
        fail(f"--resume: {e}")
    fail(f"{type(e).__name__}: {str(e).splitlines()[0]}", code=1)


if __name__ == "__main__":
    run_and_exit(main, flags_parser=_parse)
