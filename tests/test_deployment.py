"""Deployment fidelity (docs/deployment.md): the spiking actor in simulated fixed point.

The quantization is checked against a transcription of PopSAN's own Loihi code and the
fixed-point layer against an independent integer reference of Loihi's update (Lava's
bit-accurate LIF); the quantized NIR graph, run by snnTorch, against the simulation. The
float setting at the trained T is ``spikerl evaluate`` itself. Ray-free except the
checkpoints, which build an RLModule (no Ray cluster)."""

from __future__ import annotations

import json
import struct

import nir
import numpy as np
import pytest
import torch
from nir_runners import import_snntorch, run_snntorch
from nir_cases import busy_actor, fake_checkpoint

from policies import build_actor
from policies.nir_export import HostSide, contract, export_nir
from policies.quantize import (
    LOIHI_STATE_BITS,
    POPSAN_LOIHI,
    STATE_SHIFT,
    WEIGHT_MAX,
    FixedPointLIF,
    QuantSpec,
    quantize_actor,
)
from spikerl_ray.cli import main
from spikerl_ray.evaluate import evaluate

FIXED = ("int8", "int4", "popsan")


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": "int3"}, "weights 'int3': choose one of fp32, int8, int4, popsan"),
    ({"timesteps": 0}, "timesteps must be at least 1"),
    ({"state_bits": 24}, "state bits need fixed-point weights"),
    ({"weights": "int8", "state_bits": 4}, "state bits must be between 8 and 32"),
    ({"weights": "int4", "state_bits": 40}, "state bits must be between 8 and 32"),
])
def test_a_bad_setting_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantSpec(**kwargs)


def test_fixed_point_state_defaults_to_loihis_24_bits():
    assert QuantSpec("int8").state_bits == LOIHI_STATE_BITS == 24
    assert POPSAN_LOIHI == QuantSpec("popsan", 24, 5)


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_symmetric_per_layer_scale_round_to_nearest(weights):
    torch.manual_seed(0)
    layer = build_actor("spikerl", 3, 1).layers[0]
    q = FixedPointLIF(layer, weights, 24)
    w, b = layer.fc.weight.detach(), layer.fc.bias.detach()
    top = WEIGHT_MAX[weights]
    assert q.scale == top / float(torch.cat([w.abs().flatten(), b.abs()]).max())
    for ours, real in ((q.fc.weight, w), (q.fc.bias, b)):
        assert torch.equal(ours, ours.round()) and ours.abs().max() == top
        assert (ours - real * q.scale).abs().max() <= 0.5  # nearest integer
    assert q.threshold == round(layer.threshold * q.scale)
    assert (q.current_delta, q.voltage_delta) == (2048, 1024)  # PopSAN's 0.5 and 0.75
    assert (q.cdecay, q.vdecay) == (layer.cdecay, layer.vdecay)


def _popsan_utility(weight: np.ndarray, bias: np.ndarray, vth: float):
    """PopSAN's ``pytorch_trained_snn_param_2_loihi_snn_param``
    (combra-lab/pop-spiking-deep-rl, loihi_realization/utility.py:13-35), the integer weights
    before their split into excitatory and inhibitory parts."""
    max_abs_value = max(abs(np.amax(weight)), abs(np.amin(weight)), abs(np.amax(bias)),
                        abs(np.amin(bias)))
    scale_factor = 255. / max_abs_value
    new_vth = int(vth * scale_factor)
    new_w = np.clip(weight * scale_factor, -255, 255).astype(int)
    new_b = np.clip(bias * scale_factor, -255, 255).astype(int)
    return new_w, new_b, new_vth, scale_factor


def test_popsan_scheme_is_popsans_loihi_code(halfcheetah_observations):
    actor, _ = busy_actor("popsan", halfcheetah_observations)
    for layer in actor.layers:
        q = FixedPointLIF(layer, "popsan", 24)
        w, b, vth, scale = _popsan_utility(layer.fc.weight.detach().numpy(),
                                           layer.fc.bias.detach().numpy(), layer.threshold)
        assert np.array_equal(q.fc.weight.numpy(), w) and np.array_equal(q.fc.bias.numpy(), b)
        assert q.threshold == vth and q.scale == pytest.approx(float(scale), rel=1e-6)


def _loihi_reference(layer: FixedPointLIF, inputs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Spikes and membranes ``(T, batch, n)`` of Loihi's integer update written out per step
    as Lava's bit-accurate LIF (lava-nc/lava, src/lava/proc/lif/models.py,
    ``AbstractPyLifModelFixed.subthr_dynamics``): decay ``sign(x) (|x| (4096 - d) >> 12)``,
    input ``<< 6``, spike where ``v > vth << 6``, then ``v = 0``; the state saturated at
    ``state_bits`` (where Lava wraps the current)."""
    w = layer.fc.weight.numpy().astype(np.int64)
    b = layer.fc.bias.numpy().astype(np.int64)
    limit = 2 ** (layer.state_bits - 1) - 1

    def decay(x: np.ndarray, d: int) -> np.ndarray:
        return np.sign(x) * np.right_shift(np.abs(x) * (4096 - d), 12)

    u = v = np.zeros((inputs.shape[1], w.shape[0]), dtype=np.int64)
    spikes, volts = [], []
    for s in inputs.astype(np.int64):
        u = np.clip(decay(u, layer.current_delta) + np.left_shift(s @ w.T + b, 6), -limit, limit)
        v = np.clip(decay(v, layer.voltage_delta) + u, -limit, limit)
        spike = v > (int(layer.threshold) << 6)
        spikes.append(spike)
        volts.append(v.copy())
        v = np.where(spike, 0, v)
    return np.stack(spikes), np.stack(volts)


@pytest.mark.parametrize("weights, state_bits", [("int8", 24), ("int4", 24), ("popsan", 24),
                                                 ("int8", 16)])
def test_fixed_point_layer_is_loihis_integer_update(weights, state_bits,
                                                    halfcheetah_observations):
    actor, normalizer = busy_actor("spikerl", halfcheetah_observations)
    with torch.no_grad():
        inputs = actor.encoder(normalizer(halfcheetah_observations))
    q = FixedPointLIF(actor.layers[0], weights, state_bits)
    spikes, volts = _loihi_reference(q, inputs.numpy())
    with torch.no_grad():
        ours = q(inputs)
    assert np.array_equal(ours.numpy().astype(bool), spikes)
    assert 0.05 < spikes.mean() < 0.5  # busy: many membranes cross the threshold
    if state_bits == 16:  # the bound is reached, so saturation is what is compared
        assert (np.abs(volts) == 2**15 - 1).any()


def test_state_too_narrow_for_the_threshold_is_named(halfcheetah_observations):
    actor, _ = busy_actor("spikerl", halfcheetah_observations)
    with pytest.raises(ValueError, match="does not fit a 8-bit state"):
        quantize_actor(actor, QuantSpec("popsan", 8))


def test_fp32_is_the_actor_and_lower_T_its_first_steps(halfcheetah_observations):
    actor, normalizer = busy_actor("spikerl", halfcheetah_observations)
    x = normalizer(halfcheetah_observations)
    with torch.no_grad():
        action, counts = actor(x, return_spikes=True)
        same, same_counts = quantize_actor(actor, QuantSpec())(x, return_spikes=True)
        assert torch.equal(action, same)
        assert all(torch.equal(counts[k], same_counts[k]) for k in counts)
        for weights in WEIGHT_MAX:
            rng = torch.get_rng_state()
            full = quantize_actor(actor, QuantSpec(weights))
            assert torch.equal(torch.get_rng_state(), rng)  # a Poisson encoder draws alike
            short = quantize_actor(actor, QuantSpec(weights, timesteps=3))
            assert short.timesteps == 3 and short.trained_timesteps == 5
            a, b = full.encoder(x), short.encoder(x)
            for long_layer, short_layer in zip(full.layers, short.layers):
                a, b = long_layer(a), short_layer(b)
                assert torch.equal(a[:3], b)  # the same dynamics, cut after T steps


def test_int8_and_popsan_keep_the_spikes_int4_loses_more(halfcheetah_observations):
    actor, normalizer = busy_actor("spikerl", halfcheetah_observations)
    x = normalizer(halfcheetah_observations)
    agreement = {}
    with torch.no_grad():
        reference = actor.encoder(x)
        spikes_fp = []
        for layer in actor.layers:
            reference = layer(reference)
            spikes_fp.append(reference)
        for weights in WEIGHT_MAX:
            q = quantize_actor(actor, QuantSpec(weights))
            h = q.encoder(x)
            for i, layer in enumerate(q.layers):
                h = layer(spikes_fp[i - 1] if i else h)  # each layer on the float input
                agreement[weights, i] = (h == spikes_fp[i]).float().mean().item()
    print(f"\nspikes equal to fp32, per layer: {agreement}")
    assert all(agreement[w, i] > 0.99 for w in ("int8", "popsan") for i in range(3))
    assert min(agreement["int4", i] for i in range(3)) < min(
        agreement["int8", i] for i in range(3))


def test_only_spiking_actors_and_trained_T_or_less():
    with pytest.raises(ValueError, match="MLPActor has no spiking layers"):
        quantize_actor(build_actor("ann", 3, 1), QuantSpec("int8"))
    with pytest.raises(ValueError, match="timesteps 6 exceed the trained 5"):
        quantize_actor(build_actor("spikerl", 3, 1), QuantSpec("int8", timesteps=6))


@pytest.fixture(scope="module", params=[(p, w, t) for p in ("spikerl", "popsan")
                                        for w in FIXED for t in (5, 4)],
                ids=lambda p: "-".join(map(str, p)))
def round_trip(request, halfcheetah_observations, tmp_path_factory):
    """A quantized actor exported to NIR, read back, run by snnTorch on the host's inputs,
    and the same inputs through the fixed-point simulation and its integer reference."""
    policy, weights, timesteps = request.param
    actor, normalizer = busy_actor(policy, halfcheetah_observations)
    q = quantize_actor(actor, QuantSpec(weights, timesteps=timesteps))
    path = tmp_path_factory.mktemp("qnir") / "actor.nir"
    nir.write(path, export_nir(q, normalizer))
    read = nir.read(path)
    host = HostSide(read.metadata)
    torch.manual_seed(1)  # PopSAN's Poisson encoder draws its spikes
    inputs = host.encode(halfcheetah_observations)
    ours, reference, x = {}, {}, inputs
    with torch.no_grad():
        for name, layer in zip(q.layer_names, q.layers):
            reference[f"{name}_lif"] = _loihi_reference(layer, x.numpy())
            x = ours[f"{name}_lif"] = layer(x)
    _, theirs = run_snntorch(import_snntorch(read), inputs)
    return {"q": q, "read": read, "ours": ours, "theirs": theirs, "reference": reference,
            "timesteps": timesteps}


def test_quantized_graph_holds_integer_weights_and_scales(round_trip):
    q, graph = round_trip["q"], round_trip["read"]
    meta = graph.metadata
    assert str(meta["quantization.weights"]) == q.spec.weights
    assert int(meta["timesteps"]) == round_trip["timesteps"]
    top = WEIGHT_MAX[q.spec.weights]
    for name, layer in zip(q.layer_names, q.layers):
        affine, lif = graph.nodes[f"{name}_affine"], graph.nodes[f"{name}_lif"]
        for array in (affine.weight, affine.bias):
            assert np.array_equal(array, np.round(array)) and np.abs(array).max() <= top
        assert np.array_equal(affine.weight, layer.fc.weight.numpy())
        assert float(meta[f"quantization.{name}.scale"]) == layer.scale
        assert np.all(lif.v_threshold == int(meta[f"quantization.{name}.threshold"]))
    assert "integer" in contract(graph)["fixed_point"]


def test_snntorch_runs_the_quantized_graph_as_the_simulation(round_trip):
    """Every spike equal up to T = 4: the decays (0.5, 0.75) of values that enter the state
    shifted by 6 bits stay exact for 4 steps, and then the graph's float arithmetic is the
    chip's integer one. At T = 5 the chip truncates the fifth voltage decay, which the float
    graph does not: a spike may then differ where the truncated membrane sits exactly on the
    threshold, and only there (checked in the first layer, whose input is identical)."""
    ours, theirs = round_trip["ours"], round_trip["theirs"]
    assert list(theirs) == list(ours)
    for name in ours:  # the simulation is the integer reference
        assert np.array_equal(ours[name].numpy().astype(bool), round_trip["reference"][name][0])
    flipped = {name: int((theirs[name] != ours[name]).sum()) for name in ours}
    total = sum(s.numel() for s in ours.values())
    print(f"\n{round_trip['q'].spec}: {sum(flipped.values())} of {total} neuron-steps "
          f"differ {flipped}")
    if round_trip["timesteps"] <= 4:
        assert not any(flipped.values())
        return
    first = next(iter(ours))
    where = (theirs[first] != ours[first]).numpy()
    volts = round_trip["reference"][first][1]
    threshold = int(round_trip["q"].layers[0].threshold) << STATE_SHIFT
    assert not where[:4].any() and np.all(volts[where] == threshold)
    assert sum(flipped.values()) <= 1e-3 * total


# The command line and the sweep on a checkpoint written as training writes it (no training).
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return fake_checkpoint(tmp_path_factory.mktemp("ckpt") / "spikerl", "spikerl")


def test_fp32_at_trained_T_reproduces_evaluate(checkpoint):
    today = evaluate(checkpoint, episodes=2)
    assert today["setting"] == {"weights": "fp32", "state_bits": None, "timesteps": 5,
                                "trained_timesteps": 5}
    assert evaluate(checkpoint, episodes=2, spec=QuantSpec("fp32", timesteps=5)) == today
    int8 = evaluate(checkpoint, episodes=2, spec=QuantSpec("int8", timesteps=3))
    assert int8["setting"]["weights"] == "int8" and int8["setting"]["timesteps"] == 3
    assert set(int8["setting"]["layers"]) == {"hidden0", "hidden1", "output"}
    assert np.isfinite(int8["return_mean"]) and int8["spikes"]["inference_energy_pj"] > 0


def test_evaluate_prints_the_setting_and_figures(checkpoint, capsys):
    assert main(["evaluate", str(checkpoint), "--episodes", "1", "--weights", "popsan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("spikerl on Pendulum-v1: return ")
    assert lines[1].startswith("setting: popsan weights, 24-bit state, T = 5; per inference ")
    assert "synaptic ops" in lines[1] and "pJ (estimate)" in lines[1]
    assert main(["evaluate", str(checkpoint), "--episodes", "1"]) == 0  # as trained: one line
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    assert main(["evaluate", str(checkpoint), "--episodes", "1", "--json", "--weights",
                 "int4", "--state-bits", "20", "--timesteps", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {k: result["setting"][k] for k in ("weights", "state_bits", "timesteps")} == {
        "weights": "int4", "state_bits": 20, "timesteps": 2}


@pytest.mark.parametrize("command", ["evaluate", "export"])
@pytest.mark.parametrize("flags, message", [
    (["--weights", "int8"], "(ann): MLPActor has no spiking layers"),
    (["--weights", "int8", "--timesteps", "9"], "timesteps 9 exceed the trained 5"),
    (["--weights", "int4", "--state-bits", "40"], "state bits must be between 8 and 32"),
    (["--state-bits", "24"], "state bits need fixed-point weights"),
    (["--weights", "int3"], "invalid choice: 'int3'"),
    (["--timesteps", "0"], "must be positive"),
])
def test_a_bad_setting_is_one_line_and_writes_nothing(command, flags, message, checkpoint,
                                                      tmp_path, capsys):
    ckpt = fake_checkpoint(tmp_path / "ann", "ann") if "ann" in message else checkpoint
    out = tmp_path / "a.nir"
    argv = [command, str(ckpt), *flags] + (["--out", str(out)] if command == "export" else [])
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors: its usage, then the one line
        status = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err[-1].startswith(f"spikerl {command}: error: "), err
    assert message in err[-1] and (len(err) == 1 or err[0].startswith("usage:")), err
    assert not out.exists() and not list(tmp_path.glob("*.nir*"))


def test_export_writes_the_quantized_graph(checkpoint, tmp_path, capsys):
    out = tmp_path / "q.nir"
    assert main(["export", str(checkpoint), "--out", str(out), "--weights", "int8",
                 "--timesteps", "3"]) == 0
    graph = nir.read(out)
    info = json.loads((tmp_path / "q.nir.json").read_text())
    assert info["timesteps"] == 3 and "fixed_point" in info
    assert str(graph.metadata["quantization.weights"]) == "int8"
    weight = graph.nodes["hidden0_affine"].weight
    assert np.array_equal(weight, np.round(weight)) and np.abs(weight).max() == 127
    # The float export at the trained T is unchanged: no quantization metadata.
    for name, flags in (("f.nir", []), ("t.nir", ["--weights", "fp32", "--timesteps", "5"])):
        assert main(["export", str(checkpoint), "--out", str(tmp_path / name), *flags]) == 0
        assert not any(k.startswith("quantization.") for k in nir.read(tmp_path / name).metadata)


def test_sweep_prints_json_and_plot(checkpoint, tmp_path, capsys):
    from benchmarks.deployment import main as sweep

    report = sweep([str(checkpoint), "--episodes", "1", "--json-out", str(tmp_path / "d.json"),
                    "--plot", str(tmp_path / "d.png")])
    assert json.loads((tmp_path / "d.json").read_text()) == json.loads(json.dumps(report))
    labels = [row["label"] for row in report["settings"]]
    assert labels == [f"{w} T={t}" for w in ("fp32", *FIXED) for t in (5, 3, 2, 1)]
    reference = evaluate(checkpoint, episodes=1)
    first = report["settings"][0]
    assert first["return_mean"] == reference["return_mean"] and first["retention"] == 1.0
    for row in report["settings"]:
        assert {"synaptic_ops", "macs", "inference_energy_pj", "firing_rates"} <= set(row)
    png = (tmp_path / "d.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] > 100
