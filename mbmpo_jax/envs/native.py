"""Native MuJoCo executor: a batch of N environments stepped on the host.

The physics runs in MuJoCo's C library (`mj_step(model, data, nstep=frame_skip)`), one
`MjData` per environment. The batch's policy is evaluated by ONE jitted call per time step
(it also computes `done` of the current observations, so termination costs no extra
dispatch), and rewards for a whole rollout are computed by one jitted call at the end with
the task's own `reward` function: real and imagined rewards are the same function.

This is the default source of real data on a CPU. Bad actions are refused before they reach
MuJoCo: a wrong shape or a non-finite entry raises `ValueError`, leaving every environment's
state untouched (we raise rather than reset, so a NaN policy can never be silently hidden).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax.envs.tasks import TaskSpec

__all__ = [
    "Collection",
    "NativeEnv",
    "NativeExecutor",
    "RealBatch",
    "collect",
    "complete_episodes",
    "rollout",
    "uniform_policy",
]

# act_fn(params, key, obs [N, O]) -> act [N, A]; pure JAX.
ActFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


class RealBatch(NamedTuple):
    """Real rollouts of N environments over H steps.

    Attributes:
      obs: [N, H, O] observation before each step.
      act: [N, H, A] applied (clipped) action.
      next_obs: [N, H, O] observation after each step.
      reward: [N, H] task reward of each transition.
      done: [N, H] the transition ended the episode.
      mask: [N, H] the transition happened (False after an episode ended).
      sampled_act: [N, H, A] the policy's action before clipping (`act` is it clipped to
        the bounds); what the original code fitted its models on.
    """

    obs: np.ndarray
    act: np.ndarray
    next_obs: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    mask: np.ndarray
    sampled_act: np.ndarray

    @property
    def returns(self) -> np.ndarray:
        """[N] undiscounted episode returns."""
        return (self.reward * self.mask).sum(axis=1)

    @property
    def num_steps(self) -> int:
        """Real transitions taken (the paper's time-step count)."""
        return int(self.mask.sum())

    def transitions(self, action: str = "clipped") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Valid transitions flattened: `(obs [M, O], act [M, A], next_obs [M, O])`, with
        the applied action (`action="clipped"`) or the policy's sample (`"sampled"`)."""
        m = self.mask.astype(bool)
        return self.obs[m], self.actions(action)[m], self.next_obs[m]

    def actions(self, action: str = "clipped") -> np.ndarray:
        """`act` (`"clipped"`, the applied action) or `sampled_act` (`"sampled"`)."""
        if action not in ("clipped", "sampled"):
            raise ValueError(f"action must be 'clipped' or 'sampled', got {action!r}")
        return self.act if action == "clipped" else self.sampled_act


class NativeEnv:
    """N copies of a task, stepped by MuJoCo on the host.

    Not a pure function (MuJoCo's state lives in `MjData`); everything around it is.
    """

    def __init__(self, task: TaskSpec, num_envs: int):
        import mujoco

        if num_envs <= 0:
            raise ValueError(f"num_envs must be positive, got {num_envs}")
        self.task = task
        self.num_envs = int(num_envs)
        self.model = task.model
        self.datas = [mujoco.MjData(self.model) for _ in range(self.num_envs)]
        self._low = task.act_low.astype(np.float64)
        self._high = task.act_high.astype(np.float64)
        self._reset_states = jax.jit(lambda key: task.init_state(key, (self.num_envs,)))

    @property
    def obs_dim(self) -> int:
        return self.task.obs_dim

    @property
    def act_dim(self) -> int:
        return self.task.act_dim

    def observe(self) -> np.ndarray:
        """[N, O] float32 observations of the current states."""
        return np.stack([self.task.obs(d.qpos, d.qvel) for d in self.datas]).astype(np.float32)

    def reset(self, key: jax.Array) -> np.ndarray:
        """Resets all N environments from the task's reset distribution; returns [N, O]."""
        import mujoco

        qpos, qvel = (np.asarray(x, np.float64) for x in self._reset_states(key))
        for i, d in enumerate(self.datas):
            mujoco.mj_resetData(self.model, d)
            d.qpos[:] = qpos[i]
            d.qvel[:] = qvel[i]
            mujoco.mj_forward(self.model, d)
        return self.observe()

    def reset_some(self, key: jax.Array, which: np.ndarray) -> np.ndarray:
        """Resets the environments where `which [N]` is True (others untouched); returns [N, O].

        The new states are drawn from the reset distribution exactly as `reset` draws
        them (one batched draw for all N, of which the selected rows are used).
        """
        import mujoco

        qpos, qvel = (np.asarray(x, np.float64) for x in self._reset_states(key))
        for i in np.flatnonzero(which):
            d = self.datas[i]
            mujoco.mj_resetData(self.model, d)
            d.qpos[:] = qpos[i]
            d.qvel[:] = qvel[i]
            mujoco.mj_forward(self.model, d)
        return self.observe()

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Sets the states `qpos [N, nq]`, `qvel [N, nv]`; returns [N, O]."""
        import mujoco

        for i, d in enumerate(self.datas):
            d.qpos[:] = qpos[i]
            d.qvel[:] = qvel[i]
            mujoco.mj_forward(self.model, d)
        return self.observe()

    def check_action(self, act) -> np.ndarray:
        """Validates `act [N, A]` and clips it to the bounds; raises ValueError if bad."""
        act = np.asarray(act, dtype=np.float64)
        expected = (self.num_envs, self.act_dim)
        if act.shape != expected:
            raise ValueError(
                f"{self.task.name}: action shape {act.shape}, expected {expected} "
                "(num_envs, act_dim)"
            )
        if not np.all(np.isfinite(act)):
            bad = sorted(set(np.nonzero(~np.isfinite(act))[0].tolist()))
            raise ValueError(
                f"{self.task.name}: non-finite action for env(s) {bad}; MuJoCo state left unchanged"
            )
        return np.clip(act, self._low, self._high)

    def physics_step(self, act, active: np.ndarray | None = None) -> np.ndarray:
        """Steps the (active) environments `frame_skip` physics steps; returns [N, O].

        `act` is validated and clipped first; inactive environments are left as they are.
        Returns the observations after the step (inactive ones unchanged).
        """
        import mujoco

        act = self.check_action(act)
        for i, d in enumerate(self.datas):
            if active is None or active[i]:
                d.ctrl[:] = act[i]
                mujoco.mj_step(self.model, d, nstep=self.task.frame_skip)
        return self.observe()

    def step(self, act) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One control step of all N environments (no auto-reset).

        Args:
          act: [N, A] actions; clipped to the bounds, refused if non-finite or misshapen.
        Returns:
          `(next_obs [N, O], reward [N], done [N])`, reward and done from the task's JAX
          functions on the observed transition.
        """
        obs = self.observe()
        clipped = self.check_action(act).astype(np.float32)
        next_obs = self.physics_step(clipped)
        reward, done = _reward_done(self.task, obs, clipped, next_obs)
        return next_obs, np.asarray(reward), np.asarray(done)


@functools.partial(jax.jit, static_argnums=0)
def _reward_done(task: TaskSpec, obs, act, next_obs):
    return task.reward(obs, act, next_obs), task.done(next_obs)


@functools.partial(jax.jit, static_argnums=0)
def _rewards(task: TaskSpec, obs, act, next_obs):
    return task.reward(obs, act, next_obs)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _act_and_done(task: TaskSpec, act_fn: ActFn, params, key, obs, first):
    # One dispatch per time step: the policy's actions and `done` of the observations that
    # the previous step produced (at t = 0 nothing has ended yet).
    act = act_fn(params, key, obs)
    done = jnp.where(first, False, task.done(obs))
    return act, done


@functools.cache
def uniform_policy(task: TaskSpec) -> ActFn:
    """An `ActFn` drawing actions uniformly within the bounds (the paper's warm-up data).

    Cached per task so that `rollout`'s jit cache hits across calls.
    """
    low, high = jnp.asarray(task.act_low), jnp.asarray(task.act_high)

    def act_fn(params, key, obs):
        del params
        return jax.random.uniform(key, obs.shape[:-1] + low.shape, minval=low, maxval=high)

    return act_fn


def rollout(
    env: NativeEnv,
    act_fn: ActFn,
    params: Any,
    key: jax.Array,
    horizon: int | None = None,
) -> RealBatch:
    """Runs N episodes of fixed horizon from fresh resets.

    Args:
      env: the batch of environments (reset here).
      act_fn: `(params, key, obs [N, O]) -> act [N, A]`, pure JAX; it is jitted once per
        (task, act_fn) and called once per step. Use a module-level or cached function so
        that the jit cache hits across calls. To run a different policy per environment
        (e.g. the T adapted policies), give `params` a leading [N] axis and vmap inside.
      params: the policy parameters passed to `act_fn`.
      key: PRNG key (reset noise and action sampling).
      horizon: steps per episode; default the task's.

    Returns:
      RealBatch with [N, H] leaves. An environment whose episode ended is no longer
      stepped; its later entries repeat its last observation and have mask False.
    """
    task = env.task
    horizon = task.horizon if horizon is None else int(horizon)
    n, o_dim, a_dim = env.num_envs, env.obs_dim, env.act_dim
    key, reset_key = jax.random.split(key)
    obs = env.reset(reset_key)
    obs_buf = np.zeros((n, horizon, o_dim), np.float32)
    act_buf = np.zeros((n, horizon, a_dim), np.float32)
    raw_buf = np.zeros((n, horizon, a_dim), np.float32)
    next_buf = np.zeros((n, horizon, o_dim), np.float32)
    alive = np.ones(n, bool)
    mask = np.zeros((n, horizon), bool)
    step_keys = jax.random.split(key, horizon)
    for t in range(horizon):
        act, done = _act_and_done(task, act_fn, params, step_keys[t], obs, t == 0)
        if t > 0:
            alive &= ~np.asarray(done)
        if not alive.any():
            # Every episode is over: the rest repeats the last observation, masked out.
            obs_buf[:, t:] = next_buf[:, t:] = obs[:, None]
            break
        raw = np.asarray(act)
        act = env.check_action(raw).astype(np.float32)  # refuses a bad shape or NaN first
        raw_buf[:, t] = raw
        next_obs = env.physics_step(act, active=alive)
        obs_buf[:, t], act_buf[:, t], next_buf[:, t] = obs, act, next_obs
        mask[:, t] = alive
        obs = next_obs
    reward = np.asarray(_rewards(task, obs_buf, act_buf, next_buf))
    done = np.asarray(_reward_done(task, obs_buf, act_buf, next_buf)[1]) & mask
    return RealBatch(obs_buf, act_buf, next_buf, reward, done, mask, raw_buf)


class Collection(NamedTuple):
    """Real steps of N environments under a step budget, episodes restarting as they end.

    Attributes:
      batch: `RealBatch` with `[N, S]` leaves, `S = ceil(num_steps / N)`; `mask` marks the
        steps taken (every entry but the tail of the last column when N does not divide
        the budget); `done` marks transitions that terminated their episode. Several
        episodes may share a row: `first` says where each begins.
      first: `[N, S]` bool, the step is the first of an episode (its `obs` was drawn from
        the reset distribution).
      episode_returns: `[E]` undiscounted returns of the episodes that ended inside the
        collection (terminated, or reached the task's horizon), in row-major order.
      episode_lengths: `[E]` their lengths. Episodes cut off by the end of the budget are
        in `batch` (their transitions are real data) but not here.
    """

    batch: RealBatch
    first: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray

    @property
    def num_steps(self) -> int:
        """Real transitions taken (equals the budget asked for)."""
        return self.batch.num_steps


def collect(
    env: NativeEnv,
    act_fn: ActFn,
    params: Any,
    key: jax.Array,
    num_steps: int,
    horizon: int | None = None,
) -> Collection:
    """Takes exactly `num_steps` real steps with N environments, resetting each as it ends.

    The authors' sampler: every environment starts from a reset, keeps stepping, and starts
    a new episode from the reset distribution whenever its episode terminates (`done`) or
    reaches `horizon` steps, until the batch holds the budget. Environment i always acts
    with row i of `params` when `act_fn` is per-environment (e.g. `mbmpo.act_per_env`:
    the T adapted policies, tailored exploration). Shapes are fixed by `(N, num_steps)`,
    so repeated calls with the same budget compile nothing new.

    Args:
      env: the N environments (all reset at the start).
      act_fn: `(params, key, obs [N, O]) -> act [N, A]`, as in `rollout`.
      params: passed to `act_fn`.
      key: PRNG key (resets and actions).
      num_steps: the budget; the steps are spread over the environments time-major, so
        each takes `ceil(num_steps / N)` steps or one fewer.
      horizon: the episode length limit; default the task's.

    Returns:
      `Collection`; `collection.num_steps == num_steps`.

    Transforms: host-side (steps MuJoCo); not for jit/vmap/grad.
    """
    task = env.task
    horizon = task.horizon if horizon is None else int(horizon)
    n, o_dim, a_dim = env.num_envs, env.obs_dim, env.act_dim
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    steps = -(-int(num_steps) // n)
    # Envs 0..last_active-1 take the last time step: exactly num_steps in all.
    active_last = np.arange(n) < (int(num_steps) - n * (steps - 1))
    all_active = np.ones(n, bool)
    key, reset_key, act_key = jax.random.split(key, 3)
    reset_keys = jax.random.split(reset_key, steps)
    step_keys = jax.random.split(act_key, steps)
    obs = env.reset(reset_keys[0])
    obs_buf = np.zeros((n, steps, o_dim), np.float32)
    act_buf = np.zeros((n, steps, a_dim), np.float32)
    raw_buf = np.zeros((n, steps, a_dim), np.float32)
    next_buf = np.zeros((n, steps, o_dim), np.float32)
    mask = np.zeros((n, steps), bool)
    first = np.zeros((n, steps), bool)
    first[:, 0] = True
    ep_len = np.zeros(n, np.int64)
    for t in range(steps):
        act, done = _act_and_done(task, act_fn, params, step_keys[t], obs, t == 0)
        ended = np.asarray(done) | (ep_len >= horizon)
        if t > 0 and ended.any():
            # New episodes from the reset distribution, then act again on their first
            # observations (the other environments' actions are unchanged: same key).
            obs = env.reset_some(reset_keys[t], ended)
            act, _ = _act_and_done(task, act_fn, params, step_keys[t], obs, True)
            ep_len[ended] = 0
            first[ended, t] = True
        active = active_last if t == steps - 1 else all_active
        raw = np.asarray(act)
        act = env.check_action(raw).astype(np.float32)  # refuses a bad shape or NaN first
        raw_buf[:, t] = raw
        next_obs = env.physics_step(act, active=active)
        obs_buf[:, t], act_buf[:, t], next_buf[:, t] = obs, act, next_obs
        mask[:, t] = active
        ep_len += active
        obs = next_obs
    reward, done = (np.asarray(x) for x in _reward_done(task, obs_buf, act_buf, next_buf))
    reward = np.where(mask, reward, 0.0).astype(np.float32)
    done = done & mask
    returns, lengths = complete_episodes(reward, done, first, mask, horizon)
    batch = RealBatch(obs_buf, act_buf, next_buf, reward, done, mask, raw_buf)
    return Collection(batch, first, returns, lengths)


class NativeExecutor:
    """`rollout` and `collect` of N native environments: the executor contract of
    `mbmpo_jax.envs.executor`, MuJoCo's C library on the host (the default)."""

    def __init__(self, task: TaskSpec, num_envs: int):
        self.task = task
        self.num_envs = int(num_envs)
        self.env = NativeEnv(task, num_envs)

    def rollout(
        self, act_fn: ActFn, params: Any, key: jax.Array, horizon: int | None = None
    ) -> RealBatch:
        return rollout(self.env, act_fn, params, key, horizon)

    def collect(
        self,
        act_fn: ActFn,
        params: Any,
        key: jax.Array,
        num_steps: int,
        horizon: int | None = None,
    ) -> Collection:
        return collect(self.env, act_fn, params, key, num_steps, horizon)


def complete_episodes(reward, done, first, mask, horizon):
    """Returns and lengths of the episodes that ended (done or `horizon` steps), host-side.

    `reward`, `done`, `first`, `mask` are `[N, S]` as in `Collection`; see its fields.

    Transforms: host-side numpy (not for jit/vmap/grad)."""
    returns, lengths = [], []
    for i in range(reward.shape[0]):
        ret, length = 0.0, 0
        for t in range(reward.shape[1]):
            if not mask[i, t]:
                break
            if first[i, t]:
                ret, length = 0.0, 0
            ret += float(reward[i, t])
            length += 1
            if done[i, t] or length == horizon:
                returns.append(ret)
                lengths.append(length)
                ret, length = 0.0, 0
    return np.asarray(returns, np.float64), np.asarray(lengths, np.int64)


def steps_per_second(task: TaskSpec, num_envs: int = 20, steps: int = 200, repeats: int = 3):
    """Median env steps/s of `num_envs` environments under uniform-random actions.

    Terminations are ignored (every environment is stepped `steps` times) so the number
    measures the executor, not how long a random policy survives. Includes the one jitted
    policy call per step, as real data collection does.
    """
    import time

    env = NativeEnv(task, num_envs)
    act_fn = uniform_policy(task)
    keys = jax.random.split(jax.random.PRNGKey(0), steps)
    rates = []
    for r in range(repeats + 1):  # the first pass compiles
        obs = env.reset(jax.random.PRNGKey(r))
        start = time.perf_counter()
        for t in range(steps):
            act, _ = _act_and_done(task, act_fn, None, keys[t], obs, t == 0)
            obs = env.physics_step(np.asarray(act))
        if r:
            rates.append(num_envs * steps / (time.perf_counter() - start))
    return float(np.median(rates))
