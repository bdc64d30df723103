"""Static checks of the cluster recipes in cluster/ (no Ray cluster, no cloud, no SLURM).

- The launcher config goes through what ``ray up`` does before it creates anything: Ray's
  ``prepare_config`` (defaults of the provider merged in) and ``validate_config`` (the JSON
  schema shipped with Ray, ``ray/autoscaler/ray-schema.json``, and its cross checks); broken
  copies of it are rejected, so the check can fail.
- The KubeRay RayJob's structure, its runtime env (Ray's ``RuntimeEnv``) and its entrypoint
  (``spikerl``'s own argument parser, the tune config it names).
- The SLURM script's syntax, its dry run, and runs with stand-ins for ``srun``, ``scontrol``,
  ``ray`` and ``spikerl`` on PATH that record what the script calls.
- The README links the recipes, and its ``spikerl`` commands parse.

Job submission to a real (loopback) cluster is tests/test_cluster_jobs.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.util import prepare_config, validate_config

from spikerl_ray.cli import build_parser
from spikerl_ray.experiments import load_experiment

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "launcher" / "aws.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
SHARED_PVC = CLUSTER / "kuberay" / "shared-pvc.yaml"
SBATCH = CLUSTER / "slurm" / "spikerl.sbatch"
README = CLUSTER / "README.md"
# The schema `ray up` validates against, shipped inside the installed Ray.
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
TORCH_PIN = "torch==2.13.0"  # scripts/setup.sh's default TORCH_VERSION
NODES = ["n1", "n2", "n3"]
HEAD_IP = "10.0.0.1"


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _parse_spikerl(words: list[str]) -> argparse.Namespace:
    """``spikerl``'s own parser on a command's words (``spikerl`` first); fails the test, not
    the session, on a command it rejects."""
    assert words[0] == "spikerl", words
    try:
        return build_parser().parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"spikerl rejects: {shlex.join(words)}")


# ------------------------------------------------------------------ the launcher (ray up)

def _ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does with a config before it launches anything (``_bootstrap_config``):
    the provider's defaults merged in, then Ray's validation; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _setup_commands(prepared: dict[str, Any], node_type: str) -> list[str]:
    """The setup commands a node of ``node_type`` runs: the head's merged list, else the
    type's own worker_setup_commands, which replace the merged global ones."""
    if node_type == prepared["head_node_type"]:
        return prepared["head_setup_commands"]
    own = prepared["available_node_types"][node_type].get("worker_setup_commands")
    return own if own is not None else prepared["worker_setup_commands"]


def test_launcher_config_passes_rays_own_validation():
    raw = _yaml(LAUNCHER)
    jsonschema.validate(raw, json.loads(RAY_SCHEMA.read_text()))  # the file as written
    prepared = _ray_up_checks(raw)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["cluster_name"] == raw["cluster_name"]


def _unknown_top_level_key(c: dict[str, Any]) -> None:
    c["worker_nodes_typo"] = {"min_workers": 1}


def _misspelled_node_type_field(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu"]["min_worker"] = 1


def _fractional_gpu_resource(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu"]["resources"]["GPU"] = 0.5


def _unknown_head_type(c: dict[str, Any]) -> None:
    c["head_node_type"] = "ray.head.default"


def _min_workers_above_global_max(c: dict[str, Any]) -> None:
    c["max_workers"] = 1


@pytest.mark.parametrize("breakage,error", [
    (_unknown_top_level_key, jsonschema.ValidationError),
    (_misspelled_node_type_field, jsonschema.ValidationError),
    (_fractional_gpu_resource, jsonschema.ValidationError),
    (_unknown_head_type, ValueError),
    (_min_workers_above_global_max, ValueError),
])
def test_launcher_validation_rejects_broken_copies(
        breakage: Callable[[dict[str, Any]], None], error: type[Exception]):
    broken = _yaml(LAUNCHER)
    breakage(broken)
    with pytest.raises(error):
        _ray_up_checks(broken)


def test_launcher_node_types_split_the_work():
    config = _yaml(LAUNCHER)
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert types[head]["resources"] == {"CPU": 0}  # rollouts and learners land on workers
    workers = {name: t for name, t in types.items() if name != head}
    gpu = [n for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1]
    cpu_only = [n for n, t in workers.items()
                if t["resources"].get("CPU", 0) > 0 and not t["resources"].get("GPU")]
    assert gpu and cpu_only, workers
    for name, t in workers.items():
        assert 0 <= t.get("min_workers", 0) <= t["max_workers"], name
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]


def test_launcher_installs_torch_then_this_package_on_every_node():
    prepared = _ray_up_checks(_yaml(LAUNCHER))
    for node_type, spec in prepared["available_node_types"].items():
        commands = _setup_commands(prepared, node_type)
        torch = [i for i, c in enumerate(commands) if "pip install" in c and TORCH_PIN in c]
        package = [i for i, c in enumerate(commands)
                   if "pip install" in c and "-e ~/spikerl-ray" in c]
        assert len(torch) == 1 and len(package) == 1 and torch[0] < package[0], \
            (node_type, commands)
        # Ray on the nodes at the version of the Ray that submits to them.
        assert f"ray[default]=={ray.__version__}" in commands[package[0]], node_type
        cpu_wheel = "download.pytorch.org/whl/cpu" in commands[torch[0]]
        assert cpu_wheel == (spec["resources"].get("GPU", 0) == 0), (node_type, commands)
    # What `pip install -e ~/spikerl-ray` needs is copied there, from paths that exist here.
    mounts = prepared["file_mounts"]
    for remote in ("~/spikerl-ray/pyproject.toml", "~/spikerl-ray/spikerl_ray",
                   "~/spikerl-ray/policies", "~/spikerl-ray/tune_configs"):
        assert (REPO / mounts[remote]).exists(), remote
    assert mounts["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_launcher_starts_ray_on_loopback_dashboard_with_token_auth():
    config = _yaml(LAUNCHER)
    head = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    workers = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert len(head) == 1 and len(workers) == 1
    assert "--head" in head[0] and "--dashboard-host=127.0.0.1" in head[0]
    assert "--address=$RAY_HEAD_IP:6379" in workers[0]
    for command in head + workers:
        assert "RAY_AUTH_MODE=token ray start" in command, command


# ------------------------------------------------------------------ the KubeRay RayJob

def _rayjob() -> dict[str, Any]:
    jobs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d and d.get("kind") == "RayJob"]
    assert len(jobs) == 1
    return jobs[0]


def _pod_specs(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod spec per group: "head" and each worker group's name."""
    return {"head": cluster["headGroupSpec"]["template"]["spec"],
            **{g["groupName"]: g["template"]["spec"] for g in cluster["workerGroupSpecs"]}}


def test_rayjob_structure():
    job = _rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].strip() and spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"] == \
        f"rayproject/ray:{ray.__version__}-py311"
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "dashboard-host" in head["rayStartParams"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for name, group in groups.items():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        assert group["maxReplicas"] >= 1, name
        assert isinstance(group["rayStartParams"], dict), name
        containers = group["template"]["spec"]["containers"]
        assert containers and all(c["image"] for c in containers), name
    # KubeRay's rayStartParams is a map of strings.
    for params in [head["rayStartParams"], *(g["rayStartParams"] for g in groups.values())]:
        assert all(isinstance(v, str) for v in params.values()), params
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert int(gpu["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert gpu["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    cpu = groups["cpu"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})


def test_rayjob_token_auth_and_shared_volume_in_every_pod():
    job = _rayjob()
    cluster = job["spec"]["rayClusterSpec"]
    auth = cluster["authOptions"]
    assert auth["mode"] == "token"
    claim = _yaml(SHARED_PVC)
    assert claim["kind"] == "PersistentVolumeClaim"
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for group, pod in _pod_specs(cluster).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        shared = [n for n, v in volumes.items()
                  if v.get("persistentVolumeClaim", {}).get("claimName")
                  == claim["metadata"]["name"]]
        assert len(shared) == 1, group
        for container in pod["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", group
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == \
                {"name": auth["secretName"], "key": "auth_token"}, group
            assert {"name": shared[0], "mountPath": "/mnt/shared"} in \
                container["volumeMounts"], group


def test_rayjob_entrypoint_is_a_spikerl_command_on_the_shared_volume():
    words = shlex.split(_rayjob()["spec"]["entrypoint"])
    args = _parse_spikerl(words)
    assert args.command == "tune"
    config = REPO / args.config
    assert config.is_file(), config
    load_experiment(config)  # the experiment validates as `spikerl tune` would
    assert args.address == "auto"
    assert args.out.startswith("/mnt/shared/")


def test_rayjob_runtime_env_is_one_ray_accepts():
    from ray.runtime_env import RuntimeEnv

    runtime_env = yaml.safe_load(_rayjob()["spec"]["runtimeEnvYAML"])
    assert set(runtime_env) <= {"working_dir", "pip", "env_vars", "config"}
    RuntimeEnv(**runtime_env)  # raises on a malformed field or URI
    packages = runtime_env["pip"]["packages"]
    assert packages[0] == TORCH_PIN  # pinned, first
    assert [Requirement(p).name for p in packages].count(PROJECT) == 1


# ------------------------------------------------------------------ the SLURM script

def test_sbatch_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sbatch_directives_come_before_the_first_command():
    # sbatch reads #SBATCH lines only up to the first line that is not a comment.
    lines = SBATCH.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines)
                         if line.strip() and not line.lstrip().startswith("#"))
    directives = [line.split()[1] for line in lines[:first_command]
                  if line.startswith("#SBATCH")]
    assert not any(line.startswith("#SBATCH") for line in lines[first_command:])
    for option in ("--nodes", "--ntasks-per-node=1", "--cpus-per-task", "--gpus-per-node",
                   "--time"):
        assert any(d == option or d.startswith(option + "=") for d in directives), option


STUBS = {
    # Stand-ins that record their arguments. srun runs nothing but answers the head's address
    # and, for `ray start ... --block`, becomes a sleep that the script has to end.
    "srun": r"""
echo "srun $*" >> "$STUB_LOG"
while [ $# -gt 0 ]; do
  case $1 in -w) shift 2 ;; -*) shift ;; *) break ;; esac
done
if [ "$1 $2" = "hostname --ip-address" ]; then echo "10.0.0.9 192.168.0.9"; fi
if [ "$1 $2" = "ray start" ] && [[ " $* " == *" --block "* ]]; then
  echo $$ >> "$STUB_PIDS"
  exec sleep 60
fi
""",
    "scontrol": r"""
echo "scontrol $*" >> "$STUB_LOG"
printf 'n1\nn2\nn3\n'
""",
    "ray": r"""
echo "ray $*" >> "$STUB_LOG"
if [ "$1 $2" = "get-auth-token --generate" ]; then echo "TOKEN-SECRET"; fi
""",
    "spikerl": r"""
echo "spikerl $*" >> "$STUB_LOG"
if [ -n "${STUB_SPIKERL_SLEEP:-}" ]; then
  trap 'echo "spikerl got SIGINT" >> "$STUB_LOG"; kill "$child"; exit 130' INT
  sleep "$STUB_SPIKERL_SLEEP" &
  child=$!
  echo "spikerl waiting" >> "$STUB_LOG"  # the trap is set: a signal from now on is seen
  wait "$child"
fi
exit "${STUB_SPIKERL_STATUS:-0}"
""",
}


class Stubs:
    """A PATH folder of stand-ins and the log they write."""

    def __init__(self, tmp: Path) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.log = tmp / "calls.log"
        self.pids = tmp / "pids"
        self.log.touch()
        self.pids.touch()
        for name, body in STUBS.items():
            path = self.bin / name
            path.write_text("#!/bin/bash\n" + body)
            path.chmod(0o755)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "SPIKERL_", "RAY_"))}
        env.update(PATH=f"{self.bin}{os.pathsep}{env['PATH']}", STUB_LOG=str(self.log),
                   STUB_PIDS=str(self.pids), **extra)
        return env

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def step_pids(self) -> list[int]:
        return [int(p) for p in self.pids.read_text().split()]

    def end_steps(self) -> None:
        """Ends the sleeps standing in for `ray start --block` that are still there (the
        script should have ended them: the tests assert that before this runs)."""
        for pid in self.step_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def stubs(tmp_path: Path):
    s = Stubs(tmp_path)
    yield s
    s.end_steps()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _lines(text: str, *parts: str) -> list[str]:
    return [line for line in text.splitlines() if all(p in line for p in parts)]


def _dry_run(stubs: Stubs, *args: str, **env: str) -> str:
    result = subprocess.run(
        ["bash", str(SBATCH), *args], capture_output=True, text=True, timeout=60,
        env=stubs.env(SPIKERL_DRY_RUN="1", SPIKERL_NODES=" ".join(NODES),
                      SPIKERL_HEAD_IP=HEAD_IP, **env))
    assert result.returncode == 0, result.stderr
    assert stubs.calls() == []  # printed, nothing run
    return result.stdout


def _command_line(output: str) -> list[str]:
    """The words of the one printed spikerl command."""
    lines = [line for line in output.splitlines() if line.startswith("[dry-run] spikerl ")]
    assert len(lines) == 1, output
    return shlex.split(lines[0].removeprefix("[dry-run] "))


def test_sbatch_dry_run_prints_the_cluster_the_command_and_the_stops(stubs: Stubs):
    out = _dry_run(stubs)
    address = f"{HEAD_IP}:6379"
    head = _lines(out, "ray start --head")
    assert len(head) == 1 and re.search(r"-w n1\b", head[0]), out
    assert f"--node-ip-address={HEAD_IP}" in head[0] and "--port=6379" in head[0]
    assert "--dashboard-host=127.0.0.1" in head[0] and "--block" in head[0]
    starts = _lines(out, f"ray start --address={address}")
    assert sorted(re.search(r"-w (\S+)", s)[1] for s in starts) == ["n2", "n3"], out
    words = _command_line(out)
    assert words[-2:] == ["--address", address]
    assert _parse_spikerl(words).address == address
    stops = _lines(out, "ray stop")
    assert sorted(re.search(r"-w (\S+)", s)[1] for s in stops) == NODES, out
    lines = out.splitlines()
    command_at = lines.index("[dry-run] " + shlex.join(words))
    assert all(lines.index(s) > command_at for s in stops)
    assert all(lines.index(s) < command_at for s in head + starts)
    assert _lines(out, "ray get-auth-token --generate") and \
        _lines(out, "export RAY_AUTH_MODE=token")


def test_sbatch_runs_the_command_it_is_given(stubs: Stubs):
    tune = ["spikerl", "tune", "tune_configs/smoke.yaml", "--out", "/shared/runs"]
    from_args = _command_line(_dry_run(stubs, *tune))
    from_env = _command_line(_dry_run(stubs, SPIKERL_COMMAND=shlex.join(tune)))
    assert from_args == from_env == [*tune, "--address", f"{HEAD_IP}:6379"]
    assert _parse_spikerl(from_args).command == "tune"


def test_sbatch_run_stops_ray_on_every_node_and_returns_the_commands_status(stubs: Stubs):
    # Not a dry run: the nodes from `scontrol`, the head's address from `srun hostname`.
    result = subprocess.run(
        ["bash", str(SBATCH)], capture_output=True, text=True, timeout=60,
        env=stubs.env(SLURM_JOB_NODELIST="n[1-3]", SLURM_CPUS_PER_TASK="4",
                      SLURM_GPUS_ON_NODE="0", SPIKERL_WORKER_WAIT="0",
                      STUB_SPIKERL_STATUS="3"))
    assert result.returncode == 3, result.stderr
    assert "TOKEN-SECRET" not in result.stdout + result.stderr  # the token stays out of logs
    calls = stubs.calls()
    assert "scontrol show hostnames n[1-3]" in calls
    command = [i for i, c in enumerate(calls) if c.startswith("spikerl ")]
    assert len(command) == 1
    words = shlex.split(calls[command[0]])
    assert words[-2:] == ["--address", "10.0.0.9:6379"]
    args = _parse_spikerl(words)
    assert (args.learners, args.gpus_per_learner) == (2, 0.0)  # no GPUs: CPU learners
    assert calls.index("ray get-auth-token --generate") < command[0]
    assert len([c for c in calls if "ray start --head --node-ip-address=10.0.0.9" in c]) == 1
    assert len([c for c in calls if "ray start --address=10.0.0.9:6379" in c]) == 2
    stops = [(i, re.search(r"-w (\S+)", c)[1]) for i, c in enumerate(calls)
             if c.endswith("ray stop")]
    assert sorted(node for _, node in stops) == NODES
    assert all(i > command[0] for i, _ in stops)
    assert len(stubs.step_pids()) == 3
    assert not any(_alive(pid) for pid in stubs.step_pids())  # the `ray start` steps ended


def test_sbatch_sigterm_interrupts_the_command_and_stops_ray(stubs: Stubs):
    # SLURM's --signal=B:TERM@300 before the time limit, or scancel.
    proc = subprocess.Popen(
        ["bash", str(SBATCH)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=stubs.env(SPIKERL_NODES=" ".join(NODES), SPIKERL_HEAD_IP=HEAD_IP,
                      SPIKERL_WORKER_WAIT="0", STUB_SPIKERL_SLEEP="300"))
    try:  # generous limits: on a loaded machine the stubs start slowly (SIGTERM ends the wait)
        deadline = time.monotonic() + 120
        while "spikerl waiting" not in stubs.calls():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    calls = stubs.calls()
    # Interrupted with SIGINT (Tune saves its state), not left running.
    assert "spikerl got SIGINT" in calls
    stops = [re.search(r"-w (\S+)", c)[1] for c in calls if c.endswith("ray stop")]
    assert sorted(stops) == NODES
    assert not any(_alive(pid) for pid in stubs.step_pids())


# ------------------------------------------------------------------ the README

def test_readme_links_the_recipes():
    text = README.read_text()
    links = set(re.findall(r"\]\(([^)#]+)\)", text))
    for recipe in (LAUNCHER, RAYJOB, SBATCH):
        link = str(recipe.relative_to(CLUSTER))
        assert link in links, link
    for link in links:
        if "://" not in link:
            assert (CLUSTER / link).exists(), link


def _shell_commands(markdown: str) -> list[list[str]]:
    """The commands of the README's bash blocks, continuation lines joined, as words."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def test_readme_spikerl_commands_parse():
    parsed = 0
    for words in _shell_commands(README.read_text()):
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value prefixes
            words = words[1:]
        if words[:3] == ["ray", "job", "submit"]:
            words = words[words.index("--") + 1:]
        elif words[:1] == ["sbatch"]:
            words = words[2:]
        if words[:1] != ["spikerl"] or "..." in words:
            continue
        _parse_spikerl(words)
        parsed += 1
    assert parsed >= 6  # 3 local commands, 2 job submissions, 1 sbatch
