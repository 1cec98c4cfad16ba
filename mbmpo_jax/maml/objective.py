"""The inner step and the one meta-objective of MB-MPO, with the KLs its outer steps bound.

A single task's batch has ``[R, H, ...]`` arrays, a batch of all tasks ``[T, R, H, ...]``.
Rollouts that hit ``done`` are masked: every mean over samples is a masked mean over
``[R, H]`` per task, then a plain mean over tasks (each task has the same number of
rollouts), except ``pooled_kl`` (one mean over the valid samples of all tasks).

``meta_objective`` is the function both outer steps optimise (they receive it as a
closure), so its finite-difference test covers what is optimised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mbmpo_jax import policy as pol

__all__ = [
    "INNER_UPDATES",
    "PolicyBatch",
    "SampleObjective",
    "adapt",
    "broadcast_tasks",
    "inner_grad",
    "inner_step",
    "likelihood_ratio",
    "lr_surrogate",
    "masked_mean",
    "meta_objective",
    "pg_surrogate",
    "pooled_kl",
    "task_kl",
]

Params = Any
# (logp under the new policy, logp under the sampling policy, advantages) -> per-sample
# objective, all of one shape; e.g. `likelihood_ratio`, or PPO's `optim.ppo.clipped_objective`.
SampleObjective = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


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


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over the last two axes ``[..., R, H] -> [...]`` counting masked entries only.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return jnp.sum(x * mask, axis=(-2, -1)) / jnp.maximum(jnp.sum(mask, axis=(-2, -1)), 1.0)


def broadcast_tasks(params: Params, num_tasks: int) -> Params:
    """``theta`` copied onto a leading ``[T]`` axis (its gradient sums over tasks).

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_tasks, *x.shape)), params)


def pg_surrogate(params: Params, batch: PolicyBatch) -> jax.Array:
    """Vanilla PG surrogate of one task, ``mean(log pi(a|s) * A)``; its gradient is the PG.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    mean, log_std = pol.apply(params, batch.obs)
    return masked_mean(pol.log_prob(mean, log_std, batch.act) * batch.adv, batch.mask)


INNER_UPDATES = ("pg", "std_invariant")


def _mean_regression(params: Params, batch: PolicyBatch) -> jax.Array:
    """``mean(-|a - mu(s)|^2 / 2 * A)``: its gradient in the mean's network is the PG's
    with ``(a - mu) / std^2`` replaced by ``(a - mu)`` (the mean's Fisher, ``1/std^2``,
    divided out). Independent of the log-std params.
    """
    mean, _ = pol.apply(params, batch.obs)
    sq = jnp.sum(jnp.square(batch.act - mean), axis=-1)
    return masked_mean(-0.5 * sq * batch.adv, batch.mask)


def inner_grad(params: Params, batch: PolicyBatch, inner_update: str = "pg") -> Params:
    """The ascent direction of one task's inner step (differentiable in ``params``).

    ``"pg"`` (the paper): the vanilla policy gradient, ``grad mean(log pi(a|s) * A)``.
    ``"std_invariant"``: the mean network's part preconditioned by ``diag(std^2)`` in
    action space (``_mean_regression``'s gradient), the log-std's part the PG's (already
    free of the std's scale). Equal to ``"pg"`` where ``std = 1``; with ``"pg"`` the mean's
    step grows as ``1/std`` and the step's KL as ``1/std^4`` when the policy narrows, with
    ``"std_invariant"`` the step's KL does not grow with a narrowing std. Every part is a
    plain gradient of a smooth function, so the meta-gradient differentiates through it
    exactly.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    if inner_update == "pg":
        return jax.grad(pg_surrogate)(params, batch)
    if inner_update != "std_invariant":
        raise ValueError(f"inner_update must be one of {INNER_UPDATES}, got {inner_update!r}")
    grads = jax.grad(_mean_regression)(params, batch)  # log_std part: zeros
    grads["log_std"] = jax.grad(
        lambda log_std: pg_surrogate({**params, "log_std": log_std}, batch)
    )(params["log_std"])
    return grads


def inner_step(
    params: Params, batch: PolicyBatch, inner_lr: float, inner_update: str = "pg"
) -> Params:
    """One task's adaptation ``theta + alpha d(theta)`` (differentiable in theta), with
    ``d`` the ``inner_grad`` of ``inner_update`` (``"pg"``: the paper's PG step).

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    grads = inner_grad(params, batch, inner_update)
    return jax.tree.map(lambda p, g: p + inner_lr * g, params, grads)


def adapt(
    theta: Params,
    pre_batches: tuple[PolicyBatch, ...],
    inner_lr: float,
    inner_update: str = "pg",
) -> Params:
    """Post-update params ``[T]`` from ``theta`` through all inner steps.

    Args:
      theta: pre-update params (no leading axis).
      pre_batches: one ``[T, R, H, ...]`` batch per inner step, sampled by the params
        before that step.
      inner_lr: alpha.
      inner_update: ``"pg"`` (the paper) or ``"std_invariant"`` (``inner_grad``).

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    num_tasks = pre_batches[0].obs.shape[0]
    params = broadcast_tasks(theta, num_tasks)
    for batch in pre_batches:
        params = jax.vmap(inner_step, in_axes=(0, 0, None, None))(
            params, batch, inner_lr, inner_update
        )
    return params


def likelihood_ratio(logp_new: jax.Array, logp_old: jax.Array, adv: jax.Array) -> jax.Array:
    """Elementwise ``pi_new / pi_old * A``: TRPO's (and the paper's) per-sample surrogate.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return jnp.exp(logp_new - logp_old) * adv


def lr_surrogate(
    post_params: Params, post: PolicyBatch, sample_objective: SampleObjective = likelihood_ratio
) -> jax.Array:
    """``mean_k mean(sample_objective(log pi_k, logp_old, A))`` on the post-update samples.

    With the default, ``mean_k mean(pi_k / pi_old * A)`` (scalar).

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    mean, log_std = jax.vmap(pol.apply)(post_params, post.obs)
    logp = pol.log_prob(mean, log_std, post.act)
    return jnp.mean(masked_mean(sample_objective(logp, post.logp, post.adv), post.mask))


def meta_objective(
    theta: Params,
    pre_batches: tuple[PolicyBatch, ...],
    post: PolicyBatch,
    inner_lr: float,
    sample_objective: SampleObjective = likelihood_ratio,
    inner_update: str = "pg",
    entropy_coeff: float = 0.0,
) -> tuple[jax.Array, Params]:
    """The MB-MPO meta-objective ``mean_k J_k(theta'_k(theta))`` (to maximise).

    Its gradient contains the second-order term: ``adapt`` differentiates the inner
    surrogate, and ``jax.grad`` of this function differentiates through that gradient.

    Args:
      theta: pre-update params.
      pre_batches: one ``[T, R, H, ...]`` batch per inner step (constants).
      post: the post-update samples ``[T, R, H, ...]`` (constants).
      inner_lr: alpha (0: no adaptation, the ME-TRPO ablation).
      sample_objective: the per-sample surrogate (``likelihood_ratio``: TRPO, the paper;
        ``optim.ppo.clipped_objective``: RLlib's PPO outer step).
      inner_update: the inner step's direction (``inner_grad``; ``"pg"``: the paper's).
      entropy_coeff: beta >= 0 (a Python float); adds ``beta * mean_k mean H(pi_k)``, the
        adapted policies' entropy on the post-update samples (0: the paper's objective).
        With normalised advantages it is in the surrogate's units, as PPO's entropy cost.

    Returns:
      ``(J, post_params)``: the scalar objective and the adapted params ``[T]`` as aux
      (``jax.grad(meta_objective, has_aux=True)``), which the outer steps' KL reuses.

    Transforms: pure JAX; safe under jit, vmap and grad (with ``has_aux=True``).
    """
    post_params = adapt(theta, pre_batches, inner_lr, inner_update)
    objective = lr_surrogate(post_params, post, sample_objective)
    if entropy_coeff:
        _, log_std = jax.vmap(pol.apply)(post_params, post.obs)
        objective = objective + entropy_coeff * jnp.mean(
            masked_mean(pol.entropy(log_std), post.mask)
        )
    return objective, post_params


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
