"""Learning, proved by training for real with a fixed seed (issue: core, part 5).

Each run goes through the same path as ``spikerl train`` and asserts the evaluation return
(noise-free episodes) it reaches within the step budget. Warm-up is 1,000 random steps
instead of PopSAN's 10,000 so that the budgets leave room to learn.
"""

from __future__ import annotations

import csv

import pytest

from spikerl_ray.settings import RunSettings
from spikerl_ray.training import train

CASES = [
    ("spikerl", "Pendulum-v1", 15_000, -400.0, "fp32"),
    ("spikerl", "InvertedPendulum-v5", 20_000, 500.0, "fp32"),
    ("popsan", "Pendulum-v1", 15_000, -600.0, "fp32"),
    ("dsrl", "Pendulum-v1", 15_000, -600.0, "fp32"),
    ("ann", "Pendulum-v1", 15_000, -600.0, "fp32"),
    ("spikerl", "Pendulum-v1", 15_000, -400.0, "bf16"),  # bf16 autocast in the learner
]


@pytest.mark.slow
@pytest.mark.parametrize("policy, env, steps, threshold, precision", CASES,
                         ids=[f"{p}-{e}-{x}" for p, e, _, _, x in CASES])
def test_reaches_return(policy, env, steps, threshold, precision, tmp_path, ray_session):
    # driver_cpus=2: the thresholds were set with the driver's PyTorch at 2 threads; 1 thread
    # rounds differently and these fixed seeds then follow other trajectories (spikerl on
    # InvertedPendulum-v5: best evaluation 193 by 20k steps, against 796 by 12k with 2).
    settings = RunSettings(policy=policy, env=env, seed=0, warmup_steps=1000, eval_every=2,
                           eval_episodes=5, precision=precision, compile=False, driver_cpus=2)
    train(settings, tmp_path / "run", steps, progress=False)
    with (tmp_path / "run" / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["env_steps"]) == steps
    evals = [(int(r["env_steps"]), float(r["eval_return_mean"])) for r in rows
             if r["eval_return_mean"]]
    assert evals[-1][0] == steps  # evaluated at the end too
    assert max(ret for _, ret in evals) > threshold, evals
