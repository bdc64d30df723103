"""Reliability (issue 9): non-finite numbers never reach the weights, checkpoints are atomic,
verified and pruned, and a killed ``spikerl train`` resumes where its checkpoint left it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from policies import RunningNormalizer, TwinQCritic, build_actor
from conftest import kill_when
from spikerl_ray.cli import main
from spikerl_ray.core.replay import Batch, TransitionReplay, finite_rows
from spikerl_ray.core.td3 import TD3Hyperparams, TD3Update, adam
from spikerl_ray.checkpoints import load_module
from spikerl_ray import checkpoints
from spikerl_ray.run import PROGRESS_COLUMNS, RunDir
from tests.fast_start import FAST_START, FAST_START_FLAGS

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--method", "ann", "--env", "Pendulum-v1", "--seed", "0", "--warmup-steps",
         "500", "--eval-every", "100", "--eval-episodes", "1", "--no-progress", *FAST_START_FLAGS]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "progress.csv").open() as f:
        return list(csv.DictReader(f))


# --- the non-finite guard of the update --------------------------------------------------


def _update(fused: bool) -> TD3Update:
    torch.manual_seed(0)
    actor, critic = build_actor("ann", 3, 1), TwinQCritic(3, 1)
    targets = [build_actor("ann", 3, 1), TwinQCritic(3, 1)]
    targets[0].load_state_dict(actor.state_dict())
    targets[1].load_state_dict(critic.state_dict())
    optim = adam if fused else (lambda p, lr: torch.optim.Adam(p, lr))
    return TD3Update(actor, critic, *targets, RunningNormalizer(3),
                     optim(actor.parameters(), 1e-3), optim(critic.parameters(), 1e-3),
                     TD3Hyperparams(policy_delay=1))


def _batch(n: int = 16, reward: float = 0.0) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(obs=torch.randn(n, 3, generator=g), actions=torch.rand(n, 1, generator=g),
                 rewards=torch.full((n,), reward), next_obs=torch.randn(n, 3, generator=g),
                 terminateds=torch.zeros(n))


def _snapshot(td3: TD3Update) -> list[torch.Tensor]:
    nets = [td3.actor, td3.critic, td3.actor_target, td3.critic_target]
    states = [s for o in (td3.actor_optim, td3.critic_optim) for st in o.state.values()
              for s in st.values()]
    return [t.detach().clone() for n in nets for t in n.state_dict().values()] + [
        s.clone() for s in states]


@pytest.mark.parametrize("fused", [True, False], ids=["fused-adam", "adam"])
def test_a_non_finite_update_changes_nothing_and_is_counted(fused):
    td3 = _update(fused)
    td3.step(_batch())  # optimizer state exists from here on
    before = _snapshot(td3)
    td3.step(_batch(reward=float("nan")))
    td3.step(_batch(reward=float("inf")))
    after = _snapshot(td3)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert td3.read_nonfinite() == (2, 2)
    td3.step(_batch())  # finite again: applied, and the run of skips ends
    assert not all(torch.equal(a, b) for a, b in zip(after, _snapshot(td3)))
    assert td3.read_nonfinite() == (0, 0)


def test_finite_rows_drops_and_counts_non_finite_transitions():
    t = {"obs": np.zeros((4, 2)), "actions": np.zeros((4, 1)), "rewards": np.zeros(4),
         "next_obs": np.zeros((4, 2)), "terminateds": np.zeros(4)}
    t["obs"][1, 0], t["rewards"][3] = np.nan, -np.inf
    kept, dropped = finite_rows(t)
    assert dropped == 2 and len(kept["rewards"]) == 2 and np.isfinite(kept["obs"]).all()
    same, none = finite_rows({k: v[[0, 2]] for k, v in t.items()})
    assert none == 0 and len(same["obs"]) == 2


def test_replay_state_round_trip_full_and_partial():
    for n in (5, 13):  # partly filled; wrapped around its capacity of 8
        a = TransitionReplay(8, 2, 1, seed=0)
        a.add({"obs": np.arange(2 * n).reshape(n, 2), "actions": np.ones((n, 1)),
               "rewards": np.arange(n), "next_obs": np.zeros((n, 2)),
               "terminateds": np.zeros(n)})
        b = TransitionReplay(8, 2, 1, seed=5)
        b.load_state_dict(a.state_dict())
        b.generator.set_state(a.generator.get_state())
        assert len(b) == len(a)
        for x, y in zip(vars(a.sample(32)).values(), vars(b.sample(32)).values()):
            assert torch.equal(x, y)


# --- checkpoints ------------------------------------------------------------------------


def test_progress_rewinds_to_the_checkpoint_and_drops_a_torn_row(tmp_path):
    run = RunDir(tmp_path)
    for i in range(1, 5):
        run.append_progress({"iteration": i, "env_steps": 1000 * i})
    with (tmp_path / "progress.csv").open("a") as f:
        f.write("5,50")  # killed while writing
    run.rewind(3)
    assert [r["iteration"] for r in _rows(tmp_path)] == ["1", "2", "3"]
    assert list(_rows(tmp_path)[0]) == list(PROGRESS_COLUMNS)


# --- training runs on a real Ray --------------------------------------------------------


class _Poisoned(gym.Wrapper):
    """Pendulum whose observations hold a NaN every 7th step and whose reward is NaN every
    11th (an environment bug, or a sensor that fails)."""

    def __init__(self) -> None:
        super().__init__(gym.make("Pendulum-v1"))
        self.t = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        if self.t % 7 == 0:
            obs = np.full_like(obs, np.nan)
        if self.t % 11 == 0:
            reward = float("nan")
        return obs, reward, terminated, truncated, info


def _poisoned() -> gym.Env:
    return _Poisoned()


gym.register("SpikerlTest/PoisonedPendulum-v0", entry_point=_poisoned, max_episode_steps=200)


def test_nans_from_the_environment_never_reach_the_weights(tmp_path, ray_session):
    out = tmp_path / "run"
    argv = [*TRAIN, "--env", "SpikerlTest/PoisonedPendulum-v0", "--steps", "2000"]
    assert main([*argv, "--out", str(out)]) == 0
    rows = _rows(out)
    dropped = sum(int(r["nonfinite_transitions"]) for r in rows)
    # A NaN observation spoils two transitions (as next_obs, then as obs) and, once the actor
    # acts on it, the rest of its episode (Pendulum integrates the NaN action).
    assert 2000 / 7 < dropped < 2000
    assert all(np.isfinite(float(r["critic_loss"])) for r in rows if r["critic_loss"])
    assert int(rows[-1]["num_updates"]) > 0
    module, _ = load_module(checkpoints.latest(RunDir(out).checkpoints))
    assert all(torch.isfinite(t).all() for t in module.state_dict().values())
    assert module.obs_normalizer.count.item() == 2000 - dropped


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_checkpoint(tmp_path, capsys,
                                                                           ray_session):
    """A critic learning rate of 1e30 blows the critic up at its first update; every later
    update has NaN gradients and is skipped, until the run gives up."""
    from spikerl_ray.settings import RunSettings
    from spikerl_ray.training import train

    out = tmp_path / "run"
    settings = RunSettings(method="ann", env="Pendulum-v1", warmup_steps=500, eval_every=100,
                           eval_episodes=1, critic_lr=1e30, checkpoint_every=1,
                           max_nonfinite_updates=1500, **FAST_START)
    from spikerl_ray.errors import UserError

    with pytest.raises(UserError) as err:
        train(settings, out, 5000, progress=False)
    message = str(err.value)
    rows = _rows(out)
    assert message.startswith(f"stopped at iteration {len(rows) + 1}: ")
    assert "gradient updates in a row had NaN or Inf gradients" in message
    assert f"iter_{len(rows):06d}, holds finite weights" in message
    assert all(int(r["nonfinite_updates"]) > 0 for r in rows)
    ckpt = checkpoints.latest(RunDir(out).checkpoints)
    assert ckpt.name == f"iter_{len(rows):06d}" and checkpoints.problem(ckpt) is None
    module, _ = load_module(ckpt)
    assert all(torch.isfinite(t).all() for t in module.state_dict().values())


def test_checkpoints_are_pruned_verified_and_resume_falls_back(tmp_path, capsys, ray_session):
    out = tmp_path / "run"
    assert main([*TRAIN, "--steps", "3000", "--out", str(out), "--checkpoint-every", "1",
                 "--keep-checkpoints", "2"]) == 0
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["iter_000002", "iter_000003"]  # the newest 2; no temporary folder left
    newest = out / "checkpoints" / "iter_000003"
    state = next(newest.rglob("module_state*"))
    state.write_bytes(state.read_bytes()[:-100])  # truncated
    assert "bytes, not" in checkpoints.problem(newest)
    capsys.readouterr()
    assert main([*TRAIN, "--steps", "4000", "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint " in err and "iter_000003 is damaged" in err and "trying the one" in err
    rows = _rows(out)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]  # 3 redone, once
    assert [int(r["env_steps"]) for r in rows] == [1000, 2000, 3000, 4000]
    energy = json.loads((out / "energy.json").read_text())
    assert energy["env_steps"] == 4000  # the ledger rewound to the checkpoint, then added


def test_resuming_a_checkpoint_is_reproducible_and_restores_the_learner(tmp_path, ray_session):
    """Two restores of one checkpoint (replay saved) train identically; the restored learner
    holds the checkpoint's replay, random state, update count and observation statistics."""
    from spikerl_ray.algorithms import build_config
    from spikerl_ray.settings import RunSettings

    settings = RunSettings(method="ann", env="Pendulum-v1", warmup_steps=500, eval_every=100,
                           save_replay=True, energy_monitor=False, **FAST_START)
    config = build_config(settings)
    algo = config.build_algo()
    try:
        algo.train()
        algo.train()
        algo.save_to_path(str(tmp_path / "ckpt"))
        learner = algo.learner_group._learner
        saved = learner.replay_state()
        count = learner.module["default_policy"].obs_normalizer.count.item()
    finally:
        algo.stop()
    weights = []
    for _ in range(2):
        algo = config.build_algo()
        try:
            algo.restore_from_path(str(tmp_path / "ckpt"))
            learner = algo.learner_group._learner
            state = learner.replay_state()
            assert state["num_updates"] == saved["num_updates"] > 0
            assert torch.equal(state["replay_generator"], saved["replay_generator"])
            assert state["replay"]["size"] == saved["replay"]["size"] == 2000
            assert learner.module["default_policy"].obs_normalizer.count.item() == count
            assert algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime")) == 2000
            algo.train()
            weights.append({k: v.clone() for k, v in
                            learner.module["default_policy"].state_dict().items()})
        finally:
            algo.stop()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_a_killed_training_resumes_with_no_row_repeated_or_lost(tmp_path, ray_session):
    out = tmp_path / "run"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    driver = subprocess.Popen([sys.executable, "-m", "spikerl_ray.cli", *TRAIN, "--steps",
                               "20000", "--out", str(out), "--checkpoint-every", "2"],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    kill_when(driver, lambda: (out / "progress.csv").exists() and len(_rows(out)) >= 5, 600)
    before = _rows(out)
    kept = checkpoints.latest(RunDir(out).checkpoints)
    at = json.loads((kept / "spikerl_run.json").read_text())["iteration"]
    assert at >= 4 and len(before) >= at
    assert main([*TRAIN, "--steps", str(1000 * (len(before) + 2)), "--out", str(out),
                 "--resume"]) == 0
    after = _rows(out)
    assert [int(r["iteration"]) for r in after] == list(range(1, len(before) + 3))
    assert after[:at] == before[:at]  # the rows up to the checkpoint, untouched
    assert [int(r["env_steps"]) for r in after] == [1000 * i for i in range(1, len(after) + 1)]
