"""Experiment tracking with Weights & Biases (``--track wandb``), offline unless
``WANDB_MODE`` says otherwise, so that it needs no account or network (``wandb sync
DIR/wandb/offline-run-*`` later).

``spikerl train``: :func:`track` holds one W&B run per run folder, in ``RUN/wandb/``; its
config is the run settings, its history the progress rows at ``step=env_steps``; ``--resume``
continues the same W&B run id (stored in ``RUN/wandb/spikerl-run-id``; offline, each session
is a folder ``RUN/wandb/offline-run-*-ID``; ``wandb sync`` uploads them as one run).
``spikerl tune``: Tune's own ``WandbLoggerCallback`` (:func:`tune_callbacks`), one W&B run per
trial in its trial folder, grouped by the experiment.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from spikerl_ray.errors import UserError

if TYPE_CHECKING:
    from spikerl_ray.run import RunDir
    from spikerl_ray.settings import RunSettings
    from spikerl_ray.storage import Mirror

PROJECT = "spikerl-ray"
WANDB_DIR = "wandb"
RUN_ID_FILE = f"{WANDB_DIR}/spikerl-run-id"


def require(track: str | None) -> ModuleType | None:
    """The ``wandb`` module when ``track`` is ``"wandb"`` (else None); a one-line
    :class:`UserError` naming the extra to install when it is missing."""
    if track != "wandb":
        return None
    try:
        import wandb
    except ImportError:
        raise UserError("--track wandb needs the wandb package: pip install -e '.[wandb]'"
                        ) from None
    return wandb


def mode() -> str:
    """W&B's mode: ``WANDB_MODE`` if set (``online`` uploads as it trains), else offline."""
    return os.environ.get("WANDB_MODE", "offline")


@contextmanager
def track(settings: RunSettings, run: RunDir, mirror: Mirror | None,
          resume: bool) -> Iterator[Tracker | None]:
    """The W&B run of a ``spikerl train`` run with ``--track wandb`` (None without), finished
    when the block ends (marked failed on an error); a run at a URI gets its W&B folder
    copied there."""
    wandb = require(settings.track)
    if wandb is None:
        yield None
        return
    tracker = Tracker(wandb, settings, run, mirror, resume)
    try:
        yield tracker
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish(exit_code=0)


class Tracker:
    """One W&B run of a run folder: :meth:`log` each progress row, then :meth:`finish`."""

    def __init__(self, wandb: ModuleType, settings: RunSettings, run: RunDir,
                 mirror: Mirror | None, resume: bool) -> None:
        self.wandb, self.mirror = wandb, mirror
        id_file = run.path / RUN_ID_FILE
        if resume and mirror is not None:
            mirror.pull(WANDB_DIR, keep=lambda rel: rel == RUN_ID_FILE)
        run_id = id_file.read_text().strip() if resume and id_file.exists() else None
        if run_id is None:
            run_id = uuid.uuid4().hex[:8]
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + "\n")
        try:
            self.run = wandb.init(mode=mode(), dir=run.path, project=PROJECT,
                                  group=settings.env, name=Path(run.name.rstrip("/")).name,
                                  id=run_id, resume="allow", job_type="train",
                                  config=settings.model_dump(mode="json"))
        except wandb.errors.Error as exc:  # online without a login, say
            raise UserError(f"--track wandb: {str(exc).strip().splitlines()[0]}") from None

    def log(self, row: dict[str, Any]) -> None:
        """Logs a progress row (its set values) at its env steps."""
        self.run.log({k: v for k, v in row.items() if v is not None}, step=row["env_steps"])

    def finish(self, exit_code: int = 0) -> None:
        """Ends the W&B run and waits until W&B's service process has written its files (it
        closes them after ``finish`` returns); copies ``RUN/wandb`` to a URI run."""
        self.run.finish(exit_code=exit_code)
        self.wandb.sdk.teardown()
        if self.mirror is not None:
            self.mirror.push(WANDB_DIR)


def tune_callbacks(track: str | None, experiment: str) -> list[Any]:
    """Tune's callbacks for ``track``: Tune's ``WandbLoggerCallback`` (project ``spikerl-ray``,
    group the experiment's name, offline unless ``WANDB_MODE`` says otherwise) for
    ``"wandb"``, each trial's W&B run written out when the trial ends (:func:`_at_trial_end`).
    """
    if require(track) is None:
        return []
    return [_at_trial_end()(project=PROJECT, group=experiment, mode=mode())]


def _at_trial_end() -> type:
    """Tune's ``WandbLoggerCallback``, each trial's W&B run written out when the trial ends.
    Tune's own waits for its logging actors only at the experiment's end, after its last copy
    of the trial folders from the driver's staging folder to the storage path (the trials that
    end last would lose their W&B files there), and Ray kills an actor's child processes, W&B's
    service among them, once the actor returns: here a trial's end waits for its actor, and the
    actor for W&B's service (``wandb.sdk.teardown``)."""
    import ray
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class LoggingActor(_WandbLoggingActor):
        def run(self) -> None:
            super().run()
            self._wandb.sdk.teardown()

    class Callback(WandbLoggerCallback):
        _logger_actor_cls = LoggingActor

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            future = self._trial_logging_futures.get(trial)
            super().log_trial_end(trial, failed)
            if future is not None:
                ray.wait([future], timeout=self._upload_timeout)
                self._cleanup_logging_actors()

    return Callback


@contextmanager
def default_mode() -> Iterator[None]:
    """``WANDB_MODE`` set to :func:`mode` for the block (Tune's W&B callback asks for an API
    key unless it says offline), as it was afterwards."""
    before = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = mode()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("WANDB_MODE", None)
