"""Throughput of imagination and of the meta step, at the paper's sizes.

Measures, in one run on the default JAX device:

1. the float32 matmul rate (a jitted square matmul, median of repeats), the yardstick;
2. imagined model steps per second of ``imagine.imagine`` with 5 stand-in (512, 512) ReLU
   dynamics MLPs, 20 tasks x 50 rollouts x 200 steps, obs 27, act 8, converted to a FLOP
   rate (2 x multiply-adds of the model MLP per step; the policy is not counted) and
   divided by the matmul rate;
3. the wall time of one jitted meta step (sample pre -> inner step -> sample post -> TRPO)
   against a straightforward implementation that loops over tasks in Python, with a
   jitted rollout / advantage / inner step per task (the outer step, which couples all
   tasks, is the same jitted function in both).

The dynamics model and the task are minimal stand-ins with the right shapes (random
params, a HalfCheetah-like reward, no termination) so that this file depends only on the
meta-learning modules. Timings exclude compilation; every timed call ends with
``block_until_ready``.

4. with ``--breakdown``: where the meta step's time goes: one sampling phase (imagination
   plus advantages), the inner step, the TRPO outer step with the configured and with a
   single conjugate-gradient iteration (their difference is the cost of the other
   curvature products), and the second-order meta-gradient alone.

Usage: ``python -m experiments.bench_meta [--quick] [--repeats=N] [--fvp_subsample=N]
[--breakdown] [--skip_meta_step]``. Bad values: one-line error, exit code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import _quiet  # noqa: F401  (keeps library chatter off the console)
from experiments._cli import fail, own_flags_parser
from experiments.bench_ensemble import matmul_flops_per_s
from mbmpo_jax import imagine as im
from mbmpo_jax import maml
from mbmpo_jax import policy as pol
from mbmpo_jax import returns as ret

# A FlagValues of its own: experiments.benchmark imports this module (and the tests import
# the CLIs together) without clashing flags.
_FLAGS = flags.FlagValues()
_QUICK = flags.DEFINE_bool("quick", False, "small sizes (smoke test)", flag_values=_FLAGS)
_REPEATS = flags.DEFINE_integer(
    "repeats", 3, "timed calls (median)", lower_bound=1, flag_values=_FLAGS
)
_LOOP_REPEATS = flags.DEFINE_integer(
    "loop_repeats", 1, "timed calls of the slow loop baseline", lower_bound=1, flag_values=_FLAGS
)
_FVP_SUBSAMPLE = flags.DEFINE_integer(
    "fvp_subsample", 1, "MetaConfig.fvp_subsample", lower_bound=1, flag_values=_FLAGS
)
_SKIP_META_STEP = flags.DEFINE_bool(
    "skip_meta_step", False, "skip the meta step against the loop baseline", flag_values=_FLAGS
)
_BREAKDOWN = flags.DEFINE_bool("breakdown", False, "time the meta step's parts", flag_values=_FLAGS)


@dataclasses.dataclass(frozen=True)
class BenchSizes:
    num_models: int = 5
    hidden: int = 512
    obs_dim: int = 27
    act_dim: int = 8
    meta_batch_size: int = 20
    rollouts_per_task: int = 50
    horizon: int = 200
    matmul_n: int = 2048


PAPER = BenchSizes()
QUICK = BenchSizes(hidden=128, meta_batch_size=5, rollouts_per_task=10, horizon=50, matmul_n=512)


class StandInTask:
    """Shapes of Ant/HalfCheetah: forward-velocity reward, never done."""

    def __init__(self, obs_dim: int, act_dim: int):
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.act_low = -np.ones(act_dim, np.float32)
        self.act_high = np.ones(act_dim, np.float32)

    def reward(self, obs, act, next_obs):
        return next_obs[..., 8] - 0.1 * jnp.sum(act**2, axis=-1)

    def done(self, next_obs):
        return jnp.zeros(next_obs.shape[:-1], bool)

    def init_obs(self, key, shape):
        return 0.1 * jax.random.normal(key, (*shape, self.obs_dim))


def init_models(key: jax.Array, sizes: BenchSizes) -> dict:
    """``K`` random (hidden, hidden) ReLU MLPs ``[O + A] -> [O]``, params stacked ``[K]``."""
    dims = [sizes.obs_dim + sizes.act_dim, sizes.hidden, sizes.hidden, sizes.obs_dim]

    def one(k):
        ks = jax.random.split(k, 3)
        return [
            {
                "w": jax.random.normal(kk, (i, o)) / np.sqrt(i),
                "b": jnp.zeros((o,)),
            }
            for kk, i, o in zip(ks, dims[:-1], dims[1:], strict=True)
        ]

    return jax.vmap(one)(jax.random.split(key, sizes.num_models))


def model_step(model, obs, act):
    """One model: ``obs[B, O], act[B, A] -> next_obs[B, O]`` (predicts the state delta)."""
    h = jnp.concatenate([obs, act], axis=-1)
    for layer in model[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return obs + 0.01 * (h @ model[-1]["w"] + model[-1]["b"])


def model_flops_per_step(sizes: BenchSizes) -> int:
    """2 x multiply-adds of the model MLP for one (obs, act) row."""
    d_in = sizes.obs_dim + sizes.act_dim
    return 2 * (d_in * sizes.hidden + sizes.hidden * sizes.hidden + sizes.hidden * sizes.obs_dim)


def _median_time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_imagine(sizes: BenchSizes, repeats: int) -> dict:
    """Imagined model steps per second and the model FLOP rate."""
    task = StandInTask(sizes.obs_dim, sizes.act_dim)
    models = init_models(jax.random.PRNGKey(0), sizes)
    theta = pol.init(jax.random.PRNGKey(1), sizes.obs_dim, sizes.act_dim)
    params = maml.broadcast_tasks(theta, sizes.meta_batch_size)
    fn = jax.jit(
        lambda key, p, m: im.imagine(
            key,
            p,
            m,
            task,
            model_step,
            rollouts_per_task=sizes.rollouts_per_task,
            horizon=sizes.horizon,
        )
    )
    t = _median_time(fn, jax.random.PRNGKey(2), params, models, repeats=repeats)
    steps = sizes.meta_batch_size * sizes.rollouts_per_task * sizes.horizon
    return {
        "imagine_s": t,
        "model_steps_per_s": steps / t,
        "model_flops_per_s": steps / t * model_flops_per_step(sizes),
    }


def make_loop_meta_step(cfg: maml.MetaConfig, task, dynamics_fn, models, num_models: int):
    """The straightforward baseline: Python loops over tasks around per-task jitted pieces.

    Same algorithm and outer step as ``maml.make_meta_step`` (TRPO), but each task's
    rollouts (``R`` in its model), advantages and inner step are separate jitted calls.
    """
    tasks_per_model = cfg.meta_batch_size // num_models
    one_model = [jax.tree.map(lambda x, k=k: x[k], models) for k in range(num_models)]

    @jax.jit
    def rollout(key, params, model):
        # a single task: imagine with T = K = 1
        out = im.imagine(
            key,
            jax.tree.map(lambda x: x[None], params),
            jax.tree.map(lambda x: x[None], model),
            task,
            dynamics_fn,
            rollouts_per_task=cfg.rollouts_per_task,
            horizon=cfg.horizon,
        )
        adv = ret.compute_advantages(out.obs, out.rew, out.mask, cfg.discount, cfg.gae_lambda)
        batch = maml.PolicyBatch(out.obs, out.act, adv.adv, out.mask, out.logp)
        return jax.tree.map(lambda x: x[0], batch), jnp.mean(jnp.sum(out.rew[0], -1))

    inner = jax.jit(maml.inner_step, static_argnums=2)

    def outer_step(th, pre, post, pp):
        objective = functools.partial(
            maml.meta_objective, pre_batches=pre, post=post, inner_lr=cfg.inner_lr
        )
        return maml.trpo_outer_step(objective, th, pre, post, pp, cfg)

    outer = jax.jit(outer_step)
    stack = lambda xs: jax.tree.map(lambda *x: jnp.stack(x), *xs)

    def loop_meta_step(theta, key):
        keys = jax.random.split(key, 2 * cfg.meta_batch_size)
        pre, post, post_params = [], [], []
        for i in range(cfg.meta_batch_size):
            batch, _ = rollout(keys[i], theta, one_model[i // tasks_per_model])
            pre.append(batch)
            post_params.append(inner(theta, batch, cfg.inner_lr))
        for i in range(cfg.meta_batch_size):
            batch, _ = rollout(
                keys[cfg.meta_batch_size + i], post_params[i], one_model[i // tasks_per_model]
            )
            post.append(batch)
        return outer(theta, (stack(pre),), stack(post), stack(post_params))

    return loop_meta_step


def _setup(sizes: BenchSizes, fvp_subsample: int):
    """The paper's meta config at ``sizes``, the stand-in task and random models."""
    cfg = maml.MetaConfig(
        meta_batch_size=sizes.meta_batch_size,
        rollouts_per_task=sizes.rollouts_per_task,
        horizon=sizes.horizon,
        fvp_subsample=fvp_subsample,
    )
    task = StandInTask(sizes.obs_dim, sizes.act_dim)
    return cfg, task, init_models(jax.random.PRNGKey(0), sizes)


def bench_meta_step(sizes: BenchSizes, repeats: int, loop_repeats: int, fvp_subsample: int) -> dict:
    """Wall time of the vectorised meta step and of the Python-loop baseline."""
    cfg, task, models = _setup(sizes, fvp_subsample)
    state = maml.init_meta_state(jax.random.PRNGKey(1), cfg, sizes.obs_dim, sizes.act_dim)
    step = jax.jit(maml.make_meta_step(cfg, task, model_step))
    t_vec = _median_time(step, state, models, repeats=repeats)
    loop_step = make_loop_meta_step(cfg, task, model_step, models, sizes.num_models)
    t_loop = _median_time(loop_step, state.params, jax.random.PRNGKey(3), repeats=loop_repeats)
    return {"meta_step_s": t_vec, "loop_meta_step_s": t_loop, "speedup_vs_loop": t_loop / t_vec}


def bench_breakdown(sizes: BenchSizes, repeats: int, fvp_subsample: int) -> dict:
    """Median seconds of the meta step's parts (see the module docstring, item 4)."""
    cfg, task, models = _setup(sizes, fvp_subsample)
    theta = pol.init(jax.random.PRNGKey(1), sizes.obs_dim, sizes.act_dim)

    @jax.jit
    def sample(key, params):
        out = im.imagine(
            key,
            params,
            models,
            task,
            model_step,
            rollouts_per_task=cfg.rollouts_per_task,
            horizon=cfg.horizon,
        )
        adv = ret.compute_advantages(out.obs, out.rew, out.mask, cfg.discount, cfg.gae_lambda)
        return maml.PolicyBatch(out.obs, out.act, adv.adv, out.mask, out.logp)

    adapt = jax.jit(lambda th, b: maml.adapt(th, (b,), cfg.inner_lr))
    pre = sample(jax.random.PRNGKey(2), maml.broadcast_tasks(theta, cfg.meta_batch_size))
    post_params = adapt(theta, pre)
    post = sample(jax.random.PRNGKey(3), post_params)

    def outer(c):
        def outer_step(th, b0, b1, pp):
            objective = functools.partial(
                maml.meta_objective, pre_batches=(b0,), post=b1, inner_lr=c.inner_lr
            )
            return maml.trpo_outer_step(objective, th, (b0,), b1, pp, c)

        return jax.jit(outer_step)

    meta_grad = jax.jit(jax.grad(lambda th: maml.meta_objective(th, (pre,), post, cfg.inner_lr)[0]))
    t_outer = _median_time(outer(cfg), theta, pre, post, post_params, repeats=repeats)
    t_outer1 = _median_time(
        outer(dataclasses.replace(cfg, cg_iters=1)), theta, pre, post, post_params, repeats=repeats
    )
    return {
        "sample_phase_s": _median_time(sample, jax.random.PRNGKey(2), post_params, repeats=repeats),
        "inner_step_s": _median_time(adapt, theta, pre, repeats=repeats),
        "outer_step_s": t_outer,
        "outer_step_cg1_s": t_outer1,
        "per_curvature_product_s": (t_outer - t_outer1) / max(cfg.cg_iters - 1, 1),
        "meta_gradient_s": _median_time(meta_grad, theta, repeats=repeats),
    }


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    sizes = QUICK if _QUICK.value else PAPER
    repeats, fvp_subsample = _REPEATS.value, _FVP_SUBSAMPLE.value
    dev = jax.devices()[0]
    result = {"device": f"{dev.platform}:{dev.device_kind}", "sizes": dataclasses.asdict(sizes)}
    result["matmul_flops_per_s"] = matmul_flops_per_s(sizes.matmul_n, repeats=max(repeats, 5))
    result.update(bench_imagine(sizes, repeats))
    result["fraction_of_matmul_rate"] = result["model_flops_per_s"] / result["matmul_flops_per_s"]
    if not _SKIP_META_STEP.value:
        result.update(bench_meta_step(sizes, repeats, _LOOP_REPEATS.value, fvp_subsample))
    if _BREAKDOWN.value:
        result["breakdown"] = bench_breakdown(sizes, repeats, fvp_subsample)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main, flags_parser=own_flags_parser(_FLAGS, __doc__))
