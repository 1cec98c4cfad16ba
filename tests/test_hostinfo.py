"""The host-CPU probe behind the run's bfloat16 note: hand-written /proc/cpuinfo texts and
the measured matmul speed-up."""

from __future__ import annotations

import math

from experiments.run import _devices_note, _precision_note
from mbmpo_jax import hostinfo

# Abridged from real machines: an AVX2-only AMD EPYC (Zen 3), an Intel Sapphire Rapids with
# AMX, a Zen 4, a Zen 5 (the eighteenth session's, a virtual machine's: bfloat16 measured at
# 1.85x float32's matmul rate) and an Intel Xeon (a virtual machine's, bfloat16 measured at
# 0.58x), the last three with AVX512-BF16 but no AMX.
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2 sha_ni vaes
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2 sha_ni vaes
"""
SPR = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni
"""
ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model name\t: AMD EPYC
flags\t\t: fpu sse avx2 avx512f avx512bw avx512vl avx_vnni avx512_bf16 avx512_vnni hypervisor
"""
XEON_NOAMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 avx512vl
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm
"""


def test_flags_and_units_by_hand():
    assert "avx2" in hostinfo.cpu_flags(ZEN3) and "avx512_bf16" not in hostinfo.cpu_flags(ZEN3)
    assert hostinfo.bf16_units(ZEN3) is False
    assert hostinfo.bf16_units(SPR) is True
    assert hostinfo.bf16_units(ZEN4) is False  # AVX512-BF16 without AMX: not judged by flags
    assert hostinfo.bf16_units(ZEN5) is False and hostinfo.bf16_units(XEON_NOAMX) is False
    # An ARM "Features" line is read, but not judged (its bf16 was not measured here).
    assert "bf16" in hostinfo.cpu_flags(ARM) and hostinfo.bf16_units(ARM) is None
    assert hostinfo.cpu_flags("processor\t: 0\n") is None and hostinfo.bf16_units("") is None
    assert hostinfo.cpu_model(SPR) == "Intel(R) Xeon(R) Platinum 8480C"
    assert isinstance(hostinfo.cpu_model("no such field"), str)


def test_the_run_notes_bfloat16_only_where_it_measured_slower():
    note = _precision_note("cpu", "bfloat16", ZEN3, speedup=0.71)
    assert note.startswith("note: on this CPU (AMD EPYC, no amx_bf16) a bfloat16 matmul ran at")
    assert "0.71x float32's speed" in note
    assert "\n" not in note
    assert "--config.ensemble.compute_dtype=float32" in note
    # The same flags, two outcomes: the measurement decides, not avx512_bf16.
    assert _precision_note("cpu", "bfloat16", ZEN5, speedup=1.85) == ""
    assert "0.58x" in _precision_note("cpu", "bfloat16", XEON_NOAMX, speedup=0.58)
    assert _precision_note("cpu", "bfloat16", ZEN3, speedup=0.95) == ""  # within the margin
    assert _precision_note("cpu", "bfloat16", SPR, speedup=0.1) == ""  # AMX: not checked
    assert _precision_note("cpu", "float32", ZEN3, speedup=0.1) == ""
    assert _precision_note("gpu", "bfloat16", ZEN3, speedup=0.1) == ""
    assert _precision_note("cpu", "bfloat16", ARM, speedup=0.5).startswith("note: on this CPU")


def test_the_run_measures_when_no_speedup_is_given(monkeypatch):
    calls = []

    def fake_speedup():
        calls.append(1)
        return 0.5

    monkeypatch.setattr(hostinfo, "bf16_matmul_speedup", fake_speedup)
    assert "0.50x" in _precision_note("cpu", "bfloat16", ZEN4)
    assert _precision_note("cpu", "bfloat16", SPR) == ""
    assert _precision_note("cpu", "float32", ZEN4) == ""
    assert len(calls) == 1  # only the non-AMX bfloat16 case measured


def test_bf16_matmul_speedup_measures_a_positive_ratio():
    r = hostinfo.bf16_matmul_speedup(n=64, repeats=3)
    assert math.isfinite(r) and r > 0


def test_devices_note_warns_only_for_several_cpu_devices():
    # Forced host devices are not how the committed results were made: say so there only.
    assert "split over 2 CPU devices" in _devices_note("cpu", 2)
    assert _devices_note("cpu", 1) == ""
    assert _devices_note("gpu", 8) == ""
    assert "(2 processes)" in _devices_note("cpu", 2, processes=2)
    assert "forced host devices" in _devices_note("cpu", 2)
