"""``spikerl report DIR``: tables and plots from a Tune experiment, a ``spikerl train`` run,
or each experiment of the folder ``spikerl tune --out`` was given.

Writes into ``DIR/report/``: ``results.parquet`` and ``results.csv`` (the tidy table),
``summary.csv`` (per method and environment, :func:`~spikerl_ray.report.tables.summary_table`),
``trials.csv`` (one row per trial), the learning curves against env steps, wall-clock time and
(where the trials carry energy) energy (``learning_curves*.png``, their points in
``learning_curves.csv``), for a sweep ``sweep.png`` and the best trial's settings, and
``report.md`` linking all of it. Definitions: docs/reports.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from spikerl_ray.errors import UserError
from spikerl_ray.report.plots import learning_curves, sweep_plots
from spikerl_ray.report.references import references_for
from spikerl_ray.report.tables import (BASELINE_OF_IMPROVEMENT, BOOTSTRAP_RESAMPLES,
                                       BOOTSTRAP_SEED, curve_points, final_per_trial,
                                       summary_table, tidy_table, trial_folders)
from spikerl_ray.storage import Mirror, is_uri

REPORT_DIR = "report"


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _estimate(r: dict, prefix: str) -> tuple[str, str]:
    """``mean ± std`` and ``IQM [low, high]`` of a summary row's statistic ``prefix``."""
    return (f"{_fmt(r[f'{prefix}_mean'])} ± {_fmt(r[f'{prefix}_std'])}",
            f"{_fmt(r[f'{prefix}_iqm'])} [{_fmt(r[f'{prefix}_iqm_ci_low'])}, "
            f"{_fmt(r[f'{prefix}_iqm_ci_high'])}]")


def _gain(r: dict, prefix: str) -> str:
    """A summary row's improvement ``prefix`` with its interval (empty where there is none)."""
    if math.isnan(r[f"{prefix}_pct"]):
        return ""
    return (f"{r[f'{prefix}_pct']:+.1f}% [{_fmt(r[f'{prefix}_ci_low'])}, "
            f"{_fmt(r[f'{prefix}_ci_high'])}]")


def _summary_markdown(summary: pd.DataFrame) -> list[str]:
    """The returns table and the comparison-and-speed table."""
    returns = ["| method | env | seeds | final return (mean ± std) | final IQM [95% CI] | "
               "AUC (mean ± std) | AUC IQM [95% CI] | max average return (PopSAN) | "
               "best eval |", "|---|---|---|---|---|---|---|---|---|"]
    versus = [f"| method | env | {BASELINE_OF_IMPROVEMENT} vs this method: final return "
              f"[95% CI] | {BASELINE_OF_IMPROVEMENT} vs this method: AUC [95% CI] | "
              "env steps/s | wall time (s) |", "|---|---|---|---|---|---|"]
    for r in summary.to_dict("records"):
        returns.append(f"| {r['method']} | {r['env']} | {r['seeds']} | "
                       f"{' | '.join(_estimate(r, 'final_eval'))} | "
                       f"{' | '.join(_estimate(r, 'auc_eval'))} | "
                       f"{_fmt(r['max_average_eval'])} | {_fmt(r['best_eval_mean'])} |")
        versus.append(f"| {r['method']} | {r['env']} | {_gain(r, 'spikerl_improvement')} | "
                      f"{_gain(r, 'spikerl_auc_improvement')} | "
                      f"{_fmt(r['env_steps_per_s_mean'])} | {_fmt(r['wall_time_s_mean'], 0)} |")
    return ["## Returns", "", *returns, "", *_few_seeds_note(summary),
            *_references_markdown(summary),
            f"## {BASELINE_OF_IMPROVEMENT} against each method, and speed", "",
            f"{BASELINE_OF_IMPROVEMENT} vs a method: 100 x (mean {BASELINE_OF_IMPROVEMENT} - "
            "mean method) / |mean method| of the final return and of the AUC, with a 95% "
            "percentile bootstrap interval that resamples each method's seeds on their own "
            "(n/a: fewer than 2 seeds). Env steps/s and wall time: per trial, mean over seeds.",
            "", *versus, ""]


def _references_markdown(summary: pd.DataFrame) -> list[str]:
    """Published returns at this experiment's budget on its environments (by name, any
    version), :mod:`~spikerl_ray.report.references`."""
    budgets = summary.groupby("env")["env_steps"].max()
    rows = [f"| {env} | {ref.algorithm} | {ref.env} | {ref.seeds} | {ref.episodes} | "
            f"{ref.env_steps:,} | {_fmt(ref.mean_return)} | {ref.source} |"
            for env, steps in budgets.items() for ref in references_for(env, int(steps))]
    if not rows:
        return []
    return ["### Published references at the same budget", "",
            "The mean over the source's seeds of the evaluation return at the same number of "
            "env steps (the protocol of our final return's mean), computed from the source's "
            "own result files. Their environment version ('their env') stands beside ours: "
            "versions differ in their simulation, and evaluation episodes and exploration "
            "schedules may differ too: a reference point, not a controlled comparison.", "",
            "| env | reference | their env | seeds | episodes per evaluation | env steps | "
            "mean eval return | source |", "|---|---|---|---|---|---|---|---|", *rows, ""]


# Below this many seeds the IQM (the mean of the middle half) is the mean.
MIN_SEEDS_FOR_IQM = 5


def _few_seeds_note(summary: pd.DataFrame) -> list[str]:
    """A warning under a table with rows of fewer than :data:`MIN_SEEDS_FOR_IQM` seeds."""
    few = int(summary["seeds"].min())
    if few >= MIN_SEEDS_FOR_IQM:
        return []
    return [f"With fewer than {MIN_SEEDS_FOR_IQM} seeds (here as few as {few}) the IQM trims "
            "at most one seed from each end (none with 3 seeds or fewer, where it equals the "
            "mean) and its bootstrap interval is close to the range of the seeds: read them "
            "as the spread of a few runs, not as an estimate that separates methods.", ""]


def _energy_markdown(summary: pd.DataFrame) -> list[str]:
    """The energy table, when the trials carry energy (each figure with its basis)."""
    if "energy_j_per_1k_steps_mean" not in summary:
        return []
    lines = ["## Energy", "", "Summed over each trial's iterations (evaluation included), per "
             "1,000 training env steps, mean over seeds; basis: measured (RAPL, NVML) or "
             "estimated (--estimate-cpu-watts). Runs sharing a node share its RAPL and NVML "
             "counters (docs/energy.md).", "",
             "| method | env | energy per 1k env steps (J) | CO2e per trial (kg) | basis |",
             "|---|---|---|---|---|"]
    for r in summary.to_dict("records"):
        if isinstance(r.get("energy_basis"), str):
            lines.append(f"| {r['method']} | {r['env']} | "
                         f"{_fmt(r['energy_j_per_1k_steps_mean'])} | "
                         f"{r['co2e_kg_mean']:.3g} | {r['energy_basis']} |")
    return lines + [""]


def _curves_markdown(curves: dict[str, Path], column: str) -> list[str]:
    """The learning curves written, with how their points are placed."""
    what = ("evaluation return (evaluations only, never a value carried into the iterations "
            "after one)" if column == "eval_return" else "training return (no evaluations)")
    return ["## Learning curves", "",
            f"The mean {what} over seeds at each env step where every seed of the method has "
            "one; shaded: the 95% Student-t interval of that mean over seeds. Against "
            "wall-clock time and energy each point sits at the seeds' mean wall time (energy "
            "summed over the iterations up to it) at that step; the energy axis only where the "
            "trials carry energy, labelled measured or estimated.", "",
            *(f"![learning curves against {axis}]({p.name})" for axis, p in curves.items()),
            ""]


def write_report(path: str | Path) -> list[str]:
    """Writes the report of the experiment or run at ``path`` (a folder, or a URI whose
    files but checkpoints are fetched, :mod:`spikerl_ray.storage`), or of each experiment in
    the storage folder ``spikerl tune --out`` was given; returns the ``report.md`` files."""
    if not is_uri(path):
        return [str(p) for p in _write_reports(Path(path), str(path))]
    mirror = Mirror(str(path))
    try:
        mirror.pull(recursive=True, keep=lambda rel: not any(
            part.startswith("checkpoint") for part in rel.split("/")[:-1]))
        written = _write_reports(mirror.local, str(path))
        for report in written:
            mirror.push(report.parent.relative_to(mirror.local).as_posix())
    finally:
        mirror.close()
    root = str(path).rstrip("/")
    return [f"{root}/{p.relative_to(mirror.local).as_posix()}" for p in written]


def _holds_results(path: Path) -> bool:
    """A run folder or a Tune experiment folder (trial folders with their results)."""
    return (path / "run.json").is_file() or bool(trial_folders(path))


def _write_reports(path: Path, name: str) -> list[Path]:
    """The report of ``path``, or where it is a storage folder of experiments, of each."""
    if not path.is_dir():
        raise UserError(f"{name} is not a folder")
    if _holds_results(path):
        return [_write_report(path, name)]
    experiments = sorted(p for p in path.iterdir() if p.is_dir() and _holds_results(p))
    if not experiments:
        raise UserError(f"{name}: holds no results (neither a run folder with run.json, nor a "
                        "Tune experiment with trial folders, nor a folder of experiments)")
    return [_write_report(p, f"{name.rstrip('/')}/{p.name}") for p in experiments]


def _write_report(path: Path, name: str) -> Path:
    """:func:`write_report` for a local folder; the report calls it ``name``."""
    if not path.is_dir():
        raise UserError(f"{name} is not a folder")
    title = name.rstrip("/").rsplit("/", 1)[-1]
    try:
        table = tidy_table(path, title)
    except (ValueError, OSError) as exc:
        raise UserError(f"{name}: {exc}") from None
    return render(table, path / REPORT_DIR, title, f"spikerl report {name}")


def render(table: pd.DataFrame, out: Path, title: str, command: str) -> Path:
    """Writes the report of a tidy table (:func:`~spikerl_ray.report.tables.tidy_table`)
    into ``out``, saying it was made with ``command``; returns ``report.md``."""
    out.mkdir(exist_ok=True)
    table.to_parquet(out / "results.parquet", index=False)
    table.to_csv(out / "results.csv", index=False)
    finals = final_per_trial(table)
    finals.to_csv(out / "trials.csv", index=False)
    summary = summary_table(finals, table)
    summary.to_csv(out / "summary.csv", index=False)
    has_eval = table["eval_return"].notna().any()
    column = "eval_return" if has_eval else "train_return"
    points = curve_points(table, column)
    points.to_csv(out / "learning_curves.csv", index=False)
    curves = learning_curves(points, out, column.replace("_", " "))
    budget = ", ".join(f"{s:,}" for s in sorted(summary["env_steps"].unique()))
    md = [f"# Report: {title}", "", f"Made with `{command}`. Definitions: docs/reports.md of "
          "spikerl-ray.", "",
          f"Final return: each trial's last noise-free evaluation, at the experiment's last "
          f"step ({budget} env steps). AUC (area under the learning curve): each trial's "
          "evaluation returns integrated over env steps (trapezoids between its evaluations, "
          "from the first evaluation to the last) divided by that span of env steps, i.e. the "
          "mean evaluation return over training, in return units. Max average return "
          "(PopSAN's protocol): the mean evaluation return over seeds at each evaluation "
          "step, maximised over the evaluation steps. Best eval: each trial's highest "
          "evaluation, mean over seeds. ± is the sample standard deviation over seeds "
          "(n - 1); IQM: interquartile mean over seeds with a 95% percentile bootstrap "
          f"interval ({BOOTSTRAP_RESAMPLES:,} resamples of the seeds of that method on that "
          f"environment, stratified by environment as rliable does; generator seed "
          f"{BOOTSTRAP_SEED}).", "",
          *_summary_markdown(summary), *_curves_markdown(curves, column),
          *_energy_markdown(summary),
          "Files: [summary.csv](summary.csv), [trials.csv](trials.csv), "
          "[learning_curves.csv](learning_curves.csv) (the curves' points), "
          "[results.csv](results.csv), [results.parquet](results.parquet) (one row per trial "
          "and iteration)."]
    if any(c.startswith("search.") for c in finals.columns):
        score = "final_eval_return" if has_eval else "final_train_return"
        sweep_plots(finals, out / "sweep.png", score)
        best = finals.loc[finals[score].idxmax()]
        settings = ", ".join(f"{c.removeprefix('search.')}={best[c]}" for c in finals.columns
                             if c.startswith("search."))
        md += ["", "## Sweep", "", f"Best trial: `{best['trial']}` ({best['method']} on "
               f"{best['env']}, seed {best['seed']}): {score.replace('_', ' ')} "
               f"{_fmt(best[score])} with {settings}.", "", "![sweep](sweep.png)"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out / "report.md"
