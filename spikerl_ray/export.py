"""``spikerl export``: a checkpoint's spiking actor as a NIR graph (``docs/nir.md``).

The actor is loaded as ``spikerl evaluate`` loads it (:func:`spikerl_ray.checkpoints.load_module`:
no Ray cluster, no code unpickled). Beside ``FILE.nir`` goes ``FILE.nir.json``, the graph's
input and output contract (:func:`policies.nir_export.contract`) with the checkpoint's
environment. Both files are written whole or not at all. A deployment setting
(:class:`policies.quantize.QuantSpec`, docs/deployment.md) exports the actor as
:func:`policies.quantize.quantize_actor` simulates it: integer weights and thresholds in the
graph, the scales and decay constants in its metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spikerl_ray.errors import UserError

if TYPE_CHECKING:
    from policies.quantize import QuantSpec

FORMATS = ("nir",)


def contract_path(out: Path) -> Path:
    """Where the contract JSON of ``out`` goes: ``FILE.nir`` -> ``FILE.nir.json``."""
    return out.with_name(out.name + ".json")


def _check_out(out: Path, force: bool) -> None:
    for path in (out, contract_path(out)):
        if path.is_dir():
            raise UserError(f"--out {path} is a folder; name a file such as actor.nir")
        if path.exists() and not force:
            raise UserError(f"{path} exists; pass --force to replace it")
    if not out.resolve().parent.is_dir():
        raise UserError(f"cannot write {out}: its folder does not exist")


def _write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_checkpoint(checkpoint: str, out: str | Path, fmt: str = "nir",
                      force: bool = False, spec: QuantSpec | None = None) -> dict[str, Any]:
    """Writes the checkpoint's actor, at deployment setting ``spec`` if given, to ``out`` in
    ``fmt`` and its contract beside it; returns the contract."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        import nir

        from policies.nir_export import contract, export_nir
    except ImportError as exc:
        raise UserError(f"NIR export needs the nir extra ({exc}): "
                        "pip install -e '.[nir]'") from None
    out = Path(out)
    _check_out(out, force)
    from policies.quantize import quantize_actor
    from spikerl_ray.checkpoints import load_module
    from spikerl_ray.envs import continuous_spaces

    module, info = load_module(checkpoint)
    trained = getattr(module.actor, "timesteps", None)
    try:  # the checkpoint's own actor unless another setting is asked for
        actor = (module.actor if spec is None or spec.is_trained(trained)
                 else quantize_actor(module.actor, spec))
        graph = export_nir(actor, module.obs_normalizer)
    except ValueError as exc:
        raise UserError(f"checkpoint {checkpoint} ({info['policy']}): {exc}") from None
    _, act_space = continuous_spaces(info["env"])
    result = {"file": out.name, "format": fmt, "checkpoint": str(checkpoint),
              "policy": info["policy"], "env": info["env"],
              "action_low": act_space.low.tolist(), "action_high": act_space.high.tolist(),
              "actions": "the host's actions a in (-1, 1) map to low + (a + 1) / 2 * "
                         "(high - low)",
              **contract(graph)}
    _write_atomically(out, lambda tmp: nir.write(tmp, graph))
    _write_atomically(contract_path(out),
                      lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    return result
