"""Learning curves and sweep plots (matplotlib, non-interactive Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from spikerl_ray.report.tables import basis_label  # noqa: E402


# The learning curves' x-axes: the name, the column of :func:`curve_points`, its label, the file.
CURVE_AXES = (("env steps", "env_steps", "env steps", "learning_curves.png"),
              ("wall-clock time", "wall_time_s_mean", "wall-clock time (s), mean over seeds",
               "learning_curves_time.png"),
              ("energy", "energy_j_mean", "energy (J, {basis}), mean over seeds",
               "learning_curves_energy.png"))


def learning_curves(points: pd.DataFrame, out: Path, ylabel: str) -> dict[str, Path]:
    """Per x-axis of :data:`CURVE_AXES` that ``points`` (:func:`curve_points`) have values for,
    one figure in ``out`` with a panel per environment: per method the mean return over seeds
    with its 95% band; returns the files written by the axes' names."""
    written = {}
    for axis, x, xlabel, name in CURVE_AXES:
        data = points.dropna(subset=[x])
        if data.empty:
            continue
        envs = sorted(data["env"].unique())
        fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
        for ax, env in zip(axes[0], envs):
            panel = data[data["env"] == env]
            for method, g in panel.groupby("method", sort=True):
                mean, half = g["return_mean"], g["return_ci95_half"]
                ax.plot(g[x], mean, marker=".", label=method)
                ax.fill_between(g[x], mean - half, mean + half, alpha=0.2)
            ax.set(title=env, xlabel=xlabel.format(basis=basis_label(panel["energy_basis"])),
                   ylabel=ylabel)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written[axis] = out / name
    return written


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
