"""``spikerl train``: one run, top to bottom. :func:`train` resolves the settings (before Ray
starts, so that bad input costs nothing), prepares the run folder, starts or joins Ray, builds
the algorithm of the registry (:func:`spikerl_ray.algorithms.build_config`), and runs
:class:`TrainingLoop`: restore, then iterations that each record a progress row, account
energy, report to the console and checkpoint."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from policies.diagnostics import collapse_warning, statistic_names
from spikerl_ray import checkpoints, session, tracking
from spikerl_ray.algorithms import build_config, check_actor
from spikerl_ray.checkpoints import CHECKPOINT_DIR, CHECKPOINT_INFO
from spikerl_ray.energy.accounting import ENERGY_COLUMNS, ENERGY_FILE, EnergyLedger, load_energy
from spikerl_ray.envs import continuous_spaces
from spikerl_ray.errors import NonFiniteError, UserError
from spikerl_ray.resources import check, cluster_nodes, describe, local_node, requests
from spikerl_ray.run import PROGRESS_FILE, RUN_FILE, RUN_OUTPUTS, RunDir
from spikerl_ray.settings import RunSettings
from spikerl_ray.storage import Mirror, is_uri


def run_requests(settings: RunSettings) -> list[tuple[str, dict[str, float]]]:
    """What a ``spikerl train`` run asks Ray for (:func:`spikerl_ray.resources.requests`). Its
    driver is this process, not a Ray actor, and reserves nothing; a learner inside it (no
    remote learners) uses the GPU of the driver's machine."""
    reqs = requests(build_config(settings))
    gpus = reqs[0][1].get("GPU", 0.0)
    return ([("learner in the driver", {"GPU": gpus})] if gpus else []) + reqs[1:]


def check_resources(reqs: list[tuple[str, dict[str, float]]], address: str | None) -> None:
    """Refuses a request the cluster (or, before the embedded Ray starts, this machine) can
    never satisfy, in one line naming the missing resource."""
    import ray

    if address or ray.is_initialized():
        check(reqs, cluster_nodes(), "the Ray cluster")
    else:
        check(reqs, [local_node()], "this machine")


def gradient_updates(learner: dict[str, Any]) -> int:
    """The gradient updates so far from a learner's results: counted by our learners (TD3,
    SAC); RLlib's PPO learner counts samples, one update per minibatch."""
    updates = learner.get("num_gradient_updates_lifetime")
    if updates is None:
        batch = learner.get("module_train_batch_size_mean") or 1
        updates = round(learner.get("num_module_steps_trained_lifetime", 0) / batch)
    return int(updates)


def _row(result: dict[str, Any], evaluated: bool, wall: float, steps_before: float,
         updates_before: float) -> dict[str, Any]:
    learner = result.get("learners", {}).get("default_policy", {})
    steps = result.get("num_env_steps_sampled_lifetime", 0)
    updates = gradient_updates(learner)
    eval_ret = (result.get("evaluation", {}).get("env_runners", {}).get("episode_return_mean")
                if evaluated else None)
    energy = result.get("energy") or {}
    return {
        "iteration": result["training_iteration"],
        "env_steps": int(steps),
        "episode_return_mean": result.get("env_runners", {}).get("episode_return_mean"),
        "eval_return_mean": eval_ret,
        "env_steps_per_s": (steps - steps_before) / wall if wall > 0 else math.nan,
        "updates_per_s": (updates - updates_before) / wall if wall > 0 else math.nan,
        "num_updates": int(updates),
        # TD3's losses; SAC's Q loss or PPO's value loss; SAC's and PPO's policy loss.
        "critic_loss": next((learner[k] for k in ("critic_loss", "qf_loss", "vf_loss")
                             if k in learner), None),
        "actor_loss": learner.get("actor_loss", learner.get("policy_loss")),
        **{k: None if learner.get(k) is None else int(learner[k])
           for k in ("nonfinite_updates", "nonfinite_transitions")},
        "time_s": result.get("time_total_s"),
        **{name: learner.get(name) for name in statistic_names()},
        **{name: energy.get(name) for name in ENERGY_COLUMNS},
    }


def _stage(out: str | Path, resume: bool) -> tuple[RunDir, Mirror | None]:
    """The run folder to work in: ``out`` itself, or for a URI a staging folder holding
    what the URI holds (its small files and, to resume, its latest checkpoint)."""
    if not is_uri(out):
        return RunDir(out), None
    mirror = Mirror(str(out))
    run = RunDir(mirror.local, name=str(out))
    mirror.pull()
    if resume:  # the kept checkpoints, so that a damaged newest one can fall back
        mirror.pull(CHECKPOINT_DIR, recursive=True,
                    keep=lambda rel: not rel.split("/")[1].startswith("."))
    return run, mirror


def _push(mirror: Mirror | None, checkpoint: Path | None = None,
          removed: list[Path] = ()) -> None:
    """Copies the run's small files, and ``checkpoint`` if given, to the URI, and deletes
    there the checkpoints ``removed`` here."""
    if mirror is None:
        return
    for name in (PROGRESS_FILE, ENERGY_FILE):
        if (mirror.local / name).exists():
            mirror.push(name)
    if checkpoint is not None:
        mirror.push(checkpoint.relative_to(mirror.local).as_posix(), last=CHECKPOINT_INFO)
    if removed:
        mirror.delete(tuple(p.relative_to(mirror.local).as_posix() for p in removed))


def resolve(settings: RunSettings) -> RunSettings:
    """The settings a run trains with (:meth:`RunSettings.resolved`), checked against its
    environment, its algorithm's config and its actor; bad ones end in one :class:`UserError`
    line, before anything starts."""
    continuous_spaces(settings.env)
    try:
        settings = settings.resolved()
        build_config(settings).validate()
        check_actor(settings)
    except ValueError as exc:
        # RLlib appends a hint on how to skip validation; the first line is the message.
        raise UserError(str(exc).strip().splitlines()[0]) from None
    return settings


def train(settings: RunSettings, out: str | Path, steps: int, *, resume: bool = False,
          force: bool = False, address: str | None = None, progress: bool = True) -> str:
    """Trains until ``steps`` env steps in total; returns where the last checkpoint is. ``out``
    is a folder or a URI (:mod:`spikerl_ray.storage`)."""
    settings = resolve(settings)
    tracking.require(settings.track)  # a missing wandb ends here, before Ray starts
    run, mirror = _stage(out, resume)
    try:
        settings = _open(run, mirror, settings, resume=resume, force=force, address=address)
        algo = build_config(settings).build_algo()
        try:
            loop = TrainingLoop(algo, run, settings, steps, mirror, progress)
            if resume:
                loop.restore()
            with tracking.track(settings, run, mirror, resume) as loop.tracker:
                checkpoint = loop.run()
        finally:
            _push(mirror)
            algo.stop()
    finally:
        if mirror is not None:
            mirror.close()
    return f"{str(out).rstrip('/')}/{checkpoint.relative_to(run.path).as_posix()}"


def _open(run: RunDir, mirror: Mirror | None, settings: RunSettings, *, resume: bool,
          force: bool, address: str | None) -> RunSettings:
    """Checks the run folder, the resources asked for and starts or joins Ray, then claims the
    folder (writes ``run.json``, or on resume takes the stored settings)."""
    settings = run.start(settings, resume=resume, force=force, dry_run=True)
    if resume and not checkpoints.newest_first(run.checkpoints):
        raise UserError(f"--resume: {run.name} has no checkpoint to resume from")
    reqs = run_requests(settings)
    asked = describe(reqs) if reqs else "nothing beyond this process"
    print(f"spikerl train: asks Ray for {asked}")
    if not address:
        check_resources(reqs, address)
    session.init_ray(address)
    check_resources(reqs, address)
    replacing = force and run.holds_run()
    settings = run.start(settings, resume=resume, force=force)
    if mirror is not None and not resume:
        if replacing:  # --force, as run.start did in the staging folder
            mirror.delete(RUN_OUTPUTS)
        mirror.push(RUN_FILE)
    return settings


class TrainingLoop:
    """The iterations of one run: each trains, records its progress row and energy, reports
    to the console and checkpoints when due."""

    def __init__(self, algo: Any, run: RunDir, settings: RunSettings, steps: int,
                 mirror: Mirror | None, progress: bool) -> None:
        from tqdm import tqdm

        self.algo, self.folder, self.settings, self.steps, self.mirror = (
            algo, run, settings, steps, mirror)
        self.env_steps = 0
        self.updates = 0.0
        self.ledger = EnergyLedger(settings.carbon_intensity)
        self.last_checkpoint: Path | None = None
        self.warned = False
        self.tracker: tracking.Tracker | None = None  # train() sets it with --track wandb
        self.bar = tqdm(total=steps, unit="step", disable=not progress, dynamic_ncols=True)

    def restore(self) -> None:
        """Continues from the newest usable checkpoint: its weights and counters, progress
        rows up to it, and the energy ledger as it stood then."""
        path, info = checkpoints.restore(self.algo, self.folder.checkpoints, self.folder.name)
        self.folder.rewind(info["iteration"])
        self.last_checkpoint = path
        self.env_steps = int(self.algo.metrics.peek(
            ("env_runners", "num_env_steps_sampled_lifetime"), default=0))
        stored = load_energy(path) or load_energy(self.folder.path)  # older: the run's
        if stored:
            self.ledger = EnergyLedger.from_dict(stored)
        self.bar.update(min(self.env_steps, self.steps))

    def run(self) -> Path:
        """Iterates until the run has its env steps; returns the last checkpoint."""
        wrote = False
        while self.env_steps < self.steps:
            row, result = self._iterate()
            self._record(row, result)
            self._report(row)
            last = row["env_steps"] >= self.steps
            if last or self.algo.iteration % self.settings.checkpoint_every == 0:
                self._checkpoint()
                wrote = True
        self.bar.close()
        if not wrote:  # resumed at or past the end: a checkpoint of where it stands
            self._checkpoint()
        return self.last_checkpoint

    def _iterate(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """One training iteration (an evaluation where due, and always at the end); its
        progress row and RLlib's result."""
        t0 = time.perf_counter()
        try:
            result = self.algo.train()
        except NonFiniteError as exc:
            kept = (f"; the last checkpoint, {self.folder.name}/{CHECKPOINT_DIR}/"
                    f"{self.last_checkpoint.name}, holds finite weights"
                    if self.last_checkpoint else "")
            raise UserError(f"stopped at iteration {self.algo.iteration + 1}: {exc}{kept}"
                            ) from None
        wall = time.perf_counter() - t0
        every = self.settings.eval_every
        evaluated = bool(every) and self.algo.iteration % every == 0
        row = _row(result, evaluated, wall, self.env_steps, self.updates)
        if row["env_steps"] >= self.steps and not evaluated:
            row["eval_return_mean"] = self.algo.evaluate()["env_runners"]["episode_return_mean"]
        return row, result

    def _record(self, row: dict[str, Any], result: dict[str, Any]) -> None:
        """Appends the progress row (and logs it to W&B with ``--track wandb``) and adds the
        iteration's energy to the ledger."""
        self.folder.append_progress(row)
        if self.tracker is not None:
            self.tracker.log(row)
        if result.get("energy"):
            self.ledger.add(result["energy"], row["env_steps"] - self.env_steps)
            self.ledger.write(self.folder.path / ENERGY_FILE)

    def _report(self, row: dict[str, Any]) -> None:
        """The progress bar, and the first collapse warning (policies.diagnostics)."""
        warning = None if self.warned else collapse_warning(
            {k: v for k, v in row.items() if v is not None})
        if warning:
            self.bar.write(f"warning (iteration {row['iteration']}): {warning}",
                           file=sys.stderr)
            self.warned = True
        self.bar.update(min(row["env_steps"], self.steps) - min(self.env_steps, self.steps))
        self.bar.set_postfix(
            ret="-" if row["episode_return_mean"] is None else f"{row['episode_return_mean']:.1f}",
            eval="-" if row["eval_return_mean"] is None else f"{row['eval_return_mean']:.1f}",
            sps=f"{row['env_steps_per_s']:.0f}")
        self.env_steps, self.updates = row["env_steps"], row["num_updates"]

    def _checkpoint(self) -> None:
        self.last_checkpoint, removed = self.folder.save_checkpoint(
            self.algo, self.settings, self.algo.iteration, self.env_steps)
        _push(self.mirror, self.last_checkpoint, removed)
