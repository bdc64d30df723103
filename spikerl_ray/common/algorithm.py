"""Energy measurement for any of our RLlib algorithms (TD3, SAC, PPO): config settings and an
Algorithm mixin that runs :class:`~spikerl_ray.energy.meter.EnergyMeter` around every
iteration (docs/energy.md)."""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from spikerl_ray.energy.accounting import DEFAULT_CARBON_INTENSITY
from spikerl_ray.resources import set_torch_threads


class EnergySettings:
    """Mixin for an :class:`AlgorithmConfig`: the ``energy()`` settings."""

    def _init_energy_settings(self) -> None:
        self.energy_monitor = True
        self.estimate_cpu_watts: float | None = None
        self.carbon_intensity = DEFAULT_CARBON_INTENSITY

    def energy(self, *, monitor: bool | None = NotProvided,
               estimate_cpu_watts: float | None = NotProvided,
               carbon_intensity: float | None = NotProvided) -> Any:
        """Sets the energy measurement (docs/energy.md).

        Args:
            monitor: run a monitor on every node the run uses (env runners, learners, the
                driver), read at the start and end of every iteration; the result's
                ``energy`` entry then holds joules per node and device with their source.
            estimate_cpu_watts: where RAPL cannot be read, charge this many watts per busy
                core of the run's processes, labelled ``estimate`` (None: no estimate).
            carbon_intensity: gCO2e per kWh for the carbon figures (default 475, the world
                average of 2019; ``spikerl_ray.energy.CARBON_REGIONS`` has named regions).
        """
        for name, value in (("energy_monitor", monitor),
                            ("estimate_cpu_watts", estimate_cpu_watts),
                            ("carbon_intensity", carbon_intensity)):
            if value is not NotProvided:
                setattr(self, name, value)
        return self

    def _validate_energy_settings(self) -> None:
        if self.estimate_cpu_watts is not None and not self.estimate_cpu_watts > 0:
            self._value_error(f"estimate_cpu_watts must be positive, got "
                              f"{self.estimate_cpu_watts!r}")
        if not (isinstance(self.carbon_intensity, (int, float))
                and self.carbon_intensity >= 0):
            self._value_error(f"carbon_intensity must be gCO2e/kWh >= 0, got "
                              f"{self.carbon_intensity!r}")


def where(_: Any = None) -> tuple[str, int]:
    """The node id and process id of the caller (an env runner, a learner, the driver)."""
    return ray.get_runtime_context().get_node_id(), os.getpid()


class MeteredAlgorithm(Algorithm):
    """Base for an :class:`Algorithm` whose config has :class:`EnergySettings` (listed first,
    before RLlib's algorithm: ``class SpikingSAC(MeteredAlgorithm, SAC)``): sets the driver's
    PyTorch threads, and measures the energy of every node of the run in each iteration (the
    result's ``energy`` entry). Deriving from Algorithm keeps every such class's instance
    layout that of Algorithm, which experiments' trainable relies on
    (:class:`spikerl_ray.experiments.tune.TrialAlgorithm`)."""

    def setup(self, config: Any) -> None:
        # The driver holds the local env runner and learner, if any (RLlib's request for it).
        set_torch_threads(config, "driver")
        super().setup(config)
        self._energy_meter = None
        if self.config.energy_monitor:
            from spikerl_ray.energy.meter import EnergyMeter

            self._energy_meter = EnergyMeter(self._processes(), self.config.estimate_cpu_watts,
                                             self.config.carbon_intensity)

    def _processes(self) -> dict[str, list[int]]:
        """The run's processes by node: the driver, remote env runners and learners."""
        places = [where()]
        if self.env_runner_group.num_remote_env_runners() > 0:
            places += self.env_runner_group.foreach_env_runner(where, local_env_runner=False)
        if not self.learner_group.is_local:
            places += [r.get() for r in self.learner_group.foreach_learner(where)]
        nodes: dict[str, list[int]] = {}
        for node, pid in places:
            nodes.setdefault(node, []).append(pid)
        return nodes

    def step(self) -> dict:
        """One iteration (RLlib's), and the energy every node used in it."""
        steps_key = (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
        before = self.metrics.peek(steps_key, default=0)
        if self._energy_meter is not None:
            self._energy_meter.begin()
        results = super().step()
        if self._energy_meter is not None:
            steps = int(self.metrics.peek(steps_key, default=0) - before)
            results["energy"] = self._energy_meter.end(steps)
        return results

    def cleanup(self) -> None:
        if getattr(self, "_energy_meter", None) is not None:
            self._energy_meter.close()
            self._energy_meter = None
        super().cleanup()

    def restore_env_runners(self, env_runner_group: Any) -> list[int]:
        """RLlib's restore, then the energy meter also follows the restarted runners'
        processes (their pids are new)."""
        restored = super().restore_env_runners(env_runner_group)
        if restored and self._energy_meter is not None and env_runner_group is \
                self.env_runner_group:
            self._energy_meter.track(env_runner_group.foreach_env_runner(
                where, local_env_runner=False, remote_worker_ids=restored))
        return restored
