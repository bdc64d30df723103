"""``spikerl train``: runs TD3 on Ray, writes progress rows and checkpoints, shows progress."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from policies.diagnostics import collapse_warning, statistic_names
from spikerl_ray.energy.accounting import ENERGY_COLUMNS, ENERGY_FILE, EnergyLedger, load_energy
from spikerl_ray.envs import continuous_spaces
from spikerl_ray.errors import UserError
from spikerl_ray.resources import check, cluster_nodes, describe, local_node, requests
from spikerl_ray.run import (CHECKPOINT_DIR, CHECKPOINT_INFO, PROGRESS_FILE, RUN_FILE,
                             RUN_OUTPUTS, RunDir, RunSettings, build_config,
                             checkpoint_problem)
from spikerl_ray import session
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


def _row(result: dict[str, Any], evaluated: bool, wall: float, steps_before: float,
         updates_before: float) -> dict[str, Any]:
    learner = result.get("learners", {}).get("default_policy", {})
    steps = result.get("num_env_steps_sampled_lifetime", 0)
    updates = learner.get("num_gradient_updates_lifetime")
    if updates is None:  # RLlib's learners (SAC, PPO) count samples: one update per batch
        batch = learner.get("module_train_batch_size_mean") or 1
        updates = round(learner.get("num_module_steps_trained_lifetime", 0) / batch)
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


def _restore(algo: Any, run: RunDir) -> Path:
    """Restores the newest usable checkpoint of ``run``, falling back past damaged ones (each
    named on stderr), and rewinds the progress rows to it; returns it."""
    for path in run.checkpoints_newest_first():
        problem = checkpoint_problem(path)
        if problem is None:
            try:
                algo.restore_from_path(str(path.resolve()))
            except Exception as exc:  # a damaged checkpoint written before file lists
                problem = f"it cannot be restored ({type(exc).__name__}: {exc})"
        if problem is None:
            run.rewind(json.loads((path / CHECKPOINT_INFO).read_text())["iteration"])
            return path
        print(f"spikerl train: checkpoint {run.name}/{path.relative_to(run.path)} is damaged "
              f"({problem}); trying the one before it", file=sys.stderr)
    raise UserError(f"--resume: {run.name} has no usable checkpoint")


def train(settings: RunSettings, out: str | Path, steps: int, *, resume: bool = False,
          force: bool = False, address: str | None = None, progress: bool = True) -> str:
    """Trains until ``steps`` env steps in total; returns where the last checkpoint is. ``out``
    is a folder or a URI (:mod:`spikerl_ray.storage`)."""
    continuous_spaces(settings.env)
    try:
        settings = settings.resolved()
        build_config(settings).validate()
    except ValueError as exc:
        # RLlib appends a hint on how to skip validation; the first line is the message.
        raise UserError(str(exc).strip().splitlines()[0]) from None
    run, mirror = _stage(out, resume)
    try:
        checkpoint = _train_in(run, mirror, settings, steps, resume=resume, force=force,
                               address=address, progress=progress)
    finally:
        if mirror is not None:
            mirror.close()
    return f"{str(out).rstrip('/')}/{checkpoint.relative_to(run.path).as_posix()}"


def _train_in(run: RunDir, mirror: Mirror | None, settings: RunSettings, steps: int, *,
              resume: bool, force: bool, address: str | None, progress: bool) -> Path:
    """:func:`train` in the run folder ``run`` (synced to ``mirror``'s URI if given)."""
    from tqdm import tqdm

    settings = run.start(settings, resume=resume, force=force, dry_run=True)
    if resume and not run.checkpoints_newest_first():
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

    from spikerl_ray.td3.td3 import NonFiniteError

    algo = build_config(settings).build_algo()
    try:
        restored = _restore(algo, run) if resume else None
        env_steps = int(algo.metrics.peek(("env_runners", "num_env_steps_sampled_lifetime"),
                                          default=0))
        updates = 0.0
        # The energy ledger as it stood at the checkpoint (older checkpoints: the run's).
        stored = (load_energy(restored) or load_energy(run.path)) if restored else None
        ledger = (EnergyLedger.from_dict(stored) if stored else
                  EnergyLedger(settings.carbon_intensity))
        bar = tqdm(total=steps, initial=min(env_steps, steps), unit="step", disable=not progress,
                   dynamic_ncols=True)
        last_ckpt = None
        warned = False
        while env_steps < steps:
            t0 = time.perf_counter()
            try:
                result = algo.train()
            except NonFiniteError as exc:
                good = last_ckpt or restored
                kept = (f"; the last checkpoint, {run.name}/{good.relative_to(run.path)}, "
                        "holds finite weights") if good else ""
                raise UserError(f"stopped at iteration {algo.iteration + 1}: {exc}{kept}"
                                ) from None
            wall = time.perf_counter() - t0
            evaluated = bool(settings.eval_every) and algo.iteration % settings.eval_every == 0
            row = _row(result, evaluated, wall, env_steps, updates)
            last = row["env_steps"] >= steps
            if last and not evaluated:
                row["eval_return_mean"] = algo.evaluate()["env_runners"]["episode_return_mean"]
            run.append_progress(row)
            if result.get("energy"):
                ledger.add(result["energy"], row["env_steps"] - env_steps)
                ledger.write(run.path / ENERGY_FILE)
            warning = None if warned else collapse_warning(
                {k: v for k, v in row.items() if v is not None})
            if warning:
                bar.write(f"warning (iteration {row['iteration']}): {warning}", file=sys.stderr)
                warned = True
            bar.update(min(row["env_steps"], steps) - min(env_steps, steps))
            bar.set_postfix(ret=f"{row['episode_return_mean']:.1f}"
                            if row["episode_return_mean"] is not None else "-",
                            eval=f"{row['eval_return_mean']:.1f}"
                            if row["eval_return_mean"] is not None else "-",
                            sps=f"{row['env_steps_per_s']:.0f}")
            env_steps, updates = row["env_steps"], row["num_updates"]
            if last or algo.iteration % settings.checkpoint_every == 0:
                last_ckpt, removed = run.save_checkpoint(algo, settings, algo.iteration,
                                                         env_steps)
                _push(mirror, last_ckpt, removed)
        bar.close()
        if last_ckpt is None:
            last_ckpt, removed = run.save_checkpoint(algo, settings, algo.iteration, env_steps)
            _push(mirror, last_ckpt, removed)
        return last_ckpt
    finally:
        _push(mirror)
        algo.stop()
