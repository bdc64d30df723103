"""``tests.flaky_env:FlakyPendulum-v0``: Pendulum-v1 that fails the first time a Tune trial
builds it, so that tests see a trial fail once (Gymnasium imports this module for the id)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.envs.classic_control.pendulum import PendulumEnv

# Left in the trial's working directory (Tune's per-trial folder, kept across retries).
MARKER = "flaky_env_failed_once"


class FlakyPendulum(PendulumEnv):
    """Pendulum whose first construction inside a Tune trial raises ``RuntimeError``."""

    def __init__(self, **kwargs: Any) -> None:
        # Tune sets this variable in a trial's process, whose working directory is the trial's.
        if "TUNE_ORIG_WORKING_DIR" in os.environ and not Path(MARKER).exists():
            Path(MARKER).touch()
            raise RuntimeError("FlakyPendulum fails once per trial, on purpose")
        super().__init__(**kwargs)


gym.register("FlakyPendulum-v0", entry_point=FlakyPendulum, max_episode_steps=200)
