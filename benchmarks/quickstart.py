"""How long a new user waits for ``bash scripts/quickstart.sh``, as JSON.

Each round runs the script as a user does, into a fresh output folder, with bash's trace on
(``set -x``, each traced command stamped with ``$EPOCHREALTIME``; bash does not take ``PS4`` from
the environment here, so the script is sourced by a ``bash -c`` that sets it), and splits its wall time
at the traced commands: set-up (``bash scripts/setup.sh``, with the venv already there),
training (``spikerl train``: Ray's start, the compile of the networks, the training steps, the
checkpoints) and evaluation (``spikerl evaluate``). ``--caches cold`` points PyTorch's
compile caches (inductor, Triton) at an empty folder, as on a machine that never compiled
these networks; ``warm`` keeps one cache folder across the rounds (filled by a first, untimed
run), as on a second run. Rounds interleave the cache modes.

    python benchmarks/quickstart.py --rounds 3 --json-out benchmarks/results/quickstart_cpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "scripts/quickstart.sh"
TRACE_STAMP = "+T "
# The traced commands that start each phase, in order (set -x prints a command after
# expanding it, so the train and evaluate lines start with the command's name).
PHASES = (("setup", re.compile(r"^bash scripts/setup\.sh")),
          ("train", re.compile(r"^spikerl train ")),
          ("evaluate", re.compile(r"^spikerl evaluate ")))
EVAL_RETURN = re.compile(r"return\s+(-?[0-9.]+)")


def _phase_starts(trace: str) -> dict[str, float]:
    """The time stamp of the first traced line of each phase."""
    starts: dict[str, float] = {}
    for line in trace.splitlines():
        stripped = line.lstrip("+")
        if not stripped.startswith(TRACE_STAMP.lstrip("+")):
            continue
        stamp, _, command = stripped[len(TRACE_STAMP) - 1:].partition(" ")
        for name, pattern in PHASES:
            if name not in starts and pattern.match(command):
                starts[name] = float(stamp)
    missing = [name for name, _ in PHASES if name not in starts]
    if missing:
        raise RuntimeError(f"the trace of {SCRIPT} has no line for {missing}")
    return starts


def run_once(cache_dir: Path) -> dict:
    """Runs the quickstart once with the compile caches in ``cache_dir``; wall times per phase."""
    with tempfile.TemporaryDirectory(prefix="quickstart-") as out:
        env = {**os.environ, "OUT": str(Path(out) / "run"), "QUICKSTART_PS4": TRACE_STAMP + "$EPOCHREALTIME ",
               "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"),
               "TRITON_CACHE_DIR": str(cache_dir / "triton")}
        t0 = time.time()
        proc = subprocess.run(["bash", "-c", 'PS4=$QUICKSTART_PS4; set -x; source "$0"', SCRIPT],
                              cwd=ROOT, env=env, capture_output=True,
                              text=True)
        t_end = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    starts = _phase_starts(proc.stderr)
    returns = EVAL_RETURN.findall(proc.stdout)
    return {"total_s": t_end - t0,
            "setup_s": starts["train"] - starts["setup"],
            "train_s": starts["evaluate"] - starts["train"],
            "evaluate_s": t_end - starts["evaluate"],
            "before_setup_s": starts["setup"] - t0,
            "eval_return": float(returns[-1]) if returns else None}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--caches", nargs="+", choices=("cold", "warm"), default=["cold", "warm"])
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {mode: [] for mode in args.caches}
    with tempfile.TemporaryDirectory(prefix="quickstart-caches-") as tmp:
        warm = Path(tmp) / "warm"
        if "warm" in args.caches:
            run_once(warm)  # fills the warm caches; not timed
        for k in range(args.rounds):
            for mode in args.caches:
                cache = warm if mode == "warm" else Path(tmp) / f"cold-{k}"
                runs[mode].append(run_once(cache))
                print(mode, json.dumps(runs[mode][-1]), file=sys.stderr, flush=True)
    keys = ("total_s", "setup_s", "train_s", "evaluate_s")
    result = {
        "benchmark": "quickstart", "date": started.isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "script": SCRIPT, "cpus": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "rounds": runs,
        "median": {mode: {key: statistics.median(r[key] for r in rs) for key in keys}
                   for mode, rs in runs.items()},
    }
    emit(result, args.json_out)


if __name__ == "__main__":
    main()
