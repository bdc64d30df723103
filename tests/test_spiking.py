"""Spiking building blocks against values computed by hand (PopSAN constants)."""

from __future__ import annotations

import math

import pytest
import torch

from policies.spiking import (
    CurrentLIF,
    PopulationDecoder,
    PopulationEncoder,
    TwoNeuronEncoder,
    surrogate_spike,
    reference_lif_step,
)


def test_lif_dynamics_match_hand_computation():
    # Constant synaptic input 0.3 into one PopSAN neuron (c decay 0.5, v decay 0.75, vth 0.5):
    # t1: c=0.3   v=0.3            s=0
    # t2: c=0.45  v=0.225+0.45=0.675  s=1
    # t3: c=0.525 v=0.675*0.75*0 + 0.525=0.525 s=1
    # t4: c=0.5625 v=0+0.5625=0.5625 s=1
    # t5: c=0.58125 v=0.58125 s=1
    layer = CurrentLIF(1, 1)
    with torch.no_grad():
        layer.fc.weight.fill_(1.0)
        layer.fc.bias.zero_()
    x = torch.full((5, 1, 1), 0.3)
    out = layer(x).flatten().tolist()
    assert out == [0.0, 1.0, 1.0, 1.0, 1.0]
    c = v = s = torch.zeros(1)
    volts = []
    for _ in range(5):
        c, v, s = reference_lif_step(c, v, s, torch.tensor([0.3]))
        volts.append(v.item())
    assert volts == pytest.approx([0.3, 0.675, 0.525, 0.5625, 0.58125])


def test_rect_pseudo_gradient_window():
    v = torch.tensor([-0.1, 0.01, 0.5, 0.99, 1.01, 2.0], requires_grad=True)
    s = surrogate_spike(v, 0.5, 0.5, "rect")
    assert s.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    s.sum().backward()
    assert v.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_atan_surrogate_has_rect_height_and_area_but_no_dead_zone():
    from policies.spiking import surrogate_grad

    v = torch.tensor([0.5, 1.5, -2.0, 10.0])
    h = surrogate_grad(v, 0.5, 0.5, "atan")
    assert h[0].item() == pytest.approx(1.0)
    assert (h > 0).all()  # far from threshold the gradient is small, never exactly zero
    assert surrogate_grad(v, 0.5, 0.5, "rect").tolist() == [1.0, 0.0, 0.0, 0.0]
    grid = torch.linspace(-2000, 2000, 4_000_001, dtype=torch.float64)
    area = torch.trapezoid(surrogate_grad(grid, 0.0, 0.5, "atan"), grid).item()
    assert area == pytest.approx(1.0, abs=1e-3)  # the rectangle's area, 2 x window


def test_deterministic_encoder_on_known_inputs():
    enc = PopulationEncoder(obs_dim=1, pop_dim=3, timesteps=5, mean_range=(-1.0, 1.0), std=1.0)
    obs = torch.tensor([[0.0]])
    act = enc.activation(obs).flatten()
    expected = [math.exp(-0.5), 1.0, math.exp(-0.5)]
    assert act.tolist() == pytest.approx(expected, rel=1e-6)
    spikes = enc(obs)[:, 0, :]  # (T, 3)
    # Centre neuron: activation 1 >= 0.999 fires every step. Side neurons (0.6065):
    # volt 0.6065 (no), 1.2131 (fire, -0.999 -> 0.2141), 0.8206 (no), 1.4271 (fire), 1.0343 (fire)
    assert spikes[:, 1].tolist() == [1.0] * 5
    assert spikes[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert torch.equal(spikes[:, 0], spikes[:, 2])


def test_encoder_initial_means_and_stds_follow_popsan():
    enc = PopulationEncoder(obs_dim=2)
    means = enc.mean.reshape(2, 10)
    assert means[0].tolist() == pytest.approx(torch.linspace(-3, 3, 10).tolist())
    assert torch.allclose(enc.std, torch.full_like(enc.std, math.sqrt(0.15)))


def test_poisson_encoder_rates_follow_activation():
    torch.manual_seed(0)
    enc = PopulationEncoder(obs_dim=1, pop_dim=3, timesteps=2000, mean_range=(-1.0, 1.0),
                            std=1.0, deterministic=False)
    rates = enc(torch.tensor([[0.0]])).mean(0).flatten()
    assert rates.tolist() == pytest.approx([math.exp(-0.5), 1.0, math.exp(-0.5)], abs=0.03)


@pytest.mark.parametrize("deterministic", [True, False])
def test_gradients_reach_encoder_means_and_stds(deterministic):
    torch.manual_seed(0)
    enc = PopulationEncoder(obs_dim=3, deterministic=deterministic)
    layer = CurrentLIF(enc.out_features, 8)
    out = layer(enc(torch.randn(16, 3)))
    (out.sum() + enc(torch.randn(16, 3)).sum()).backward()
    assert enc.mean.grad is not None and enc.mean.grad.abs().sum() > 0
    assert enc.std.grad is not None and enc.std.grad.abs().sum() > 0


def test_decoder_is_weighted_rate_sum():
    dec = PopulationDecoder(act_dim=2, pop_dim=2)
    with torch.no_grad():
        dec.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.5]]))
        dec.bias.copy_(torch.tensor([0.0, 0.1]))
    spikes = torch.tensor([[[1.0, 0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0, 1.0]]])  # (T=2, B=1, 4)
    # rates: [1, 0.5] and [0.5, 1] -> 0.5 and 0.75 + 0.1
    out = dec(spikes)  # pre-tanh: the actor squashes
    assert out.flatten().tolist() == pytest.approx([0.5, 0.85])


def test_two_neuron_encoder_splits_sign():
    enc = TwoNeuronEncoder(obs_dim=2, timesteps=3, scale=2.0)
    x = enc(torch.tensor([[1.0, -2.0]]))
    assert x.shape == (3, 1, 4)
    assert x[0, 0].tolist() == [0.5, 0.0, 0.0, 1.0]
