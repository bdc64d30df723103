"""``spikerl report DIR``: tables and plots from a Tune experiment, a ``spikerl train`` run,
or each experiment of the folder ``spikerl tune --out`` was given.

Writes into ``DIR/report/``: ``results.parquet`` and ``results.csv`` (the tidy table),
``summary.csv`` (per method and environment, :func:`~spikerl_ray.report.tables.summary_table`),
``trials.csv`` (one row per trial), ``learning_curves.png``, for a sweep ``sweep.png`` and the
best trial's settings, and ``report.md`` linking all of it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from spikerl_ray.errors import UserError
from spikerl_ray.report.plots import learning_curves, sweep_plots
from spikerl_ray.report.tables import final_per_trial, summary_table, tidy_table, trial_folders
from spikerl_ray.storage import Mirror, is_uri

REPORT_DIR = "report"


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _summary_markdown(summary: pd.DataFrame) -> list[str]:
    lines = ["| method | env | seeds | final eval return (mean ± std) | IQM [95% CI] | "
             "best eval | spikerl vs this method [95% CI] | env steps/s | wall time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary.to_dict("records"):
        vs = ("" if math.isnan(r["spikerl_improvement_pct"]) else
              f"{r['spikerl_improvement_pct']:+.1f}% [{_fmt(r['spikerl_improvement_ci_low'])}, "
              f"{_fmt(r['spikerl_improvement_ci_high'])}]")
        lines.append(
            f"| {r['method']} | {r['env']} | {r['seeds']} | {_fmt(r['final_eval_mean'])} ± "
            f"{_fmt(r['final_eval_std'])} | {_fmt(r['final_eval_iqm'])} "
            f"[{_fmt(r['final_eval_iqm_ci_low'])}, {_fmt(r['final_eval_iqm_ci_high'])}] | "
            f"{_fmt(r['best_eval_mean'])} | {vs} | {_fmt(r['env_steps_per_s_mean'])} | "
            f"{_fmt(r['wall_time_s_mean'], 0)} |")
    return lines


# Below this many seeds the IQM (the mean of the middle half) is the mean.
MIN_SEEDS_FOR_IQM = 5


def _few_seeds_note(summary: pd.DataFrame) -> list[str]:
    """A warning under a table with rows of fewer than :data:`MIN_SEEDS_FOR_IQM` seeds."""
    few = int(summary["seeds"].min())
    if few >= MIN_SEEDS_FOR_IQM:
        return []
    return [f"With fewer than {MIN_SEEDS_FOR_IQM} seeds (here as few as {few}) the IQM equals "
            "the mean and its bootstrap interval is close to the range of the seeds: read "
            "them as the spread of a few runs, not as an estimate that separates methods.", ""]


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
    summary = summary_table(finals)
    summary.to_csv(out / "summary.csv", index=False)
    has_eval = table["eval_return"].notna().any()
    column = "eval_return" if has_eval else "train_return"
    learning_curves(table, out / "learning_curves.png", column)
    md = [f"# Report: {title}", "", f"Made with `{command}`.", "",
          "Final evaluation return: each trial's last noise-free evaluation; ± is the sample "
          "standard deviation over seeds (n - 1); IQM: interquartile mean over seeds with a "
          "95% percentile bootstrap interval; spikerl vs a method: 100 x (mean spikerl - mean "
          "method) / |mean method|, bootstrap interval resampling each method's seeds (n/a: "
          "fewer than 2 seeds).", "",
          *_summary_markdown(summary), "", *_few_seeds_note(summary),
          "![learning curves](learning_curves.png)", "",
          *_energy_markdown(summary),
          "Files: [summary.csv](summary.csv), [trials.csv](trials.csv), "
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
