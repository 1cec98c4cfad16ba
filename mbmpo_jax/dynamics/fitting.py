"""Fitting the ensemble, as the authors' code does (Clavera et al. 2018).

At every fit the normaliser is recomputed from the buffer's valid data, each model draws
its own 80/20 train/valid split and reshuffles its training rows every epoch, Adam(1e-3)
runs on minibatches of 500 for at most 500 epochs, and each model stops on its own when a
moving average of its validation loss (persistency 0.99, started at 1.5x the first
validation loss) rises. Parameters are warm-started from the previous fit. Optionally
(``EnsembleConfig.patience > 0``, not the paper's) a model also stops after ``patience``
epochs without a relative improvement of ``min_improvement`` over its best validation
loss of this fit. Optionally (``recent_rows > 0`` and ``recent_weight != 1``, not the
paper's) the buffer's newest rows weigh more in the normaliser and in the training and
validation losses (``_row_weights``), as if they were held that many times.

The whole fit is one jit: ``lax.while_loop`` over epochs (ends when every model has
stopped or at ``max_epochs``), a ``fori_loop`` over minibatches whose trip count is
traced, so a growing buffer (``count``) never changes a shape nor recompiles.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mbmpo_jax import buffer as buffer_lib
from mbmpo_jax.dynamics.model import (
    EPS,
    EnsembleConfig,
    EnsembleState,
    _normalise_inputs,
    compute_normaliser,
)
from mbmpo_jax.dynamics.network import Layers, mlp_apply

__all__ = ["FitInfo", "fit", "fit_unchecked"]


class FitInfo(NamedTuple):
    """Per-model fit diagnostics.

    epochs: ``[K]`` int32, epochs each model trained (including the one that stopped it).
    train_loss: ``[K]`` mean normalised-delta MSE over that model's last trained epoch
      (each minibatch's loss measured before its update, as the original logs it).
    valid_loss: ``[K]`` normalised-delta MSE on the model's validation split after its
      last trained epoch.
    Both losses are means weighted by ``_row_weights`` when the recency weight is on.
    """

    epochs: jax.Array
    train_loss: jax.Array
    valid_loss: jax.Array


def _split_sizes(count: jax.Array, valid_split: float) -> tuple[jax.Array, jax.Array]:
    """``(n_valid, n_train)`` int32 for ``count`` valid rows; both >= 1 when count >= 2.

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    count = jnp.asarray(count, jnp.int32)
    n_val = jnp.floor(count.astype(jnp.float32) * valid_split).astype(jnp.int32)
    n_val = jnp.clip(n_val, 1, jnp.maximum(count - 1, 1))
    return n_val, count - n_val


def _split_permutation(
    key: jax.Array, count: jax.Array, capacity: int, sort_count: jax.Array | None = None
) -> jax.Array:
    """``[C]`` int32 row indices: the ``count`` valid rows in random order, then the rest.

    Positions ``[0, n_valid)`` are the model's validation rows, ``[n_valid, count)`` its
    training rows. Sorting random keys with invalid rows keyed past 1 keeps the shape
    fixed whatever ``count`` is; only the shortest static prefix covering ``count`` (or
    ``sort_count >= count``, which gives the same rows) is sorted (``_argsort_covering``).

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    u = jax.random.uniform(key, (capacity,), jnp.float32)
    u = jnp.where(jnp.arange(capacity) < count, u, 2.0)
    return _argsort_covering(u, count if sort_count is None else sort_count)


def _sort_sizes(capacity: int, smallest: int = 2048, halvings: int = 4) -> tuple[int, ...]:
    """Static prefix lengths (ascending, the last is ``capacity``) to sort over."""
    return tuple(sorted({min(capacity, max(smallest, capacity >> i)) for i in range(halvings + 1)}))


def _argsort_covering(keys: jax.Array, cover: jax.Array) -> jax.Array:
    """``argsort(keys)`` (stable, int32) for ``keys [C]`` that equal their maximum at every
    position ``>= cover``: those positions have the largest key and the largest indices,
    so a stable sort leaves them last and in order. Only the shortest of a few static
    prefix lengths that covers ``cover`` is sorted, picked by ``lax.switch`` (one
    compilation): sorting all ``C`` keys when only a few thousand rows hold data costs a
    100k-element sort per model (XLA's CPU sort: tens of milliseconds each).

    Transforms: safe under jit (sizes are static); under ``vmap`` pass ``cover`` unbatched,
    or the switch computes every branch.
    """
    capacity = keys.shape[0]
    sizes = _sort_sizes(capacity)

    def sort_prefix(size):
        def branch(keys):
            head = jnp.argsort(keys[:size], stable=True).astype(jnp.int32)
            return jnp.concatenate([head, jnp.arange(size, capacity, dtype=jnp.int32)])

        return branch

    which = jnp.searchsorted(jnp.asarray(sizes), cover)
    return jax.lax.switch(which, [sort_prefix(size) for size in sizes], keys)


def _epoch_train_rows(
    key: jax.Array,
    perm: jax.Array,
    n_val: jax.Array,
    count: jax.Array,
    sort_count: jax.Array | None = None,
) -> jax.Array:
    """``[C]`` row indices: this epoch's shuffle of the training rows first, then the rest.

    ``perm`` is a ``_split_permutation``; its positions ``[n_val, count)`` are shuffled
    (a uniform random permutation), the other positions keep their order.

    The shuffle sorts random keys, over the shortest static prefix that covers ``count``
    (``_argsort_covering``; a 100k-element sort per model per epoch when only 5k rows
    hold data would be about 10% of such an epoch on CPU).
    ``sort_count >= count`` (default ``count``) picks the prefix instead: the rows are the
    same for any prefix that covers ``count`` (a stable sort; the rows after ``count``
    keep their order). Under a ``vmap`` over buffers (seeds), pass the largest count
    unbatched, so that the switch stays a switch instead of computing every branch.

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    capacity = perm.shape[0]
    u = jax.random.uniform(key, (capacity,), jnp.float32)
    pos = jnp.arange(capacity)
    keys = jnp.where((pos >= n_val) & (pos < count), u, 2.0)
    return perm[_argsort_covering(keys, count if sort_count is None else sort_count)]


def _row_weights(buf: buffer_lib.Buffer, cfg: EnsembleConfig) -> jax.Array:
    """``[C]`` float32 loss weights: ``recent_weight`` on the ``recent_rows`` newest rows,
    1 on the older ones (rows without data get 1 too; the fit masks them out).

    Transforms: safe under jit and vmap over buffers; nothing to differentiate.
    """
    recent = buffer_lib.ages(buf) < cfg.recent_rows
    return jnp.where(recent, jnp.float32(cfg.recent_weight), jnp.float32(1.0))


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
    best: jax.Array  # [K] lowest validation loss of this fit (patience rule)
    since_best: jax.Array  # [K] int32 epochs since the last improvement on `best`
    epochs: jax.Array  # [K] int32
    train_loss: jax.Array  # [K]
    valid_loss: jax.Array  # [K]
    epoch: jax.Array  # [] int32


@functools.partial(jax.jit, static_argnames=("cfg",))
def _fit_with_keys(
    state: EnsembleState,
    buf: buffer_lib.Buffer,
    model_keys: jax.Array,
    cfg: EnsembleConfig,
    sort_count: jax.Array | None = None,
) -> tuple[EnsembleState, FitInfo]:
    """``fit`` with explicit per-model keys ``[K]`` (no NaN check; jittable, pure).

    Model k's split and shuffles come only from ``model_keys[k]``, so a member of an
    ensemble fit can be reproduced by a one-model fit with ``model_keys[k:k+1]``:
    ``split_key, shuffle_key = random.split(model_keys[k])``; its rows are
    ``_split_permutation(split_key, count, C)`` and epoch ``e`` visits
    ``_epoch_train_rows(random.fold_in(shuffle_key, e), perm, n_val, count)`` in
    consecutive minibatches of ``batch_size`` (the last one may be short).
    Compiles once per (cfg, buffer capacity, dims); ``buf.count`` is traced.

    Args:
      state: ensemble with K models (``cfg`` must match its architecture).
      buf: buffer with ``count >= 2`` valid rows (not checked under jit).
      model_keys: ``[K]`` PRNG keys.
      cfg: hyperparameters for this fit (static).
      sort_count: see ``_epoch_train_rows`` (a vmap over buffers passes their largest
        count); the result does not depend on it.

    Returns:
      ``(new_state, FitInfo)``; ``new_state.cfg`` is ``cfg``.
    """
    _check_compatible(state, cfg)
    if model_keys.shape[0] != cfg.num_models:
        raise ValueError(f"need {cfg.num_models} model keys, got {model_keys.shape[0]}")
    capacity, batch = buf.capacity, cfg.batch_size
    optimizer = optax.adam(cfg.learning_rate)
    count = buf.count
    n_val, n_train = _split_sizes(count, cfg.valid_split)

    # Normalise the whole buffer once per fit. Invalid rows are zeroed: a NaN there
    # would otherwise leak into gradients through 0 * NaN even when masked.
    weighted = cfg.recent_rows > 0 and cfg.recent_weight != 1.0
    row_w = _row_weights(buf, cfg) if weighted else None  # [C], the recency weight (below)
    norm = compute_normaliser(buf, row_w)
    valid = buffer_lib.valid_mask(buf)[:, None]
    inputs = jnp.where(valid, _normalise_inputs(norm, buf.obs, buf.act), 0.0)  # [C, I]
    targets = (buf.next_obs - buf.obs - norm.delta_mean) / (norm.delta_std + EPS)
    targets = jnp.where(valid, targets, 0.0)  # [C, O]
    # The losses' dtype (the loop carries'): that of the network's output.
    loss_dtype = jnp.result_type(inputs, *jax.tree.leaves(state.params))

    split_keys, shuffle_keys = jnp.moveaxis(jax.vmap(jax.random.split)(model_keys), 1, 0)
    perms = jax.vmap(_split_permutation, in_axes=(0, None, None, None))(
        split_keys, count, capacity, sort_count
    )
    val_rows = _pad_to_multiple(perms, batch)  # [K, Cp], validation rows first

    # The recency weight. Off (the paper's fit), none of this is traced, so the fit is the
    # same computation as before the option existed. On, a row counts w times in the
    # normaliser (above) and its squared error w times: each model's training loss is
    # divided by its training rows' mean weight (a minibatch's loss is then an unbiased
    # estimate of the weighted mean over them), its validation loss by its validation
    # rows' summed weight.
    if row_w is not None:
        row_w = row_w.astype(loss_dtype)
        pos = jnp.arange(capacity)
        perm_w = row_w[perms]  # [K, C], in each model's split order
        train_pos = (pos >= n_val) & (pos < count)
        train_scale = n_train / jnp.where(train_pos, perm_w, 0.0).sum(-1)  # [K]
        val_norm = jnp.where(pos < n_val, perm_w, 0.0).sum(-1)  # [K]
    else:
        val_norm = n_val

    def sgd_step(params, opt_state, x, y, mask, w, active):
        """One Adam step for one model; a stopped model returns its inputs unchanged.

        ``w [B]``: the rows' loss weights over the training rows' mean weight (None when
        the recency weight is off).
        """

        def loss_fn(p):
            err = _masked_sq_err(p, x, y, mask, cfg.activation, cfg.compute_dtype)
            if w is not None:
                err = err * w
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
            w = None if row_w is None else row_w[idx] * train_scale[:, None]
            params, opt_state, err = jax.vmap(sgd_step, in_axes=(0, 0, 0, 0, None, 0, 0))(
                params, opt_state, inputs[idx], targets[idx], mask, w, active
            )
            return params, opt_state, err_sum + err

        zero = jnp.zeros((cfg.num_models,), loss_dtype)
        params, opt_state, err_sum = jax.lax.fori_loop(
            0, num_batches, body, (params, opt_state, zero)
        )
        return params, opt_state, err_sum / n_train

    def valid_loss(params):
        """Normalised-delta MSE on each model's validation rows (weighted mean), ``[K]``."""
        num_batches = (n_val + batch - 1) // batch

        def body(j, err_sum):
            idx = jax.lax.dynamic_slice_in_dim(val_rows, j * batch, batch, axis=1)
            mask = j * batch + jnp.arange(batch) < n_val
            err = jax.vmap(_masked_sq_err, in_axes=(0, 0, 0, None, None, None))(
                params, inputs[idx], targets[idx], mask, cfg.activation, cfg.compute_dtype
            )
            if row_w is not None:
                err = err * row_w[idx]
            return err_sum + err.sum(axis=-1)

        zero = jnp.zeros((cfg.num_models,), loss_dtype)
        return jax.lax.fori_loop(0, num_batches, body, zero) / val_norm

    def cond(c: _EpochCarry):
        return (c.epoch < cfg.max_epochs) & c.active.any()

    def body(c: _EpochCarry) -> _EpochCarry:
        epoch_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(shuffle_keys, c.epoch)
        rows = jax.vmap(_epoch_train_rows, in_axes=(0, 0, None, None, None))(
            epoch_keys, perms, n_val, count, sort_count
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
        # Patience: an improvement beats the best by more than `min_improvement` of it.
        improved = first | (v < (1.0 - cfg.min_improvement) * c.best)
        best = jnp.where(improved, v, c.best)
        since_best = jnp.where(improved, 0, c.since_best + 1)
        patient = (cfg.patience == 0) | (since_best < cfg.patience)
        return _EpochCarry(
            params=params,
            opt_state=opt_state,
            active=trained & ~(prev_avg < avg) & patient,
            avg=avg,
            prev_avg=avg,
            best=jnp.where(trained, best, c.best),
            since_best=jnp.where(trained, since_best, c.since_best),
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
        best=nan,
        since_best=jnp.zeros((k,), jnp.int32),
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
    state: EnsembleState,
    buf: buffer_lib.Buffer,
    key: jax.Array,
    cfg: EnsembleConfig,
    sort_count: jax.Array | None = None,
) -> tuple[EnsembleState, FitInfo]:
    """``fit`` without the host-side data checks, for use inside a larger jit.

    Under a ``vmap`` over buffers, pass their largest ``count`` as ``sort_count``
    (unbatched): the result is the same, and the epochs' shuffles sort only as many rows
    as the fullest buffer holds (``_epoch_train_rows``).
    """
    return _fit_with_keys(state, buf, jax.random.split(key, cfg.num_models), cfg, sort_count)


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
