"""TRPO pieces: conjugate gradient vs numpy.linalg.solve, the KL bound of the line search,
rejection of non-improving or non-finite steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax.optim import trpo


def _spd(rng, n, cond=50.0):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.geomspace(1.0, cond, n)) @ q.T


def test_conjugate_gradient_matches_numpy_solve():
    rng = np.random.default_rng(0)
    n = 8
    a = _spd(rng, n)
    b = rng.normal(size=n)
    matvec = lambda v: jnp.asarray(a, jnp.float32) @ v
    # n iterations solve an n-dim SPD system (exact arithmetic); float32 tolerance
    x = jax.jit(lambda bb: trpo.conjugate_gradient(matvec, bb, iters=n, residual_tol=0.0))(
        jnp.asarray(b, jnp.float32)
    )
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=2e-3, atol=2e-3)
    # fewer iterations still reduce the residual; early stop freezes the solution
    x3 = trpo.conjugate_gradient(matvec, jnp.asarray(b, jnp.float32), iters=3)
    assert np.linalg.norm(a @ np.asarray(x3) - b) < np.linalg.norm(b)
    x_tol = trpo.conjugate_gradient(
        matvec, jnp.asarray(b, jnp.float32), iters=50, residual_tol=1e-3
    )
    assert np.all(np.isfinite(x_tol))
    np.testing.assert_allclose(x_tol, np.linalg.solve(a, b), rtol=2e-2, atol=2e-2)


def _losses(f, g, c):
    """Linear loss, KL with Hessian F at 0 plus a quartic term ``c`` the quadratic model
    does not see, so that with large ``c`` the first candidate violates the bound."""
    loss = lambda p: g @ p["x"] + 0.1 * jnp.sum(p["y"] ** 2)
    kl = lambda p: 0.5 * p["x"] @ f @ p["x"] + c * jnp.sum(p["x"] ** 4) + 0.5 * jnp.sum(p["y"] ** 2)
    return loss, kl


def _problem(rng, n, quartic):
    f = jnp.asarray(_spd(rng, n, cond=20.0), jnp.float32)
    g = jnp.asarray(rng.normal(size=n), jnp.float32)
    params = {"x": jnp.zeros(n, jnp.float32), "y": jnp.zeros(2, jnp.float32)}
    return (*_losses(f, g, quartic), params, np.asarray(f), np.asarray(g))


@functools.partial(jax.jit, static_argnames="max_backtracks")
def _solve(f, g, c, params, max_backtracks=15):
    loss, kl = _losses(f, g, c)
    new, info = trpo.trpo_update(loss, kl, params, max_kl=0.01, max_backtracks=max_backtracks)
    return new, info, kl(new), loss(new), loss(params)


def test_step_on_quadratic_kl_hits_the_bound():
    rng = np.random.default_rng(1)
    _, _, params, f, g = _problem(rng, 6, quartic=0.0)
    new, info, _, _, _ = _solve(jnp.asarray(f), jnp.asarray(g), 0.0, params)
    assert bool(info.accepted) and not bool(info.nonfinite)
    assert int(info.num_backtracks) == 0
    # natural-gradient step: x = -sqrt(2 d / g'F^-1 g) F^-1 g
    nat = np.linalg.solve(f, g)
    x_ref = -np.sqrt(2 * 0.01 / (g @ nat)) * nat
    np.testing.assert_allclose(new["x"], x_ref, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(info.kl_after, 0.01, rtol=2e-3)
    assert float(info.loss_after) < float(info.loss_before)


def test_line_search_never_exceeds_the_bound():
    rng = np.random.default_rng(2)
    max_kl = 0.01
    n_backtracked = n_rejected = 0
    for i in range(16):
        quartic = [0.0, 5.0, 200.0, 1e4][i % 4]
        _, _, params, f, g = _problem(rng, 5, quartic)
        new, info, kl_new, loss_new, loss_old = _solve(
            jnp.asarray(f), jnp.asarray(g), quartic, params, max_backtracks=15 if i < 8 else 2
        )
        assert float(kl_new) <= max_kl * (1 + 1e-6), (i, float(kl_new))
        np.testing.assert_allclose(float(info.kl_after), float(kl_new), rtol=1e-5, atol=1e-9)
        if bool(info.accepted):
            assert float(loss_new) < float(loss_old)
            n_backtracked += int(info.num_backtracks) > 0
        else:
            n_rejected += 1
            np.testing.assert_array_equal(new["x"], params["x"])
    assert n_backtracked > 0 and n_rejected > 0, (n_backtracked, n_rejected)


def test_rejects_non_improving_and_nonfinite():
    rng = np.random.default_rng(3)
    loss, kl, params, _, _ = _problem(rng, 4, 0.0)
    nan_loss = lambda p: loss(p) * jnp.nan
    new, info = trpo.trpo_update(nan_loss, kl, params, max_kl=0.01)
    assert not bool(info.accepted) and bool(info.nonfinite)
    np.testing.assert_array_equal(new["x"], params["x"])
    # loss finite at the old params but NaN at every candidate
    cliff = lambda p: jnp.where(jnp.all(p["x"] == 0), 0.0, jnp.nan) + loss(p)
    new, info = trpo.trpo_update(cliff, kl, params, max_kl=0.01)
    assert not bool(info.accepted) and bool(info.nonfinite)
    np.testing.assert_array_equal(new["x"], params["x"])
    # a loss that is already minimal along every direction: no improvement, rejected
    flat = lambda p: jnp.sum(p["x"] ** 2)
    new, info = trpo.trpo_update(flat, kl, params, max_kl=0.01)
    assert not bool(info.accepted) and not bool(info.nonfinite)
    np.testing.assert_array_equal(new["x"], params["x"])
