"""The algorithm runs under ``tune.Tuner`` by its registered name."""

from __future__ import annotations

from spikerl_ray.run import RunSettings, build_config
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
