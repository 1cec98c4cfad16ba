"""A generic ensemble: K members of one function, their params stacked on a leading [K] axis.

Nothing here knows what a member is (an MLP dynamics model, the exact simulator in the
tests, a biased model): a member is ``apply_fn(member_params, *inputs)`` and the ensemble
is a pytree whose every leaf has a leading ``[K]`` axis. MB-MPO uses four operations:

  init            K members from K keys (``vmap`` of the member's initialiser)
  apply_all       every member on the same inputs: ``[B, ...] -> [K, B, ...]`` (the
                  disagreement diagnostics)
  apply_per_task  task ``t`` of ``T`` uses member ``t // (T // K)`` (contiguous blocks):
                  ``[T, B, ...] -> [T, B, ...]`` (imagination: each model is a task)
  disagreement    std over members, averaged over the last axis: ``[K, ..., D] -> [...]``

Every function is pure JAX and safe under jit, vmap and grad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "apply_all",
    "apply_per_task",
    "disagreement",
    "init",
    "num_members",
    "task_to_member",
]

Params = Any


def init(init_fn: Callable[[jax.Array], Params], key: jax.Array, num_members: int) -> Params:
    """``num_members`` independent members: ``init_fn(key_k)`` for ``K`` split keys.

    Transforms: pure JAX; safe under jit and vmap (random outputs, nothing to differentiate).
    """
    return jax.vmap(init_fn)(jax.random.split(key, num_members))


def num_members(members: Params) -> int:
    """``K``: the leading axis shared by every leaf of ``members`` (ValueError if they differ).

    Transforms: host-side Python on static shapes; safe to call inside jit.
    """
    sizes = {x.shape[0] for x in jax.tree.leaves(members)}
    if len(sizes) != 1:
        raise ValueError(f"ensemble leaves disagree on the leading [K] axis: {sorted(sizes)}")
    return sizes.pop()


def task_to_member(num_tasks: int, members: int) -> np.ndarray:
    """Member index of each task, ``[T]`` int: contiguous blocks of ``T // K`` tasks.

    Raises ValueError unless ``T`` is a positive multiple of ``K`` (every member gets the
    same number of tasks).

    Transforms: host-side Python (static sizes); safe to call inside jit.
    """
    if members <= 0 or num_tasks % members != 0:
        raise ValueError(
            f"meta_batch_size {num_tasks} must be a positive multiple of the number of "
            f"models {members} (each model gets the same number of tasks)"
        )
    return np.arange(num_tasks) // (num_tasks // members)


def apply_all(apply_fn: Callable[..., jax.Array], members: Params, *inputs: Any) -> jax.Array:
    """Every member on the same inputs: ``apply_fn(member_k, *inputs)`` stacked ``[K, ...]``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    in_axes = (0, *([None] * len(inputs)))
    return jax.vmap(apply_fn, in_axes=in_axes)(members, *inputs)


def apply_per_task(apply_fn: Callable[..., jax.Array], members: Params, *inputs: Any) -> Any:
    """Task ``t``'s inputs through member ``t // (T // K)``: ``[T, B, ...] -> [T, B, ...]``.

    ``apply_fn(member, *x)`` takes one member and a batch ``[N, ...]`` of inputs. The
    contiguous task blocks make each member's batch a free reshape
    (``[T, B, ...] -> [K, T // K * B, ...]``), so every member runs once on all its tasks'
    inputs, not once per task.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    k = num_members(members)
    num_tasks, batch = inputs[0].shape[:2]
    task_to_member(num_tasks, k)  # validates T % K == 0
    blocks = [x.reshape(k, num_tasks // k * batch, *x.shape[2:]) for x in inputs]
    out = jax.vmap(apply_fn)(members, *blocks)
    return jax.tree.map(lambda y: y.reshape(num_tasks, batch, *y.shape[2:]), out)


def disagreement(predictions: jax.Array) -> jax.Array:
    """The members' disagreement: ``mean_d std_k predictions[k, ..., d]`` (std with ddof 0).

    ``[K, ..., D] -> [...]``, in the units of the predictions.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return jnp.mean(jnp.std(predictions, axis=0), axis=-1)
