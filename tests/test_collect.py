"""Real-data collection under a step budget (native.collect) and its use by the Trainer.

References: a plain MuJoCo loop that replays each episode from its first observation, the
termination rule of the reference table written in numpy, and counts derived by hand.
"""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from mbmpo_jax import config as config_lib
from mbmpo_jax import mbmpo
from mbmpo_jax import policy as pol
from mbmpo_jax.envs import native
from mbmpo_jax.envs.tasks import get_task

_TORSO_Z = 1.25  # brax's hopper.xml places the torso here; obs[0] is the absolute height


def _np_hopper_done(o):
    """The reference table's hopper termination, numpy, one observation."""
    alive = np.isfinite(o).all() and (np.abs(o[3:]) < 100).all() and o[0] > 0.7
    return not (alive and abs(o[1]) < 0.2)


def _replay(task, obs0, acts):
    """Steps one MjData from the state of a reset observation with the recorded actions.

    Hopper's reset qvel (|.| <= 0.005) is below the observation's clip, and the physics does
    not depend on the root's x, so the reset observation determines the state."""
    m = task.model
    d = mujoco.MjData(m)
    d.qpos[:] = np.concatenate([[0.0, obs0[0] - _TORSO_Z], obs0[1:5]])
    d.qvel[:] = obs0[5:]
    mujoco.mj_forward(m, d)
    out = []
    for a in acts:
        d.ctrl[:] = a
        mujoco.mj_step(m, d, nstep=task.frame_skip)
        out.append(task.obs(d.qpos.copy(), d.qvel.copy()))
    return np.asarray(out)


@pytest.fixture(scope="module")
def hopper_collection():
    task = get_task("hopper", horizon=60)
    env = native.NativeEnv(task, 4)
    budget = 4 * 150 + 3  # not a multiple of N: the last time step is taken by 3 envs
    coll = native.collect(env, native.uniform_policy(task), None, jax.random.PRNGKey(3), budget)
    return task, budget, coll


def test_collect_takes_exactly_the_budget(hopper_collection):
    task, budget, coll = hopper_collection
    b = coll.batch
    assert b.obs.shape == (4, 151, task.obs_dim)
    assert coll.num_steps == budget == int(b.mask.sum())
    np.testing.assert_array_equal(b.mask[:, :150], True)
    np.testing.assert_array_equal(b.mask[:, 150], [True, True, True, False])
    assert b.transitions()[0].shape == (budget, task.obs_dim)


def test_collect_restarts_episodes_from_the_reset_distribution(hopper_collection):
    task, _, coll = hopper_collection
    b, first = coll.batch, coll.first
    assert first[:, 0].all()
    assert first[:, 1:].sum() >= 8, "uniform-random hoppers fall within 60 steps"
    # the reset distribution's support: qpos0 +- 0.005, qvel +- 0.005
    center = np.concatenate([[_TORSO_Z], np.asarray(task.qpos0)[2:], np.zeros(6)])
    num_episodes = 0
    for i in range(4):
        starts = list(np.flatnonzero(first[i])) + [int(b.mask[i].sum())]
        for s, e in zip(starts[:-1], starts[1:], strict=True):
            o0 = b.obs[i, s]
            assert np.all(np.abs(o0 - center) <= 0.005 + 1e-6), (i, s)
            # Within an episode each step continues from the last one ...
            np.testing.assert_array_equal(b.obs[i, s + 1 : e], b.next_obs[i, s : e - 1])
            # ... and the physics is MuJoCo's, stepped from the reset state.
            ref = _replay(task, o0, b.act[i, s:e])
            np.testing.assert_allclose(b.next_obs[i, s:e], ref, atol=1e-4)
            # The episode ends where the reference termination fires or at the horizon;
            # an episode cut by the budget (the row's last) may end anywhere before.
            dones = [_np_hopper_done(o) for o in ref]
            np.testing.assert_array_equal(b.done[i, s:e], dones)
            last_in_row = e == int(b.mask[i].sum())
            if not last_in_row:
                assert dones[-1] or e - s == task.horizon, (i, s, e)
                num_episodes += 1
            assert not any(dones[:-1]), "an episode continued past its termination"
            if last_in_row and (dones[-1] or e - s == task.horizon):
                num_episodes += 1
    assert coll.episode_returns.size == num_episodes
    assert coll.episode_lengths.sum() <= coll.num_steps


def test_complete_episode_returns_are_sums_of_rewards(hopper_collection):
    task, _, coll = hopper_collection
    b = coll.batch
    i = 0
    starts = list(np.flatnonzero(coll.first[i]))
    s, e = starts[0], starts[1]
    expected = float(
        np.sum(task.reward(jnp.asarray(b.obs[i, s:e]), b.act[i, s:e], b.next_obs[i, s:e]))
    )
    np.testing.assert_allclose(coll.episode_returns[0], expected, rtol=1e-5)
    assert coll.episode_lengths[0] == e - s


def test_environment_i_acts_with_policy_i():
    """T deterministic policies with different constant actions: env i's actions are c_i."""
    task = get_task("hopper", horizon=30)
    t = 4
    base = pol.init(jax.random.PRNGKey(0), task.obs_dim, task.act_dim, hidden=(8,))
    consts = np.linspace(-0.6, 0.6, t * task.act_dim).reshape(t, task.act_dim)

    def constant(c):
        layers = [dict(layer) for layer in base["layers"]]
        layers[-1] = {"w": jnp.zeros_like(layers[-1]["w"]), "b": jnp.asarray(c, jnp.float32)}
        return {"layers": layers, "log_std": jnp.full((task.act_dim,), -30.0)}

    params = jax.tree.map(lambda *xs: jnp.stack(xs), *[constant(c) for c in consts])
    env = native.NativeEnv(task, t)
    coll = native.collect(env, mbmpo.act_per_env, params, jax.random.PRNGKey(1), t * 90)
    b = coll.batch
    assert coll.first[:, 1:].any(), "episodes restart (horizon 30 within 90 steps)"
    for i in range(t):
        np.testing.assert_allclose(
            b.act[i][b.mask[i]], np.broadcast_to(consts[i], (90, 3)), atol=1e-4
        )


def _trainer(initial_random_steps, steps_per_iteration=0):
    # The meta and ensemble configs of tests/test_mbmpo.py's trainer: one compilation.
    cfg = config_lib.get_config("inverted_pendulum", "smoke")
    cfg.initial_random_steps = initial_random_steps
    cfg.steps_per_iteration = steps_per_iteration
    cfg.total_steps = initial_random_steps + 2 * max(steps_per_iteration, 1)
    config_lib.validate(cfg)
    return mbmpo.Trainer(cfg)


def test_warmup_is_counted_and_evaluation_is_not():
    tr = _trainer(initial_random_steps=301, steps_per_iteration=157)
    assert tr.steps_per_iteration == 157 and tr.num_iterations == 2
    state = tr.init(jax.random.PRNGKey(0))
    assert int(state.n_timesteps) == 301 == int(state.buffer.count)
    state, m = tr.iteration(state)
    # The collection's budget is counted; the evaluation episodes (num_eval_rollouts
    # complete episodes of the pre-update policy) are neither counted nor stored.
    assert int(state.n_timesteps) == 301 + 157 == int(state.buffer.count) == m["n_timesteps"]
    assert m["PrePolicy/AverageLength"] > 0 and m["PostPolicy/NumEpisodes"] >= 1
