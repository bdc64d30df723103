"""What this machine's PyTorch can do fast: compiled networks and bfloat16 (no Ray).

:class:`~spikerl_ray.td3.TD3Config` compiles the networks with ``torch.compile`` by default, in
fp32; bf16 autocast is opt-in (``precision="bf16"``, or ``"auto"``: bf16 where the device
computes it natively), since its learning is not yet shown equal to fp32's
(docs/performance.md). These checks decide where each can run.
"""

from __future__ import annotations

import torch

# Learner precisions: "auto" is bf16 where :func:`bf16_supported`, else fp32.
PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = ("auto", *PRECISIONS)


def compile_unavailable(device_type: str) -> str | None:
    """Why ``torch.compile`` cannot work for ``device_type`` here, or None if it can: Dynamo
    must support this platform and Python; inductor needs a C++ compiler for CPU code and
    Triton for CUDA code."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile does not support this platform or Python version"
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as error:  # inductor raises its own error types; any means "cannot"
        return f"no C++ compiler for inductor's CPU code ({type(error).__name__})"
    return None


def bf16_supported(device_type: str) -> bool:
    """Whether ``device_type`` computes bfloat16 natively: CUDA devices of compute capability
    8.0 or newer; CPUs with AVX512-BF16 or AMX (oneDNN's check). Elsewhere bf16 autocast is
    emulated and slower than fp32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device_type: str) -> str:
    """``precision`` ("auto", "fp32" or "bf16") as the one to train with on ``device_type``."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if bf16_supported(device_type) else "fp32"
