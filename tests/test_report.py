"""The tidy table and the report, from trial folders written here in Tune's format and from
tidy tables built by hand: the area under the curve, PopSAN's maximum average return, the
IQM and intervals recomputed, the published references and the learning curves' files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spikerl_ray.cli import main
from spikerl_ray.report import render
from spikerl_ray.report.references import REFERENCES, references_for
from spikerl_ray.report.tables import (area_under_curve, curve_points, final_per_trial,
                                       summary_table, tidy_table)


def _trial(folder: Path, method: str, seed: int, interval: int, iterations: int) -> None:
    """A trial folder as Tune writes it: RLlib's results repeat the last evaluation in the
    iterations after it."""
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({
        "method": method, "env": "Pendulum-v1", "seed": seed,
        "algorithm": {"evaluation_interval": interval, "num_learners": 0}}))
    lines, evaluation = [], None
    for i in range(1, iterations + 1):
        if i % interval == 0:
            evaluation = {"env_runners": {"episode_return_mean": -100.0 * i + seed}}
        result = {"training_iteration": i, "num_env_steps_sampled_lifetime": 1000 * i,
                  "time_total_s": 10.0 * i,
                  "env_runners": {"episode_return_mean": -200.0 + i}}
        if evaluation is not None:
            result["evaluation"] = evaluation
        lines.append(json.dumps(result))
    (folder / "result.json").write_text("\n".join(lines) + "\n")


def test_an_iteration_without_an_evaluation_has_no_evaluation_value(tmp_path):
    _trial(tmp_path / "exp" / "ann_Pendulum-v1_s0_x", "ann", 0, interval=3, iterations=7)
    table = tidy_table(tmp_path / "exp")
    evaluated = table.dropna(subset=["eval_return"])
    assert list(evaluated["iteration"]) == [3, 6]
    assert list(evaluated["eval_return"]) == [-300.0, -600.0]
    assert table["train_return"].notna().all()


def test_a_restored_trial_has_each_iteration_once(tmp_path):
    """A trial restored from its checkpoint at iteration 4 after it had written 6 (a retry, or
    `spikerl tune --resume`) appends iterations 5, 6, 7 again: the table keeps the later ones,
    one row per iteration, env steps and wall time going on from the checkpoint."""
    trial = tmp_path / "exp" / "ann_Pendulum-v1_s0_x"
    _trial(trial, "ann", 0, interval=2, iterations=6)
    lines = (trial / "result.json").read_text().splitlines()
    again = [json.loads(line) for line in lines[4:]] + [dict(json.loads(lines[-1]))]
    for k, r in enumerate(again):
        r.update({"training_iteration": 5 + k, "num_env_steps_sampled_lifetime": 1000 * (5 + k),
                  "time_total_s": 40.0 + 5.0 * (k + 1)})
    (trial / "result.json").write_text("\n".join(lines + [json.dumps(r) for r in again]) + "\n")
    table = tidy_table(tmp_path / "exp")
    assert list(table["iteration"]) == list(range(1, 8))
    assert list(table["env_steps"]) == [1000 * i for i in range(1, 8)]
    assert list(table["wall_time_s"])[3:] == [40.0, 45.0, 50.0, 55.0]
    assert list(table["env_steps_per_s"])[4:] == [200.0, 200.0, 200.0]


def test_report_of_a_tune_out_folder_reports_each_experiment(tmp_path, capsys):
    for name in ("first", "second"):
        for seed in (0, 1):
            _trial(tmp_path / "out" / name / f"ann_Pendulum-v1_s{seed}_x", "ann", seed, 1, 3)
    (tmp_path / "out" / "not_an_experiment").mkdir()
    assert main(["report", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    for name in ("first", "second"):
        report = tmp_path / "out" / name / "report" / "report.md"
        assert str(report) in printed and report.stat().st_size > 0
    assert not (tmp_path / "out" / "report").exists()


def test_a_folder_with_no_results_names_what_it_looked_for(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no results" in err


@pytest.mark.parametrize("seeds", [2, 5])
def test_few_seeds_are_said_next_to_the_table(tmp_path, seeds):
    for seed in range(seeds):
        _trial(tmp_path / "exp" / f"ann_Pendulum-v1_s{seed}_x", "ann", seed, 1, 2)
    assert main(["report", str(tmp_path / "exp")]) == 0
    text = (tmp_path / "exp" / "report" / "report.md").read_text()
    assert "sample standard deviation" in text
    assert ("fewer than 5 seeds" in text) == (seeds < 5)


def _tidy(curves: dict[tuple[str, str, int], list[float | None]], step: int = 10_000,
          energy_basis: str | None = None) -> pd.DataFrame:
    """A tidy table by hand: per (method, env, seed) its evaluation return at each iteration
    (None: no evaluation), ``step`` env steps and 2 s per iteration (seed s: 2 (s + 1) s), and
    with ``energy_basis`` 3 J per iteration (seed s: 3 (s + 1) J)."""
    rows = []
    for (method, env, seed), evals in curves.items():
        for i, value in enumerate(evals, start=1):
            rows.append({"experiment": "x", "trial": f"{method}_{env}_s{seed}", "method": method,
                         "env": env, "seed": seed, "iteration": i, "env_steps": step * i,
                         "train_return": 0.0, "eval_return": value, "env_steps_per_s": 5.0,
                         "wall_time_s": 2.0 * i * (seed + 1), "learners": 1,
                         "precision": "fp32",
                         **({"energy.energy_j": 3.0 * (seed + 1),
                             "energy.energy_basis": energy_basis,
                             "energy.co2e_kg": 1e-6} if energy_basis else {})})
    return pd.DataFrame(rows).astype({"eval_return": float})


def test_area_under_the_curve_integrates_the_evaluations_over_their_span():
    # Evaluations at 20k, 30k and 50k env steps (none at 10k and 40k): trapezoids
    # 10k x (0 + 100) / 2 + 20k x (100 + 100) / 2 = 2.5e6 over the span 30k.
    table = _tidy({("ann", "Pendulum-v1", 0): [None, 0.0, 100.0, None, 100.0]})
    trial = final_per_trial(table).iloc[0]
    assert trial["auc_eval_return"] == pytest.approx(2.5e6 / 30_000)
    assert trial["final_eval_return"] == 100.0
    assert area_under_curve(np.array([5.0]), np.array([7.0])) == 7.0
    assert math.isnan(area_under_curve(np.array([]), np.array([])))


def test_max_average_return_is_the_best_mean_over_seeds_at_one_evaluation_step():
    # Means over seeds per step: 1, 7, 6 (step 4 is evaluated by seed 0 only, so no point);
    # best evaluation per seed: 100, 8 (mean 54).
    table = _tidy({("ann", "Pendulum-v1", 0): [0.0, 10.0, 4.0, 100.0],
                   ("ann", "Pendulum-v1", 1): [2.0, 4.0, 8.0, None]})
    summary = summary_table(final_per_trial(table), table).iloc[0]
    assert summary["max_average_eval"] == pytest.approx(7.0)
    assert summary["best_eval_mean"] == pytest.approx(54.0)
    points = curve_points(table)
    assert list(points["env_steps"]) == [10_000, 20_000, 30_000]
    assert list(points["return_mean"]) == pytest.approx([1.0, 7.0, 6.0])


def _bootstrap(samples: tuple[np.ndarray, ...], statistic) -> tuple[float, float]:
    ci = stats.bootstrap(samples, statistic, n_resamples=2000, method="percentile",
                         vectorized=False,
                         random_state=np.random.default_rng(0)).confidence_interval
    return ci.low, ci.high


def test_summary_numbers_equal_a_recomputation_from_the_written_tidy_table(tmp_path):
    rng = np.random.default_rng(1)
    curves = {(m, env, s): list(rng.normal(loc, 50.0, 4))
              for m, loc in (("spikerl", 300.0), ("ann", 200.0))
              for env in ("Hopper-v5", "Pendulum-v1") for s in range(5)}
    render(_tidy(curves), tmp_path, "x", "test")
    tidy = pd.read_csv(tmp_path / "results.csv")
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["method", "env"])
    iqm = lambda v: stats.trim_mean(v, 0.25)  # noqa: E731
    per_seed = {}
    for (method, env), t in tidy.groupby(["method", "env"]):
        evals = t.pivot(index="env_steps", columns="seed", values="eval_return")
        steps = evals.index.to_numpy(dtype=float)
        auc = np.array([np.sum((steps[1:] - steps[:-1]) * (v[1:] + v[:-1]) / 2)
                        / (steps[-1] - steps[0]) for v in evals.to_numpy().T])
        final = evals.iloc[-1].to_numpy()
        per_seed[method, env] = {"final_eval": final, "auc_eval": auc}
        row = summary.loc[(method, env)]
        assert row["seeds"] == 5 and row["env_steps"] == 40_000
        for prefix, x in per_seed[method, env].items():
            assert row[f"{prefix}_mean"] == pytest.approx(x.mean())
            assert row[f"{prefix}_std"] == pytest.approx(x.std(ddof=1))
            assert row[f"{prefix}_iqm"] == pytest.approx(iqm(x))
            # Stratified by env: only this env's seeds are resampled.
            assert (row[f"{prefix}_iqm_ci_low"], row[f"{prefix}_iqm_ci_high"]) == \
                pytest.approx(_bootstrap((x,), iqm))
        assert row["max_average_eval"] == pytest.approx(evals.mean(axis=1).max())
    gain = lambda y, x: 100 * (y.mean() - x.mean()) / abs(x.mean())  # noqa: E731
    for env in ("Hopper-v5", "Pendulum-v1"):
        ours, theirs = per_seed["spikerl", env], per_seed["ann", env]
        row = summary.loc[("ann", env)]
        for prefix, name in (("final_eval", "spikerl_improvement"),
                             ("auc_eval", "spikerl_auc_improvement")):
            y, x = ours[prefix], theirs[prefix]
            assert row[f"{name}_pct"] == pytest.approx(gain(y, x))
            assert (row[f"{name}_ci_low"], row[f"{name}_ci_high"]) == \
                pytest.approx(_bootstrap((y, x), gain))
            assert math.isnan(summary.loc[("spikerl", env), f"{name}_pct"])
    text = (tmp_path / "report.md").read_text()
    assert "AUC IQM [95% CI]" in text and "max average return (PopSAN)" in text
    assert "2,000 resamples" in text


@pytest.mark.parametrize("env, iterations, shown", [
    ("HalfCheetah-v5", 10, True), ("Hopper-v5", 10, True), ("HalfCheetah-v5", 5, False),
    ("Pendulum-v1", 10, False)])
def test_published_references_appear_only_at_their_budget_and_env(tmp_path, env, iterations,
                                                                   shown):
    table = _tidy({(m, env, s): [100.0 + s] * iterations
                   for m in ("spikerl", "ann") for s in range(2)})
    text = (render(table, tmp_path, "x", "test")).read_text()
    assert ("Published references at the same budget" in text) == shown
    expected = [r for r in REFERENCES if r.env.split("-v")[0] == env.split("-v")[0]]
    for ref in expected:
        row = (f"| {env} | {ref.algorithm} | {ref.env} | 10 | 10 | 100,000 | "
               f"{ref.mean_return:,.1f} |")
        assert (row in text) == shown
    assert shown == bool(references_for(env, 10_000 * iterations))
    assert references_for("HalfCheetah-v5", 100_000)[0].env == "HalfCheetah-v1"


@pytest.mark.parametrize("basis", [None, "estimated"])
def test_learning_curves_against_steps_time_and_energy_where_there_is_energy(tmp_path, basis):
    table = _tidy({("ann", "Pendulum-v1", s): [None, 1.0 + s, None, 3.0 + s] for s in range(2)},
                  energy_basis=basis)
    text = render(table, tmp_path, "x", "test").read_text()
    files = ["learning_curves.png", "learning_curves_time.png", "learning_curves_energy.png"]
    for name in files:
        written = (tmp_path / name).exists()
        assert written == (name != files[2] or basis is not None), name
        assert (f"]({name})" in text) == written, name
        if written:
            assert (tmp_path / name).stat().st_size > 0
    points = pd.read_csv(tmp_path / "learning_curves.csv")
    # Evaluations only (iterations 2 and 4), mean over seeds, at the seeds' mean wall time
    # (seeds 0 and 1: 4 and 8 s at iteration 2, 8 and 16 s at iteration 4).
    assert list(points["env_steps"]) == [20_000, 40_000]
    assert list(points["return_mean"]) == pytest.approx([1.5, 3.5])
    assert list(points["wall_time_s_mean"]) == pytest.approx([6.0, 12.0])
    if basis:  # energy summed over the iterations up to the evaluated one: 3 J and 6 J each
        assert list(points["energy_j_mean"]) == pytest.approx([9.0, 18.0])
        assert set(points["energy_basis"]) == {"estimated"}
    else:
        assert points["energy_j_mean"].isna().all()
