"""Mixed precision: the autocast dtype that fits this machine (--precision auto), and autocast.

bf16 autocast pays only where the hardware computes in bfloat16. On a CPU with AVX-512-BF16
or AMX, oneDNN runs bf16 convolutions natively (1.6-1.8x fp32 in training); on an AVX2-only
CPU it emulates them, and a training iteration took 37x as long as in fp32 (1.8 s against
67 s, batch 64, 2-core AMD EPYC; benchmarks/README.md). On CUDA, bf16 needs compute
capability 8.0 (Ampere) or newer.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from utils import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CUDA_BF16_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Hardware:
    """What decides the precision: the device, and whether it computes bf16 natively."""
    device_type: str                                # "cpu" or "cuda"
    cpu_capability: str = ""                        # ATen's dispatch level: AVX2, AVX512, ...
    cpu_native_bf16: bool = False                   # oneDNN bf16 kernels on AVX-512-BF16 / AMX
    cuda_capability: tuple[int, int] | None = None  # (major, minor)


def cpu_runs_bf16_natively() -> bool:
    """oneDNN's own bf16 check (it follows ONEDNN_MAX_CPU_ISA) and the CPU's bf16 instructions:
    the oneDNN check alone also says yes on AVX-512 CPUs that only emulate bfloat16."""
    has_instructions = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return bool(has_instructions and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def hardware_of(device: torch.device) -> Hardware:
    if device.type == "cuda":
        return Hardware("cuda", cuda_capability=torch.cuda.get_device_capability(device))
    return Hardware("cpu", torch.backends.cpu.get_cpu_capability(), cpu_runs_bf16_natively())


def choose_precision(requested: str, hardware: Hardware) -> tuple[str, str]:
    """The precision to train in and the one line that says why (a 'note:' where the choice
    will be slow). Refuses bf16 on a GPU that has none."""
    if hardware.device_type == "cuda":
        major, minor = hardware.cuda_capability
        native = hardware.cuda_capability >= CUDA_BF16_CAPABILITY
        where = f"this GPU (compute capability {major}.{minor})"
    else:
        native = hardware.cpu_native_bf16
        where = f"this CPU ({hardware.cpu_capability})"
    if requested == "auto":
        chosen = "bf16" if native else "fp32"
        return chosen, f"precision: {chosen} (--precision auto: {where} " + (
            "computes bfloat16 natively)" if native else "has no native bfloat16)")
    if requested == "bf16" and not native:
        if hardware.device_type == "cuda":
            raise UserError(f"{where} has no bfloat16 support; use --precision fp16 or fp32")
        return "bf16", (f"note: --precision bf16 on {where} is emulated and much slower than "
                        f"fp32 (37x measured on an AVX2 CPU); --precision auto picks fp32 here")
    return requested, f"precision: {requested}"


def autocast(precision: str, device: torch.device, cache: bool = True):
    """Mixed precision for forward passes and losses; fp32 runs as written. `cache`: keep
    each weight's cast for the rest of the region (off inside a CUDA graph's recording)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision], cache_enabled=cache)
