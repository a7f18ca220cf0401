"""Which CPU a measurement ran on, for benchmark records and logs.

Speed figures are only comparable on the same machine, so every benchmark names its CPU. On Linux
``platform.processor()`` is empty and ``platform.machine()`` only says ``x86_64``; the model name and the
instruction-set flags that int8 and bf16 speed depend on come from ``/proc/cpuinfo``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")
_SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16")


def cpu_name(cpuinfo: Path = _CPUINFO) -> str:
    """The CPU's model name ("AMD EPYC 7B13"), else the processor or architecture Python reports."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: Path = _CPUINFO) -> list[str]:
    """The CPU features int8 and bf16 speed depends on (AVX2, AVX-512, VNNI, AMX, AVX-512 BF16), sorted."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return []
    return sorted(f for f in flags if "vnni" in f or f.startswith("amx") or f in _SPEED_FLAGS)


def describe_cpu() -> str:
    """One line for a benchmark table's header or record: model name, cores, speed-relevant flags."""
    flags = ", ".join(cpu_flags()) or "no AVX2/AVX-512/VNNI/AMX"
    return f"{cpu_name()}, {os.cpu_count()} cores ({flags})"
