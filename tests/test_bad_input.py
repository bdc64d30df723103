"""Bad input as one table (reliability issue, part 6): every value-taking flag of every
command and every key of the experiment YAML, given a wrong type, an out-of-range value or a
missing file, ends with one line naming what is wrong and exit status 2, and leaves what an
earlier run wrote untouched. The table is built from the parser and the schema themselves, so a
new flag or key is in it from the start."""

from __future__ import annotations

import argparse
import hashlib
import typing
from pathlib import Path

import annotated_types
import pytest
import yaml

from spikerl_ray import cli
from spikerl_ray.cli import build_parser, main
from spikerl_ray.experiments.schema import Experiment

# What each kind of flag gets: (value, what the error line says).
WRONG = {
    cli._positive_int: [("x", "expected a int positive"), ("0", "must be positive")],
    cli._non_negative_int: [("x", "expected a int >= 0"), ("-1", "must be >= 0")],
    cli._positive_float: [("x", "expected a float positive"), ("0", "must be positive")],
    cli._non_negative_float: [("x", "expected a float >= 0"), ("-1", "must be >= 0")],
    cli._resource: [("gpu_node", "expected NAME=AMOUNT"), ("gpu_node=-1", "AMOUNT > 0")],
    cli._carbon_intensity: [("mars", "mars")],
    cli._policy: [("snn", "invalid choice: 'snn'"), ("my module:f", "MODULE:FACTORY")],
}
# Flags whose values are free text: a value that names nothing (a missing file or folder, an
# unknown environment, an address where nothing listens).
FREE = {
    ("train", "--env"): ("NoSuchEnv-v0", "unknown environment 'NoSuchEnv-v0'"),
    ("train", "--out"): ("{existing}/progress.csv", "exists and is not a folder"),
    ("train", "--address"): ("127.0.0.1:1", "cannot join the Ray cluster at 127.0.0.1:1"),
    ("tune", "--out"): ("nosuchfs://x", "cannot use storage URI"),
    ("tune", "--address"): ("127.0.0.1:1", "cannot join the Ray cluster at 127.0.0.1:1"),
    ("tune", "config"): ("{tmp}/missing.yaml", "no such file"),
    ("report", "dir"): ("{tmp}/missing", "is not a folder"),
    ("energy", "base"): ("{tmp}/missing", "is not a run folder"),
    ("energy", "new"): ("{tmp}/missing", "is not a run folder"),
    ("energy", "--plot"): ("{tmp}/missing/q.png", "cannot write the plot"),
    ("evaluate", "checkpoint"): ("{tmp}/missing", "does not exist"),
    ("evaluate", "--env"): ("NoSuchEnv-v0", "unknown environment 'NoSuchEnv-v0'"),
    ("export", "checkpoint"): ("{tmp}/missing", "does not exist"),
    ("export", "--out"): ("{existing}/progress.csv", "exists; pass --force to replace it"),
}
# The rest of a valid command line, into which one bad value goes.
VALID = {
    "train": ["train", "--method", "ann", "--env", "Pendulum-v1", "--steps", "10", "--out",
              "{existing}", "--resume"],
    "tune": ["tune", "{config}"],
    "report": ["report", "{existing}"],
    "energy": ["energy", "{existing}", "{existing}"],
    "evaluate": ["evaluate", "{checkpoint}"],
    "export": ["export", "{checkpoint}", "--out", "{tmp}/actor.nir"],
}


def _cases() -> list[tuple[str, str, str, str]]:
    cases = []
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, parser in sub.choices.items():
        for action in parser._actions:
            if action.nargs == 0 or isinstance(action, argparse._HelpAction):
                continue  # switches take no value
            name = action.option_strings[0] if action.option_strings else action.dest
            if action.choices:
                cases.append((command, name, "nonsense", "invalid choice: 'nonsense'"))
            elif action.type in WRONG:
                cases += [(command, name, v, m) for v, m in WRONG[action.type]]
            else:
                value, message = FREE[(command, name)]  # a KeyError: a new flag to add
                cases.append((command, name, value, message))
    return cases


def _digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def existing(tmp_path) -> Path:
    """What an earlier run left: a run folder with its files and a checkpoint folder."""
    run = tmp_path / "existing"
    (run / "checkpoints" / "iter_000001").mkdir(parents=True)
    (run / "run.json").write_text('{"env": "Pendulum-v1", "policy": "ann"}')
    (run / "progress.csv").write_text("iteration,env_steps\n1,1000\n")
    (run / "energy.json").write_text("{}")
    (run / "checkpoints" / "iter_000001" / "spikerl_run.json").write_text("{}")
    return run


def _argv(command: str, flag: str, value: str, tmp_path: Path, existing: Path) -> list[str]:
    config = tmp_path / "ok.yaml"
    config.write_text("name: ok\nmethods: [ann]\nenvs: [Pendulum-v1]\nseeds: [0]\n"
                      "env_steps: 1000\n")
    fill = {"{existing}": str(existing), "{tmp}": str(tmp_path), "{config}": str(config),
            "{checkpoint}": str(existing / "checkpoints" / "iter_000001")}

    def expand(text: str) -> str:
        for key, real in fill.items():
            text = text.replace(key, real)
        return text

    argv = [expand(a) for a in VALID[command]]
    value = expand(value)
    positional = [a.dest for a in build_parser()._subparsers._group_actions[0]
                  .choices[command]._actions if not a.option_strings]
    if flag in positional:  # a positional: replace the valid one at its place
        argv[1 + positional.index(flag)] = value
    elif flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


@pytest.mark.parametrize("command, flag, value, message", _cases(),
                         ids=lambda x: str(x).replace(" ", "_"))
def test_a_bad_flag_is_one_line_exit_2_and_destroys_nothing(command, flag, value, message,
                                                            tmp_path, existing, capsys,
                                                            monkeypatch):
    import spikerl_ray.session

    def no_ray(address=None):
        if address:  # joining a cluster is checked before Ray is asked
            spikerl_ray.session.check_reachable(address)
        raise AssertionError("bad input reached Ray")

    monkeypatch.setattr(spikerl_ray.session, "init_ray", no_ray)
    before = _digest(existing)
    argv = _argv(command, flag, value, tmp_path, existing)
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, argv
    assert err and err[-1].startswith(f"spikerl {command}: error: "), err
    assert message in err[-1], err
    if err[0].startswith("usage:"):  # argparse: its usage, then the one line
        assert flag.lstrip("-") in err[-1] or flag in err[-1]
    else:
        assert len(err) == 1, err
    assert _digest(existing) == before


def _leaves(model: type, prefix: str = "") -> list[tuple[str, typing.Any]]:
    """Every key of the schema with its field, nested models expanded."""
    out = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        nested = [t for t in typing.get_args(kind) or (kind,)
                  if isinstance(t, type) and hasattr(t, "model_fields")]
        if nested and prefix == "":
            out += _leaves(nested[0], f"{name}.")
        out.append((prefix + name, info))
    return out


def _yaml_cases() -> list[tuple[str, typing.Any]]:
    cases = []
    for key, info in _leaves(Experiment):
        cases.append((key, [{"not": "this"}]))  # the wrong type for every key
        for bound in info.metadata:
            if isinstance(bound, annotated_types.Gt):
                cases.append((key, bound.gt - 1))
            elif isinstance(bound, annotated_types.Ge):
                cases.append((key, bound.ge - 1))
    return cases


@pytest.mark.parametrize("key, value", _yaml_cases(), ids=lambda x: str(x))
def test_a_bad_yaml_value_is_one_line_exit_2_and_destroys_nothing(key, value, tmp_path,
                                                                  existing, capsys):
    data = {"name": "t", "methods": ["ann"], "envs": ["Pendulum-v1"], "seeds": [0],
            "env_steps": 1000}
    if key.startswith("scheduler."):
        data["scheduler"] = {"type": "asha"}
    section, _, leaf = key.rpartition(".")
    (data.setdefault(section, {}) if section else data)[leaf] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    before = _digest(existing)
    assert main(["tune", str(path), "--out", str(existing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"spikerl tune: error: {path}: {key}"), err
    assert _digest(existing) == before
