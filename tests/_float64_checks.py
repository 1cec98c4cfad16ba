"""The float64 checks of `tests/test_float64.py`, run as a script with `JAX_ENABLE_X64=1`.

x64 is a process-global flag, so the checks run here, in a subprocess, and print one
JSON object (`{check: {name: value}}`) as the last line of stdout; the tests assert on
it. Sizes are tiny: the run is dominated by the compiles of three fits, two meta trains
(TRPO, PPO) and the meta-gradient.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mbmpo_jax import buffer, dynamics, get_task, maml, mbmpo
from mbmpo_jax import imagine as imagine_lib
from mbmpo_jax import policy as pol
from mbmpo_jax import returns as returns_lib
from mbmpo_jax.envs import native
from mbmpo_jax.optim import trpo as optim_trpo

F64 = jnp.float64
TASK = get_task("inverted_pendulum")
OBS_DIM, ACT_DIM = TASK.obs_dim, TASK.act_dim
ENS_CFG = dynamics.EnsembleConfig(num_models=2, hidden=(16, 16), batch_size=32, max_epochs=5)
META_CFG = maml.MetaConfig(
    meta_batch_size=2,
    rollouts_per_task=4,
    horizon=8,
    policy=pol.PolicyConfig(hidden=(8,)),
    num_meta_steps=2,
    diag_states_per_task=4,
)


def float_dtypes(*trees: Any) -> list[str]:
    """The distinct dtypes of the floating leaves of ``trees``, sorted."""
    leaves = jax.tree.leaves(trees)
    return sorted({str(x.dtype) for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)})


def all_finite(*trees: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(trees))


def to_f64(tree: Any) -> Any:
    """Every float32 leaf of ``tree`` cast to float64 (other leaves unchanged)."""
    return jax.tree.map(lambda x: x.astype(F64) if x.dtype == jnp.float32 else x, tree)


def init_meta_state_f64(key: jax.Array, cfg: maml.MetaConfig) -> maml.MetaState:
    """``maml.init_meta_state`` in float64."""
    return maml.init_meta_state(key, cfg, OBS_DIM, ACT_DIM, dtype=F64)


def fit_report(ens: dynamics.EnsembleState, info: dynamics.FitInfo, buf: buffer.Buffer) -> dict:
    pred = jax.jit(dynamics.predict)(ens, buf.obs[:5], buf.act[:5])
    return {
        "state_dtypes": float_dtypes(ens.params, ens.opt_state, ens.norm),
        "info_dtypes": float_dtypes(info),
        "predict_dtypes": float_dtypes(pred),
        "finite": all_finite(ens.params, info, pred),
        "epochs": np.asarray(info.epochs).tolist(),
        "valid_loss": np.asarray(info.valid_loss).tolist(),
    }


def meta_report(state: maml.MetaState, post: Any, diags: maml.MetaDiagnostics) -> dict:
    return {
        "params_dtypes": float_dtypes(state.params, state.opt_state),
        "post_dtypes": float_dtypes(post),
        "returns_dtypes": float_dtypes(diags.pre_return, diags.post_return),
        "finite": all_finite(state.params, post, diags.pre_return, diags.post_return),
        "accepted": np.asarray(diags.accepted).tolist(),
        "nonfinite": np.asarray(diags.nonfinite).tolist(),
    }


def check_pipeline(key: jax.Array) -> tuple[dict, buffer.Buffer, dynamics.EnsembleState]:
    """WORKSPACE.md's "API in five minutes" in float64, tiny: real data -> buffer -> fit
    -> meta train (TRPO, 2 steps in one scan) -> tailored exploration -> buffer."""
    k_real, k_ens, k_fit, k_meta, k_collect = jax.random.split(key, 5)
    batch = native.rollout(native.NativeEnv(TASK, 4), native.uniform_policy(TASK), None, k_real)
    buf = buffer.add(buffer.init(512, OBS_DIM, ACT_DIM, F64), *batch.transitions())
    ens = dynamics.init(k_ens, OBS_DIM, ACT_DIM, ENS_CFG, F64)
    ens, fit_info = dynamics.fit(ens, buf, k_fit)
    meta = init_meta_state_f64(k_meta, META_CFG)
    meta_train = jax.jit(maml.make_meta_train(META_CFG, TASK, dynamics.model_step))
    meta, post, diags = meta_train(meta, dynamics.model_params(ens))
    batch = native.rollout(native.NativeEnv(TASK, 2), mbmpo.act_per_env, post, k_collect)
    buf = buffer.add(buf, *batch.transitions())
    report = {
        "buffer_dtypes": float_dtypes(buf),
        "count": int(buf.count),
        "fit": fit_report(ens, fit_info, buf),
        "meta": meta_report(meta, post, diags),
    }
    return report, buf, ens


def check_ppo(key: jax.Array, ens: dynamics.EnsembleState) -> dict:
    """Two PPO meta steps (one scan) in float64."""
    cfg = dataclasses.replace(META_CFG, outer="ppo")
    meta_train = jax.jit(maml.make_meta_train(cfg, TASK, dynamics.model_step))
    meta, post, diags = meta_train(init_meta_state_f64(key, cfg), dynamics.model_params(ens))
    return {**meta_report(meta, post, diags), "kl_coeff_dtypes": float_dtypes(meta.kl_coeff)}


def check_fits(key: jax.Array, buf: buffer.Buffer) -> dict:
    """A bfloat16-compute fit of float64 params; a float32 fit under x64 stays float32
    and, from the same initial params, matches the float64 fit closely (same rows)."""
    k_init, k_fit = jax.random.split(key)
    bf16_cfg = dataclasses.replace(ENS_CFG, compute_dtype="bfloat16")
    bf16 = dynamics.fit(dynamics.init(k_init, OBS_DIM, ACT_DIM, bf16_cfg, F64), buf, k_fit)
    ens32 = dynamics.init(k_init, OBS_DIM, ACT_DIM, ENS_CFG)
    buf32 = buffer.add(buffer.init(buf.capacity, OBS_DIM, ACT_DIM), *buffer.valid_data(buf))
    fit32 = dynamics.fit(ens32, buf32, k_fit)
    ens64 = ens32.replace(params=to_f64(ens32.params), opt_state=to_f64(ens32.opt_state))
    fit64 = dynamics.fit(ens64, buf, k_fit)
    return {
        "bf16_f64": fit_report(*bf16, buf),
        "f32": fit_report(*fit32, buf32),
        "f64_from_f32_init": fit_report(*fit64, buf),
    }


FD_STEPS = np.array([-2.0, -1.0, 1.0, 2.0])  # fourth-order central differences
FD_WEIGHTS = np.array([1.0, -8.0, 8.0, -1.0]) / 12.0


def sample_batch(key: jax.Array, params_t: Any, models: Any) -> maml.PolicyBatch:
    """Imagined rollouts of ``params_t [T]`` with their advantages, as the meta step."""
    rollouts = imagine_lib.imagine(
        key, params_t, models, TASK, dynamics.model_step, rollouts_per_task=3, horizon=6
    )
    adv = returns_lib.compute_advantages(rollouts.obs, rollouts.rew, rollouts.mask)
    return maml.PolicyBatch(rollouts.obs, rollouts.act, adv.adv, rollouts.mask, rollouts.logp)


def check_meta_gradient(key: jax.Array, ens: dynamics.EnsembleState) -> dict:
    """The meta-gradient (through the inner step) on float64 imagined samples against
    fourth-order central differences of the same objective (as test_maml's check), and
    the first-order gradient (second-order term dropped), which must be far off."""
    k_theta, k_pre, k_post = jax.random.split(key, 3)
    num_tasks, alpha, eps = 2, 0.5, 1e-3  # a large alpha: a second-order term far above tol
    theta = pol.init(k_theta, OBS_DIM, ACT_DIM, hidden=(3,), init_std=0.8, dtype=F64)
    x0, unravel = ravel_pytree(theta)
    points = x0 + eps * FD_STEPS[:, None, None] * np.eye(x0.size)  # [4, P, P]

    @jax.jit
    def gradients(theta, models):
        pre = sample_batch(k_pre, maml.broadcast_tasks(theta, num_tasks), models)
        post = sample_batch(k_post, maml.adapt(theta, (pre,), alpha), models)
        objective = lambda th: maml.meta_objective(th, (pre,), post, alpha)[0]

        def first_order(th):
            base = maml.broadcast_tasks(th, num_tasks)
            adapted = maml.adapt(th, (pre,), alpha)
            fo = jax.tree.map(lambda p, q: q + jax.lax.stop_gradient(p - q), adapted, base)
            return maml.lr_surrogate(fo, post)

        values = jax.vmap(jax.vmap(lambda x: objective(unravel(x))))(points)  # [4, P]
        fd = jnp.tensordot(FD_WEIGHTS, values, axes=1) / eps
        flat_grad = lambda f: ravel_pytree(jax.grad(f)(theta))[0]
        return (pre, post), flat_grad(objective), fd, flat_grad(first_order)

    samples, grad, fd, first_order = gradients(theta, dynamics.model_params(ens))
    return {
        "sample_dtypes": float_dtypes(samples),
        "grad_dtypes": float_dtypes(grad, fd),
        "grad": np.asarray(grad).tolist(),
        "fd": np.asarray(fd).tolist(),
        "first_order": np.asarray(first_order).tolist(),
    }


def check_mixed(key: jax.Array, ens: dynamics.EnsembleState) -> dict:
    """Float32 inputs under x64 stay float32; mixed inputs compute in the wider dtype.

    Imagination of a float32 policy in float32 / float64 models; a TRPO step on float32
    params with a float32 / float64 loss (the WORKSPACE snippet's float32 policy failed
    here under x64: its line search promoted the candidate params to float64).
    """
    k_theta, k_roll = jax.random.split(key)
    theta32 = pol.init(k_theta, OBS_DIM, ACT_DIM, hidden=(3,))
    models64 = dynamics.model_params(ens)
    models32 = jax.tree.map(lambda x: x.astype(jnp.float32), models64)
    rollouts = {
        name: imagine_lib.imagine(
            k_roll,
            maml.broadcast_tasks(theta32, 2),
            models,
            TASK,
            dynamics.model_step,
            rollouts_per_task=2,
            horizon=3,
        )
        for name, models in (("f32_models", models32), ("f64_models", models64))
    }
    params = {"x": jnp.linspace(-1.0, 1.0, 4, dtype=jnp.float32)}
    kl = lambda p: jnp.sum(jnp.square(p["x"] - params["x"]))
    losses = {
        "f32_loss": lambda p: jnp.sum(jnp.square(p["x"] - 0.5)),
        "f64_loss": lambda p: jnp.sum(jnp.square(p["x"] - jnp.asarray(0.5, F64))),
    }
    steps = {
        name: jax.jit(lambda p, f=f: optim_trpo.trpo_update(f, kl, p))(params)
        for name, f in losses.items()
    }
    return {
        **{f"imagine_{name}": float_dtypes(r) for name, r in rollouts.items()},
        **{
            f"trpo_{name}": {
                "params_dtypes": float_dtypes(new),
                "loss_dtypes": float_dtypes(info.loss_before, info.loss_after, info.kl_after),
                "accepted": bool(info.accepted),
            }
            for name, (new, info) in steps.items()
        },
    }


def check_defaults(key: jax.Array) -> list[str]:
    """The float dtypes that the init functions make without a ``dtype`` argument."""
    ens = dynamics.init(key, OBS_DIM, ACT_DIM, ENS_CFG)
    meta = maml.init_meta_state(key, dataclasses.replace(META_CFG, outer="ppo"), OBS_DIM, ACT_DIM)
    return float_dtypes(
        pol.init(key, OBS_DIM, ACT_DIM),
        buffer.init(4, OBS_DIM, ACT_DIM),
        (ens.params, ens.opt_state, ens.norm),
        (meta.params, meta.opt_state, meta.kl_coeff),
    )


def check_init_meta_state() -> dict:
    """``maml.init_meta_state(..., dtype=float64)``: its float dtypes."""
    state = maml.init_meta_state(jax.random.PRNGKey(0), META_CFG, OBS_DIM, ACT_DIM, dtype=F64)
    return {"dtypes": float_dtypes(state.params, state.opt_state, state.kl_coeff)}


def main() -> None:
    assert jax.config.jax_enable_x64, "run with JAX_ENABLE_X64=1"
    k_pipe, k_ppo, k_fits, k_grad = jax.random.split(jax.random.PRNGKey(0), 4)
    pipeline, buf, ens = check_pipeline(k_pipe)
    report = {
        "pipeline": pipeline,
        "ppo": check_ppo(k_ppo, ens),
        "fits": check_fits(k_fits, buf),
        "meta_gradient": check_meta_gradient(k_grad, ens),
        "mixed": check_mixed(k_grad, ens),
        "defaults": check_defaults(k_grad),
        "init_meta_state": check_init_meta_state(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
