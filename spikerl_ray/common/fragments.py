"""Fragments of transitions from env runners to learners, for every algorithm that samples
with :class:`~spikerl_ray.common.env_runner.TransitionEnvRunner` (TD3 and SAC).

Each iteration asks every env runner for one fragment; a remote runner puts its transitions in
the object store and hands back a reference, so that they travel from the runner to the
learners and never through the driver (docs/architecture.md, data flow).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import ray
from ray.rllib.algorithms.algorithm import Algorithm

from spikerl_ray.core.replay import TRANSITION_KEYS

logger = logging.getLogger(__name__)

# One env runner's fragment as the driver sees it: its transitions (an ObjectRef to them
# when the runner is remote, so that they travel from the runner to the learners through the
# object store and never through the driver), their number and the runner's metrics.
Fragment = tuple[Any, int, dict]


def route_fragments(fragments: list[Fragment], num_shards: int) -> list[tuple[list, int, int]]:
    """Which transitions each learner stores, as ``(parts, index, count)``: the learner keeps
    part ``index`` of ``count`` of the concatenated ``parts``. Runner ``i`` feeds learner
    ``i % L`` (each learner has its own share of the runners, as SpikeRL's ranks have their
    own envs); with fewer fragments than learners, every learner gets all of them and keeps
    an even part."""
    parts = [transitions for transitions, rows, _ in fragments if rows]
    if len(parts) >= num_shards:
        return [(parts[i::num_shards], 0, 1) for i in range(num_shards)]
    return [(parts, i, num_shards) for i in range(num_shards)]


def gather(parts: list, index: int = 0, count: int = 1) -> dict[str, np.ndarray] | None:
    """A learner's transitions from its route (:func:`route_fragments`), fetched from the
    object store where ``parts`` holds ObjectRefs; None if there are none."""
    fragments = []
    for part in parts:
        if isinstance(part, ray.ObjectRef):
            try:
                part = ray.get(part)
            except ray.exceptions.ObjectLostError:  # its runner died after replying
                logger.warning("a fragment of an env runner that failed was lost on its way "
                               "to the learner; its steps are counted but not stored")
                continue
        fragments.append(part)
    if not fragments:
        return None
    # Concatenating also copies the object store's read-only arrays.
    merged = {k: np.concatenate([f[k] for f in fragments]) for k in TRANSITION_KEYS}
    return merged if count == 1 else {k: np.array_split(v, count)[index]
                                      for k, v in merged.items()}


def sampler(random_actions: bool, by_reference: bool) -> Callable[[Any], Fragment]:
    """What an env runner runs for one fragment (:data:`Fragment`); a remote runner
    (``by_reference``) puts its transitions in the object store and returns the reference."""
    def sample(runner: Any) -> Fragment:
        transitions = runner.sample_transitions(random_actions=random_actions)
        return ((ray.put(transitions) if by_reference else transitions),
                len(transitions["rewards"]), runner.get_metrics())

    return sample


def sample_fragments(algo: Algorithm, random_actions: bool, by_reference: bool
                     ) -> list[Fragment]:
    """One fragment from every env runner of ``algo`` (remote ones, else the local one),
    remote ones by reference if ``by_reference``. A remote runner that failed is left out
    (RLlib marks it unhealthy and restores it before the next step), so only fragments that
    arrived are stored and counted."""
    if algo.env_runner_group.num_remote_env_runners() > 0:
        return algo.env_runner_group.foreach_env_runner(
            sampler(random_actions, by_reference=by_reference), local_env_runner=False)
    return [sampler(random_actions, by_reference=False)(algo.env_runner)]


