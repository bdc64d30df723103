"""Host synchronizations of device code, counted on any device (the CPU included).

An op that reads a value or a data-dependent shape back to the host makes the host wait for
the GPU, and makes the code impossible to capture as a CUDA graph (``cudaErrorStreamCapture
Unsupported``). Counting these ops where they are dispatched finds them on a CPU-only machine.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from torch.utils._python_dispatch import TorchDispatchMode

# ATen ops that read back from the device: ``_local_scalar_dense`` is ``.item()``, ``bool()``,
# ``float()`` of a tensor; the others have outputs whose shape depends on the values.
HOST_SYNC_OPS = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "equal",
                           "is_nonzero", "_unique2", "unique_consecutive", "unique_dim"})


class _CountHostSyncs(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        name = func.overloadpacket.__name__
        if name in HOST_SYNC_OPS:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def host_syncs(fn: Callable[[], Any]) -> dict[str, int]:
    """Runs ``fn()`` (eager code: not under ``torch.compile``) and returns how often each op of
    :data:`HOST_SYNC_OPS` ran, by name; empty when nothing in it syncs."""
    with _CountHostSyncs() as mode:
        fn()
    return dict(mode.ops)
