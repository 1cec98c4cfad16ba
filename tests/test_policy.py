"""Gaussian MLP policy: forward pass, log-prob, entropy and KL against closed-form numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbmpo_jax import policy as pol


def _np_forward(params, obs):
    h = np.asarray(obs, np.float64)
    layers = params["layers"]
    for layer in layers[:-1]:
        h = np.tanh(h @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64))
    return h @ np.asarray(layers[-1]["w"], np.float64) + np.asarray(layers[-1]["b"], np.float64)


def _np_gauss_logpdf(x, mean, std):
    # product of 1-D normal densities, written from the textbook formula
    return np.sum(-((x - mean) ** 2) / (2 * std**2) - np.log(std * np.sqrt(2 * np.pi)), axis=-1)


def test_init_and_apply_match_numpy_mlp():
    params = pol.make_policy(5, 3, hidden=(32, 32), init_std=1.0).init(jax.random.PRNGKey(0))
    assert [layer["w"].shape for layer in params["layers"]] == [(5, 32), (32, 32), (32, 3)]
    np.testing.assert_allclose(params["log_std"], np.zeros(3), atol=0)
    obs = jax.random.normal(jax.random.PRNGKey(1), (7, 4, 5))
    mean, log_std = pol.apply(params, obs)
    assert mean.shape == (7, 4, 3) and log_std.shape == (7, 4, 3)
    np.testing.assert_allclose(mean, _np_forward(params, obs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_std, 0.0, atol=0)
    p2 = pol.init(jax.random.PRNGKey(0), 5, 3, (8,), init_std=0.5)
    np.testing.assert_allclose(np.exp(p2["log_std"]), 0.5, rtol=1e-6)


def test_output_scale_scales_only_the_last_layer_at_init():
    key, obs = jax.random.PRNGKey(3), jax.random.normal(jax.random.PRNGKey(4), (6, 5))
    base = pol.init(key, 5, 3, (8, 8), init_std=0.5)
    small = pol.make_policy(5, 3, (8, 8), init_std=0.5, output_scale=0.01).init(key)
    for i, (b, s) in enumerate(zip(base["layers"], small["layers"], strict=True)):
        scale = 0.01 if i == 2 else 1.0
        np.testing.assert_allclose(s["w"], scale * np.asarray(b["w"]), rtol=1e-6)
        np.testing.assert_array_equal(s["b"], b["b"])
    np.testing.assert_array_equal(small["log_std"], base["log_std"])
    # zero output biases: the mean action is the base policy's x 0.01, std unchanged
    np.testing.assert_allclose(
        pol.apply(small, obs)[0], 0.01 * _np_forward(base, obs), rtol=1e-4, atol=1e-7
    )


def test_log_prob_entropy_kl_closed_form():
    rng = np.random.default_rng(0)
    n, a = 50, 4
    m0, m1, x = rng.normal(size=(3, n, a))
    ls0, ls1 = rng.normal(scale=0.5, size=(2, n, a))
    s0, s1 = np.exp(ls0), np.exp(ls1)
    f32 = lambda v: jnp.asarray(v, jnp.float32)

    np.testing.assert_allclose(
        pol.log_prob(f32(m0), f32(ls0), f32(x)), _np_gauss_logpdf(x, m0, s0), rtol=1e-5, atol=1e-4
    )
    ent_ref = np.sum(0.5 * np.log(2 * np.pi * np.e * s0**2), axis=-1)
    np.testing.assert_allclose(pol.entropy(f32(ls0)), ent_ref, rtol=1e-5, atol=1e-5)
    kl_ref = np.sum(np.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5, axis=-1)
    np.testing.assert_allclose(
        pol.kl(f32(m0), f32(ls0), f32(m1), f32(ls1)), kl_ref, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(pol.kl(f32(m0), f32(ls0), f32(m0), f32(ls0)), 0.0, atol=1e-6)


def test_sample_moments_and_kl_monte_carlo():
    """Samples have the policy's moments; KL agrees with a Monte-Carlo log-ratio average."""
    mean = jnp.array([0.3, -1.0])
    log_std = jnp.array([math.log(0.5), math.log(2.0)])
    n = 200_000
    x = pol.sample(
        jax.random.PRNGKey(0), jnp.broadcast_to(mean, (n, 2)), jnp.broadcast_to(log_std, (n, 2))
    )
    np.testing.assert_allclose(np.mean(x, 0), mean, atol=0.02)
    np.testing.assert_allclose(np.std(x, 0), np.exp(log_std), rtol=0.01)
    mean1, log_std1 = jnp.array([0.0, 0.0]), jnp.array([0.0, 0.0])
    lp0 = pol.log_prob(mean, log_std, x)
    lp1 = pol.log_prob(mean1, log_std1, x)
    kl_mc = float(jnp.mean(lp0 - lp1))
    np.testing.assert_allclose(pol.kl(mean, log_std, mean1, log_std1), kl_mc, rtol=0.02)


def _np_normalised_forward(params, obs, mean, std):
    # the network of `_np_forward` on (obs - mean) / max(std, floor), written out in numpy
    std = np.maximum(np.asarray(std, np.float64), pol.OBS_STD_FLOOR)
    return _np_forward(params, (np.asarray(obs, np.float64) - np.asarray(mean, np.float64)) / std)


def test_obs_normaliser_set_and_renormalize_against_numpy():
    key, k_obs = jax.random.split(jax.random.PRNGKey(5))
    plain = pol.init(key, 6, 2, (16, 16))
    params = pol.make_policy(6, 2, (16, 16), normalize_obs=True).init(key)
    assert pol.normalizes_obs(params) and not pol.normalizes_obs(plain)
    obs = 10.0 * jax.random.normal(k_obs, (50, 6)) + 3.0
    # the identity normaliser: the same function as without one
    np.testing.assert_allclose(pol.apply(params, obs)[0], pol.apply(plain, obs)[0], atol=1e-6)
    m1 = np.array([3.0, -1.0, 0.5, 0.0, 2.0, 1.0], np.float32)
    s1 = np.array([10.0, 0.5, 2.0, 1e-4, 1.0, 4.0], np.float32)  # one std below the floor
    p1 = pol.set_obs_norm(params, m1, s1)
    assert p1["obs_norm"]["std"][3] == np.float32(pol.OBS_STD_FLOOR)
    for a, b in zip(p1["layers"], params["layers"], strict=True):  # set: the layers kept
        np.testing.assert_array_equal(a["w"], b["w"])
    np.testing.assert_allclose(
        pol.apply(p1, obs)[0], _np_normalised_forward(plain, obs, m1, s1), rtol=1e-4, atol=1e-5
    )
    # renormalize: new statistics, the same function (also under vmap over [T] params)
    m2, s2 = m1 + np.float32(2.0), s1 * np.float32(3.0)
    p2 = pol.renormalize(p1, m2, s2)
    np.testing.assert_allclose(p2["obs_norm"]["mean"], m2)
    np.testing.assert_allclose(
        pol.apply(p2, obs)[0], _np_normalised_forward(plain, obs, m1, s1), rtol=1e-4, atol=1e-4
    )
    assert not np.allclose(p2["layers"][0]["w"], p1["layers"][0]["w"])
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), p1)
    pv = jax.vmap(pol.renormalize, in_axes=(0, None, None))(stacked, m2, s2)
    np.testing.assert_allclose(pv["layers"][0]["b"][1], p2["layers"][0]["b"], rtol=1e-6)
    # the first layer reads (x - m2) / s2 through W' = diag(s2 / s1) W (floored stds)
    ratio = np.maximum(s2, pol.OBS_STD_FLOOR) / np.maximum(s1, pol.OBS_STD_FLOOR)
    expected = np.asarray(p1["layers"][0]["w"]) * ratio[:, None]
    np.testing.assert_allclose(p2["layers"][0]["w"], expected, rtol=1e-6)


def test_obs_normaliser_is_not_learned():
    params = pol.make_policy(4, 2, (8,), normalize_obs=True).init(jax.random.PRNGKey(0))
    params = pol.set_obs_norm(params, np.ones(4, np.float32), 2 * np.ones(4, np.float32))
    obs = jax.random.normal(jax.random.PRNGKey(1), (9, 4))
    act = jax.random.normal(jax.random.PRNGKey(2), (9, 2))

    def loss(p):
        mean, log_std = pol.apply(p, obs)
        return jnp.sum(pol.log_prob(mean, log_std, act))

    grads = jax.grad(loss)(params)
    np.testing.assert_array_equal(grads["obs_norm"]["mean"], 0.0)
    np.testing.assert_array_equal(grads["obs_norm"]["std"], 0.0)
    assert np.abs(grads["layers"][0]["w"]).max() > 0


def test_obs_normaliser_refuses_params_without_one():
    plain = pol.init(jax.random.PRNGKey(0), 3, 1, (4,))
    with pytest.raises(ValueError, match="no observation normaliser"):
        pol.renormalize(plain, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="normalize_obs must be a bool"):
        pol.PolicyConfig(normalize_obs=1)
