"""The MB-MPO meta step: inner policy-gradient adaptation and the outer meta update.

One meta step, as a single jittable pure function (``make_meta_step``):

1. the pre-update policy ``theta`` samples ``R`` imaginary rollouts in each task's model;
2. inner step per task: ``theta'_k = theta + alpha grad J_k(theta)`` with the vanilla PG
   surrogate ``J_k = mean(log pi * A)`` (std params included); with
   ``num_inner_steps > 1`` each further step re-samples with the adapted params in the
   same model, MAML-style; ``alpha = 0`` is the ME-TRPO ablation (a shared policy);
3. the post-update policies ``theta'_k`` sample new rollouts;
4. outer step on ``theta`` for the meta-objective ``mean_k J_k(theta'_k(theta))``, the
   likelihood-ratio surrogate on the post-update samples, differentiated *through* the
   inner step (the inner gradient is recomputed from ``theta`` inside the outer loss;
   the samples and advantages are constants): TRPO (the paper) or PPO-clip (RLlib).

``make_meta_train`` runs N meta steps in one ``lax.scan``. Rollouts that hit ``done``
are masked; every mean over samples below is a masked mean over ``[R, H]`` per task,
then a plain mean over tasks (each task has the same number of rollouts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from mbmpo_jax import imagine as imagine_lib
from mbmpo_jax import policy as pol
from mbmpo_jax import returns as returns_lib
from mbmpo_jax import sharding as sharding_lib
from mbmpo_jax.optim import ppo as ppo_lib
from mbmpo_jax.optim import trpo as trpo_lib

__all__ = [
    "MetaConfig",
    "MetaDiagnostics",
    "MetaState",
    "OuterInfo",
    "PolicyBatch",
    "adapt",
    "broadcast_tasks",
    "disagreement",
    "init_meta_state",
    "inner_step",
    "lr_surrogate",
    "make_meta_step",
    "make_meta_train",
    "masked_mean",
    "meta_kl_hvp",
    "pooled_kl",
    "meta_objective",
    "pg_surrogate",
    "ppo_outer_step",
    "std_kl_diagnostic",
    "task_kl",
    "trpo_outer_step",
    "weighted_pearson",
]

Params = Any


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """Meta-learning hyperparameters; defaults are the paper's (original code's) values.

    Shape-deciding fields (sizes, counts, ``outer``, ``start_states``) are read at trace
    time; changing them means a new compile.
    """

    meta_batch_size: int = 20  # T, tasks; task i uses model i // (T / K)
    rollouts_per_task: int = 50  # R
    horizon: int = 200  # H
    policy_hidden: tuple[int, ...] = (32, 32)
    init_std: float = 1.0
    init_output_scale: float = 1.0  # the policy's last layer at init (1.0: rllab's Glorot)
    inner_lr: float = 1e-3  # alpha; 0 gives ME-TRPO
    num_inner_steps: int = 1
    discount: float = 0.99
    gae_lambda: float = 1.0
    baseline_reg: float = 1e-5
    normalize_adv: bool = True
    obs_clip: float = 1000.0
    # "reset": task.init_obs; "given": uniform draws from states passed to the step
    # (e.g. the real buffer's observations, the paper's long-horizon variant).
    start_states: str = "reset"
    outer: str = "trpo"  # "trpo" (paper) | "ppo" (RLlib's port)
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15
    # Fisher-vector products on every n-th rollout only (1 = all, as the paper). The
    # curvature estimate is all they feed; the line search checks the exact KL.
    fvp_subsample: int = 1
    # The std-vs-KL diagnostic evaluates all K models on about this many pre-update
    # states per task (rollout 0, strided), every meta step.
    diag_states_per_task: int = 50
    ppo_clip: float = 0.5
    ppo_lr: float = 1e-3
    ppo_num_steps: int = 8
    ppo_kl_coeff: float = 5e-4  # initial adaptive coefficient of the pre-update KL penalty
    ppo_kl_target: float = 0.01
    num_meta_steps: int = 30  # per call of make_meta_train's function

    def __post_init__(self):
        if self.outer not in ("trpo", "ppo"):
            raise ValueError(f"outer must be 'trpo' or 'ppo', got {self.outer!r}")
        if self.start_states not in ("reset", "given"):
            raise ValueError(f"start_states must be 'reset' or 'given', got {self.start_states!r}")
        if self.fvp_subsample < 1:
            raise ValueError("fvp_subsample must be >= 1")
        if self.num_inner_steps < 1:
            raise ValueError("num_inner_steps must be >= 1 (use inner_lr=0 for no adaptation)")


class PolicyBatch(NamedTuple):
    """Processed samples for the policy losses, ``[T, R, H, ...]``; all constants.

    obs ``[T, R, H, O]``, act ``[T, R, H, A]`` (unclipped), adv / mask / logp ``[T, R, H]``
    (logp: under the sampling policy).
    """

    obs: jax.Array
    act: jax.Array
    adv: jax.Array
    mask: jax.Array
    logp: jax.Array


@flax.struct.dataclass
class MetaState:
    """Explicit state of the meta-learner.

    params: pre-update policy params ``theta`` (no leading axis).
    opt_state: optax Adam state for ``outer="ppo"``; ``()`` for TRPO.
    kl_coeff: PPO's adaptive KL-penalty coefficient (unused by TRPO).
    key: PRNG key for imagination.
    step: meta steps done.
    """

    params: Params
    opt_state: Any
    kl_coeff: jax.Array
    key: jax.Array
    step: jax.Array


class MetaDiagnostics(NamedTuple):
    """Per meta step (stacked ``[N, ...]`` by ``make_meta_train``).

    pre_return / post_return: ``[T]`` mean undiscounted imagined return per task of the
      pre-update policy (first sampling phase) / the final post-update policies.
    kl_pre_post: ``[T]`` mean KL(pre || post) on the pre-update samples (the paper relates
      it to the ensemble's disagreement).
    surr_before / surr_after: meta-objective (likelihood-ratio surrogate on the post
      samples) at the old / returned ``theta``.
    kl_after: mean KL(old post || new post) at the returned ``theta``.
    accepted: the outer step changed ``theta``.
    nonfinite: a non-finite loss/gradient/params was met and the step rejected.
    num_backtracks: TRPO line-search backtracks (0 for PPO).
    entropy: pre-update policy entropy.
    alive_frac: fraction of pre-update imagined steps before ``done``.
    model_std: ``[T]`` the ensemble's disagreement (``disagreement``) on task t's
      pre-update states (rollout 0, about ``cfg.diag_states_per_task`` of them).
    std_kl_corr: Pearson r, over those (task, state) pairs, between the disagreement and
      ``KL(pre || post_t)`` at the state: the paper's "adaptation does the work where the
      models disagree", measured within one meta step (nan when alpha = 0).
    """

    pre_return: jax.Array
    post_return: jax.Array
    kl_pre_post: jax.Array
    surr_before: jax.Array
    surr_after: jax.Array
    kl_after: jax.Array
    accepted: jax.Array
    nonfinite: jax.Array
    num_backtracks: jax.Array
    entropy: jax.Array
    alive_frac: jax.Array
    model_std: jax.Array
    std_kl_corr: jax.Array


# ---------------------------------------------------------------------------------------
# Losses. A single task's batch has [R, H, ...] arrays; a batch of all tasks [T, R, H, ...].


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over the last two axes ``[..., R, H] -> [...]`` counting masked entries only.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return jnp.sum(x * mask, axis=(-2, -1)) / jnp.maximum(jnp.sum(mask, axis=(-2, -1)), 1.0)


def weighted_pearson(x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """Pearson correlation of ``x`` and ``y`` weighted by ``w`` (same shapes), a scalar.

    nan when either variable is constant under the weights (e.g. KL = 0 at alpha = 0).

    Transforms: pure JAX; safe under jit and vmap.
    """
    w = w / jnp.sum(w)
    dx = x - jnp.sum(w * x)
    dy = y - jnp.sum(w * y)
    return jnp.sum(w * dx * dy) / jnp.sqrt(jnp.sum(w * dx * dx) * jnp.sum(w * dy * dy))


def disagreement(
    dynamics_fn: imagine_lib.DynamicsFn, models: Any, obs: jax.Array, act: jax.Array
) -> jax.Array:
    """The ensemble's std of next-state predictions, averaged over dimensions.

    Args:
      dynamics_fn: ``(model_k, obs [B, O], act [B, A]) -> next_obs [B, O]``.
      models: leaves with a leading ``[K]`` axis; every model sees every state.
      obs, act: ``[B, O]``, ``[B, A]``.

    Returns:
      ``[B]``: ``mean_o std_k next_obs[k, b, o]`` (observation units).

    Transforms: pure JAX; safe under jit and vmap.
    """
    pred = jax.vmap(dynamics_fn, in_axes=(0, None, None))(models, obs, act)
    return jnp.mean(jnp.std(pred, axis=0), axis=-1)


def std_kl_diagnostic(
    dynamics_fn: imagine_lib.DynamicsFn,
    models: Any,
    theta: Params,
    post_params: Params,
    batch: PolicyBatch,
    stride: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """The paper's diagnostic: the ensemble's disagreement against KL(pre || post).

    Evaluated on rollout 0 of every task, every ``stride``-th step (all K models at each
    of those states: cheap next to a sampling phase, and it draws no random numbers).

    Args:
      dynamics_fn, models: as in ``imagine`` (every model sees every state here).
      theta: pre-update params; post_params: ``[T]`` adapted params.
      batch: ``[T, R, H, ...]`` pre-update samples (``obs``, ``act``, ``mask`` used).

    Returns:
      ``(model_std [T], r)``: the masked mean disagreement per task, and the Pearson r
      over all (task, state) pairs between the disagreement and the per-state
      ``KL(pi_theta(.|s) || pi_theta'_t(.|s))``.

    Transforms: pure JAX; safe under jit and vmap.
    """
    obs, act, mask = (x[:, 0, ::stride] for x in (batch.obs, batch.act, batch.mask))
    t, s = mask.shape
    std = disagreement(dynamics_fn, models, obs.reshape(t * s, -1), act.reshape(t * s, -1))
    std = std.reshape(t, s)
    pre_mean, pre_log_std = pol.apply(theta, obs)
    post_mean, post_log_std = jax.vmap(pol.apply)(post_params, obs)
    kl = pol.kl(pre_mean, pre_log_std, post_mean, post_log_std)  # [T, S]
    model_std = jnp.sum(std * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1.0)
    return model_std, weighted_pearson(std, kl, mask)


def broadcast_tasks(params: Params, num_tasks: int) -> Params:
    """``theta`` copied onto a leading ``[T]`` axis (its gradient sums over tasks)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_tasks, *x.shape)), params)


def pg_surrogate(params: Params, batch: PolicyBatch) -> jax.Array:
    """Vanilla PG surrogate of one task, ``mean(log pi(a|s) * A)``; its gradient is the PG."""
    mean, log_std = pol.apply(params, batch.obs)
    return masked_mean(pol.log_prob(mean, log_std, batch.act) * batch.adv, batch.mask)


def inner_step(params: Params, batch: PolicyBatch, inner_lr: float) -> Params:
    """One task's adaptation ``theta + alpha grad J(theta)`` (differentiable in theta)."""
    grads = jax.grad(pg_surrogate)(params, batch)
    return jax.tree.map(lambda p, g: p + inner_lr * g, params, grads)


def adapt(theta: Params, pre_batches: tuple[PolicyBatch, ...], inner_lr: float) -> Params:
    """Post-update params ``[T]`` from ``theta`` through all inner steps.

    Args:
      theta: pre-update params (no leading axis).
      pre_batches: one ``[T, R, H, ...]`` batch per inner step, sampled by the params
        before that step.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    num_tasks = pre_batches[0].obs.shape[0]
    params = broadcast_tasks(theta, num_tasks)
    for batch in pre_batches:
        params = jax.vmap(inner_step, in_axes=(0, 0, None))(params, batch, inner_lr)
    return params


def lr_surrogate(post_params: Params, post: PolicyBatch) -> jax.Array:
    """``mean_k mean(pi_new / pi_old * A)`` on the post-update samples (scalar).

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    mean, log_std = jax.vmap(pol.apply)(post_params, post.obs)
    ratio = jnp.exp(pol.log_prob(mean, log_std, post.act) - post.logp)
    return jnp.mean(masked_mean(ratio * post.adv, post.mask))


def meta_objective(
    theta: Params, pre_batches: tuple[PolicyBatch, ...], post: PolicyBatch, inner_lr: float
) -> jax.Array:
    """The MB-MPO meta-objective ``mean_k J_k(theta'_k(theta))`` (to maximise).

    Its gradient contains the second-order term: ``adapt`` differentiates the inner
    surrogate, and ``jax.grad`` of this function differentiates through that gradient.
    """
    return lr_surrogate(adapt(theta, pre_batches, inner_lr), post)


def task_kl(
    old_dist: tuple[jax.Array, jax.Array], new_params: Params, batch: PolicyBatch
) -> jax.Array:
    """Per task ``mean KL(old || new)`` on ``batch.obs``, ``[T]``.

    Args:
      old_dist: ``(mean, log_std)`` ``[T, R, H, A]`` of the old policies on ``batch.obs``.
      new_params: per-task params ``[T]``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    mean, log_std = jax.vmap(pol.apply)(new_params, batch.obs)
    return masked_mean(pol.kl(old_dist[0], old_dist[1], mean, log_std), batch.mask)


def pooled_kl(
    old_dist: tuple[jax.Array, jax.Array], new_params: Params, batch: PolicyBatch
) -> jax.Array:
    """``mean KL(old || new)`` over the valid samples of all tasks together (scalar).

    The TRPO constraint of the authors' code (the per-task KLs concatenated, then one
    mean): each valid sample weighs the same, so a task whose rollouts terminate early
    (fewer samples) weighs less than under a mean of per-task means.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    mean, log_std = jax.vmap(pol.apply)(new_params, batch.obs)
    kl = pol.kl(old_dist[0], old_dist[1], mean, log_std)
    return jnp.sum(kl * batch.mask) / jnp.maximum(jnp.sum(batch.mask), 1.0)


def meta_kl_hvp(
    theta: Params,
    pre_batches: tuple[PolicyBatch, ...],
    post: PolicyBatch,
    old_dist: tuple[jax.Array, jax.Array],
    inner_lr: float,
) -> Callable[[Params], Params]:
    """``v -> H v`` with ``H`` the Hessian in ``theta`` of the outer step's KL constraint
    ``pooled_kl(old_dist, theta'(theta), post)`` at ``theta``, where ``old_dist`` are
    the post-update policies of this same ``theta`` (so the KL is at its minimum).

    Gauss-Newton form ``J^T F J``: ``J = d theta' / d theta`` and ``F`` the Fisher matrix
    of the post-update policies on the post samples. It equals the full Hessian here
    because the KL's gradient in ``theta'`` vanishes at the old params, and it avoids
    differentiating the inner gradient twice (the full forward-over-reverse Hessian
    costs about twice as much per product and compiles twice as slowly):

    - each inner step ``p -> p + alpha grad J_s(p)`` has the Jacobian
      ``I + alpha hess J_s``, symmetric, so ``J^T`` reuses the same forward-mode
      products in reverse order (no transposition of second-order code);
    - ``F`` of a diagonal Gaussian is ``J_f^T diag(1/std^2 | 2) J_f`` in the outputs
      ``f = (mean, log_std)`` (each sample's weight is that of the masked mean).

    The linearisations are built once, so each CG iteration costs linear passes only.
    """
    num_tasks = post.obs.shape[0]
    params = broadcast_tasks(theta, num_tasks)
    step_jvps = []
    for batch in pre_batches:
        step_fn = lambda p, batch=batch: jax.vmap(inner_step, in_axes=(0, 0, None))(
            p, batch, inner_lr
        )
        params, step_jvp = jax.linearize(step_fn, params)
        step_jvps.append(step_jvp)
    post_params = params

    out_fn = lambda pp: jax.vmap(pol.apply)(pp, post.obs)  # ([T, R, H, A], [T, R, H, A])
    (_, out_log_std), out_jvp = jax.linearize(out_fn, post_params)
    out_vjp = jax.linear_transpose(out_jvp, post_params)
    # d^2 KL / d out^2 at the old outputs, times each sample's weight in the pooled mean
    # over all valid samples of all tasks (`pooled_kl`)
    weight = (post.mask / jnp.maximum(jnp.sum(post.mask), 1.0))[..., None]
    mean_curv = weight * jnp.exp(-2.0 * old_dist[1])
    del out_log_std  # equals old_dist[1]; the curvature uses the old one as the KL does

    def hvp(v):
        u = broadcast_tasks(v, num_tasks)
        for step_jvp in step_jvps:
            u = step_jvp(u)
        d_mean, d_log_std = out_jvp(u)
        (w,) = out_vjp((mean_curv * d_mean, 2.0 * weight * d_log_std))
        for step_jvp in reversed(step_jvps):
            w = step_jvp(w)
        return jax.tree.map(lambda x: jnp.sum(x, axis=0), w)

    return hvp


# ---------------------------------------------------------------------------------------
# Outer steps.


class OuterInfo(NamedTuple):
    surr_before: jax.Array
    surr_after: jax.Array
    kl_after: jax.Array
    accepted: jax.Array
    nonfinite: jax.Array
    num_backtracks: jax.Array


def trpo_outer_step(
    theta: Params,
    pre_batches: tuple[PolicyBatch, ...],
    post: PolicyBatch,
    old_post_params: Params,
    cfg: MetaConfig,
) -> tuple[Params, OuterInfo]:
    """The paper's outer step: TRPO on the meta-objective with the post-update KL bound.

    The constraint is ``KL(pi_old post_k || pi_new post_k)`` averaged over all valid post
    samples of all tasks (``pooled_kl``, as the authors' code), where the new post-update
    params are recomputed from the candidate ``theta``.

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """
    old_dist = jax.lax.stop_gradient(jax.vmap(pol.apply)(old_post_params, post.obs))
    # every n-th rollout (axis 1 of [T, R, H, ...]) for the curvature products
    sub = lambda tree: jax.tree.map(lambda x: x[:, :: cfg.fvp_subsample], tree)

    def loss_and_kl(th):
        post_params = adapt(th, pre_batches, cfg.inner_lr)
        loss = -lr_surrogate(post_params, post)
        return loss, pooled_kl(old_dist, post_params, post)

    new_theta, info = trpo_lib.trpo_update(
        lambda th: loss_and_kl(th)[0],
        lambda th: loss_and_kl(th)[1],
        theta,
        make_kl_hvp=lambda th: meta_kl_hvp(
            th, sub(pre_batches), sub(post), sub(old_dist), cfg.inner_lr
        ),
        max_kl=cfg.max_kl,
        cg_iters=cfg.cg_iters,
        cg_damping=cfg.cg_damping,
        backtrack_ratio=cfg.backtrack_ratio,
        max_backtracks=cfg.max_backtracks,
        loss_and_kl_fn=loss_and_kl,
    )
    return new_theta, OuterInfo(
        surr_before=-info.loss_before,
        surr_after=-info.loss_after,
        kl_after=info.kl_after,
        accepted=info.accepted,
        nonfinite=info.nonfinite,
        num_backtracks=info.num_backtracks,
    )


def ppo_outer_step(
    theta: Params,
    opt_state: optax.OptState,
    kl_coeff: jax.Array,
    pre_batches: tuple[PolicyBatch, ...],
    post: PolicyBatch,
    old_post_params: Params,
    cfg: MetaConfig,
) -> tuple[Params, optax.OptState, jax.Array, OuterInfo]:
    """RLlib's outer step: Adam on the clipped meta-surrogate minus a KL penalty.

    Loss: ``-mean_k mean(min(r A, clip(r) A))`` on the post samples (post-update params
    recomputed from ``theta`` through the inner steps) plus ``kl_coeff`` times
    ``mean_k KL(pi_theta_old || pi_theta)`` on the first pre-update batch, a trust
    region on ``theta`` itself whose coefficient adapts towards ``ppo_kl_target``.
    Non-finite results are rejected (old params and optimiser state kept).

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """
    pre0 = pre_batches[0]
    num_tasks = pre0.obs.shape[0]
    old_pre_dist = jax.lax.stop_gradient(
        jax.vmap(pol.apply)(broadcast_tasks(theta, num_tasks), pre0.obs)
    )
    old_post_dist = jax.lax.stop_gradient(jax.vmap(pol.apply)(old_post_params, post.obs))
    optimizer = optax.adam(cfg.ppo_lr)

    def pre_kl(th):
        return jnp.mean(task_kl(old_pre_dist, broadcast_tasks(th, num_tasks), pre0))

    def loss_fn(th):
        post_params = adapt(th, pre_batches, cfg.inner_lr)
        mean, log_std = jax.vmap(pol.apply)(post_params, post.obs)
        logp = pol.log_prob(mean, log_std, post.act)
        obj = ppo_lib.clipped_objective(logp, post.logp, post.adv, cfg.ppo_clip)
        return -jnp.mean(masked_mean(obj, post.mask)) + kl_coeff * pre_kl(th)

    surr_before = lr_surrogate(old_post_params, post)
    new_theta, new_opt_state, losses = ppo_lib.adam_steps(
        loss_fn, theta, opt_state, optimizer, cfg.ppo_num_steps
    )
    new_post_params = adapt(new_theta, pre_batches, cfg.inner_lr)
    surr_after = lr_surrogate(new_post_params, post)
    kl_after = jnp.mean(task_kl(old_post_dist, new_post_params, post))
    leaves_finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_theta)]
    finite = jnp.all(jnp.stack(leaves_finite)) & jnp.all(jnp.isfinite(losses))
    finite = finite & jnp.isfinite(surr_after) & jnp.isfinite(kl_after)
    keep_new = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_theta = keep_new(new_theta, theta)
    new_opt_state = keep_new(new_opt_state, opt_state)
    new_kl_coeff = jnp.where(
        finite, ppo_lib.adapt_kl_coeff(kl_coeff, pre_kl(new_theta), cfg.ppo_kl_target), kl_coeff
    )
    return (
        new_theta,
        new_opt_state,
        new_kl_coeff,
        OuterInfo(
            surr_before=surr_before,
            surr_after=jnp.where(finite, surr_after, surr_before),
            kl_after=jnp.where(finite, kl_after, 0.0),
            accepted=finite,
            nonfinite=~finite,
            num_backtracks=jnp.zeros((), jnp.int32),
        ),
    )


# ---------------------------------------------------------------------------------------
# The meta step.


def init_meta_state(key: jax.Array, cfg: MetaConfig, obs_dim: int, act_dim: int) -> MetaState:
    """Fresh policy params (std ``cfg.init_std``) and optimiser state.

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    key_params, key = jax.random.split(key)
    params = pol.init(
        key_params, obs_dim, act_dim, cfg.policy_hidden, cfg.init_std, cfg.init_output_scale
    )
    opt_state = optax.adam(cfg.ppo_lr).init(params) if cfg.outer == "ppo" else ()
    return MetaState(
        params=params,
        opt_state=opt_state,
        kl_coeff=jnp.asarray(cfg.ppo_kl_coeff, jnp.float32),
        key=key,
        step=jnp.zeros((), jnp.int32),
    )


MetaStepFn = Callable[..., tuple[MetaState, Params, MetaDiagnostics]]


def make_meta_step(
    cfg: MetaConfig,
    task: Any,
    dynamics_fn: imagine_lib.DynamicsFn,
    mesh: jax.sharding.Mesh | None = None,
) -> MetaStepFn:
    """Builds the pure, jittable meta step.

    Args:
      cfg: ``MetaConfig``.
      task: ``reward``, ``done``, ``init_obs``, ``act_low``, ``act_high`` (a TaskSpec).
      dynamics_fn: ``(model_k, obs[B, O], act[B, A]) -> next_obs[B, O]``.
      mesh: optional device mesh (``sharding.task_mesh``): every ``[T, ...]`` array is
        split over its ``tasks`` axis, so imagination and the per-task work run in
        parallel on all devices. ``None`` (or a mesh of one device): no constraints.

    Returns:
      ``meta_step(state, models, start_obs=None, start_count=None)
      -> (state, post_params, diagnostics)``:

      - ``models``: dynamics params, leaves with a leading ``[K]`` axis, ``T % K == 0``.
      - ``start_obs`` ``[N, O]`` and ``start_count`` (int, valid prefix of ``start_obs``,
        default ``N``): start states drawn uniformly per rollout, required iff
        ``cfg.start_states == "given"`` (e.g. the buffer's observations and count).
      - ``post_params``: ``[T]`` post-update params that sampled this step's post-update
        rollouts (adapted from the *old* ``theta``), i.e. the original code's policies
        for the next real-data collection.
      - ``diagnostics``: ``MetaDiagnostics``.
    """
    num_tasks, r = cfg.meta_batch_size, cfg.rollouts_per_task

    def sample(key, params_t, models, start_obs, start_count):
        key_start, key_roll = jax.random.split(key)
        starts = None
        if cfg.start_states == "given":
            count = start_obs.shape[0] if start_count is None else start_count
            idx = jax.random.randint(key_start, (num_tasks, r), 0, jnp.maximum(count, 1))
            starts = start_obs[idx]
        rollouts = imagine_lib.imagine(
            key_roll,
            params_t,
            models,
            task,
            dynamics_fn,
            rollouts_per_task=r,
            horizon=cfg.horizon,
            start_obs=starts,
            obs_clip=cfg.obs_clip,
        )
        adv = returns_lib.compute_advantages(
            rollouts.obs,
            rollouts.rew,
            rollouts.mask,
            cfg.discount,
            cfg.gae_lambda,
            cfg.baseline_reg,
            cfg.normalize_adv,
        )
        batch = PolicyBatch(rollouts.obs, rollouts.act, adv.adv, rollouts.mask, rollouts.logp)
        return sharding_lib.shard_tasks((rollouts, batch), mesh)

    stride = max(1, cfg.horizon // max(cfg.diag_states_per_task, 1))

    def meta_step(state: MetaState, models, start_obs=None, start_count=None):
        if (cfg.start_states == "given") != (start_obs is not None):
            raise ValueError("start_obs must be given iff cfg.start_states == 'given'")
        imagine_lib.task_to_model(num_tasks, imagine_lib.num_models_of(models))
        key, *phase_keys = jax.random.split(state.key, cfg.num_inner_steps + 2)
        theta = state.params

        params_t = sharding_lib.shard_tasks(broadcast_tasks(theta, num_tasks), mesh)
        pre_list: list[PolicyBatch] = []
        for s in range(cfg.num_inner_steps):
            rollouts, batch = sample(phase_keys[s], params_t, models, start_obs, start_count)
            if s == 0:
                pre_rollouts = rollouts
            pre_list.append(batch)
            params_t = jax.vmap(inner_step, in_axes=(0, 0, None))(params_t, batch, cfg.inner_lr)
            params_t = sharding_lib.shard_tasks(params_t, mesh)
        pre_batches = tuple(pre_list)
        post_params = params_t
        post_rollouts, post = sample(phase_keys[-1], post_params, models, start_obs, start_count)

        pre0 = pre_batches[0]
        pre_dist = jax.vmap(pol.apply)(broadcast_tasks(theta, num_tasks), pre0.obs)
        kl_pre_post = task_kl(pre_dist, post_params, pre0)
        model_std, std_kl_corr = std_kl_diagnostic(
            dynamics_fn, models, theta, post_params, pre0, stride
        )

        if cfg.outer == "trpo":
            new_theta, info = trpo_outer_step(theta, pre_batches, post, post_params, cfg)
            opt_state, kl_coeff = state.opt_state, state.kl_coeff
        else:
            new_theta, opt_state, kl_coeff, info = ppo_outer_step(
                theta, state.opt_state, state.kl_coeff, pre_batches, post, post_params, cfg
            )

        diag = MetaDiagnostics(
            pre_return=imagine_lib.undiscounted_return(pre_rollouts),
            post_return=imagine_lib.undiscounted_return(post_rollouts),
            kl_pre_post=kl_pre_post,
            surr_before=info.surr_before,
            surr_after=info.surr_after,
            kl_after=info.kl_after,
            accepted=info.accepted,
            nonfinite=info.nonfinite,
            num_backtracks=info.num_backtracks,
            entropy=jnp.mean(pol.entropy(pre_dist[1][:, 0, 0])),
            alive_frac=jnp.mean(pre_rollouts.mask),
            model_std=model_std,
            std_kl_corr=std_kl_corr,
        )
        new_state = MetaState(
            params=new_theta, opt_state=opt_state, kl_coeff=kl_coeff, key=key, step=state.step + 1
        )
        return new_state, post_params, diag

    return meta_step


def make_meta_train(
    cfg: MetaConfig,
    task: Any,
    dynamics_fn: imagine_lib.DynamicsFn,
    num_steps: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> MetaStepFn:
    """``num_steps`` (default ``cfg.num_meta_steps``) meta steps in one ``lax.scan``.

    ``mesh``: as in ``make_meta_step`` (tasks split over devices).

    Returns:
      ``run(state, models, start_obs=None, start_count=None)
      -> (state, post_params, diagnostics)`` with ``post_params`` ``[T]`` of the *last*
      meta step and every diagnostics leaf stacked ``[num_steps, ...]``. Pure and
      jittable, e.g. ``jax.jit(run, donate_argnums=0)``.
    """
    meta_step = make_meta_step(cfg, task, dynamics_fn, mesh)
    n = cfg.num_meta_steps if num_steps is None else num_steps

    def run(state: MetaState, models, start_obs=None, start_count=None):
        def body(carry, _):
            st, _ = carry
            st, post_params, diag = meta_step(st, models, start_obs, start_count)
            return (st, post_params), diag

        init_post = sharding_lib.shard_tasks(
            broadcast_tasks(state.params, cfg.meta_batch_size), mesh
        )
        (state, post_params), diags = jax.lax.scan(body, (state, init_post), None, length=n)
        return state, post_params, diags

    return run
