"""The MB-MPO iteration in-process: determinism, no recompiles, numerical faults."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbmpo_jax import buffer as buffer_lib
from mbmpo_jax import config as config_lib
from mbmpo_jax import dynamics, mbmpo


def _cfg(**meta):
    cfg = config_lib.get_config("inverted_pendulum", "smoke")
    cfg.num_iterations = 3
    cfg.initial_random_steps = 200
    for k, v in meta.items():
        cfg.meta[k] = v
    config_lib.validate(cfg)
    return cfg


@pytest.fixture(scope="module")
def trainer():
    return mbmpo.Trainer(_cfg())


class _CompileCounter:
    """Counts XLA backend compilations (any jitted function anywhere) while active."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if self.active and "backend_compile" in event:
            self.count += 1


_COUNTER = _CompileCounter()


def test_iterations_deterministic_and_no_recompiles(trainer):
    key = jax.random.PRNGKey(0)
    s1 = trainer.init(key)
    s1, m1 = trainer.iteration(s1)  # compiles everything
    _COUNTER.active, _COUNTER.count = True, 0
    s1, m1b = trainer.iteration(s1)
    s1, m1c = trainer.iteration(s1)
    _COUNTER.active = False
    assert _COUNTER.count == 0, f"{_COUNTER.count} compilations after the first iteration"

    # A second trainer of the same config, same seed: identical metrics and parameters.
    other = mbmpo.Trainer(_cfg())
    s2 = other.init(key)
    rows2 = []
    for _ in range(3):
        s2, m = other.iteration(s2)
        rows2.append(m)
    for a, b in zip([m1, m1b, m1c], rows2, strict=True):
        for k in a:
            if not k.startswith("Time/") and k != "Meta/ModelStepsPerSec":
                assert a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])), k
    for x, y in zip(jax.tree.leaves(s1), jax.tree.leaves(s2), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # Sanity of what was logged.
    assert m1c["iteration"] == 3
    assert m1c["n_timesteps"] > m1b["n_timesteps"] > m1["n_timesteps"] >= 200
    assert int(s1.buffer.count) == int(s1.n_timesteps)  # the buffer holds every real step
    for k, v in m1c.items():
        # k-step open-loop errors are nan when no real episode lasted k steps
        if k.startswith("Model/OpenLoopErr") and k != "Model/OpenLoopErr1":
            continue
        assert np.isfinite(v), k


def test_nan_models_never_reach_the_policy(trainer):
    """NaN model predictions: the pendulum's done() treats a non-finite state as the end of
    the episode, so only each rollout's first step survives the mask, and theta stays
    finite. (For never-done tasks the NaN reaches the loss and the step is rejected:
    tests/test_maml.py covers that path.)"""
    state = trainer.init(jax.random.PRNGKey(1))
    models = dynamics.model_params(state.ensemble)
    models = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), models)
    meta, post, diags = trainer._meta_train(state.meta, models)
    np.testing.assert_allclose(np.asarray(diags.alive_frac), 1.0 / trainer.cfg.meta.horizon)
    for leaf in jax.tree.leaves((meta.params, post)):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_nan_data_stops_with_clear_error(trainer):
    """NaN in the real data reaches the fit's check: ValueError before training."""
    state = trainer.init(jax.random.PRNGKey(2))
    buf = state.buffer.replace(obs=state.buffer.obs.at[3, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="NaN"):
        trainer.iteration(state.replace(buffer=buf))


def test_diverging_fit_raises(trainer, monkeypatch):
    state = trainer.init(jax.random.PRNGKey(3))

    def bad_fit(ens, buf, key, cfg):
        params = jax.tree.map(lambda x: x * jnp.nan, ens.params)
        info = dynamics.FitInfo(*(jnp.zeros(cfg.num_models) for _ in range(3)))
        return ens.replace(params=params), info

    monkeypatch.setattr(dynamics, "fit", bad_fit)
    with pytest.raises(mbmpo.NonFiniteError, match="non-finite model parameters"):
        trainer.iteration(state)


def test_warmup_steps_exact(trainer):
    state = trainer.init(jax.random.PRNGKey(4))
    assert int(state.n_timesteps) == 200 == int(buffer_lib.size(state.buffer))


def test_model_action_sampled_fits_and_imagines_with_the_policy_samples():
    """`meta.model_action=sampled` (the original code): the buffer keeps the policy's
    unclipped samples of each collection (the warm-up's uniform draws are in bounds)."""
    cfg = _cfg(model_action="sampled")
    cfg.policy.init_std = 5.0  # samples well outside the pendulum's [-3, 3]
    tr = mbmpo.Trainer(cfg)
    assert tr.meta_cfg.model_action == "sampled"
    state = tr.init(jax.random.PRNGKey(2))
    high = float(tr.task.act_high[0])
    n_warm = int(buffer_lib.size(state.buffer))
    assert np.all(np.abs(np.asarray(state.buffer.act)[:n_warm]) <= high)
    state, row = tr.iteration(state)
    n = int(buffer_lib.size(state.buffer))
    new = np.asarray(state.buffer.act)[n_warm:n]
    assert n == int(state.n_timesteps) > n_warm
    assert np.any(np.abs(new) > high), "the collection's unclipped samples are stored"
    assert np.isfinite(row["Model/OneStepMSE"]) and np.isfinite(row["Model/OpenLoopErr1"])


def test_policy_obs_normaliser_follows_the_buffer():
    """`policy.normalize_obs`: the warm-up sets the policy's normaliser to the warm-up's
    statistics; each iteration moves it to those of the buffer the models were fitted on
    (numpy's population mean and std of the valid rows), and the meta phase leaves it."""
    cfg = _cfg()
    cfg.policy.normalize_obs = True
    tr = mbmpo.Trainer(cfg)

    def np_stats(buf):
        obs = np.asarray(buf.obs, np.float64)[: int(buffer_lib.size(buf))]
        return obs.mean(0), np.maximum(obs.std(0), 1e-2)

    state = tr.init(jax.random.PRNGKey(6))
    for _ in range(2):
        mean, std = np_stats(state.buffer)
        if int(state.iteration) == 0:
            np.testing.assert_allclose(
                state.meta.params["obs_norm"]["mean"], mean, rtol=1e-4, atol=1e-5
            )
            np.testing.assert_allclose(state.meta.params["obs_norm"]["std"], std, rtol=1e-4)
        state, row = tr.iteration(state)
        np.testing.assert_allclose(
            state.meta.params["obs_norm"]["mean"], mean, rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(state.meta.params["obs_norm"]["std"], std, rtol=1e-4)
        assert np.isfinite(row["PrePolicy/AverageReturn"])
    # the paper's policy reads the raw observation
    assert "obs_norm" not in mbmpo.Trainer(_cfg()).init(jax.random.PRNGKey(6)).meta.params
