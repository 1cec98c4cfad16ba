"""The MJX executor against native MuJoCo, and against brax's wrappers.

Reference: the plain bindings, `d.ctrl[:] = clip(a); mujoco.mj_step(model, d,
nstep=frame_skip)` in float64, from the state MJX reset to, with the same random actions
(drawn 20% beyond the bounds, so clipping is exercised).

Tolerances, on `max |obs_mjx - obs_ref| / (1 + |obs_ref|)` over every step of 20:

* float64 MJX (`jax.enable_x64`): 1e-8. Measured worst over 8 seeds: < 1e-10 on every task
  (pendulum, swimmer, hopper, walker2d ~1e-13; halfcheetah 1.5e-11; ant 6e-11). This is
  the check that the env is MuJoCo's step, contacts included; it runs on ant only (free
  joint, contacts, a loose float32 tolerance below), as each task costs a compile.
* float32 MJX (what runs): the same dynamics with float32 rounding, amplified by the
  dynamics. Each jax release compiles the step a little differently, so the rounding, and
  what the dynamics make of it, moves between versions. Measured worst over seeds 0-7
  (`max(_compare_with_mujoco(name, s) for s in range(8))`, on 2026-11-25 with brax 0.14.2,
  mujoco 4.0.0, mujoco-mjx 3.17.0) on jax 0.9.2 / 0.10.2 (Python 3.11) / 0.12.0.1 (3.12):

  | task | 0.9.2 | 0.10.2 | 0.12.0.1 | bound |
  |---|---|---|---|---|
  | inverted_pendulum | 6.2e-6 | 6.2e-6 | 8.4e-6 | 1e-4 |
  | swimmer | 5.4e-6 | 6.0e-6 | 5.4e-6 | 1e-4 |
  | hopper | 3.0e-6 | 3.2e-6 | 3.2e-6 | 1e-4 |
  | walker2d | 1.1e-4 | 1.2e-4 | 1.1e-4 | 1e-3 |
  | halfcheetah | 7.0e-2 | 6.6e-2 | 8.1e-2 | 2.5e-1 |
  | ant | 4.1e-3 | 3.6e-3 | 2.4e-3 | 1e-1 |

  The tested seed 0 is halfcheetah's worst on every version (ant's: 3.5e-4 to 3.9e-4).
  Bounds: the other four tasks (errors at rounding level, not growing) keep their earlier
  bounds, >= 8x above every value here.
  HalfCheetah's error grows chaotically (below), so its bound is set by the largest value
  seen on any version, 1.12e-1 (seed 0 on jax 0.12.0.1 as reported in issue 19; 8.1e-2 when
  re-measured here), times 2.2: one more doubling of the growth. Ant keeps 1e-1, 24x its
  worst, as float32 on accelerators was not measured.
  HalfCheetah and Ant are looser because random torques on a contact-rich body, with the
  4 solver iterations of brax's XMLs, are chaotic: the float32 error roughly doubles every
  2 steps past step 10 (both reach O(1) by step 30-40) while the float64 error stays at
  1e-11, so the drift is rounding, not a modelling difference.
"""

import functools
from typing import Any, NamedTuple

import brax.envs.wrappers.training as brax_training
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from mbmpo_jax.envs import mjx_env, native

STEPS = 20
F32_TOL = {
    "inverted_pendulum": 1e-4,
    "swimmer": 1e-4,
    "hopper": 1e-4,
    "walker2d": 1e-3,
    "halfcheetah": 2.5e-1,
    "ant": 1e-1,
}
F64_TOL = 1e-8


class _Traj(NamedTuple):
    start: Any  # the reset State
    obs: jax.Array  # [H, O] obs before each step
    next_obs: jax.Array  # [H, O]
    reward: jax.Array  # [H]
    done: jax.Array  # [H]
    ctrl: jax.Array  # [H, A] the control the physics received


@functools.cache
def _trajectory_fn(name: str, x64: bool = False):
    """`(env, jit(key, act [H, A]) -> _Traj)`: reset, then `env.step` under `scan`.

    One program per task (compiling MJX dominates this file's run time); cached so that
    tests share it.
    """
    env = mjx_env.MjxEnv(name)

    @jax.jit
    def run(key, acts):
        start = env.reset(key)

        def body(state, act):
            nstate = env.step(state, act)
            out = (state.obs, nstate.obs, nstate.reward, nstate.done, nstate.pipeline_state.ctrl)
            return nstate, out

        _, out = jax.lax.scan(body, start, acts)
        return _Traj(start, *out)

    return env, run


def _compare_with_mujoco(name: str, seed: int = 0, x64: bool = False) -> float:
    """Steps MJX and native MuJoCo side by side; returns the worst scaled obs error.

    Also checks that the env's reward and done are the task's functions of each returned
    transition (obs, clipped action, next_obs).
    """
    env, run = _trajectory_fn(name, x64)
    task, model = env.task, env.task.model
    acts = np.random.default_rng(seed).uniform(
        1.2 * task.act_low, 1.2 * task.act_high, (STEPS, task.act_dim)
    )
    dtype = jnp.zeros(()).dtype  # float64 under enable_x64
    traj = run(jax.random.PRNGKey(seed), jnp.asarray(acts, dtype))
    start = traj.start
    assert float(start.reward) == 0.0 and float(start.done) == 0.0

    data = mujoco.MjData(model)
    data.qpos[:] = np.asarray(start.pipeline_state.qpos, np.float64)
    data.qvel[:] = np.asarray(start.pipeline_state.qvel, np.float64)
    mujoco.mj_forward(model, data)
    np.testing.assert_allclose(
        start.obs, task.obs(data.qpos.copy(), data.qvel.copy()), rtol=1e-6, atol=1e-6
    )
    applied = np.clip(acts, task.act_low, task.act_high)
    np.testing.assert_allclose(traj.ctrl, applied, rtol=1e-6)
    ref = np.zeros((STEPS, task.obs_dim))
    for t in range(STEPS):
        data.ctrl[:] = applied[t]
        mujoco.mj_step(model, data, nstep=task.frame_skip)
        ref[t] = task.obs(data.qpos.copy(), data.qvel.copy())
    err = np.abs(np.asarray(traj.next_obs, np.float64) - ref) / (1.0 + np.abs(ref))

    # Reward parity: the same function of the returned transition (with the clipped action).
    np.testing.assert_array_equal(traj.obs[0], start.obs)
    np.testing.assert_array_equal(traj.obs[1:], traj.next_obs[:-1])
    clipped = jnp.asarray(applied, dtype)
    np.testing.assert_allclose(
        traj.reward, task.reward(traj.obs, clipped, traj.next_obs), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(traj.done, task.done(traj.next_obs).astype(dtype))
    return float(err.max())


# Each task costs an MJX compile (about 30 s of a core): the tasks whose physics the
# others already exercise (hinge chains, no free joint) run in the slow set.
SLOW_F32 = ("swimmer", "hopper", "walker2d")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_F32 else n for n in F32_TOL]
)
def test_float32_matches_mujoco(name):
    worst = _compare_with_mujoco(name)
    assert worst <= F32_TOL[name], f"{name}: worst scaled obs error {worst:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ant"])
def test_float64_matches_mujoco_to_rounding(name):
    # A task whose float32 tolerance is loose: in float64 it matches to ~1e-10.
    with jax.enable_x64(True):
        worst = _compare_with_mujoco(name, seed=1, x64=True)
    assert worst <= F64_TOL, f"{name}: worst scaled obs error {worst:.2e}"


@pytest.fixture(scope="module")
def pendulum():
    return _trajectory_fn("inverted_pendulum")[0]


def test_brax_interface(pendulum):
    assert pendulum.observation_size == 4
    assert pendulum.action_size == 1
    assert pendulum.backend == "mjx"
    assert pendulum.unwrapped is pendulum
    assert pendulum.dt == pytest.approx(0.04)


def test_brax_training_wrappers_step_like_single_envs(pendulum):
    # brax's trainers wrap envs this way (Episode, Vmap, AutoReset): the wrapped step is a
    # jit(vmap(env.step)). Reference for the first step: each env's first step inside the
    # (already compiled) single-env trajectory from the same reset key.
    env = brax_training.wrap(pendulum, episode_length=4)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state = reset(keys)
    first_obs = state.obs
    _, run = _trajectory_fn("inverted_pendulum")
    acts = np.array([[-5.0], [0.3], [5.0]])  # beyond the +-3 bounds on both sides
    trajs = [run(k, jnp.full((STEPS, 1), a)) for k, a in zip(keys, acts, strict=True)]
    state = step(state, jnp.asarray(acts, jnp.float32))
    assert state.obs.shape == (3, 4) and state.reward.shape == (3,) and state.done.shape == (3,)
    for i, traj in enumerate(trajs):
        np.testing.assert_allclose(first_obs[i], traj.start.obs, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(state.obs[i], traj.next_obs[0], rtol=1e-5, atol=1e-6)
        assert float(state.reward[i]) == float(traj.reward[0])
        assert float(state.done[i]) == float(traj.done[0]) == 0.0
    # Out-of-bound actions were clipped before reaching the physics.
    np.testing.assert_allclose(state.pipeline_state.ctrl[:, 0], [-3.0, 0.3, 3.0])
    # From a fresh reset, zero force for 5 steps (the same compiled programs): the pole
    # stays up, so only the episode limit ends the episodes.
    state = reset(keys)
    zero = jnp.zeros((3, 1))
    for t in range(1, 6):
        state = step(state, zero)
        assert state.obs.shape == (3, 4)
        if t == 4:  # the episode limit: done, and the next obs is the reset obs
            np.testing.assert_array_equal(state.done, [1.0, 1.0, 1.0])
            np.testing.assert_array_equal(state.info["truncation"], [1.0, 1.0, 1.0])
            np.testing.assert_array_equal(state.obs, first_obs)
        else:
            np.testing.assert_array_equal(state.done, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(state.info["steps"], [1.0, 1.0, 1.0])


def test_rollout_rejects_bad_sizes(pendulum):
    with pytest.raises(ValueError):
        mjx_env.rollout(pendulum, native.uniform_policy(pendulum.task), None, None, 0, 5)
