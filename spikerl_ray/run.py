"""A ``spikerl train`` run folder: its settings, progress rows and checkpoints.

Layout::

    DIR/run.json          the run's settings (:class:`~spikerl_ray.settings.RunSettings`)
    DIR/progress.csv      one row per training iteration (energy columns included)
    DIR/energy.json       the run's energy per node and device, summed over iterations
    DIR/checkpoints/      checkpoints (:mod:`spikerl_ray.checkpoints`); the newest
                          ``keep_checkpoints`` are kept
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any

from policies.diagnostics import statistic_names
from spikerl_ray import checkpoints
from spikerl_ray.checkpoints import CHECKPOINT_DIR
from spikerl_ray.energy.accounting import ENERGY_COLUMNS, ENERGY_FILE
from spikerl_ray.errors import UserError
from spikerl_ray.settings import RunSettings

RUN_FILE = "run.json"
PROGRESS_FILE = "progress.csv"
# What a run writes into its folder; --force replaces these and nothing else there.
RUN_OUTPUTS = (RUN_FILE, PROGRESS_FILE, ENERGY_FILE, CHECKPOINT_DIR)
PROGRESS_COLUMNS = (
    "iteration", "env_steps", "episode_return_mean", "eval_return_mean", "env_steps_per_s",
    "updates_per_s", "num_updates", "critic_loss", "actor_loss", "nonfinite_updates",
    "nonfinite_transitions", "time_s",
    *statistic_names(),  # the actor's firing, saturation and operation statistics
    *ENERGY_COLUMNS,
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
            stored = RunSettings.model_validate_json((self.path / RUN_FILE).read_text())
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
        (self.path / RUN_FILE).write_text(settings.model_dump_json(indent=2))
        return settings

    def save_checkpoint(self, algo: Any, settings: RunSettings, iteration: int,
                        env_steps: int) -> tuple[Path, list[Path]]:
        """A checkpoint of ``algo`` with the run's identity and energy ledger
        (:func:`spikerl_ray.checkpoints.save`); returns it and the ones removed."""
        info = {"env": settings.env, "algo": settings.algo, "policy": settings.policy,
                "method": settings.method, "seed": settings.seed, "iteration": iteration,
                "env_steps": env_steps}
        return checkpoints.save(algo, self.checkpoints, info, [self.path / ENERGY_FILE],
                                settings.keep_checkpoints)

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
