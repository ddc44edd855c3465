"""What the machine can do fast, read at run time (CPU kinds differ between machines of one fleet)."""

from __future__ import annotations

from pathlib import Path


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 matmul instructions (x86 AVX512-BF16/AMX, Arm BF16); False if unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flag_lines = [line for line in text.splitlines() if line.startswith(("flags", "Features"))]
    flags = {flag for line in flag_lines for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def bf16_is_fast() -> bool:
    """bf16 compute pays off: a GPU, or a CPU with native bf16 (elsewhere bf16 GEMMs take a slow path)."""
    import torch

    return torch.cuda.is_available() or cpu_has_native_bf16()
