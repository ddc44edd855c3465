"""What the machine can do fast, read at run time (CPU kinds differ between machines of one fleet)."""

from __future__ import annotations

from pathlib import Path

SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16")  # what timings depend on


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``); empty if unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    flag_lines = [line for line in text.splitlines() if line.startswith(("flags", "Features"))]
    return {flag for line in flag_lines for flag in line.split()[1:]}


def speed_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The flags to record beside a CPU timing (bf16 matmuls are native only with avx512_bf16 / amx)."""
    return sorted(cpu_flags(cpuinfo) & set(SPEED_FLAGS))


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 matmul instructions (x86 AVX512-BF16/AMX, Arm BF16); False if unknown."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16", "bf16"})


def bf16_is_fast() -> bool:
    """bf16 compute pays off: a GPU, or a CPU with native bf16 (elsewhere bf16 GEMMs take a slow path)."""
    import torch

    return torch.cuda.is_available() or cpu_has_native_bf16()
