"""The dtype a CPU engine computes fastest in, for configs that leave `dtype` open.

vLLM's CPU kernels compute bfloat16 natively only where the processor has bf16
instructions (AVX-512 BF16 or AMX on x86, BF16 on Arm). Elsewhere, e.g. an AVX2-only
AMD EPYC, every bf16 matmul is converted through float32: there the tiny model streamed
796 tok/s in bfloat16 against 2,504 in float32 (c=64, same build, same machine).
"""

from __future__ import annotations

from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags /proc/cpuinfo lists ("flags" on x86, "Features" on Arm)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def native_cpu_dtype(cpuinfo: Path = CPUINFO) -> str:
    """bfloat16 where this CPU computes it natively, float32 elsewhere."""
    try:
        flags = cpu_flags(cpuinfo.read_text())
    except OSError:
        return "float32"
    return "bfloat16" if flags & NATIVE_BF16_FLAGS else "float32"
