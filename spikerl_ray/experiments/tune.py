"""``spikerl tune``: runs an experiment with ``tune.Tuner`` on the registered ``"spikerl"``
trainable, which holds TD3, SpikingSAC or SpikingPPO by each trial's ``algo``
(:class:`TrialTrainable`).

Every method entry x environment x seed (x search sample) is one trial: the grid over
``method``, ``env`` and ``seed`` and the search spaces are Tune's own, and each trial's complete
algorithm config is derived from them with ``tune.sample_from`` (the method's recipe, the
experiment's resources and settings, the sampled values), through the same
:func:`~spikerl_ray.algorithms.build_config` as ``spikerl train``. An entry ``METHOD`` trains
with TD3, ``METHOD/ALGO`` the method's network with another algorithm of
:data:`spikerl_ray.algorithms.ALGORITHMS`.
Trials are named ``METHOD_ENV_sSEED_ID`` (``METHOD-ALGO_...``); Tune's own progress output shows
them with their metrics; Tune keeps one checkpoint per trial every ``checkpoint_every``
iterations and at the end; a failing trial is retried up to ``max_failures`` times from its
last checkpoint (Tune's ``FailureConfig``) while the others run on; ``--resume`` continues an
interrupted experiment with ``Tuner.restore``, re-running only unfinished or failed trials.
With ``track: wandb`` (``spikerl tune --track wandb``) Tune's own ``WandbLoggerCallback`` logs
each trial to Weights & Biases, offline by default (:mod:`spikerl_ray.tracking`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ray import tune
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
from ray.tune.registry import register_trainable

from spikerl_ray import checkpoints, tracking
from spikerl_ray.algorithms import build_config, check_actor, get_algorithm, unused_settings
from spikerl_ray.errors import ExperimentError
from spikerl_ray.experiments.schema import (
    ACTOR_ARGS,
    METRICS,
    Experiment,
    section_keys,
    split_entry,
)
from spikerl_ray.methods import METHODS
from spikerl_ray.settings import RunSettings

TRAINABLE = "spikerl"


class TrialTrainable(tune.Trainable):
    """Tune's trainable for experiments: one trial holds one algorithm, TD3, SAC or PPO by its
    config's ``algo`` (:mod:`spikerl_ray.algorithms`), so that one Tuner runs trials of all
    three (Tune takes one trainable per Tuner). A trial's config holds its identity
    (``method``, ``env``, ``seed``, ``search``) and under ``algorithm`` the algorithm's
    complete config; results, checkpoints and the resource request are the algorithm's own."""

    def setup(self, config: dict[str, Any]) -> None:
        cls, algorithm_config = _split(config)
        self.algorithm = cls(config=algorithm_config)
        self.identity = {"env": config["env"], "algo": config["algorithm"]["algo"],
                         "policy": self.algorithm.config.policy, "method": config["method"],
                         "seed": config["seed"]}
        self.env_steps = 0

    def step(self) -> dict[str, Any]:
        result = self.algorithm.train()
        self.env_steps = int(result.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0))
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """The algorithm's checkpoint with the info file of ``spikerl train``'s, so that
        ``spikerl evaluate`` and ``export`` read a trial's checkpoints too."""
        self.algorithm.save_checkpoint(checkpoint_dir)
        checkpoints.write_info(self.algorithm, Path(checkpoint_dir), self.identity | {
            "iteration": self.algorithm.iteration, "env_steps": self.env_steps})

    def load_checkpoint(self, checkpoint: str) -> None:
        self.algorithm.load_checkpoint(checkpoint)

    def cleanup(self) -> None:
        self.algorithm.stop()

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> Any:
        algo_class, algorithm_config = _split(config)
        return algo_class.default_resource_request(algorithm_config)


def _split(config: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """A trial config's Algorithm class and the config dict it is built from."""
    algorithm = dict(config["algorithm"])
    return get_algorithm(algorithm.pop("algo")).algorithm_class(), algorithm


register_trainable(TRAINABLE, TrialTrainable)


def trial_settings(exp: Experiment, entry: str, env: str, seed: int,
                   sampled: dict[str, Any]) -> RunSettings:
    """The run settings of one trial of a method entry (``METHOD[/ALGO][@POLICY]``): the
    method's recipe, overridden by the experiment's settings and precision, overridden by the
    sampled search values. The experiment's learners apply to data-parallel methods only; the
    others train with one local learner. Settings the entry's algorithm does not read are left
    out for it."""
    method, algo, policy = split_entry(entry)
    values = {name: getattr(getattr(exp, section), key)
              for section in ("resources", "evaluation", "settings")
              for key, name in section_keys(section).items()}
    values |= {name: getattr(exp, key) for key, name in section_keys("").items()}
    values |= {k: v for k, v in sampled.items() if k not in ACTOR_ARGS}
    if not METHODS[method].data_parallel:
        values["learners"] = 0
    unused = set(unused_settings(algo))
    explicit = {k: v for k, v in values.items() if v is not None and k not in unused}
    return RunSettings(method=method, algo=algo, policy=policy, env=env, seed=seed,
                       actor_kwargs={k: v for k, v in sampled.items() if k in ACTOR_ARGS},
                       **explicit)


def _domain(space: Any) -> Any:
    if hasattr(space, "grid"):
        return tune.grid_search(space.grid)
    if hasattr(space, "choice"):
        return tune.choice(space.choice)
    if hasattr(space, "uniform"):
        return tune.uniform(*space.uniform)
    return tune.loguniform(*space.loguniform)


def param_space(exp: Experiment) -> dict[str, Any]:
    """Tune's search space: grids over ``method`` (the entries), ``env`` and ``seed``, the
    experiment's search spaces under ``search``, and under ``algorithm`` the trial's complete
    config (``AlgorithmConfig.to_dict()`` plus its ``algo``), derived per trial."""

    def algorithm(config: dict[str, Any]) -> dict[str, Any]:
        sampled = {k: config["search"][k] for k in exp.search}
        settings = trial_settings(exp, config["method"], config["env"], config["seed"],
                                  sampled).resolved()
        # The config's method label is the entry, as reports name it.
        return build_config(settings).to_dict() | {"algo": settings.algo,
                                                   "method": config["method"]}

    return {"method": tune.grid_search(exp.methods), "env": tune.grid_search(exp.envs),
            "seed": tune.grid_search(exp.seeds),
            "search": {k: _domain(v) for k, v in exp.search.items()},
            "algorithm": tune.sample_from(algorithm)}


def trial_count(exp: Experiment) -> int:
    """The number of trials of the experiment: entries x envs x seeds x samples x grids."""
    grids = math.prod(len(space.grid) for space in exp.search.values()
                      if getattr(space, "grid", None))
    return len(exp.methods) * len(exp.envs) * len(exp.seeds) * exp.num_samples * grids


def unfinished_trials(exp: Experiment, results: Any) -> int:
    """Trials of ``exp`` that Tune's ``results`` leave unfinished: never started, or (without
    a scheduler, which stops trials early on purpose) stopped before their last step without
    an error, as on Ctrl-C."""
    missing = trial_count(exp) - len(results)
    if exp.scheduler is not None:
        return missing
    return missing + sum(1 for r in results if r.error is None and not r.metrics.get("done"))


def check_trials(exp: Experiment) -> None:
    """Builds and validates each method x environment's config (search spaces at a sample)
    before Ray starts, so that a bad combination ends in one line, not a failed trial."""
    sample = {k: (getattr(v, "grid", None) or getattr(v, "choice", None)
                  or getattr(v, "uniform", None) or v.loguniform)[0]
              for k, v in exp.search.items()}
    for method in exp.methods:
        for env in exp.envs:
            settings = trial_settings(exp, method, env, exp.seeds[0], sample)
            try:
                build_config(settings).validate()
                check_actor(settings)
            except (TypeError, ValueError) as exc:
                raise ExperimentError(f"{method} on {env}: "
                                      f"{str(exc).strip().splitlines()[0]}") from None


def _trial_name(trial: Any) -> str:
    c = trial.config
    entry = re.sub(r"[/@:]", "-", c["method"])
    return f"{entry}_{c['env']}_s{c['seed']}_{trial.trial_id}"


def storage_root(exp: Experiment, out: str | None) -> str:
    """Where Tune writes: ``out``, else the config's ``storage_path``; local paths absolute,
    URIs (``s3://...``) as given."""
    root = out or exp.storage_path
    return root if "://" in root else str(Path(root).expanduser().resolve())


def trial_requests(exp: Experiment) -> dict[str, list[tuple[str, dict[str, float]]]]:
    """What one trial of each method asks Ray for (:func:`spikerl_ray.resources.requests`;
    the environment and search values do not change it)."""
    from spikerl_ray.resources import requests

    return {method: requests(build_config(trial_settings(exp, method, exp.envs[0],
                                                          exp.seeds[0], {})))
            for method in exp.methods}


def run_experiment(exp: Experiment, out: str | None = None, *, resume: bool = False,
                   verbose: int = 1) -> Any:
    """Runs (or with ``resume`` continues) the experiment; returns Tune's ResultGrid."""
    from ray.tune.schedulers import ASHAScheduler

    root = storage_root(exp, out)
    path = f"{root.rstrip('/')}/{exp.name}"
    space = param_space(exp)
    if resume:
        if not tune.Tuner.can_restore(path):
            raise ExperimentError(f"--resume: no experiment to resume at {path}")
        tuner = tune.Tuner.restore(path, trainable=TRAINABLE, param_space=space,
                                   resume_unfinished=True, resume_errored=True)
        with tracking.default_mode():  # its W&B callback, if any, is the one it started with
            return tuner.fit()
    scheduler = None
    if exp.scheduler:
        scheduler = ASHAScheduler(time_attr="training_iteration",
                                  metric=METRICS[exp.scheduler.metric], mode=exp.scheduler.mode,
                                  grace_period=exp.scheduler.grace_period,
                                  reduction_factor=exp.scheduler.reduction_factor)
    tuner = tune.Tuner(
        TRAINABLE,
        param_space=space,
        tune_config=tune.TuneConfig(num_samples=exp.num_samples, scheduler=scheduler,
                                    max_concurrent_trials=exp.max_concurrent_trials,
                                    trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=exp.name, storage_path=root, verbose=verbose,
            stop={"num_env_steps_sampled_lifetime": exp.env_steps},
            callbacks=tracking.tune_callbacks(exp.track, exp.name),
            failure_config=tune.FailureConfig(max_failures=exp.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=exp.checkpoint_every, checkpoint_at_end=True)),
    )
    with tracking.default_mode():
        return tuner.fit()

