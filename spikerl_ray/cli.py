"""The ``spikerl`` command line. The flags of ``spikerl train`` are derived from
:class:`~spikerl_ray.settings.RunSettings` (one per field)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BeforeValidator

from spikerl_ray.energy.accounting import carbon_intensity as parse_carbon_intensity
from spikerl_ray import session
from spikerl_ray.errors import UserError
from spikerl_ray.export import FORMATS as EXPORT_FORMATS
from spikerl_ray.methods import METHODS
from spikerl_ray.settings import RunSettings, check_policy, default, field_type, where

if typing.TYPE_CHECKING:
    from policies.quantize import QuantSpec


def _number(kind: type, allow_zero: bool) -> Any:
    """An argparse type: a positive (or, with ``allow_zero``, non-negative) ``kind``."""
    bound = ">= 0" if allow_zero else "positive"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__} {bound}, got "
                                             f"{text!r}") from None
        if not (value >= 0 if allow_zero else value > 0):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


VERBOSE_HELP = "also show Ray's and RLlib's log messages (warnings, notices)"
# The loggers Ray configures with levels of their own when it is imported.
RAY_LOGGERS = ("ray", "ray.rllib")

_positive_int = _number(int, allow_zero=False)
_non_negative_int = _number(int, allow_zero=True)
_non_negative_float = _number(float, allow_zero=True)
_positive_float = _number(float, allow_zero=False)


def _resource(text: str) -> tuple[str, float]:
    """An argparse type: ``NAME=AMOUNT``, a Ray custom resource and a positive amount."""
    name, sep, amount = text.partition("=")
    try:
        value = float(amount)
    except ValueError:
        value = -1.0
    if not sep or not name or not value > 0:
        raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT with AMOUNT > 0, got {text!r}")
    return name, value


def _carbon_intensity(text: str) -> float:
    """An argparse type: gCO2e/kWh, a number or a region name."""
    try:
        return parse_carbon_intensity(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _policy(text: str) -> str:
    """An argparse type: a built-in actor or ``MODULE:FACTORY``."""
    try:
        return check_policy(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number_type(kind: type, metadata: list[Any]) -> Any:
    """The argparse type of a bounded int or float field."""
    positive = any(isinstance(m, annotated_types.Gt) for m in metadata)
    return {(int, True): _positive_int, (int, False): _non_negative_int,
            (float, True): _positive_float, (float, False): _non_negative_float}[
        (kind, positive)]


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`~spikerl_ray.settings.RunSettings` that has one, with
    the field's type, choices, default and help; :func:`settings_from_arguments` reads them
    back."""
    for name, info in RunSettings.model_fields.items():
        extra = where(name)
        if "flag" in extra and extra["flag"] is None:
            continue
        flag = extra.get("flag") or "--" + name.replace("_", "-")
        kind, metadata = field_type(name)
        options: dict[str, Any] = {"dest": name, "help": info.description,
                                   "default": default(name)}
        if "metavar" in extra:
            options["metavar"] = extra["metavar"]
        if kind is bool and extra.get("negate"):
            options.update(action="store_false")
        elif kind is bool and default(name) is None:
            options.update(action=argparse.BooleanOptionalAction)
        elif kind is bool:
            options.update(action="store_true")
        elif typing.get_origin(kind) is typing.Literal:
            options.update(choices=typing.get_args(kind))
        elif typing.get_origin(kind) is dict:
            options.update(type=_resource, action="append", default=[])
        elif any(isinstance(m, BeforeValidator) for m in metadata):
            options.update(type=_carbon_intensity)
        elif kind in (int, float):
            options.update(type=_number_type(kind, metadata))
        elif name == "policy":
            options.update(type=_policy)
        parser.add_argument(flag, **options)


def settings_from_arguments(args: argparse.Namespace) -> RunSettings:
    """The run settings of parsed ``spikerl train`` arguments. Without ``--method`` the
    method is the one named like ``--policy``, else ``spikerl``."""
    values = {name: getattr(args, name) for name in RunSettings.model_fields
              if hasattr(args, name)}
    for name, value in values.items():
        if isinstance(value, list):  # NAME=AMOUNT pairs of a repeatable flag
            values[name] = dict(value)
    if values["method"] is None:
        values["method"] = values["policy"] if values["policy"] in METHODS else "spikerl"
    return RunSettings(**values)


def add_deployment_arguments(parser: argparse.ArgumentParser) -> None:
    """The deployment setting of ``evaluate`` and ``export`` (docs/deployment.md);
    :func:`deployment_spec` reads it back."""
    from policies.quantize import LOIHI_STATE_BITS, WEIGHT_SCHEMES

    parser.add_argument("--weights", choices=WEIGHT_SCHEMES, default="fp32",
                        help="the spiking layers in simulated fixed point: int8 or int4 "
                        "(symmetric per layer, round to nearest) or popsan (PopSAN's Loihi "
                        "scheme: integers in [-255, 255]); fp32: as trained")
    parser.add_argument("--state-bits", type=_positive_int, default=None, metavar="N",
                        help="bits of the current and voltage registers with fixed-point "
                        f"weights (default {LOIHI_STATE_BITS}, Loihi's)")
    parser.add_argument("--timesteps", type=_positive_int, default=None, metavar="T",
                        help="run T timesteps per observation, at most the trained T "
                        "(default: the trained T)")


def deployment_spec(args: argparse.Namespace) -> QuantSpec:
    """The :class:`~policies.quantize.QuantSpec` of parsed deployment arguments."""
    from policies.quantize import QuantSpec

    try:
        return QuantSpec(args.weights, args.state_bits, args.timesteps)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikerl", description="Deep spiking reinforcement learning on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a spiking (or ANN) actor with TD3, SAC or PPO")
    t.add_argument("--steps", type=_positive_int, required=True, help="total env steps")
    t.add_argument("--out", required=True, help="run folder or URI such as "
                   "s3://BUCKET/run (progress.csv, checkpoints/)")
    t.add_argument("--address", default=None, help="join this Ray cluster instead of "
                   "starting the embedded one (e.g. 127.0.0.1:6379 or 'auto')")
    add_settings_arguments(t)
    group = t.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out")
    group.add_argument("--force", action="store_true", help="replace the run in --out")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)

    u = sub.add_parser("tune", help="run an experiment of tune_configs/ with Ray Tune")
    u.add_argument("config", help="a tune config, e.g. tune_configs/smoke.yaml")
    u.add_argument("--out", default=None, help="storage folder or URI (default: the "
                   "config's storage_path); the experiment goes in OUT/NAME")
    u.add_argument("--resume", action="store_true",
                   help="continue the interrupted experiment (unfinished and failed trials)")
    u.add_argument("--address", default=None, help="join this Ray cluster")
    u.add_argument("--track", choices=typing.get_args(field_type("track")[0]), default=None,
                   help="overrides the config's track (on --resume: as the experiment "
                   "started); " + RunSettings.model_fields["track"].description)
    u.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)

    r = sub.add_parser("report", help="tables and plots from a tune or train output folder")
    r.add_argument("dir", help="a Tune experiment folder (OUT/NAME), the folder OUT holding "
                   "experiments, or a spikerl train run (a folder or a URI)")

    g = sub.add_parser("energy", help="GPS-UP and carbon of two training runs")
    g.add_argument("base", help="the baseline run folder (with energy.json)")
    g.add_argument("new", help="the run compared with it")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--plot", default=None, metavar="FILE.png",
                   help="draw the GPS-UP quadrant with both runs")
    g.add_argument("--tolerance", type=_positive_float, default=None,
                   help="Speedup or Powerup this close to 1 counts as 1 (default 0.01)")

    e = sub.add_parser("evaluate", help="evaluate a checkpoint without exploration noise")
    e.add_argument("checkpoint", help="a folder under RUN/checkpoints/ (or its URI)")
    e.add_argument("--episodes", type=_positive_int, default=10)
    e.add_argument("--env", default=None, help="evaluate on another env (same shapes)")
    e.add_argument("--seed", type=_non_negative_int, default=1_000_000)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    add_deployment_arguments(e)
    e.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)

    x = sub.add_parser("export", help="export a checkpoint's spiking actor (NIR, docs/nir.md)")
    x.add_argument("checkpoint", help="a folder under RUN/checkpoints/ (or its URI)")
    x.add_argument("--format", choices=EXPORT_FORMATS, default="nir",
                   help="nir: a NIR graph (HDF5) plus FILE.nir.json with its input and output "
                   "contract (needs pip install -e '.[nir]')")
    x.add_argument("--out", required=True, metavar="FILE.nir", help="the file to write")
    x.add_argument("--force", action="store_true", help="replace FILE.nir and FILE.nir.json")
    add_deployment_arguments(x)
    x.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    return parser


def _train(args: argparse.Namespace) -> None:
    from spikerl_ray.training import train

    settings = settings_from_arguments(args)
    checkpoint = train(settings, args.out, args.steps, resume=args.resume, force=args.force,
                       address=args.address, progress=not args.no_progress)
    print(f"done: {args.out}/progress.csv, last checkpoint {checkpoint}")


def _tune(args: argparse.Namespace) -> None:
    from spikerl_ray import tracking
    from spikerl_ray.experiments import load_experiment
    from spikerl_ray.experiments.tune import (
        check_trials,
        run_experiment,
        storage_root,
        trial_count,
        trial_requests,
        unfinished_trials,
    )
    from spikerl_ray.resources import check, cluster_nodes, describe
    from spikerl_ray.storage import filesystem, is_uri

    exp = load_experiment(args.config)
    if args.track:
        exp = exp.model_copy(update={"track": args.track})
    tracking.require(exp.track)
    if args.out and is_uri(args.out):
        filesystem(args.out)
    check_trials(exp)
    requests = trial_requests(exp)
    session.init_ray(args.address)
    for method, reqs in requests.items():
        print(f"spikerl tune: a {method} trial asks Ray for {describe(reqs)}", file=sys.stderr)
        check(reqs, cluster_nodes(), "the Ray cluster")
    results = run_experiment(exp, args.out, resume=args.resume)
    where = f"{storage_root(exp, args.out).rstrip('/')}/{exp.name}"
    unfinished = unfinished_trials(exp, results)
    if unfinished:  # Tune returns on Ctrl-C, its state saved
        out = f" --out {args.out}" if args.out else ""
        print(f"spikerl tune: {unfinished} of {trial_count(exp)} trials unfinished; continue "
              f"with: spikerl tune {args.config}{out} --resume", file=sys.stderr)
        raise KeyboardInterrupt
    print(f"done: {len(results)} trials ({results.num_errors} failed) in {where}; "
          f"tables and plots: spikerl report {where}")
    if results.num_errors:
        raise UserError(f"{results.num_errors} trial(s) failed; see {where}; "
                        "--resume retries them")


def _report(args: argparse.Namespace) -> None:
    from spikerl_ray.report import write_report

    for report in write_report(args.dir):
        print(f"report: {report}")


def _energy(args: argparse.Namespace) -> None:
    from spikerl_ray.energy.accounting import ENERGY_FILE, load_energy
    from spikerl_ray.energy.gpsup import GPSUP_TOLERANCE, compare, describe, plot_quadrant

    if args.plot and not Path(args.plot).resolve().parent.is_dir():
        raise UserError(f"cannot write the plot to {args.plot}: its folder does not exist")
    runs = []
    for name in (args.base, args.new):
        path = Path(name)
        folder = path.parent if path.name == ENERGY_FILE else path
        if not folder.is_dir():
            raise UserError(f"{name} is not a run folder")
        try:
            energy = load_energy(folder)
        except (OSError, ValueError) as exc:
            raise UserError(f"{folder / ENERGY_FILE} is unreadable: {exc}") from None
        if energy is None:
            raise UserError(f"{folder} has no {ENERGY_FILE}: train it with spikerl train "
                            "(energy monitors on, the default)")
        runs.append(energy)
    try:
        result = compare(*runs, tol=args.tolerance or GPSUP_TOLERANCE)
    except (KeyError, TypeError, ZeroDivisionError) as exc:
        raise UserError(f"an energy.json is incomplete or corrupt: {exc!r}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    result |= {"base": args.base, "new": args.new}
    if args.plot:
        result["plot"] = str(plot_quadrant(result, args.plot, (Path(args.base).name,
                                                                Path(args.new).name)))
    if args.json:
        print(json.dumps(result))
        return
    print(f"base: {args.base}\nnew:  {args.new}")
    print("\n".join(describe(result)))
    if args.plot:
        print(f"quadrant: {result['plot']}")


def _evaluate(args: argparse.Namespace) -> None:
    from spikerl_ray.evaluate import evaluate

    result = evaluate(args.checkpoint, args.episodes, args.env, args.seed,
                      deployment_spec(args))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['policy']} on {result['env']}: return {result['return_mean']:.1f} "
          f"+/- {result['return_std']:.1f} over {result['episodes']} episodes")
    if (args.weights, args.state_bits, args.timesteps) == ("fp32", None, None):
        return  # the trained network as it is: one line (--json has its spike statistics)
    setting, spikes = result["setting"], result["spikes"]
    state = f", {setting['state_bits']}-bit state" if setting["state_bits"] else ""
    steps = f", T = {setting['timesteps']}" if setting["timesteps"] else ""
    figures = (f"; per inference {spikes['synaptic_ops']:.0f} synaptic ops, "
               f"{spikes['macs']:.0f} MACs, {spikes['inference_energy_pj']:.0f} pJ (estimate)"
               if "synaptic_ops" in spikes else "")
    print(f"setting: {setting['weights']} weights{state}{steps}{figures}")


def _export(args: argparse.Namespace) -> None:
    from spikerl_ray.export import contract_path, export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, args.format, args.force,
                               deployment_spec(args))
    print(f"{result['policy']} actor of {args.checkpoint} -> {args.out} "
          f"(input {result['input']['shape']}, output {result['output']['shape']} per "
          f"timestep, T = {result['timesteps']}); contract: {contract_path(Path(args.out))}")


def quiet_ray() -> None:
    """Shows only errors of Ray's and RLlib's loggers in this process (their warnings and
    notices otherwise come before our progress bar); :func:`spikerl_ray.session.init_ray`
    keeps the level. Ray's worker processes log to files either way."""
    import ray  # noqa: F401  (sets up Ray's loggers, adjusted here)

    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spikerl`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    session.keep_embedded_on_loopback(getattr(args, "address", None))  # before Ray's import
    if not getattr(args, "verbose", True):
        quiet_ray()
    try:
        {"train": _train, "evaluate": _evaluate, "tune": _tune,
         "report": _report, "energy": _energy, "export": _export}[args.command](args)
    except UserError as exc:
        print(f"spikerl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikerl {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
