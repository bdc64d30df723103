"""Driver for tests/test_multinode.py: a real multi-node Ray cluster on this machine.

Builds a head (no CPUs, so no env runner can land there) and two worker nodes of one CPU each,
each a real raylet; trains with two env runners; then runs ``spikerl train --address`` against
the same cluster. Prints one JSON line with what it saw. Run in its own process because a
process can be connected to only one Ray cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from spikerl_ray.algorithms import build_config  # noqa: E402
from spikerl_ray.common.fragments import sample_fragments  # noqa: E402
from spikerl_ray.settings import RunSettings  # noqa: E402
from fast_start import FAST_START, FAST_START_FLAGS  # noqa: E402 (this script's folder)


def _learners_across_nodes() -> dict:
    """Two DDP learners of one CPU each on a cluster whose worker nodes have one CPU each:
    they land on different nodes and, after updates, hold bitwise-identical parameters."""
    import torch

    config = (build_config(RunSettings(policy="spikerl", env="Pendulum-v1", learners=2,
                                       warmup_steps=200, eval_every=0, **FAST_START))
              .training(num_steps_sampled_before_learning_starts=200)
              .env_runners(rollout_fragment_length=100)
              .reporting(min_sample_timesteps_per_iteration=200))
    algo = config.build_algo()
    try:
        for _ in range(3):
            result = algo.train()

        def state(learner):
            sd = learner.module["default_policy"].unwrapped().state_dict()
            return ray.get_runtime_context().get_node_id(), {
                k: v.detach().cpu().clone() for k, v in sd.items()}

        (node_a, a), (node_b, b) = [r.get() for r in algo.learner_group.foreach_learner(state)]
    finally:
        algo.stop()
    return {"learner_node_ids": sorted([node_a, node_b]),
            "learner_updates": result["learners"]["default_policy"][
                "num_gradient_updates_lifetime"],
            "learners_identical": a.keys() == b.keys() and all(
                torch.equal(a[k], b[k]) for k in a)}


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    out: dict = {"address": cluster.address}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        out["nodes"] = len([n for n in ray.nodes() if n["Alive"]])
        out["worker_node_ids"] = sorted(w.node_id for w in workers)
        config = build_config(RunSettings(policy="spikerl", env="Pendulum-v1", env_runners=2,
                                          warmup_steps=500, eval_every=1, eval_episodes=1,
                                          **FAST_START))
        config.reporting(min_sample_timesteps_per_iteration=1000)
        algo = config.build_algo()
        try:
            out["runner_node_ids"] = sorted(algo.env_runner_group.foreach_env_runner(
                lambda r: ray.get_runtime_context().get_node_id(), local_env_runner=False))
            results = [algo.train() for _ in range(3)]
            out["env_steps"] = [r["num_env_steps_sampled_lifetime"] for r in results]
            out["updates"] = [r["learners"]["default_policy"]["num_gradient_updates_lifetime"]
                              for r in results]
            # One energy monitor per node the run uses: the driver's and each runner's.
            devices = results[-1]["energy"]["devices"]
            out["energy_nodes"] = results[-1]["energy"]["energy_nodes"]
            out["energy_node_ids"] = sorted({d["node"] for d in devices})
            out["driver_node_id"] = ray.get_runtime_context().get_node_id()
            out["replay_size"] = [r.get() for r in algo.learner_group.foreach_learner(
                lambda l: len(l.replay))][0]
            # One more sampling round: a fragment comes back from each of the two runners.
            out["fragment_sizes"] = [rows for _, rows, _ in
                                     sample_fragments(algo, False, by_reference=True)]
        finally:
            algo.stop()
        out |= _learners_across_nodes()
        ray.shutdown()
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [sys.executable, "-m", "spikerl_ray.cli", "train", "--policy", "ann", "--env",
                 "Pendulum-v1", "--steps", "2000", "--warmup-steps", "500", "--eval-every", "1",
                 "--eval-episodes", "1", "--env-runners", "2", "--address", cluster.address,
                 "--out", os.path.join(tmp, "run"), "--no-progress", *FAST_START_FLAGS],
                capture_output=True, text=True, timeout=600)
            out["cli_returncode"] = proc.returncode
            out["cli_stderr_tail"] = proc.stderr[-2000:]
            progress = os.path.join(tmp, "run", "progress.csv")
            out["cli_progress_rows"] = (len(open(progress).read().strip().splitlines()) - 1
                                        if os.path.exists(progress) else 0)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
