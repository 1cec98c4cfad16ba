"""The host-CPU probe behind the run's bfloat16 note, on hand-written /proc/cpuinfo texts."""

from __future__ import annotations

from experiments.run import _precision_note
from mbmpo_jax import hostinfo

# Abridged from real machines: an AVX2-only AMD EPYC (Zen 3), an Intel Sapphire Rapids with
# AMX, a Zen 4 and an Intel Xeon (a virtual machine's, where bfloat16 measured slower than
# float32) with AVX512-BF16 but no AMX.
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
    assert hostinfo.bf16_units(ZEN4) is False  # AVX512-BF16 without AMX: measured slower
    assert hostinfo.bf16_units(XEON_NOAMX) is False  # the machine it was measured on
    # An ARM "Features" line is read, but not judged (its bf16 was not measured here).
    assert "bf16" in hostinfo.cpu_flags(ARM) and hostinfo.bf16_units(ARM) is None
    assert hostinfo.cpu_flags("processor\t: 0\n") is None and hostinfo.bf16_units("") is None
    assert hostinfo.cpu_model(SPR) == "Intel(R) Xeon(R) Platinum 8480C"
    assert isinstance(hostinfo.cpu_model("no such field"), str)


def test_the_run_notes_bfloat16_only_where_it_does_not_pay():
    note = _precision_note("cpu", "bfloat16", ZEN3)
    assert note.startswith("note: this CPU (AMD EPYC) has no bfloat16 matrix units")
    assert "\n" not in note
    assert "--config.ensemble.compute_dtype=float32" in note
    assert _precision_note("cpu", "bfloat16", SPR) == ""
    assert _precision_note("cpu", "bfloat16", ZEN4).startswith("note: this CPU (AMD EPYC 9654")
    assert _precision_note("cpu", "float32", ZEN3) == ""
    assert _precision_note("gpu", "bfloat16", ZEN3) == ""
    assert _precision_note("cpu", "bfloat16", "") == ""  # unknown: say nothing
    assert _precision_note("cpu", "bfloat16", ARM) == ""
