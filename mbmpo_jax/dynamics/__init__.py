"""Ensemble of K MLP dynamics models, fitted and applied with vmap.

Modules: ``network`` (the MLP and its bfloat16 layers), ``model`` (config, state,
normaliser, prediction), ``fitting`` (the fit with per-model early stopping); every
public name is importable from ``mbmpo_jax.dynamics``.

Each model predicts the z-normalised state change ``(s' - s - mu_d) / (sd_d + 1e-10)``
from z-normalised ``(s, a)``; the loss is the MSE on that normalised delta. Parameters
(and Adam moments) carry a leading ``[K]`` axis, so one XLA computation trains or
evaluates all K models; there is no Python loop over models.

Fitting follows the authors' code (Clavera et al. 2018): at every fit the normaliser is
recomputed from the buffer's valid data, each model draws its own 80/20 train/valid
split and reshuffles its training rows every epoch, Adam(1e-3) runs on minibatches of
500 for at most 500 epochs, and each model stops on its own when a moving average of
its validation loss (persistency 0.99, started at 1.5x the first validation loss) rises.
Parameters are warm-started from the previous fit, as in the original.

The whole fit is one jit: ``lax.while_loop`` over epochs (ends when every model has
stopped or at ``max_epochs``), a ``fori_loop`` over minibatches whose trip count is
traced, so a growing buffer (``count``) never changes a shape nor recompiles.

Public API::

    cfg = EnsembleConfig()
    state = init(key, obs_dim, act_dim, cfg)
    state, info = fit(state, buf, key, cfg)       # info.epochs / train_loss / valid_loss [K]
    models = model_params(state)                  # every leaf [K, ...]
    next_obs = model_step(tree.map(lambda x: x[k], models), obs, act)   # [B, O]
    predict(state, obs, act)                      # [K, B, O]

Dtypes: ``init`` makes float32 params, Adam moments and normaliser unless given another
``dtype`` (float64 needs ``jax_enable_x64``); everything else computes in the dtype of
the params and data passed in (the fit's losses in the wider of the two). Counters and
indices are int32; the random keys that split and shuffle the rows are float32 in every
mode, so a fit sees the same rows whatever the precision.
"""

from mbmpo_jax.dynamics.fitting import FitInfo, fit, fit_unchecked
from mbmpo_jax.dynamics.model import (
    EPS,
    EnsembleConfig,
    EnsembleState,
    Model,
    Normaliser,
    compute_normaliser,
    ensemble_mean,
    ensemble_std,
    init,
    model_params,
    model_step,
    predict,
)
from mbmpo_jax.dynamics.network import (
    ACTIVATIONS,
    COMPUTE_DTYPES,
    dense,
    effective_weight,
    mlp_apply,
    mlp_init,
)

__all__ = [
    "ACTIVATIONS",
    "COMPUTE_DTYPES",
    "EPS",
    "EnsembleConfig",
    "EnsembleState",
    "FitInfo",
    "Model",
    "Normaliser",
    "compute_normaliser",
    "dense",
    "effective_weight",
    "ensemble_mean",
    "ensemble_std",
    "fit",
    "fit_unchecked",
    "init",
    "mlp_apply",
    "mlp_init",
    "model_params",
    "model_step",
    "predict",
]
