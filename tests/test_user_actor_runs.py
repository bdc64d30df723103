"""A user's own actor through the command line (docs/actors.md): a module of theirs on
PYTHONPATH trains, resumes, evaluates; the example LIF actor trains, reports its spikes and
exports to NIR; a feature its actor cannot serve refuses it in one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from spikerl_ray.cli import main
from tests.fast_start import FAST_START_FLAGS

# A user's module, outside the package and the repository: the minimal contract only.
USER_MODULE = '''
import torch
from torch import nn


class Mine(nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, 64), nn.ReLU(), nn.Linear(64, act_dim))

    def forward(self, obs):
        return torch.tanh(self.body(obs))


def make(obs_dim, act_dim):
    return Mine(obs_dim, act_dim)
'''
SHORT = ["--env", "Pendulum-v1", "--warmup-steps", "500", "--eval-every", "0",
         "--eval-episodes", "2", "--no-energy", "--no-progress", *FAST_START_FLAGS]


@pytest.fixture(scope="module")
def user_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a shell whose PYTHONPATH holds the user's module ``my_actors``."""
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "my_actors.py").write_text(USER_MODULE)
    return os.environ | {"PYTHONPATH": str(folder)}


def _spikerl(spikerl_cmd: list[str], env: dict[str, str], *args: str
             ) -> subprocess.CompletedProcess:
    return subprocess.run([*spikerl_cmd, *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_a_users_actor_trains_resumes_and_evaluates(spikerl_cmd, user_env, tmp_path):
    out = tmp_path / "mine"
    first = _spikerl(spikerl_cmd, user_env, "train", "--method", "ann", "--policy",
                     "my_actors:make", "--steps", "1200", "--out", str(out), *SHORT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["policy"] == "my_actors:make"
    resumed = _spikerl(spikerl_cmd, user_env, "train", "--method", "ann", "--policy",
                       "my_actors:make", "--steps", "2200", "--out", str(out), "--resume",
                       *SHORT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = (out / "progress.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3]  # continued, not restarted
    checkpoint = sorted((out / "checkpoints").glob("iter_*"))[-1]
    evaluated = _spikerl(spikerl_cmd, user_env, "evaluate", str(checkpoint), "--episodes", "2",
                         "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(evaluated.stdout)
    assert result["policy"] == "my_actors:make" and math.isfinite(result["return_mean"])
    # Without the module on PYTHONPATH the checkpoint names what is missing, in one line.
    lost = _spikerl(spikerl_cmd, os.environ | {"PYTHONPATH": ""}, "evaluate", str(checkpoint))
    assert lost.returncode == 2 and "my_actors" in lost.stderr
    assert len(lost.stderr.strip().splitlines()) == 1, lost.stderr


@pytest.mark.parametrize("extra, message", [
    (["--algo", "sac"], "has no pre-squash output (forward(obs, squash=False)), which SAC needs"),
    ([], "which the pre-tanh penalty"),  # the default method, spikerl, sets the penalty
    (["--method", "ann", "--policy", "my_actors:nope"], "has no attribute 'nope'"),
    (["--method", "ann", "--policy", "no_such_module:make"], "no_such_module"),
])
def test_a_feature_the_actor_cannot_serve_refuses_it_in_one_line(spikerl_cmd, user_env,
                                                                 tmp_path, extra, message):
    args = ["train", "--policy", "my_actors:make", "--steps", "10", "--out",
            str(tmp_path / "r"), "--env", "Pendulum-v1", *extra]
    proc = _spikerl(spikerl_cmd, user_env, *args)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r").exists()


def test_the_example_lif_actor_trains_reports_spikes_and_exports(tmp_path, ray_session, capsys):
    pytest.importorskip("nir")
    out = tmp_path / "lif"
    policy = "examples.lif_actor:make_actor"
    assert main(["train", "--method", "ann", "--policy", policy, "--steps", "1500", "--out",
                 str(out), *SHORT]) == 0
    header = (out / "progress.csv").read_text().splitlines()[0].split(",")
    last = (out / "progress.csv").read_text().strip().splitlines()[-1].split(",")
    row = dict(zip(header, last))
    assert 0 < float(row["rate_hidden0"]) < 1 and float(row["synaptic_ops"]) > 0
    checkpoint = sorted((out / "checkpoints").glob("iter_*"))[-1]
    capsys.readouterr()
    assert main(["evaluate", str(checkpoint), "--episodes", "1", "--json"]) == 0
    spikes = json.loads(capsys.readouterr().out)["spikes"]
    assert spikes["synaptic_ops"] > 0
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "lif.nir")]) == 0
    import nir

    graph = nir.read(str(tmp_path / "lif.nir"))
    lif = sorted(name for name, node in graph.nodes.items() if isinstance(node, nir.CubaLIF))
    assert lif == ["hidden0_lif", "hidden1_lif"]
    contract = json.loads(Path(str(tmp_path / "lif.nir") + ".json").read_text())
    assert contract["policy"] == policy and contract["timesteps"] == 5
