"""A transition replay memory kept on the learner's device (GPU memory where there is one).

Observations are stored raw (PopSAN normalizes when sampling). Storage is preallocated once:
``capacity x (2 obs_dim + act_dim + 2)`` float32 values, nothing else per transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "terminateds")


@dataclass
class Batch:
    """A batch of transitions as tensors on one device."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminateds: torch.Tensor


def finite_rows(transitions: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """The transitions whose every number is finite, and how many were dropped (a NaN or Inf
    from the environment must not reach the replay memory or the observation statistics)."""
    n = len(transitions["rewards"])
    ok = np.ones(n, dtype=bool)
    for k in TRANSITION_KEYS:
        ok &= np.isfinite(np.asarray(transitions[k]).reshape(n, -1)).all(axis=1)
    if ok.all():
        return dict(transitions), 0
    return {k: np.asarray(transitions[k])[ok] for k in TRANSITION_KEYS}, int(n - ok.sum())


class TransitionReplay:
    """Ring buffer of ``(obs, action, reward, next_obs, terminated)`` with uniform sampling."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int,
                 device: torch.device | str = "cpu", seed: int | None = None) -> None:
        self.capacity, self.device = int(capacity), torch.device(device)
        shapes = {"obs": (obs_dim,), "actions": (act_dim,), "rewards": (),
                  "next_obs": (obs_dim,), "terminateds": ()}
        self._data = {k: torch.zeros((self.capacity, *s), dtype=torch.float32, device=self.device)
                      for k, s in shapes.items()}
        self._pos = 0
        self._size = 0
        self._gen = torch.Generator(device=self.device)
        if seed is not None:
            self._gen.manual_seed(seed)

    @property
    def generator(self) -> torch.Generator:
        """The random generator batches are sampled with."""
        return self._gen

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored tensors."""
        return sum(t.numel() * t.element_size() for t in self._data.values())

    def add(self, transitions: Mapping[str, np.ndarray | torch.Tensor]) -> None:
        """Appends ``n`` transitions given as arrays keyed by :data:`TRANSITION_KEYS`."""
        n = len(transitions["rewards"])
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` transitions can be kept
            transitions = {k: transitions[k][-self.capacity:] for k in TRANSITION_KEYS}
            n = self.capacity
        idx = (torch.arange(n) + self._pos) % self.capacity
        idx = idx.to(self.device)
        for k in TRANSITION_KEYS:
            src = transitions[k]
            # torch.tensor copies (arrays from Ray's object store are read-only).
            src = (src.to(torch.float32) if torch.is_tensor(src)
                   else torch.tensor(np.asarray(src), dtype=torch.float32))
            self._data[k][idx] = src.to(self.device, non_blocking=True).reshape(
                (n, *self._data[k].shape[1:]))
        self._pos = (self._pos + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def recent_obs(self, n: int) -> torch.Tensor:
        """The observations of the newest ``min(n, len(self))`` transitions (raw)."""
        n = min(n, self._size)
        idx = (torch.arange(self._pos - n, self._pos) % self.capacity).to(self.device)
        return self._data["obs"][idx]

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions (on the CPU) and the write position, for a checkpoint:
        ``len(self) x (2 obs_dim + act_dim + 2) x 4`` bytes."""
        return {"data": {k: v[:self._size].cpu() for k, v in self._data.items()},
                "pos": self._pos, "size": self._size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`'s contents (the capacity must hold them)."""
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"the saved replay holds {size} transitions, more than this "
                             f"replay's capacity {self.capacity}")
        for k, v in state["data"].items():
            self._data[k][:size] = v.to(self.device)
        self._pos, self._size = int(state["pos"]) % self.capacity, size

    def sample(self, batch_size: int) -> Batch:
        """Uniformly samples ``batch_size`` transitions (with replacement)."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay memory")
        idx = torch.randint(0, self._size, (batch_size,), device=self.device, generator=self._gen)
        return Batch(**{k: v[idx] for k, v in self._data.items()})
