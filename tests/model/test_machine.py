"""vknet_model/machine.py: benchmark records name the CPU and its speed-relevant features."""

from __future__ import annotations

import platform
from pathlib import Path

from vknet_model.machine import cpu_flags, cpu_name, describe_cpu

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile sha_ni

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile sha_ni
"""


def test_the_model_name_and_the_int8_bf16_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert cpu_name(info) == "AMD EPYC 7B13"
    assert cpu_flags(info) == ["amx_tile", "avx2", "avx512_bf16", "avx512_vnni", "avx512f"]


def test_without_cpuinfo_the_architecture_stands_in(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    assert cpu_name(missing) == (platform.processor() or platform.machine())
    assert cpu_flags(missing) == []


def test_the_description_line_names_cores_and_flags_or_their_absence() -> None:
    line = describe_cpu()
    assert "cores" in line and line.startswith(cpu_name())
    assert (", ".join(cpu_flags()) or "no AVX2/AVX-512/VNNI/AMX") in line
