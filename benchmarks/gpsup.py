"""GPS-UP of ``spikerl`` against ``popsan`` (``spikerl energy``), medians of interleaved pairs.

Each round trains the base method and then the new one with ``spikerl train`` (same env,
steps, seed and evaluation; the CPU energy estimated where RAPL cannot be read), and compares
the pair with ``spikerl energy --json``. The rounds' Speedup, Powerup and Greenup and their
medians are printed as JSON; the runs of the median-Greenup round are kept in ``--keep`` for
the docs (``energy.json`` of both runs, the quadrant plot).

    python benchmarks/gpsup.py --rounds 3 --keep docs/results/energy \
        --json-out benchmarks/results/gpsup_cpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import emit

ROOT = Path(__file__).resolve().parents[1]
SPIKERL = [sys.executable, "-m", "spikerl_ray.cli"]
FIGURES = ("speedup", "powerup", "greenup")


def train(method: str, out: Path, args: argparse.Namespace) -> None:
    """One ``spikerl train`` run of ``method`` into ``out``."""
    subprocess.run([*SPIKERL, "train", "--method", method, "--env", args.env, "--steps",
                    str(args.steps), "--seed", str(args.seed), "--eval-every", str(args.eval_every),
                    "--eval-episodes", "1", "--estimate-cpu-watts", str(args.watts), "--out",
                    str(out), "--no-progress"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def gpsup(base: Path, new: Path, plot: Path | None = None) -> dict:
    """``spikerl energy BASE NEW --json`` (and its plot when ``plot`` is given)."""
    extra = ["--plot", str(plot)] if plot else []
    out = subprocess.run([*SPIKERL, "energy", str(base), str(new), "--json", *extra], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="popsan")
    p.add_argument("--new", default="spikerl")
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--watts", type=float, default=10.0, help="estimated W per busy core")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--keep", type=Path, default=None, help="folder for the median round's files")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="gpsup-") as tmp:
        for k in range(args.rounds):
            base, new = Path(tmp) / f"{k}" / args.base, Path(tmp) / f"{k}" / args.new
            train(args.base, base, args)
            train(args.new, new, args)
            rounds.append(gpsup(base, new))
            print(k, {f: rounds[-1][f] for f in FIGURES}, file=sys.stderr, flush=True)
        greenups = [r["greenup"] for r in rounds]
        median_round = greenups.index(statistics.median_low(greenups))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for method in (args.base, args.new):
                shutil.copy(Path(tmp) / f"{median_round}" / method / "energy.json",
                            args.keep / f"{method}_energy.json")
            gpsup(Path(tmp) / f"{median_round}" / args.base,
                  Path(tmp) / f"{median_round}" / args.new,
                  plot=args.keep / f"gpsup_{args.base}_vs_{args.new}.png")
    result = {
        "benchmark": "gpsup", "date": started.isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "base": args.base, "new": args.new, "env": args.env, "steps": args.steps,
        "cpus": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "rounds": rounds,
        "median": {f: statistics.median(r[f] for r in rounds) for f in FIGURES},
        "median_greenup_round": median_round,
    }
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
