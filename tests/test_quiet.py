"""The console shows our own lines only; Ray's and RLlib's log messages only with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--method", "ann", "--env", "Pendulum-v1", "--steps", "1000",
         "--warmup-steps", "500", "--eval-every", "1", "--eval-episodes", "1", "--no-progress",
         "--no-energy"]


def _spikerl(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.run([sys.executable, "-m", "spikerl_ray.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_and_evaluate_print_no_ray_messages_unless_verbose(tmp_path):
    quiet = _spikerl(*TRAIN, "--out", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    lines = quiet.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("spikerl train: asks Ray for "), lines
    assert lines[1].startswith("done: ")
    checkpoint = str(tmp_path / "quiet" / "checkpoints" / "iter_000001")
    evaluated = _spikerl("evaluate", checkpoint, "--episodes", "1")
    assert evaluated.returncode == 0 and evaluated.stderr == "", evaluated.stderr
    assert evaluated.stdout.startswith("ann on Pendulum-v1: return ") and \
        len(evaluated.stdout.splitlines()) == 1
    verbose = _spikerl(*TRAIN, "--out", str(tmp_path / "verbose"), "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "INFO worker.py" in verbose.stderr and "Started a local Ray instance" in \
        verbose.stderr
