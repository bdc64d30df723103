"""The tidy results table (one row per trial and iteration), the learning curves' points and
the summary per method and environment, from a Tune experiment folder or a ``spikerl train``
run folder (definitions: docs/reports.md).

Statistics (rliable's recommendations, Agarwal et al., NeurIPS 2021): per trial its final
evaluation return (its last evaluated iteration) and its area under the learning curve
(:func:`area_under_curve`); per method and environment their mean and standard deviation over
seeds (ddof=1), the interquartile mean (``scipy.stats.trim_mean`` with 25% cut each side) with a
95% percentile bootstrap interval that resamples the seeds of that method on that environment
(stratified by environment: seeds are never pooled across environments), PopSAN's maximum
average return (:func:`curve_points`), and SpikeRL's improvement over each other method in
percent, as the SpikeRL paper states it, with a 95% bootstrap interval that resamples each
method's seeds separately (stratified by method). Bootstraps use ``scipy.stats.bootstrap``
with :data:`BOOTSTRAP_RESAMPLES` resamples seeded with :data:`BOOTSTRAP_SEED`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from scipy import stats

from spikerl_ray.algorithms import DEFAULT_ALGORITHM
from spikerl_ray.energy.accounting import ENERGY_COLUMNS
from spikerl_ray.methods import METHODS

ENERGY_TEXT_COLUMNS = ("energy_basis", "energy_cpu_source", "energy_gpu_source")

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
BASELINE_OF_IMPROVEMENT = "spikerl"  # "improvement of spikerl over each other method"
TIDY_COLUMNS = ("experiment", "trial", "method", "env", "seed", "iteration", "env_steps",
                "train_return", "eval_return", "env_steps_per_s", "wall_time_s", "learners",
                "precision")


def _get(d: dict[str, Any], path: str) -> Any:
    for key in path.split("/"):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _tune_trial_rows(trial_dir: Path, experiment: str) -> list[dict[str, Any]]:
    config = json.loads((trial_dir / "params.json").read_text())
    # The algorithm's config (TD3's flat in the trial config in experiments before SAC/PPO).
    algorithm = config.get("algorithm", config)
    # RLlib repeats the last evaluation's results in the iterations after it: an iteration
    # holds an evaluation only where the interval falls.
    interval = algorithm.get("evaluation_interval") or 0
    rows, last_steps, last_time = [], 0.0, 0.0
    with (trial_dir / "result.json").open() as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            iteration = r.get("training_iteration", 0)
            if rows and iteration <= rows[-1]["iteration"]:
                # Restored from a checkpoint (a retry or a resumed experiment): its rows go
                # on from the checkpoint's iteration, replacing those written after it.
                rows = [row for row in rows if row["iteration"] < iteration]
                last_steps, last_time = ((rows[-1]["env_steps"], rows[-1]["wall_time_s"])
                                         if rows else (0.0, 0.0))
            steps = float(r.get("num_env_steps_sampled_lifetime", 0))
            wall = float(r.get("time_total_s", 0.0))
            row = {
                "experiment": experiment, "trial": trial_dir.name,
                "method": config.get("method") or config.get("policy"),
                "env": config.get("env"), "seed": config.get("seed"),
                "iteration": iteration, "env_steps": int(steps),
                "train_return": _get(r, "env_runners/episode_return_mean"),
                "eval_return": (_get(r, "evaluation/env_runners/episode_return_mean")
                                if interval and iteration % interval == 0
                                else None),
                "env_steps_per_s": ((steps - last_steps) / (wall - last_time)
                                    if wall > last_time else math.nan),
                "wall_time_s": wall,
                "learners": max(int(algorithm.get("num_learners", 0)), 1),
                "precision": algorithm.get("precision", "fp32"),
            }
            row.update({f"search.{k}": v for k, v in (config.get("search") or {}).items()})
            energy = r.get("energy") or {}
            row.update({f"energy.{k}": energy[k] for k in ENERGY_COLUMNS if k in energy})
            rows.append(row)
            last_steps, last_time = steps, wall
    return rows


def _entry(settings: dict[str, Any]) -> str:
    """A train run named as an experiment's method entry: ``METHOD``, ``/ALGO`` under another
    algorithm than TD3, ``@POLICY`` with another network than the method's."""
    method, policy = settings.get("method"), settings.get("policy")
    if method not in METHODS:
        return policy
    algo = settings.get("algo", DEFAULT_ALGORITHM)
    return method + ("" if algo == DEFAULT_ALGORITHM else f"/{algo}") + (
        "" if policy in (None, METHODS[method].policy) else f"@{policy}")


def _train_run_rows(run_dir: Path, name: str) -> list[dict[str, Any]]:
    settings = json.loads((run_dir / "run.json").read_text())
    progress = pd.read_csv(run_dir / "progress.csv")
    return [{
        "experiment": name, "trial": name,
        "method": _entry(settings),
        "env": settings.get("env"), "seed": settings.get("seed"),
        "iteration": int(p["iteration"]), "env_steps": int(p["env_steps"]),
        "train_return": p["episode_return_mean"], "eval_return": p["eval_return_mean"],
        "env_steps_per_s": p["env_steps_per_s"], "wall_time_s": p["time_s"],
        "learners": max(int(settings.get("learners", 0)), 1),
        "precision": settings.get("precision") or "fp32",
        **{f"energy.{k}": p[k] for k in ENERGY_COLUMNS if k in p},
    } for p in progress.to_dict("records")]


def trial_folders(path: Path) -> list[Path]:
    """The trial folders of a Tune experiment folder (each with its params and results)."""
    return sorted(p for p in path.iterdir()
                  if (p / "params.json").is_file() and (p / "result.json").is_file())


def tidy_table(path: str | Path, name: str | None = None) -> pd.DataFrame:
    """One row per trial and iteration, from a Tune experiment folder (trial folders with
    ``params.json`` and ``result.json``) or a ``spikerl train`` run folder; the experiment's
    name is ``name``, by default the folder's."""
    path = Path(path)
    name = name or path.name
    if (path / "run.json").is_file():
        rows = _train_run_rows(path, name)
    else:
        rows = [row for t in trial_folders(path) for row in _tune_trial_rows(t, name)]
    if not rows:
        raise ValueError("holds no results (neither a run folder with run.json nor "
                         "a Tune experiment with trial folders)")
    table = pd.DataFrame(rows)
    extra = [c for c in table.columns if c not in TIDY_COLUMNS]
    table = table[list(TIDY_COLUMNS) + sorted(extra)]
    numeric = ["train_return", "eval_return", "env_steps_per_s", "wall_time_s"] + [
        f"energy.{k}" for k in ENERGY_COLUMNS if k not in ENERGY_TEXT_COLUMNS]
    for col in numeric:
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce")
    return table.sort_values(["method", "env", "seed", "trial", "iteration"], ignore_index=True)


def final_per_trial(table: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its final evaluation return (last evaluated iteration), area under
    its evaluation curve, best evaluation return, final training return, wall time and env
    steps per second."""
    out = []
    for trial, g in table.groupby("trial", sort=True):
        evals = g.dropna(subset=["eval_return"])
        last = g.iloc[-1]
        out.append({
            "trial": trial, "method": last["method"], "env": last["env"], "seed": last["seed"],
            "env_steps": int(last["env_steps"]),
            "final_eval_return": evals["eval_return"].iloc[-1] if len(evals) else math.nan,
            "auc_eval_return": area_under_curve(evals["env_steps"].to_numpy(dtype=float),
                                                evals["eval_return"].to_numpy(dtype=float)),
            "best_eval_return": evals["eval_return"].max() if len(evals) else math.nan,
            "final_train_return": last["train_return"],
            "wall_time_s": last["wall_time_s"],
            "env_steps_per_s": (last["env_steps"] / last["wall_time_s"]
                                if last["wall_time_s"] > 0 else math.nan),
            **{c: last[c] for c in g.columns if c.startswith("search.")},
            **_trial_energy(g),
        })
    return pd.DataFrame(out)


def _trial_energy(g: pd.DataFrame) -> dict[str, Any]:
    """A trial's energy summed over its iterations (nothing when it has none)."""
    if "energy.energy_j" not in g or g["energy.energy_j"].isna().all():
        return {}
    joules = float(pd.to_numeric(g["energy.energy_j"], errors="coerce").sum())
    steps = float(g["env_steps"].iloc[-1])  # every iteration's energy is summed
    co2 = pd.to_numeric(g["energy.co2e_kg"], errors="coerce").sum()
    return {"energy_j": joules, "energy_basis": basis_label(g["energy.energy_basis"]),
            "energy_j_per_1k_steps": 1000.0 * joules / steps if steps > 0 else math.nan,
            "co2e_kg": float(co2)}


def basis_label(bases: Iterable[Any]) -> str:
    """The energy bases of several figures in one label (``estimated+measured``)."""
    return "+".join(sorted({part for b in bases if isinstance(b, str)
                            for part in b.split("+") if part}))


def area_under_curve(steps: np.ndarray, returns: np.ndarray) -> float:
    """The evaluation returns integrated over env steps (trapezoid between consecutive
    evaluations) divided by the span from the first to the last evaluation: the mean
    evaluation return over training, in return units. One evaluation: its return; none: nan."""
    if not len(returns):
        return math.nan
    span = steps[-1] - steps[0]
    return float(np.trapezoid(returns, steps) / span) if span > 0 else float(np.mean(returns))


def mean_band(values: np.ndarray) -> tuple[float, float]:
    """The mean over seeds and the half-width of its 95% Student-t interval (0 for one
    seed)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, 0.0
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * stats.sem(values)
    return mean, float(half)


CURVE_COLUMNS = ("method", "env", "env_steps", "seeds", "return_mean", "return_ci95_half",
                 "wall_time_s_mean", "energy_j_mean", "energy_basis")


def curve_points(table: pd.DataFrame, column: str = "eval_return") -> pd.DataFrame:
    """The learning curves: per method, environment and env step at which every seed (trial)
    of that method and environment has a ``column`` value, the mean over seeds with the
    half-width of its 95% Student-t interval, the seeds' mean wall time and mean energy
    (``energy.energy_j`` summed over the iterations up to that one; nan unless every seed has
    it) with its basis. PopSAN's maximum average return is the largest ``return_mean`` of a
    method and environment."""
    data = table.assign(cumulative_energy_j=table.sort_values("iteration").groupby("trial")[
        "energy.energy_j"].cumsum() if "energy.energy_j" in table else math.nan)
    rows = []
    for (method, env), g in data.groupby(["method", "env"], sort=True):
        trials = g["trial"].nunique()
        basis = basis_label(g.get("energy.energy_basis", ()))
        for steps, v in g.dropna(subset=[column]).groupby("env_steps", sort=True):
            if v["trial"].nunique() < trials:
                continue
            mean, half = mean_band(v[column].to_numpy(dtype=float))
            rows.append((method, env, int(steps), trials, mean, half,
                         v["wall_time_s"].mean(skipna=False),
                         v["cumulative_energy_j"].mean(skipna=False), basis))
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean``, 25%)."""
    return float(stats.trim_mean(values, 0.25))


def bootstrap_ci(samples: tuple[np.ndarray, ...], statistic: Callable[..., float]
                 ) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``statistic`` over ``samples``, each resampled on
    its own (stratified); nan where a sample has fewer than 2 values."""
    if any(len(s) < 2 for s in samples):
        return math.nan, math.nan
    res = stats.bootstrap(samples, statistic, n_resamples=BOOTSTRAP_RESAMPLES,
                          confidence_level=CONFIDENCE, method="percentile", vectorized=False,
                          random_state=np.random.default_rng(BOOTSTRAP_SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def improvement_pct(new: np.ndarray, base: np.ndarray) -> float:
    """``100 * (mean(new) - mean(base)) / |mean(base)|``: the SpikeRL paper's "+x% over"."""
    return float(100.0 * (np.mean(new) - np.mean(base)) / abs(np.mean(base)))


def _estimates(prefix: str, x: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation (ddof=1), IQM and its bootstrap interval of the seeds' ``x``."""
    lo, hi = bootstrap_ci((x,), iqm)
    return {f"{prefix}_mean": float(np.mean(x)) if len(x) else math.nan,
            f"{prefix}_std": float(np.std(x, ddof=1)) if len(x) > 1 else math.nan,
            f"{prefix}_iqm": iqm(x) if len(x) else math.nan,
            f"{prefix}_iqm_ci_low": lo, f"{prefix}_iqm_ci_high": hi}


def _improvement(prefix: str, ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    """:func:`improvement_pct` of ``ours`` over ``theirs`` with its bootstrap interval (nan
    where either has no value)."""
    if not (len(ours) and len(theirs)):
        return {f"{prefix}_pct": math.nan, f"{prefix}_ci_low": math.nan,
                f"{prefix}_ci_high": math.nan}
    lo, hi = bootstrap_ci((ours, theirs), improvement_pct)
    return {f"{prefix}_pct": improvement_pct(ours, theirs), f"{prefix}_ci_low": lo,
            f"{prefix}_ci_high": hi}


# Summary columns per trial statistic: (trials' column, summary prefix, improvement prefix).
SUMMARY_STATISTICS = (("final_eval_return", "final_eval", "spikerl_improvement"),
                      ("auc_eval_return", "auc_eval", "spikerl_auc_improvement"))


def summary_table(finals: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per method and environment of the trials ``finals`` (:func:`final_per_trial` of the
    tidy ``table``): the budget (largest env steps), final evaluation return and area under
    the curve (mean, std, IQM with its interval), PopSAN's maximum average return, best
    evaluation return, wall time, env steps/s, energy, and SpikeRL's improvement over each
    other method of the same environment in final return and area (on the rows of those
    methods)."""
    max_average = curve_points(table).groupby(["method", "env"])["return_mean"].max()
    rows = []
    for (method, env), g in finals.groupby(["method", "env"], sort=True):
        ours = finals[(finals["method"] == BASELINE_OF_IMPROVEMENT) & (finals["env"] == env)]
        row: dict[str, Any] = {"method": method, "env": env, "seeds": len(g),
                               "env_steps": int(g["env_steps"].max())}
        improvements: dict[str, float] = {}
        for column, prefix, gain in SUMMARY_STATISTICS:
            x = g[column].dropna().to_numpy(dtype=float)
            y = (ours[column].dropna().to_numpy(dtype=float)
                 if method != BASELINE_OF_IMPROVEMENT else np.empty(0))  # not over itself
            row.update(_estimates(prefix, x))
            improvements.update(_improvement(gain, y, x))
        row.update({
            "max_average_eval": float(max_average.get((method, env), math.nan)),
            "best_eval_mean": float(g["best_eval_return"].mean()),
            "wall_time_s_mean": float(g["wall_time_s"].mean()),
            "env_steps_per_s_mean": float(g["env_steps_per_s"].mean()),
            **({"energy_j_per_1k_steps_mean": float(g["energy_j_per_1k_steps"].mean()),
                "co2e_kg_mean": float(g["co2e_kg"].mean()),
                "energy_basis": basis_label(g["energy_basis"])}
               if "energy_j" in g and g["energy_j"].notna().any() else {}),
            **improvements,
        })
        rows.append(row)
    return pd.DataFrame(rows)
