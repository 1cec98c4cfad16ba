"""MJX executor: the task definitions of `tasks.py` stepped by MuJoCo XLA, as a brax `Env`.

The physics is `mujoco.mjx` (pure JAX), so a whole batch of rollouts is one jitted program
(`scan` over time, `vmap` over environments) and brax's own trainers accept the env as is
(`brax.training.agents.ppo.train.train(environment=MjxEnv(task), ...)`), which is how the
model-free baseline (`experiments/baseline.py`) runs.

A step is the native executor's step written in JAX: clip the action to the bounds, set
`ctrl`, `frame_skip` calls of `mjx.step`, observe with `task.obs(qpos, qvel)`. Reward and
done are the task's own functions of `(obs, clipped act, next_obs)`, so the real reward and
the reward imagination gives a predicted transition are the same function.

MJX computes in float32 unless `jax_enable_x64` is on. In float64 it reproduces
`mujoco.mj_step` to ~1e-11 over 40 control steps on the contact-rich tasks; in float32 the
rounding is amplified by the chaotic, contact-rich dynamics (see `tests/test_mjx_env.py`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax.envs import native
from mbmpo_jax.envs.native import ActFn, Collection, RealBatch, uniform_policy
from mbmpo_jax.envs.tasks import TaskSpec, get_task

# mujoco.mjx prints "Failed to import warp" (an optional GPU backend) on import; brax
# imports mjx too. Import both once with stdout captured, so users never see it.
with contextlib.redirect_stdout(io.StringIO()):
    from brax.envs import base as brax_base
    from brax.envs.base import State
    from mujoco import mjx

__all__ = ["MjxEnv", "MjxExecutor", "rollout", "steps_per_second"]


class MjxEnv(brax_base.Env):
    """One environment of a task, simulated by MJX; `vmap` it for a batch.

    `state.pipeline_state` is the full `mjx.Data` (MuJoCo carries the solver's warm start
    from step to step, and so do we). `state.obs` is `[O]`, `state.reward` and `state.done`
    (0. or 1.) are scalars of the last transition; both are 0 after `reset`.

    Attributes:
      task: the TaskSpec.
      sys: the `mjx.Model` (brax's name for the physics system).
    """

    def __init__(self, task: TaskSpec | str):
        self.task = get_task(task) if isinstance(task, str) else task
        self.sys = mjx.put_model(self.task.model)
        # Built once outside any trace: reset only overwrites qpos/qvel of this template.
        self._data0 = mjx.make_data(self.sys)
        self._low = jnp.asarray(self.task.act_low)
        self._high = jnp.asarray(self.task.act_high)

    # --- brax.envs.base.Env ----------------------------------------------------------
    def reset(self, rng: jax.Array) -> State:
        """Samples `task.init_state(rng)`; obs is read after `mjx.forward`."""
        return self.reset_to(*self.task.init_state(rng))

    def reset_to(self, qpos: jax.Array, qvel: jax.Array) -> State:
        """The state `(qpos [nq], qvel [nv])`, after `mjx.forward`; reward and done 0."""
        data = self._data0.replace(
            qpos=qpos.astype(self._data0.qpos.dtype), qvel=qvel.astype(self._data0.qvel.dtype)
        )
        data = mjx.forward(self.sys, data)
        obs = self._observe(data)
        zero = jnp.zeros((), obs.dtype)
        return State(pipeline_state=data, obs=obs, reward=zero, done=zero)

    def step(self, state: State, action: jax.Array) -> State:
        """One control step: clip `action [A]`, `frame_skip` physics steps, reward, done."""
        data = state.pipeline_state
        # The observation the transition starts from is read off the physics, not
        # `state.obs`, so a wrapper rewriting `obs` can never change the reward.
        obs = self._observe(data)
        act = jnp.clip(action, self._low, self._high).astype(data.ctrl.dtype)
        data = data.replace(ctrl=act)
        data = jax.lax.fori_loop(0, self.task.frame_skip, lambda _, d: mjx.step(self.sys, d), data)
        next_obs = self._observe(data)
        reward = self.task.reward(obs, act, next_obs).astype(next_obs.dtype)
        done = self.task.done(next_obs).astype(next_obs.dtype)
        return state.replace(pipeline_state=data, obs=next_obs, reward=reward, done=done)

    @property
    def observation_size(self) -> int:
        return self.task.obs_dim

    @property
    def action_size(self) -> int:
        return self.task.act_dim

    @property
    def backend(self) -> str:
        return "mjx"

    # --- extras ------------------------------------------------------------------------
    @property
    def dt(self) -> float:
        """Control timestep in seconds."""
        return self.task.dt

    def _observe(self, data) -> jax.Array:
        return self.task.obs(data.qpos, data.qvel)


def rollout(
    env: MjxEnv,
    act_fn: ActFn,
    params: Any,
    key: jax.Array,
    num_envs: int,
    horizon: int | None = None,
) -> RealBatch:
    """`num_envs` episodes of `horizon` steps from fresh resets, as ONE jitted program.

    The rollout of the executor contract (`mbmpo_jax.envs.executor`); `MjxExecutor` wraps
    it with host arrays.

    Args:
      env: the MjxEnv (static: the program is compiled once per env object).
      act_fn: `(params, key, obs [N, O]) -> act [N, A]`, pure JAX; static too, so pass a
        module-level or cached function (e.g. `native.uniform_policy(task)`).
      params: policy parameters (traced).
      key: PRNG key (reset noise and the policy's keys, used as `native.rollout` uses them).
      num_envs: N.
      horizon: H; default the task's.

    Returns:
      RealBatch of jax arrays: `obs`, `next_obs [N, H, O]`, `act [N, H, A]` (applied,
      clipped), `reward`, `done`, `mask [N, H]`, `sampled_act [N, H, A]` (the policy's
      sample before clipping). `mask[:, t]` is True while no earlier
      transition was done; an ended episode is frozen (later entries repeat its last
      observation, reward and done 0), so `returns` (= sum of reward * mask) excludes
      everything after the first done.
    """
    horizon = env.task.horizon if horizon is None else int(horizon)
    if num_envs <= 0 or horizon <= 0:
        raise ValueError(f"num_envs and horizon must be positive, got {num_envs}, {horizon}")
    return _rollout(env, act_fn, int(num_envs), horizon, params, key)


def _where_tree(cond: jax.Array, new, old):
    """Per environment: `new` where `cond [N]`, else `old` (any pytree of [N, ...] leaves)."""
    return jax.tree.map(
        lambda a, b: jnp.where(cond.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old
    )


def _reset_batch(env: MjxEnv, key: jax.Array, num_envs: int) -> State:
    # One batched draw of the reset distribution, as `native.NativeEnv.reset` draws it.
    qpos, qvel = env.task.init_state(key, (num_envs,))
    return jax.vmap(env.reset_to)(qpos, qvel)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _rollout(env: MjxEnv, act_fn: ActFn, num_envs: int, horizon: int, params, key):
    key, reset_key = jax.random.split(key)
    state = _reset_batch(env, reset_key, num_envs)
    v_step = jax.vmap(env.step)

    def body(carry, k):
        state, alive = carry
        obs = state.obs
        raw = act_fn(params, k, obs)
        act = jnp.clip(raw, env._low, env._high)
        # Ended episodes keep their last state (MuJoCo is not stepped past a done in the
        # native executor either), and report no reward and no done.
        nstate = _where_tree(alive, v_step(state, act), state)
        reward = jnp.where(alive, nstate.reward, 0.0)
        done = alive & (nstate.done > 0)
        out = (obs, act, nstate.obs, reward, done, alive, raw)
        return (nstate, alive & ~done), out

    keys = jax.random.split(key, horizon)
    alive0 = jnp.ones((num_envs,), bool)
    _, outs = jax.lax.scan(body, (state, alive0), keys)
    to_nh = lambda x: jnp.swapaxes(x, 0, 1)  # [H, N, ...] -> [N, H, ...]
    return RealBatch(*(to_nh(x) for x in outs))  # type: ignore[arg-type]


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _collect(env: MjxEnv, act_fn: ActFn, num_envs: int, num_steps: int, horizon: int, params, key):
    # `native.collect` as one program: the same keys, the same restart rule, fixed shapes.
    n = num_envs
    steps = -(-num_steps // n)
    active_last = jnp.arange(n) < (num_steps - n * (steps - 1))
    key, reset_key, act_key = jax.random.split(key, 3)
    reset_keys = jax.random.split(reset_key, steps)
    step_keys = jax.random.split(act_key, steps)
    v_step = jax.vmap(env.step)

    def body(carry, xs):
        state, ep_len = carry
        t, reset_k, step_k = xs
        ended = (t > 0) & (env.task.done(state.obs).astype(bool) | (ep_len >= horizon))
        # New episodes from the reset distribution (the draw costs a forward pass of every
        # environment, so it runs only at steps where an episode ended).
        state = jax.lax.cond(
            ended.any(),
            lambda s: _where_tree(ended, _reset_batch(env, reset_k, n), s),
            lambda s: s,
            state,
        )
        ep_len = jnp.where(ended, 0, ep_len)
        first = (t == 0) | ended
        active = jnp.where(t == steps - 1, active_last, True)
        raw = act_fn(params, step_k, state.obs)
        act = jnp.clip(raw, env._low, env._high)
        nstate = _where_tree(active, v_step(state, act), state)
        reward = jnp.where(active, nstate.reward, 0.0)
        done = active & (nstate.done > 0)
        out = (state.obs, act, nstate.obs, reward, done, active, first, raw)
        return (nstate, ep_len + active), out

    state0 = _reset_batch(env, reset_keys[0], n)
    xs = (jnp.arange(steps), reset_keys, step_keys)
    _, outs = jax.lax.scan(body, (state0, jnp.zeros((n,), jnp.int32)), xs)
    return tuple(jnp.swapaxes(x, 0, 1) for x in outs)  # [S, N, ...] -> [N, S, ...]


def _check_actions(task: TaskSpec, act: np.ndarray, mask: np.ndarray) -> None:
    bad = ~np.isfinite(act).all(axis=-1) & mask
    if bad.any():
        envs = sorted(set(np.nonzero(bad)[0].tolist()))
        raise ValueError(f"{task.name}: non-finite action for env(s) {envs}")


class MjxExecutor:
    """`rollout` and `collect` of N MJX environments: the executor contract of
    `mbmpo_jax.envs.executor`, each call one jitted program (results copied to the host).

    A non-finite action is detected after the program ran (MJX cannot stop mid-scan), so
    the call raises `ValueError` and returns nothing; the next call resets anyway.
    """

    def __init__(self, task: TaskSpec | str, num_envs: int):
        if num_envs <= 0:
            raise ValueError(f"num_envs must be positive, got {num_envs}")
        self.env = MjxEnv(task)
        self.task = self.env.task
        self.num_envs = int(num_envs)

    def rollout(
        self, act_fn: ActFn, params: Any, key: jax.Array, horizon: int | None = None
    ) -> RealBatch:
        batch = RealBatch(
            *(np.asarray(x) for x in rollout(self.env, act_fn, params, key, self.num_envs, horizon))
        )
        _check_actions(self.task, batch.act, batch.mask)
        return batch._replace(
            obs=batch.obs.astype(np.float32),
            act=batch.act.astype(np.float32),
            next_obs=batch.next_obs.astype(np.float32),
            reward=batch.reward.astype(np.float32),
            sampled_act=batch.sampled_act.astype(np.float32),
        )

    def collect(
        self,
        act_fn: ActFn,
        params: Any,
        key: jax.Array,
        num_steps: int,
        horizon: int | None = None,
    ) -> Collection:
        horizon = self.task.horizon if horizon is None else int(horizon)
        if num_steps <= 0 or horizon <= 0:
            raise ValueError(f"num_steps and horizon must be positive, got {num_steps}, {horizon}")
        outs = _collect(self.env, act_fn, self.num_envs, int(num_steps), horizon, params, key)
        obs, act, next_obs, reward, done, mask, first, raw = (np.asarray(x) for x in outs)
        _check_actions(self.task, act, mask)
        f32 = lambda x: x.astype(np.float32)
        batch = RealBatch(f32(obs), f32(act), f32(next_obs), f32(reward), done, mask, f32(raw))
        returns, lengths = native.complete_episodes(batch.reward, done, first, mask, horizon)
        return Collection(batch, first, returns, lengths)


def steps_per_second(
    task: TaskSpec | str, num_envs: int = 20, steps: int = 200, repeats: int = 3
) -> float:
    """Median steady-state env steps/s of `num_envs` MJX envs under uniform-random actions.

    One jitted `scan(vmap(step))` of `steps` steps; the first call (compile) is excluded.
    Terminations are ignored (every env is stepped `steps` times), as in
    `native.steps_per_second`, so the number measures the executor.
    """
    env = MjxEnv(task)
    act_fn = uniform_policy(env.task)

    @jax.jit
    def run(key):
        reset_key, step_key = jax.random.split(key)
        state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))

        def body(state, k):
            return jax.vmap(env.step)(state, act_fn(None, k, state.obs)), None

        state, _ = jax.lax.scan(body, state, jax.random.split(step_key, steps))
        return state.obs

    rates = []
    for r in range(repeats + 1):  # the first pass compiles
        key = jax.random.PRNGKey(r)
        start = time.perf_counter()
        jax.block_until_ready(run(key))
        if r:
            rates.append(num_envs * steps / (time.perf_counter() - start))
    return float(np.median(rates))
