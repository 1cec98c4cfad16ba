"""Which bfloat16 dot forms reach the CPU's matrix units, and what one ensemble training
step gains (issue 18). `python docs/probes/bf16_dots.py` (pin it: `taskset -c 0 ...`).

Part 1 times the three products of a dense layer (forward x @ w, dx = g @ w.T,
dw = x.T @ g) for K = 5 models, batch 500, 256 x 256, in float32 and in bfloat16 with
float32 accumulation, written several ways; part 2 times the gradient of one fit step
(`dynamics.mlp_apply`, both precisions) at the cpu preset's and the paper's widths.
Medians of 20-30 calls; GFLOP/s counts 2 per multiply-add.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from mbmpo_jax import dynamics, ensemble

BF, F32 = jnp.bfloat16, jnp.float32


def median_ms(fn, *args, n=20):
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def dot_forms():
    k, b, i, j = 5, 500, 256, 256
    key = jax.random.key(0)
    x = jax.random.normal(key, (k, b, i))
    w = jax.random.normal(key, (k, i, j))
    g = jax.random.normal(key, (k, b, j))
    relu = jax.nn.relu
    bdot = lambda spec, a, c: jnp.einsum(spec, a, c, preferred_element_type=F32)
    forms = {
        "forward f32": (lambda x, w: jnp.einsum("kbi,kij->kbj", x, w), x, w),
        "forward bf16 (cast inside)": (
            lambda x, w: bdot("kbi,kij->kbj", x.astype(BF), w.astype(BF)),
            x,
            w,
        ),
        "forward bf16 (operands already bf16)": (
            lambda x, w: bdot("kbi,kij->kbj", x, w),
            x.astype(BF),
            w.astype(BF),
        ),
        "dx f32": (lambda g, w: jnp.einsum("kbj,kij->kbi", g, w), g, w),
        "dx bf16, one dot_general": (
            lambda g, w: bdot("kbj,kij->kbi", g.astype(BF), w.astype(BF)),
            g,
            w,
        ),
        "dx bf16, g @ swapaxes(w)": (
            lambda g, w: jnp.matmul(
                g.astype(BF), jnp.swapaxes(w.astype(BF), 1, 2), preferred_element_type=F32
            ),
            g,
            w,
        ),
        "dw f32": (lambda x, g: jnp.einsum("kbi,kbj->kij", relu(x), g), x, g),
        "dw bf16": (
            lambda x, g: bdot("kbi,kbj->kij", relu(x).astype(BF), g.astype(BF)),
            x,
            g,
        ),
        "dw bf16, x.T given from outside": (
            lambda xt, g: bdot("kib,kbj->kij", xt, g.astype(BF)),
            jnp.swapaxes(x, 1, 2).astype(BF),
            g,
        ),
        "dw bf16, transpose + optimization_barrier": (
            lambda x, g: bdot(
                "kib,kbj->kij",
                jax.lax.optimization_barrier(jnp.swapaxes(relu(x).astype(BF), 1, 2)),
                g.astype(BF),
            ),
            x,
            g,
        ),
        "dw bf16, transpose + one-row concat": (
            lambda x, g: bdot(
                "kib,kbj->kij",
                jnp.concatenate(
                    [jnp.swapaxes(relu(x).astype(BF), 1, 2), jnp.zeros((k, 1, b), BF)], 1
                ),
                g.astype(BF),
            )[:, :-1],
            x,
            g,
        ),
    }
    flops = 2 * k * b * i * j
    print(f"part 1: dense-layer products, K={k} B={b} {i}x{j}")
    for name, (fn, *args) in forms.items():
        ms = median_ms(fn, *args)
        print(f"  {name:45s} {ms:7.3f} ms {flops / ms / 1e6:7.1f} GFLOP/s")


def fit_step_gradient():
    k, b, obs, act = 5, 500, 27, 8
    key = jax.random.key(0)
    x = jax.random.normal(key, (k, b, obs + act))
    y = jax.random.normal(key, (k, b, obs))
    print("part 2: gradient of one fit step (vmap over 5 models, batch 500, Ant dims)")
    for hidden in ((256, 256), (512, 512)):
        params = ensemble.init(
            lambda kk, hidden=hidden: dynamics.mlp_init(kk, (obs + act, *hidden, obs)), key, k
        )
        times = {}
        for dtype in ("float32", "bfloat16"):

            def loss(p, x, y, dtype=dtype):
                return ((dynamics.mlp_apply(p, x, "relu", dtype) - y) ** 2).mean()

            times[dtype] = median_ms(jax.vmap(jax.grad(loss)), params, x, y, n=30)
        print(
            f"  {hidden}: float32 {times['float32']:.2f} ms, bfloat16 {times['bfloat16']:.2f} ms"
            f" -> {times['float32'] / times['bfloat16']:.2f}x"
        )


if __name__ == "__main__":
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
    dot_forms()
    fit_step_gradient()
