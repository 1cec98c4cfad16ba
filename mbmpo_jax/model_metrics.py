"""The learned models judged on fresh real data: disagreement, one-step and open-loop error.

``Trainer`` logs these every iteration (``Model/*`` columns) on the transitions it has
just collected, which the models have not been fitted on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import dynamics
from mbmpo_jax import ensemble as ensemble_lib
from mbmpo_jax.envs import native

__all__ = ["ensemble_diagnostics", "open_loop_metrics"]


@jax.jit
def ensemble_diagnostics(ens: dynamics.EnsembleState, obs, act, next_obs, mask):
    """Disagreement and one-step error of the ensemble mean on real transitions ``[M, ...]``.

    ``mask [M]`` weighs the transitions; returns ``(disagreement, mse, all_finite)``
    scalars (``Model/EnsembleStd``, ``Model/OneStepMSE``, ``Model/Diverged``).

    Transforms: pure JAX, jitted; safe under vmap (not meant to be differentiated).
    """
    pred = dynamics.predict(ens, obs, act)  # [K, M, O]
    w = mask / jnp.maximum(mask.sum(), 1.0)
    std = jnp.sum(ensemble_lib.disagreement(pred) * w)
    err = jnp.sum(jnp.mean(jnp.square(pred.mean(0) - next_obs), axis=-1) * w)
    finite = jnp.all(jnp.isfinite(pred))
    return std, err, finite


# Open-loop horizons at which the models' multi-step error on fresh real data is logged.
_OPEN_LOOP_STEPS = (1, 10, 50, 100)


@jax.jit
def _open_loop_error(ens: dynamics.EnsembleState, obs, act, first, inv_var):
    """Each model's open-loop prediction error along the real episodes of a collection.

    Every episode is replayed in each model from its real first observation with the
    real actions; `err [S, K, N]` is the squared error of the k-step prediction of
    `obs[:, t]` (k = `age [S, N]`, steps since the episode began), averaged over
    observation dims each scaled by `inv_var` (1 / the real observations' variance: 1.0
    is as bad as predicting the batch mean).
    """
    models = dynamics.model_params(ens)
    k = jax.tree.leaves(models)[0].shape[0]
    n = obs.shape[0]
    step_all = jax.vmap(dynamics.model_step)  # [K] models on [K, N, O]

    def body(carry, xs):
        pred, age = carry
        o, a, f = xs
        pred = jnp.where(f[None, :, None], o[None], pred)
        age = jnp.where(f, 0, age)
        err = jnp.mean(jnp.square(pred - o[None]) * inv_var, axis=-1)  # [K, N]
        return (step_all(models, pred, jnp.broadcast_to(a, (k, *a.shape))), age + 1), (err, age)

    init = (jnp.zeros((k, *obs[:, 0].shape), obs.dtype), jnp.zeros((n,), jnp.int32))
    xs = (jnp.swapaxes(obs, 0, 1), jnp.swapaxes(act, 0, 1), jnp.swapaxes(first, 0, 1))
    _, (err, age) = jax.lax.scan(body, init, xs)
    return err, age


def open_loop_metrics(
    ens: dynamics.EnsembleState, collected: native.Collection, action: str = "clipped"
) -> dict:
    """`Model/OpenLoopErr{k}`: mean normalised k-step open-loop error (see `_open_loop_error`)
    over models and the collection's episodes that lasted k steps (nan if none did). The
    models are given `action` (`RealBatch.actions`: the one they were fitted on).

    Transforms: host-side (reads a `native.Collection`); not for jit/vmap/grad.
    """
    b = collected.batch
    valid = b.obs[b.mask]
    inv_var = 1.0 / (valid.var(axis=0) + 1e-6)
    err, age = jax.device_get(
        _open_loop_error(ens, b.obs, b.actions(action), collected.first, inv_var.astype(np.float32))
    )
    mask = b.mask.T  # [S, N]
    out = {}
    for k in _OPEN_LOOP_STEPS:
        sel = (age == k) & mask
        out[f"Model/OpenLoopErr{k}"] = (
            float(np.mean(err[np.broadcast_to(sel[:, None], err.shape)]))
            if sel.any()
            else float("nan")
        )
    return out
