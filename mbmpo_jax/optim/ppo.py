"""PPO-clip pieces for the outer (meta) step, the alternative RLlib's port used.

RLlib's MB-MPO replaced TRPO by a few full-batch Adam steps on the PPO clipped
surrogate of the post-update samples, plus an adaptive penalty on the KL between the
sampling and current pre-update policies. This module holds PPO's parts: the clipped
per-sample objective (the meta step passes it to ``maml.meta_objective``, so the PPO
outer step optimises the same tested meta-objective as TRPO, with this surrogate), the
Adam loop, and the adaptive coefficient; ``maml.ppo_outer_step`` puts them together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "adam_steps",
    "adapt_kl_coeff",
    "clipped_objective",
]


def clipped_objective(
    logp_new: jax.Array, logp_old: jax.Array, adv: jax.Array, clip: float
) -> jax.Array:
    """Elementwise ``min(r A, clip(r, 1 - clip, 1 + clip) A)``, ``r = pi_new / pi_old``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    ratio = jnp.exp(logp_new - logp_old)
    return jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * adv)


def adam_steps(
    loss_fn: Callable[[Any], jax.Array],
    params: Any,
    opt_state: optax.OptState,
    optimizer: optax.GradientTransformation,
    num_steps: int,
) -> tuple[Any, optax.OptState, jax.Array]:
    """``num_steps`` full-batch optimiser steps on ``loss_fn`` (one ``lax.scan``).

    Returns:
      ``(params, opt_state, losses [num_steps])``, losses before each step.

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """

    def body(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = optimizer.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), None, length=num_steps)
    return params, opt_state, losses


def adapt_kl_coeff(coeff: jax.Array, kl: jax.Array, target: float) -> jax.Array:
    """RLlib's rule: halve below ``target / 1.5``, double above ``1.5 target``.

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """
    coeff = jnp.where(kl < target / 1.5, coeff * 0.5, coeff)
    return jnp.where(kl > 1.5 * target, coeff * 2.0, coeff)
