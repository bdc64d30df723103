"""Checkpoints of a ``spikerl train`` run: their layout, listing, the latest usable one, atomic
writing, restoring with fallback past damaged ones, and loading the trained module safely.

Layout, under a run folder::

    checkpoints/iter_NNNNNN/     an RLlib checkpoint (Algorithm.from_checkpoint restores it)
        spikerl_run.json         ours: env, algo, policy, method, seed, iteration, env steps,
                                 the module's model config, and every file's size and SHA-256
        energy.json              the run's energy ledger as it stood then
    checkpoints/.iter_NNNNNN.tmp being written; renamed to iter_NNNNNN when complete

A run killed while saving leaves no half-written ``iter_*`` folder. :func:`load_module` builds
the module from ``spikerl_run.json`` and reads its weights with an unpickler that admits numeric
arrays only, so a tampered checkpoint cannot run code (docs/security.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from spikerl_ray.common.module import ActorModule
from spikerl_ray.errors import UserError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_INFO = "spikerl_run.json"
MODULE_PATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"
STATE_FILE = "module_state.pkl"  # RLlib's pickle of the module's state dict (numpy arrays)
# The only globals a module state pickle may name: numpy arrays, their dtypes, an ordered dict.
STATE_GLOBALS = {("collections", "OrderedDict"), ("numpy", "dtype"), ("numpy", "ndarray"),
                 ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
                 ("numpy._core.multiarray", "_reconstruct"),
                 ("numpy.core.multiarray", "_reconstruct")}


def newest_first(folder: Path) -> list[Path]:
    """The complete checkpoints (``iter_*``) in a run's ``checkpoints/`` folder, newest
    first."""
    return sorted(folder.glob("iter_*"), reverse=True)


def latest(folder: Path) -> Path | None:
    """The newest checkpoint in ``folder`` that :func:`problem` finds nothing wrong with."""
    return next((p for p in newest_first(folder) if problem(p) is None), None)


def _fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def problem(path: Path) -> str | None:
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


def save(algo: Any, folder: Path, info: dict[str, Any], extra: list[Path],
         keep: int) -> tuple[Path, list[Path]]:
    """Writes a checkpoint of ``algo`` into ``folder`` atomically, as ``iter_NNNNNN`` of
    ``info["iteration"]``, with ``info`` (plus the module's model config and the file list)
    and copies of the ``extra`` files that exist; keeps the newest ``keep``. Returns it and
    the older ones removed."""
    path = folder / f"iter_{info['iteration']:06d}"
    tmp = folder / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    for file in extra:
        if file.exists():
            shutil.copy2(file, tmp / file.name)
    write_info(algo, tmp, info)
    if path.exists():  # the same iteration again, after resuming an older checkpoint
        shutil.rmtree(path)
    os.replace(tmp, path)
    removed = newest_first(folder)[keep:]
    for old in removed:
        shutil.rmtree(old)
    return path, removed


def write_info(algo: Any, path: Path, info: dict[str, Any]) -> None:
    """Writes the checkpoint ``path`` of ``algo``'s info file: ``info`` (the run's identity)
    plus what ``spikerl evaluate`` builds the module from (the model config, JSON rather than
    RLlib's pickles) and the checkpoint's files with their fingerprints."""
    info = info | {
        "model_config": algo.config.model_config,
        "files": {p.relative_to(path).as_posix(): _fingerprint(p)
                  for p in sorted(path.rglob("*")) if p.is_file()}}
    (path / CHECKPOINT_INFO).write_text(json.dumps(info, indent=2))


def restore(algo: Any, folder: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """Restores into ``algo`` the newest usable checkpoint of ``folder``, falling back past
    damaged ones (each named on stderr; ``name`` is how messages call the run); returns it
    and its info."""
    for path in newest_first(folder):
        trouble = problem(path)
        if trouble is None:
            try:
                algo.restore_from_path(str(path.resolve()))
            except Exception as exc:  # a damaged checkpoint written before file lists
                trouble = f"it cannot be restored ({type(exc).__name__}: {exc})"
        if trouble is None:
            return path, json.loads((path / CHECKPOINT_INFO).read_text())
        print(f"spikerl train: checkpoint {name}/{CHECKPOINT_DIR}/{path.name} is damaged "
              f"({trouble}); trying the one before it", file=sys.stderr)
    raise UserError(f"--resume: {name} has no usable checkpoint")


class _StateUnpickler(pickle.Unpickler):
    """Resolves only :data:`STATE_GLOBALS`; any other class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in STATE_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a module state")
        return super().find_class(module, name)


def load_state(data: bytes) -> dict[str, np.ndarray | float]:
    """A module state dict from RLlib's pickle, without running code: numeric arrays and
    numbers only (``ValueError`` / ``UnpicklingError`` otherwise)."""
    state = _StateUnpickler(io.BytesIO(data)).load()
    if not isinstance(state, dict):
        raise ValueError(f"a module state is a dict, not {type(state).__name__}")
    for key, value in state.items():
        numeric = (isinstance(value, np.ndarray) and value.dtype.kind in "biuf"
                   or isinstance(value, (int, float)))
        if not isinstance(key, str) or not numeric:
            raise ValueError(f"{key!r} is not a numeric array")
    return state


def load_module(checkpoint: str | Path) -> tuple[ActorModule, dict[str, Any]]:
    """The trained RLModule of a ``spikerl train`` checkpoint (a folder or a URI,
    :mod:`spikerl_ray.storage`) and the checkpoint's info; no Ray cluster is started and
    nothing but numbers is unpickled."""
    from spikerl_ray.storage import Mirror, is_uri

    if not is_uri(checkpoint):
        return _load_folder(Path(checkpoint), str(checkpoint))
    mirror = Mirror(str(checkpoint))
    try:
        mirror.pull(recursive=True)
        if not any(mirror.local.iterdir()):
            raise UserError(f"checkpoint {checkpoint} does not exist")
        return _load_folder(mirror.local, str(checkpoint))
    finally:
        mirror.close()


def _load_folder(path: Path, name: str) -> tuple[ActorModule, dict[str, Any]]:
    """:func:`load_module` for a local folder; messages call it ``name``."""
    import torch

    from policies import resolve_factory
    from spikerl_ray.algorithms import DEFAULT_ALGORITHM, get_algorithm
    from spikerl_ray.envs import continuous_spaces

    if not path.exists():
        raise UserError(f"checkpoint {name} does not exist")
    if not (path / CHECKPOINT_INFO).is_file() or not (path / MODULE_PATH).is_dir():
        raise UserError(f"{name} is not a spikerl-ray checkpoint (expected {CHECKPOINT_INFO} "
                        f"and {MODULE_PATH}/ inside; pick a folder under <run>/checkpoints/)")
    try:
        info = json.loads((path / CHECKPOINT_INFO).read_text())
        if "model_config" not in info:
            raise UserError(f"checkpoint {name} has no model_config in {CHECKPOINT_INFO} "
                            "(written before spikerl-ray loaded checkpoints safely); "
                            "train it again")
        obs_space, act_space = continuous_spaces(info["env"])
        try:  # a user's actor factory: importable here too (docs/actors.md)
            resolve_factory(info["model_config"].get("policy", "spikerl"))
        except ValueError as exc:
            raise UserError(f"checkpoint {name}: {exc}") from None
        module = get_algorithm(info.get("algo", DEFAULT_ALGORITHM)).module_class()(
            observation_space=obs_space, action_space=act_space,
            model_config=info["model_config"])
        state = load_state((path / MODULE_PATH / STATE_FILE).read_bytes())
        module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"checkpoint {name} is corrupt or unreadable: "
                        f"{type(exc).__name__}: {exc}") from None
    module.eval()
    return module, info
