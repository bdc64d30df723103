"""GPU check without Ray: the fast spiking paths against the reference on the device, TD3
updates/s with the replay on the device, eager, compiled and as CUDA graphs, and NVML energy
per 1,000 updates. Prints JSON.

    python benchmarks/gpu_check.py [--device cuda] [--budget-s 420] [--json-out F]
    python benchmarks/gpu_check.py --dry-run --device cpu   # every code path, tiny, seconds

- equivalence: the fused backend (``spikerl``, ``dsrl``) against the torch backend, and the
  compiled torch backend (``spikerl``) against the per-timestep reference forward, in fp32 and
  bf16 autocast: largest output and gradient differences against the tolerances of
  ``tests/test_fused.py`` (:data:`tests.reference.EQUIVALENCE_TOL`);
- updates: TD3 updates/s of ``spikerl`` and ``ann`` at batch 100, 1,024 and 4,096, fp32 and
  bf16, ``eager`` (fused spiking backend) and ``compiled`` (torch backend, each loss one
  ``torch.compile`` graph), and each of these with ``policy_delay`` (2) whole updates
  (sampling, both losses and backwards, fused Adam, Polyak averaging) captured as one CUDA
  graph (``*_cuda_graph``; a capture that fails records its error). The replay holds 100,000
  random transitions of HalfCheetah's shapes (obs 17, act 6) on the device. Eager updates
  also report the ops that read back from the device (none: nothing stalls a graph capture);
- energy: joules per 1,000 updates of every timed window and idle watts, read by the node
  monitor (NVML for GPUs; null with the reason where unreadable).

Issue 13 (performance round 2), part 5. Target: at least 1,000 TD3 updates/s at batch 100
with the spiking actor on one H100/H200 (LeanRL's ANN TD3 reaches 936 env steps/s end to end on
an H100). The equivalence checks always run; the timings run eager ones first, then compiled
ones, batch 100 first, and none starts after ``--budget-s`` (420 s by default, so that the
command ends within 8 minutes): what is not reached is recorded as skipped. Running the same
command again compiles from inductor's on-disk caches (seconds instead of tens of seconds);
``--modes compiled --batches 1024 4096`` times only what a first run skipped.

``--dry-run`` runs every part on tiny sizes and traces ``torch.compile`` without generating
code (the ``eager`` backend); only CUDA graphs and NVML need the GPU. On a GPU machine
``--dry-run --device cuda`` is a quick check of the capture before the full run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    HALFCHEETAH_DIMS,
    emit,
    energy_per_update,
    make_td3,
    run_for,
    synchronize,
    window,
)
from policies import build_actor  # noqa: E402
from spikerl_ray.core.replay import TransitionReplay  # noqa: E402
from spikerl_ray.core.td3 import TD3Update, autocast  # noqa: E402
from spikerl_ray.energy.node import NodeMonitor  # noqa: E402
from tests.host_syncs import host_syncs  # noqa: E402
from tests.reference import EQUIVALENCE_TOL, ReferenceActor, max_differences  # noqa: E402

# The target: TD3 updates/s at batch 100 with the spiking actor on one H100/H200.
TARGET_UPDATES_PER_S = 1000.0
TARGET_BATCH = 100
POLICIES = ("spikerl", "ann")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Each mode's TD3Update: eager with the fused backend (the fastest eager path, and the default);
# compiled with the torch backend, which the compiler fuses best (docs/performance.md).
MODES: dict[str, dict] = {"eager": {"spiking_backend": "fused"},
                          "compiled": {"spiking_backend": "torch", "compile": True}}
# Fast path checked against a reference: which actors, and against what.
EQUIVALENCE = (("fused", "spikerl"), ("fused", "dsrl"), ("compiled", "spikerl"))


@dataclass(frozen=True)
class Sizes:
    """How much work each part does."""

    batches: tuple[int, ...]  # TD3 batch sizes timed (the first one also gets host syncs)
    equivalence_batches: tuple[int, ...]  # fused checks; the compiled check uses the first
    replay: int  # transitions in the device replay
    warmup: int  # eager updates before timing (compiling, allocator, cuBLAS handles)
    seconds: float  # each timed window (NVML's counter moves about every 100 ms)
    chunk: int  # updates between device synchronizations
    idle_s: float  # the idle window


FULL = Sizes(batches=(100, 1024, 4096), equivalence_batches=(100, 1024), replay=100_000,
             warmup=20, seconds=2.0, chunk=50, idle_s=2.0)
DRY = Sizes(batches=(100,), equivalence_batches=(100,), replay=1000, warmup=2, seconds=0.02,
            chunk=2, idle_s=0.02)


def failure(exc: BaseException) -> str:
    """How an error is recorded in the report (and its traceback printed to stderr)."""
    traceback.print_exception(exc)
    return f"{type(exc).__name__}: {exc}"


def equivalence_check(path: str, policy: str, precision: str, batch: int,
                      device: torch.device, compile_backend: str) -> dict:
    """One fast path (``"fused"`` or ``"compiled"``) against its reference with the same
    weights, as ``tests/test_fused.py`` compares them: outputs and gradients.

    The fused backend's reference is the torch backend; the compiled one's is the
    per-timestep forward, whose membrane states are fp32 under bf16 autocast as in inductor's
    kernels (the eager backends keep them in bf16, 0.1 away at bf16). A backend other than
    inductor only traces, so it is held to the eager torch backend it replays."""
    torch.manual_seed(0)
    plain = build_actor(policy, *HALFCHEETAH_DIMS, backend="torch").to(device)
    fast = build_actor(policy, *HALFCHEETAH_DIMS,
                       backend="fused" if path == "fused" else "torch").to(device)
    fast.load_state_dict(plain.state_dict())
    reference: torch.nn.Module = plain
    if path == "compiled":
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        if compile_backend == "inductor":
            reference = ReferenceActor(plain)
        fast.compile(dynamic=False, backend=compile_backend)
    obs = torch.randn(batch, HALFCHEETAH_DIMS[0],
                      generator=torch.Generator().manual_seed(batch)).to(device)
    with autocast(precision, device):
        out_ref, out_fast = reference(obs), fast(obs)
    out_diff, grad_diff = max_differences(plain, fast, out_ref, out_fast)
    tol = EQUIVALENCE_TOL[PRECISIONS[precision]]
    check = {"path": path, "policy": policy, "precision": precision, "batch": batch,
             "reference": ("per-timestep forward" if isinstance(reference, ReferenceActor)
                           else "torch backend"),
             "output_max_abs_diff": out_diff, "grad_max_rel_diff": grad_diff,
             "tolerance": tol, "passed": out_diff <= tol and grad_diff <= tol}
    if path == "compiled":  # really compiled: at least one graph, with its backend
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        check.update(compile_backend=compile_backend, graphs=graphs,
                     passed=check["passed"] and graphs > 0)
    return check


def equivalence(sizes: Sizes, device: torch.device, compile_backend: str) -> dict:
    """Every check of :data:`EQUIVALENCE` in fp32 and bf16; one that raises fails with its
    error."""
    checks = []
    for path, policy in EQUIVALENCE:
        for precision in PRECISIONS:
            for batch in (sizes.equivalence_batches if path == "fused"
                          else sizes.equivalence_batches[:1]):
                try:
                    checks.append(equivalence_check(path, policy, precision, batch, device,
                                                    compile_backend))
                except Exception as exc:
                    checks.append({"path": path, "policy": policy, "precision": precision,
                                   "batch": batch, "passed": False,
                                   "error": failure(exc)})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def graphed_updates(td3: TD3Update, replay: TransitionReplay, batch: int
                    ) -> tuple[Callable[[], None], int]:
    """``policy_delay`` whole TD3 updates (a critic-only one, then one with the actor and
    targets) captured as one CUDA graph: its replay, and the updates per replay. Warm-up on a
    side stream and capturable optimizers, as ``torch.cuda.graph``'s documentation asks."""
    n = td3.hp.policy_delay

    def updates() -> None:
        for _ in range(n):
            td3.step(replay.sample(batch))

    while td3.num_updates % n:
        td3.step(replay.sample(batch))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        updates()
    torch.cuda.current_stream().wait_stream(side)
    for optim in (td3.actor_optim, td3.critic_optim):
        for group in optim.param_groups:
            group["capturable"] = True
    graph = torch.cuda.CUDAGraph()
    if hasattr(graph, "register_generator_state"):  # PyTorch >= 2.5: the replay's generator
        graph.register_generator_state(replay.generator)
    with torch.cuda.graph(graph):
        updates()
    graph.replay()  # the first replay uploads the graph
    return graph.replay, n


def timed(monitor: NodeMonitor, step: Callable[[], object], updates_per_call: int,
          sizes: Sizes, device: torch.device) -> dict:
    """Updates/s of ``step()`` over one window of ``sizes.seconds``, with its energy."""
    devices, seconds, calls, _ = window(monitor, lambda: run_for(
        step, sizes.seconds, str(device), sizes.chunk))
    updates = calls * updates_per_call
    return {"updates_per_s": updates / seconds, "updates": updates, "seconds": seconds,
            "energy": energy_per_update(devices, updates, seconds)}


def update_rates(policy: str, precision: str, batch: int, mode: str, sizes: Sizes,
                 device: torch.device, monitor: NodeMonitor, compile_backend: str
                 ) -> dict[str, dict]:
    """``mode``'s figures and those of its CUDA graph (``{mode}_cuda_graph``)."""
    torch._dynamo.reset()  # each configuration compiles afresh (recompilation limit)
    t0 = time.perf_counter()
    td3, replay = make_td3(policy, *HALFCHEETAH_DIMS, device=str(device), precision=precision,
                           replay_size=sizes.replay, compile_backend=compile_backend,
                           **MODES[mode])

    def step() -> None:
        td3.step(replay.sample(batch))

    for _ in range(sizes.warmup):
        step()
    synchronize(str(device))
    out = {"spiking_backend": MODES[mode]["spiking_backend"] if policy != "ann" else None,
           "warmup_s": time.perf_counter() - t0}
    if mode == "eager" and batch == sizes.batches[0]:
        n = td3.hp.policy_delay  # a critic-only update and one with the actor and targets
        out[f"host_syncs_per_{n}_updates"] = host_syncs(lambda: [step() for _ in range(n)])
    out.update(timed(monitor, step, 1, sizes, device))
    graph_key = f"{mode}_cuda_graph"
    if device.type != "cuda":
        return {mode: out, graph_key: {"skipped": "CUDA graphs need a CUDA device"}}
    try:
        replay_graph, per_call = graphed_updates(td3, replay, batch)
        graphed = timed(monitor, replay_graph, per_call, sizes, device)
    except Exception as exc:  # a capture that fails is a finding, not the end of the run
        graphed = {"error": failure(exc)}
    return {mode: out, graph_key: graphed}


def run_updates(sizes: Sizes, modes: list[str], device: torch.device, monitor: NodeMonitor,
                deadline: float, compile_backend: str) -> dict:
    """Every configuration, mode by mode (eager ones compile nothing), batch 100 first. A
    configuration starts only if the time left holds the longest one of its mode so far."""
    results: dict = {}
    for mode in modes:
        longest = 0.0
        for batch in sizes.batches:
            for policy in POLICIES:
                for precision in PRECISIONS:
                    entry = results.setdefault(f"batch{batch}", {}).setdefault(
                        policy, {}).setdefault(precision, {})
                    t0 = time.monotonic()
                    if deadline - t0 < longest:
                        skipped = {"skipped": "time budget (--budget-s)"}
                        entry.update({mode: skipped, f"{mode}_cuda_graph": skipped})
                        continue
                    try:
                        entry.update(update_rates(policy, precision, batch, mode, sizes,
                                                  device, monitor, compile_backend))
                    except Exception as exc:  # recorded; the other configurations still run
                        entry.update({mode: {"error": failure(exc)},
                                      f"{mode}_cuda_graph": {"skipped": f"{mode} failed"}})
                    longest = max(longest, time.monotonic() - t0)
    return results


def target(updates: dict) -> dict:
    """Whether some configuration of ``spikerl`` at batch 100 reached the target rate."""
    rates = {f"{precision}/{mode}": figures["updates_per_s"]
             for precision, modes in updates.get(f"batch{TARGET_BATCH}", {})
             .get("spikerl", {}).items()
             for mode, figures in modes.items() if "updates_per_s" in figures}
    best = max(rates, key=rates.get) if rates else None
    return {"updates_per_s": TARGET_UPDATES_PER_S, "batch": TARGET_BATCH, "policy": "spikerl",
            "best": best, "best_updates_per_s": rates.get(best) if best else None,
            "met": rates[best] >= TARGET_UPDATES_PER_S if best else None}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true",
                   help="every part on tiny sizes, torch.compile traced without code (seconds)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="stop starting timings after this many seconds from the start")
    p.add_argument("--seconds", type=float, default=None, help="each timed window")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help=f"TD3 batch sizes (default {' '.join(map(str, FULL.batches))})")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend (default: inductor; eager with --dry-run)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()

    start = time.monotonic()
    device = torch.device(args.device)
    sizes = DRY if args.dry_run else FULL
    if args.seconds is not None:
        sizes = Sizes(**{**asdict(sizes), "seconds": args.seconds})
    if args.batches:
        sizes = Sizes(**{**asdict(sizes), "batches": tuple(args.batches)})
    compile_backend = args.compile_backend or ("eager" if args.dry_run else "inductor")
    if args.dry_run and device.type == "cpu":
        torch.set_num_threads(1)  # light on a shared CI runner (idle OpenMP threads spin)
    report: dict = {
        "benchmark": "gpu_check", "date": datetime.date.today().isoformat(),
        "command": "python " + " ".join(sys.argv), "dry_run": args.dry_run,
        "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
        "cuda": torch.version.cuda, "triton": package_version("triton"),
        "compile_backend": compile_backend, "budget_s": args.budget_s, "sizes": asdict(sizes)}
    report["equivalence"] = equivalence(sizes, device, compile_backend)
    monitor = NodeMonitor([os.getpid()])
    try:
        devices, seconds, _, _ = window(monitor, lambda: time.sleep(sizes.idle_s) or 0)
        report["energy"] = {"nvml": monitor.nvml.status, "rapl": monitor.rapl.status,
                            "idle": energy_per_update(devices, 0, seconds)}
        report["updates"] = run_updates(sizes, args.modes, device, monitor,
                                        start + args.budget_s, compile_backend)
    finally:
        monitor.close()
    report["target"] = target(report["updates"])
    report["wall_s"] = time.monotonic() - start
    emit(report, args.json_out)


if __name__ == "__main__":
    main()
