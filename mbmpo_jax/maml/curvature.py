"""Curvature of the outer TRPO step's KL constraint through the inner step.

``meta_kl_hvp`` gives Hessian-vector products of the pooled post-update KL in ``theta``
(Gauss-Newton form, exact at the old params) for TRPO's conjugate gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mbmpo_jax import policy as pol
from mbmpo_jax.maml.objective import PolicyBatch, broadcast_tasks, inner_step

__all__ = ["meta_kl_hvp"]

Params = Any


def meta_kl_hvp(
    theta: Params,
    pre_batches: tuple[PolicyBatch, ...],
    post: PolicyBatch,
    old_dist: tuple[jax.Array, jax.Array],
    inner_lr: float,
    inner_update: str = "pg",
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
      products in reverse order (no transposition of second-order code); the
      ``"std_invariant"`` step's direction is not one function's gradient (its Jacobian
      is not symmetric), so there ``J^T`` is the transposed linearisation;
    - ``F`` of a diagonal Gaussian is ``J_f^T diag(1/std^2 | 2) J_f`` in the outputs
      ``f = (mean, log_std)`` (each sample's weight is that of the masked mean).

    The linearisations are built once, so each CG iteration costs linear passes only.

    Transforms: pure JAX; safe under jit and vmap (the returned function is linear).
    """
    num_tasks = post.obs.shape[0]
    params = broadcast_tasks(theta, num_tasks)
    step_jvps, step_vjps = [], []
    for batch in pre_batches:
        step_fn = lambda p, batch=batch: jax.vmap(inner_step, in_axes=(0, 0, None, None))(
            p, batch, inner_lr, inner_update
        )
        params_in = params
        params, step_jvp = jax.linearize(step_fn, params_in)
        step_jvps.append(step_jvp)
        if inner_update == "pg":
            step_vjps.append(step_jvp)  # symmetric Jacobian
        else:
            transpose = jax.linear_transpose(step_jvp, params_in)
            step_vjps.append(lambda w, transpose=transpose: transpose(w)[0])
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
        for step_vjp in reversed(step_vjps):
            w = step_vjp(w)
        return jax.tree.map(lambda x: jnp.sum(x, axis=0), w)

    return hvp
