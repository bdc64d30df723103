"""The algorithm runs under ``tune.Tuner`` by its registered name."""

from __future__ import annotations

import json
from pathlib import Path

from spikerl_ray.algorithms import build_config
from spikerl_ray.settings import RunSettings
from tests.fast_start import FAST_START


def test_tuner_runs_td3_by_name(tmp_path, ray_session):
    from ray import tune

    import spikerl_ray.td3  # noqa: F401  (registers "TD3" with Tune)

    config = build_config(RunSettings(policy="ann", env="Pendulum-v1", warmup_steps=500,
                                      eval_every=1, eval_episodes=1, **FAST_START))
    tuner = tune.Tuner(
        "TD3",
        param_space=config.training(policy=tune.grid_search(["ann", "spikerl"])),
        run_config=tune.RunConfig(stop={"num_env_steps_sampled_lifetime": 2000},
                                  storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert results.num_errors == 0 and len(results) == 2
    for result in results:
        assert result.metrics["num_env_steps_sampled_lifetime"] >= 2000
        assert result.metrics["learners"]["default_policy"]["num_gradient_updates_lifetime"] > 0
        assert "episode_return_mean" in result.metrics["evaluation"]["env_runners"]


def test_one_experiment_trains_td3_sac_and_ppo_trials(tmp_path, ray_session):
    """Method entries ``METHOD/ALGO`` put RLlib's SAC and PPO beside TD3 in one Tuner, and
    ``METHOD@MODULE:FACTORY`` a user's actor; the experiment's TD3-only settings (``compile``)
    are left out of the SAC and PPO trials."""
    from spikerl_ray.experiments.schema import Experiment
    from spikerl_ray.experiments.tune import run_experiment
    from spikerl_ray.report.tables import tidy_table

    exp = Experiment(name="algos", methods=["ann", "ann/sac", "ann/ppo",
                                            "ann@examples.plain_actor:make_actor"],
                     envs=["Pendulum-v1"],
                     seeds=[0], env_steps=2000, evaluation={"every": 1, "episodes": 1},
                     settings={"warmup_steps": 1000, "compile": False, "energy_monitor": False},
                     storage_path=str(tmp_path))
    results = run_experiment(exp, verbose=0)
    assert results.num_errors == 0 and len(results) == 4
    trials = {json.loads((Path(r.path) / "params.json").read_text())["method"]: r
              for r in results}
    assert {m: r.config["method"] for m, r in trials.items()} == {m: m for m in trials}
    losses = {m: set(r.metrics["learners"]["default_policy"]) for m, r in trials.items()}
    assert "critic_loss" in losses["ann"] and "qf_loss" in losses["ann/sac"] and \
        "vf_loss" in losses["ann/ppo"]
    table = tidy_table(tmp_path / "algos")
    assert sorted(table["method"].unique()) == ["ann", "ann/ppo", "ann/sac",
                                                "ann@examples.plain_actor:make_actor"]
    # The user's actor trained in its trial: its own network, not the method's.
    user = trials["ann@examples.plain_actor:make_actor"].config["algorithm"]
    assert user["policy"] == "examples.plain_actor:make_actor"
    assert table.groupby("method")["eval_return"].count().min() >= 1
