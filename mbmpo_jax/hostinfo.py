"""What the host CPU can do for the ensemble's bfloat16 matmuls.

`ensemble.compute_dtype = "bfloat16"` (the cpu preset's) pays on CPUs with bfloat16 matrix
units, Intel's AMX (`amx_bf16`): there XLA's CPU backend runs the models' wide products 2-4x
faster than in float32. Without them they run slower than in float32
(`docs/probes/bf16_host.py`; WORKSPACE.md, issue 18, "Machines without bfloat16 units"):
on an AVX2-only AMD EPYC a plain matmul at 0.71x float32's rate, the fit 1.17-1.27x and
imagination 1.03-1.18x slower; on an Intel Xeon with AVX512-BF16 but no AMX (the vector
dot-product instructions only) a matmul at 0.58x, the fit 1.19-1.26x and imagination
1.02-1.40x slower. So AVX512-BF16 alone does not count.
The run prints a note then; it does not change the precision by itself, so that a
configuration computes the same numbers on every machine.
"""

from __future__ import annotations

import platform

__all__ = ["BF16_FLAGS", "bf16_units", "cpu_flags", "cpu_model"]

# /proc/cpuinfo flags of the units on which bfloat16 products were measured faster than
# float32 ones (not `avx512_bf16`: measured slower, above).
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

    Only x86's `flags` line is judged (an ARM `Features` line's `bf16` is not measured here).

    Transforms: host-side Python (not for jit/vmap/grad).
    """
    flags = cpu_flags(text)
    if flags is None or "fpu" not in flags:  # x86 lists its x87 unit; ARM does not
        return None
    return any(f in flags for f in BF16_FLAGS)
