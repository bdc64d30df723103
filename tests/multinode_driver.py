"""Driver for tests/test_multinode.py: a real multi-node Ray cluster on this machine.

Builds a head (no CPUs, so nothing of a run but its driver lands there) and four worker nodes
of one CPU each, each a real raylet on 127.0.0.1: two carry the custom resource
``learner_node`` (standing in for GPU nodes) and two ``rollout_node`` (CPU nodes), the names
cluster/README.md gives the recipes' node types. Trains with two env runners and two DDP
learners (Gloo) pinned to those nodes through the run settings, checks the learners' averaged
gradient, then runs ``spikerl train --address`` with the same pins against the same cluster.
Prints one JSON line with what it saw. Run in its own process because a process can be
connected to only one Ray cluster.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
import torch  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from spikerl_ray.algorithms import build_config  # noqa: E402
from spikerl_ray.common.algorithm import where  # noqa: E402
from spikerl_ray.common.fragments import sample_fragments  # noqa: E402
from spikerl_ray.settings import RunSettings  # noqa: E402
from ddp_checks import averaged_gradient_check, learner_states  # noqa: E402 (this folder)
from fast_start import FAST_START, FAST_START_FLAGS  # noqa: E402 (this script's folder)

LEARNER_NODE, ROLLOUT_NODE = "learner_node", "rollout_node"
ITERATIONS, STEPS_PER_ITERATION = 3, 500


def _nodes() -> dict[str, Any]:
    """The alive nodes: their ids by the custom resource they carry, and their addresses."""
    alive = [n for n in ray.nodes() if n["Alive"]]
    return {"nodes": len(alive),
            "node_addresses": sorted({n["NodeManagerAddress"] for n in alive}),
            "learner_resource_node_ids": sorted(n["NodeID"] for n in alive
                                                if LEARNER_NODE in n["Resources"]),
            "rollout_resource_node_ids": sorted(n["NodeID"] for n in alive
                                                if ROLLOUT_NODE in n["Resources"])}


def _pinned_training() -> dict[str, Any]:
    """Two env runners pinned to the rollout nodes feed two DDP learners pinned to the learner
    nodes: where each landed, what they sampled and stored, and whether the learners agree
    (parameters after updates, and the averaged gradient against the whole batch's)."""
    settings = RunSettings(policy="spikerl", env="Pendulum-v1", env_runners=2, learners=2,
                           learner_resources={LEARNER_NODE: 1},
                           env_runner_resources={ROLLOUT_NODE: 1}, warmup_steps=500,
                           eval_every=1, eval_episodes=1, **FAST_START)
    algo = (build_config(settings)
            .reporting(min_sample_timesteps_per_iteration=STEPS_PER_ITERATION).build_algo())
    out: dict[str, Any] = {}
    try:
        out["runner_node_ids"] = sorted(node for node, _ in algo.env_runner_group
                                        .foreach_env_runner(where, local_env_runner=False))
        places = [r.get() for r in algo.learner_group.foreach_learner(
            lambda l: (ray.get_runtime_context().get_node_id(),
                       torch.distributed.get_world_size(l.process_group),
                       torch.distributed.get_backend(l.process_group)))]
        out["learner_node_ids"] = sorted(node for node, _, _ in places)
        out["learner_groups"] = sorted([size, backend] for _, size, backend in places)
        before = learner_states(algo)[0]
        results = [algo.train() for _ in range(ITERATIONS)]
        out["env_steps"] = [r["num_env_steps_sampled_lifetime"] for r in results]
        out["updates"] = [r["learners"]["default_policy"]["num_gradient_updates_lifetime"]
                          for r in results]
        out["replay_sizes"] = [r.get() for r in algo.learner_group.foreach_learner(
            lambda l: len(l.replay))]
        # One energy monitor per node the run uses: the driver's, the runners', the learners'.
        devices = results[-1]["energy"]["devices"]
        out["energy_nodes"] = results[-1]["energy"]["energy_nodes"]
        out["energy_node_ids"] = sorted({d["node"] for d in devices})
        out["driver_node_id"] = ray.get_runtime_context().get_node_id()
        # One more sampling round: a fragment comes back from each of the two runners.
        out["fragment_sizes"] = [rows for _, rows, _ in
                                 sample_fragments(algo, False, by_reference=True)]
        a, b = learner_states(algo)
        out["params"] = len(a)
        out["params_differing"] = sorted(k for k in a if not torch.equal(a[k], b[k]))
        out["params_moved"] = sum(not torch.equal(a[k], before[k]) for k in a)
        out["gradient"] = averaged_gradient_check(algo)
    finally:
        algo.stop()
    return out


def _pinned_cli_run(address: str) -> dict[str, Any]:
    """``spikerl train --address`` with the pinning flags of cluster/README.md: its exit
    status and the env steps of its progress rows."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "spikerl_ray.cli", "train", "--policy", "ann", "--env",
             "Pendulum-v1", "--steps", "2000", "--warmup-steps", "500", "--eval-every", "1",
             "--eval-episodes", "1", "--env-runners", "2", "--env-runner-resource",
             f"{ROLLOUT_NODE}=1",
             "--learners", "2", "--learner-resource", f"{LEARNER_NODE}=1", "--no-energy",
             "--address", address, "--out", os.path.join(tmp, "run"), "--no-progress",
             *FAST_START_FLAGS],
            capture_output=True, text=True, timeout=600)
        progress = os.path.join(tmp, "run", "progress.csv")
        rows = list(csv.DictReader(open(progress))) if os.path.exists(progress) else []
    return {"cli_returncode": proc.returncode, "cli_stderr_tail": proc.stderr[-2000:],
            "cli_env_steps": [int(row["env_steps"]) for row in rows]}


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    for resource in (LEARNER_NODE, LEARNER_NODE, ROLLOUT_NODE, ROLLOUT_NODE):
        cluster.add_node(num_cpus=1, resources={resource: 1}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    out: dict[str, Any] = {"address": cluster.address}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        out |= _nodes()
        out |= _pinned_training()
        ray.shutdown()
        out |= _pinned_cli_run(cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
