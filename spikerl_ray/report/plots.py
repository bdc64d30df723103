"""Learning curves and sweep plots (matplotlib, non-interactive Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from spikerl_ray.report.tables import CONFIDENCE  # noqa: E402


def mean_band(values: np.ndarray) -> tuple[float, float]:
    """The mean over seeds and the half-width of its 95% Student-t interval (0 for one
    seed)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, 0.0
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * stats.sem(values)
    return mean, float(half)


def learning_curves(table: pd.DataFrame, path: Path, column: str = "eval_return") -> Path:
    """One panel per environment: per method, the mean ``column`` over seeds against env
    steps, with its 95% band."""
    envs = sorted(table["env"].unique())
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        data = table[(table["env"] == env)].dropna(subset=[column])
        for method, g in data.groupby("method", sort=True):
            points = [(steps, *mean_band(v[column].to_numpy(dtype=float)))
                      for steps, v in g.groupby("env_steps", sort=True)]
            steps, mean, half = (np.array(a) for a in zip(*points))
            ax.plot(steps, mean, label=method)
            ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
        ax.set(title=env, xlabel="env steps", ylabel=column.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_plots(finals: pd.DataFrame, path: Path, column: str) -> Path:
    """Each searched parameter against the trials' final ``column`` (one panel each)."""
    params = [c for c in finals.columns if c.startswith("search.")]
    fig, axes = plt.subplots(1, len(params), figsize=(4.5 * len(params), 3.8), squeeze=False)
    for ax, param in zip(axes[0], params):
        ax.scatter(finals[param], finals[column], alpha=0.7)
        if pd.api.types.is_numeric_dtype(finals[param]) and finals[param].gt(0).all() and \
                finals[param].max() / finals[param].min() > 20:
            ax.set_xscale("log")
        ax.set(xlabel=param.removeprefix("search."), ylabel=column.replace("_", " "))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
