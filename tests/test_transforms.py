"""Every public function whose docstring says it is safe under jit, vmap or grad is run
under exactly those transforms, on small inputs:

- jit: equals the eager call;
- vmap: over a batch of two input sets (the second perturbed), equals two eager calls;
- grad: of the sum of the float outputs in the first argument, in float64, equals central
  finite differences along a random direction.

`test_every_claim_is_exercised` keeps the docstrings and this registry in step: a
function that claims a transform without an entry here fails.
"""

import functools
import importlib
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mbmpo_jax import buffer, dynamics, ensemble, imagine, maml, mbmpo, policy, returns
from mbmpo_jax.optim import ppo, trpo

OD, AD, T, R, H = 3, 2, 2, 2, 4
MODULES = [
    "mbmpo_jax.buffer",
    "mbmpo_jax.dynamics",
    "mbmpo_jax.ensemble",
    "mbmpo_jax.imagine",
    "mbmpo_jax.maml",
    "mbmpo_jax.policy",
    "mbmpo_jax.returns",
    "mbmpo_jax.optim.trpo",
    "mbmpo_jax.optim.ppo",
    "mbmpo_jax.mbmpo",
]


def claims(fn) -> set[str]:
    """The transforms a docstring's "safe under ..." sentence names."""
    doc = inspect.getdoc(getattr(fn, "__wrapped__", fn)) or ""
    m = re.search(r"safe under ([^.;(]*)", doc)
    return {t for t in ("jit", "vmap", "grad") if m and t in m.group(1)} if m else set()


def _rng(seed=0):
    return np.random.default_rng(seed)


OPT = optax.adam(1e-3)


def optax_state(params):
    return OPT.init(params)


def _model_fn(member, x):
    return jnp.tanh(x @ member["w"])


@functools.cache
def _cases(dt=jnp.float32):
    """name -> (fn, args): fn's traced arguments are args (statics are bound); every float
    array, closed over or passed, has dtype ``dt``."""
    r = _rng()

    def _f(rng, *shape):
        return jnp.asarray(rng.normal(size=shape), dt)

    normed = policy.set_obs_norm(
        policy.init(jax.random.PRNGKey(9), OD, AD, (4,), dtype=dt, normalize_obs=True),
        jnp.ones(OD, dt),
        jnp.full((OD,), 2.0, dt),
    )

    def _batch(rng):
        mask = (np.arange(H) < rng.integers(1, H + 1, size=(T, R, 1))).astype(np.float64)
        return maml.PolicyBatch(
            obs=_f(rng, T, R, H, OD),
            act=_f(rng, T, R, H, AD),
            adv=_f(rng, T, R, H) * mask.astype(dt),
            mask=jnp.asarray(mask, dt),
            logp=_f(rng, T, R, H) - 2.0,
        )

    ens_cfg = dynamics.EnsembleConfig(num_models=2, hidden=(4, 4), weight_norm=True)
    ens = dynamics.init(jax.random.PRNGKey(1), OD, AD, ens_cfg, dt)
    models = dynamics.model_params(ens)
    one_model = jax.tree.map(lambda x: x[0], models)
    layers = dynamics.mlp_init(jax.random.PRNGKey(2), (OD + AD, 4, OD), weight_norm=True, dtype=dt)
    theta = policy.init(jax.random.PRNGKey(0), OD, AD, hidden=(4,), dtype=dt)
    members = {"w": _f(_rng(3), 2, OD, OD)}
    post_params = maml.broadcast_tasks(theta, T)
    pre, post = _batch(r), _batch(_rng(1))
    dist = jax.vmap(policy.apply)(post_params, post.obs)
    obs, act = _f(r, 5, OD), _f(r, 5, AD)
    rew, mask = _f(r, T, H), jnp.ones((T, H), dt)
    return {
        "dynamics.dense": (
            functools.partial(dynamics.dense, compute_dtype="float32"),
            (_f(r, 5, 4), _f(r, 4, 3)),
        ),
        "dynamics.effective_weight": (dynamics.effective_weight, (layers[0],)),
        "dynamics.ensemble_mean": (lambda o, a: dynamics.ensemble_mean(ens, o, a), (obs, act)),
        "dynamics.ensemble_std": (lambda o, a: dynamics.ensemble_std(ens, o, a), (obs, act)),
        "dynamics.mlp_apply": (
            lambda ly, x: dynamics.mlp_apply(ly, x),
            (layers, _f(r, 5, OD + AD)),
        ),
        "dynamics.mlp_init": (
            lambda k: dynamics.mlp_init(k, (OD + AD, 4, OD)),
            (jax.random.PRNGKey(4),),
        ),
        "dynamics.model_params": (
            lambda p: dynamics.model_params(ens.replace(params=p)).layers,
            (ens.params,),
        ),
        "dynamics.model_step": (
            lambda m, o, a: dynamics.model_step(m, o, a),
            (one_model, obs, act),
        ),
        "dynamics.predict": (lambda o, a: dynamics.predict(ens, o, a), (obs, act)),
        "ensemble.apply_all": (
            lambda m, x: ensemble.apply_all(_model_fn, m, x),
            (members, _f(r, 5, OD)),
        ),
        "ensemble.apply_per_task": (
            lambda m, x: ensemble.apply_per_task(_model_fn, m, x),
            (members, _f(r, 4, 3, OD)),
        ),
        "ensemble.disagreement": (ensemble.disagreement, (_f(r, 3, 5, OD),)),
        "ensemble.init": (
            lambda k: ensemble.init(lambda kk: jax.random.normal(kk, (3,)), k, 2),
            (jax.random.PRNGKey(5),),
        ),
        "imagine.undiscounted_return": (
            lambda rw: imagine.undiscounted_return(imagine.Rollouts(*([rw] * 6))),
            (_f(r, T, R, H),),
        ),
        "maml.adapt": (lambda th, b: maml.adapt(th, (b,), 0.1), (theta, pre)),
        "maml.broadcast_tasks": (lambda th: maml.broadcast_tasks(th, T), (theta,)),
        "maml.disagreement": (
            lambda o, a: maml.disagreement(dynamics.model_step, models, o, a),
            (obs, act),
        ),
        "maml.init_meta_state": (
            lambda k: maml.init_meta_state(k, maml.MetaConfig(), OD, AD).params,
            (jax.random.PRNGKey(6),),
        ),
        "maml.inner_grad": (
            lambda p, b: maml.inner_grad(p, b, "std_invariant"),
            (theta, jax.tree.map(lambda x: x[0], pre)),
        ),
        "maml.inner_step": (
            lambda p, b: maml.inner_step(p, b, 0.1),
            (theta, jax.tree.map(lambda x: x[0], pre)),
        ),
        "maml.likelihood_ratio": (maml.likelihood_ratio, (_f(r, 6), _f(r, 6), _f(r, 6))),
        "maml.lr_surrogate": (maml.lr_surrogate, (post_params, post)),
        "maml.masked_mean": (maml.masked_mean, (_f(r, T, R, H), pre.mask)),
        "maml.meta_kl_hvp": (
            # both curvatures: the paper's step (symmetric Jacobian) and the std-invariant
            # one (the transposed linearisation)
            lambda th, v: tuple(
                maml.meta_kl_hvp(th, (pre,), post, dist, 0.1, u)(v) for u in maml.INNER_UPDATES
            ),
            (theta, jax.tree.map(jnp.ones_like, theta)),
        ),
        "maml.meta_objective": (lambda th: maml.meta_objective(th, (pre,), post, 0.1)[0], (theta,)),
        "maml.pg_surrogate": (maml.pg_surrogate, (theta, jax.tree.map(lambda x: x[0], pre))),
        "maml.pooled_kl": (lambda p: maml.pooled_kl(dist, p, post), (post_params,)),
        "maml.ppo_outer_step": (
            lambda th: maml.ppo_outer_step(
                functools.partial(maml.meta_objective, pre_batches=(pre,), post=post, inner_lr=0.1),
                th,
                optax_state(theta),
                jnp.asarray(5e-4, dt),
                pre,
                post,
                post_params,
                maml.MetaConfig(ppo_epochs=2),
            )[0],
            (theta,),
        ),
        "maml.std_kl_diagnostic": (
            lambda th, pp: maml.std_kl_diagnostic(dynamics.model_step, models, th, pp, pre),
            (theta, post_params),
        ),
        "maml.task_kl": (lambda p: maml.task_kl(dist, p, post), (post_params,)),
        "maml.trpo_outer_step": (
            lambda th: maml.trpo_outer_step(
                functools.partial(maml.meta_objective, pre_batches=(pre,), post=post, inner_lr=0.1),
                th,
                (pre,),
                post,
                post_params,
                maml.MetaConfig(cg_iters=3, max_backtracks=3),
            )[0],
            (theta,),
        ),
        "maml.weighted_pearson": (maml.weighted_pearson, (_f(r, 7), _f(r, 7), jnp.ones(7, dt))),
        "policy.entropy": (policy.entropy, (_f(r, 5, AD),)),
        "policy.init": (lambda k: policy.init(k, OD, AD, (4,)), (jax.random.PRNGKey(7),)),
        "policy.kl": (policy.kl, (_f(r, 5, AD), _f(r, 5, AD), _f(r, 5, AD), _f(r, 5, AD))),
        "policy.log_prob": (policy.log_prob, (_f(r, 5, AD), _f(r, 5, AD), _f(r, 5, AD))),
        "policy.renormalize": (
            policy.renormalize,
            (normed, _f(r, OD), jnp.abs(_f(r, OD)) + 0.5),
        ),
        "policy.set_obs_norm": (
            policy.set_obs_norm,
            (normed, _f(r, OD), jnp.abs(_f(r, OD)) + 0.5),
        ),
        "policy.sample": (
            lambda m, s: policy.sample(jax.random.PRNGKey(8), m, s),
            (_f(r, 5, AD), _f(r, 5, AD)),
        ),
        "returns.discounted_returns": (
            lambda rw: returns.discounted_returns(rw, mask, 0.9),
            (rew,),
        ),
        "returns.fit_linear_baseline": (
            lambda f, y: returns.fit_linear_baseline(f, y, jnp.ones(y.shape[0], dt)),
            (_f(r, 12, 4), _f(r, 12)),
        ),
        "returns.gae": (lambda rw, v: returns.gae(rw, v, mask, 0.9, 0.95), (rew, _f(r, T, H))),
        "returns.linear_features": (returns.linear_features, (_f(r, T, H, OD),)),
        "returns.normalize": (lambda a: returns.normalize(a, mask), (rew,)),
        "trpo.backtracking_line_search": (
            lambda x: trpo.backtracking_line_search(
                lambda y: (jnp.sum(y**2), jnp.sum(y**2) * 1e-3), x, 0.5 * x, jnp.sum(x**2), 1.0
            )[0],
            (_f(r, 4),),
        ),
        "trpo.conjugate_gradient": (
            lambda b: trpo.conjugate_gradient(lambda v: 2.0 * v + 0.1 * jnp.sum(v), b, 4),
            (_f(r, 4),),
        ),
        "ppo.adam_steps": (
            lambda p: ppo.adam_steps(lambda q: jnp.sum(q**2), p, optax_state(p), OPT, 2)[0],
            (_f(r, 4),),
        ),
        "ppo.adapt_kl_coeff": (
            lambda c, k: ppo.adapt_kl_coeff(c, k, 0.01),
            (jnp.asarray(1.0, dt), jnp.asarray(0.05, dt)),
        ),
        "ppo.clipped_objective": (
            lambda a, b, c: ppo.clipped_objective(a, b, c, 0.2),
            (_f(r, 6), _f(r, 6), _f(r, 6)),
        ),
        "mbmpo.act_per_env": (
            lambda p, o: mbmpo.act_per_env(p, jax.random.PRNGKey(9), o),
            (post_params, _f(r, T, OD)),
        ),
        "mbmpo.act_shared": (
            lambda p, o: mbmpo.act_shared(p, jax.random.PRNGKey(9), o),
            (theta, _f(r, 5, OD)),
        ),
        "buffer.init": (lambda: buffer.init(8, OD, AD), ()),
        "buffer.valid_mask": (
            lambda c: buffer.valid_mask(buffer.init(8, OD, AD).replace(count=c)),
            (jnp.int32(3),),
        ),
        "buffer.ages": (  # a full buffer that has wrapped: the newest row is ptr - 1
            lambda c, p: buffer.ages(buffer.init(8, OD, AD).replace(count=c, ptr=p)),
            (jnp.int32(8), jnp.int32(3)),
        ),
    }


def _claimed():
    out = {}
    for name in MODULES:
        mod = importlib.import_module(name)
        short = name.split(".")[-1]
        for fn_name in mod.__all__:
            fn = getattr(mod, fn_name)
            if inspect.isclass(fn) or inspect.ismodule(fn) or not callable(fn):
                continue
            if claims(fn):
                out[f"{short}.{fn_name}"] = claims(fn)
    return out


CLAIMED = _claimed()


def test_every_claim_is_exercised():
    assert sorted(CLAIMED) == sorted(_cases())


def _floats(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]


def _close(a, b, rtol=1e-5, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(CLAIMED))
def test_jit_and_vmap_equal_eager_calls(name):
    fn, args = _cases()[name]
    jit_claimed = "jit" in CLAIMED[name]
    eager = fn(*args)
    if jit_claimed:
        _close(jax.jit(fn)(*args), eager)
    if "vmap" in CLAIMED[name] and args:
        bump = lambda x: x + 0.01 if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x
        other = jax.tree.map(bump, args)
        stacked = jax.tree.map(lambda x, y: jnp.stack([x, y]), args, other)
        # Where jit is claimed too, the batched function runs compiled: vmap's batching rules
        # are what is checked, and one compile costs less than running the batched trace op
        # by op (trpo_outer_step's case: 33 s -> 21 s of a core, WORKSPACE.md "Testing").
        batched = (jax.jit(jax.vmap(fn)) if jit_claimed else jax.vmap(fn))(*stacked)
        _close(jax.tree.map(lambda x: x[0], batched), eager, rtol=1e-4, atol=1e-4)
        # jit equals eager (checked above where claimed), and is much cheaper to run
        ref = jax.jit(fn) if jit_claimed else fn
        _close(jax.tree.map(lambda x: x[1], batched), ref(*other), rtol=1e-4, atol=1e-4)


GRAD_CASES = sorted(n for n, claimed in CLAIMED.items() if "grad" in claimed)


@pytest.mark.parametrize("name", GRAD_CASES)
def test_grad_matches_finite_differences_in_float64(name, x64):
    fn, args = _cases(jnp.float64)[name]
    total = jax.jit(lambda first: sum(jnp.sum(x) for x in _floats(fn(first, *args[1:]))))
    grad = jax.jit(jax.grad(total))(args[0])
    direction = jax.tree.map(
        lambda x: (
            jnp.asarray(_rng(11).normal(size=x.shape), x.dtype)
            if jnp.issubdtype(x.dtype, jnp.floating)
            else jnp.zeros_like(x)
        ),
        args[0],
    )
    eps = 1e-6
    shift = lambda s: jax.tree.map(
        lambda x, d: x + s * d if jnp.issubdtype(x.dtype, jnp.floating) else x, args[0], direction
    )
    fd = (total(shift(eps)) - total(shift(-eps))) / (2 * eps)
    analytic = sum(jnp.sum(g * d) for g, d in zip(_floats(grad), _floats(direction), strict=True))
    np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-5, atol=1e-7)
