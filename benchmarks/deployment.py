"""Deployment fidelity of a checkpoint: return and neuromorphic energy estimate over a grid of
fixed-point settings (docs/deployment.md). No Ray cluster. Prints JSON.

    python benchmarks/deployment.py CKPT --json-out FILE.json --plot FILE.png [--episodes N]

Grid: weights fp32, int8, int4 and popsan (PopSAN's Loihi scheme) x T = 5, 3, 2, 1 (T above
the trained one skipped), the state in Loihi's 24 bits. Each setting is ``spikerl evaluate
CKPT --weights W --timesteps T`` (:func:`spikerl_ray.evaluate.evaluate`, the same seeds for
every setting); retention is its mean return over that of fp32 at the trained T. The plot
shows return against the energy estimate per inference, one point per setting (colour: the
weights; label: T).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit  # noqa: E402
from policies.quantize import WEIGHT_SCHEMES, QuantSpec  # noqa: E402
from spikerl_ray.errors import UserError  # noqa: E402
from spikerl_ray.evaluate import evaluate  # noqa: E402

GRID_TIMESTEPS = (5, 3, 2, 1)
# What each setting's row keeps of the evaluation's spike statistics.
FIGURES = ("synaptic_ops", "macs", "inference_energy_pj")


def sweep(checkpoint: str, episodes: int, seed: int) -> dict[str, Any]:
    """Every setting of the grid on ``checkpoint``: return, retention, spikes, operations and
    energy estimate per inference. Every setting starts from the same torch random state, so
    a Poisson encoder draws alike in all settings of one T."""
    start = torch.get_rng_state()
    reference = evaluate(checkpoint, episodes, seed=seed)
    trained = reference["setting"]["trained_timesteps"]
    if trained is None:
        raise UserError(f"checkpoint {checkpoint} ({reference['policy']}) has no spiking "
                        "layers: nothing to run in fixed point")
    rows = []
    for weights in WEIGHT_SCHEMES:
        for timesteps in (t for t in GRID_TIMESTEPS if t <= trained):
            torch.set_rng_state(start)
            result = (reference if (weights, timesteps) == ("fp32", trained) else
                      evaluate(checkpoint, episodes, seed=seed,
                               spec=QuantSpec(weights, timesteps=timesteps)))
            spikes = result["spikes"]
            rows.append({
                "setting": result["setting"], "label": f"{weights} T={timesteps}",
                "return_mean": result["return_mean"], "return_std": result["return_std"],
                "retention": result["return_mean"] / reference["return_mean"],
                "firing_rates": {k[len("rate_"):]: v for k, v in spikes.items()
                                 if k.startswith("rate_")},
                **{k: spikes[k] for k in FIGURES}})
    return {"env": reference["env"], "policy": reference["policy"], "algo": reference["algo"],
            "trained_timesteps": trained, "reference_return": reference["return_mean"],
            "settings": rows}


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Return against energy estimate per inference, one labelled point per setting (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    colors = dict(zip(WEIGHT_SCHEMES, ("black", "tab:blue", "tab:orange", "tab:green")))
    for row in report["settings"]:
        weights = row["setting"]["weights"]
        ax.errorbar(row["inference_energy_pj"] / 1000, row["return_mean"],
                    yerr=row["return_std"], fmt="o", color=colors[weights], capsize=3)
        ax.annotate(f"T={row['setting']['timesteps']}",  # the colour names the weights
                    (row["inference_energy_pj"] / 1000, row["return_mean"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    for weights, color in colors.items():
        ax.plot([], [], "o", color=color, label=weights)
    ax.set_xlabel("energy estimate per inference (nJ; 0.9 pJ/SOP, 4.6 pJ/MAC)")
    ax.set_ylabel(f"return (mean +/- std, {report['episodes']} episodes)")
    ax.set_title(f"{report['policy']} on {report['env']}: return vs energy per setting")
    ax.legend(title="weights")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the sweep; prints (and writes) the JSON report and the plot."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a folder under RUN/checkpoints/")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=1_000_000, help="as spikerl evaluate's")
    p.add_argument("--json-out", default=None)
    p.add_argument("--plot", default=None, metavar="FILE.png")
    args = p.parse_args(argv)
    for out in (args.json_out, args.plot):
        if out and not Path(out).resolve().parent.is_dir():
            p.error(f"cannot write {out}: its folder does not exist")
    report = {"benchmark": "deployment", "date": datetime.date.today().isoformat(),
              "command": "python benchmarks/deployment.py " + " ".join(argv or sys.argv[1:]),
              "checkpoint": args.checkpoint, "episodes": args.episodes, "seed": args.seed,
              "state_bits": QuantSpec("int8").state_bits,
              "energy_basis": "estimate: 0.9 pJ per synaptic operation, 4.6 pJ per MAC "
                              "(policies/operations.py), not a measurement",
              **sweep(args.checkpoint, args.episodes, args.seed)}
    if args.plot:
        report["plot"] = str(plot(report, args.plot))
    emit(report, args.json_out)
    return report


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        sys.exit(f"deployment: error: {exc}")
