"""What a run asks Ray for, said before it starts, and a request no node can ever satisfy
refused at once instead of waiting forever in Ray's scheduler.

The requests are RLlib's own (``Algorithm.default_resource_request``, what Tune reserves for a
trial): the driver, each env runner (CPUs), each evaluation env runner and each learner (GPUs,
or CPUs without them), with the custom resources given by flags.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from spikerl_ray.errors import UserError


def requests(config: Any) -> list[tuple[str, dict[str, float]]]:
    """``(role, resources)`` of every bundle of a run of ``config`` (a TD3Config): the driver
    first, then env runners, evaluation env runners and learners, as RLlib orders them."""
    bundles = [{k: float(v) for k, v in b.items() if v}
               for b in config.algo_class.default_resource_request(config).bundles]
    eval_runners = (config.evaluation_num_env_runners
                    if config.evaluation_interval else 0)
    roles = (["driver"] + ["env runner"] * config.num_env_runners
             + ["evaluation env runner"] * eval_runners + ["learner"] * config.num_learners)
    if len(roles) != len(bundles):  # an RLlib layout this module does not know
        roles = ["driver"] + ["actor"] * (len(bundles) - 1)
    return list(zip(roles, bundles))


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "nothing"


def describe(reqs: list[tuple[str, dict[str, float]]]) -> str:
    """One line: each kind of actor, how many, and what each asks for."""
    counts = Counter((role, tuple(sorted(res.items()))) for role, res in reqs)
    parts = [f"{n} {role}{'s' if n > 1 else ''} x ({_fmt(dict(res))})"
             for (role, res), n in counts.items()]
    totals: dict[str, float] = {}
    for _, res in reqs:
        for k, v in res.items():
            totals[k] = totals.get(k, 0.0) + v
    return f"{'; '.join(parts)}; in all {_fmt(totals)}"


def check(reqs: list[tuple[str, dict[str, float]]], nodes: list[dict[str, float]],
          where: str) -> None:
    """Raises UserError, naming the missing resource, when an actor fits on no node of
    ``nodes`` (each node's total resources) or the run needs more than they hold together."""
    for role, res in reqs:
        if any(all(node.get(k, 0.0) >= v for k, v in res.items()) for node in nodes):
            continue
        name, amount = next((k, v) for k, v in sorted(res.items())
                            if max((node.get(k, 0.0) for node in nodes), default=0.0) < v)
        largest = max((node.get(name, 0.0) for node in nodes), default=0.0)
        raise UserError(f"a {role} asks for {amount:g} {name} but no node of {where} has that "
                        f"much (the most on one node: {largest:g}); change the request "
                        "(--gpus-per-learner, --learner-resource, --env-runner-resource) or "
                        "add such a node")
    needed: dict[str, float] = {}
    for _, res in reqs:
        for k, v in res.items():
            needed[k] = needed.get(k, 0.0) + v
    for name, amount in sorted(needed.items()):
        have = sum(node.get(name, 0.0) for node in nodes)
        if amount > have + 1e-9:
            raise UserError(f"the run asks for {amount:g} {name} in all but {where} has "
                            f"{have:g}; use fewer env runners or learners, or a bigger cluster")


def set_torch_threads(config: Any, role: str) -> int:
    """Sets this process's PyTorch intra-op threads to the CPUs Ray reserves for one
    ``role`` ("driver", "env runner" or "learner") of a run of ``config`` (at least one
    thread) and returns the count. More threads than reserved cores fight the run's other
    processes, and anything else on the node, for the same cores: beside one busy process on 2
    cores, a spiking actor acting with PyTorch's default 2 threads fell from about 90 to 4 env
    steps/s (docs/performance.md, "Shared cores"). A local env runner or learner lives in the
    driver and counts in its request."""
    import torch

    cpus = next((res.get("CPU", 0.0) for r, res in requests(config) if r == role), 1.0)
    threads = max(1, int(cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def local_node() -> dict[str, float]:
    """This machine as the embedded Ray would see it: its CPUs and CUDA GPUs."""
    import os

    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def cluster_nodes() -> list[dict[str, float]]:
    """The total resources of each alive node of the connected Ray cluster."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
