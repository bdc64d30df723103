"""Runs across nodes: a real five-raylet cluster built with ray.cluster_utils.Cluster, learners
and env runners pinned to nodes with custom resources (tests/multinode_driver.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seen() -> dict[str, Any]:
    """What the driver saw; one cluster start for every test of this module."""
    driver = Path(__file__).with_name("multinode_driver.py")
    proc = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_nodes_carry_the_pinning_resources(seen):
    # A head without CPUs, two learner nodes, two rollout nodes, all on loopback.
    assert seen["nodes"] == 5
    assert seen["node_addresses"] == ["127.0.0.1"]
    assert len(seen["learner_resource_node_ids"]) == len(seen["rollout_resource_node_ids"]) == 2
    assert not set(seen["learner_resource_node_ids"]) & set(seen["rollout_resource_node_ids"])


def test_env_runners_on_the_rollout_nodes_feed_the_learners(seen):
    # One env runner on each rollout node (--env-runner-resource rollout_node=1).
    assert seen["runner_node_ids"] == seen["rollout_resource_node_ids"]
    # Both runners deliver fragments, and every sampled step reached a learner's replay shard.
    assert seen["fragment_sizes"] == [50, 50]
    assert seen["env_steps"] == [500, 1000, 1500]
    assert sum(seen["replay_sizes"]) == seen["env_steps"][-1]
    assert min(seen["replay_sizes"]) > 0 and seen["updates"][-1] > 0
    # Energy is read on every node the run uses: the driver's, both runners', both learners'.
    assert seen["energy_nodes"] == 5
    assert seen["energy_node_ids"] == sorted(
        seen["rollout_resource_node_ids"] + seen["learner_resource_node_ids"]
        + [seen["driver_node_id"]])


def test_learners_on_two_nodes_apply_the_same_averaged_gradient(seen):
    # One learner on each learner node (--learner-resource learner_node=1), one Gloo group.
    assert seen["learner_node_ids"] == seen["learner_resource_node_ids"]
    assert seen["learner_groups"] == [[2, "gloo"], [2, "gloo"]]
    # After updates the two hold bitwise-identical parameters, and the updates moved them.
    assert seen["params"] > 0 and seen["params_differing"] == []
    assert seen["params_moved"] > 0
    # Each learner's gradient through DDP on its half of a 2 x B batch is the same on both
    # nodes and equals the gradient of the whole batch computed in one process.
    gradient = seen["gradient"]
    assert gradient["learners"] == 2 and gradient["params"] > 0
    assert gradient["differ_between_learners"] == []
    assert gradient["differ_from_whole_batch"] == []
    assert len(gradient["zero"]) < gradient["params"]


def test_spikerl_train_with_pinning_flags_joins_the_cluster(seen):
    # `spikerl train --address ... --learner-resource learner_node=1 --env-runner-resource
    # rollout_node=1`: two iterations of 1000 env steps each.
    assert seen["cli_returncode"] == 0, seen["cli_stderr_tail"]
    assert seen["cli_env_steps"] == [1000, 2000]
