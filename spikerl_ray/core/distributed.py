"""Gradient allreduce compression for data-parallel learners (no Ray needed).

torch's own ``bf16_compress_hook`` requires NCCL on CUDA; this hook does the same on any
backend that reduces bfloat16 tensors (NCCL, and Gloo on CPUs): cast the gradient bucket to
bfloat16, pre-divide by the world size, all-reduce, and copy back into the fp32 bucket.
"""

# No `from __future__ import annotations` here: DDP checks the hook's annotations at runtime.
import torch
import torch.distributed as dist

# torch.distributed backends of data-parallel learners; "auto": NCCL with GPUs, Gloo without.
DISTRIBUTED_BACKENDS = ("auto", "gloo", "nccl", "mpi")
# How L data-parallel learners share the optimizer steps of an env step: "same_steps", as many
# steps as one learner, each averaging L batches; "same_samples", the SpikeRL paper's regime,
# 1/L of the steps each, so the learners sample as many transitions as one learner would.
DATA_PARALLEL_REGIMES = ("same_steps", "same_samples")


def bf16_allreduce_hook(state: object, bucket: dist.GradBucket
                        ) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook averaging gradients in bfloat16 (half the bytes of fp32)."""
    buffer = bucket.buffer()
    group = state if isinstance(state, dist.ProcessGroup) else None
    compressed = buffer.to(torch.bfloat16).div_(dist.get_world_size(group))
    future = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def decompress(fut: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
        buffer.copy_(fut.value()[0])
        return buffer

    return future.then(decompress)
