"""Observation statistics for RLlib's own PPO learner.

RLlib's PPO learner does not update a module-held observation normalizer (Ray 2.60;
docs/algorithms.md), so our PPO module keeps ours (:class:`policies.RunningNormalizer`, in the
module's weights: synchronized to the env runners with them and saved in checkpoints) and
:class:`FoldObservations`, the first piece of the learner connector, folds each fresh
episode's observations in exactly once, before the updates that learn from it, as the replay
learner of TD3 and SAC does with each fragment (:mod:`spikerl_ray.common.replay_learner`;
PopSAN's scheme, docs/methods.md: raw observations, one set of statistics shared by acting and
learning). Data-parallel learners each see a share of the episodes and all-reduce the sums so
that all fold in the same statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID

from policies import RunningNormalizer
from policies.normalizer import moments


def acted_observations(episodes: list[Any]) -> np.ndarray | None:
    """The observations the episodes acted on, each once (an episode chunk's last
    observation is the next chunk's first), stacked; None if there are none."""
    parts = [np.asarray(ep.get_observations(slice(0, len(ep))), dtype=np.float64)
             for ep in episodes if len(ep) > 0]
    return np.concatenate(parts) if parts else None


def normalizer_of(module: Any) -> RunningNormalizer:
    """The normalizer of our PPO module (unwrapped from DDP if wrapped)."""
    if hasattr(module, "unwrapped"):
        module = module.unwrapped()
    return module.obs_normalizer


class FoldObservations(ConnectorV2):
    """Learner connector piece: folds the observations of the episodes a learner is about to
    train on into its module's normalizer (all-reduced over data-parallel learners). Changes
    nothing in the batch."""

    def __call__(self, *, rl_module: Any, batch: dict, episodes: list, **kwargs: Any) -> Any:
        normalizer = normalizer_of(rl_module[DEFAULT_MODULE_ID])
        obs = acted_observations(episodes)
        dim = normalizer.mean.shape[0]
        sums = (moments(torch.as_tensor(obs)) if obs is not None
                else torch.zeros(3, dim, dtype=torch.float64))
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            sums = sums.to(normalizer.mean.device)
            torch.distributed.all_reduce(sums)
        normalizer.update_from_moments(sums)
        return batch
