"""TRPO update on an arbitrary differentiable loss with a KL trust region.

rllab's ``ConjugateGradientOptimizer`` as the paper used it: the search direction solves
``(H + damping I) s = g`` by conjugate gradient, where ``H`` is the Hessian of the KL
constraint at the current params (Hessian-vector products by forward-over-reverse
autodiff) and ``g`` the loss gradient; the step is scaled so that the quadratic model of
the KL equals ``max_kl`` and then backtracked by ``ratio^j``, ``j < max_backtracks``,
until the loss improves and the KL is within the bound. A step that never satisfies
both, or is non-finite, is rejected: the params stay as they were.

Everything works on a flattened copy of the params (``ravel_pytree``) and is jittable.
Dtypes follow the inputs: the params' flat vector keeps their dtype (float32 by default,
float64 under ``jax_enable_x64`` with float64 params) and the losses keep theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = [
    "TRPOInfo",
    "backtracking_line_search",
    "conjugate_gradient",
    "trpo_update",
]


class TRPOInfo(NamedTuple):
    """Scalars describing one TRPO update.

    loss_before / loss_after: loss at the old params / at the returned params.
    kl_after: constraint value at the returned params (0 when rejected).
    accepted: the line search found a step (False: params unchanged).
    nonfinite: a non-finite loss, gradient or search direction was met and the step
      was rejected because of it.
    num_backtracks: candidates evaluated minus one (``max_backtracks`` when rejected).
    """

    loss_before: jax.Array
    loss_after: jax.Array
    kl_after: jax.Array
    accepted: jax.Array
    nonfinite: jax.Array
    num_backtracks: jax.Array


def conjugate_gradient(
    matvec: Callable[[jax.Array], jax.Array],
    b: jax.Array,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> jax.Array:
    """Approximately solves ``A x = b`` for SPD ``A`` given by ``matvec``; ``[P] -> [P]``.

    rllab's ``krylov.cg``: ``iters`` iterations from ``x = 0``, stopping early once the
    squared residual is below ``residual_tol`` (here: later iterations leave ``x``
    unchanged, so the loop has a fixed length).

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """

    def body(_, carry):
        x, r, p, rdotr = carry
        active = rdotr >= residual_tol
        z = matvec(p)
        pz = p @ z
        v = jnp.where(active & (pz != 0), rdotr / jnp.where(pz != 0, pz, 1.0), 0.0)
        x = x + v * p
        r = r - v * z
        new_rdotr = r @ r
        mu = jnp.where(active, new_rdotr / jnp.where(rdotr > 0, rdotr, 1.0), 0.0)
        p = jnp.where(active, r + mu * p, p)
        rdotr = jnp.where(active, new_rdotr, rdotr)
        return x, r, p, rdotr

    init = (jnp.zeros_like(b), b, b, b @ b)
    x, *_ = jax.lax.fori_loop(0, iters, body, init)
    return x


def backtracking_line_search(
    loss_and_kl: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    x0: jax.Array,
    full_step: jax.Array,
    loss_before: jax.Array,
    max_kl: float,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Tries ``x0 - ratio^j full_step`` for ``j = 0, 1, ...`` until one is acceptable.

    Acceptable: finite, ``loss < loss_before`` and ``kl <= max_kl``. Candidates are
    evaluated one at a time (``while_loop``): the first is accepted in most steps, so
    this is cheaper than evaluating all of them at once.

    Candidates are in ``x0``'s dtype; ``loss`` and ``kl`` in the wider of ``x0``'s and
    ``loss_before``'s dtypes (the loop carry has one fixed dtype per entry, which a
    float32 ``x0`` with a float64 loss under x64 would otherwise break).

    Returns:
      ``(x, loss, kl, accepted, num_backtracks, saw_nonfinite)``; ``x = x0``,
      ``loss = loss_before`` and ``kl = 0`` when no candidate was accepted;
      ``num_backtracks`` is int32.

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """

    def cond(carry):
        j, accepted = carry[0], carry[1]
        return (~accepted) & (j < max_backtracks)

    loss_dtype = jnp.result_type(x0, loss_before)
    ratio = np.asarray(backtrack_ratio, x0.dtype)

    def body(carry):
        j, _, _, _, _, saw_nonfinite = carry
        x = (x0 - ratio**j * full_step).astype(x0.dtype)
        loss, kl = (jnp.asarray(v, loss_dtype) for v in loss_and_kl(x))
        finite = jnp.isfinite(loss) & jnp.isfinite(kl) & jnp.all(jnp.isfinite(x))
        ok = finite & (loss < loss_before) & (kl <= max_kl)
        return j + 1, ok, x, loss, kl, saw_nonfinite | ~finite

    zero = jnp.zeros((), loss_dtype)
    init = (jnp.zeros((), jnp.int32), jnp.zeros((), bool), x0, zero, zero, jnp.zeros((), bool))
    j, accepted, x, loss, kl, saw_nonfinite = jax.lax.while_loop(cond, body, init)
    x = jnp.where(accepted, x, x0)
    loss = jnp.where(accepted, loss, loss_before)
    kl = jnp.where(accepted, kl, zero)
    return x, loss, kl, accepted, j - 1, saw_nonfinite


def trpo_update(
    loss_fn: Callable[[Any], jax.Array],
    kl_fn: Callable[[Any], jax.Array],
    params: Any,
    *,
    max_kl: float = 0.01,
    cg_iters: int = 10,
    cg_damping: float = 1e-5,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
    loss_and_kl_fn: Callable[[Any], tuple[jax.Array, jax.Array]] | None = None,
    make_kl_hvp: Callable[[Any], Callable[[Any], Any]] | None = None,
) -> tuple[Any, TRPOInfo]:
    """One TRPO step minimising ``loss_fn`` subject to ``kl_fn <= max_kl``.

    Args:
      loss_fn: ``params -> scalar`` to minimise.
      kl_fn: ``params -> scalar`` divergence from the old policy; it must be minimal
        (zero gradient) at ``params``, whose Hessian is the Fisher matrix there.
      params: current params pytree.
      loss_and_kl_fn: optional ``params -> (loss, kl)`` sharing work between the two
        (the line search evaluates both at every candidate).
      make_kl_hvp: optional ``params -> (v -> H v)`` (pytrees) giving the KL Hessian at
        ``params`` more cheaply than the default forward-over-reverse autodiff of
        ``kl_fn``.

    Returns:
      ``(new_params, TRPOInfo)``.
    """
    x0, unravel = ravel_pytree(params)
    f_loss = lambda x: loss_fn(unravel(x))
    f_kl = lambda x: kl_fn(unravel(x))
    if loss_and_kl_fn is None:
        f_loss_kl = lambda x: (f_loss(x), f_kl(x))
    else:
        f_loss_kl = lambda x: loss_and_kl_fn(unravel(x))

    loss_before, grad = jax.value_and_grad(f_loss)(x0)
    # Linearising the KL gradient once stores its residuals, so each of the CG
    # iterations below costs one linear (tangent) pass instead of a full re-trace.
    if make_kl_hvp is None:
        _, hvp = jax.linearize(jax.grad(f_kl), x0)
    else:
        hvp_tree = make_kl_hvp(params)
        hvp = lambda v: ravel_pytree(hvp_tree(unravel(v)))[0]
    fisher_vp = lambda v: hvp(v) + cg_damping * v
    direction = conjugate_gradient(fisher_vp, grad, cg_iters)
    shs = direction @ fisher_vp(direction)
    step_size = jnp.sqrt(2.0 * max_kl / (shs + 1e-8))
    # rllab's fallback when the curvature is degenerate.
    step_size = jnp.where(jnp.isfinite(step_size), step_size, 1.0)
    full_step = step_size * direction
    bad_inputs = ~(
        jnp.isfinite(loss_before) & jnp.all(jnp.isfinite(grad)) & jnp.all(jnp.isfinite(full_step))
    )
    x, loss_after, kl_after, accepted, num_backtracks, saw_nonfinite = backtracking_line_search(
        f_loss_kl, x0, full_step, loss_before, max_kl, backtrack_ratio, max_backtracks
    )
    accepted = accepted & ~bad_inputs
    x = jnp.where(accepted, x, x0)
    info = TRPOInfo(
        loss_before=loss_before,
        loss_after=jnp.where(accepted, loss_after, loss_before),
        kl_after=jnp.where(accepted, kl_after, 0.0),
        accepted=accepted,
        nonfinite=bad_inputs | (saw_nonfinite & ~accepted),
        num_backtracks=num_backtracks,
    )
    return unravel(x), info
