"""The paper's diagnostic: where the ensemble disagrees, adaptation does the work.

``std_kl_diagnostic`` relates the ensemble's disagreement at imagined states to
KL(pre || post) there, within one meta step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mbmpo_jax import ensemble as ensemble_lib
from mbmpo_jax import imagine as imagine_lib
from mbmpo_jax import policy as pol
from mbmpo_jax.maml.objective import PolicyBatch

__all__ = ["disagreement", "std_kl_diagnostic", "weighted_pearson"]

Params = Any


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
    return ensemble_lib.disagreement(ensemble_lib.apply_all(dynamics_fn, models, obs, act))


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
