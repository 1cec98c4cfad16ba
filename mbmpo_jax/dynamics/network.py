"""The dynamics models' network: an MLP whose wide layers may compute in bfloat16.

``mlp_init`` builds one member (the ensemble is ``ensemble.init`` of it), ``mlp_apply``
runs it; ``dense`` is one layer's product in the configured operand precision
(``COMPUTE_DTYPES``), with float32 accumulation and a custom vjp whose backward products
take the forms XLA's CPU backend runs on the matrix units (WORKSPACE.md, issue 18).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "ACTIVATIONS",
    "COMPUTE_DTYPES",
    "Layers",
    "dense",
    "effective_weight",
    "mlp_apply",
    "mlp_init",
]

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

    # dw = x2.T @ g2 contracts the batch axis, which is neither operand's minor axis. XLA's
    # CPU backend folds a plain transpose into the dot, and then runs a bfloat16 product in
    # float32 (the matrix units' path wants the contracted axis minor, about 3x slower) and
    # a float32 one on a slow generic kernel. So the narrower operand is transposed into a
    # real copy (the one-row concatenation forces it; its row is sliced off the result) and
    # the product takes the standard form: x2.T @ g2, or (g2.T @ x2).T where g2 is the
    # narrower (a thin last layer's). Measured on a (512, 512) fit step: the thin layers'
    # former x2.T copies took 10% of it (WORKSPACE.md, issue 18).
    def transposed_copy(a):  # a.T plus one zero row, as a real array
        return jnp.concatenate([a.T, jnp.zeros((1, a.shape[0]), a.dtype)], axis=0)

    if g2.shape[1] < x2.shape[1]:
        dw = jnp.matmul(transposed_copy(g2), x2, preferred_element_type=w_like.dtype)[:-1].T
    else:
        dw = jnp.matmul(transposed_copy(x2), g2, preferred_element_type=w_like.dtype)[:-1]
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
