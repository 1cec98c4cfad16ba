"""Discounted returns, rllab's linear feature baseline, GAE and advantage processing.

All functions take fixed-shape batches with a ``mask`` (1 while a rollout is alive),
so rollouts that ended early (``done``) are handled without ragged paths: masked steps
contribute nothing to the returns, the baseline fit, or the advantage statistics.

Dtypes follow the inputs (float32 by default, float64 under ``jax_enable_x64`` with
float64 rollouts); mixed inputs promote as ``jnp`` does.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Advantages",
    "compute_advantages",
    "discounted_returns",
    "fit_linear_baseline",
    "gae",
    "linear_features",
    "normalize",
]


class Advantages(NamedTuple):
    """Per-step targets, ``[T, R, H]`` each (0 where masked).

    adv: advantages (centred and scaled per task when ``normalize``).
    returns: discounted reward-to-go.
    baseline: linear-baseline prediction.
    """

    adv: jax.Array
    returns: jax.Array
    baseline: jax.Array


def discounted_returns(rew: jax.Array, mask: jax.Array, discount: float) -> jax.Array:
    """Reward-to-go ``sum_{l>=0} discount^l r_{t+l}`` inside each rollout.

    Args:
      rew: ``[..., H]``; mask: ``[..., H]``.

    Returns:
      ``[..., H]``, 0 where masked (the mask also cuts the sum at ``done``).

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    rew = rew * mask

    def back(acc, x):
        r, m = x
        acc = (r + discount * acc) * m
        return acc, acc

    xs = (jnp.moveaxis(rew, -1, 0), jnp.moveaxis(mask, -1, 0))
    _, ret = jax.lax.scan(back, jnp.zeros(rew.shape[:-1], rew.dtype), xs, reverse=True)
    return jnp.moveaxis(ret, 0, -1)


def gae(
    rew: jax.Array, values: jax.Array, mask: jax.Array, discount: float, lam: float
) -> jax.Array:
    """Generalised advantage estimation over ``[..., H]``.

    The value after a rollout's last step is 0, as rllab appends 0 to each path's
    baseline (imagined rollouts that hit the horizon are treated as ended too). With
    ``lam = 1`` this is ``returns - values``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    rew = rew * mask
    values = values * mask
    next_values = jnp.concatenate([values[..., 1:], jnp.zeros_like(values[..., :1])], axis=-1)
    deltas = (rew + discount * next_values - values) * mask

    def back(acc, x):
        d, m = x
        acc = (d + discount * lam * acc) * m
        return acc, acc

    xs = (jnp.moveaxis(deltas, -1, 0), jnp.moveaxis(mask, -1, 0))
    _, adv = jax.lax.scan(back, jnp.zeros(deltas.shape[:-1], deltas.dtype), xs, reverse=True)
    return jnp.moveaxis(adv, 0, -1)


def linear_features(obs: jax.Array) -> jax.Array:
    """rllab's ``LinearFeatureBaseline`` features.

    Args:
      obs: ``[..., H, O]``, the step index is the position along ``H``.

    Returns:
      ``[..., H, 2 O + 4]``: ``clip(obs, -10, 10)``, its square, ``t, t^2, t^3`` with
      ``t = step / 100``, and 1.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    o = jnp.clip(obs, -10.0, 10.0)
    horizon = obs.shape[-2]
    t = jnp.arange(horizon, dtype=obs.dtype)[:, None] / 100.0
    t = jnp.broadcast_to(t, (*obs.shape[:-1], 1))
    return jnp.concatenate([o, o * o, t, t * t, t * t * t, jnp.ones_like(t)], axis=-1)


def _householder_r(a: jax.Array) -> jax.Array:
    """``R`` ``[F, F]`` of ``a = QR`` (``a``: ``[M, F]``, ``M >= F``) by Householder
    reflections in plain ``jnp`` (``Q`` is not formed; the signs of ``R``'s rows are free).
    """
    m, f = a.shape
    rows = jnp.arange(m)

    def reflect(k, a):
        col = a[:, k]
        x = jnp.where(rows >= k, col, 0.0)
        sign = jnp.where(col[k] >= 0, 1.0, -1.0).astype(a.dtype)
        v = x.at[k].add(sign * jnp.sqrt(jnp.sum(x * x)))  # x + sign(x_k) |x| e_k
        vv = jnp.sum(v * v)
        scale = jnp.where(vv > 0, 2.0 / jnp.where(vv > 0, vv, 1.0), 0.0)
        return a - (scale * v)[:, None] * (v @ a)[None, :]

    return jnp.triu(jax.lax.fori_loop(0, f, reflect, a)[:f])


def _solve_upper(r: jax.Array, b: jax.Array, transpose: bool) -> jax.Array:
    """``R^-1 b`` (or ``R^-T b``) for upper triangular ``R`` ``[F, F]``, by substitution."""
    f = r.shape[0]
    idx = jnp.arange(f)

    def forward(i, y):  # R^T y = b: row i of R^T is column i of R
        return y.at[i].set((b[i] - jnp.sum(jnp.where(idx < i, r[:, i] * y, 0.0))) / r[i, i])

    def backward(j, x):
        i = f - 1 - j
        return x.at[i].set((b[i] - jnp.sum(jnp.where(idx > i, r[i] * x, 0.0))) / r[i, i])

    return jax.lax.fori_loop(0, f, forward if transpose else backward, jnp.zeros_like(b))


def fit_linear_baseline(
    features: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    reg: float = 1e-5,
    lapack: bool = True,
) -> jax.Array:
    """Ridge least squares ``argmin_c sum_n w_n (f_n c - y_n)^2 + reg |c|^2``.

    rllab solves the normal equations in float64; in float32 their condition number
    (squared that of the features, whose columns span 1 to 1e2 scales and are often
    collinear, e.g. a constant observation and the bias) loses every digit. Here the
    triangular factor ``R`` of a QR factorisation of the ridge-augmented matrix
    ``M = [sqrt(w) F; sqrt(reg) I]`` gives ``M^T M = R^T R`` without forming it, and one
    step of iterative refinement ("corrected semi-normal equations", Bjorck) brings the
    solution to the accuracy of a full QR solve while skipping the explicit ``Q``
    (half the cost).

    Args:
      features: ``[N, F]``; targets: ``[N]``; weights: ``[N]`` (0/1 mask).
      lapack: the QR and the triangular solves by jaxlib's LAPACK kernels (the default,
        the path of every committed run), or (False) by Householder reflections and substitution in
        plain ``jnp`` ops, the same arithmetic up to rounding. On a CPU host split into
        several XLA devices the plain ones are required: a batched LAPACK kernel splits
        its batch over the host's thread pool and waits for the pieces on a pool thread,
        and when every pool thread holds a device program waiting so (or one waiting in a
        collective for a device that waits so) the process hangs.

    Returns:
      ``[F]`` coefficients.

    Transforms: pure JAX; safe under jit and vmap (not meant to be differentiated).
    """
    num_features = features.shape[-1]
    sw = jnp.sqrt(weights)[:, None]
    a = jnp.concatenate(
        [features * sw, jnp.sqrt(reg) * jnp.eye(num_features, dtype=features.dtype)], axis=0
    )
    b = jnp.concatenate([targets * sw[:, 0], jnp.zeros((num_features,), targets.dtype)])
    if lapack:
        r = jnp.linalg.qr(a, mode="r")
        solve_triangular = jax.scipy.linalg.solve_triangular

        def solve_normal(rhs):  # (R^T R)^-1 rhs
            y = solve_triangular(r, rhs, lower=False, trans="T")
            return solve_triangular(r, y, lower=False)

    else:
        r = _householder_r(a)

        def solve_normal(rhs):
            return _solve_upper(r, _solve_upper(r, rhs, True), False)

    x = solve_normal(a.T @ b)
    return x + solve_normal(a.T @ (b - a @ x))


def normalize(adv: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``(adv - mean) / (std + eps)`` over the masked entries of ``[..., R, H]`` (per task).

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    n = jnp.maximum(jnp.sum(mask, axis=(-2, -1), keepdims=True), 1.0)
    mean = jnp.sum(adv * mask, axis=(-2, -1), keepdims=True) / n
    var = jnp.sum(jnp.square(adv - mean) * mask, axis=(-2, -1), keepdims=True) / n
    return (adv - mean) / (jnp.sqrt(var) + eps) * mask


def compute_advantages(
    obs: jax.Array,
    rew: jax.Array,
    mask: jax.Array,
    discount: float = 0.99,
    gae_lambda: float = 1.0,
    baseline_reg: float = 1e-5,
    normalize_adv: bool = True,
    lapack: bool = True,
) -> Advantages:
    """Advantages of a batch of imagined rollouts, the baseline refit per task.

    As the original sampler: the baseline is fit on this batch's returns (one fit per
    task, i.e. per model's rollouts) and then predicted on the same batch.

    Args:
      obs: ``[T, R, H, O]``; rew, mask: ``[T, R, H]``.
      lapack: as in ``fit_linear_baseline`` (False where the tasks are split over several
        CPU devices).

    Returns:
      ``Advantages`` with ``[T, R, H]`` arrays, all treated as constants (no gradient).
    """
    obs, rew, mask = jax.lax.stop_gradient((obs, rew, mask))
    returns = discounted_returns(rew, mask, discount)
    feats = linear_features(obs)  # [T, R, H, F]
    num_tasks = obs.shape[0]
    flat = lambda x: x.reshape(num_tasks, -1, *x.shape[3:])
    fit = functools.partial(fit_linear_baseline, lapack=lapack)
    coeffs = jax.vmap(fit, in_axes=(0, 0, 0, None))(
        flat(feats), flat(returns), flat(mask), baseline_reg
    )  # [T, F]
    baseline = jnp.einsum("trhf,tf->trh", feats, coeffs) * mask
    adv = gae(rew, baseline, mask, discount, gae_lambda)
    if normalize_adv:
        adv = normalize(adv, mask)
    return Advantages(adv=adv, returns=returns, baseline=baseline)
