"""``spikerl evaluate``: runs a checkpoint's actor without exploration noise.

Builds the RLModule from the checkpoint's ``spikerl_run.json`` (our own JSON: environment and
model config) and loads its weights from RLlib's ``module_state.pkl`` with an unpickler that
admits numeric arrays only, so a tampered checkpoint cannot run code (``docs/security.md``).
No Ray cluster is started; the environment steps in this process.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policies.diagnostics import actor_statistics
from spikerl_ray.envs import continuous_spaces
from spikerl_ray.errors import UserError
from spikerl_ray.run import CHECKPOINT_INFO
from spikerl_ray.storage import Mirror, is_uri

MODULE_PATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"
STATE_FILE = "module_state.pkl"  # RLlib's pickle of the module's state dict (numpy arrays)
# The only globals a module state pickle may name: numpy arrays, their dtypes, an ordered dict.
STATE_GLOBALS = {("collections", "OrderedDict"), ("numpy", "dtype"), ("numpy", "ndarray"),
                 ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
                 ("numpy._core.multiarray", "_reconstruct"),
                 ("numpy.core.multiarray", "_reconstruct")}
# Observations of the evaluation episodes the spike statistics are measured on (evenly spaced).
STATISTICS_OBS = 1000


def load_module(checkpoint: str | Path) -> tuple[Any, dict[str, Any]]:
    """The trained RLModule of a ``spikerl train`` checkpoint (a folder or a URI,
    :mod:`spikerl_ray.storage`) and the checkpoint's info."""
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


def _load_folder(path: Path, name: str) -> tuple[Any, dict[str, Any]]:
    """:func:`load_module` for a local folder; messages call it ``name``."""
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
        module = module_class(info.get("algo", "td3"))(
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


def module_class(algo: str) -> type:
    """The RLModule class that ``spikerl train --algo ALGO`` trains."""
    if algo == "sac":
        from spikerl_ray.sac.rl_module import SpikingSACTorchRLModule

        return SpikingSACTorchRLModule
    if algo == "ppo":
        from spikerl_ray.ppo.rl_module import SpikingPPOTorchRLModule

        return SpikingPPOTorchRLModule
    if algo == "td3":
        from spikerl_ray.td3.rl_module import TD3TorchRLModule

        return TD3TorchRLModule
    raise ValueError(f"unknown algo {algo!r}")


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


def act(module: Any, obs: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """The module's deterministic action for one observation, in the env's bounds."""
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(obs[None], dtype=torch.float32)})
    a = out["actions"][0].numpy().clip(-1.0, 1.0)
    return space.low + (a + 1.0) * 0.5 * (space.high - space.low)


def evaluate(checkpoint: str | Path, episodes: int = 10, env_id: str | None = None,
             seed: int = 1_000_000) -> dict[str, Any]:
    """Mean and std of the undiscounted return over ``episodes`` noise-free episodes."""
    if env_id is not None:
        continuous_spaces(env_id)  # a bad --env is named before the checkpoint is read
    module, info = load_module(checkpoint)
    env_id = env_id or info["env"]
    obs_space, act_space = continuous_spaces(env_id)
    if (obs_space.shape != module.observation_space.shape
            or act_space.shape != module.action_space.shape):
        raise UserError(f"checkpoint was trained on {info['env']} (observations "
                        f"{module.observation_space.shape}, actions "
                        f"{module.action_space.shape}); {env_id} has observations "
                        f"{obs_space.shape}, actions {act_space.shape}")
    env = gym.make(env_id)
    returns, lengths, seen = [], [], []
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            total, n, done = 0.0, 0, False
            while not done:
                seen.append(obs)
                obs, reward, terminated, truncated, _ = env.step(act(module, obs, act_space))
                total += float(reward)
                n += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(n)
    finally:
        env.close()
    return {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "episodes": episodes, "episode_length_mean": float(np.mean(lengths)),
            "env": env_id, "algo": info.get("algo", "td3"), "policy": info["policy"],
            "checkpoint": str(checkpoint),
            "spikes": spike_statistics(module, np.asarray(seen, dtype=np.float32))}


def spike_statistics(module: Any, observations: np.ndarray) -> dict[str, Any]:
    """Firing rates per layer, synaptic operations and MACs per inference and the estimated
    neuromorphic energy per inference (:mod:`policies.operations`), on up to
    :data:`STATISTICS_OBS` of ``observations`` (raw; normalized here as when acting)."""
    picks = np.linspace(0, len(observations) - 1, min(len(observations), STATISTICS_OBS))
    obs = module.normalize(torch.as_tensor(observations[picks.astype(int)]))
    stats = actor_statistics(module.actor.forward, obs, getattr(module.actor, "timesteps", None),
                             module.actor)
    return {**stats, "observations": len(picks),
            "inference_energy_basis": "estimate: 0.9 pJ per synaptic operation, 4.6 pJ per "
                                      "MAC (45 nm figures of SNN papers), not a measurement"}
