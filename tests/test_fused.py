"""The fast spiking paths against the plain references, forward and gradients: the fused
backend against the torch backend, and ``torch.compile`` of the torch backend against the
per-timestep reference forward (:mod:`tests.reference`).

Tolerances as SpikingJelly states them per dtype: 1e-5 in fp32, 2e-2 in bf16.
"""

from __future__ import annotations

import pytest
import torch

from policies import build_actor
from tests.reference import EQUIVALENCE_TOL as TOL
from tests.reference import ReferenceActor


def _pair(name: str, obs_dim: int = 17, act_dim: int = 6, **kwargs):
    torch.manual_seed(0)
    ref = build_actor(name, obs_dim, act_dim, backend="torch", **kwargs)
    fast = build_actor(name, obs_dim, act_dim, backend="fused", **kwargs)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize("name, kwargs", [("spikerl", {}), ("dsrl", {}),
                                          ("spikerl", {"surrogate": "atan"})],
                         ids=["spikerl", "dsrl", "spikerl-atan"])
@pytest.mark.parametrize("batch", [1, 100, 1024])
def test_fused_matches_reference_fp32(name, kwargs, batch):
    ref, fast = _pair(name, **kwargs)
    obs = torch.randn(batch, 17, generator=torch.Generator().manual_seed(batch))
    out_ref, out_fast = ref(obs), fast(obs)
    assert torch.allclose(out_fast, out_ref, atol=TOL[torch.float32], rtol=0)
    g_ref = torch.autograd.grad(out_ref.pow(2).sum(), list(ref.parameters()))
    g_fast = torch.autograd.grad(out_fast.pow(2).sum(), list(fast.parameters()))
    for (pname, _), a, b in zip(ref.named_parameters(), g_ref, g_fast):
        scale = max(a.abs().max().item(), 1.0)
        assert torch.allclose(b, a, atol=TOL[torch.float32] * scale, rtol=0), pname


@pytest.mark.parametrize("name", ["spikerl", "dsrl"])
def test_fused_matches_reference_under_bf16_autocast(name):
    ref, fast = _pair(name)
    obs = torch.randn(256, 17, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ref, out_fast = ref(obs), fast(obs)
    # Same spikes given the same bf16 synaptic input: the outputs agree to bf16 precision.
    assert torch.allclose(out_fast.float(), out_ref.float(), atol=TOL[torch.bfloat16], rtol=0)
    g_ref = torch.autograd.grad(out_ref.float().sum(), list(ref.parameters()))
    g_fast = torch.autograd.grad(out_fast.float().sum(), list(fast.parameters()))
    for a, b in zip(g_ref, g_fast):
        scale = max(a.abs().max().item(), 1.0)
        assert torch.allclose(b.float(), a.float(), atol=TOL[torch.bfloat16] * scale, rtol=0)


def test_backend_is_explicit():
    with pytest.raises(ValueError, match="spiking backend must be one of"):
        build_actor("spikerl", 3, 1, backend="cuda-graphs")


def _assert_grads_close(ref: torch.nn.Module, fast: torch.nn.Module, loss_ref: torch.Tensor,
                        loss_fast: torch.Tensor, tol: float) -> None:
    g_ref = torch.autograd.grad(loss_ref, list(ref.parameters()))
    g_fast = torch.autograd.grad(loss_fast, list(fast.parameters()))
    for (pname, _), a, b in zip(ref.named_parameters(), g_ref, g_fast):
        scale = max(a.abs().max().item(), 1.0)
        assert torch.allclose(b.float(), a.float(), atol=tol * scale, rtol=0), pname


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_matches_per_timestep_reference(dtype):
    torch.manual_seed(0)
    plain = build_actor("spikerl", 17, 6, backend="torch")
    ref = ReferenceActor(plain)
    fast = build_actor("spikerl", 17, 6, backend="torch")
    fast.load_state_dict(plain.state_dict())
    fast.compile(dynamic=False)
    obs = torch.randn(100, 17, generator=torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out_ref, out_fast = ref(obs), fast(obs)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # really compiled
    assert out_fast.dtype == out_ref.dtype
    assert torch.allclose(out_fast.float(), out_ref.float(), atol=TOL[dtype], rtol=0)
    _assert_grads_close(plain, fast, out_ref.float().pow(2).sum(),
                        out_fast.float().pow(2).sum(), TOL[dtype])
