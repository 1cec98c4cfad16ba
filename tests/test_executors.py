"""The real-data executor contract (`mbmpo_jax.envs.executor`): native MuJoCo and MJX.

References: the native executor (MuJoCo's C library, itself checked against plain MuJoCo
loops in tests/test_collect.py) for MJX; counts derived by hand; constant policies whose
actions are known. MJX runs in float32 here, so its observations match the native ones to
the float32 rounding of the physics (tests/test_mjx_env.py: ~1e-5 over 20 steps on the
inverted pendulum), and where an episode ends (a threshold on the state) matches exactly
for these seeds.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbmpo_jax import config as config_lib
from mbmpo_jax import mbmpo
from mbmpo_jax import policy as pol
from mbmpo_jax.envs import mjx_env, native
from mbmpo_jax.envs.executor import Executor
from mbmpo_jax.envs.tasks import get_task

N = 4
TASK = get_task("inverted_pendulum", horizon=25)
EXECUTORS = {"native": native.NativeExecutor, "mjx": mjx_env.MjxExecutor}


@pytest.fixture(scope="module")
def executors() -> dict[str, Executor]:
    return {name: make(TASK, N) for name, make in EXECUTORS.items()}


def _constant_policies(consts):
    """[T]-stacked deterministic policies whose action is consts[i] whatever the obs."""
    base = pol.init(jax.random.PRNGKey(0), TASK.obs_dim, TASK.act_dim, hidden=(8,))

    def constant(c):
        layers = [dict(layer) for layer in base["layers"]]
        layers[-1] = {"w": jnp.zeros_like(layers[-1]["w"]), "b": jnp.asarray(c, jnp.float32)}
        return {"layers": layers, "log_std": jnp.full((TASK.act_dim,), -30.0)}

    return jax.tree.map(lambda *xs: jnp.stack(xs), *[constant(c) for c in consts])


def test_both_classes_are_executors(executors):
    for ex in executors.values():
        assert isinstance(ex.task, type(TASK)) and ex.num_envs == N
        assert callable(ex.rollout) and callable(ex.collect)


def test_mjx_collect_matches_native_collect(executors):
    budget = N * 40 + 3  # not a multiple of N: the last step is taken by 3 environments
    key = jax.random.PRNGKey(7)
    act_fn = native.uniform_policy(TASK)
    ref = executors["native"].collect(act_fn, None, key, budget)
    got = executors["mjx"].collect(act_fn, None, key, budget)
    assert got.num_steps == ref.num_steps == budget
    assert got.batch.obs.shape == ref.batch.obs.shape == (N, 41, TASK.obs_dim)
    for field in ("obs", "act", "next_obs", "reward"):
        assert getattr(got.batch, field).dtype == np.float32, field
    np.testing.assert_array_equal(got.batch.mask, ref.batch.mask)
    # Same keys, same restart rule: episodes restart at the same steps, from the same
    # reset states, with the same actions; the physics agrees to float32 rounding.
    assert ref.first[:, 1:].sum() >= N, "random pendulums fall within 25 steps"
    np.testing.assert_array_equal(got.first, ref.first)
    np.testing.assert_array_equal(got.batch.done, ref.batch.done)
    m = ref.batch.mask
    np.testing.assert_allclose(got.batch.act[m], ref.batch.act[m], atol=1e-6)
    # uniform draws inside the bounds: the policy's samples are the applied actions
    for b in (got.batch, ref.batch):
        assert b.sampled_act.dtype == np.float32
        np.testing.assert_array_equal(b.sampled_act[m], b.act[m])
    np.testing.assert_allclose(got.batch.obs[m], ref.batch.obs[m], atol=1e-3)
    np.testing.assert_allclose(got.batch.next_obs[m], ref.batch.next_obs[m], atol=1e-3)
    np.testing.assert_allclose(got.batch.reward, ref.batch.reward, atol=1e-5)
    np.testing.assert_allclose(got.episode_returns, ref.episode_returns, atol=1e-4)
    np.testing.assert_array_equal(got.episode_lengths, ref.episode_lengths)
    # Episodes restart from the reset distribution: exactly native's draws.
    starts = ref.first & m
    np.testing.assert_allclose(got.batch.obs[starts], ref.batch.obs[starts], atol=1e-6)


def test_mjx_rollout_matches_native_rollout(executors):
    key = jax.random.PRNGKey(3)
    act_fn = native.uniform_policy(TASK)
    ref = executors["native"].rollout(act_fn, None, key)
    got = executors["mjx"].rollout(act_fn, None, key)
    assert got.obs.shape == ref.obs.shape == (N, TASK.horizon, TASK.obs_dim)
    np.testing.assert_array_equal(got.mask, ref.mask)
    np.testing.assert_array_equal(got.done, ref.done)
    assert ref.done.any(axis=1).all(), "every random pendulum falls within 25 steps"
    m = ref.mask
    np.testing.assert_allclose(got.act[m], ref.act[m], atol=1e-6)
    np.testing.assert_allclose(got.next_obs[m], ref.next_obs[m], atol=1e-3)
    np.testing.assert_allclose(got.returns, ref.returns, atol=1e-4)
    assert (got.reward[~m] == 0).all() and not got.done[~m].any()
    # The masking against a Python loop over each episode, on MJX's own transitions.
    for i in range(N):
        alive, ret = True, 0.0
        for t in range(TASK.horizon):
            assert got.mask[i, t] == alive
            if not alive:
                np.testing.assert_array_equal(got.obs[i, t], got.next_obs[i, t - 1])  # frozen
                continue
            ret += got.reward[i, t]
            if t + 1 < TASK.horizon:
                np.testing.assert_array_equal(got.obs[i, t + 1], got.next_obs[i, t])
            assert got.done[i, t] == bool(TASK.done(got.next_obs[i, t]))
            alive = not got.done[i, t]
        assert float(got.returns[i]) == pytest.approx(ret)
    rewards = TASK.reward(got.obs, got.act, got.next_obs)
    np.testing.assert_allclose(np.where(m, got.reward, 0.0), np.where(m, rewards, 0.0))
    assert np.all(np.abs(got.act) <= TASK.act_high)
    # New params and key reuse the compiled program.
    size = mjx_env._rollout._cache_size()
    executors["mjx"].rollout(act_fn, None, jax.random.PRNGKey(4))
    assert mjx_env._rollout._cache_size() == size


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_environment_i_acts_with_policy_i(executors, name):
    consts = np.linspace(-0.5, 0.5, N).reshape(N, TASK.act_dim)
    params = _constant_policies(consts)
    coll = executors[name].collect(mbmpo.act_per_env, params, jax.random.PRNGKey(1), N * 30)
    b = coll.batch
    assert coll.first[:, 1:].any(), "episodes restart within 30 steps"
    for i in range(N):
        np.testing.assert_allclose(b.act[i][b.mask[i]], np.full((30, 1), consts[i, 0]), atol=1e-4)


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_actions_are_clipped_and_non_finite_ones_refused(executors, name):
    ex = executors[name]
    big = _constant_policies(np.full((N, 1), 50.0))
    # The budget of the test above: MJX reuses its compiled program.
    coll = ex.collect(mbmpo.act_per_env, big, jax.random.PRNGKey(0), N * 30)
    b = coll.batch
    np.testing.assert_array_equal(b.act[b.mask], TASK.act_high[0])
    # the policy's sample is kept beside the applied action (the original code's models
    # were fitted on it)
    np.testing.assert_allclose(b.sampled_act[b.mask], 50.0, atol=1e-4)  # std e^-30
    obs, act, next_obs = b.transitions()
    obs_s, act_s, next_s = b.transitions("sampled")
    np.testing.assert_array_equal(act, TASK.act_high[0])
    np.testing.assert_allclose(act_s, 50.0, atol=1e-4)
    np.testing.assert_array_equal(obs_s, obs)
    np.testing.assert_array_equal(next_s, next_obs)
    with pytest.raises(ValueError, match="'clipped' or 'sampled'"):
        b.actions("raw")
    rolled = ex.rollout(mbmpo.act_per_env, big, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(rolled.act[rolled.mask], TASK.act_high[0])
    np.testing.assert_allclose(rolled.sampled_act[rolled.mask], 50.0, atol=1e-4)
    bad = _constant_policies(np.asarray([[0.0], [np.nan], [0.0], [0.0]]))
    with pytest.raises(ValueError, match=r"non-finite action for env\(s\) \[1\]"):
        ex.collect(mbmpo.act_per_env, bad, jax.random.PRNGKey(0), N * 30)


def test_mjx_collect_compiles_once_per_shape(executors):
    ex = executors["mjx"]
    params = _constant_policies(np.zeros((N, 1)))
    ex.collect(mbmpo.act_per_env, params, jax.random.PRNGKey(0), N * 30)
    size = mjx_env._collect._cache_size()
    other = _constant_policies(np.ones((N, 1)))
    ex.collect(mbmpo.act_per_env, other, jax.random.PRNGKey(1), N * 30)
    assert mjx_env._collect._cache_size() == size


@pytest.mark.slow
def test_trainer_runs_on_the_mjx_executor():
    # tests/test_mbmpo.py's smoke trainer configuration (one compilation of its phases).
    cfg = config_lib.get_config("inverted_pendulum", "smoke")
    cfg.executor = "mjx"
    config_lib.validate(cfg)
    tr = mbmpo.Trainer(cfg)
    assert isinstance(tr.collector, mjx_env.MjxExecutor)
    state = tr.init(jax.random.PRNGKey(0))
    assert int(state.n_timesteps) == cfg.initial_random_steps == int(state.buffer.count)
    state, m = tr.iteration(state)
    assert m["n_timesteps"] == cfg.initial_random_steps + tr.steps_per_iteration
    assert int(state.buffer.count) == m["n_timesteps"]
    assert np.isfinite(m["PrePolicy/AverageReturn"]) and m["PrePolicy/AverageLength"] > 0


def test_unknown_executor_is_a_config_error():
    cfg = config_lib.get_config("hopper", "smoke")
    cfg.executor = "gpu"
    with pytest.raises(config_lib.ConfigError, match="executor must be one of native, mjx"):
        config_lib.validate(cfg)
