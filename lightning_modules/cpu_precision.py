"""A warning for bf16 on a CPU that has no bf16 instructions.

Without AVX-512 BF16 or AMX, PyTorch has no fast bf16 matrix kernel on the CPU (neither MKL
nor oneDNN takes bf16 there), so bf16 matrix products fall back to a generic loop. Measured
on an AVX2-only AMD EPYC (Zen 1, 2 threads): a bf16 GEMM at 8 GFLOP/s against 66 in fp32,
and CSWin-UNet's training step under bf16 autocast 16× slower than in fp32. The user asked
for bf16, so the run goes on; the warning says why it is slow and what to pass instead.

    warn_if_cpu_lacks_bf16(trainer)     # from ReproCLI before fit / validate / test
"""
from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities import rank_zero_warn

#: Lightning's names after its own normalisation ("bf16" becomes "bf16-mixed").
BF16_PRECISIONS = ("bf16-mixed", "bf16-true")


def cpu_has_native_bf16() -> bool:
    """True where the CPU has AVX-512 BF16 or AMX tiles, the instructions PyTorch's fast bf16 kernels need."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def warn_if_cpu_lacks_bf16(trainer: L.Trainer) -> bool:
    """Warn (rank 0) when ``trainer`` runs bf16 on a CPU without bf16 instructions; returns whether it warned."""
    if str(trainer.precision) not in BF16_PRECISIONS or not isinstance(trainer.accelerator, CPUAccelerator):
        return False
    if cpu_has_native_bf16():
        return False
    rank_zero_warn(
        f"--trainer.precision {trainer.precision} on a CPU without AVX-512 BF16 or AMX "
        f"({torch.backends.cpu.get_cpu_capability()}): PyTorch has no fast bf16 matrix kernel here, so "
        "the step runs many times slower than in float32 (16x for CSWin-UNet on an AVX2 CPU). "
        "Use --trainer.precision 32-true on this machine.",
        category=UserWarning,
    )
    return True
