"""Published returns at a fixed env-step budget, shown beside a report's table when an
experiment ran the same budget on an environment of the same name (any version).

Each figure is the mean over the source's seeds of the evaluation return at the budget (the
protocol of the report's final return). Read from the sources' own result files, 2026-12-05:

- TD3 (Fujimoto et al., ICML 2018), GitHub ``sfujim/TD3`` at commit 34770cc, folder
  ``learning_curves/``: ``learning_curves/<Env>/TD3_<Env>-v1_<seed>.npy`` for seeds 0-9, each
  an array of 201 evaluations (10 noise-free episodes each, per its README) every 5,000 steps
  starting with the untrained policy at step 0, so index 20 is step 100,000. Value =
  ``np.mean([np.load(f"TD3_HalfCheetah-v1_{s}.npy")[20] for s in range(10)])`` = 5,513.5
  (``Hopper/TD3_Hopper-v1_{s}.npy``: 659.5).
- MR.Q (Fujimoto et al., ICLR 2025), GitHub ``facebookresearch/MRQ`` at commit 8a44a7d, file
  ``results/gym_results.txt``: per environment (``Env: Gym-HalfCheetah-v4``) one row per
  evaluation step (``Timestep`` 0, 5000, ..., 1000000) with one column per seed 0-9 (10
  evaluation episodes each: ``--eval_eps`` defaults to 10 in ``MRQ/main.py``). Value = the
  mean of the 10 seed columns of the row ``100000`` = 7,872.5 (``Gym-Hopper-v4``: 2,249.4).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """A published mean evaluation return of ``algorithm`` on ``env`` after ``env_steps``."""

    algorithm: str
    env: str  # with the source's version, e.g. HalfCheetah-v1
    seeds: int
    episodes: int  # evaluation episodes behind each seed's evaluation
    env_steps: int
    mean_return: float
    source: str  # repository and file the figure was computed from


def env_base_name(env: str) -> str:
    """``HalfCheetah-v5`` -> ``HalfCheetah``."""
    return env.rsplit("-v", 1)[0]


_TD3 = "github.com/sfujim/TD3 learning_curves/ (index 20 of 201, seeds 0-9)"
_MRQ = "github.com/facebookresearch/MRQ results/gym_results.txt (row 100000, seeds 0-9)"

REFERENCES: tuple[Reference, ...] = (
    Reference("TD3", "HalfCheetah-v1", 10, 10, 100_000, 5513.5, _TD3),
    Reference("TD3", "Hopper-v1", 10, 10, 100_000, 659.5, _TD3),
    Reference("MR.Q", "HalfCheetah-v4", 10, 10, 100_000, 7872.5, _MRQ),
    Reference("MR.Q", "Hopper-v4", 10, 10, 100_000, 2249.4, _MRQ),
)


def references_for(env: str, env_steps: int) -> list[Reference]:
    """The references on ``env``'s name (any version) at exactly ``env_steps``."""
    return [r for r in REFERENCES
            if env_base_name(r.env) == env_base_name(env) and r.env_steps == env_steps]
