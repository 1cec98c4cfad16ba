"""Meta-gradient vs nested finite differences, alpha = 0 vs the plain policy gradient,
non-finite rejection, and a small learning test on exactly known dynamics."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from mbmpo_jax import imagine as im
from mbmpo_jax import maml
from mbmpo_jax import policy as pol
from mbmpo_jax.optim import ppo as ppo_lib

# ----------------------------------------------------------------------------------------
# Independent numpy reference of the meta-objective: numpy forward pass, inner gradient by
# central finite differences, outer gradient by central finite differences of that.


def _np_logp(p, obs, act):
    h = obs
    for layer in p["layers"][:-1]:
        h = np.tanh(h @ layer["w"] + layer["b"])
    mean = h @ p["layers"][-1]["w"] + p["layers"][-1]["b"]
    std = np.exp(p["log_std"])
    return np.sum(-((act - mean) ** 2) / (2 * std**2) - np.log(std * np.sqrt(2 * np.pi)), axis=-1)


def _np_masked_mean(x, m):
    return np.sum(x * m) / np.sum(m)


def _fd_grad(f, x, eps):
    """Fourth-order central differences (error O(eps^4)), so that nesting them stays
    accurate in float64."""
    g = np.zeros_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x - 2 * e) - 8 * f(x - e) + 8 * f(x + e) - f(x + 2 * e)) / (12 * eps)
    return g


def _np_unraveler(params):
    """Flat float64 vector -> params pytree of numpy arrays, in ravel_pytree's order."""
    leaves, treedef = jax.tree.flatten(params)
    shapes = [np.shape(x) for x in leaves]
    splits = np.cumsum([int(np.prod(sh)) for sh in shapes])[:-1]
    return lambda v: treedef.unflatten(
        [c.reshape(sh) for c, sh in zip(np.split(v, splits), shapes, strict=True)]
    )


def _np_ratio_objective(ratio, adv):
    return ratio * adv


def _np_clipped_objective(ratio, adv, clip=0.2):
    return np.minimum(ratio * adv, np.clip(ratio, 1 - clip, 1 + clip) * adv)


def _np_mean(p, obs):
    h = obs
    for layer in p["layers"][:-1]:
        h = np.tanh(h @ layer["w"] + layer["b"])
    return h @ p["layers"][-1]["w"] + p["layers"][-1]["b"]


def _np_meta_objective(
    x, to_np, pre_batches, post, alpha, objective=_np_ratio_objective, log_std_mask=None
):
    """``log_std_mask`` (1 on the flat vector's log-std entries) selects the
    std-invariant inner step: the FD gradient of ``mean(-|a - mu|^2 / 2 * A)`` on the
    mean's network, the PG's FD gradient on the log-std."""
    total = 0.0
    num_tasks = post.obs.shape[0]
    for k in range(num_tasks):
        xk = x.copy()
        for b in pre_batches:
            sur = lambda v, b=b, k=k: _np_masked_mean(
                _np_logp(to_np(v), b.obs[k], b.act[k]) * b.adv[k], b.mask[k]
            )
            direction = _fd_grad(sur, xk, 1e-4)
            if log_std_mask is not None:
                reg = lambda v, b=b, k=k: _np_masked_mean(
                    -0.5 * np.sum((b.act[k] - _np_mean(to_np(v), b.obs[k])) ** 2, -1) * b.adv[k],
                    b.mask[k],
                )
                direction = np.where(log_std_mask, direction, _fd_grad(reg, xk, 1e-4))
            xk = xk + alpha * direction
        ratio = np.exp(_np_logp(to_np(xk), post.obs[k], post.act[k]) - post.logp[k])
        total += _np_masked_mean(objective(ratio, post.adv[k]), post.mask[k])
    return total / num_tasks


def _random_batch(rng, t, r, h, o, a, logp=None):
    mask = (np.arange(h) < rng.integers(1, h + 1, size=(t, r, 1))).astype(np.float64)
    return maml.PolicyBatch(
        obs=rng.normal(size=(t, r, h, o)),
        act=rng.normal(size=(t, r, h, a)),
        adv=rng.normal(size=(t, r, h)) * mask,
        mask=mask,
        logp=rng.normal(size=(t, r, h)) - 2.0 if logp is None else logp,
    )


def _float64_problem(seed, t, r, h, o, a):
    """A float64 policy (std 0.7) and one random pre and one post batch, for the tests that
    compare objectives and KLs against references."""
    rng = np.random.default_rng(seed)
    theta = pol.init(jax.random.PRNGKey(seed), o, a, hidden=(4,), init_std=0.7)
    theta = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), theta)
    pre = (jax.tree.map(jnp.asarray, _random_batch(rng, t, r, h, o, a)),)
    post = jax.tree.map(jnp.asarray, _random_batch(rng, t, r, h, o, a))
    return rng, theta, pre, post


# (per-sample objective of maml.meta_objective, its numpy reference): TRPO's likelihood
# ratio and PPO's clipped one, the two functions the outer steps optimise.
SAMPLE_OBJECTIVES = {
    "ratio": (maml.likelihood_ratio, _np_ratio_objective),
    "clipped": (functools.partial(ppo_lib.clipped_objective, clip=0.2), _np_clipped_objective),
}


@pytest.mark.parametrize(
    ("num_inner_steps", "objective", "inner_update"),
    [
        (1, "ratio", "pg"),
        (2, "ratio", "pg"),
        (1, "clipped", "pg"),
        (1, "ratio", "std_invariant"),
        (2, "ratio", "std_invariant"),
    ],
)
def test_meta_gradient_matches_nested_finite_differences(
    x64, num_inner_steps, objective, inner_update
):
    """Fixed batches (sampling made deterministic), float64. Tolerance: |err| <= 1e-7 +
    1e-6 |ref| per component (the nested 4th-order FD reference is good to ~2e-8 here,
    gradient entries are O(1)). `maml.meta_objective` is the function the outer steps
    optimise (`test_outer_steps_optimise_the_objective_they_are_given`)."""
    sample_objective, np_objective = SAMPLE_OBJECTIVES[objective]
    rng = np.random.default_rng(0)
    t, r, h, o, a = 2, 2, 3, 2, 2
    theta = pol.init(jax.random.PRNGKey(0), o, a, hidden=(3,), init_std=0.8)
    theta = jax.tree.map(
        lambda v: jnp.asarray(v, jnp.float64) + 0.3 * rng.normal(size=v.shape), theta
    )
    x0 = np.asarray(ravel_pytree(theta)[0], np.float64)
    to_np = _np_unraveler(theta)
    pre = tuple(_random_batch(rng, t, r, h, o, a) for _ in range(num_inner_steps))
    post = _random_batch(rng, t, r, h, o, a)
    alpha = 0.5  # large, so the second-order term is far above the tolerance
    jax_batches = jax.tree.map(jnp.asarray, (pre, post))

    objective_fn = functools.partial(
        maml.meta_objective,
        inner_lr=alpha,
        sample_objective=sample_objective,
        inner_update=inner_update,
    )
    (value, post_params), grad = jax.jit(jax.value_and_grad(objective_fn, has_aux=True))(
        theta, *jax_batches
    )
    grad = np.asarray(ravel_pytree(grad)[0])
    log_std_mask = None
    if inner_update == "std_invariant":
        ones = {**jax.tree.map(np.zeros_like, theta), "log_std": np.ones(a)}
        log_std_mask = np.asarray(ravel_pytree(ones)[0]) > 0
    np_obj = lambda v: _np_meta_objective(v, to_np, pre, post, alpha, np_objective, log_std_mask)
    ref_value = np_obj(x0)
    ref_grad = _fd_grad(np_obj, x0, 1e-3)
    np.testing.assert_allclose(value, ref_value, rtol=1e-7)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6, atol=1e-7)
    # the aux is the adapted params the outer steps' KL uses
    expected = maml.adapt(theta, jax_batches[0], alpha, inner_update)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-12), post_params, expected)
    if objective == "clipped":  # the clipped branch is taken, so the two objectives differ
        ratio_value, _ = maml.meta_objective(theta, *jax_batches, alpha)
        assert abs(float(ratio_value) - float(value)) > 1e-3

    # the test can fail: dropping the second-order term (first-order MAML) is far off
    def first_order(th):
        post_params = maml.adapt(th, jax.lax.stop_gradient(jax_batches[0]), alpha, inner_update)
        fo = jax.tree.map(
            lambda p, q: jax.lax.stop_gradient(p - q) + q, post_params, maml.broadcast_tasks(th, t)
        )
        return maml.lr_surrogate(fo, jax_batches[1], sample_objective)

    fo_grad = np.asarray(ravel_pytree(jax.jit(jax.grad(first_order))(theta))[0])
    assert np.max(np.abs(fo_grad - ref_grad)) > 1e3 * (1e-6 * np.max(np.abs(ref_grad)) + 1e-7)


def test_std_invariant_inner_step_scales_with_the_std(x64):
    """With a uniform std ``s`` the std-invariant direction is the PG's times ``s^2`` on the
    mean's network (so it equals the PG at ``s = 1``) and the PG's on the log-std; the
    mean's step then no longer grows as the std shrinks (its KL is a hand-derived
    ``alpha^2``-order constant instead of growing as ``1 / s^4``)."""
    rng = np.random.default_rng(11)
    o, a = 3, 2
    batch = jax.tree.map(lambda x: jnp.asarray(x[0]), _random_batch(rng, 1, 4, 5, o, a))
    base = pol.init(jax.random.PRNGKey(11), o, a, hidden=(5,), init_std=1.0)
    base = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), base)
    for s in (1.0, 0.3, 2.0):
        params = {**base, "log_std": jnp.full((a,), np.log(s))}
        pg = maml.inner_grad(params, batch, "pg")
        inv = maml.inner_grad(params, batch, "std_invariant")
        for got, want in zip(
            jax.tree.leaves(inv["layers"]), jax.tree.leaves(pg["layers"]), strict=True
        ):
            np.testing.assert_allclose(got, s**2 * want, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(inv["log_std"], pg["log_std"], rtol=1e-12)
    # the mean's step under on-policy actions a = mu + s z (z fixed): the PG's direction
    # is z / s, its KL (dmu^2 / 2 s^2) grows as 1/s^4; the std-invariant one is s z, its
    # KL constant. Hand-derived ratios at s = 1/4: 256 and 1.
    alpha = 1e-5
    mu0, _ = pol.apply(base, batch.obs)
    kls = {}
    for update in maml.INNER_UPDATES:
        for s in (1.0, 0.25):
            params = {**base, "log_std": jnp.full((a,), np.log(s))}
            on_policy = batch._replace(act=mu0 + s * batch.act)
            new = maml.inner_step(params, on_policy, alpha, update)
            new = {**new, "log_std": params["log_std"]}  # the mean's part only
            m0, l0 = pol.apply(params, batch.obs)
            m1, l1 = pol.apply(new, batch.obs)
            kls[update, s] = float(jnp.mean(pol.kl(m0, l0, m1, l1)))
    assert kls["pg", 1.0] == pytest.approx(kls["std_invariant", 1.0], rel=1e-9)
    assert kls["pg", 0.25] == pytest.approx(256 * kls["pg", 1.0], rel=1e-3)
    assert kls["std_invariant", 0.25] == pytest.approx(kls["std_invariant", 1.0], rel=1e-3)
    with pytest.raises(ValueError, match="inner_update"):
        maml.inner_grad(base, batch, "natural")


def test_alpha_zero_is_the_plain_policy_gradient(x64):
    """With alpha = 0 and the post batch sampled by theta (ratio 1), the meta-gradient is the
    vanilla PG, here the FD gradient of the numpy surrogate mean_k mean(logp * A)."""
    rng = np.random.default_rng(1)
    t, r, h, o, a = 3, 2, 4, 2, 2
    theta = pol.init(jax.random.PRNGKey(1), o, a, hidden=(4,), init_std=1.0)
    theta = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), theta)
    x0 = np.asarray(ravel_pytree(theta)[0], np.float64)
    to_np = _np_unraveler(theta)
    pre = (_random_batch(rng, t, r, h, o, a),)
    post = _random_batch(rng, t, r, h, o, a)
    post = post._replace(
        logp=np.stack([_np_logp(to_np(x0), post.obs[k], post.act[k]) for k in range(t)])
    )

    grad = jax.jit(jax.grad(maml.meta_objective, has_aux=True))(
        theta, *jax.tree.map(jnp.asarray, (pre, post)), 0.0
    )[0]
    pg_surr = lambda v: np.mean(
        [
            _np_masked_mean(
                _np_logp(to_np(v), post.obs[k], post.act[k]) * post.adv[k], post.mask[k]
            )
            for k in range(t)
        ]
    )
    ref = _fd_grad(pg_surr, x0, 1e-3)
    np.testing.assert_allclose(ravel_pytree(grad)[0], ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("inner_lr", [0.0, 0.3])
def test_entropy_bonus_adds_beta_times_the_adapted_entropy(x64, inner_lr):
    """The bonus is beta x the mean over tasks of the adapted policies' Gaussian entropy,
    sum(log_std) + A/2 log(2 pi e) by hand from the returned post params; with alpha = 0
    its gradient is beta on every log-std entry and nothing else."""
    t, r, h, o, a = 3, 2, 4, 2, 2
    _, theta, pre, post = _float64_problem(2, t, r, h, o, a)
    beta = 0.05
    plain, post_params = maml.meta_objective(theta, pre, post, inner_lr)
    bonus, _ = maml.meta_objective(theta, pre, post, inner_lr, entropy_coeff=beta)
    log_std = np.asarray(post_params["log_std"])  # [T, A]
    entropies = log_std.sum(-1) + 0.5 * a * np.log(2 * np.pi * np.e)
    np.testing.assert_allclose(float(bonus) - float(plain), beta * entropies.mean(), rtol=1e-12)
    if inner_lr == 0.0:
        grad = lambda c: jax.grad(maml.meta_objective, has_aux=True)(
            theta, pre, post, 0.0, entropy_coeff=c
        )[0]
        diff = jax.tree.map(lambda x, y: np.asarray(x - y), grad(beta), grad(0.0))
        np.testing.assert_allclose(diff["log_std"], np.full(a, beta), rtol=1e-12)
        for layer in diff["layers"]:
            for v in layer.values():
                np.testing.assert_allclose(v, 0.0, atol=1e-15)


def test_negative_entropy_coeff_is_refused():
    with pytest.raises(ValueError, match="entropy_coeff"):
        maml.MetaConfig(entropy_coeff=-0.1)


# ----------------------------------------------------------------------------------------
# Meta steps on a toy task with exactly known dynamics.


class PointTask:
    """2-D point mass, velocity control; reward = progress toward the origin."""

    obs_dim, act_dim = 2, 2
    act_low = np.array([-1.0, -1.0], np.float32)
    act_high = np.array([1.0, 1.0], np.float32)

    def reward(self, obs, act, next_obs):
        return jnp.linalg.norm(obs, axis=-1) - jnp.linalg.norm(next_obs, axis=-1)

    def done(self, next_obs):
        return jnp.zeros(next_obs.shape[:-1], bool)

    def init_obs(self, key, shape):
        return jax.random.uniform(key, (*shape, 2), minval=-1.0, maxval=1.0)


def true_dynamics(model, obs, act):
    # every "model" is the true dynamics; `scale` is 1 for all K so K is exercised
    return obs + 0.1 * act * model["scale"]


MODELS = {"scale": jnp.ones((2,))}
SMALL = maml.MetaConfig(
    meta_batch_size=4,
    rollouts_per_task=16,
    horizon=10,
    policy=pol.PolicyConfig(hidden=(16,)),
    inner_lr=0.05,
)


def _eval_return(params, key):
    """Mean imagined return of the pre-update policy with many rollouts (low noise)."""
    out = im.imagine(
        key,
        maml.broadcast_tasks(params, 2),
        MODELS,
        PointTask(),
        true_dynamics,
        rollouts_per_task=200,
        horizon=10,
    )
    return float(jnp.mean(im.undiscounted_return(out)))


# Compiled once per module and shared between tests (compiles dominate the run time).
# TRPO: start states drawn from given states, one inner step. PPO: reset distribution,
# two inner steps (MAML-style re-sampling).
CFGS = {
    "trpo": dataclasses.replace(SMALL, outer="trpo", start_from="buffer"),
    "ppo": dataclasses.replace(SMALL, outer="ppo", ppo_lr=1e-2, num_inner_steps=2),
}
STARTS = jax.random.uniform(jax.random.PRNGKey(3), (64, 2), minval=-1.0, maxval=1.0)
NUM_STEPS = 5


@functools.cache
def _run_fn(outer):
    return jax.jit(
        maml.make_meta_train(CFGS[outer], PointTask(), true_dynamics, num_steps=NUM_STEPS)
    )


def _run(outer, state):
    starts = (STARTS, 50) if outer == "trpo" else ()
    return _run_fn(outer)(state, MODELS, *starts)


@pytest.mark.parametrize("outer", ["trpo", "ppo"])
def test_meta_steps_raise_the_imagined_return(outer):
    cfg = CFGS[outer]
    state = maml.init_meta_state(jax.random.PRNGKey(0), cfg, 2, 2)
    before = _eval_return(state.params, jax.random.PRNGKey(7))
    new_state, post_params, diag = _run(outer, state)
    after = _eval_return(new_state.params, jax.random.PRNGKey(7))
    n, t = NUM_STEPS, cfg.meta_batch_size
    assert diag.pre_return.shape == (n, t) and diag.kl_pre_post.shape == (n, t)
    assert diag.accepted.shape == (n,) and int(new_state.step) == n
    assert jax.tree.leaves(post_params)[0].shape[0] == t
    assert not np.any(diag.nonfinite) and np.all(diag.accepted)
    assert np.all(diag.surr_after > diag.surr_before)
    if outer == "trpo":
        assert np.all(diag.kl_after <= cfg.max_kl * (1 + 1e-5))
    assert np.all(diag.kl_pre_post > 0)
    # the policy starts near random (return ~0); heading for the origin is worth ~0.3
    assert after > before + 0.1, (before, after)


def test_start_from_argument_is_checked():
    state = maml.init_meta_state(jax.random.PRNGKey(1), CFGS["trpo"], 2, 2)
    with pytest.raises(ValueError):
        maml.make_meta_step(CFGS["trpo"], PointTask(), true_dynamics)(state, MODELS)
    with pytest.raises(ValueError):
        maml.make_meta_step(CFGS["ppo"], PointTask(), true_dynamics)(state, MODELS, STARTS)
    with pytest.raises(ValueError):  # 4 tasks over 3 models
        maml.make_meta_step(CFGS["ppo"], PointTask(), true_dynamics)(
            state, {"scale": jnp.ones((3,))}
        )


@pytest.mark.parametrize("outer", ["trpo", "ppo"])
def test_nonfinite_update_is_rejected_and_flagged(outer):
    state = maml.init_meta_state(jax.random.PRNGKey(2), CFGS[outer], 2, 2)
    bad = state.params["layers"][0]["w"].at[0, 0].set(jnp.nan)
    state = state.replace(
        params=state.params
        | {"layers": [{"w": bad, "b": state.params["layers"][0]["b"]}, *state.params["layers"][1:]]}
    )
    new_state, _, diag = _run(outer, state)
    assert np.all(diag.nonfinite) and not np.any(diag.accepted)
    jax.tree.map(np.testing.assert_array_equal, new_state.params, state.params)


@pytest.mark.parametrize("outer", ["trpo", "ppo"])
def test_outer_steps_optimise_the_objective_they_are_given(outer):
    """The outer steps optimise the closure they receive, not a surrogate of their own: with
    ``J_c(theta) = -|theta - c|^2`` (adapted params as aux, so the KL is the meta step's),
    TRPO reports J_c before and after and raises it; PPO's Adam steps move every parameter
    towards c (the KL penalty's gradient vanishes at the old theta)."""
    rng = np.random.default_rng(5)
    t, r, h, o, a = 2, 3, 4, 2, 2
    theta = pol.init(jax.random.PRNGKey(5), o, a, hidden=(4,), init_std=0.7)
    pre = (jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _random_batch(rng, t, r, h, o, a)),)
    post = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _random_batch(rng, t, r, h, o, a))
    cfg = dataclasses.replace(SMALL, outer=outer, inner_lr=0.1)
    x0, unravel = ravel_pytree(theta)
    target = jnp.asarray(rng.normal(size=x0.shape), jnp.float32)

    def objective(th):
        return -jnp.sum(jnp.square(ravel_pytree(th)[0] - target)), maml.adapt(th, pre, 0.1)

    old_post = maml.adapt(theta, pre, 0.1)
    value = lambda th: float(objective(th)[0])
    if outer == "trpo":
        new_theta, info = jax.jit(
            lambda th: maml.trpo_outer_step(objective, th, pre, post, old_post, cfg)
        )(theta)
        assert bool(info.accepted)
        np.testing.assert_allclose(info.surr_before, value(theta), rtol=1e-6)
        np.testing.assert_allclose(info.surr_after, value(new_theta), rtol=1e-6)
        assert value(new_theta) > value(theta)
    else:
        opt_state = optax.adam(cfg.ppo_lr).init(theta)
        new_theta, _, _, info = jax.jit(
            lambda th: maml.ppo_outer_step(
                objective, th, opt_state, jnp.float32(cfg.ppo_kl_coeff), pre[0], post, old_post, cfg
            )
        )(theta)
        assert bool(info.accepted)
        moved = ravel_pytree(new_theta)[0] - x0
        np.testing.assert_array_equal(np.sign(moved), np.sign(target - x0))


def test_fvp_subsample_keeps_the_pooled_weights(x64):
    """``fvp_subsample = n`` takes every n-th rollout for the curvature products only. With
    every rollout repeated n times in a row, those are the distinct rollouts once each, so
    the pooled KL's curvature (a masked mean) and the TRPO step are unchanged; on distinct
    rollouts the step differs (the subsample is applied), and the objective and the line
    search's KL still see every rollout (the step is accepted within the bound)."""
    rng = np.random.default_rng(6)
    t, r, h, o, a, n = 2, 3, 5, 3, 2, 2
    theta = pol.init(jax.random.PRNGKey(6), o, a, hidden=(5,), init_std=0.7)
    theta = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), theta)
    x0 = ravel_pytree(theta)[0]
    target = jnp.asarray(rng.normal(size=x0.shape))
    distinct = [_random_batch(rng, t, r * n, h, o, a) for _ in range(2)]
    repeated = [jax.tree.map(lambda x: np.repeat(x[:, :r], n, axis=1), b) for b in distinct]

    def step(batches, subsample):
        pre, post = (jax.tree.map(jnp.asarray, batches[0]),), jax.tree.map(jnp.asarray, batches[1])
        cfg = dataclasses.replace(SMALL, inner_lr=0.1, fvp_subsample=subsample)

        def objective(th):
            return -jnp.sum(jnp.square(ravel_pytree(th)[0] - target)), maml.adapt(th, pre, 0.1)

        old_post = maml.adapt(theta, pre, 0.1)
        new_theta, info = jax.jit(
            lambda th: maml.trpo_outer_step(objective, th, pre, post, old_post, cfg)
        )(theta)
        assert bool(info.accepted) and float(info.kl_after) <= cfg.max_kl
        return ravel_pytree(new_theta)[0] - x0

    full, sub = step(repeated, 1), step(repeated, n)
    np.testing.assert_allclose(sub, full, rtol=1e-9, atol=1e-12)
    full, sub = step(distinct, 1), step(distinct, n)
    assert np.max(np.abs(sub - full)) > 1e-3 * np.max(np.abs(full))


@pytest.mark.parametrize("inner_update", ["pg", "std_invariant"])
def test_gauss_newton_kl_hvp_equals_hessian(x64, inner_update):
    """The outer step's KL Hessian-vector product vs central differences of the KL gradient
    (autodiff through the inner step), float64; the std-invariant step's Jacobian is not
    symmetric, so its product takes the transposed linearisation."""
    t, r, h, o, a = 2, 3, 4, 2, 2
    rng, theta, pre, post = _float64_problem(4, t, r, h, o, a)
    alpha = 0.3
    old_dist = jax.vmap(pol.apply)(maml.adapt(theta, pre, alpha, inner_update), post.obs)
    kl_fn = lambda th: maml.pooled_kl(old_dist, maml.adapt(th, pre, alpha, inner_update), post)
    x0, unravel = ravel_pytree(theta)
    v = jnp.asarray(rng.normal(size=x0.shape))
    hvp = jax.jit(lambda th, vv: maml.meta_kl_hvp(th, pre, post, old_dist, alpha, inner_update)(vv))
    hv = ravel_pytree(hvp(theta, unravel(v)))[0]
    kl_grad = jax.jit(jax.grad(kl_fn))
    grad = lambda x: ravel_pytree(kl_grad(unravel(x)))[0]
    eps = 1e-5
    ref = (grad(x0 + eps * v) - grad(x0 - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv, ref, rtol=1e-6, atol=1e-9)


def test_pooled_kl_weighs_every_valid_sample_equally(x64):
    """The TRPO constraint is the authors' concatenated mean: one mean over the valid
    samples of all tasks (a numpy loop over samples), which differs from the mean of
    per-task means when the tasks hold different numbers of valid samples."""
    rng = np.random.default_rng(7)
    t, r, h, o, a = 3, 2, 5, 2, 2
    new = pol.init(jax.random.PRNGKey(7), o, a, hidden=(4,), init_std=0.7)
    new = maml.broadcast_tasks(jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), new), t)
    batch = jax.tree.map(jnp.asarray, _random_batch(rng, t, r, h, o, a))
    batch = batch._replace(mask=batch.mask.at[0].set(0.0).at[0, 0, 0].set(1.0))  # task 0: 1
    old_mean = jnp.asarray(rng.normal(size=(t, r, h, a)))
    old_log_std = jnp.asarray(rng.normal(size=(t, r, h, a)) * 0.3)
    got = float(maml.pooled_kl((old_mean, old_log_std), new, batch))
    total, count = 0.0, 0
    for i in range(t):
        p_i = jax.tree.map(lambda v, i=i: v[i], new)
        for j in range(r):
            for k in range(h):
                if batch.mask[i, j, k]:
                    m, ls = pol.apply(p_i, batch.obs[i, j, k])
                    s0, s1 = np.exp(np.asarray(old_log_std[i, j, k])), np.exp(np.asarray(ls))
                    d = np.asarray(m) - np.asarray(old_mean[i, j, k])
                    total += float(np.sum(np.log(s1 / s0) + (s0**2 + d**2) / (2 * s1**2) - 0.5))
                    count += 1
    np.testing.assert_allclose(got, total / count, rtol=1e-10)
    per_task = float(jnp.mean(maml.task_kl((old_mean, old_log_std), new, batch)))
    assert abs(per_task - got) > 1e-3 * abs(got)


# ----------------------------------------------------------------------------------------
# The paper's std-vs-KL diagnostic against a numpy loop.


def _np_policy(p, obs):
    h = obs
    for layer in p["layers"][:-1]:
        h = np.tanh(h @ layer["w"] + layer["b"])
    return h @ p["layers"][-1]["w"] + p["layers"][-1]["b"], p["log_std"]


def test_std_kl_diagnostic_matches_numpy_loop():
    rng = np.random.default_rng(0)
    t, r, h, o, a = 4, 3, 12, 2, 2
    batch = _random_batch(rng, t, r, h, o, a)
    mask = np.ones((t, r, h), np.float32)
    mask[1, 0, 7:] = 0.0  # a rollout that ended early
    batch = batch._replace(mask=jnp.asarray(mask))
    models = {"scale": jnp.asarray([1.0, 3.0])}  # two models that disagree in proportion to |a|
    theta = pol.init(jax.random.PRNGKey(0), o, a, (16,), init_std=1.0)
    post = maml.adapt(theta, (batch,), 0.5)
    stride = 5
    model_std, r_all = maml.std_kl_diagnostic(true_dynamics, models, theta, post, batch, stride)

    p0 = jax.tree.map(np.asarray, theta)
    stds, kls, ws, task_std = [], [], [], []
    for ti in range(t):
        pt = jax.tree.map(lambda x, ti=ti: np.asarray(x[ti]), post)
        per_task = []
        for si in range(0, h, stride):
            s_, a_ = np.asarray(batch.obs[ti, 0, si]), np.asarray(batch.act[ti, 0, si])
            preds = np.stack([s_ + 0.1 * a_ * sc for sc in (1.0, 3.0)])
            std = preds.std(axis=0).mean()
            m0, ls0 = _np_policy(p0, s_)
            m1, ls1 = _np_policy(pt, s_)
            kl = np.sum(
                ls1 - ls0 + (np.exp(2 * ls0) + (m0 - m1) ** 2) / (2 * np.exp(2 * ls1)) - 0.5
            )
            stds.append(std)
            kls.append(kl)
            ws.append(mask[ti, 0, si])
            if mask[ti, 0, si]:
                per_task.append(std)
        task_std.append(np.mean(per_task))
    keep = np.asarray(ws) > 0
    expected_r = np.corrcoef(np.asarray(stds)[keep], np.asarray(kls)[keep])[0, 1]
    np.testing.assert_allclose(model_std, task_std, rtol=1e-5)
    np.testing.assert_allclose(float(r_all), expected_r, rtol=1e-4)
    assert model_std.shape == (t,)


def test_weighted_pearson_and_disagreement_edge_cases():
    x = jnp.asarray([1.0, 2.0, 3.0, 100.0])
    y = jnp.asarray([2.0, 4.1, 5.9, -50.0])
    w = jnp.asarray([1.0, 1.0, 1.0, 0.0])  # weight 0 drops the outlier
    np.testing.assert_allclose(
        maml.weighted_pearson(x, y, w), np.corrcoef(x[:3], y[:3])[0, 1], rtol=1e-5
    )
    assert np.isnan(maml.weighted_pearson(x, jnp.zeros(4), w))  # KL = 0 at alpha = 0
    same = {"scale": jnp.ones((3,))}
    obs, act = jnp.ones((5, 2)), jnp.full((5, 2), 0.5)
    np.testing.assert_array_equal(maml.disagreement(true_dynamics, same, obs, act), 0.0)


def test_meta_step_reports_the_diagnostic():
    # The learning test's run (identical true models): no disagreement anywhere, so the
    # per-task std is 0 and r is undefined; two different models give a finite r.
    cfg = CFGS["ppo"]
    state = maml.init_meta_state(jax.random.PRNGKey(0), cfg, 2, 2)
    _, _, diag = _run("ppo", state)
    assert diag.model_std.shape == (NUM_STEPS, cfg.meta_batch_size)
    np.testing.assert_array_equal(diag.model_std, 0.0)
    assert np.all(np.isnan(diag.std_kl_corr))
    # same shapes as MODELS, so the shared compiled run is reused
    state = maml.init_meta_state(jax.random.PRNGKey(0), CFGS["trpo"], 2, 2)
    _, _, diag = _run_fn("trpo")(state, {"scale": jnp.asarray([1.0, 2.0])}, STARTS, 50)
    assert np.all(diag.model_std > 0)
    assert np.all(np.abs(diag.std_kl_corr) <= 1.0)
