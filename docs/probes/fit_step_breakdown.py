"""Where one SGD step of the ensemble fit spends its time (issue 18).

Times, within one process and interleaved (median of repeats), the pieces of the fit's
minibatch step for K models of ``--hidden`` on HalfCheetah sizes (23 inputs, 17 outputs),
batch 500: the loss alone (forward), its gradient, gradient + Adam, gradient + Adam + the
fit's per-model "stopped" mask, and the fit itself (``fit_unchecked``: one epoch per row
of the table, its time divided by its minibatch steps), each in float32 and bfloat16.
The FLOP rate counts 2 FLOPs per weight per sample and pass, three passes for a training
step (forward, dx, dw), one for the loss alone. ``--profile`` adds a `jax.profiler` trace
of the bfloat16 step (gradient + Adam) and lists its XLA ops by time: the dots (YNNPACK
fusions), the transposed copies for ``dw``, and the elementwise loops.

    taskset -c 1 PYTHONPATH=. python docs/probes/fit_step_breakdown.py --hidden=512,512 --profile
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import tempfile

import jax
import jax.numpy as jnp
import optax

from experiments.bench_meta import _median_time
from mbmpo_jax import buffer as buffer_lib
from mbmpo_jax.dynamics import fitting, model
from mbmpo_jax.dynamics.network import mlp_apply

OBS, ACT, K, B = 17, 6, 5, 500


def _profile(fn, args, steps: int) -> None:
    """Per-op time of ``fn(*args)`` (ms per call) from a perfetto trace, largest first."""
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            for _ in range(steps):
                jax.block_until_ready(fn(*args))
        (path,) = glob.glob(f"{logdir}/**/perfetto_trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            total[e["name"]] += e["dur"]
    step = total.pop("ThunkExecutor::Execute", 0) / steps / 1e3
    ops = {k: v / steps / 1e3 for k, v in total.items() if not k.startswith(("$", "Pjit"))}
    ops = {k: v for k, v in ops.items() if "Execute" not in k and v >= 0.05}
    groups: collections.Counter[str] = collections.Counter()
    for name, ms in ops.items():
        kind = (
            "dots and reductions"
            if name.startswith(("ynn_fusion", "dot"))
            else "copies for dw (pad/slice)"
            if ("pad" in name or "slice" in name)
            else "Adam (multiply_add)"
            if name.startswith("multiply_add")
            else "other elementwise"
        )
        groups[kind] += ms
    print(f"profile of the bfloat16 step (gradient + Adam): {step:.2f} ms per step")
    for kind, ms in groups.most_common():
        print(f"  {kind:34s} {ms:7.2f} ms  {ms / step:5.1%}")
    for name, ms in sorted(ops.items(), key=lambda kv: -kv[1])[:16]:
        print(f"    {name:32s} {ms:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", default="512,512")
    parser.add_argument("--weight_norm", default="true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    weight_norm = args.weight_norm.lower() in ("1", "true", "yes")
    sizes = (OBS + ACT, *hidden, OBS)
    macs = sum(i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True))
    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}; K={K} B={B} "
        f"sizes={sizes} weight_norm={weight_norm}"
    )
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (K, B, OBS + ACT))
    y = jax.random.normal(jax.random.fold_in(key, 1), (K, B, OBS))
    active = jnp.ones((K,), bool)
    opt = optax.adam(1e-3)

    results: dict[str, dict[str, float]] = {}
    for dtype in ("float32", "bfloat16"):
        cfg = model.EnsembleConfig(
            num_models=K,
            hidden=hidden,
            weight_norm=weight_norm,
            compute_dtype=dtype,
            max_epochs=1,
            batch_size=B,
        )
        state = model.init(jax.random.fold_in(key, 2), OBS, ACT, cfg)
        params, opt_state = state.params, state.opt_state

        def loss(p, x, y, dtype=dtype):
            return ((mlp_apply(p, x, "relu", dtype) - y) ** 2).mean()

        fwd = jax.jit(jax.vmap(loss))
        grad = jax.jit(jax.vmap(jax.grad(loss)))

        def adam_step(p, s, x, y, loss=loss):
            g = jax.grad(loss)(p, x, y)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        def masked_step(p, s, x, y, a, adam_step=adam_step):
            new_p, new_s = adam_step(p, s, x, y)

            def keep(new, old):
                return jnp.where(a, new, old)

            return jax.tree.map(keep, new_p, p), jax.tree.map(keep, new_s, s)

        step = jax.jit(jax.vmap(adam_step))
        masked = jax.jit(jax.vmap(masked_step))

        n = args.transitions
        buf = buffer_lib.init(n, OBS, ACT)
        obs = jax.random.normal(jax.random.fold_in(key, 3), (n, OBS))
        act = jax.random.normal(jax.random.fold_in(key, 4), (n, ACT))
        buf = buffer_lib.add(buf, obs, act, obs + 0.1 * jnp.tanh(obs))
        fit = fitting.fit_unchecked  # already jitted, cfg static
        steps_per_epoch = -(-(n - int(n * cfg.valid_split)) // B)

        parts = {
            "loss (forward)": (fwd, (params, x, y), 1),
            "gradient": (grad, (params, x, y), 3),
            "gradient + Adam": (step, (params, opt_state, x, y), 3),
            "gradient + Adam + mask": (masked, (params, opt_state, x, y, active), 3),
        }
        res = {}
        for _ in range(2):  # second round after everything is compiled and warm
            for name, (fn, a, passes) in parts.items():
                res[name] = (_median_time(fn, *a, repeats=args.repeats), passes)
            t_fit = _median_time(
                functools.partial(fit, key=key, cfg=cfg),
                state,
                buf,
                repeats=max(args.repeats // 5, 3),
            )
            res["fit, per step (1 epoch)"] = (t_fit / steps_per_epoch, 3)
        if args.profile and dtype == "bfloat16":
            _profile(step, (params, opt_state, x, y), steps=20)
        results[dtype] = {}
        for name, (t, passes) in res.items():
            gflops = 2 * macs * K * B * passes / t / 1e9
            results[dtype][name] = t
            print(f"{dtype:9s} {name:26s} {t * 1e3:8.2f} ms  {gflops:7.1f} GFLOP/s")
    for name in results["float32"]:
        ratio = results["bfloat16"][name] / results["float32"][name]
        print(f"bfloat16 / float32 time, {name}: {ratio:.2f}")


if __name__ == "__main__":
    main()
