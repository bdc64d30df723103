"""SAC on the shared replay learner, on real Ray: checkpoints restore its learner state as
TD3's do (random state, update count, replay), so a resumed run is reproducible."""

from __future__ import annotations

import torch

from tests.fast_start import FAST_START


def test_resuming_sac_is_reproducible_and_restores_the_learner(tmp_path, ray_session):
    from spikerl_ray.algorithms import build_config
    from spikerl_ray.settings import RunSettings

    settings = RunSettings(algo="sac", policy="ann", env="Pendulum-v1", warmup_steps=300,
                           eval_every=0, save_replay=True, energy_monitor=False,
                           batch_size=32, seed=0, **FAST_START)
    config = (build_config(settings).reporting(min_sample_timesteps_per_iteration=400)
              .training(num_steps_sampled_before_learning_starts=300, updates_per_step=0.25))

    def learner_view(algo) -> tuple[dict, dict, float]:
        [view] = [r.get() for r in algo.learner_group.foreach_learner(
            lambda l: (l.replay_state(),
                       {k: v.clone() for k, v in
                        l.module["default_policy"].state_dict().items()},
                       l.module["default_policy"].temperature().item()))]
        return view

    algo = config.build_algo()
    try:
        algo.train()
        algo.train()
        algo.save_to_path(str(tmp_path / "ckpt"))
        saved, saved_weights, alpha = learner_view(algo)
    finally:
        algo.stop()
    # 11 fragments of 50 steps from the 300th step on, round(50 x 0.25) updates each.
    assert saved["num_updates"] == 11 * round(50 * 0.25) and alpha != 1.0
    weights = []
    for _ in range(2):
        algo = config.build_algo()
        try:
            algo.restore_from_path(str(tmp_path / "ckpt"))
            state, restored, restored_alpha = learner_view(algo)
            assert state["num_updates"] == saved["num_updates"]
            assert torch.equal(state["replay_generator"], saved["replay_generator"])
            assert state["replay"]["size"] == saved["replay"]["size"] == 800
            assert restored_alpha == alpha
            # The float64 statistics come back from RLlib's checkpoint within rounding.
            assert all(torch.allclose(restored[k], v, rtol=1e-6) if "normalizer" in k
                       else torch.equal(restored[k], v) for k, v in saved_weights.items())
            algo.train()
            weights.append(learner_view(algo)[1])
        finally:
            algo.stop()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], saved_weights[k]) for k in saved_weights)
