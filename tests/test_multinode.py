"""Rollouts across nodes: a real three-raylet cluster built with ray.cluster_utils.Cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_env_runners_on_distinct_nodes_feed_the_learner():
    driver = Path(__file__).with_name("multinode_driver.py")
    proc = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["nodes"] == 3
    # One env runner on each worker node (the head has no CPU for them).
    assert seen["runner_node_ids"] == seen["worker_node_ids"]
    assert len(set(seen["runner_node_ids"])) == 2
    # Both runners deliver fragments, and every sampled step reached the learner's replay.
    assert seen["fragment_sizes"] == [50, 50]
    assert seen["replay_size"] == seen["env_steps"][-1] >= 3000
    assert seen["env_steps"] == sorted(seen["env_steps"]) and seen["updates"][-1] > 0
    # Energy is read on every node the run uses (the driver's and both runners'), not only
    # on the driver's.
    assert seen["energy_nodes"] == 3
    assert seen["energy_node_ids"] == sorted(seen["worker_node_ids"] + [seen["driver_node_id"]])
    # Two DDP learners on two nodes (one CPU each) still hold bitwise-identical parameters.
    assert seen["learner_node_ids"] == seen["worker_node_ids"]
    assert seen["learner_updates"] > 0 and seen["learners_identical"]
    # `spikerl train --address` joins the existing cluster instead of starting one.
    assert seen["cli_returncode"] == 0, seen["cli_stderr_tail"]
    assert seen["cli_progress_rows"] == 2
