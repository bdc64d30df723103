"""``--track wandb``: ``spikerl train`` and ``spikerl tune`` log to Weights & Biases offline (no
account, no network), and the run's metrics are in the local W&B files, read back here with
W&B's own record format (:func:`wandb_records`)."""

from __future__ import annotations

import csv
import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spikerl_ray.cli import main
from tests.fast_start import FAST_START_FLAGS

wandb = pytest.importorskip("wandb")

TRAIN = ["train", "--method", "ann", "--env", "Pendulum-v1", "--warmup-steps", "500",
         "--eval-every", "1", "--eval-episodes", "1", "--no-energy", "--no-progress",
         *FAST_START_FLAGS, "--track", "wandb"]
BLOCK = 32768  # the .wandb file is a LevelDB-style log of 32 KiB blocks


def wandb_records(path: Path) -> Iterator[Any]:
    """The records (``wandb_internal_pb2.Record``) of an offline run's ``run-ID.wandb``: a 7-byte
    file header (``:W&B``, magic, version), then records of chunks, each with a 7-byte header
    (CRC, length, kind: 1 full, 2 first, 3 middle, 4 last) that never crosses a block."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # the block's zero padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def offline_run(folder: Path) -> tuple[Any, list[dict[str, Any]]]:
    """The run record and the history rows of the offline W&B run in ``folder``."""
    run, history = None, []
    (path,) = folder.glob("run-*.wandb")
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    assert run is not None, folder
    return run, history


def offline_runs(folder: Path) -> list[Path]:
    """The offline W&B runs under ``folder``/wandb, oldest first."""
    return sorted((folder / "wandb").glob("offline-run-*"))


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "progress.csv").open() as f:
        return list(csv.DictReader(f))


def test_train_logs_its_progress_rows_offline_and_resume_continues_the_run(
        tmp_path, monkeypatch, ray_session):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    out = tmp_path / "pendulum"
    assert main([*TRAIN, "--steps", "1500", "--out", str(out)]) == 0
    (first,) = offline_runs(out)
    run, history = offline_run(first)
    rows = _rows(out)
    assert (run.project, run.run_group, run.display_name) == ("spikerl-ray", "Pendulum-v1",
                                                               "pendulum")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["track"] == "wandb" and config["env"] == "Pendulum-v1"
    assert len(history) == len(rows) == 2
    assert {"episode_return_mean", "eval_return_mean", "env_steps", "critic_loss"} <= \
        set(history[-1])
    assert [h["_step"] for h in history] == [h["env_steps"] for h in history]
    assert history[-1]["env_steps"] == int(rows[-1]["env_steps"])
    assert history[-1]["episode_return_mean"] == pytest.approx(
        float(rows[-1]["episode_return_mean"]))

    # --resume continues the same W&B run id, in a second offline folder (wandb sync uploads
    # them as one run), logging the rows after the checkpoint.
    assert main([*TRAIN, "--steps", "2500", "--out", str(out), "--resume"]) == 0
    again = offline_runs(out)
    assert len(again) == 2 and again[0] == first
    resumed, more = offline_run(again[1])
    assert resumed.run_id == run.run_id
    rows = _rows(out)
    assert [h["env_steps"] for h in more] == [int(r["env_steps"]) for r in rows[2:]]
    assert more and more[-1]["env_steps"] == int(rows[-1]["env_steps"])


def test_tune_logs_each_trial_offline_grouped_by_the_experiment(tmp_path, monkeypatch,
                                                                ray_session):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = tmp_path / "tracked.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tracked", "methods": ["ann"], "envs": ["Pendulum-v1"], "seeds": [0, 1],
        "env_steps": 1500, "precision": "fp32", "evaluation": {"every": 1, "episodes": 1},
        "settings": {"warmup_steps": 500, "compile": False, "energy_monitor": False}}))
    assert main(["tune", str(config), "--out", str(tmp_path), "--track", "wandb"]) == 0
    assert "WANDB_MODE" not in os.environ  # set for Tune's callback only while it ran
    trials = sorted(p for p in (tmp_path / "tracked").iterdir() if (p / "params.json").exists())
    assert len(trials) == 2
    ids = set()
    for trial in trials:
        (folder,) = offline_runs(trial)
        run, history = offline_run(folder)
        results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        assert (run.project, run.run_group) == ("spikerl-ray", "tracked")
        assert run.run_id == results[-1]["trial_id"]
        assert len(history) == len(results)
        assert "env_runners/episode_return_mean" in history[-1]
        assert history[-1]["num_env_steps_sampled_lifetime"] == \
            results[-1]["num_env_steps_sampled_lifetime"] >= 1500
        assert list(trial.glob("events.out.tfevents.*"))  # Tune's TensorBoard files too
        ids.add(run.run_id)
    assert len(ids) == 2


@pytest.mark.parametrize("command", ["train", "tune"])
def test_without_wandb_one_line_exit_2_before_ray(command, tmp_path, monkeypatch, capsys):
    import spikerl_ray.session

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError

    def no_ray(address=None):
        raise AssertionError("reached Ray")

    monkeypatch.setattr(spikerl_ray.session, "init_ray", no_ray)
    config = tmp_path / "t.yaml"  # the YAML key, not the flag
    config.write_text("name: t\nmethods: [ann]\nenvs: [Pendulum-v1]\nseeds: [0]\n"
                      "env_steps: 1000\ntrack: wandb\n")
    argv = ([*TRAIN, "--steps", "1000", "--out", str(tmp_path / "run")]
            if command == "train" else ["tune", str(config)])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"spikerl {command}: error: --track wandb needs the wandb package: "
                    "pip install -e '.[wandb]'")]
    assert not (tmp_path / "run").exists()
