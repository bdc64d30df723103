"""Tune experiments (experiments issue): the YAML schema's one-line errors, the recipes of the
methods, the smoke experiment run for real with its report, and resuming a killed one."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import kill_when
from spikerl_ray.cli import main
from spikerl_ray.energy.readers import RaplReader
from spikerl_ray.experiments import load_experiment
from spikerl_ray.experiments.tune import trial_settings
from spikerl_ray.algorithms import build_config
from spikerl_ray.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tune_configs" / "smoke.yaml"
GOOD = """\
name: t
methods: [spikerl, ann]
envs: [Pendulum-v1]
seeds: [0]
env_steps: 1000
"""

BAD = [
    ("extra", GOOD + "colour: blue\n", "colour: unknown key"),
    ("type", GOOD.replace("env_steps: 1000", "env_steps: lots"), "env_steps: Input should be"),
    ("negative", GOOD.replace("env_steps: 1000", "env_steps: -5"), "env_steps: Input should "
     "be greater than 0"),
    ("method", GOOD.replace("[spikerl, ann]", "[spikerl, snn9000]"),
     "methods: unknown method 'snn9000'"),
    ("algo", GOOD.replace("[spikerl, ann]", "[spikerl, spikerl/dqn]"),
     "methods: spikerl/dqn: unknown algorithm 'dqn'"),
    ("algo-method", GOOD.replace("[spikerl, ann]", "[spikerl, snn/sac]"),
     "methods: unknown method 'snn'"),
    ("twice", GOOD.replace("[spikerl, ann]", "[ann/sac, ann/sac]"),
     "methods: a method entry is listed twice"),
    ("env", GOOD.replace("Pendulum-v1", "NoSuchEnv-v0"), "envs: unknown environment"),
    ("discrete", GOOD.replace("Pendulum-v1", "CartPole-v1"), "envs: "),
    ("nested", GOOD + "resources: {learners: 2, gpus: 1}\n", "resources.gpus: unknown key"),
    ("space", GOOD + "search: {actor_lr: {normal: [0, 1]}}\n", "search.actor_lr: a search "
     "space is one of"),
    ("searchable", GOOD + "search: {gamma: {choice: [0.9]}}\n", "search: cannot search "
     "'gamma'"),
    ("scheduler", GOOD + "scheduler: {type: hyperband}\n", "scheduler.type: Input should be"),
    ("retries", GOOD + "max_failures: -1\n", "max_failures: Input should be greater than or "
     "equal to 0"),
    ("yaml", GOOD + "methods: [unclosed\n", "not valid YAML"),
    ("not-a-mapping", "- just\n- a list\n", "expected a mapping"),
]


@pytest.mark.parametrize("name, text, message", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_one_line_and_exit_2_before_ray(name, text, message, tmp_path, capsys,
                                                      monkeypatch):
    import spikerl_ray.session

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a bad config")

    monkeypatch.setattr(spikerl_ray.session, "init_ray", no_ray)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    assert main(["tune", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"spikerl tune: error: {path}: "), err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["tune", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_every_shipped_config_validates():
    for path in sorted((ROOT / "tune_configs").glob("*.yaml")):
        exp = load_experiment(path)
        assert exp.name == path.stem
    sweep = load_experiment(ROOT / "tune_configs" / "sweep_spikerl.yaml")
    assert sweep.num_samples >= 32 and sweep.scheduler is not None


def test_recipes_differ_and_explicit_settings_win():
    def config(**kw):
        return build_config(RunSettings(env="Hopper-v5", **kw))

    spikerl, popsan, dsrl = (config(method=m) for m in ("spikerl", "popsan", "dsrl"))
    assert spikerl.precision == "bf16" and popsan.precision == "fp32"
    assert spikerl.pre_tanh_penalty > 0 and popsan.pre_tanh_penalty == 0
    assert spikerl.actor_kwargs == {} and popsan.actor_kwargs == {"deterministic_encoder": False}
    assert (dsrl.actor_lr, dsrl.critic_lr, dsrl.num_steps_random_warmup) == (1e-3, 1e-3, 1000)
    assert (popsan.actor_lr, popsan.num_steps_random_warmup) == (1e-4, 10_000)
    # Explicit settings override the recipe; --policy swaps the network only.
    assert config(method="spikerl", precision="fp32").precision == "fp32"
    mixed = config(method="dsrl", policy="ann")
    assert mixed.policy == "ann" and mixed.actor_lr == 1e-3
    # No method: no recipe, TD3Config's (PopSAN's) defaults.
    plain = config(policy="spikerl")
    assert plain.pre_tanh_penalty == 0 and plain.precision == "fp32"


def test_trial_settings_apply_learners_to_data_parallel_methods_only(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(GOOD + "resources: {learners: 2}\nsearch: {timesteps: {grid: [3]}}\n")
    exp = load_experiment(path)
    ours = trial_settings(exp, "spikerl", "Pendulum-v1", 0, {"timesteps": 3, "actor_lr": 0.01})
    theirs = trial_settings(exp, "ann", "Pendulum-v1", 0, {})
    assert ours.learners == 2 and theirs.learners == 0
    assert ours.actor_kwargs == {"timesteps": 3} and ours.actor_lr == 0.01


def _finished(trial: Path, steps: int) -> bool:
    rows = (trial / "result.json").read_text().splitlines() if (
        trial / "result.json").exists() else []
    return bool(rows) and json.loads(rows[-1])["num_env_steps_sampled_lifetime"] >= steps


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, ray_session) -> Path:
    out = tmp_path_factory.mktemp("tune")
    # Tune's storage at a URI (file:// here), as s3:// on a cluster.
    assert main(["tune", str(SMOKE), "--out", out.as_uri()]) == 0
    return out / "smoke"


@pytest.mark.slow
def test_smoke_experiment_runs_every_trial(smoke_run):
    trials = sorted(p for p in smoke_run.iterdir() if (p / "params.json").exists())
    names = sorted(p.name.rsplit("_", 2)[0] for p in trials)
    assert names == ["ann_Pendulum-v1_s0", "ann_Pendulum-v1_s1", "spikerl_Pendulum-v1_s0",
                     "spikerl_Pendulum-v1_s1"]
    for trial in trials:
        assert _finished(trial, 3000)
        assert list(trial.glob("checkpoint_*")), trial
        config = json.loads((trial / "params.json").read_text())
        assert config["algorithm"]["precision"] == ("bf16" if config["method"] == "spikerl"
                                                    else "fp32")
    # A trial's checkpoint is one `spikerl evaluate` reads, with the trial's identity.
    last = max(trials[0].glob("checkpoint_*"))
    info = json.loads((last / "spikerl_run.json").read_text())
    assert (info["method"], info["env"], info["env_steps"]) == ("ann", "Pendulum-v1", 3000)
    assert main(["evaluate", str(last), "--episodes", "1", "--json"]) == 0


def _interval(samples: tuple, statistic) -> object:
    """The report's 95% percentile bootstrap interval of ``statistic`` (2,000 resamples,
    generator seed 0), recomputed."""
    return stats.bootstrap(samples, statistic, n_resamples=2000, method="percentile",
                           vectorized=False,
                           random_state=np.random.default_rng(0)).confidence_interval


@pytest.mark.slow
def test_report_numbers_equal_a_recomputation_from_the_tidy_table(smoke_run):
    assert main(["report", str(smoke_run)]) == 0
    out = smoke_run / "report"
    for name in ("report.md", "results.csv", "results.parquet", "summary.csv",
                 "learning_curves.png"):
        assert (out / name).stat().st_size > 0, name
    tidy = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(tidy, pd.read_csv(out / "results.csv"), check_dtype=False)
    assert len(tidy) == 4 * 3 and set(tidy["method"]) == {"spikerl", "ann"}
    summary = pd.read_csv(out / "summary.csv").set_index("method")
    finals = {m: np.array([g.dropna(subset=["eval_return"])["eval_return"].iloc[-1]
                           for _, g in t.groupby("trial")])
              for m, t in tidy.groupby("method")}
    for method, x in finals.items():
        row = summary.loc[method]
        assert row["seeds"] == 2
        assert row["final_eval_mean"] == pytest.approx(x.mean())
        assert row["final_eval_std"] == pytest.approx(x.std(ddof=1))
        assert row["final_eval_iqm"] == pytest.approx(stats.trim_mean(x, 0.25))
        ci = _interval((x,), lambda v: stats.trim_mean(v, 0.25))
        assert (row["final_eval_iqm_ci_low"], row["final_eval_iqm_ci_high"]) == \
            pytest.approx((ci.low, ci.high))
        best = tidy[tidy["method"] == method].groupby("trial")["eval_return"].max().mean()
        assert row["best_eval_mean"] == pytest.approx(best)
    ours, base = finals["spikerl"], finals["ann"]
    gain = 100 * (ours.mean() - base.mean()) / abs(base.mean())
    assert summary.loc["ann", "spikerl_improvement_pct"] == pytest.approx(gain)
    assert math.isnan(summary.loc["spikerl", "spikerl_improvement_pct"])
    ci = _interval((ours, base), lambda y, x: 100 * (y.mean() - x.mean()) / abs(x.mean()))
    assert (summary.loc["ann", "spikerl_improvement_ci_low"],
            summary.loc["ann", "spikerl_improvement_ci_high"]) == pytest.approx((ci.low, ci.high))
    # The area under each trial's evaluation curve (trapezoids over its evaluations divided by
    # their span of env steps) with its IQM, interval and spikerl's improvement; PopSAN's
    # maximum average return (the best mean over seeds at one evaluation step).
    aucs = {}
    for method, t in tidy.groupby("method"):
        evals = t.pivot(index="env_steps", columns="trial", values="eval_return").dropna()
        steps = evals.index.to_numpy(dtype=float)
        x = aucs[method] = np.array([np.trapezoid(evals[c], steps) / (steps[-1] - steps[0])
                                     for c in evals])
        row = summary.loc[method]
        assert row["auc_eval_mean"] == pytest.approx(x.mean())
        assert row["auc_eval_iqm"] == pytest.approx(stats.trim_mean(x, 0.25))
        ci = _interval((x,), lambda v: stats.trim_mean(v, 0.25))
        assert (row["auc_eval_iqm_ci_low"], row["auc_eval_iqm_ci_high"]) == \
            pytest.approx((ci.low, ci.high))
        assert row["max_average_eval"] == pytest.approx(evals.mean(axis=1).max())
    ours, base = aucs["spikerl"], aucs["ann"]
    assert summary.loc["ann", "spikerl_auc_improvement_pct"] == pytest.approx(
        100 * (ours.mean() - base.mean()) / abs(base.mean()))
    ci = _interval((ours, base), lambda y, x: 100 * (y.mean() - x.mean()) / abs(x.mean()))
    assert (summary.loc["ann", "spikerl_auc_improvement_ci_low"],
            summary.loc["ann", "spikerl_auc_improvement_ci_high"]) == \
        pytest.approx((ci.low, ci.high))
    for name in ("learning_curves_time.png", "learning_curves_energy.png"):
        assert (out / name).stat().st_size > 0, name
    # Wall time, env steps/s and CO2 per method recompute from the tidy table's last rows.
    for method, t in tidy.groupby("method"):
        last = t.sort_values("iteration").groupby("trial").tail(1)
        assert summary.loc[method, "wall_time_s_mean"] == pytest.approx(last["wall_time_s"].mean())
        assert summary.loc[method, "env_steps_per_s_mean"] == pytest.approx(
            (last["env_steps"] / last["wall_time_s"]).mean())
        co2 = [g["energy.co2e_kg"].sum() for _, g in t.groupby("trial")]
        assert summary.loc[method, "co2e_kg_mean"] == pytest.approx(np.mean(co2))
    assert "spikerl report" in (out / "report.md").read_text()
    # The trials carry energy (smoke.yaml asks for the CPU estimate where RAPL is unreadable);
    # the summary's figure per method recomputes from the tidy table.
    basis = "measured" if RaplReader().status == "rapl" else "estimated"
    assert set(tidy["energy.energy_basis"]) == {basis}
    for method, t in tidy.groupby("method"):
        per_trial = [1000 * g["energy.energy_j"].sum() / g["env_steps"].iloc[-1]
                     for _, g in t.groupby("trial")]
        assert summary.loc[method, "energy_j_per_1k_steps_mean"] == pytest.approx(
            np.mean(per_trial))
        assert summary.loc[method, "energy_basis"] == basis
    assert "## Energy" in (out / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("interrupt", [False, True], ids=["killed", "ctrl_c"])
def test_killed_experiment_resumes_without_rerunning_finished_trials(interrupt, tmp_path,
                                                                    ray_session):
    """The driver SIGKILLed with its Ray (the head lost), or interrupted with Ctrl-C (which
    says what is unfinished and how to continue), once a trial has finished: --resume runs
    only the others."""
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        driver = subprocess.Popen([sys.executable, "-m", "spikerl_ray.cli", "tune", str(SMOKE),
                                   "--out", str(tmp_path)], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=stderr,
                                  start_new_session=True)
        exp_dir = tmp_path / "smoke"
        kill_when(driver, lambda: any(_finished(t, 3000) for t in exp_dir.glob("*_s*")
                                      if t.is_dir()), 900, interrupt=interrupt)
    if interrupt:
        err = log.read_text()
        assert driver.returncode == 130, err[-2000:]
        assert "of 4 trials unfinished; continue with: spikerl tune" in err, err[-2000:]
    finished = {t.name: (t / "result.json").read_text() for t in exp_dir.glob("*_s*")
                if _finished(t, 3000)}
    assert 1 <= len(finished) < 4
    assert main(["tune", str(SMOKE), "--out", str(tmp_path), "--resume"]) == 0
    trials = [t for t in exp_dir.glob("*_s*") if t.is_dir()]
    assert len(trials) == 4 and all(_finished(t, 3000) for t in trials)
    for name, text in finished.items():  # not re-run: not a row more
        assert (exp_dir / name / "result.json").read_text() == text


FLAKY = """\
name: flaky
methods: [ann]
envs: [Pendulum-v1, "tests.flaky_env:FlakyPendulum-v0"]
seeds: [0]
env_steps: 1000
evaluation: {every: 1, episodes: 1}
settings: {warmup_steps: 500, energy_monitor: false}
max_concurrent_trials: 2
max_failures: MAX
"""


@pytest.mark.slow
@pytest.mark.parametrize("max_failures", [1, 0])
def test_a_failing_trial_is_retried_and_never_stops_the_others(max_failures, tmp_path, capsys,
                                                               ray_session):
    path = tmp_path / "flaky.yaml"
    path.write_text(FLAKY.replace("MAX", str(max_failures)))
    status = main(["tune", str(path), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    state = json.loads(max((tmp_path / "flaky").glob("experiment_state-*.json")).read_text())
    trials = {json.loads(t)["config"]["env"]: (json.loads(t)["status"], json.loads(run))
              for t, run in state["trial_data"]}
    assert trials["Pendulum-v1"][0] == "TERMINATED"
    assert _finished(next((tmp_path / "flaky").glob("ann_Pendulum-v1_s0_*")), 1000)
    trial_status, run = trials["tests.flaky_env:FlakyPendulum-v0"]
    assert run["num_failures"] == 1
    trial_dir = next((tmp_path / "flaky").glob("ann_tests.flaky_env*"))
    assert "FlakyPendulum fails once per trial" in (trial_dir / "error.txt").read_text()
    if max_failures:
        assert status == 0, err
        assert trial_status == "TERMINATED" and _finished(trial_dir, 1000)
    else:
        assert status == 2 and trial_status == "ERROR"
        assert err.strip().splitlines()[-1].startswith(
            "spikerl tune: error: 1 trial(s) failed; see "), err
