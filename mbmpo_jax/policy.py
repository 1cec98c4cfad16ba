"""Gaussian MLP policy with a state-independent learned log-std.

The policy of the paper (rllab's ``GaussianMLPPolicy``): a tanh MLP (32, 32) gives the
action mean, a free vector gives the log-std (initial std 1.0), both adapted by the
inner step. A network is an ``(init, apply)`` pair of pure functions over a params
pytree; the distribution helpers below work on the ``(mean, log_std)`` that ``apply``
returns, so that the losses in ``maml`` never need to know about layers.

Params pytree: ``{"layers": [{"w": [I, O], "b": [O]}, ...], "log_std": [A]}``, and with
``normalize_obs`` also ``"obs_norm": {"mean": [O], "std": [O]}``: the network then reads
``(obs - mean) / std``. The statistics are not learned (``apply`` stops their gradient, so
the inner step, TRPO and PPO leave them as they are); ``set_obs_norm`` sets them and
``renormalize`` moves them to new statistics without changing the policy's function. The
layer count is read from the pytree, so ``apply`` needs no configuration and works
unchanged on params with extra leading axes under ``vmap`` (per-task post-update params
``[T]``).

Dtypes: ``init`` makes float32 params unless given ``dtype`` (float64 needs
``jax_enable_x64``); every other function computes in the dtype of its inputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "PolicyConfig",
    "Policy",
    "apply",
    "entropy",
    "init",
    "kl",
    "log_prob",
    "make_policy",
    "normalizes_obs",
    "renormalize",
    "sample",
    "set_obs_norm",
]


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """The Gaussian MLP policy; defaults are the paper's (rllab's).

    hidden: tanh layer widths; init_std: initial action std; output_scale: the last
    layer's initial weights x this (1.0: rllab's Glorot init; the cpu preset starts the
    Ant near rest with 0.01); normalize_obs: the network reads the observation
    z-normalised by the real buffer's statistics (``renormalize``), as PPO's observation
    normaliser; False is the paper's (rllab's policy reads the raw observation).
    """

    hidden: tuple[int, ...] = (32, 32)
    init_std: float = 1.0
    output_scale: float = 1.0
    normalize_obs: bool = False

    def __post_init__(self):
        # A list here would make the config unhashable and break jit's static args.
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden sizes must be positive, got {self.hidden}")
        if not (self.init_std > 0 and self.output_scale > 0):
            raise ValueError("init_std and output_scale must be positive")
        if not isinstance(self.normalize_obs, bool):
            raise ValueError(f"normalize_obs must be a bool, got {self.normalize_obs!r}")


Params = Any  # a pytree, see the module docstring

_LOG_2PI = math.log(2.0 * math.pi)

# Floor on the observation std the normaliser divides by: a dimension that barely varies
# in the buffer is not blown up past 1 / OBS_STD_FLOOR per unit of change.
OBS_STD_FLOOR = 1e-2


class Policy(NamedTuple):
    """An ``(init, apply)`` pair.

    init: ``key -> params``.
    apply: ``(params, obs[..., O]) -> (mean[..., A], log_std[..., A])``.
    """

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]


def init(
    key: jax.Array,
    obs_dim: int,
    act_dim: int,
    hidden: Sequence[int] = (32, 32),
    init_std: float = 1.0,
    output_scale: float = 1.0,
    dtype: jax.typing.DTypeLike = jnp.float32,
    normalize_obs: bool = False,
) -> Params:
    """Fresh params: Glorot-uniform weights and zero biases (rllab's MLP defaults).

    `output_scale` multiplies the last layer's weights: 1.0 is rllab's; a small value
    (e.g. 0.01) starts every mean action near 0, so the first episodes are the noise of
    `init_std` around rest rather than a random bang-bang controller. Every leaf has
    `dtype` (float32 by default; float64 needs `jax_enable_x64`). `normalize_obs` adds
    the identity normaliser (mean 0, std 1), to be set by `set_obs_norm`.

    Transforms: safe under jit (sizes are static); integer/random outputs, nothing to differentiate.
    """
    sizes = [obs_dim, *hidden, act_dim]
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        limit = math.sqrt(6.0 / (n_in + n_out))
        w = jax.random.uniform(k, (n_in, n_out), dtype, -limit, limit)
        if i == len(sizes) - 2:
            w = w * output_scale
        layers.append({"w": w, "b": jnp.zeros((n_out,), dtype)})
    log_std = jnp.full((act_dim,), math.log(init_std), dtype)
    params = {"layers": layers, "log_std": log_std}
    if normalize_obs:
        params["obs_norm"] = {
            "mean": jnp.zeros((obs_dim,), dtype),
            "std": jnp.ones((obs_dim,), dtype),
        }
    return params


def apply(params: Params, obs: jax.Array, min_std: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Action distribution at ``obs``.

    Args:
      params: policy params (no leading axes; ``vmap`` for per-task params).
      obs: ``[..., O]``.
      min_std: floor on the std, as rllab's ``min_std`` (keeps log-probs finite when an
        update drives the log-std very negative).

    Returns:
      ``(mean [..., A], log_std [..., A])``; ``log_std`` is broadcast to the batch.
    """
    h = obs
    if "obs_norm" in params:
        norm = jax.lax.stop_gradient(params["obs_norm"])
        h = (obs - norm["mean"]) / norm["std"]
    layers = params["layers"]
    for layer in layers[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    mean = h @ layers[-1]["w"] + layers[-1]["b"]
    log_std = jnp.maximum(params["log_std"], math.log(min_std))
    return mean, jnp.broadcast_to(log_std, mean.shape)


def normalizes_obs(params: Params) -> bool:
    """Whether `params` carry an observation normaliser (``normalize_obs``).

    Transforms: host-side Python (reads the pytree's structure, static under jit).
    """
    return "obs_norm" in params


def _checked_norm(params: Params, mean: jax.Array, std: jax.Array) -> dict:
    if not normalizes_obs(params):
        raise ValueError("these policy params have no observation normaliser (normalize_obs)")
    dtype = params["log_std"].dtype
    mean = jnp.asarray(mean, dtype)
    std = jnp.maximum(jnp.asarray(std, dtype), OBS_STD_FLOOR)
    return {"mean": jnp.broadcast_to(mean, params["obs_norm"]["mean"].shape), "std": std}


def set_obs_norm(params: Params, mean: jax.Array, std: jax.Array) -> Params:
    """`params` reading ``(obs - mean) / max(std, OBS_STD_FLOOR)``, the layers unchanged
    (so the function changes: for a fresh policy, whose Glorot weights then meet inputs of
    unit scale).

    Transforms: pure JAX; safe under jit and vmap.
    """
    return {**params, "obs_norm": _checked_norm(params, mean, std)}


def renormalize(params: Params, mean: jax.Array, std: jax.Array) -> Params:
    """The same policy function with the normaliser moved to ``(mean, max(std, floor))``.

    With the old statistics ``(m, s)`` and the new ``(m', s')`` the first layer's
    ``W' = diag(s' / s) W`` and ``b' = b + ((m' - m) / s) W``, so that
    ``((x - m') / s') W' + b' = ((x - m) / s) W + b`` for every ``x``: the policy's actions
    do not jump when the buffer's statistics move, while its first layer keeps reading
    inputs of unit scale (what the inner step's plain gradient and TRPO's conjugate
    gradient see). An affine reparametrisation, so a natural-gradient step is unchanged by
    it to first order; the vanilla-gradient inner step is not.

    Transforms: pure JAX; safe under jit and vmap.
    """
    new = _checked_norm(params, mean, std)
    old = params["obs_norm"]
    first, *rest = params["layers"]
    w = first["w"] * (new["std"] / old["std"])[:, None]
    b = first["b"] + ((new["mean"] - old["mean"]) / old["std"]) @ first["w"]
    return {**params, "layers": [{"w": w, "b": b}, *rest], "obs_norm": new}


def make_policy(
    obs_dim: int,
    act_dim: int,
    hidden: Sequence[int] = (32, 32),
    init_std: float = 1.0,
    output_scale: float = 1.0,
    normalize_obs: bool = False,
) -> Policy:
    """The ``(init, apply)`` pair for the given sizes.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    hidden = tuple(hidden)
    return Policy(
        init=lambda key: init(
            key, obs_dim, act_dim, hidden, init_std, output_scale, normalize_obs=normalize_obs
        ),
        apply=apply,
    )


def sample(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """One unclipped action per row: ``mean + std * eps``, shape of ``mean``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)


def log_prob(mean: jax.Array, log_std: jax.Array, act: jax.Array) -> jax.Array:
    """Diagonal-Gaussian log-density, ``[..., A] -> [...]``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    z = (act - mean) * jnp.exp(-log_std)
    return (
        -0.5 * jnp.sum(z * z, axis=-1) - jnp.sum(log_std, axis=-1) - 0.5 * mean.shape[-1] * _LOG_2PI
    )


def entropy(log_std: jax.Array) -> jax.Array:
    """Diagonal-Gaussian entropy, ``[..., A] -> [...]``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    return jnp.sum(log_std + 0.5 * (_LOG_2PI + 1.0), axis=-1)


def kl(mean0: jax.Array, log_std0: jax.Array, mean1: jax.Array, log_std1: jax.Array) -> jax.Array:
    """``KL(N(mean0, std0) || N(mean1, std1))`` for diagonal Gaussians, ``[..., A] -> [...]``.

    Transforms: pure JAX; safe under jit, vmap and grad.
    """
    var_ratio = jnp.exp(2.0 * (log_std0 - log_std1))
    dmean = (mean0 - mean1) * jnp.exp(-log_std1)
    return jnp.sum(log_std1 - log_std0 + 0.5 * (var_ratio + dmean * dmean - 1.0), axis=-1)
