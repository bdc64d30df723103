"""The command line end to end on a real local Ray: train, evaluate, resume, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import shutil
import subprocess
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from spikerl_ray.cli import main
from spikerl_ray.run import PROGRESS_COLUMNS

TRAIN = ["train", "--policy", "spikerl", "--env", "Pendulum-v1", "--seed", "0",
         "--warmup-steps", "500", "--eval-every", "1", "--eval-episodes", "2", "--no-progress",
         "--no-compile"]  # a fast start; the recipe's bf16 is part of what these tests check


def _tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "progress.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ray_session) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pendulum"
    assert main([*TRAIN, "--steps", "2000", "--out", str(out)]) == 0
    return out


def test_remote_env_runners_without_periodic_evaluation_still_evaluate_at_the_end(
        tmp_path, ray_session):
    """With --eval-every 0 RLlib builds no evaluation runner; the end-of-run evaluation then
    runs on the driver's env runner, which needs an env even when a remote runner samples."""
    out = tmp_path / "r"
    assert main(["train", "--policy", "ann", "--env", "Pendulum-v1", "--steps", "1000",
                 "--warmup-steps", "500", "--eval-every", "0", "--eval-episodes", "1",
                 "--env-runners", "1", "--no-energy", "--no-progress", "--no-compile",
                 "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["eval_return_mean"] for r in rows[:-1]] == [""] * (len(rows) - 1)
    assert np.isfinite(float(rows[-1]["eval_return_mean"]))


def test_train_writes_progress_and_checkpoints(run_dir):
    rows = _rows(run_dir)
    assert tuple(rows[0].keys()) == PROGRESS_COLUMNS
    assert [int(r["env_steps"]) for r in rows] == [1000, 2000]
    assert all(np.isfinite(float(r["eval_return_mean"])) for r in rows)
    assert float(rows[-1]["env_steps_per_s"]) > 0
    assert int(rows[-1]["num_updates"]) > 0
    ckpts = sorted((run_dir / "checkpoints").iterdir())
    assert ckpts and (ckpts[-1] / "spikerl_run.json").exists()
    settings = json.loads((run_dir / "run.json").read_text())
    # `--policy spikerl` alone trains the spikerl method: its recipe, resolved and stored.
    assert (settings["policy"], settings["method"]) == ("spikerl", "spikerl")
    assert (settings["precision"], settings["pre_tanh_penalty"]) == ("bf16", 1.0)
    # The actor's health statistics are logged every iteration.
    for row in rows:
        assert 0.0 <= float(row["silent_output"]) + float(row["always_output"]) <= 1.0
        assert float(row["action_std"]) >= 0.0 and float(row["rate_hidden0"]) > 0.0


def test_evaluate_json(run_dir, capsys):
    ckpt = sorted((run_dir / "checkpoints").iterdir())[-1]
    assert main(["evaluate", str(ckpt), "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 2
    assert np.isfinite(result["return_mean"]) and result["return_std"] >= 0
    assert -2000 < result["return_mean"] <= 0  # Pendulum's returns are negative


def test_algorithm_from_checkpoint_restores_weights_and_obs_stats(run_dir):
    from ray.rllib.algorithms.algorithm import Algorithm

    from spikerl_ray.checkpoints import load_module

    ckpt = sorted((run_dir / "checkpoints").iterdir())[-1]
    module, _ = load_module(ckpt)
    assert module.obs_normalizer.count.item() == 2000  # raw obs of every sampled transition
    algo = Algorithm.from_checkpoint(str(ckpt))
    try:
        restored = algo.learner_group._learner.module["default_policy"]
        for (name, a), b in zip(module.state_dict().items(), restored.state_dict().values()):
            assert torch.equal(a, b.cpu()), name
        # The env runner acts with the same normalizer statistics.
        runner_module = algo.env_runner.module
        assert torch.equal(runner_module.obs_normalizer.mean, module.obs_normalizer.mean)
        assert algo.iteration == 2
    finally:
        algo.stop()


def test_resume_continues_the_run(run_dir, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(run_dir, out)
    assert main([*TRAIN, "--steps", "3000", "--out", str(out), "--resume"]) == 0
    rows = _rows(out)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert int(rows[-1]["env_steps"]) == 3000
    assert int(rows[-1]["num_updates"]) > int(rows[1]["num_updates"])


def test_existing_run_is_refused_and_left_intact(run_dir, capsys):
    before = _tree_digest(run_dir)
    assert main([*TRAIN, "--steps", "1000", "--out", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _tree_digest(run_dir) == before


def test_evaluate_on_other_shapes_is_refused(run_dir, capsys):
    ckpt = sorted((run_dir / "checkpoints").iterdir())[-1]
    assert main(["evaluate", str(ckpt), "--env", "HalfCheetah-v5"]) == 2
    assert "trained on Pendulum-v1" in capsys.readouterr().err


def test_corrupt_checkpoint(run_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(sorted((run_dir / "checkpoints").iterdir())[-1], ckpt)
    for f in (ckpt / "learner_group" / "learner" / "rl_module" / "default_policy").glob("*.p*"):
        f.write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(ckpt)]) == 2
    assert "corrupt" in capsys.readouterr().err


class _Exploit:
    """Unpickling this would run ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (subprocess.call, (["touch", str(self.marker)],))


def test_evaluate_never_unpickles_code_from_the_module_state(run_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(sorted((run_dir / "checkpoints").iterdir())[-1], ckpt)
    marker = tmp_path / "pwned"
    state = ckpt / "learner_group" / "learner" / "rl_module" / "default_policy" / \
        "module_state.pkl"
    state.write_bytes(pickle.dumps({"actor.readout.bias": _Exploit(marker)}))
    assert main(["evaluate", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is corrupt or unreadable: UnpicklingError" in err
    assert not marker.exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "--env", "NoSuchEnv-v0", "--steps", "10", "--out", "{tmp}"],
     "unknown environment 'NoSuchEnv-v0'"),
    (["train", "--env", "CartPole-v1", "--steps", "10", "--out", "{tmp}"],
     "Discrete action space"),
    (["evaluate", "{tmp}/missing"], "does not exist"),
    (["evaluate", "{tmp}"], "is not a spikerl-ray checkpoint"),
    (["train", "--steps", "10", "--out", "{tmp}/r", "--resume"], "holds no run to resume"),
    (["train", "--env", "Pendulum-v1", "--steps", "10", "--out", "{tmp}/r",
      "--gpus-per-learner", "1"], "asks for 1 GPU but no node of"),
    # Requests no node can ever satisfy stop at once instead of waiting in Ray's scheduler.
    (["train", "--env", "Pendulum-v1", "--steps", "10", "--out", "{tmp}/r", "--learners", "1",
      "--learner-resource", "gpu_node=1"], "a learner asks for 1 gpu_node but no node of the"),
    (["train", "--env", "Pendulum-v1", "--steps", "10", "--out", "{tmp}/r", "--env-runners",
      "5"], "the run asks for 5 CPU in all but the Ray cluster has 2"),
    (["train", "--env", "Pendulum-v1", "--steps", "10", "--out", "{tmp}/r", "--learners", "2",
      "--backend", "mpi"], "MPI backend is not available in this PyTorch build"),
    (["train", "--env", "Pendulum-v1", "--steps", "10", "--out", "{tmp}/r", "--learners", "2",
      "--backend", "nccl"], "NCCL backend needs GPU learners"),
    (["train", "--env", "Pendulum-v1", "--steps", "10", "--out", "{tmp}/r",
      "--async-sampling"], "it needs num_env_runners >= 1 (--env-runners)"),
    # TD3's settings under RLlib's SAC and PPO.
    (["train", "--algo", "sac", "--env", "Pendulum-v1", "--steps", "10", "--out", "{tmp}/r",
      "--pre-tanh-penalty", "0.5"], "SAC does not use these settings: pre_tanh_penalty"),
    (["train", "--algo", "ppo", "--env", "Pendulum-v1", "--steps", "10", "--out", "{tmp}/r",
      "--warmup-steps", "100"], "PPO does not use these settings: warmup_steps"),
    # Outputs at a URI (spikerl_ray.storage).
    (["train", "--env", "Pendulum-v1", "--steps", "10", "--out", "nosuchfs://bucket/r"],
     "cannot use storage URI nosuchfs://bucket/r: Unrecognized filesystem type"),
    (["train", "--steps", "10", "--out", "file://{tmp}/r", "--resume"],
     "--resume: file://"),
    (["evaluate", "file://{tmp}/missing"], "checkpoint file://"),
    (["report", "file://{tmp}/r"], "holds no results"),
])
def test_bad_input_one_line_and_nonzero_exit(argv, message, tmp_path, capsys, ray_session):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "--policy", "snn", "--steps", "10", "--out", "x"], "invalid choice: 'snn'"),
    (["train", "--method", "snn", "--steps", "10", "--out", "x"], "invalid choice: 'snn'"),
    (["train", "--steps", "10", "--out", "x", "--pre-tanh-penalty", "-1"], "must be >= 0"),
    (["train", "--steps", "0", "--out", "x"], "must be positive"),
    (["train", "--steps", "-5", "--out", "x"], "must be positive"),
    (["train", "--steps", "10", "--out", "x", "--precision", "fp8"], "invalid choice"),
    (["train", "--steps", "10", "--out", "x", "--spiking-backend", "cuda"], "invalid choice"),
    (["train", "--steps", "10", "--out", "x", "--algo", "dqn"], "invalid choice: 'dqn'"),
])
def test_bad_flags_exit_through_argparse(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_console_script_error_has_no_traceback(spikerl_cmd, tmp_path):
    proc = subprocess.run([*spikerl_cmd, "train", "--env", "MountainCar-v0", "--steps", "10",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("spikerl train: error:")


def test_train_to_a_uri_refuses_resumes_replaces_and_evaluates(tmp_path, capsys, ray_session,
                                                               monkeypatch):
    """``--out`` a URI (``file://`` here; ``s3://`` and the rest go through the same pyarrow
    filesystem calls): files and checkpoints land there, and nothing is left staged."""
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))  # where staging folders are made
    remote = tmp_path / "bucket" / "run"
    uri = remote.as_uri()
    assert main([*TRAIN, "--steps", "1000", "--out", uri]) == 0
    assert [int(r["env_steps"]) for r in _rows(remote)] == [1000]
    assert (remote / "run.json").is_file() and (remote / "energy.json").is_file()
    assert (remote / "checkpoints" / "iter_000001" / "spikerl_run.json").is_file()
    before = _tree_digest(remote)
    assert main([*TRAIN, "--steps", "1000", "--out", uri]) == 2
    assert f"--out {uri} already holds a run" in capsys.readouterr().err
    assert _tree_digest(remote) == before
    assert main([*TRAIN, "--steps", "2000", "--out", uri, "--resume"]) == 0
    rows = _rows(remote)
    assert [int(r["env_steps"]) for r in rows] == [1000, 2000]
    assert int(rows[1]["num_updates"]) > int(rows[0]["num_updates"])
    assert sorted(p.name for p in (remote / "checkpoints").iterdir()) == [
        "iter_000001", "iter_000002"]
    capsys.readouterr()
    assert main(["evaluate", f"{uri}/checkpoints/iter_000002", "--episodes", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["checkpoint"] == f"{uri}/checkpoints/iter_000002"
    assert -2000 < result["return_mean"] <= 0
    assert main(["report", uri]) == 0
    assert "# Report: run" in (remote / "report" / "report.md").read_text()
    assert main([*TRAIN, "--steps", "1000", "--out", uri, "--force"]) == 0
    assert [int(r["env_steps"]) for r in _rows(remote)] == [1000]
    assert [p.name for p in (remote / "checkpoints").iterdir()] == ["iter_000001"]
    assert (remote / "report" / "report.md").is_file()  # not the run's: --force keeps it
    assert not list(staging.iterdir())


def test_report_of_a_train_run(run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    assert main(["report", str(out)]) == 0
    summary = pd.read_csv(out / "report" / "summary.csv")
    assert summary[["method", "env", "seeds"]].values.tolist() == [["spikerl", "Pendulum-v1", 1]]
    last_eval = float(_rows(out)[-1]["eval_return_mean"])
    assert summary["final_eval_mean"].iloc[0] == pytest.approx(last_eval)
    assert (out / "report" / "learning_curves.png").stat().st_size > 0
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_export_nir_of_a_trained_checkpoint(run_dir, tmp_path, capsys):
    """``spikerl export`` on a trained spikerl checkpoint: the file, read back and run in
    snnTorch timestep by timestep with the host side from its metadata, acts as the
    checkpoint does (``tests/test_nir.py`` proves the graph layer by layer)."""
    import nir
    from nir_runners import import_snntorch, run_snntorch

    from policies.nir_export import HostSide
    from spikerl_ray.checkpoints import load_module

    ckpt = sorted((run_dir / "checkpoints").iterdir())[-1]
    out = tmp_path / "actor.nir"
    assert main(["export", str(ckpt), "--format", "nir", "--out", str(out)]) == 0
    assert json.loads((tmp_path / "actor.nir.json").read_text())["policy"] == "spikerl"
    module, _ = load_module(ckpt)
    env = gym.make("Pendulum-v1")
    env.action_space.seed(0)
    seen = [env.reset(seed=0)[0]]
    for _ in range(199):  # real observations along a random-action episode
        seen.append(env.step(env.action_space.sample())[0])
    obs = np.stack(seen).astype(np.float32)
    graph = nir.read(out)
    host = HostSide(graph.metadata)
    outputs, _ = run_snntorch(import_snntorch(graph), host.encode(torch.as_tensor(obs)))
    expected = module.forward_inference({"obs": torch.as_tensor(obs)})["actions"]
    assert torch.equal(host.decode(outputs), expected)


@pytest.mark.parametrize("algo, steps", [("sac", 2000), ("ppo", 2048)])
def test_train_evaluate_and_export_under_rllibs_sac_and_ppo(algo, steps, tmp_path, capsys,
                                                             ray_session):
    """``spikerl train --algo sac|ppo`` with the spiking actor, then ``evaluate`` and
    ``export`` on its checkpoint, as for TD3; a resume with another algorithm is refused."""
    import nir
    from nir_runners import import_snntorch, run_snntorch

    from policies.nir_export import HostSide
    from spikerl_ray.checkpoints import load_module

    out = tmp_path / algo
    argv = ["train", "--algo", algo, "--policy", "spikerl", "--env", "Pendulum-v1", "--out",
            str(out), "--eval-every", "1", "--eval-episodes", "2", "--no-progress"]
    assert main([*argv, "--steps", str(steps)]) == 0
    rows = _rows(out)
    assert int(rows[-1]["env_steps"]) == steps
    assert np.isfinite(float(rows[-1]["eval_return_mean"]))
    assert float(rows[-1]["critic_loss"]) > 0 and rows[-1]["actor_loss"]
    assert int(rows[-1]["num_updates"]) > 0
    assert json.loads((out / "run.json").read_text())["algo"] == algo
    ckpt = sorted((out / "checkpoints").iterdir())[-1]
    capsys.readouterr()
    assert main(["evaluate", str(ckpt), "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["algo"] == algo and np.isfinite(result["return_mean"])
    assert result["spikes"]["synaptic_ops"] > 0
    # The exported spiking network acts as the checkpoint's deterministic policy does.
    assert main(["export", str(ckpt), "--format", "nir", "--out", str(tmp_path / "a.nir")]) == 0
    module, _ = load_module(ckpt)
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(50, 3)), dtype=torch.float32)
    graph = nir.read(tmp_path / "a.nir")
    host = HostSide(graph.metadata)
    outputs, _ = run_snntorch(import_snntorch(graph), host.encode(obs))
    assert torch.allclose(host.decode(outputs),
                          module.forward_inference({"obs": obs})["actions"], atol=1e-6)
    other = "ppo" if algo == "sac" else "sac"
    capsys.readouterr()
    assert main(["train", "--algo", other, "--policy", "spikerl", "--env", "Pendulum-v1",
                 "--out", str(out), "--steps", str(2 * steps), "--resume"]) == 2
    assert f"holds a run with algo={algo}, not {other}" in capsys.readouterr().err
    # Resuming continues from the checkpoint (SAC refills its replay before updating).
    more = steps + (1000 if algo == "sac" else 2048)
    assert main([*argv, "--steps", str(more), "--resume"]) == 0
    rows = _rows(out)
    assert [int(r["iteration"]) for r in rows] == list(range(1, len(rows) + 1))
    assert int(rows[-1]["env_steps"]) == more
    assert int(rows[-1]["num_updates"]) > int(rows[-2]["num_updates"])
