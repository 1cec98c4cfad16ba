"""Imaginary rollouts: shapes, task-to-model assignment, clipping and done masking against
a Python-loop replay."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbmpo_jax import ensemble
from mbmpo_jax import imagine as im
from mbmpo_jax import policy as pol


class ToyTask:
    """2-D point; reward = progress along +x; done once x > x_done."""

    obs_dim, act_dim = 2, 2
    act_low = np.array([-1.0, -1.0], np.float32)
    act_high = np.array([1.0, 1.0], np.float32)

    def __init__(self, x_done=0.3):
        self.x_done = x_done

    def reward(self, obs, act, next_obs):
        return next_obs[..., 0] - obs[..., 0] - 0.01 * jnp.sum(act**2, axis=-1)

    def done(self, next_obs):
        return next_obs[..., 0] > self.x_done

    def init_obs(self, key, shape):
        return 0.05 * jax.random.normal(key, (*shape, 2))


def shift_dynamics(model, obs, act):
    return obs + 0.1 * act + model["shift"]


def _models(k):
    return {"shift": jnp.stack([jnp.array([0.01 * (i + 1), -0.02 * (i + 1)]) for i in range(k)])}


def _task_params(key, t, hidden=(8,), init_std=1.0):
    keys = jax.random.split(key, t)
    return jax.vmap(lambda k: pol.init(k, 2, 2, hidden, init_std))(keys)


def _run(
    key,
    params,
    models,
    task,
    r,
    h,
    start_obs=None,
    obs_clip=1000.0,
    reward_action="clipped",
    model_action="clipped",
):
    f = jax.jit(
        lambda k, p, m, s: im.imagine(
            k,
            p,
            m,
            task,
            shift_dynamics,
            rollouts_per_task=r,
            horizon=h,
            start_obs=s,
            obs_clip=obs_clip,
            reward_action=reward_action,
            model_action=model_action,
        )
    )
    return f(key, params, models, start_obs)


def test_task_to_model_contiguous_and_validated():
    np.testing.assert_array_equal(ensemble.task_to_member(20, 5), np.repeat(np.arange(5), 4))
    np.testing.assert_array_equal(ensemble.task_to_member(6, 3), [0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError):
        ensemble.task_to_member(20, 3)
    params = _task_params(jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError):
        im.imagine(
            jax.random.PRNGKey(0),
            params,
            _models(3),
            ToyTask(),
            shift_dynamics,
            rollouts_per_task=2,
            horizon=3,
        )


def test_shapes_and_each_task_uses_its_model():
    t, k, r, h = 6, 3, 4, 5
    # near-deterministic zero action: every step moves the state by its model's shift
    params = _task_params(jax.random.PRNGKey(1), t, init_std=1e-5)
    params = jax.tree.map(jnp.zeros_like, params) | {"log_std": jnp.full((t, 2), np.log(1e-5))}
    out = _run(jax.random.PRNGKey(2), params, _models(k), ToyTask(x_done=10.0), r, h)
    assert out.obs.shape == (t, r, h, 2) and out.act.shape == (t, r, h, 2)
    for x in (out.rew, out.mask, out.logp):
        assert x.shape == (t, r, h)
    assert out.last_obs.shape == (t, r, 2)
    steps = np.diff(np.concatenate([out.obs, out.last_obs[:, :, None]], axis=2), axis=2)
    shifts = np.asarray(_models(k)["shift"])
    for i in range(t):
        np.testing.assert_allclose(
            steps[i], np.broadcast_to(shifts[i // (t // k)], steps[i].shape), atol=1e-5
        )
    np.testing.assert_array_equal(out.mask, 1.0)


def _np_mlp(params, i, obs):
    h = obs
    layers = params["layers"]
    for layer in layers[:-1]:
        h = np.tanh(
            h @ np.asarray(layer["w"][i], np.float64) + np.asarray(layer["b"][i], np.float64)
        )
    mean = h @ np.asarray(layers[-1]["w"][i], np.float64) + np.asarray(
        layers[-1]["b"][i], np.float64
    )
    return mean, np.asarray(params["log_std"][i], np.float64)


@pytest.mark.parametrize(
    "given_starts, reward_action, model_action",
    [
        (False, "clipped", "clipped"),
        (True, "clipped", "clipped"),
        (False, "sampled", "clipped"),
        (False, "sampled", "sampled"),
    ],
)
def test_done_masking_and_clipping_match_python_replay(given_starts, reward_action, model_action):
    """Replays the sampled (unclipped) actions in a Python loop with clipping, dynamics,
    reward, done and log-prob written independently. The model steps with the clipped or
    the sampled action; the reward's control cost takes the clipped or the sampled one."""
    t, k, r, h = 4, 2, 6, 12
    task = ToyTask(x_done=0.3)
    params = _task_params(jax.random.PRNGKey(3), t, init_std=1.5)
    models = _models(k)
    starts = None
    if given_starts:
        starts = jax.random.uniform(jax.random.PRNGKey(9), (t, r, 2), minval=-0.2, maxval=0.25)
    out = _run(
        jax.random.PRNGKey(4),
        params,
        models,
        task,
        r,
        h,
        starts,
        reward_action=reward_action,
        model_action=model_action,
    )
    obs, act = np.asarray(out.obs, np.float64), np.asarray(out.act, np.float64)
    shifts = np.asarray(models["shift"], np.float64)
    assert np.any(np.abs(act) > 1.0), "test should exercise action clipping"
    n_done = 0
    for i in range(t):
        for j in range(r):
            o = obs[i, j, 0]
            if given_starts:
                np.testing.assert_allclose(o, np.asarray(starts)[i, j], atol=1e-6)
            alive = True
            for s in range(h):
                np.testing.assert_allclose(obs[i, j, s], o, atol=1e-5)
                a = act[i, j, s]
                mean, log_std = _np_mlp(params, i, o)
                std = np.exp(log_std)
                logp = np.sum(-((a - mean) ** 2) / (2 * std**2) - np.log(std * np.sqrt(2 * np.pi)))
                np.testing.assert_allclose(out.logp[i, j, s], logp, rtol=1e-4, atol=1e-4)
                a_env = np.clip(a, -1.0, 1.0)
                a_model = a if model_action == "sampled" else a_env
                nxt = o + 0.1 * a_model + shifts[i // (t // k)]
                a_rew = a if reward_action == "sampled" else a_env
                rew = (nxt[0] - o[0]) - 0.01 * np.sum(a_rew**2)
                assert out.mask[i, j, s] == float(alive)
                np.testing.assert_allclose(out.rew[i, j, s], rew if alive else 0.0, atol=1e-5)
                if alive and nxt[0] > 0.3:
                    alive = False
                    n_done += 1
                o = nxt
    assert 0 < n_done < t * r, "test should have both finished and unfinished rollouts"


def test_reward_action_sampled_adds_the_cost_outside_the_bounds():
    """Same key, same states and actions: the two rewards differ by exactly the control
    cost of the part of each action outside the bounds, and a bad value is refused."""
    t, k, r, h = 2, 1, 8, 6
    task = ToyTask(x_done=10.0)
    params = _task_params(jax.random.PRNGKey(5), t, init_std=2.0)
    args = (jax.random.PRNGKey(6), params, _models(k), task, r, h)
    clipped, sampled = _run(*args), _run(*args, reward_action="sampled")
    np.testing.assert_array_equal(clipped.obs, sampled.obs)
    act = np.asarray(clipped.act, np.float64)
    extra = 0.01 * np.sum(act**2 - np.clip(act, -1.0, 1.0) ** 2, axis=-1)
    assert np.any(extra > 1e-3), "test should exercise actions outside the bounds"
    np.testing.assert_allclose(clipped.rew - sampled.rew, extra, atol=1e-5)
    with pytest.raises(ValueError, match="reward_action"):
        im.imagine(*args[:4], shift_dynamics, rollouts_per_task=r, horizon=h, reward_action="raw")
    with pytest.raises(ValueError, match="model_action"):
        im.imagine(*args[:4], shift_dynamics, rollouts_per_task=r, horizon=h, model_action="raw")


def test_state_clip_and_nonfinite_model():
    t, r, h = 2, 3, 4
    task = ToyTask(x_done=1e9)
    params = _task_params(jax.random.PRNGKey(5), t)
    models = {"shift": jnp.array([[600.0, -600.0], [jnp.nan, 0.0]])}
    out = _run(jax.random.PRNGKey(6), params, models, task, r, h, obs_clip=1000.0)
    assert np.all(np.abs(out.obs) <= 1000.0) and np.all(np.isfinite(out.obs))
    np.testing.assert_allclose(out.obs[0, :, 2:, 0], 1000.0)
    # the NaN model ends its rollouts after the first step, with zero reward
    np.testing.assert_array_equal(out.mask[1, :, 0], 1.0)
    np.testing.assert_array_equal(out.mask[1, :, 1:], 0.0)
    np.testing.assert_array_equal(out.rew[1], 0.0)
    assert np.all(np.isfinite(out.rew)) and np.all(np.isfinite(out.logp))
