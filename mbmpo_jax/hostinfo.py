"""What the host CPU can do for the ensemble's bfloat16 matmuls.

`ensemble.compute_dtype = "bfloat16"` (the cpu preset's) pays on CPUs with bfloat16 matrix
units, Intel's AMX (`amx_bf16`): there XLA's CPU backend runs the models' wide products 2-4x
faster than in float32. Elsewhere the flags do not decide it (`docs/probes/bf16_host.py`;
WORKSPACE.md, issue 18, "Machines without bfloat16 units"): on an AVX2-only AMD EPYC a
plain matmul ran at 0.71x float32's rate (the fit 1.17-1.27x slower); on an Intel Xeon
virtual machine with AVX512-BF16 but no AMX at 0.58x (the fit 1.19-1.26x slower); on an
AMD EPYC (Zen 5, CPU family 26) with the same AVX512-BF16 and no AMX at 1.85x (the fit
1.2-1.5x faster). So where there is no AMX the run measures (`bf16_matmul_speedup`, a
fraction of a second) and prints a note when bfloat16 is the slower; it does not change the
precision by itself, so that a configuration computes the same numbers on every machine.
"""

from __future__ import annotations

import platform
import statistics
import time

__all__ = ["BF16_FLAGS", "bf16_matmul_speedup", "bf16_units", "cpu_flags", "cpu_model"]

# /proc/cpuinfo flags of the units on which bfloat16 products were measured faster than
# float32 ones on every machine seen (not `avx512_bf16`: slower on one, faster on another).
BF16_FLAGS = ("amx_bf16",)


def _cpuinfo(text: str | None) -> str | None:
    if text is not None:
        return text
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def cpu_flags(text: str | None = None) -> frozenset[str] | None:
    """The first processor's flags in `/proc/cpuinfo` (or `text`); None where unknown.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    info = _cpuinfo(text)
    if info is None:
        return None
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_model(text: str | None = None) -> str:
    """The CPU's model name (`/proc/cpuinfo`'s "model name"), else `platform.processor()`.

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    info = _cpuinfo(text)
    for line in (info or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def bf16_units(text: str | None = None) -> bool | None:
    """True if an x86 CPU has bfloat16 matrix units (AMX), False if not, None where unknown.

    False does not mean bfloat16 is slower there (see the module's docstring):
    `bf16_matmul_speedup` measures that.

    Only x86's `flags` line is judged (an ARM `Features` line's `bf16` is not measured here).

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    flags = cpu_flags(text)
    if flags is None or "fpu" not in flags:  # x86 lists its x87 unit; ARM does not
        return None
    return any(f in flags for f in BF16_FLAGS)


def bf16_matmul_speedup(n: int = 1024, repeats: int = 5) -> float:
    """Measured speed of a bfloat16 matmul relative to float32 on the default device.

    An ``[n, n] @ [n, n]`` product with bfloat16 operands accumulated in float32 (the
    product `dynamics.dense` uses for the models' wide layers) against the same in
    float32, each compiled first, the two alternating ``repeats`` times so that load from
    other jobs falls on both; returns the median of the per-repeat ratios
    float32 time / bfloat16 time (above 1: bfloat16 is faster). About 0.3 s at n = 1024
    on one core.

    Transforms: host-side Python around two jitted calls (not for jit/vmap/grad).
    """
    import jax
    import jax.numpy as jnp

    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be >= 1, got n={n}, repeats={repeats}")
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    operands = {
        "float32": (a, b),
        "bfloat16": (a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)),
    }
    for x, y in operands.values():
        matmul(x, y).block_until_ready()  # compile
    ratios = []
    for _ in range(repeats):
        t = {}
        for name, (x, y) in operands.items():
            start = time.perf_counter()
            matmul(x, y).block_until_ready()
            t[name] = time.perf_counter() - start
        ratios.append(t["float32"] / max(t["bfloat16"], 1e-9))
    return statistics.median(ratios)
