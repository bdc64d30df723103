"""Soak test: resident memory of every process of a long training, before and after the replay
memory is full.

    python benchmarks/soak.py [--minutes 30] [--interval-s 60] [--replay-capacity 50000] \
        [--env HalfCheetah-v5] [--method spikerl] [--env-runners 2] [--json-out soak.json]

Trains (local learner, ``--env-runners`` remote env runners, energy monitor on) for
``--minutes`` and samples the resident set size (``VmRSS`` of ``/proc/<pid>/status``) of the
driver (which holds the learner and its replay), of every env runner, of any remote learner
and of the energy monitor actors every ``--interval-s`` seconds, and once more as soon as the
replay is full (its size reaches ``--replay-capacity``). Prints JSON: each process's series,
its RSS when the replay became full and at the end, the growth since then in percent, and
whether every process stayed within ``--max-growth-pct`` (10). Growth needs at least five
sampling intervals after the replay is full; with fewer it is null and ``passed`` false. Processes are sampled on this
node only (a remote node's process reads ``null``). Ctrl-C or SIGTERM stops after the current
iteration; the report is still printed (``stopped_early``) and Ray is shut down.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spikerl_ray import session  # noqa: E402

session.keep_embedded_on_loopback(None)  # before Ray is imported (docs/security.md)
import ray  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process of this node in MiB (None if it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _pid(_: Any = None) -> int:
    return os.getpid()


def processes(algo: Any) -> dict[str, int]:
    """The run's processes by role: driver (with the local learner), env runners, remote
    learners, energy monitors. Asked afresh at every sample (a restarted runner has a new
    pid)."""
    group = algo.env_runner_group
    runner_ids = group.healthy_env_runner_ids()
    pids = {"driver": os.getpid()}
    pids |= {f"env_runner_{i}": pid for i, pid in zip(runner_ids, group.foreach_env_runner(
        _pid, local_env_runner=False, remote_worker_ids=runner_ids))}
    if not algo.learner_group.is_local:
        pids |= {f"learner_{i}": r.get()
                 for i, r in enumerate(algo.learner_group.foreach_learner(_pid))}
    meter = algo._energy_meter
    for i, monitor in enumerate(meter.monitors if meter is not None else []):
        pids[f"energy_monitor_{i}"] = ray.get(monitor.__ray_call__.remote(_pid))
    return pids


class RssSampler:
    """Samples the RSS of the run's processes every ``interval_s`` in a thread, so that the
    series keeps its pace through long iterations. The training loop refreshes ``pids`` and
    ``env_steps`` between iterations (Ray calls stay on the main thread)."""

    def __init__(self, interval_s: float) -> None:
        self.t0 = time.perf_counter()
        self.pids: dict[str, int] = {}
        self.env_steps = 0
        self.series: dict[str, list[dict]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.t0, 1)

    def sample(self) -> None:
        with self._lock:
            t = self.elapsed()
            for role, pid in self.pids.items():
                self.series.setdefault(role, []).append(
                    {"t_s": t, "pid": pid, "rss_mib": rss_mib(pid), "env_steps": self.env_steps})

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def growth(series: list[dict], full_at: float | None, min_window_s: float) -> dict[str, Any]:
    """RSS at the first sample once the replay was full, at the end, and the growth in %;
    None unless the samples after full span at least ``min_window_s`` (a replay that fills
    at the end leaves nothing to judge)."""
    after = [s for s in series if full_at is not None and s["t_s"] >= full_at
             and s["rss_mib"] is not None]
    if len(after) < 2 or after[-1]["t_s"] - after[0]["t_s"] < min_window_s:
        return {"rss_full_mib": None, "rss_final_mib": None, "growth_pct": None}
    first, last = after[0]["rss_mib"], after[-1]["rss_mib"]
    return {"rss_full_mib": round(first, 1), "rss_final_mib": round(last, 1),
            "growth_pct": round(100 * (last - first) / first, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--interval-s", type=float, default=60.0)
    p.add_argument("--replay-capacity", type=int, default=50_000)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--method", default="spikerl")
    p.add_argument("--env-runners", type=int, default=2)
    p.add_argument("--max-growth-pct", type=float, default=10.0)
    p.add_argument("--num-cpus", type=int, default=None, help="for ray.init (default: all)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()

    from spikerl_ray.algorithms import build_config
    from spikerl_ray.settings import RunSettings

    stop = {"requested": False}

    def request_stop(signum: int, _frame: Any) -> None:
        stop["requested"] = True

    session.protect_token(create=True)
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False,
             log_to_driver=False)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    sampler = RssSampler(args.interval_s)
    full_at = None
    try:
        config = (build_config(RunSettings(method=args.method, env=args.env,
                                           env_runners=args.env_runners, eval_every=0))
                  .training(replay_capacity=args.replay_capacity))
        algo = config.build_algo()
        try:
            sampler.pids = processes(algo)
            sampler.start()
            deadline = sampler.t0 + 60 * args.minutes
            while time.perf_counter() < deadline and not stop["requested"]:
                result = algo.train()
                sampler.env_steps = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
                sampler.pids = processes(algo)
                replay = result["learners"]["default_policy"].get("replay_size", 0)
                if full_at is None and replay >= args.replay_capacity:
                    full_at = sampler.elapsed()
                    sampler.sample()
            sampler.stop()
        finally:
            algo.stop()
    finally:
        ray.shutdown()

    series = sampler.series
    per_process = {role: growth(s, full_at, 5 * args.interval_s) for role, s in series.items()}
    measured = [g["growth_pct"] for g in per_process.values() if g["growth_pct"] is not None]
    emit({
        "benchmark": "soak",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": vars(args),
        "wall_s": sampler.elapsed(),
        "stopped_early": stop["requested"],
        "env_steps": sampler.env_steps,
        "replay_full_at_s": full_at,
        "max_growth_pct": max(measured) if measured else None,
        "passed": bool(measured) and max(measured) <= args.max_growth_pct,
        "processes": per_process,
        "series": series,
    }, args.json_out)


if __name__ == "__main__":
    main()
