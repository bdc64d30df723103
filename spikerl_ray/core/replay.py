"""A transition replay memory kept on the learner's device (GPU memory where there is one).

Observations are stored raw (PopSAN normalizes when sampling). Storage is preallocated once:
``capacity x (2 obs_dim + act_dim + 2)`` float32 values, nothing else per transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

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

    def sample(self, batch_size: int) -> Batch:
        """Uniformly samples ``batch_size`` transitions (with replacement)."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay memory")
        idx = torch.randint(0, self._size, (batch_size,), device=self.device, generator=self._gen)
        return Batch(**{k: v[idx] for k, v in self._data.items()})
