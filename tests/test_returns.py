"""Returns, GAE and the linear feature baseline against Python-loop / numpy references."""

import jax.numpy as jnp
import numpy as np
import pytest

from mbmpo_jax import returns as ret


def _masks(rng, shape):
    """Masks of rollouts of random length (1 .. H): ones then zeros."""
    h = shape[-1]
    lengths = rng.integers(1, h + 1, size=shape[:-1])
    return (np.arange(h) < lengths[..., None]).astype(np.float32), lengths


def _py_path_returns(rew, discount):
    out, acc = np.zeros_like(rew), 0.0
    for t in reversed(range(len(rew))):
        acc = rew[t] + discount * acc
        out[t] = acc
    return out


def _py_path_gae(rew, values, discount, lam):
    # rllab: append 0 to the path's baseline, deltas, discounted cumulative sum
    v = np.append(values, 0.0)
    deltas = rew + discount * v[1:] - v[:-1]
    return _py_path_returns(deltas, discount * lam)


def test_discounted_returns_and_gae_match_python_loop():
    rng = np.random.default_rng(0)
    shape = (3, 4, 9)
    rew = rng.normal(size=shape).astype(np.float32)
    values = rng.normal(size=shape).astype(np.float32)
    mask, lengths = _masks(rng, shape)
    got_ret = np.asarray(ret.discounted_returns(jnp.asarray(rew), jnp.asarray(mask), 0.9))
    for lam in (1.0, 0.95):
        got_adv = np.asarray(
            ret.gae(jnp.asarray(rew), jnp.asarray(values), jnp.asarray(mask), 0.9, lam)
        )
        for i in np.ndindex(shape[:-1]):
            n = lengths[i]
            np.testing.assert_allclose(
                got_adv[i][:n],
                _py_path_gae(rew[i][:n], values[i][:n], 0.9, lam),
                rtol=1e-5,
                atol=1e-5,
            )
            np.testing.assert_array_equal(got_adv[i][n:], 0.0)
    for i in np.ndindex(shape[:-1]):
        n = lengths[i]
        np.testing.assert_allclose(
            got_ret[i][:n], _py_path_returns(rew[i][:n], 0.9), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(got_ret[i][n:], 0.0)


def _rllab_features(obs):
    o = np.clip(obs, -10, 10)
    n = len(obs)
    al = np.arange(n).reshape(-1, 1) / 100.0
    return np.concatenate([o, o**2, al, al**2, al**3, np.ones((n, 1))], axis=1)


@pytest.mark.parametrize("lapack", [True, False])
def test_linear_baseline_matches_numpy_lstsq(lapack):
    """Per-task ridge fit on the valid steps vs rllab's float64 normal equations + lstsq,
    by jaxlib's LAPACK and by the plain-jnp Householder QR (several CPU devices)."""
    rng = np.random.default_rng(1)
    t, r, h, o = 2, 5, 30, 3
    obs = rng.normal(scale=3.0, size=(t, r, h, o)).astype(np.float32)
    obs[..., 0] = np.clip(obs[..., 0] * 5, -20, 20)  # exercises the clip at +-10
    rew = rng.normal(size=(t, r, h)).astype(np.float32) + obs[..., 1]
    mask, lengths = _masks(rng, (t, r, h))
    out = ret.compute_advantages(
        jnp.asarray(obs),
        jnp.asarray(rew),
        jnp.asarray(mask),
        0.99,
        1.0,
        1e-5,
        normalize_adv=False,
        lapack=lapack,
    )
    for k in range(t):
        feats, targets = [], []
        for i in range(r):
            n = lengths[k, i]
            feats.append(_rllab_features(obs[k, i, :n].astype(np.float64)))
            targets.append(_py_path_returns(rew[k, i, :n].astype(np.float64), 0.99))
        f, y = np.concatenate(feats), np.concatenate(targets)
        coeffs = np.linalg.lstsq(f.T @ f + 1e-5 * np.eye(f.shape[1]), f.T @ y, rcond=None)[0]
        for i in range(r):
            n = lengths[k, i]
            base_ref = feats[i] @ coeffs
            scale = np.abs(targets[i]).max() + 1.0
            np.testing.assert_allclose(out.baseline[k, i, :n], base_ref, atol=2e-3 * scale)
            np.testing.assert_allclose(out.returns[k, i, :n], targets[i], rtol=1e-5, atol=1e-5)
            # lambda = 1: advantages are returns minus baseline
            np.testing.assert_allclose(out.adv[k, i, :n], targets[i] - base_ref, atol=2e-3 * scale)
            np.testing.assert_array_equal(out.adv[k, i, n:], 0.0)


@pytest.mark.parametrize("lapack", [True, False])
def test_baseline_survives_collinear_features(lapack):
    """A constant observation column is collinear with the bias: the float32 fit stays finite
    and its predictions match float64 numpy."""
    rng = np.random.default_rng(2)
    n, o = 400, 3
    obs = rng.normal(size=(n, o)).astype(np.float32)
    obs[:, 2] = 1.0
    feats = np.asarray(ret.linear_features(jnp.asarray(obs)))
    y = (obs[:, 0] * 2 + 1 + rng.normal(scale=0.1, size=n)).astype(np.float32)
    c = ret.fit_linear_baseline(jnp.asarray(feats), jnp.asarray(y), jnp.ones(n), 1e-5, lapack)
    f64 = feats.astype(np.float64)
    c_ref = np.linalg.lstsq(f64.T @ f64 + 1e-5 * np.eye(f64.shape[1]), f64.T @ y, rcond=None)[0]
    assert np.all(np.isfinite(c))
    np.testing.assert_allclose(feats @ np.asarray(c), f64 @ c_ref, atol=1e-3)


def test_normalized_advantages_per_task():
    rng = np.random.default_rng(3)
    adv = rng.normal(loc=3.0, scale=5.0, size=(3, 4, 10)).astype(np.float32)
    mask, _ = _masks(rng, (3, 4, 10))
    got = np.asarray(ret.normalize(jnp.asarray(adv), jnp.asarray(mask)))
    for k in range(3):
        valid = adv[k][mask[k] > 0]
        np.testing.assert_allclose(
            got[k][mask[k] > 0], (valid - valid.mean()) / (valid.std() + 1e-8), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_array_equal(got[k][mask[k] == 0], 0.0)


def test_householder_r_and_substitution_match_numpy():
    """The plain-jnp pieces of ``fit_linear_baseline(lapack=False)``: on a full-rank matrix
    ``R`` is numpy's QR up to the signs of its rows; with a zero column and a collinear one
    (R not unique past them) still upper triangular with ``R^T R = A^T A``; the two
    substitutions against ``np.linalg.solve``."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(60, 7))
    r = np.asarray(ret._householder_r(jnp.asarray(a, jnp.float32)), np.float64)
    np.testing.assert_allclose(np.abs(r), np.abs(np.linalg.qr(a, mode="r")), atol=1e-4)
    a[:, 3] = 0.0
    a[:, 5] = a[:, 1] * 2.0
    r = np.asarray(ret._householder_r(jnp.asarray(a, jnp.float32)), np.float64)
    assert np.all(np.isfinite(r))
    np.testing.assert_array_equal(np.tril(r, -1), 0.0)
    np.testing.assert_allclose(r.T @ r, a.T @ a, atol=1e-4 * np.abs(a.T @ a).max())
    u = np.triu(rng.normal(size=(6, 6))) + 4 * np.eye(6)
    b = rng.normal(size=6)
    for transpose, m in ((False, u), (True, u.T)):
        got = ret._solve_upper(jnp.asarray(u, jnp.float32), jnp.asarray(b, jnp.float32), transpose)
        np.testing.assert_allclose(np.asarray(got), np.linalg.solve(m, b), rtol=1e-5, atol=1e-5)
