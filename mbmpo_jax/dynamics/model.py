"""The ensemble of K dynamics models: configuration, state, normaliser and prediction.

Each model predicts the z-normalised state change ``(s' - s - mu_d) / (sd_d + 1e-10)``
from z-normalised ``(s, a)``. Parameters (and Adam moments) carry a leading ``[K]`` axis,
so one XLA computation evaluates all K models; there is no Python loop over models.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mbmpo_jax import buffer as buffer_lib
from mbmpo_jax import ensemble as ensemble_lib
from mbmpo_jax.dynamics.network import (
    ACTIVATIONS,
    COMPUTE_DTYPES,
    Layers,
    effective_weight,
    mlp_apply,
    mlp_init,
)

__all__ = [
    "EPS",
    "EnsembleConfig",
    "EnsembleState",
    "Model",
    "Normaliser",
    "compute_normaliser",
    "ensemble_mean",
    "ensemble_std",
    "init",
    "model_params",
    "model_step",
    "predict",
]

EPS = 1e-10  # added to every std, as in the original code


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """Ensemble architecture and fitting hyperparameters (defaults: the paper's).

    Hashable, so it is passed to jitted functions as a static argument.
    """

    num_models: int = 5
    hidden: tuple[int, ...] = (512, 512)
    activation: str = "relu"
    weight_norm: bool = True  # the paper's (the authors' code normalises every layer)
    learning_rate: float = 1e-3
    batch_size: int = 500
    max_epochs: int = 500
    valid_split: float = 0.2
    persistency: float = 0.99
    # Patience (not the paper's rule; 0 turns it off): a model also stops once its
    # validation loss has gone `patience` epochs without beating its best of this fit by
    # more than the fraction `min_improvement` (the rule of MBPO, Janner et al. 2019, per
    # model). With warm-started models on a large buffer the paper's rule rarely fires
    # before the epoch cap; this one ends a fit once the models stop improving.
    patience: int = 0
    min_improvement: float = 0.01
    obs_clip: float = 1000.0
    # Recency weight (not the paper's, which samples its FIFO uniformly; 1.0 or
    # `recent_rows` = 0 turns it off): the buffer's `recent_rows` newest transitions weigh
    # `recent_weight` in the fit's normaliser and its training and validation losses,
    # every older one 1. The whole buffer is still fitted; the newest rows (the current
    # policy's states) count as if they were held `recent_weight` times (without copies'
    # leak of training rows into the validation split).
    recent_rows: int = 0
    recent_weight: float = 1.0
    # "bfloat16": the hidden-to-hidden matmuls (forward and both backward products) take
    # bfloat16 operands and accumulate in full precision; parameters, Adam, the
    # normaliser, the thin first and last layers, the loss and early stopping stay in
    # full precision (the params' and data's dtype, float32 by default; `dense`).
    compute_dtype: str = "float32"

    def __post_init__(self):
        # A list here would make the config unhashable and break jit's static args.
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.num_models < 1:
            raise ValueError(f"num_models must be >= 1, got {self.num_models}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} not in {sorted(ACTIVATIONS)}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype {self.compute_dtype!r} not in {COMPUTE_DTYPES}")
        if not 0.0 < self.valid_split < 1.0:
            raise ValueError(f"valid_split must be in (0, 1), got {self.valid_split}")
        if self.batch_size < 1 or self.max_epochs < 0:
            raise ValueError("batch_size must be >= 1 and max_epochs >= 0")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0 (0: off), got {self.patience}")
        if not 0.0 <= self.min_improvement < 1.0:
            raise ValueError(f"min_improvement must be in [0, 1), got {self.min_improvement}")
        if self.recent_rows < 0:
            raise ValueError(f"recent_rows must be >= 0 (0: off), got {self.recent_rows}")
        if not self.recent_weight > 0.0:
            raise ValueError(f"recent_weight must be > 0 (1: off), got {self.recent_weight}")


@struct.dataclass
class Normaliser:
    """Per-dimension mean and std (std without the 1e-10). Leaves ``[D]`` (or ``[K, D]``)."""

    obs_mean: jax.Array
    obs_std: jax.Array
    act_mean: jax.Array
    act_std: jax.Array
    delta_mean: jax.Array
    delta_std: jax.Array


@struct.dataclass
class EnsembleState:
    """Trainable state of the ensemble.

    Attributes:
      params: tuple of layer dicts, every leaf ``[K, ...]`` (``w [K, I, O]``, ``b [K, O]``;
        with weight norm ``v [K, I, O]``, ``g [K, O]``, ``b [K, O]``).
      opt_state: Adam state, every leaf ``[K, ...]`` (persists across fits).
      norm: ``Normaliser`` shared by all models, leaves ``[O]`` / ``[A]``.
      cfg: the ``EnsembleConfig`` (static: architecture is needed by ``model_params``).
    """

    params: Layers
    opt_state: Any
    norm: Normaliser
    cfg: EnsembleConfig = struct.field(pytree_node=False)


@struct.dataclass
class Model:
    """One model's (or, with a leading axis, K models') frozen predictor for imagination.

    Leaves: ``layers`` (``w [.., I, O]``, ``b [.., O]``, weight norm already folded in) and
    ``norm``. ``activation``, ``obs_clip`` and ``compute_dtype`` are static, so
    ``tree.map(lambda x: x[i], m)`` keeps them.
    """

    layers: Layers
    norm: Normaliser
    activation: str = struct.field(pytree_node=False, default="relu")
    obs_clip: float = struct.field(pytree_node=False, default=1000.0)
    compute_dtype: str = struct.field(pytree_node=False, default="float32")


# ------------------------------------------------------------------------ construction


@functools.partial(jax.jit, static_argnames=("obs_dim", "act_dim", "cfg", "dtype"))
def init(
    key: jax.Array,
    obs_dim: int,
    act_dim: int,
    cfg: EnsembleConfig,
    dtype: jax.typing.DTypeLike = jnp.float32,
) -> EnsembleState:
    """Fresh ensemble: K independently initialised MLPs, identity normaliser.

    Jitted (dims, cfg and dtype static): run eagerly, the vmapped initialisers dispatch
    and compile op by op, which takes seconds.

    Args:
      key: PRNG key.
      obs_dim, act_dim: O and A.
      cfg: the configuration (stored in the state as static metadata).
      dtype: of the params, Adam moments and normaliser (float32; float64 needs
        ``jax_enable_x64``). ``cfg.compute_dtype`` is the wide matmuls' operand precision.
    """
    sizes = (obs_dim + act_dim, *cfg.hidden, obs_dim)
    member_init = functools.partial(mlp_init, sizes=sizes, weight_norm=cfg.weight_norm, dtype=dtype)
    params = ensemble_lib.init(member_init, key, cfg.num_models)
    opt_state = jax.vmap(optax.adam(cfg.learning_rate).init)(params)
    zeros_o, zeros_a = jnp.zeros((obs_dim,), dtype), jnp.zeros((act_dim,), dtype)
    norm = Normaliser(zeros_o, zeros_o + 1, zeros_a, zeros_a + 1, zeros_o, zeros_o + 1)
    return EnsembleState(params=params, opt_state=opt_state, norm=norm, cfg=cfg)


def compute_normaliser(buf: buffer_lib.Buffer, weights: jax.Array | None = None) -> Normaliser:
    """Mean and (population) std of obs, act and delta over the buffer's valid rows.

    ``weights [C]`` (optional, > 0): each row counts that many times (the fit's recency
    weight), as if it were held so many times; None: every row once.

    Fixed shapes: masks rows ``>= count`` instead of slicing, so it is jit-safe and never
    recompiles as ``count`` grows. Two-pass variance for float32 accuracy. Leaves have
    the buffer's dtype.
    """
    mask = buffer_lib.valid_mask(buf)[:, None]
    if weights is None:
        n = jnp.maximum(buf.count, 1).astype(buf.obs.dtype)
        w = None
    else:
        w = jnp.where(mask, weights.astype(buf.obs.dtype)[:, None], 0.0)
        n = jnp.maximum(w.sum(), jnp.finfo(buf.obs.dtype).tiny)

    def mean_std(x):
        x = jnp.where(mask, x, 0.0)
        if w is None:
            mean = x.sum(0) / n
            var = jnp.where(mask, (x - mean) ** 2, 0.0).sum(0) / n
        else:
            mean = (w * x).sum(0) / n
            var = (w * (x - mean) ** 2).sum(0) / n
        return mean, jnp.sqrt(var)

    om, os_ = mean_std(buf.obs)
    am, as_ = mean_std(buf.act)
    dm, ds = mean_std(buf.next_obs - buf.obs)
    return Normaliser(om, os_, am, as_, dm, ds)


def _normalise_inputs(norm: Normaliser, obs: jax.Array, act: jax.Array) -> jax.Array:
    """``[..., O], [..., A] -> [..., O + A]`` z-normalised network input."""
    obs_n = (obs - norm.obs_mean) / (norm.obs_std + EPS)
    act_n = (act - norm.act_mean) / (norm.act_std + EPS)
    return jnp.concatenate([obs_n, act_n], axis=-1)


# -------------------------------------------------------------------------- prediction


def model_params(state: EnsembleState) -> Model:
    """Per-model predictors for imagination: every leaf ``[K, ...]``.

    Weight norm is folded into plain weights and the shared normaliser is broadcast to
    ``[K, D]``, so ``tree.map(lambda x: x[idx], models)`` gathers one model per task.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    k = state.cfg.num_models
    layers = tuple({"w": effective_weight(layer), "b": layer["b"]} for layer in state.params)
    norm = jax.tree.map(lambda x: jnp.broadcast_to(x, (k, *x.shape)), state.norm)
    return Model(
        layers,
        norm,
        activation=state.cfg.activation,
        obs_clip=state.cfg.obs_clip,
        compute_dtype=state.cfg.compute_dtype,
    )


def model_step(model_k: Model, obs: jax.Array, act: jax.Array) -> jax.Array:
    """One model's next observation: ``s + denormalised delta``, clipped to +-obs_clip.

    Args:
      model_k: a ``Model`` whose leaves have no model axis (e.g. ``tree.map(x[k])``).
      obs: ``[B, O]`` (any leading dims work); act: ``[B, A]``.

    Returns:
      ``[B, O]``. Pure; safe under jit, vmap and grad (w.r.t. obs, act or params).
    """
    norm = model_k.norm
    x = _normalise_inputs(norm, obs, act)
    delta_n = mlp_apply(model_k.layers, x, model_k.activation, model_k.compute_dtype)
    delta = delta_n * (norm.delta_std + EPS) + norm.delta_mean
    return jnp.clip(obs + delta, -model_k.obs_clip, model_k.obs_clip)


def predict(state: EnsembleState, obs: jax.Array, act: jax.Array) -> jax.Array:
    """All K models' next observations for the same inputs: ``[B, O], [B, A] -> [K, B, O]``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return ensemble_lib.apply_all(model_step, model_params(state), obs, act)


def ensemble_mean(state: EnsembleState, obs: jax.Array, act: jax.Array) -> jax.Array:
    """Mean over models of the predicted next observation, ``[B, O]``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return predict(state, obs, act).mean(axis=0)


def ensemble_std(state: EnsembleState, obs: jax.Array, act: jax.Array) -> jax.Array:
    """Std over models (ddof 0, as the original) of the predicted next observation,
    ``[B, O]``: the model-disagreement signal the paper correlates with adaptation.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return predict(state, obs, act).std(axis=0)
