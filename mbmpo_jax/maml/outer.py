"""The outer (meta) steps on ``theta``: TRPO (the paper) and PPO-clip (RLlib's port).

Both take the meta-objective as a closure, ``objective(theta) -> (J, post_params)`` (in
the meta step: ``maml.meta_objective`` with the step's samples bound), optimise exactly
that function, and return their metrics as an ``OuterInfo``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mbmpo_jax import policy as pol
from mbmpo_jax.maml.curvature import meta_kl_hvp
from mbmpo_jax.maml.objective import PolicyBatch, broadcast_tasks, lr_surrogate, pooled_kl, task_kl
from mbmpo_jax.optim import ppo as ppo_lib
from mbmpo_jax.optim import trpo as trpo_lib

if TYPE_CHECKING:
    from mbmpo_jax.maml.meta_step import MetaConfig

__all__ = ["MetaObjective", "OuterInfo", "ppo_outer_step", "trpo_outer_step"]

Params = Any
# theta -> (J, post_params [T]): the meta-objective to maximise with the adapted params.
MetaObjective = Callable[[Params], tuple[jax.Array, Params]]


class OuterInfo(NamedTuple):
    """Scalars describing one outer step.

    surr_before / surr_after: the likelihood-ratio meta-surrogate at the old / returned
      ``theta``; kl_after: KL(old post || new post) at the returned ``theta``;
    accepted: ``theta`` changed; nonfinite: a non-finite value was met and the step
      rejected; num_backtracks: TRPO's line-search backtracks (0 for PPO).
    """

    surr_before: jax.Array
    surr_after: jax.Array
    kl_after: jax.Array
    accepted: jax.Array
    nonfinite: jax.Array
    num_backtracks: jax.Array


def trpo_outer_step(
    objective: MetaObjective,
    theta: Params,
    pre_batches: tuple[PolicyBatch, ...],
    post: PolicyBatch,
    old_post_params: Params,
    cfg: MetaConfig,
) -> tuple[Params, OuterInfo]:
    """The paper's outer step: TRPO on ``objective`` with the post-update KL bound.

    The constraint is ``KL(pi_old post_k || pi_new post_k)`` averaged over all valid post
    samples of all tasks (``pooled_kl``, as the authors' code), where the new post-update
    params are the ``objective``'s aux at the candidate ``theta``. The curvature for the
    conjugate gradient is ``meta_kl_hvp`` on ``pre_batches`` and ``post`` (every
    ``cfg.fvp_subsample``-th rollout).

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """
    old_dist = jax.lax.stop_gradient(jax.vmap(pol.apply)(old_post_params, post.obs))
    # every n-th rollout (axis 1 of [T, R, H, ...]) for the curvature products
    sub = lambda tree: jax.tree.map(lambda x: x[:, :: cfg.fvp_subsample], tree)

    def loss_and_kl(th):
        value, post_params = objective(th)
        return -value, pooled_kl(old_dist, post_params, post)

    new_theta, info = trpo_lib.trpo_update(
        lambda th: loss_and_kl(th)[0],
        lambda th: loss_and_kl(th)[1],
        theta,
        make_kl_hvp=lambda th: meta_kl_hvp(
            th, sub(pre_batches), sub(post), sub(old_dist), cfg.inner_lr, cfg.inner_update
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
    objective: MetaObjective,
    theta: Params,
    opt_state: optax.OptState,
    kl_coeff: jax.Array,
    pre0: PolicyBatch,
    post: PolicyBatch,
    old_post_params: Params,
    cfg: MetaConfig,
) -> tuple[Params, optax.OptState, jax.Array, OuterInfo]:
    """RLlib's outer step: Adam on ``-objective`` plus an adaptive KL penalty.

    ``objective`` is the clipped meta-surrogate (``maml.meta_objective`` with
    ``optim.ppo.clipped_objective``); the penalty is ``kl_coeff`` times
    ``mean_k KL(pi_theta_old || pi_theta)`` on the first pre-update batch ``pre0``, a trust
    region on ``theta`` itself whose coefficient adapts towards ``cfg.ppo_kl_target``.
    Non-finite results are rejected (old params and optimiser state kept).

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """
    num_tasks = pre0.obs.shape[0]
    old_pre_dist = jax.lax.stop_gradient(
        jax.vmap(pol.apply)(broadcast_tasks(theta, num_tasks), pre0.obs)
    )
    old_post_dist = jax.lax.stop_gradient(jax.vmap(pol.apply)(old_post_params, post.obs))
    optimizer = optax.adam(cfg.ppo_lr)

    def pre_kl(th):
        return jnp.mean(task_kl(old_pre_dist, broadcast_tasks(th, num_tasks), pre0))

    def loss_fn(th):
        return -objective(th)[0] + kl_coeff * pre_kl(th)

    surr_before = lr_surrogate(old_post_params, post)
    new_theta, new_opt_state, losses = ppo_lib.adam_steps(
        loss_fn, theta, opt_state, optimizer, cfg.ppo_epochs
    )
    new_post_params = objective(new_theta)[1]
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
