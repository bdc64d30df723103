"""The spiking actor does not collapse to a constant action on Hopper-v5 (learning-quality
issue), proved by training for real, with its negative control: the same network and seed
without the ``spikerl`` recipe's pre-tanh penalty collapses (docs/learning_quality.md).

Both runs keep PopSAN's schedule, whose 10,000 random warm-up steps (with updates from step
1,000) are where the collapse happens: the actor is trained on a critic fitted to random
actions without ever acting, so it is pushed the same way for every observation.
"""

from __future__ import annotations

import csv

import pytest

from policies.diagnostics import OUTPUT_SATURATION_WARNING
from spikerl_ray.settings import RunSettings
from spikerl_ray.training import train

STEPS = 10_000


def _train(tmp_path, penalty: float | None) -> list[dict[str, str]]:
    # fp32 as measured in docs/learning_quality.md (the recipe's default is bf16).
    settings = RunSettings(method="spikerl", env="Hopper-v5", seed=0, precision="fp32",
                           compile=False, driver_cpus=2,  # as calibrated (test_learning.py)
                           eval_every=5, eval_episodes=5, pre_tanh_penalty=penalty)
    train(settings, tmp_path / "run", STEPS, progress=False)
    with (tmp_path / "run" / "progress.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_spikerl_learns_hopper_without_collapsing(tmp_path, ray_session):
    rows = _train(tmp_path, penalty=None)  # the recipe's penalty
    assert int(rows[-1]["env_steps"]) == STEPS
    spreads = [float(r["action_std"]) for r in rows]
    saturation = [float(r["silent_output"]) + float(r["always_output"]) for r in rows]
    # Actions keep varying across observations at every iteration after the first updates.
    assert min(spreads[2:]) > 0.05, spreads
    assert max(saturation) < OUTPUT_SATURATION_WARNING, saturation
    evals = [float(r["eval_return_mean"]) for r in rows if r["eval_return_mean"]]
    assert evals[-1] > 100.0, evals  # collapsed actors fall over at about 40


@pytest.mark.slow
def test_without_the_penalty_the_same_actor_collapses(tmp_path, ray_session):
    # Negative control: PopSAN's plain actor loss on the same network and seed.
    rows = _train(tmp_path, penalty=0.0)
    last = rows[-1]
    assert float(last["action_std"]) < 0.01
    assert float(last["silent_output"]) + float(last["always_output"]) >= 0.99
    assert float(last["eval_return_mean"]) < 100.0
