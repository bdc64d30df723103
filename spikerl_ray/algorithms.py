"""The algorithm registry: everything the rest of the package needs to know about TD3, SAC and
PPO, in one entry each.

An entry names its RLlib config class and RLModule class (imported only when asked for, so
that the command line can list the algorithms without importing Ray), the run settings only it
and some others read (with the ``training()`` keyword each sets), whether method recipes
apply to it, and what it needs of an actor. ``spikerl train``, ``tune``, ``evaluate`` and
``export`` ask this module; nothing else compares algorithm names. Adding an algorithm is a
package with its config and module (``spikerl_ray/<name>/``) and one entry in
:data:`ALGORITHMS` (docs/architecture.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from policies.capabilities import Capability, require

if TYPE_CHECKING:
    from spikerl_ray.settings import RunSettings


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


@dataclass(frozen=True)
class AlgorithmEntry:
    """One algorithm. ``reads`` maps the algorithm-specific run settings it reads to the
    keyword of its config's ``training()`` that each sets (a setting another entry reads and
    this one does not is refused by :func:`unused_settings`); ``recipes``: whether a method's
    recipe settings (TD3 schedules, :mod:`spikerl_ray.methods`) apply, else a method gives its
    network only; ``needs``: the actor capabilities it needs (:mod:`policies.capabilities`)."""

    name: str
    summary: str
    config: str  # "module:ConfigClass"
    module: str  # "module:RLModuleClass"
    reads: dict[str, str] = field(default_factory=dict)
    recipes: bool = False
    needs: tuple[Capability, ...] = ()

    def config_class(self) -> type:
        """Its ``AlgorithmConfig`` subclass (imports Ray)."""
        return _load(self.config)

    def algorithm_class(self) -> type:
        """Its ``Algorithm`` subclass (imports Ray)."""
        return self.config_class()().algo_class

    def module_class(self) -> type:
        """The RLModule class its checkpoints hold (imports Ray)."""
        return _load(self.module)


# The algorithm of a run or method entry that names none, and of checkpoints that predate
# other algorithms.
DEFAULT_ALGORITHM = "td3"
ALGORITHMS: dict[str, AlgorithmEntry] = {a.name: a for a in (
    AlgorithmEntry(
        "td3", "TD3, ours: replay on the learners, many updates per call (the default)",
        config="spikerl_ray.td3.td3:TD3Config",
        module="spikerl_ray.td3.rl_module:TD3TorchRLModule",
        reads={"warmup_steps": "num_steps_random_warmup",
               "pre_tanh_penalty": "pre_tanh_penalty", "actor_lr": "actor_lr",
               "critic_lr": "critic_lr", "exploration_noise": "exploration_noise",
               "save_replay": "save_replay", "max_nonfinite_updates": "max_nonfinite_updates",
               "compile": "compile_networks", "precision": "precision",
               "allreduce_dtype": "allreduce_dtype", "backend": "torch_distributed_backend",
               "async_sampling": "async_sampling", "updates_per_step": "updates_per_step",
               "data_parallel": "data_parallel"},
        recipes=True),
    AlgorithmEntry(
        "sac", "SAC (RLlib's loss) on TD3's fast paths: replay on the learners, compiled "
        "(docs/algorithms.md)",
        config="spikerl_ray.sac.sac:SpikingSACConfig",
        module="spikerl_ray.sac.rl_module:SpikingSACTorchRLModule",
        reads={"warmup_steps": "num_steps_random_warmup", "actor_lr": "actor_lr",
               "critic_lr": "critic_lr", "save_replay": "save_replay",
               "max_nonfinite_updates": "max_nonfinite_updates",
               "compile": "compile_networks", "precision": "precision",
               "allreduce_dtype": "allreduce_dtype", "backend": "torch_distributed_backend",
               "async_sampling": "async_sampling", "updates_per_step": "updates_per_step",
               "data_parallel": "data_parallel"},
        needs=(Capability.PRE_SQUASH,)),
    AlgorithmEntry(
        "ppo", "RLlib's PPO with our actor, compiled (docs/algorithms.md)",
        config="spikerl_ray.ppo.ppo:SpikingPPOConfig",
        module="spikerl_ray.ppo.rl_module:SpikingPPOTorchRLModule",
        reads={"compile": "compile_networks", "precision": "precision"}),
)}


def get_algorithm(name: str) -> AlgorithmEntry:
    """The entry registered as ``name``; ValueError naming the choices otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algo {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def unused_settings(name: str) -> list[str]:
    """The algorithm-specific run settings that algorithm ``name`` does not read."""
    entry = get_algorithm(name)
    specific = {s: None for a in ALGORITHMS.values() for s in a.reads}
    return [s for s in specific if s not in entry.reads]


def actor_kwargs(settings: RunSettings) -> dict[str, Any]:
    """The actor's constructor arguments: its paper's for the environment
    (:func:`policies.actor_kwargs_for_env`), overridden by the run's own."""
    from policies import actor_kwargs_for_env

    return actor_kwargs_for_env(settings.policy, settings.env) | settings.actor_kwargs


def build_config(settings: RunSettings) -> Any:
    """The RLlib config of a run's settings (resolved first,
    :meth:`~spikerl_ray.settings.RunSettings.resolved`); None settings keep the config's
    defaults."""
    s = settings.resolved()
    entry = get_algorithm(s.algo)
    own = {keyword: getattr(s, name) for name, keyword in entry.reads.items()}
    shared = {"train_batch_size_per_learner": s.batch_size, "spiking_backend": s.spiking_backend}
    chosen = {k: v for k, v in (own | shared).items() if v is not None}
    return (
        entry.config_class()()
        .environment(s.env)
        .env_runners(num_env_runners=s.env_runners, num_envs_per_env_runner=s.envs_per_runner,
                     custom_resources_per_env_runner=dict(s.env_runner_resources),
                     # Without periodic evaluation RLlib builds no evaluation runner, and the
                     # end-of-run evaluation (training.py) runs on the local env runner, which
                     # then needs an env even when remote runners sample.
                     create_env_on_local_worker=not s.eval_every)
        .learners(num_learners=s.learners, num_cpus_per_learner=s.cpus_per_learner,
                  num_gpus_per_learner=s.gpus_per_learner,
                  custom_resources_per_learner=dict(s.learner_resources))
        .training(policy=s.policy, actor_kwargs=actor_kwargs(s), method=s.method, **chosen)
        .evaluation(evaluation_interval=s.eval_every or None,
                    evaluation_duration=s.eval_episodes,
                    evaluation_duration_unit="episodes", evaluation_num_env_runners=0,
                    evaluation_config={"explore": False})
        .energy(monitor=s.energy_monitor, estimate_cpu_watts=s.estimate_cpu_watts,
                carbon_intensity=s.carbon_intensity)
        .resources(num_cpus_for_main_process=s.driver_cpus)
        # RLlib sets its logger to log_level when the algorithm starts: keep the level the
        # command line chose (quiet unless --verbose).
        .debugging(seed=s.seed, log_level=logging.getLevelName(
            logging.getLogger("ray.rllib").getEffectiveLevel()))
    )


def check_actor(settings: RunSettings) -> None:
    """Builds the run's actor once, on the driver, and checks that it has the capabilities its
    algorithm and settings need (:mod:`policies.capabilities`); ValueError naming the first
    one missing. A user's factory that cannot be imported fails here too, before Ray starts."""
    from policies import build_actor
    from spikerl_ray.envs import continuous_spaces

    s = settings.resolved()
    obs_space, act_space = continuous_spaces(s.env)
    actor = build_actor(s.policy, int(obs_space.shape[0]), int(act_space.shape[0]),
                        **actor_kwargs(s))
    entry = get_algorithm(s.algo)
    for capability in entry.needs:
        require(actor, capability, entry.name.upper(), s.policy)
    if s.pre_tanh_penalty:
        require(actor, Capability.PRE_SQUASH,
                "the pre-tanh penalty (--pre-tanh-penalty; the spikerl recipe's)", s.policy)
