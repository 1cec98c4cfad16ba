"""Tests for the ensemble's compute precision (issue 18): `dynamics.dense` with bfloat16
operands and float32 accumulation, forward and backward, against numpy products of the
rounded operands; which layers use it; the fit and imagination with it.

Sizes are small; the whole file runs in well under a minute on two CPU cores.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from mbmpo_jax import buffer, config, dynamics
from mbmpo_jax.dynamics import fitting, network
from mbmpo_jax.envs import tasks


def _bf16(x):
    """Round to bfloat16 (numpy, round to nearest even) and back to float64."""
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


# dw is taken with the narrower operand transposed: both orientations are checked.
@pytest.mark.parametrize("n_in,n_out", [(48, 29), (29, 48)])
def test_bfloat16_dense_forward_and_both_gradients_match_numpy_on_rounded_operands(n_in, n_out):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 37, n_in)).astype(np.float32)  # leading axes, as under vmap
    w = rng.normal(size=(n_in, n_out)).astype(np.float32)
    g = rng.normal(size=(2, 3, 37, n_out)).astype(np.float32)

    @jax.jit
    def forward_backward(x, w, g):
        out, vjp = jax.vjp(lambda x, w: dynamics.dense(x, w, "bfloat16"), x, w)
        return (out, *vjp(g))

    out, dx, dw = forward_backward(x, w, g)
    chex.assert_trees_all_equal_dtypes((out, dx, dw), (g, x, w))

    xr, wr, gr = _bf16(x), _bf16(w), _bf16(g)
    want_out = xr @ wr
    want_dx = gr @ wr.T
    want_dw = xr.reshape(-1, n_in).T @ gr.reshape(-1, n_out)
    # Products of bfloat16 values are exact in float32; only the float32 sums round.
    for got, want in ((out, want_out), (dx, want_dx), (dw, want_dw)):
        scale = np.abs(want).max()
        np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=2e-6 * scale * 48)
        assert got.shape == want.shape
    # ... and they differ from the float32 product by bfloat16's rounding, no more.
    exact = x.astype(np.float64) @ w.astype(np.float64)
    rel = np.abs(np.asarray(out) - exact).max() / np.abs(exact).max()
    assert 1e-4 < rel < 2e-2, rel


def test_bfloat16_dense_under_vmap_jit_and_second_order_grad():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(4, 16, 8)), jnp.float32)  # [K, B, I]
    w = jnp.asarray(rng.normal(size=(4, 8, 5)), jnp.float32)  # [K, I, O]

    def loss(w, x):
        return jnp.sum(jnp.tanh(dynamics.dense(x, w, "bfloat16")) ** 2)

    per_model = jax.jit(jax.vmap(jax.grad(loss)))(w, x)
    for k in range(4):
        np.testing.assert_allclose(per_model[k], jax.grad(loss)(w[k], x[k]), rtol=1e-5, atol=1e-5)
    # The backward pass is built of differentiable ops, so a Hessian-vector product runs.
    hvp = jax.jvp(jax.grad(loss), (w[0], x[0]), (jnp.ones_like(w[0]), jnp.zeros_like(x[0])))[1]
    assert np.all(np.isfinite(np.asarray(hvp)))


@pytest.mark.parametrize("n_in,n_out", [(7, 64), (64, 7)])  # a first and a last layer
def test_thin_layers_of_a_bfloat16_network_have_float32_gradients(n_in, n_out):
    """The first and last layers run float32 through the same custom vjp (its dot forms are
    the fast ones on CPU): forward and gradients equal plain autodiff of ``x @ w``."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(3, 40, n_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, n_in, n_out)), jnp.float32)

    def loss(dense_fn):
        return lambda w, x: jnp.sum(jnp.sin(dense_fn(x, w)))

    custom = jax.jit(
        jax.vmap(
            jax.value_and_grad(loss(lambda x, w: network._dense_lp(x, w, jnp.float32)), (0, 1))
        )
    )
    plain = jax.jit(jax.vmap(jax.value_and_grad(loss(lambda x, w: x @ w), (0, 1))))
    chex.assert_trees_all_close(custom(w, x), plain(w, x), rtol=1e-5, atol=1e-5)


def test_float32_dense_is_the_plain_product_and_bad_dtype_raises():
    x = jnp.arange(6.0).reshape(2, 3)
    w = jnp.arange(12.0).reshape(3, 4) / 7
    np.testing.assert_array_equal(dynamics.dense(x, w), x @ w)
    with pytest.raises(ValueError, match="compute_dtype"):
        dynamics.dense(x, w, "float16")
    with pytest.raises(ValueError, match="one weight matrix"):
        dynamics.dense(x[None], w[None], "bfloat16")  # a stack of models needs vmap
    with pytest.raises(ValueError, match="compute_dtype"):
        dynamics.EnsembleConfig(compute_dtype="float16")


@pytest.mark.parametrize("hidden", [(16,), (16, 24), (16, 24, 8)])
def test_only_hidden_to_hidden_layers_use_the_compute_dtype(hidden):
    layers = dynamics.mlp_init(jax.random.key(0), (5, *hidden, 3))
    layers = jax.tree.map(lambda a: a + 0.01, layers)  # nonzero biases
    x = np.random.default_rng(2).normal(size=(11, 5)).astype(np.float32)

    # numpy reference: float64, operands of the hidden-to-hidden products rounded.
    h = x.astype(np.float64)
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        w, b = np.asarray(layer["w"], np.float64), np.asarray(layer["b"], np.float64)
        h = (_bf16(h) @ _bf16(w) if 0 < i < last else h @ w) + b
        if i < last:
            h = np.maximum(h, 0.0)
    got = dynamics.mlp_apply(layers, x, "relu", "bfloat16")
    np.testing.assert_allclose(np.asarray(got, np.float64), h, rtol=1e-5, atol=1e-5)
    if len(hidden) == 1:  # no hidden-to-hidden layer: identical to float32
        np.testing.assert_array_equal(got, dynamics.mlp_apply(layers, x, "relu"))


def test_bfloat16_fit_learns_like_float32_and_compiles_once():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 3)).astype(np.float32) * 0.3
    obs = rng.normal(size=(900, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(900, 2)).astype(np.float32)
    nxt = obs + np.tanh(obs @ a) + 0.5 * act[:, :1] * obs
    buf = buffer.add(buffer.init(1024, 3, 2), obs, act, nxt)
    counted = jax.jit(
        chex.assert_max_traces(fitting._fit_with_keys.__wrapped__, n=1), static_argnames="cfg"
    )
    losses = {}
    for dtype in ("float32", "bfloat16"):
        cfg = dynamics.EnsembleConfig(
            num_models=2, hidden=(32, 32), batch_size=100, max_epochs=40, compute_dtype=dtype
        )
        state = dynamics.init(jax.random.key(0), 3, 2, cfg)
        keys = jax.random.split(jax.random.key(1), 2)
        if dtype == "bfloat16":
            state, _ = counted(state, buf, keys, cfg)
            state, info = counted(state, buf, keys, cfg)  # a second fit: no retrace
        else:
            state, _ = fitting._fit_with_keys(state, buf, keys, cfg)
            state, info = fitting._fit_with_keys(state, buf, keys, cfg)
        chex.assert_trees_all_equal_dtypes(
            state.params, dynamics.init(jax.random.key(0), 3, 2, cfg).params
        )
        losses[dtype] = np.asarray(info.valid_loss)
        # The model that imagination uses carries the dtype.
        assert dynamics.model_params(state).compute_dtype == dtype
    assert np.all(losses["float32"] < 0.05), losses
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.3, atol=2e-3)


def test_run_config_carries_compute_dtype_to_the_ensemble_and_validates_it():
    cfg = config.get_config("hopper", "smoke")
    assert cfg.ensemble.compute_dtype == "float32"  # the paper's precision is the default
    config.apply_overrides(cfg, ["ensemble.compute_dtype=bfloat16"])
    config.validate(cfg)
    assert config.ensemble_config(cfg).compute_dtype == "bfloat16"
    config.apply_overrides(cfg, ["ensemble.compute_dtype=float16"])
    with pytest.raises(config.ConfigError, match="compute_dtype"):
        config.validate(cfg)


def test_imagination_with_bfloat16_models_tracks_float32_over_short_horizons():
    task = tasks.get_task("hopper")
    f32 = dynamics.EnsembleConfig(num_models=2, hidden=(64, 64))
    state = dynamics.init(jax.random.key(0), task.obs_dim, task.act_dim, f32)
    obs = task.init_obs(jax.random.key(1), (64,))
    act = jax.random.uniform(jax.random.key(2), (64, task.act_dim), minval=-1, maxval=1)
    models = {
        d: dynamics.model_params(state.replace(cfg=dataclasses.replace(f32, compute_dtype=d)))
        for d in ("float32", "bfloat16")
    }
    o32 = o16 = jnp.broadcast_to(obs, (2, *obs.shape))
    for _ in range(5):  # each model rolls its own states forward with the same actions
        o32 = jax.vmap(dynamics.model_step, in_axes=(0, 0, None))(models["float32"], o32, act)
        o16 = jax.vmap(dynamics.model_step, in_axes=(0, 0, None))(models["bfloat16"], o16, act)
    err = float(jnp.abs(o32 - o16).max() / jnp.abs(o32).max())
    assert 0 < err < 3e-2, err
