"""Throughput benchmark: `python -m experiments.benchmark [--out=FILE.json] [--scaling]`.

Measures, in one run on the default JAX device (the GPU when there is one), for each
ensemble compute precision in --compute_dtypes (float32, bfloat16: the operands of the
models' wide layers; accumulation is float32 either way):
  - the device's matmul rate in that precision (the yardstick its ratios are taken against);
  - imagination at the paper's sizes (5 x (512, 512) ensemble, 20 tasks x 50 rollouts x
    200 steps) with the real ensemble and task: model steps/s, FLOP rate, ratio;
  - the ensemble fit: model-samples/s per epoch, FLOP rate, ratio;
  - one TRPO meta step, and the same step written as a Python loop over tasks (per-task
    jitted rollouts and inner steps), with the speed-up;
  - one whole MB-MPO iteration of the paper's configuration (fit + 30 meta steps +
    collection + evaluation), unless --no_iteration;
  - compile times (first call minus steady state) and peak memory.
then bfloat16's speed-up over float32 for each phase (ratios of times measured in the
same run). `--scaling` adds imagination time against K, R, H and T in the first precision
(cost should be linear in the total number of model steps: the table's last column, time
per million model steps, should stay flat until the device saturates).

Prints a table; `--out` writes everything as JSON (an existing file is kept unless
--force; the path is checked before measuring). Timings are medians of `--repeats`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time

from absl import app, flags

from experiments import _quiet  # noqa: F401
from experiments._cli import check_out, fail, own_flags_parser

_OUT = flags.DEFINE_string("out", None, "write the results as JSON here (a new file)")
_FORCE = flags.DEFINE_bool("force", False, "allow --out to replace an existing file")
_ENV = flags.DEFINE_string("env", "halfcheetah", "task whose obs/act sizes and reward are used")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repeats (median reported)")
_QUICK = flags.DEFINE_bool("quick", False, "small sizes (a check that it runs, not a benchmark)")
_SCALING = flags.DEFINE_bool("scaling", False, "imagination time against K, R, H, T")
_NO_ITERATION = flags.DEFINE_bool("no_iteration", False, "skip the whole-iteration timing")
_NO_LOOP = flags.DEFINE_bool("no_loop", False, "skip the Python-loop meta step")
_DTYPES = flags.DEFINE_list(
    "compute_dtypes", ["float32", "bfloat16"], "ensemble precisions to measure, in order"
)


def _timed(fn, *args, repeats):
    """(first call seconds, median steady-state seconds); every call blocks on results."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def _peak_memory():
    import jax

    dev = jax.devices()[0]
    out = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


def bench_imagination(
    task, num_models, hidden, tasks, rollouts, horizon, repeats, compute_dtype="float32"
):
    import jax

    from experiments.bench_ensemble import macs_per_sample
    from mbmpo_jax import dynamics, imagine, maml
    from mbmpo_jax import policy as policy_lib

    cfg = dynamics.EnsembleConfig(
        num_models=num_models, hidden=tuple(hidden), compute_dtype=compute_dtype
    )
    ens = dynamics.init(jax.random.PRNGKey(0), task.obs_dim, task.act_dim, cfg)
    models = dynamics.model_params(ens)
    theta = policy_lib.init(jax.random.PRNGKey(1), task.obs_dim, task.act_dim)
    params = maml.broadcast_tasks(theta, tasks)

    @jax.jit
    def run(key, params, models):
        out = imagine.imagine(
            key,
            params,
            models,
            task,
            dynamics.model_step,
            rollouts_per_task=rollouts,
            horizon=horizon,
        )
        return out.rew.sum()

    first, steady = _timed(run, jax.random.PRNGKey(2), params, models, repeats=repeats)
    steps = tasks * rollouts * horizon
    flops = 2 * macs_per_sample(task.obs_dim, task.act_dim, tuple(hidden)) * steps
    return {
        "K": num_models,
        "T": tasks,
        "R": rollouts,
        "H": horizon,
        "model_steps": steps,
        "seconds": steady,
        "compile_s": max(first - steady, 0.0),
        "model_steps_per_s": steps / steady,
        "model_flops_per_s": flops / steady,
        "s_per_million_steps": steady / steps * 1e6,
    }


def bench_meta_step(task, cfg, repeats, loop):
    import jax

    from experiments.bench_meta import make_loop_meta_step
    from mbmpo_jax import config, dynamics, maml

    meta_cfg = config.meta_config(cfg)
    ens = dynamics.init(
        jax.random.PRNGKey(0), task.obs_dim, task.act_dim, config.ensemble_config(cfg)
    )
    models = dynamics.model_params(ens)
    state = maml.init_meta_state(jax.random.PRNGKey(1), meta_cfg, task.obs_dim, task.act_dim)
    step = jax.jit(maml.make_meta_step(meta_cfg, task, dynamics.model_step))
    first, steady = _timed(step, state, models, repeats=repeats)
    out = {"meta_step_s": steady, "meta_step_compile_s": max(first - steady, 0.0)}
    if loop:
        loop_step = make_loop_meta_step(
            meta_cfg, task, dynamics.model_step, models, cfg.ensemble.num_models
        )
        _, loop_s = _timed(loop_step, state.params, jax.random.PRNGKey(3), repeats=repeats)
        out.update(loop_meta_step_s=loop_s, vectorised_speedup_vs_loop=loop_s / steady)
    return out


def bench_iteration(cfg):
    import jax

    from mbmpo_jax import mbmpo

    trainer = mbmpo.Trainer(cfg)
    start = time.perf_counter()
    state = trainer.init(jax.random.PRNGKey(0))
    warmup_s = time.perf_counter() - start
    rows = []
    for _ in range(2):  # the first iteration compiles
        start = time.perf_counter()
        state, m = trainer.iteration(state)
        m["wall_s"] = time.perf_counter() - start
        rows.append(m)
    first, second = rows
    return {
        "warmup_collect_s": warmup_s,
        "iteration_s": second["wall_s"],
        "iteration_compile_s": max(first["wall_s"] - second["wall_s"], 0.0),
        "fit_s": second["Time/Fit"],
        "fit_epochs_mean": second["Model/EpochsMean"],
        "meta_s": second["Time/Meta"],
        "collect_s": second["Time/Collect"],
        "eval_s": second["Time/Eval"],
        "imagined_model_steps_per_s": second["Meta/ModelStepsPerSec"],
    }


def _bench_precision(task, cfg, dtype, matmul_n, repeats, loop) -> dict:
    """Yardstick, imagination, fit, meta step and (unless --no_iteration) one iteration,
    with the ensemble's wide layers in ``dtype``; prints a line per measurement. ``loop``:
    also the Python-loop meta step (measured for the first precision only: the loop and
    the vectorised step use the same models)."""
    from experiments.bench_ensemble import bench_fit, matmul_flops_per_s

    k, hidden = cfg.ensemble.num_models, tuple(cfg.ensemble.hidden)
    t, r, h = cfg.meta.meta_batch_size, cfg.meta.rollouts_per_task, cfg.meta.horizon
    out: dict = {"matmul_flops_per_s": matmul_flops_per_s(matmul_n, max(repeats, 3), dtype)}
    mm = out["matmul_flops_per_s"]
    print(f"[{dtype}] matmul ({matmul_n}^2): {mm / 1e9:,.1f} GFLOP/s", flush=True)

    img = bench_imagination(task, k, hidden, t, r, h, repeats, compute_dtype=dtype)
    img["ratio_to_matmul"] = img["model_flops_per_s"] / mm
    out["imagination"] = img
    print(
        f"[{dtype}] imagination: {img['model_steps_per_s'] / 1e6:,.2f}M model steps/s, "
        f"{img['model_flops_per_s'] / 1e9:,.1f} GFLOP/s = {img['ratio_to_matmul']:.2f} of matmul "
        f"({img['seconds']:.3f} s per phase, compile {img['compile_s']:.1f} s)",
        flush=True,
    )

    fit = bench_fit(
        num_models=k,
        hidden=hidden,
        batch=cfg.ensemble.batch_size,
        obs_dim=task.obs_dim,
        act_dim=task.act_dim,
        transitions=1000 if _QUICK.value else 5000,
        epochs=2,
        repeats=repeats,
        matmul_n=matmul_n,
        compute_dtype=dtype,
    )
    out["fit"] = fit
    print(
        f"[{dtype}] ensemble fit: {fit['model_samples_per_s']:,.0f} model-samples/s per epoch, "
        f"{fit['fit_flops_per_s'] / 1e9:,.1f} GFLOP/s = {fit['ratio_to_matmul']:.2f} of matmul "
        f"({fit['epoch_s']:.3f} s per epoch)",
        flush=True,
    )

    meta = bench_meta_step(task, cfg, repeats, loop=loop)
    out["meta_step"] = meta
    line = f"[{dtype}] TRPO meta step: {meta['meta_step_s']:.3f} s "
    line += f"(compile {meta['meta_step_compile_s']:.1f} s)"
    if "loop_meta_step_s" in meta:
        line += (
            f" | Python loop over tasks: {meta['loop_meta_step_s']:.3f} s "
            f"-> vectorised {meta['vectorised_speedup_vs_loop']:.1f}x faster"
        )
    print(line, flush=True)

    if not _NO_ITERATION.value:
        it = bench_iteration(cfg)
        out["iteration"] = it
        print(
            f"[{dtype}] whole iteration ({'smoke' if _QUICK.value else 'paper'} config): "
            f"{it['iteration_s']:.1f} s = fit {it['fit_s']:.1f} s ({it['fit_epochs_mean']:.0f} "
            f"epochs) + meta {it['meta_s']:.1f} s + collect {it['collect_s']:.1f} s + eval "
            f"{it['eval_s']:.1f} s; first iteration +{it['iteration_compile_s']:.1f} s compile",
            flush=True,
        )
    return out


def main(argv):
    del argv
    import jax

    from mbmpo_jax import config as config_lib
    from mbmpo_jax import dynamics, hostinfo
    from mbmpo_jax.envs.tasks import get_task

    try:
        task = get_task(_ENV.value)
    except ValueError as e:
        fail(str(e))
    if _REPEATS.value < 1:
        fail("--repeats must be >= 1")
    bad = [d for d in _DTYPES.value if d not in dynamics.COMPUTE_DTYPES]
    if bad or not _DTYPES.value or len(set(_DTYPES.value)) != len(_DTYPES.value):
        fail(f"--compute_dtypes: give distinct values of {', '.join(dynamics.COMPUTE_DTYPES)}")
    if _OUT.value:
        check_out(_OUT.value, _FORCE.value)
    cfg = config_lib.get_config(task.name, "smoke" if _QUICK.value else "paper")
    repeats = _REPEATS.value
    k, hidden = cfg.ensemble.num_models, tuple(cfg.ensemble.hidden)
    t, r, h = cfg.meta.meta_batch_size, cfg.meta.rollouts_per_task, cfg.meta.horizon

    dev = jax.devices()[0]
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "device": f"{dev.platform} {dev.device_kind}",
        "num_devices": jax.device_count(),
        "jax": jax.__version__,
        # float32 products' precision (JAX_DEFAULT_MATMUL_PRECISION): on a GPU "default" lets
        # XLA use TF32 for them, "highest" (or "float32") keeps full float32
        "matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
        "host": f"{platform.node()} {os.cpu_count()} cpus",
        "cpu": hostinfo.cpu_model(),
        "cpu_bf16_units": hostinfo.bf16_units(),
        "env": task.name,
        "sizes": {"K": k, "hidden": hidden, "T": t, "R": r, "H": h},
    }
    print(
        f"device: {res['device']} ({res['cpu']}, bfloat16 units: {res['cpu_bf16_units']}) | "
        f"jax {res['jax']} | float32 matmuls: {res['matmul_precision']} | "
        f"env {task.name} | K={k} {hidden} T={t} R={r} H={h}",
        flush=True,
    )
    matmul_n = 1024 if _QUICK.value else 4096 if dev.platform == "gpu" else 2048
    res["precisions"] = {}
    for i, dtype in enumerate(_DTYPES.value):
        cfg.ensemble.compute_dtype = dtype
        loop = not _NO_LOOP.value and i == 0
        res["precisions"][dtype] = _bench_precision(task, cfg, dtype, matmul_n, repeats, loop)
    if {"float32", "bfloat16"} <= set(res["precisions"]):
        f32, b16 = res["precisions"]["float32"], res["precisions"]["bfloat16"]
        speedup = {
            "imagination": f32["imagination"]["seconds"] / b16["imagination"]["seconds"],
            "fit": f32["fit"]["epoch_s"] / b16["fit"]["epoch_s"],
            "meta_step": f32["meta_step"]["meta_step_s"] / b16["meta_step"]["meta_step_s"],
        }
        if "iteration" in f32:
            speedup["iteration"] = f32["iteration"]["iteration_s"] / b16["iteration"]["iteration_s"]
        res["bfloat16_speedup"] = speedup
        print("bfloat16 speed-up: " + ", ".join(f"{k} {v:.2f}x" for k, v in speedup.items()))
    cfg.ensemble.compute_dtype = _DTYPES.value[0]

    if _SCALING.value:
        rows = []
        base = dict(num_models=k, hidden=hidden, tasks=t, rollouts=r, horizon=h)
        sweeps = [
            ("num_models", [1, 5, 10, 20]),
            ("rollouts", [10, 25, 50, 100]),
            ("horizon", [50, 100, 200, 400]),
            ("tasks", [5, 10, 20, 40]),
        ]
        if _QUICK.value:
            sweeps = [(n, v[:2]) for n, v in sweeps]
        for name, values in sweeps:
            for v in values:
                kw = dict(base, **{name: v})
                if kw["tasks"] % kw["num_models"]:
                    kw["tasks"] = kw["num_models"]
                row = bench_imagination(task, repeats=repeats, compute_dtype=_DTYPES.value[0], **kw)
                row["swept"] = name
                rows.append(row)
        res["scaling"] = rows
        print(
            f"\n{'swept':<11}{'K':>4}{'T':>5}{'R':>5}{'H':>5}{'model steps':>13}{'s':>9}"
            f"{'Msteps/s':>10}{'s per M steps':>15}"
        )
        for row in rows:
            print(
                f"{row['swept']:<11}{row['K']:>4}{row['T']:>5}{row['R']:>5}{row['H']:>5}"
                f"{row['model_steps']:>13,}{row['seconds']:>9.3f}"
                f"{row['model_steps_per_s'] / 1e6:>10.2f}{row['s_per_million_steps']:>15.3f}"
            )

    res["memory"] = _peak_memory()
    print(f"peak memory: {res['memory']}")
    if _OUT.value:
        tmp = _OUT.value + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(res, f, indent=2, default=str)
            os.replace(tmp, _OUT.value)
        except OSError as e:
            print(json.dumps(res, default=str))  # the measurements are not lost
            fail(f"cannot write --out={_OUT.value}: {e.strerror or e}", code=1)
        print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(flags.FLAGS, __doc__))
