"""Imaginary rollouts of per-task policies in an ensemble of learned dynamics models.

Task ``i`` of ``T`` runs in model ``i // (T // K)`` (the original code's contiguous split
of 20 tasks over 5 models; RLlib's port mis-assigned workers to models, so the split is
validated here). All ``T * R`` rollouts advance together: one ``lax.scan`` over the
horizon, the policy ``vmap``-ed over tasks (each task has its own params) and the
dynamics ``vmap``-ed over models, each model stepping the ``T // K * R`` rollouts of its
own tasks in one batch, so no model params are copied per task.

Dtypes: a rollout computes in the dtype of the params passed in, the result type of the
floating leaves of the policy params and the models (float32 by default, float64 when
either is float64 under ``jax_enable_x64``); start states, action bounds, the noise and
what ``dynamics_fn`` and ``task.reward`` return are cast to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import ensemble as ensemble_lib
from mbmpo_jax import policy as pol

__all__ = [
    "REWARD_ACTIONS",
    "Rollouts",
    "imagine",
    "undiscounted_return",
]

# The action the imagined reward is computed from (`imagine`'s `reward_action`), and the one
# the models step with (`model_action`): the sample clipped to the bounds, or the sample.
REWARD_ACTIONS = ("clipped", "sampled")

DynamicsFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


class Rollouts(NamedTuple):
    """Imagined samples, time-major inside each rollout; floats in the params' dtype.

    obs:  ``[T, R, H, O]`` observation the action was taken in.
    act:  ``[T, R, H, A]`` sampled action *before* clipping (what ``logp`` is of).
    rew:  ``[T, R, H]`` reward of the clipped action (of ``act`` with
          ``reward_action="sampled"``), 0 where ``mask`` is 0.
    mask: ``[T, R, H]`` 1 while the rollout is alive; the step that ends it counts.
    logp: ``[T, R, H]`` log-prob of ``act`` under the sampling policy.
    last_obs: ``[T, R, O]`` observation after the final step.
    """

    obs: jax.Array
    act: jax.Array
    rew: jax.Array
    mask: jax.Array
    logp: jax.Array
    last_obs: jax.Array


def _params_dtype(*trees: Any) -> np.dtype:
    """The result type of every floating leaf of ``trees`` (float32 if there is none).

    Transforms: host-side Python on static dtypes; safe to call inside jit.
    """
    floats = [x for x in jax.tree.leaves(trees) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    return jnp.result_type(*floats) if floats else np.dtype(np.float32)


def imagine(
    key: jax.Array,
    policy_params: Any,
    models: Any,
    task: Any,
    dynamics_fn: DynamicsFn,
    *,
    rollouts_per_task: int,
    horizon: int,
    start_obs: jax.Array | None = None,
    obs_clip: float = 1000.0,
    reward_action: str = "clipped",
    model_action: str = "clipped",
) -> Rollouts:
    """Samples ``R`` rollouts of horizon ``H`` per task in that task's model.

    Jittable; ``T`` is read from the leading axis of ``policy_params``, ``K`` from
    ``models``.

    Args:
      key: PRNG key.
      policy_params: per-task policy params, every leaf with a leading ``[T]`` axis.
      models: dynamics params, every leaf with a leading ``[K]`` axis.
      task: object with ``reward``, ``done``, ``init_obs``, ``act_low``, ``act_high``.
      dynamics_fn: ``(model_k, obs[B, O], act[B, A]) -> next_obs[B, O]``.
      rollouts_per_task: ``R``.
      horizon: ``H``.
      start_obs: optional ``[T, R, O]`` start states (e.g. real states from the
        buffer); default draws them from ``task.init_obs``.
      obs_clip: imagined states are clipped to ``+-obs_clip`` (as the original code)
        so a diverging model cannot overflow the policy or the baseline.
      reward_action: the action the reward is computed from: ``"clipped"`` (the one the
        model steps with, as in the real environment) or ``"sampled"`` (the policy's
        sample before clipping, as the original code's imagined reward: its control cost
        then also penalises the part outside the bounds).
      model_action: the action the models step with: ``"clipped"`` (as the real
        environment) or ``"sampled"`` (as the original code, whose models were fitted on
        and stepped with the policy's unclipped samples; pair it with models fitted on
        `RealBatch.sampled_act`).

    Returns:
      ``Rollouts`` with arrays ``[T, R, H, ...]`` in the params' dtype (module docstring).
    """
    for name, value in (("reward_action", reward_action), ("model_action", model_action)):
        if value not in REWARD_ACTIONS:
            raise ValueError(f"{name} must be one of {REWARD_ACTIONS}, got {value!r}")
    num_tasks = jax.tree.leaves(policy_params)[0].shape[0]
    ensemble_lib.task_to_member(num_tasks, ensemble_lib.num_members(models))  # T % K == 0
    r = rollouts_per_task
    dtype = _params_dtype(policy_params, models)
    key_init, key_steps = jax.random.split(key)
    if start_obs is None:
        start_obs = task.init_obs(key_init, (num_tasks, r))
    obs0 = jnp.clip(jnp.asarray(start_obs, dtype), -obs_clip, obs_clip)
    if obs0.shape[:2] != (num_tasks, r):
        raise ValueError(f"start_obs must be [T={num_tasks}, R={r}, O], got {obs0.shape}")
    act_low = jnp.asarray(task.act_low, dtype)
    act_high = jnp.asarray(task.act_high, dtype)
    per_task_apply = jax.vmap(pol.apply)

    def step(carry, eps):
        obs, alive = carry  # [T, R, O], bool [T, R]
        mean, log_std = per_task_apply(policy_params, obs)
        act = mean + jnp.exp(log_std) * eps
        logp = pol.log_prob(mean, log_std, act)
        act_env = jnp.clip(act, act_low, act_high)
        # task t steps in model t // (T // K); each model steps its tasks in one batch
        act_model = act if model_action == "sampled" else act_env
        next_obs = ensemble_lib.apply_per_task(dynamics_fn, models, obs, act_model).astype(dtype)
        # A model that returns NaN/inf ends the rollout there instead of poisoning the
        # batch; the clip keeps finite-but-exploding states bounded.
        finite = jnp.all(jnp.isfinite(next_obs), axis=-1)
        next_obs = jnp.where(finite[..., None], jnp.clip(next_obs, -obs_clip, obs_clip), obs)
        rew = task.reward(obs, act if reward_action == "sampled" else act_env, next_obs)
        rew = jnp.where(alive & finite & jnp.isfinite(rew), rew, 0.0).astype(dtype)
        mask = alive.astype(dtype)
        alive = alive & finite & ~task.done(next_obs)
        return (next_obs, alive), (obs, act, rew, mask, logp)

    alive0 = jnp.ones((num_tasks, r), bool)
    # All action noise in one draw: one large RNG kernel instead of one per step.
    act_dim = act_low.shape[-1]
    noise = jax.random.normal(key_steps, (horizon, num_tasks, r, act_dim), dtype)
    (last_obs, _), (obs, act, rew, mask, logp) = jax.lax.scan(step, (obs0, alive0), noise)
    # scan stacks time first: [H, T, R, ...] -> [T, R, H, ...]
    time_last = lambda x: jnp.moveaxis(x, 0, 2)
    return Rollouts(
        obs=time_last(obs),
        act=time_last(act),
        rew=time_last(rew),
        mask=time_last(mask),
        logp=time_last(logp),
        last_obs=last_obs,
    )


def undiscounted_return(rollouts: Rollouts) -> jax.Array:
    """Mean undiscounted return per task, ``[T]``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return jnp.mean(jnp.sum(rollouts.rew, axis=-1), axis=-1)
