"""The tidy table and the report, from trial folders written here in Tune's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikerl_ray.cli import main
from spikerl_ray.report.tables import tidy_table


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
