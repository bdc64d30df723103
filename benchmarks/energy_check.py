"""Energy of TD3 updates on one device, fp32 against bf16, read with the node's monitor (NVML
for GPUs, RAPL for CPUs). No Ray: runs on a GPU machine that has only PyTorch and
nvidia-ml-py.

    python benchmarks/energy_check.py --device cuda --seconds 20 --json-out energy_gpu.json

For each precision: an idle window (the device's power doing nothing), then a burst of TD3
updates of the ``spikerl`` actor at batch 100 lasting at least ``--seconds`` (NVML's counter
moves every ~100 ms, so windows of seconds are needed). Prints, per device, joules per 1,000
updates and average watts, each with its source, and the monitor's own CPU use, as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    emit,
    energy_per_update,
    make_td3,
    run_for,
    synchronize,
    window,
)
from spikerl_ray.energy.node import NodeMonitor  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--policy", default="spikerl")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each burst")
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--estimate-cpu-watts", type=float, default=None,
                   help="where RAPL is unreadable, estimate CPU energy (labelled estimate)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()

    monitor = NodeMonitor([os.getpid()], estimate_cpu_watts=args.estimate_cpu_watts)
    report = {"benchmark": "energy_check", "date": datetime.date.today().isoformat(),
              "command": "python " + " ".join(sys.argv), "device": args.device,
              "device_name": (torch.cuda.get_device_name() if args.device.startswith("cuda")
                              else platform.processor() or platform.machine()),
              "torch": torch.__version__, "policy": args.policy, "batch": args.batch,
              "results": {}}
    try:
        devices, seconds, _, _ = window(monitor, lambda: time.sleep(args.idle_seconds) or 0)
        report["idle"] = [{**d, "watts": d["joules"] / seconds if d["joules"] is not None
                           else None} for d in devices]
        for precision in args.precisions:
            td3, replay = make_td3(args.policy, 17, 6, args.device, precision)
            for _ in range(20):  # warm-up: kernels, allocator
                td3.step(replay.sample(args.batch))
            synchronize(args.device)
            devices, seconds, updates, monitor_cpu = window(monitor, lambda: run_for(
                lambda: td3.step(replay.sample(args.batch)), args.seconds, args.device))
            report["results"][precision] = {
                "updates": updates, "seconds": seconds, "updates_per_s": updates / seconds,
                "monitor_cpu_fraction": monitor_cpu / seconds,
                "devices": energy_per_update(devices, updates, seconds)}
    finally:
        monitor.close()
    emit(report, args.json_out)


if __name__ == "__main__":
    main()
