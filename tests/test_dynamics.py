"""Tests for mbmpo_jax.dynamics: learning known systems, the vmapped fit against separate
and hand-written reference fits, early stopping, masking, recompiles and bad data.

Sizes are tiny (hidden 16-64, a few hundred transitions) so the file runs in well under
a minute on two CPU cores.
"""

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbmpo_jax import buffer, dynamics
from mbmpo_jax.dynamics import fitting

OBS_DIM, ACT_DIM = 3, 2


def _fill(capacity, obs, act, next_obs):
    return buffer.add(buffer.init(capacity, obs.shape[1], act.shape[1]), obs, act, next_obs)


def _random_inputs(rng, n, obs_dim=OBS_DIM, act_dim=ACT_DIM):
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1.0, 1.0, size=(n, act_dim)).astype(np.float32)
    return obs, act


# Shared by several tests so that they reuse one compilation (same config and shapes).
SMALL = dynamics.EnsembleConfig(num_models=3, hidden=(16, 16), batch_size=64, max_epochs=10)


def _member(state, k, cfg):
    """Model k of an ensemble as a one-model ensemble."""
    take = lambda x: x[k : k + 1]
    return dynamics.EnsembleState(
        params=jax.tree.map(take, state.params),
        opt_state=jax.tree.map(take, state.opt_state),
        norm=state.norm,
        cfg=dataclasses.replace(cfg, num_models=1),
    )


def _relative_error(pred, true, obs):
    """MSE of predicted next states over the variance of the true state change."""
    return float(((pred - true) ** 2).mean() / (true - obs).var())


# ---------------------------------------------------------------------- known systems


LINEAR_A = np.array([[0.1, -0.2, 0.0], [0.05, 0.0, 0.3], [-0.1, 0.1, -0.05]], np.float32)
LINEAR_B = np.array([[0.5, 0.0, -0.2], [0.1, 0.4, 0.3]], np.float32)


def _linear(obs, act):
    return obs + obs @ LINEAR_A + act @ LINEAR_B + 2.0  # a constant drift, too


def _pendulum(obs, act):
    """Damped driven pendulum, obs = (theta, omega, time-like third coordinate)."""
    theta, omega, z = obs[..., 0], obs[..., 1], obs[..., 2]
    omega2 = omega + 0.1 * (-3.0 * np.sin(theta) - 0.2 * omega + act[..., 0] * np.cos(z))
    return np.stack([theta + 0.1 * omega2, omega2, z + 0.1 * act[..., 1] ** 2], axis=-1)


@pytest.mark.parametrize(
    "system, hidden, epochs, tol",
    [(_linear, (32, 32), 60, 1e-2), (_pendulum, (64, 64), 120, 2e-2)],
    ids=["linear", "nonlinear"],
)
def test_fits_known_system(system, hidden, epochs, tol):
    rng = np.random.default_rng(0)
    obs, act = _random_inputs(rng, 1500)
    buf = _fill(2048, obs, act, system(obs, act))
    cfg = dynamics.EnsembleConfig(num_models=2, hidden=hidden, batch_size=100, max_epochs=epochs)
    state = dynamics.init(jax.random.key(0), OBS_DIM, ACT_DIM, cfg)
    state, info = dynamics.fit(state, buf, jax.random.key(1), cfg)

    test_obs, test_act = _random_inputs(np.random.default_rng(1), 500)
    true = system(test_obs, test_act)
    pred = np.asarray(dynamics.predict(state, test_obs, test_act))
    chex.assert_shape(pred, (2, 500, OBS_DIM))
    for k in range(2):
        assert _relative_error(pred[k], true, test_obs) < tol, (k, info)
    assert np.all(np.asarray(info.valid_loss) < tol)


# ------------------------------------------------------------- normaliser and masking


def test_normaliser_matches_numpy_on_valid_rows():
    rng = np.random.default_rng(2)
    obs, act = _random_inputs(rng, 37)
    obs = obs * [1.0, 5.0, 0.1] + [3.0, -1.0, 0.0]
    nxt = obs + rng.normal(size=obs.shape).astype(np.float32) * [0.1, 2.0, 0.01]
    buf = _fill(50, obs, act, nxt)
    # Rows past count are not data: poison them to prove they are masked out.
    buf = buf.replace(obs=buf.obs.at[40:].set(jnp.nan), act=buf.act.at[45:].set(1e6))
    norm = dynamics.compute_normaliser(buf)
    for got, want in [
        (norm.obs_mean, obs.mean(0)),
        (norm.obs_std, obs.std(0)),
        (norm.act_mean, act.mean(0)),
        (norm.act_std, act.std(0)),
        (norm.delta_mean, (nxt - obs).mean(0)),
        (norm.delta_std, (nxt - obs).std(0)),
    ]:
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    # Integer weights: the statistics of the data with each row repeated that many times.
    weights = rng.integers(1, 5, size=50).astype(np.float32)
    weighted = dynamics.compute_normaliser(buf, jnp.asarray(weights))
    reps = weights[:37].astype(int)
    o, a, d = (np.repeat(z, reps, axis=0) for z in (obs, act, nxt - obs))
    for got, want in [
        (weighted.obs_mean, o.mean(0)),
        (weighted.obs_std, o.std(0)),
        (weighted.act_mean, a.mean(0)),
        (weighted.act_std, a.std(0)),
        (weighted.delta_mean, d.mean(0)),
        (weighted.delta_std, d.std(0)),
    ]:
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def _numpy_model_step(model, k, obs, act):
    """Independent forward pass of model k (float64 numpy)."""
    leaf = lambda x: np.asarray(x[k], np.float64)
    nm = jax.tree.map(leaf, model.norm)
    h = np.concatenate(
        [(obs - nm.obs_mean) / (nm.obs_std + 1e-10), (act - nm.act_mean) / (nm.act_std + 1e-10)],
        axis=-1,
    )
    for i, layer in enumerate(model.layers):
        h = h @ leaf(layer["w"]) + leaf(layer["b"])
        if i < len(model.layers) - 1:
            h = np.maximum(h, 0.0)
    return np.clip(obs + h * (nm.delta_std + 1e-10) + nm.delta_mean, -1000.0, 1000.0)


def test_model_params_step_predict_and_clip():
    rng = np.random.default_rng(3)
    obs, act = _random_inputs(rng, 200)
    state = dynamics.init(jax.random.key(0), OBS_DIM, ACT_DIM, SMALL)
    keys = jax.random.split(jax.random.key(1), 3)
    state, _ = fitting._fit_with_keys(state, _fill(512, obs, act, _linear(obs, act)), keys, SMALL)
    models = dynamics.model_params(state)
    for leaf in jax.tree.leaves(models):
        assert leaf.shape[0] == 3

    q_obs, q_act = _random_inputs(rng, 7)
    pred = dynamics.predict(state, q_obs, q_act)
    chex.assert_shape(pred, (3, 7, OBS_DIM))
    task_to_model = jnp.array([2, 0, 0, 1])  # imagination gathers one model per task
    per_task = jax.tree.map(lambda x: x[task_to_model], models)
    for t, k in enumerate(np.asarray(task_to_model)):
        model_t = jax.tree.map(lambda x, t=t: x[t], per_task)
        got = dynamics.model_step(model_t, q_obs, q_act)
        np.testing.assert_allclose(got, pred[k], rtol=1e-5, atol=1e-5)
        want = _numpy_model_step(models, k, q_obs.astype(np.float64), q_act.astype(np.float64))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dynamics.ensemble_mean(state, q_obs, q_act), pred.mean(0))
    np.testing.assert_allclose(
        dynamics.ensemble_std(state, q_obs, q_act), np.asarray(pred).std(0), atol=1e-6
    )

    # Imagined states are clipped to +-obs_clip, and the step is differentiable.
    far = models.replace(norm=models.norm.replace(delta_mean=models.norm.delta_mean + 5e3))
    model_0 = jax.tree.map(lambda x: x[0], far)
    np.testing.assert_array_equal(dynamics.model_step(model_0, q_obs, q_act), 1000.0)
    grad = jax.grad(lambda o: dynamics.model_step(model_0, o, q_act).sum())(q_obs)
    assert np.all(np.asarray(grad) == 0.0)  # clipped: no gradient, but no NaN either
    model_0 = jax.tree.map(lambda x: x[0], models)
    grad = jax.grad(lambda a: dynamics.model_step(model_0, q_obs, a).sum())(q_act)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0.0)


def test_weight_norm_starts_as_plain_network_and_trains():
    rng = np.random.default_rng(4)
    obs, act = _random_inputs(rng, 300)
    buf = _fill(300, obs, act, _linear(obs, act))
    plain = dynamics.EnsembleConfig(
        num_models=2, hidden=(32,), batch_size=20, max_epochs=30, weight_norm=False
    )
    wn = dataclasses.replace(plain, weight_norm=True)
    s_plain = dynamics.init(jax.random.key(5), OBS_DIM, ACT_DIM, plain)
    s_wn = dynamics.init(jax.random.key(5), OBS_DIM, ACT_DIM, wn)
    assert set(s_wn.params[0]) == {"v", "g", "b"}
    chex.assert_trees_all_close(
        dynamics.model_params(s_plain).layers, dynamics.model_params(s_wn).layers, atol=1e-6
    )
    s_wn, info = dynamics.fit(s_wn, buf, jax.random.key(6))
    assert np.all(np.asarray(info.valid_loss) < 0.05), info  # from ~1 at the start


def test_config_validation():
    with pytest.raises(ValueError):
        dynamics.EnsembleConfig(activation="sigmoidish")
    with pytest.raises(ValueError):
        dynamics.EnsembleConfig(valid_split=1.0)
    with pytest.raises(ValueError, match="patience"):
        dynamics.EnsembleConfig(patience=-1)
    with pytest.raises(ValueError, match="min_improvement"):
        dynamics.EnsembleConfig(min_improvement=1.0)
    with pytest.raises(ValueError, match="recent_rows"):
        dynamics.EnsembleConfig(recent_rows=-1)
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="recent_weight"):
            dynamics.EnsembleConfig(recent_weight=bad)
    assert dynamics.EnsembleConfig(hidden=[8, 8]).hidden == (8, 8)  # hashable for jit
    cfg = dynamics.EnsembleConfig(num_models=2, hidden=(8,))
    state = dynamics.init(jax.random.key(0), OBS_DIM, ACT_DIM, cfg)
    obs, act = _random_inputs(np.random.default_rng(0), 10)
    with pytest.raises(ValueError, match="architecture"):
        dynamics.fit(
            state,
            _fill(10, obs, act, obs),
            jax.random.key(0),
            dataclasses.replace(cfg, hidden=(4,)),
        )


# --------------------------------------------------------- reference implementations


def _ref_loss(layers, xb, yb, wb):
    """Mean over rows of ``wb`` x the row's MSE (``wb`` all ones: the plain MSE)."""
    h = xb
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        h = jnp.maximum(h, 0.0) if i < len(layers) - 1 else h
    return (wb * ((h - yb) ** 2).mean(axis=-1)).mean()


@functools.partial(jax.jit, static_argnames="lr")
def _ref_step(layers, opt_state, xb, yb, wb, lr):
    value, grads = jax.value_and_grad(_ref_loss)(layers, xb, yb, wb)
    updates, opt_state = optax.adam(lr).update(grads, opt_state, layers)
    return optax.apply_updates(layers, updates), opt_state, value


def _reference_fit(layers, x, y, model_key, count, capacity, cfg, row_w):
    """Plain Python loop: host-sliced variable-size minibatches, optax Adam, and the
    original code's early-stopping rule; shares only the documented data order.
    ``row_w [count]``: each buffer row's loss weight (the training loss divides by the
    training rows' mean weight, the validation loss by the validation rows')."""
    n_val = int(count * cfg.valid_split)
    n_train = count - n_val
    split_key, shuffle_key = jax.random.split(model_key)
    perm = jax.jit(fitting._split_permutation, static_argnums=2)(split_key, count, capacity)
    epoch_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        shuffle_key, jnp.arange(cfg.max_epochs)
    )
    all_rows = jax.jit(jax.vmap(fitting._epoch_train_rows, in_axes=(0, None, None, None)))(
        epoch_keys, perm, n_val, count
    )
    perm, all_rows = np.asarray(perm), np.asarray(all_rows)[:, :n_train]
    assert sorted(perm[:count]) == list(range(count))
    val = perm[:n_val]
    train_w = row_w / row_w[perm[n_val:count]].mean()
    val_w = row_w / row_w[val].mean()

    opt_state = optax.adam(cfg.learning_rate).init(layers)
    avg = prev = None
    best, waited = math.inf, 0  # the patience rule (off when cfg.patience == 0)
    for epoch in range(cfg.max_epochs):
        rows = all_rows[epoch]
        assert sorted(rows) == sorted(perm[n_val:count])
        total = 0.0
        for i in range(0, n_train, cfg.batch_size):
            b = rows[i : i + cfg.batch_size]
            layers, opt_state, value = _ref_step(
                layers, opt_state, x[b], y[b], train_w[b], lr=cfg.learning_rate
            )
            total += float(value) * len(b)
        v = float(jax.jit(_ref_loss)(layers, x[val], y[val], val_w[val]))
        if avg is None:
            avg, prev = 1.5 * v, 2.0 * v
        avg = cfg.persistency * avg + (1 - cfg.persistency) * v
        if v < best * (1 - cfg.min_improvement):
            best, waited = v, 0
        else:
            waited += 1
        if prev < avg or (cfg.patience and waited >= cfg.patience):
            break
        prev = avg
    return layers, epoch + 1, total / n_train, v


@pytest.mark.parametrize("rule", ["persistency", "patience"])
def test_fit_matches_python_loop_reference(rule):
    """Masked fixed-shape minibatches, traced trip counts and the while-loop early
    stopping (the paper's moving-average rule, or the patience rule with the paper's
    rule kept from firing) equal a plain loop over exactly-sliced batches (count not a
    multiple of the batch size, capacity larger than count). The patience case also
    weighs the newest 90 transitions 4x (the recency weight), in a buffer that has
    wrapped around (the newest rows straddle the end of the arrays), against the loop's
    weights from each row's known arrival order. Tolerance: 2e-5 on parameters."""
    rng = np.random.default_rng(7)
    count, capacity = 237, 300
    obs, act = _random_inputs(rng, count)
    nxt = obs + rng.normal(size=obs.shape).astype(np.float32)  # noise: stops early
    row_w = np.ones(count, np.float32)
    if rule == "patience":
        # 337 transitions into 237 rows: the first 100 are overwritten; row r then holds
        # the one that arrived (r - 100) % 237-th among the survivors.
        capacity = count
        more_obs, more_act = _random_inputs(rng, 100)
        more_nxt = more_obs + rng.normal(size=more_obs.shape).astype(np.float32)
        buf = _fill(capacity, more_obs, more_act, more_nxt)
        shift = np.where(np.arange(count) >= count - 90, 2.0, 0.0)[:, None]  # the newest 90
        obs, nxt = obs + shift, nxt + 1.5 * shift  # elsewhere, so the weights move the stats
        buf = buffer.add(buf, obs, act, nxt.astype(np.float32))
        obs, act, nxt = (np.asarray(a) for a in (buf.obs, buf.act, buf.next_obs))
        arrival = (np.arange(count) - 100) % count  # 0: the oldest survivor
        row_w[arrival >= count - 90] = 4.0
    else:
        buf = _fill(capacity, obs, act, nxt)
    # Low persistency so that early stopping fires within a few epochs; or the paper's
    # persistency (which does not fire within 12 epochs) and a patience of 2.
    stopping = dict(persistency=0.3) if rule == "persistency" else dict(patience=2)
    if rule == "patience":
        stopping.update(recent_rows=90, recent_weight=4.0)
    cfg = dynamics.EnsembleConfig(
        num_models=2,
        hidden=(16, 16),
        batch_size=50,
        max_epochs=12,
        weight_norm=False,  # the loop reference has plain layers
        **stopping,
    )
    state = dynamics.init(jax.random.key(8), OBS_DIM, ACT_DIM, cfg)
    keys = jax.random.split(jax.random.key(9), 2)
    new_state, info = fitting._fit_with_keys(state, buf, keys, cfg)

    d = nxt - obs
    # The normaliser's statistics, weighted by the rows' weights (all 1 for "persistency").
    wmean = lambda z: (row_w[:, None] * z).sum(0) / row_w.sum()
    norm = lambda z: (z - wmean(z)) / (np.sqrt(wmean((z - wmean(z)) ** 2)) + 1e-10)
    x = np.concatenate([norm(obs), norm(act)], axis=1)  # host arrays: sliced in numpy
    y = norm(d)
    for k in range(2):
        init_layers = [(layer["w"][k], layer["b"][k]) for layer in state.params]
        layers, epochs, train_loss, valid_loss = _reference_fit(
            init_layers, x, y, keys[k], count, capacity, cfg, row_w
        )
        assert int(info.epochs[k]) == epochs
        for (w, b), layer in zip(layers, new_state.params, strict=True):
            np.testing.assert_allclose(layer["w"][k], w, atol=2e-5)
            np.testing.assert_allclose(layer["b"][k], b, atol=2e-5)
        np.testing.assert_allclose(info.train_loss[k], train_loss, rtol=1e-4)
        np.testing.assert_allclose(info.valid_loss[k], valid_loss, rtol=1e-4)
    assert int(info.epochs.min()) < cfg.max_epochs  # the stopping rule was exercised
    if rule == "patience":  # and it was the patience rule that stopped the fit
        _, no_patience = fitting._fit_with_keys(
            state, buf, keys, dataclasses.replace(cfg, patience=0)
        )
        assert np.all(np.asarray(no_patience.epochs) == cfg.max_epochs), no_patience
    if rule == "patience":  # the weights changed the fit
        plain, _ = fitting._fit_with_keys(
            state, buf, keys, dataclasses.replace(cfg, recent_weight=1.0)
        )
        assert not np.allclose(plain.params[0]["w"], new_state.params[0]["w"], atol=1e-4)


def test_ensemble_fit_equals_separate_single_model_fits():
    """One vmapped K=3 fit vs three K=1 fits with the same per-model keys. Batched and
    unbatched matmuls round differently, and Adam amplifies that over epochs, so this
    compares after 10 epochs with atol 1e-4 on parameters (observed ~1e-6)."""
    rng = np.random.default_rng(10)
    obs, act = _random_inputs(rng, 400)
    buf = _fill(512, obs, act, _pendulum(obs, act))
    cfg = SMALL
    state = dynamics.init(jax.random.key(11), OBS_DIM, ACT_DIM, cfg)
    keys = jax.random.split(jax.random.key(12), 3)
    ens, info = fitting._fit_with_keys(state, buf, keys, cfg)
    single_cfg = dataclasses.replace(cfg, num_models=1)
    for k in range(3):
        one, one_info = fitting._fit_with_keys(
            _member(state, k, cfg), buf, keys[k : k + 1], single_cfg
        )
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, k=k: x[k], ens.params),
            jax.tree.map(lambda x: x[0], one.params),
            atol=1e-4,
        )
        assert int(info.epochs[k]) == int(one_info.epochs[0])
        np.testing.assert_allclose(info.valid_loss[k], one_info.valid_loss[0], rtol=1e-4)


# ---------------------------------------------------------------------- early stopping


def test_noise_model_stops_before_learnable_one_and_stays_frozen():
    rng = np.random.default_rng(13)
    obs, act = _random_inputs(rng, 150)  # few points: a (64, 64) net overfits noise fast
    learnable = _fill(256, obs, act, _linear(obs, act))
    noise = _fill(256, obs, act, obs + rng.normal(size=obs.shape).astype(np.float32))
    cfg = dynamics.EnsembleConfig(num_models=3, hidden=(64, 64), batch_size=50, max_epochs=150)
    state = dynamics.init(jax.random.key(14), OBS_DIM, ACT_DIM, cfg)
    keys = jax.random.split(jax.random.key(15), 3)

    _, info_learn = fitting._fit_with_keys(state, learnable, keys, cfg)
    noisy, info_noise = fitting._fit_with_keys(state, noise, keys, cfg)
    epochs_noise = np.asarray(info_noise.epochs)
    assert np.all(np.asarray(info_learn.epochs) == cfg.max_epochs), info_learn
    assert np.all(epochs_noise < cfg.max_epochs), info_noise

    # Frozen: rerun the same fit, cut at the epoch where the first model stopped. That
    # model's parameters must be bit-for-bit what the full fit returns, while models
    # that kept training have moved on.
    first = int(epochs_noise.argmin())
    assert epochs_noise[first] < epochs_noise.max(), "need models stopping at different epochs"
    cut_cfg = dataclasses.replace(cfg, max_epochs=int(epochs_noise[first]))
    cut, _ = fitting._fit_with_keys(state, noise, keys, cut_cfg)
    for full_leaf, cut_leaf in zip(
        jax.tree.leaves((noisy.params, noisy.opt_state)),
        jax.tree.leaves((cut.params, cut.opt_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(full_leaf[first], cut_leaf[first])
        for k in np.flatnonzero(epochs_noise > epochs_noise[first]):
            assert not np.array_equal(full_leaf[k], cut_leaf[k])


# ------------------------------------------------------------ recompiles and bad data


def test_no_retrace_between_fits_with_different_counts():
    counted = jax.jit(
        chex.assert_max_traces(fitting._fit_with_keys.__wrapped__, n=1), static_argnames="cfg"
    )
    rng = np.random.default_rng(16)
    cfg = dynamics.EnsembleConfig(num_models=2, hidden=(8,), batch_size=32, max_epochs=3)
    state = dynamics.init(jax.random.key(0), OBS_DIM, ACT_DIM, cfg)
    keys = jax.random.split(jax.random.key(1), 2)
    buf = buffer.init(256, OBS_DIM, ACT_DIM)
    counts = []
    for n in (40, 100, 150):  # fills past capacity on the last add
        obs, act = _random_inputs(rng, n)
        buf = buffer.add(buf, obs, act, _linear(obs, act))
        state, info = counted(state, buf, keys, cfg)
        counts.append(int(buf.count))
        assert np.all(np.isfinite(np.asarray(info.valid_loss)))
    assert counts == [40, 140, 256]


@pytest.mark.parametrize("field", ["obs", "act", "next_obs"])
def test_nonfinite_data_raises_before_training(field, monkeypatch):
    def must_not_train(*args, **kwargs):
        raise AssertionError("training started on non-finite data")

    monkeypatch.setattr(dynamics, "fit_unchecked", must_not_train)
    obs, act = _random_inputs(np.random.default_rng(17), 20)
    data = {"obs": obs, "act": act, "next_obs": _linear(obs, act)}
    data[field] = data[field].copy()
    data[field][11, 1] = np.nan if field != "act" else np.inf
    buf = _fill(32, data["obs"], data["act"], data["next_obs"])
    cfg = dynamics.EnsembleConfig(num_models=2, hidden=(8,))
    state = dynamics.init(jax.random.key(0), OBS_DIM, ACT_DIM, cfg)
    with pytest.raises(ValueError, match=f"{field} has 1 NaN/inf"):
        dynamics.fit(state, buf, jax.random.key(1))
    with pytest.raises(ValueError, match="at least 2 transitions"):
        dynamics.fit(state, buffer.init(8, OBS_DIM, ACT_DIM), jax.random.key(1))


@pytest.mark.parametrize("count", [2, 2_047, 2_048, 2_049, 2_500, 2_501, 9_999, 20_000])
def test_split_permutation_equals_a_full_stable_argsort(count):
    """The split sorts only a prefix covering `count` (or `sort_count`); the rows are those
    of numpy's stable argsort of all C keys, for counts on both sides of every prefix size."""
    capacity = 20_000  # sort sizes 2048, 2500, 5000, 10000, 20000
    key = jax.random.PRNGKey(3)
    u = np.asarray(jax.random.uniform(key, (capacity,), jnp.float32))
    want = np.argsort(np.where(np.arange(capacity) < count, u, 2.0), kind="stable")
    split = jax.jit(fitting._split_permutation, static_argnums=2)
    got = split(key, jnp.asarray(count), capacity)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, want)
    for sort_count in sorted({count, min(capacity, count + 1), 5_000, capacity}):
        if sort_count >= count:
            np.testing.assert_array_equal(split(key, count, capacity, sort_count), want)
    # Under a vmap over buffers with the largest count unbatched, as `seeds` runs it.
    counts = jnp.asarray([count, max(2, count // 2)])
    many = jax.jit(
        jax.vmap(fitting._split_permutation, in_axes=(None, 0, None, None)), static_argnums=2
    )(key, counts, capacity, count)
    np.testing.assert_array_equal(many[0], want)
    want_half = np.argsort(np.where(np.arange(capacity) < counts[1], u, 2.0), kind="stable")
    np.testing.assert_array_equal(many[1], want_half)


def test_epoch_rows_do_not_depend_on_the_sort_prefix():
    """`sort_count` (a vmap over seeds passes the largest count) picks a longer sorted
    prefix; the rows are the same as with the buffer's own count, for every prefix size."""
    capacity = 20_000  # sort sizes 2048, 2500, 5000, 10000, 20000
    count, n_val = 2_300, 460
    perm = fitting._split_permutation(jax.random.PRNGKey(0), jnp.asarray(count), capacity)
    rows = jax.jit(fitting._epoch_train_rows)
    key = jax.random.PRNGKey(1)
    want = np.asarray(rows(key, perm, n_val, count))
    assert sorted(want[: count - n_val]) == sorted(np.asarray(perm)[n_val:count])
    for sort_count in (count, 2_500, 4_000, 9_000, capacity):
        np.testing.assert_array_equal(rows(key, perm, n_val, count, sort_count), want)
