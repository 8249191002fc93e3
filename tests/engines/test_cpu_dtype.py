"""Which dtype a CPU engine gets when its config names none: bf16 only where the CPU computes it."""

from __future__ import annotations

import pytest

from serve_app.engines.cpu_dtype import cpu_flags, native_cpu_dtype

ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma bmi2\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: avx2 avx512f amx_tile amx_bf16 amx_int8\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd atomics\n"


def test_flags_are_read_from_x86_and_arm_listings():
    assert {"avx2", "bmi2"} <= cpu_flags(ZEN3)
    assert {"sve", "bf16"} <= cpu_flags(GRAVITON3)


@pytest.mark.parametrize(("cpuinfo", "expected"), [
    (ZEN3, "float32"), (ZEN4, "bfloat16"), (SAPPHIRE_RAPIDS, "bfloat16"),
    (GRAVITON3, "bfloat16"), (GRAVITON2, "float32"),
])
def test_bf16_only_where_the_cpu_has_bf16_instructions(tmp_path, cpuinfo, expected):
    listing = tmp_path / "cpuinfo"
    listing.write_text(cpuinfo)
    assert native_cpu_dtype(listing) == expected


def test_an_unreadable_listing_means_float32(tmp_path):
    assert native_cpu_dtype(tmp_path / "missing") == "float32"
