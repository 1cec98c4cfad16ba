"""Ensemble of K MLP dynamics models, fitted and applied with vmap.

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

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mbmpo_jax import buffer as buffer_lib
from mbmpo_jax import ensemble as ensemble_lib

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
    "effective_weight",
    "ensemble_mean",
    "ensemble_std",
    "dense",
    "epoch_train_rows",
    "fit",
    "fit_unchecked",
    "fit_with_keys",
    "init",
    "mlp_apply",
    "mlp_init",
    "model_params",
    "model_step",
    "predict",
    "split_permutation",
    "split_sizes",
]

EPS = 1e-10  # added to every std, as in the original code

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    "swish": jax.nn.swish,
    "gelu": jax.nn.gelu,
    "leaky_relu": jax.nn.leaky_relu,
}

Layers = tuple[dict[str, jax.Array], ...]  # one dict per dense layer

# Operand precision of the wide (hidden-to-hidden) matmuls; accumulation is in full
# precision (the params' and data's dtype: float32, or float64 with float64 params).
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """Ensemble architecture and fitting hyperparameters (defaults: the paper's).

    Hashable, so it is passed to jitted functions as a static argument.
    """

    num_models: int = 5
    hidden: tuple[int, ...] = (512, 512)
    activation: str = "relu"
    weight_norm: bool = False  # the paper's runs used True; the interface default is off
    learning_rate: float = 1e-3
    batch_size: int = 500
    max_epochs: int = 500
    valid_split: float = 0.2
    persistency: float = 0.99
    obs_clip: float = 1000.0
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


class FitInfo(NamedTuple):
    """Per-model fit diagnostics.

    epochs: ``[K]`` int32, epochs each model trained (including the one that stopped it).
    train_loss: ``[K]`` mean normalised-delta MSE over that model's last trained epoch
      (each minibatch's loss measured before its update, as the original logs it).
    valid_loss: ``[K]`` normalised-delta MSE on the model's validation split after its
      last trained epoch.
    """

    epochs: jax.Array
    train_loss: jax.Array
    valid_loss: jax.Array


# ----------------------------------------------------------------------------- network


def mlp_init(
    key: jax.Array,
    sizes: tuple[int, ...],
    weight_norm: bool = False,
    dtype: jax.typing.DTypeLike = jnp.float32,
) -> Layers:
    """One MLP with Glorot-uniform weights and zero biases (rllab's defaults).

    ``sizes = (I, *hidden, O)``; the ensemble is ``ensemble.init`` of this (a leading
    ``[K]`` axis on every leaf). All weights come from one ``random.uniform`` call: each
    random call costs a fraction of a second of XLA compile time on CPU, so one call per
    layer adds up. With weight norm the weight is ``g * v / ||v||`` per output unit, ``g``
    started at ``||v||`` so the initial function equals the plain network's. Leaves have
    ``dtype``.

    Transforms: safe under jit and vmap (sizes are static); random outputs, nothing to
    differentiate.
    """
    shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
    u = jax.random.uniform(key, (sum(i * o for i, o in shapes),), dtype, -1, 1)
    layers, start = [], 0
    for n_in, n_out in shapes:
        limit = (6.0 / (n_in + n_out)) ** 0.5
        w = u[start : start + n_in * n_out].reshape(n_in, n_out) * limit
        start += n_in * n_out
        b = jnp.zeros((n_out,), dtype)
        if weight_norm:
            layers.append({"v": w, "g": jnp.linalg.norm(w, axis=-2), "b": b})
        else:
            layers.append({"w": w, "b": b})
    return tuple(layers)


def effective_weight(layer: dict[str, jax.Array]) -> jax.Array:
    """``w [.., I, O]`` of a plain or weight-normalised layer (norm over the input axis).

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    if "w" in layer:
        return layer["w"]
    v = layer["v"]
    return layer["g"][..., None, :] * v / jnp.linalg.norm(v, axis=-2, keepdims=True)


def _contract_last(a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
    """``a [..., N] . b [M, N] -> [..., M]`` (``a @ b.T`` without a transpose op)."""
    dims = (((a.ndim - 1,), (1,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_lp(x: jax.Array, w: jax.Array, operand_dtype) -> jax.Array:
    """``x @ w`` on ``operand_dtype`` operands, accumulated in the wider of x's and w's dtypes."""
    return jnp.matmul(
        x.astype(operand_dtype),
        w.astype(operand_dtype),
        preferred_element_type=jnp.result_type(x, w),
    )


def _dense_lp_fwd(x, w, operand_dtype):
    x_lp, w_lp = x.astype(operand_dtype), w.astype(operand_dtype)
    out = jnp.matmul(x_lp, w_lp, preferred_element_type=jnp.result_type(x, w))
    # Empty arrays carry the primal dtypes (float32, or float64 under x64) to the backward.
    return out, (x_lp, w_lp, jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _dense_lp_bwd(operand_dtype, res, g):
    x_lp, w_lp, x_like, w_like = res
    g_lp = g.astype(operand_dtype)
    # dx = g @ w.T as one dot_general contracting both minor axes: written with `w.T`, the
    # transpose reaches XLA's CPU operand upcaster as a non-default layout and the product
    # runs in float32 (measured: the slowest op of the bfloat16 fit step).
    dx = _contract_last(g_lp, w_lp, x_like.dtype)
    x2 = x_lp.reshape(-1, x_lp.shape[-1])
    g2 = g_lp.reshape(-1, g_lp.shape[-1])
    # dw = x2.T @ g2 contracts the batch axis, which is not x2's minor axis. XLA's CPU
    # backend folds a plain transpose into the dot and then runs it in float32 (the matrix
    # units' bfloat16 path wants the contracted axis minor), about 3x slower; the one-row
    # concatenation makes the transposed copy real, so the product stays in bfloat16
    # (WORKSPACE.md, issue 18). The padding row is sliced off the [I + 1, O] result.
    xt = jnp.concatenate([x2.T, jnp.zeros((1, x2.shape[0]), x2.dtype)], axis=0)
    dw = jnp.matmul(xt, g2, preferred_element_type=w_like.dtype)[:-1]
    return dx, dw


_dense_lp.defvjp(_dense_lp_fwd, _dense_lp_bwd)


def dense(x: jax.Array, w: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    """``x [..., I] @ w [I, O]`` (one weight matrix; vmap for a stack of models).

    ``"float32"`` is full precision: a plain product in the operands' dtype (float64 for
    float64 params). With ``"bfloat16"`` operands are rounded to bfloat16 and products
    accumulate in the wider of ``x``'s and ``w``'s dtypes (float32 by default), in the
    forward pass and in both backward products (``g @ w.T`` and ``x.T @ g``, a
    `jax.custom_vjp`; the gradients come back in ``x``'s and ``w``'s dtypes).

    Transforms: pure JAX; safe under jit, vmap and grad (the bfloat16 gradient is that of
    the rounded operands, not of the full-precision product).
    """
    if compute_dtype == "float32":
        return x @ w
    if compute_dtype == "bfloat16":
        if w.ndim != 2:  # the vjp's dw sums over every leading axis of x
            raise ValueError(
                f"dense needs one weight matrix [I, O] (vmap over models), got {w.shape}"
            )
        return _dense_lp(x, w, jnp.bfloat16)
    raise ValueError(f"compute_dtype {compute_dtype!r} not in {COMPUTE_DTYPES}")


def mlp_apply(
    layers: Layers, x: jax.Array, activation: str = "relu", compute_dtype: str = "float32"
) -> jax.Array:
    """``x [..., I] -> [..., O]``; hidden layers use ``activation``, the output is linear.

    ``compute_dtype`` applies to the hidden-to-hidden layers only (`dense`): the first
    layer (inputs of O + A, about 20-40 wide) and the last (O outputs) keep full precision
    (the params' dtype, float32 by default), since thin products gain little from the
    matrix units and the model's inputs and outputs keep full precision. In a bfloat16
    network those thin layers still go through the custom vjp (full-precision operands),
    whose backward dot forms are the CPU's fast ones.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    act_fn = ACTIVATIONS[activation]
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        w = effective_weight(layer)
        if 0 < i < last or compute_dtype == "float32":
            x = dense(x, w, compute_dtype)
        else:  # a thin layer of a bfloat16 network: full precision through the same vjp
            x = _dense_lp(x, w, jnp.result_type(x, w))
        x = x + layer["b"]
        if i < last:
            x = act_fn(x)
    return x


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


def compute_normaliser(buf: buffer_lib.Buffer) -> Normaliser:
    """Mean and (population) std of obs, act and delta over the buffer's valid rows.

    Fixed shapes: masks rows ``>= count`` instead of slicing, so it is jit-safe and never
    recompiles as ``count`` grows. Two-pass variance for float32 accuracy. Leaves have
    the buffer's dtype.
    """
    mask = buffer_lib.valid_mask(buf)[:, None]
    n = jnp.maximum(buf.count, 1).astype(buf.obs.dtype)

    def mean_std(x):
        x = jnp.where(mask, x, 0.0)
        mean = x.sum(0) / n
        var = jnp.where(mask, (x - mean) ** 2, 0.0).sum(0) / n
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


# ----------------------------------------------------------------------------- fitting


def split_sizes(count: jax.Array, valid_split: float) -> tuple[jax.Array, jax.Array]:
    """``(n_valid, n_train)`` int32 for ``count`` valid rows; both >= 1 when count >= 2.

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    count = jnp.asarray(count, jnp.int32)
    n_val = jnp.floor(count.astype(jnp.float32) * valid_split).astype(jnp.int32)
    n_val = jnp.clip(n_val, 1, jnp.maximum(count - 1, 1))
    return n_val, count - n_val


def split_permutation(key: jax.Array, count: jax.Array, capacity: int) -> jax.Array:
    """``[C]`` int32 row indices: the ``count`` valid rows in random order, then the rest.

    Positions ``[0, n_valid)`` are the model's validation rows, ``[n_valid, count)`` its
    training rows. Sorting random keys with invalid rows keyed past 1 keeps the shape
    fixed whatever ``count`` is.

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    u = jax.random.uniform(key, (capacity,), jnp.float32)
    u = jnp.where(jnp.arange(capacity) < count, u, 2.0)
    return jnp.argsort(u).astype(jnp.int32)


def _sort_sizes(capacity: int, smallest: int = 2048, halvings: int = 4) -> tuple[int, ...]:
    """Static prefix lengths (ascending, the last is ``capacity``) to sort over."""
    return tuple(sorted({min(capacity, max(smallest, capacity >> i)) for i in range(halvings + 1)}))


def epoch_train_rows(
    key: jax.Array, perm: jax.Array, n_val: jax.Array, count: jax.Array
) -> jax.Array:
    """``[C]`` row indices: this epoch's shuffle of the training rows first, then the rest.

    ``perm`` is a ``split_permutation``; its positions ``[n_val, count)`` are shuffled
    (a uniform random permutation), the other positions keep their order.

    The shuffle sorts random keys. Sorting all ``C`` positions every epoch would cost a
    100k-element sort per model per epoch even when only 5k rows hold data (about 10% of
    such an epoch on CPU), so the sort runs over the shortest of a few static prefix
    lengths that covers ``count``, picked by ``lax.switch``: still one compilation.

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    capacity = perm.shape[0]
    u = jax.random.uniform(key, (capacity,), jnp.float32)

    def shuffle_prefix(size):
        def branch(u):
            pos = jnp.arange(size)
            keys = jnp.where((pos >= n_val) & (pos < count), u[:size], 2.0)
            order = jnp.concatenate([jnp.argsort(keys), jnp.arange(size, capacity)])
            return perm[order]

        return branch

    sizes = _sort_sizes(capacity)
    which = jnp.searchsorted(jnp.asarray(sizes), count)  # first size >= count
    return jax.lax.switch(which, [shuffle_prefix(size) for size in sizes], u)


def _masked_sq_err(layers: Layers, x, y, mask, activation: str, compute_dtype: str = "float32"):
    """Per-sample MSE ``[B]`` (mean over O), zero where ``mask`` is False."""
    err = ((mlp_apply(layers, x, activation, compute_dtype) - y) ** 2).mean(axis=-1)
    return jnp.where(mask, err, 0.0)


def _pad_to_multiple(rows: jax.Array, multiple: int) -> jax.Array:
    """Pad the last axis to a multiple of ``multiple`` so a dynamic slice never clamps."""
    pad = -rows.shape[-1] % multiple
    return jnp.pad(rows, [(0, 0)] * (rows.ndim - 1) + [(0, pad)])


class _EpochCarry(NamedTuple):
    params: Layers
    opt_state: Any
    active: jax.Array  # [K] bool, still training
    avg: jax.Array  # [K] moving average of the validation loss
    prev_avg: jax.Array  # [K] its value one epoch earlier
    epochs: jax.Array  # [K] int32
    train_loss: jax.Array  # [K]
    valid_loss: jax.Array  # [K]
    epoch: jax.Array  # [] int32


@functools.partial(jax.jit, static_argnames=("cfg",))
def fit_with_keys(
    state: EnsembleState,
    buf: buffer_lib.Buffer,
    model_keys: jax.Array,
    cfg: EnsembleConfig,
) -> tuple[EnsembleState, FitInfo]:
    """``fit`` with explicit per-model keys ``[K]`` (no NaN check; jittable, pure).

    Model k's split and shuffles come only from ``model_keys[k]``, so a member of an
    ensemble fit can be reproduced by a one-model fit with ``model_keys[k:k+1]``:
    ``split_key, shuffle_key = random.split(model_keys[k])``; its rows are
    ``split_permutation(split_key, count, C)`` and epoch ``e`` visits
    ``epoch_train_rows(random.fold_in(shuffle_key, e), perm, n_val, count)`` in
    consecutive minibatches of ``batch_size`` (the last one may be short).
    Compiles once per (cfg, buffer capacity, dims); ``buf.count`` is traced.

    Args:
      state: ensemble with K models (``cfg`` must match its architecture).
      buf: buffer with ``count >= 2`` valid rows (not checked under jit).
      model_keys: ``[K]`` PRNG keys.
      cfg: hyperparameters for this fit (static).

    Returns:
      ``(new_state, FitInfo)``; ``new_state.cfg`` is ``cfg``.
    """
    _check_compatible(state, cfg)
    if model_keys.shape[0] != cfg.num_models:
        raise ValueError(f"need {cfg.num_models} model keys, got {model_keys.shape[0]}")
    capacity, batch = buf.capacity, cfg.batch_size
    optimizer = optax.adam(cfg.learning_rate)
    count = buf.count
    n_val, n_train = split_sizes(count, cfg.valid_split)

    # Normalise the whole buffer once per fit. Invalid rows are zeroed: a NaN there
    # would otherwise leak into gradients through 0 * NaN even when masked.
    norm = compute_normaliser(buf)
    valid = buffer_lib.valid_mask(buf)[:, None]
    inputs = jnp.where(valid, _normalise_inputs(norm, buf.obs, buf.act), 0.0)  # [C, I]
    targets = (buf.next_obs - buf.obs - norm.delta_mean) / (norm.delta_std + EPS)
    targets = jnp.where(valid, targets, 0.0)  # [C, O]
    # The losses' dtype (the loop carries'): that of the network's output.
    loss_dtype = jnp.result_type(inputs, *jax.tree.leaves(state.params))

    split_keys, shuffle_keys = jnp.moveaxis(jax.vmap(jax.random.split)(model_keys), 1, 0)
    perms = jax.vmap(split_permutation, in_axes=(0, None, None))(split_keys, count, capacity)
    val_rows = _pad_to_multiple(perms, batch)  # [K, Cp], validation rows first

    def sgd_step(params, opt_state, x, y, mask, active):
        """One Adam step for one model; a stopped model returns its inputs unchanged."""

        def loss_fn(p):
            err = _masked_sq_err(p, x, y, mask, cfg.activation, cfg.compute_dtype)
            return err.sum() / jnp.maximum(mask.sum(), 1), err.sum()

        (_, err_sum), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(active, new, old)
        return (
            jax.tree.map(keep, new_params, params),
            jax.tree.map(keep, new_opt_state, opt_state),
            err_sum,
        )

    def train_epoch(params, opt_state, rows, active):
        """One pass over the training rows ``rows [K, Cp]``; returns mean train loss [K]."""
        # A traced trip count (not a scan over C / batch minibatches): a small buffer in
        # a large capacity only pays for the minibatches it has.
        num_batches = (n_train + batch - 1) // batch

        def body(i, carry):
            params, opt_state, err_sum = carry
            idx = jax.lax.dynamic_slice_in_dim(rows, i * batch, batch, axis=1)  # [K, B]
            mask = i * batch + jnp.arange(batch) < n_train  # [B]
            params, opt_state, err = jax.vmap(sgd_step, in_axes=(0, 0, 0, 0, None, 0))(
                params, opt_state, inputs[idx], targets[idx], mask, active
            )
            return params, opt_state, err_sum + err

        zero = jnp.zeros((cfg.num_models,), loss_dtype)
        params, opt_state, err_sum = jax.lax.fori_loop(
            0, num_batches, body, (params, opt_state, zero)
        )
        return params, opt_state, err_sum / n_train

    def valid_loss(params):
        """Normalised-delta MSE on each model's validation rows, ``[K]``."""
        num_batches = (n_val + batch - 1) // batch

        def body(j, err_sum):
            idx = jax.lax.dynamic_slice_in_dim(val_rows, j * batch, batch, axis=1)
            mask = j * batch + jnp.arange(batch) < n_val
            err = jax.vmap(_masked_sq_err, in_axes=(0, 0, 0, None, None, None))(
                params, inputs[idx], targets[idx], mask, cfg.activation, cfg.compute_dtype
            )
            return err_sum + err.sum(axis=-1)

        zero = jnp.zeros((cfg.num_models,), loss_dtype)
        return jax.lax.fori_loop(0, num_batches, body, zero) / n_val

    def cond(c: _EpochCarry):
        return (c.epoch < cfg.max_epochs) & c.active.any()

    def body(c: _EpochCarry) -> _EpochCarry:
        epoch_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(shuffle_keys, c.epoch)
        rows = jax.vmap(epoch_train_rows, in_axes=(0, 0, None, None))(
            epoch_keys, perms, n_val, count
        )
        params, opt_state, train_loss = train_epoch(
            c.params, c.opt_state, _pad_to_multiple(rows, batch), c.active
        )
        v = valid_loss(params)
        # The original starts the average at 1.5x (and its "previous" at 2x) the first
        # validation loss so that a model is not stopped by early noise, then applies
        # the first update right away; a model stops when its average goes up.
        first = c.epoch == 0
        prev_avg = jnp.where(first, 2.0 * v, c.prev_avg)
        avg = jnp.where(first, 1.5 * v, c.avg)
        avg = cfg.persistency * avg + (1.0 - cfg.persistency) * v
        trained = c.active
        return _EpochCarry(
            params=params,
            opt_state=opt_state,
            active=trained & ~(prev_avg < avg),
            avg=avg,
            prev_avg=avg,
            epochs=c.epochs + trained.astype(jnp.int32),
            train_loss=jnp.where(trained, train_loss, c.train_loss),
            valid_loss=jnp.where(trained, v, c.valid_loss),
            epoch=c.epoch + 1,
        )

    k = cfg.num_models
    nan = jnp.full((k,), jnp.nan, loss_dtype)
    carry = _EpochCarry(
        params=state.params,
        opt_state=state.opt_state,
        active=jnp.ones((k,), bool),
        avg=nan,
        prev_avg=nan,
        epochs=jnp.zeros((k,), jnp.int32),
        train_loss=nan,
        valid_loss=nan,
        epoch=jnp.zeros((), jnp.int32),
    )
    carry = jax.lax.while_loop(cond, body, carry)
    new_state = EnsembleState(params=carry.params, opt_state=carry.opt_state, norm=norm, cfg=cfg)
    return new_state, FitInfo(carry.epochs, carry.train_loss, carry.valid_loss)


@functools.partial(jax.jit, static_argnames=("cfg",))
def fit_unchecked(
    state: EnsembleState, buf: buffer_lib.Buffer, key: jax.Array, cfg: EnsembleConfig
) -> tuple[EnsembleState, FitInfo]:
    """``fit`` without the host-side data checks, for use inside a larger jit."""
    return fit_with_keys(state, buf, jax.random.split(key, cfg.num_models), cfg)


def fit(
    state: EnsembleState,
    buf: buffer_lib.Buffer,
    key: jax.Array,
    cfg: EnsembleConfig | None = None,
) -> tuple[EnsembleState, FitInfo]:
    """Fit all K models on the buffer's valid data (one jitted computation).

    Before training, on the host: raises ``ValueError`` if the valid data holds NaN/inf
    or fewer than 2 transitions (one small device-to-host transfer). Use
    ``fit_unchecked`` to call it from inside a jit.

    Args:
      state: current ensemble (parameters are warm-started, as in the original).
      buf: real-transition buffer; rows ``[0, count)`` are used.
      key: PRNG key for the per-model splits and shuffles.
      cfg: hyperparameters; defaults to ``state.cfg``. Its architecture fields must match.

    Returns:
      ``(new_state, FitInfo)`` with per-model ``epochs``, ``train_loss``, ``valid_loss [K]``.
    """
    cfg = state.cfg if cfg is None else cfg
    _check_compatible(state, cfg)
    count = int(buf.count)
    if count < 2:
        raise ValueError(f"dynamics fit needs at least 2 transitions, the buffer has {count}")
    buffer_lib.check_finite(buf.obs, buf.act, buf.next_obs, count=count)
    return fit_unchecked(state, buf, key, cfg)


def _check_compatible(state: EnsembleState, cfg: EnsembleConfig) -> None:
    arch = lambda c: (c.num_models, c.hidden, c.activation, c.weight_norm)
    if arch(state.cfg) != arch(cfg):
        raise ValueError(
            "fit cfg architecture (num_models, hidden, activation, weight_norm) "
            f"{arch(cfg)} differs from the state's {arch(state.cfg)}"
        )
