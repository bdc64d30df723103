"""A training run on disk: settings, the RLlib config they make, progress rows, checkpoints.

Layout of a run folder::

    DIR/run.json                 settings of the run (policy, env, seed, scale, precision)
    DIR/progress.csv             one row per training iteration
    DIR/checkpoints/iter_NNNNNN/ RLlib checkpoints (Algorithm.from_checkpoint restores them),
                                 each with spikerl_run.json naming the env and policy
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from spikerl_ray.errors import UserError

RUN_FILE = "run.json"
PROGRESS_FILE = "progress.csv"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_INFO = "spikerl_run.json"
PROGRESS_COLUMNS = (
    "iteration", "env_steps", "episode_return_mean", "eval_return_mean", "env_steps_per_s",
    "updates_per_s", "num_updates", "critic_loss", "actor_loss", "time_s",
)


@dataclass
class RunSettings:
    """What a ``spikerl train`` run is; stored as ``run.json``."""

    policy: str = "spikerl"
    env: str = "HalfCheetah-v5"
    seed: int = 0
    env_runners: int = 0
    envs_per_runner: int = 1
    learners: int = 0
    gpus_per_learner: float = 0.0
    precision: str = "fp32"
    allreduce_dtype: str = "fp32"
    backend: str = "auto"
    warmup_steps: int = 10_000
    spiking_backend: str = "fused"
    compile: bool = False
    async_sampling: bool = False
    eval_every: int = 5
    eval_episodes: int = 10

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def build_config(s: RunSettings) -> Any:
    """The :class:`~spikerl_ray.td3.TD3Config` for a run's settings."""
    from policies import actor_kwargs_for_env
    from spikerl_ray.td3 import TD3Config

    actor_kwargs = actor_kwargs_for_env(s.policy, s.env)
    return (
        TD3Config()
        .environment(s.env)
        .env_runners(num_env_runners=s.env_runners, num_envs_per_env_runner=s.envs_per_runner)
        .learners(num_learners=s.learners, num_gpus_per_learner=s.gpus_per_learner)
        .training(policy=s.policy, actor_kwargs=actor_kwargs, precision=s.precision,
                  num_steps_random_warmup=s.warmup_steps, allreduce_dtype=s.allreduce_dtype,
                  torch_distributed_backend=None if s.backend == "auto" else s.backend,
                  spiking_backend=s.spiking_backend, compile_networks=s.compile,
                  async_sampling=s.async_sampling)
        .evaluation(evaluation_interval=s.eval_every or None,
                    evaluation_duration=s.eval_episodes,
                    evaluation_duration_unit="episodes", evaluation_num_env_runners=0,
                    evaluation_config={"explore": False})
        .debugging(seed=s.seed)
    )


class RunDir:
    """A run folder; refuses to overwrite an earlier run unless told to."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def holds_run(self) -> bool:
        return (self.path / RUN_FILE).exists() or (self.path / PROGRESS_FILE).exists()

    def start(self, settings: RunSettings, *, resume: bool, force: bool,
              dry_run: bool = False) -> RunSettings:
        """Prepares the folder; returns the settings to run with (the stored ones on resume).
        With ``dry_run`` only checks, changing nothing on disk."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} exists and is not a folder")
        if resume:
            if not (self.path / RUN_FILE).exists():
                raise UserError(f"--resume: {self.path} holds no run to resume "
                                f"(no {RUN_FILE})")
            stored = RunSettings.from_dict(json.loads((self.path / RUN_FILE).read_text()))
            for key in ("policy", "env"):
                if getattr(stored, key) != getattr(settings, key):
                    raise UserError(f"--resume: {self.path} holds a run with {key}="
                                    f"{getattr(stored, key)}, not {getattr(settings, key)}")
            return stored
        if self.holds_run() and not force:
            raise UserError(f"--out {self.path} already holds a run; pass --resume to "
                            "continue it or --force to replace it")
        if dry_run:
            return settings
        if self.holds_run():  # --force: the user asked to replace the earlier run
            for name in (RUN_FILE, PROGRESS_FILE):
                (self.path / name).unlink(missing_ok=True)
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / RUN_FILE).write_text(json.dumps(asdict(settings), indent=2))
        return settings

    def latest_checkpoint(self) -> Path | None:
        found = sorted(p for p in self.checkpoints.glob("iter_*") if (p / CHECKPOINT_INFO).exists())
        return found[-1] if found else None

    def save_checkpoint(self, algo: Any, settings: RunSettings, iteration: int,
                        env_steps: int) -> Path:
        path = self.checkpoints / f"iter_{iteration:06d}"
        algo.save_to_path(str(path.resolve()))
        info = {"env": settings.env, "policy": settings.policy, "seed": settings.seed,
                "iteration": iteration, "env_steps": env_steps}
        (path / CHECKPOINT_INFO).write_text(json.dumps(info, indent=2))
        return path

    def append_progress(self, row: dict[str, Any]) -> None:
        path = self.path / PROGRESS_FILE
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=PROGRESS_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
