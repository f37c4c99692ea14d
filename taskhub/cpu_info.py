"""What the CPU is and which matrix / vector extensions it offers (Linux /proc/cpuinfo); no torch import."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuInfo", "cpu_info"]

AVX512_SKINNY = {"avx512f", "avx512bw", "avx512vl", "avx512dq"}  # what taskhub's skinny linear kernel uses


@dataclass(frozen=True)
class CpuInfo:
    """The CPU model and the matrix / vector extensions the kernels can use."""

    model: str
    amx: bool  # AMX tiles for bf16 / int8 (Intel Sapphire Rapids and later)
    avx512_bf16: bool  # AVX-512 BF16 dot products
    vnni: bool  # AVX-512 or AVX VNNI int8 dot products
    avx512: bool = False  # AVX-512 F/BW/VL/DQ (taskhub's skinny linear kernel)
    flags: str = ""  # every flag, sorted (names a build of -march=native code)

    def line(self) -> str:
        found = [name for name, ok in (("AMX", self.amx), ("AVX512-BF16", self.avx512_bf16), ("VNNI", self.vnni)) if ok]
        return f"{self.model}; {', '.join(found) or 'no AMX / AVX512-BF16 / VNNI'}"


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """What this CPU is and offers; "unknown" with no extensions where /proc/cpuinfo is missing."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInfo("unknown", False, False, False)
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return CpuInfo(
        model=fields.get("model name", "unknown"),
        amx="amx_tile" in flags,
        avx512_bf16="avx512_bf16" in flags,
        vnni=bool(flags & {"avx512_vnni", "avx_vnni"}),
        avx512=AVX512_SKINNY <= flags,
        flags=" ".join(sorted(flags)),
    )
