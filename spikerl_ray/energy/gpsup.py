"""GPS-UP (Abdulsalam, Zong, Gu, Qiu, IGSC 2015) and carbon equivalents of two runs. No Ray.

Speedup = T_base / T_new, Powerup = P_new / P_base (average power), Greenup = E_base / E_new =
Speedup / Powerup. Two runs of different lengths are compared per env step (the same work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Speedup or Powerup within this relative distance of 1 counts as "= 1". The paper leaves the
# boundary to the reader; 1% is a stated choice (`spikerl energy --tolerance` changes it).
GPSUP_TOLERANCE = 0.01

# The eight categories, numbered as in the paper: green 1-4 (energy saved), red 5-8.
CATEGORIES: dict[int, tuple[str, str]] = {
    1: ("green", "faster at lower power (Speedup > 1, Powerup < 1)"),
    2: ("green", "faster at the same power (Speedup > 1, Powerup = 1)"),
    3: ("green", "faster, power up by less than the speedup (Speedup > 1, 1 < Powerup < "
                 "Speedup)"),
    4: ("green", "not faster, power down by more than the slowdown (Speedup <= 1, Powerup < 1, "
                 "Greenup > 1)"),
    5: ("red", "power up by more than the speedup (Powerup > 1, Greenup < 1)"),
    6: ("red", "slower, power down by less than the slowdown (Speedup < 1, Powerup < 1, "
               "Greenup < 1)"),
    7: ("red", "slower at the same power (Speedup < 1, Powerup = 1)"),
    8: ("red", "not faster at higher power (Speedup <= 1, Powerup > 1)"),
}

# EPA Greenhouse Gas Equivalencies Calculator, as recorded on 2026-11-28 (docs/methods.md;
# the EPA revises them about yearly): kg CO2e per unit.
EPA_EQUIVALENCES: dict[str, tuple[float, str]] = {
    "miles": (0.393, "miles driven by an average gasoline passenger car"),
    "gallons": (8.887, "gallons of gasoline burned"),
    "household_years": (4798.0, "years of one home's electricity use"),
}


def _relation(x: float, tol: float) -> int:
    """-1, 0 or +1: ``x`` below, within ``tol`` of, or above 1."""
    if abs(x - 1.0) <= tol:
        return 0
    return 1 if x > 1.0 else -1


def category(speedup: float, powerup: float, tol: float = GPSUP_TOLERANCE) -> int | None:
    """The GPS-UP category (1-8) of a Speedup and Powerup, or None when both are within
    ``tol`` of 1 (no change). A Speedup within ``tol`` of 1 counts as "not faster"."""
    s, p = _relation(speedup, tol), _relation(powerup, tol)
    greenup = speedup / powerup
    if s == 1:
        if p == -1:
            return 1
        if p == 0:
            return 2
        return 3 if greenup > 1.0 else 5
    if s == 0 and p == 0:
        return None
    if p == -1:
        return 4 if greenup > 1.0 else 6
    if p == 0:
        return 7
    return 8


def carbon_equivalents(kg: float) -> dict[str, float]:
    """``kg`` CO2e as miles driven, gallons of gasoline and household-years of electricity."""
    return {name: kg / per_unit for name, (per_unit, _) in EPA_EQUIVALENCES.items()}


def compare(base: dict[str, Any], new: dict[str, Any], tol: float = GPSUP_TOLERANCE
            ) -> dict[str, Any]:
    """GPS-UP of two runs' ``energy.json`` contents, per env step; ValueError when either has
    no energy figure or no steps."""
    for name, run in (("base", base), ("new", new)):
        if run.get("energy_j") is None or not run.get("env_steps") or not run.get("seconds"):
            raise ValueError(f"the {name} run has no energy figures (energy basis "
                             f"{run.get('energy_basis', 'unknown')}); train it with RAPL or "
                             "NVML readable, or with --estimate-cpu-watts W")
    t_base, t_new = base["seconds"] / base["env_steps"], new["seconds"] / new["env_steps"]
    e_base, e_new = base["energy_j"] / base["env_steps"], new["energy_j"] / new["env_steps"]
    speedup = t_base / t_new
    powerup = (e_new / t_new) / (e_base / t_base)
    greenup = e_base / e_new
    cat = category(speedup, powerup, tol)
    co2_base = base["co2e_kg"] / base["env_steps"]
    co2_new = new["co2e_kg"] / new["env_steps"]
    saved_kg = (co2_base - co2_new) * new["env_steps"]  # over the new run's work
    return {
        "speedup": speedup, "powerup": powerup, "greenup": greenup,
        "category": cat, "color": CATEGORIES[cat][0] if cat else "neutral",
        "meaning": CATEGORIES[cat][1] if cat else "no change within the tolerance",
        "tolerance": tol,
        "time_per_1k_steps_s": {"base": 1000 * t_base, "new": 1000 * t_new},
        "power_w": {"base": e_base / t_base, "new": e_new / t_new},
        "energy_per_1k_steps_j": {"base": 1000 * e_base, "new": 1000 * e_new},
        "energy_basis": {"base": base["energy_basis"], "new": new["energy_basis"]},
        "carbon_intensity_g_per_kwh": {"base": base["carbon_intensity_g_per_kwh"],
                                       "new": new["carbon_intensity_g_per_kwh"]},
        "carbon_saved_percent": 100.0 * (1.0 - co2_new / co2_base) if co2_base else None,
        "carbon_saved_kg": saved_kg,
        "carbon_saved_equivalents": carbon_equivalents(saved_kg),
        "env_steps": {"base": base["env_steps"], "new": new["env_steps"]},
    }


def describe(result: dict[str, Any]) -> list[str]:
    """The comparison as lines of text, each saying what its figures rest on."""
    basis = result["energy_basis"]
    energy = (f"energy {basis['base']} (base), {basis['new']} (new)"
              if basis["base"] != basis["new"] else f"energy {basis['base']}")
    t, p, e = (result["time_per_1k_steps_s"], result["power_w"],
               result["energy_per_1k_steps_j"])
    cat = result["category"]
    lines = [
        f"Speedup {result['speedup']:.3f}x  (time per 1,000 env steps: base {t['base']:.2f} s, "
        f"new {t['new']:.2f} s)  [time measured]",
        f"Powerup {result['powerup']:.3f}x  (average power: base {p['base']:.2f} W, new "
        f"{p['new']:.2f} W)  [{energy}]",
        f"Greenup {result['greenup']:.3f}x  (energy per 1,000 env steps: base {e['base']:.1f} J, "
        f"new {e['new']:.1f} J)  [{energy}]",
        (f"GPS-UP category {cat} ({result['color']}): {result['meaning']}"
         if cat else f"GPS-UP: {result['meaning']}")
        + f"  [tolerance {result['tolerance']:.0%}; {energy}]",
    ]
    eq = result["carbon_saved_equivalents"]
    saved = result["carbon_saved_percent"]
    if saved is not None:
        lines.append(
            f"Carbon saved {saved:.1f}% ({result['carbon_saved_kg']:.3g} kg CO2e over the new "
            f"run's {result['env_steps']['new']} env steps = {eq['miles']:.3g} miles driven, "
            f"{eq['gallons']:.3g} gallons of gasoline, {eq['household_years']:.3g} "
            f"household-years of electricity; EPA factors)  [{energy}]")
    return lines


def plot_quadrant(result: dict[str, Any], path: str | Path, labels: tuple[str, str]) -> Path:
    """The GPS-UP quadrant (Speedup on x, Powerup on y, split at 1; the Greenup = 1 diagonal)
    with the base run at (1, 1) and the new run placed on it, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    s, p = result["speedup"], result["powerup"]
    hi = max(2.0, 1.25 * max(s, p, 1 / s, 1 / p))
    lo = 1.0 / hi
    fig, ax = plt.subplots(figsize=(5.5, 5))
    xs = np.geomspace(lo, hi, 100)
    ax.fill_between(xs, lo, xs, color="tab:green", alpha=0.12, label="Greenup > 1 (green)")
    ax.fill_between(xs, xs, hi, color="tab:red", alpha=0.10, label="Greenup < 1 (red)")
    ax.plot(xs, xs, color="grey", lw=0.8)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.scatter([1.0], [1.0], color="black", zorder=3)
    ax.annotate(f"base: {labels[0]}", (1.0, 1.0), textcoords="offset points", xytext=(6, -12))
    ax.scatter([s], [p], color="tab:blue", zorder=3)
    cat = f"category {result['category']}" if result["category"] else "no change"
    ax.annotate(f"new: {labels[1]} ({cat})", (s, p), textcoords="offset points",
                xytext=(6, 6))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("Speedup (T_base / T_new)")
    ax.set_ylabel("Powerup (P_new / P_base)")
    basis = result["energy_basis"]
    ax.set_title(f"GPS-UP (energy {basis['base']} / {basis['new']})", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
