"""Task specs and the native executor against independent references.

References: hand-written numpy rewards from the paper's table, MuJoCo's own body
velocities/positions (mj_objectVelocity, xpos) for the observation indices, and a
step-by-step Python loop for termination.
"""

import jax
import mujoco
import numpy as np
import pytest

from mbmpo_jax.envs import native
from mbmpo_jax.envs.tasks import TASKS, get_task

PAPER = ["halfcheetah", "ant", "walker2d", "hopper", "swimmer"]
ALL = PAPER + ["inverted_pendulum"]

# (obs_dim, act_dim) from the reference table.
DIMS = {
    "halfcheetah": (17, 6),
    "ant": (27, 8),
    "walker2d": (17, 6),
    "hopper": (11, 3),
    "swimmer": (8, 2),
    "inverted_pendulum": (4, 1),
}


def np_reward(name, o, a, o2):
    """The reference table's rewards, written again in numpy."""
    sq = np.sum(a**2, axis=-1)
    if name == "halfcheetah":
        return o2[..., 8] - 0.1 * sq
    if name == "ant":
        return o2[..., 13] - 0.005 * sq + 1.0
    if name == "walker2d":
        return o2[..., 8] + 1.0 - 1e-3 * sq
    if name == "hopper":
        return o2[..., 5] + 1.0 - 1e-3 * sq
    if name == "swimmer":
        return o2[..., 3] - 1e-4 * sq
    return np.ones(o2.shape[:-1])


def test_registry_dims_and_horizon():
    assert set(ALL) <= set(TASKS)
    for name in ALL:
        t = get_task(name)
        assert (t.obs_dim, t.act_dim) == DIMS[name], name
        assert t.horizon == 200
        assert t.init_obs(jax.random.PRNGKey(0), (3,)).shape == (3, DIMS[name][0])
    assert get_task("hopper", horizon=100).horizon == 100


def test_unknown_task_names_valid_ones():
    with pytest.raises(ValueError, match="valid tasks: .*halfcheetah.*ant"):
        get_task("cheetah")


@pytest.mark.parametrize("name", PAPER)
def test_observation_indices_against_model(name):
    """fwd_vel_index is the torso's world x-velocity; height_index its world height."""
    t = get_task(name)
    m = t.model
    d = mujoco.MjData(m)
    torso = 1  # first body after the world
    assert m.body_rootid[torso] == torso and m.jnt_bodyid[0] == torso
    rng = np.random.default_rng(0)
    qpos, qvel = (np.asarray(x, np.float64) for x in t.init_state(jax.random.PRNGKey(3)))
    d.qpos[:], d.qvel[:] = qpos, qvel
    mujoco.mj_forward(m, d)
    for _ in range(5):
        d.ctrl[:] = rng.uniform(t.act_low, t.act_high)
        mujoco.mj_step(m, d, nstep=t.frame_skip)
        mujoco.mj_forward(m, d)  # mj_step leaves kinematics of the pre-step state
        obs = t.obs(d.qpos, d.qvel)
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_BODY, torso, vel, 0)
        # mj_objectVelocity gives [angular, linear] in the world frame at the body's centre
        # of mass; move it to the body frame's origin (the root joint): v + w x (p - c).
        lin = vel[3:] + np.cross(vel[:3], d.xpos[torso] - d.xipos[torso])
        if name in ("hopper", "walker2d"):
            lin = np.clip(lin, -10, 10)  # their observations clip velocities
        np.testing.assert_allclose(obs[t.fwd_vel_index], lin[0], atol=1e-8)
        if t.height_index is not None:
            np.testing.assert_allclose(obs[t.height_index], d.xpos[torso, 2], atol=1e-8)


@pytest.mark.parametrize("name", ALL)
def test_reset_determinism(name):
    env = native.NativeEnv(get_task(name), 4)
    a = env.reset(jax.random.PRNGKey(7))
    b = env.reset(jax.random.PRNGKey(7))
    c = env.reset(jax.random.PRNGKey(8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a[0], a[1])  # each env gets its own noise


@pytest.mark.parametrize("name", ALL)
def test_reward_parity_step_and_rollout(name):
    t = get_task(name)
    env = native.NativeEnv(t, 3)
    obs = env.reset(jax.random.PRNGKey(0))
    act = np.random.default_rng(1).uniform(-2, 2, (3, t.act_dim))  # out of bounds on purpose
    next_obs, rew, _ = env.step(act)
    clipped = np.clip(act, t.act_low, t.act_high)
    np.testing.assert_allclose(rew, np_reward(name, obs, clipped, next_obs), rtol=1e-5, atol=1e-5)

    batch = native.rollout(env, native.uniform_policy(t), None, jax.random.PRNGKey(2), horizon=20)
    ref = np_reward(name, batch.obs, batch.act, batch.next_obs)
    np.testing.assert_allclose(batch.reward, ref, rtol=1e-5, atol=1e-5)
    # Consecutive transitions chain: next_obs[t] == obs[t+1] while alive.
    m = batch.mask[:, 1:]
    np.testing.assert_array_equal(batch.next_obs[:, :-1][m], batch.obs[:, 1:][m])


def _fallen_state(name, t):
    qpos, qvel = t.qpos0.astype(np.float64), np.zeros(t.model.nv)
    if name in ("hopper", "walker2d"):
        qpos[1] = -0.6  # torso at 0.65 m: below both thresholds
    elif name == "ant":
        qpos[2] = 0.15
    elif name == "inverted_pendulum":
        qpos[1] = 0.5
    return qpos, qvel


@pytest.mark.parametrize("name", ["hopper", "walker2d", "ant", "inverted_pendulum"])
def test_done_fires(name):
    t = get_task(name)
    up = t.obs(t.qpos0.astype(np.float64), np.zeros(t.model.nv))
    if name in ("hopper", "walker2d"):
        assert abs(up[0] - 1.25) < 1e-9
    assert not bool(t.done(up.astype(np.float32)))
    down = t.obs(*_fallen_state(name, t))
    assert bool(t.done(down.astype(np.float32)))
    tilted = up.copy()
    if name in ("hopper", "walker2d"):
        tilted[1] = 1.1  # torso pitched past both bounds
        assert bool(t.done(tilted.astype(np.float32)))
    nan = up.copy()
    nan[-1] = np.nan
    if name != "walker2d":  # the reference's walker check has no finiteness test
        assert bool(t.done(nan.astype(np.float32)))


def test_never_done_tasks():
    for name in ("halfcheetah", "swimmer"):
        t = get_task(name)
        assert not np.asarray(t.done(np.full((4, t.obs_dim), 1e6, np.float32))).any()


@pytest.mark.parametrize("name", ["hopper", "inverted_pendulum"])
def test_rollout_termination_matches_python_loop(name):
    """rollout's masks equal stepping one env at a time until the reference done fires."""
    t = get_task(name)
    env = native.NativeEnv(t, 4)
    batch = native.rollout(env, native.uniform_policy(t), None, jax.random.PRNGKey(5))
    assert batch.mask[:, 0].all() and not batch.mask.all()  # random policies fall
    single = native.NativeEnv(t, 1)
    for i in range(4):
        length = int(batch.mask[i].sum())
        assert batch.mask[i, :length].all()  # a prefix
        single.set_state(
            np.asarray(_qpos_qvel_from_batch(env, batch, i, t)[0])[None],
            np.asarray(_qpos_qvel_from_batch(env, batch, i, t)[1])[None],
        )
        for s in range(length):
            o2, _, d = single.step(batch.act[i, s][None])
            np.testing.assert_allclose(o2[0], batch.next_obs[i, s], atol=1e-5)
            assert bool(d[0]) == (s == length - 1 and length < t.horizon), (i, s)


def _qpos_qvel_from_batch(env, batch, i, t):
    # Rebuild the reset state of env i by replaying the reset key: rollout splits the key
    # as (key, reset_key) and resets with reset_key.
    _, reset_key = jax.random.split(jax.random.PRNGKey(5))
    qpos, qvel = t.init_state(reset_key, (env.num_envs,))
    return qpos[i], qvel[i]


def test_bad_actions_raise_and_leave_state():
    t = get_task("halfcheetah")
    env = native.NativeEnv(t, 2)
    obs = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="action shape"):
        env.step(np.zeros((2, 5)))
    act = np.zeros((2, 6))
    act[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"non-finite action for env\(s\) \[1\]"):
        env.step(act)
    np.testing.assert_array_equal(env.observe(), obs)
