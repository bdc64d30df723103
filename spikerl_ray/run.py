"""A training run on disk: settings, the RLlib config they make, progress rows, checkpoints.

Layout of a run folder::

    DIR/run.json                 settings of the run (algo, policy, env, seed, scale, ...)
    DIR/progress.csv             one row per training iteration (energy columns included)
    DIR/energy.json              the run's energy per node and device, summed over iterations
    DIR/checkpoints/iter_NNNNNN/ RLlib checkpoints (Algorithm.from_checkpoint restores them),
                                 each with spikerl_run.json naming the env and policy and
                                 listing every file's size and SHA-256, and energy.json
                                 as it stood then; the newest ``keep_checkpoints`` are kept

A checkpoint is written to ``checkpoints/.iter_NNNNNN.tmp`` and renamed when complete, so a
run killed while saving leaves no half-written ``iter_*`` folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from policies.diagnostics import statistic_names
from spikerl_ray.energy.accounting import DEFAULT_CARBON_INTENSITY, ENERGY_COLUMNS, ENERGY_FILE
from spikerl_ray.errors import UserError

RUN_FILE = "run.json"
PROGRESS_FILE = "progress.csv"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_INFO = "spikerl_run.json"
# What a run writes into its folder; --force replaces these and nothing else there.
RUN_OUTPUTS = (RUN_FILE, PROGRESS_FILE, ENERGY_FILE, CHECKPOINT_DIR)
ALGOS = ("td3", "sac", "ppo")
# RunSettings fields that only TD3 reads, with their defaults (a value other than the default
# under SAC or PPO is refused), and those PPO does not read either.
TD3_ONLY = {"precision": None, "pre_tanh_penalty": None, "compile": None,
            "async_sampling": False, "save_replay": False, "exploration_noise": None,
            "allreduce_dtype": "fp32", "backend": "auto"}
PPO_UNUSED = ("warmup_steps", "actor_lr", "critic_lr")
PROGRESS_COLUMNS = (
    "iteration", "env_steps", "episode_return_mean", "eval_return_mean", "env_steps_per_s",
    "updates_per_s", "num_updates", "critic_loss", "actor_loss", "nonfinite_updates",
    "nonfinite_transitions", "time_s",
    *statistic_names(),  # the actor's firing, saturation and operation statistics
    *ENERGY_COLUMNS,
)


@dataclass
class RunSettings:
    """What a ``spikerl train`` run is; stored as ``run.json``.

    ``method`` names a recipe of :mod:`spikerl_ray.methods` whose settings fill the fields
    left None (None: no recipe); optional TD3 settings still None then take TD3Config's
    defaults (PopSAN's schedule). ``policy`` is the network alone (None: the method's, else
    ``spikerl``). :meth:`resolved` applies both. ``algo`` is the algorithm (:data:`ALGOS`);
    recipes are TD3 recipes, so under SAC and PPO a method gives its network only, and
    settings only TD3 reads (:data:`TD3_ONLY`) are refused.
    """

    policy: str | None = None
    method: str | None = None
    algo: str = "td3"
    env: str = "HalfCheetah-v5"
    seed: int = 0
    env_runners: int = 0
    envs_per_runner: int = 1
    learners: int = 0
    cpus_per_learner: float = 1.0
    # CPUs Ray reserves for the driver, which holds a local learner and env runner: also its
    # PyTorch threads (spikerl_ray.resources.set_torch_threads).
    driver_cpus: int = 1
    gpus_per_learner: float = 0.0
    precision: str | None = None
    allreduce_dtype: str = "fp32"
    backend: str = "auto"
    warmup_steps: int | None = None
    spiking_backend: str | None = None  # None: TD3Config's ("auto")
    compile: bool | None = None  # None: TD3Config's (on where torch.compile can run)
    async_sampling: bool = False
    eval_every: int = 5
    eval_episodes: int = 10
    pre_tanh_penalty: float | None = None
    actor_lr: float | None = None
    critic_lr: float | None = None
    batch_size: int | None = None
    exploration_noise: float | None = None
    actor_kwargs: dict[str, Any] = field(default_factory=dict)
    learner_resources: dict[str, float] = field(default_factory=dict)
    env_runner_resources: dict[str, float] = field(default_factory=dict)
    energy_monitor: bool = True
    estimate_cpu_watts: float | None = None
    carbon_intensity: float = DEFAULT_CARBON_INTENSITY
    save_replay: bool = False
    checkpoint_every: int = 10  # iterations (~10k env steps)
    keep_checkpoints: int = 3
    max_nonfinite_updates: int = 1000

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def resolved(self) -> "RunSettings":
        """A copy with the policy and the recipe's settings filled in (explicit ones kept);
        raises ValueError for an unknown method or algorithm, or a setting the algorithm
        does not read."""
        from spikerl_ray.methods import get_method

        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; choose one of {', '.join(ALGOS)}")
        defaults = {**TD3_ONLY, **dict.fromkeys(PPO_UNUSED)}
        unused = [name for name in unused_settings(self.algo)
                  if getattr(self, name) != defaults[name]]
        if unused:
            raise ValueError(f"{self.algo.upper()} does not use these settings: "
                             f"{', '.join(unused)} (they are TD3's)")
        out = replace(self)
        if self.method is not None:
            method = get_method(self.method)
            out.policy = self.policy or method.policy
            for key, value in method.settings.items():
                if getattr(out, key) is None and self.algo == "td3":
                    setattr(out, key, value)
        out.policy = out.policy or "spikerl"
        if out.algo == "td3":
            out.precision = out.precision or "fp32"
        return out


def unused_settings(algo: str) -> list[str]:
    """The RunSettings fields ``algo`` does not read: none for TD3, :data:`TD3_ONLY` for SAC,
    those and :data:`PPO_UNUSED` for PPO."""
    if algo == "td3":
        return []
    return list(TD3_ONLY) + (list(PPO_UNUSED) if algo == "ppo" else [])


def _algo_settings(s: RunSettings) -> tuple[Any, dict[str, Any]]:
    """The config class of ``s.algo`` and the ``training()`` settings only it takes (None
    values: the config's default)."""
    if s.algo == "sac":
        from spikerl_ray.sac import SpikingSACConfig

        return SpikingSACConfig, {"num_steps_random_warmup": s.warmup_steps,
                                  "actor_lr": s.actor_lr, "critic_lr": s.critic_lr}
    if s.algo == "ppo":
        from spikerl_ray.ppo import SpikingPPOConfig

        return SpikingPPOConfig, {}
    from spikerl_ray.td3 import TD3Config

    return TD3Config, {
        "num_steps_random_warmup": s.warmup_steps, "pre_tanh_penalty": s.pre_tanh_penalty,
        "actor_lr": s.actor_lr, "critic_lr": s.critic_lr,
        "exploration_noise": s.exploration_noise, "save_replay": s.save_replay,
        "max_nonfinite_updates": s.max_nonfinite_updates, "compile_networks": s.compile,
        "precision": s.precision, "allreduce_dtype": s.allreduce_dtype,
        "torch_distributed_backend": None if s.backend == "auto" else s.backend,
        "async_sampling": s.async_sampling}


def build_config(s: RunSettings) -> Any:
    """The RLlib config for a run's settings (resolved first): a
    :class:`~spikerl_ray.td3.TD3Config`, :class:`~spikerl_ray.sac.SpikingSACConfig` or
    :class:`~spikerl_ray.ppo.SpikingPPOConfig`."""
    from policies import actor_kwargs_for_env

    s = s.resolved()
    config_class, own = _algo_settings(s)
    shared = {"train_batch_size_per_learner": s.batch_size, "spiking_backend": s.spiking_backend}
    recipe = {k: v for k, v in (own | shared).items() if v is not None}
    return (
        config_class()
        .environment(s.env)
        .env_runners(num_env_runners=s.env_runners, num_envs_per_env_runner=s.envs_per_runner,
                     custom_resources_per_env_runner=dict(s.env_runner_resources))
        .learners(num_learners=s.learners, num_cpus_per_learner=s.cpus_per_learner,
                  num_gpus_per_learner=s.gpus_per_learner,
                  custom_resources_per_learner=dict(s.learner_resources))
        .training(policy=s.policy, actor_kwargs=actor_kwargs_for_env(s.policy, s.env)
                  | s.actor_kwargs, method=s.method, **recipe)
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


class RunDir:
    """A run folder; refuses to overwrite an earlier run unless told to. ``name`` is how
    messages call it (the URI of a staged run, :mod:`spikerl_ray.storage`)."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or str(path)

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
            raise UserError(f"--out {self.name} exists and is not a folder")
        if resume:
            if not (self.path / RUN_FILE).exists():
                raise UserError(f"--resume: {self.name} holds no run to resume "
                                f"(no {RUN_FILE})")
            stored = RunSettings.from_dict(json.loads((self.path / RUN_FILE).read_text()))
            for key in ("algo", "policy", "env"):
                if getattr(stored, key) != getattr(settings, key):
                    raise UserError(f"--resume: {self.name} holds a run with {key}="
                                    f"{getattr(stored, key)}, not {getattr(settings, key)}")
            return stored
        if self.holds_run() and not force:
            raise UserError(f"--out {self.name} already holds a run; pass --resume to "
                            "continue it or --force to replace it")
        if dry_run:
            return settings
        if self.holds_run():  # --force: the user asked to replace the earlier run
            for name in RUN_OUTPUTS:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / RUN_FILE).write_text(json.dumps(asdict(settings), indent=2))
        return settings

    def checkpoints_newest_first(self) -> list[Path]:
        """The complete checkpoint folders (``iter_*``), newest first."""
        return sorted(self.checkpoints.glob("iter_*"), reverse=True)

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint that :func:`checkpoint_problem` finds nothing wrong with."""
        return next((p for p in self.checkpoints_newest_first()
                     if checkpoint_problem(p) is None), None)

    def save_checkpoint(self, algo: Any, settings: RunSettings, iteration: int,
                        env_steps: int) -> tuple[Path, list[Path]]:
        """Writes a checkpoint atomically; returns it and the older ones removed to keep
        ``settings.keep_checkpoints``."""
        path = self.checkpoints / f"iter_{iteration:06d}"
        tmp = self.checkpoints / f".{path.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        algo.save_to_path(str(tmp.resolve()))
        if (self.path / ENERGY_FILE).exists():
            shutil.copy2(self.path / ENERGY_FILE, tmp / ENERGY_FILE)
        info = {"env": settings.env, "algo": settings.algo, "policy": settings.policy,
                "method": settings.method,
                "seed": settings.seed, "iteration": iteration, "env_steps": env_steps,
                # What spikerl evaluate builds the module from (JSON, not RLlib's pickles).
                "model_config": algo.config.model_config,
                "files": {p.relative_to(tmp).as_posix(): _fingerprint(p)
                          for p in sorted(tmp.rglob("*")) if p.is_file()}}
        (tmp / CHECKPOINT_INFO).write_text(json.dumps(info, indent=2))
        if path.exists():  # the same iteration again, after resuming an older checkpoint
            shutil.rmtree(path)
        os.replace(tmp, path)
        removed = self.checkpoints_newest_first()[settings.keep_checkpoints:]
        for old in removed:
            shutil.rmtree(old)
        return path, removed

    def rewind(self, iteration: int) -> None:
        """Keeps the progress rows of iterations ``1..iteration`` (a resumed run continues
        after its checkpoint; rows written after it, even a torn last one, are dropped)."""
        path = self.path / PROGRESS_FILE
        if not path.exists():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns, kept = reader.fieldnames or list(PROGRESS_COLUMNS), []
            for row in reader:
                if row.get("iteration") != str(len(kept) + 1) or len(kept) >= iteration:
                    break
                kept.append(row)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)

    def append_progress(self, row: dict[str, Any]) -> None:
        """Appends one row; a resumed run keeps the columns its file was started with."""
        path = self.path / PROGRESS_FILE
        columns: list[str] = list(PROGRESS_COLUMNS)
        if path.exists():
            with path.open(newline="") as f:
                columns = next(csv.reader(f), columns)
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow(row)


def _fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with the checkpoint folder ``path`` (a missing or unreadable info file,
    a file missing, truncated or changed since it was written), or None."""
    try:
        info = json.loads((path / CHECKPOINT_INFO).read_text())
    except (OSError, ValueError) as exc:
        return f"its {CHECKPOINT_INFO} is missing or unreadable ({type(exc).__name__})"
    for name, expected in info.get("files", {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, not {expected['bytes']}"
        if _fingerprint(file)["sha256"] != expected["sha256"]:
            return f"{name} has changed since it was written (SHA-256 differs)"
    return None
