"""The actor's health statistics and the collapse detector (learning-quality issue, part 3),
each with its negative control: a healthy actor is not flagged, a saturated one is."""

from __future__ import annotations

import math

import pytest
import torch

from policies import build_actor
from policies.diagnostics import (
    actor_statistics,
    collapse_warning,
    output_saturation,
    statistic_names,
)


def _stats(actor, obs):
    return actor_statistics(actor, obs, getattr(actor, "timesteps", None), actor)


def _actor(name="popsan"):
    torch.manual_seed(0)
    return build_actor(name, 11, 3)


OBS = torch.randn(300, 11, generator=torch.Generator().manual_seed(1)).clamp(-3, 3)


def test_counts_match_a_hand_computed_output_population():
    actor = _actor()
    with torch.no_grad():
        actor(OBS[:1])  # build nothing lazily; the layers exist already
        out = actor.layers[-1].fc
        out.weight.zero_()
        # 10 neurons per action: the first 4 of each population always fire (large bias),
        # the next 6 never do (negative bias), so the action is the same for every input.
        bias = torch.full((3, 10), -5.0)
        bias[:, :4] = 5.0
        out.bias.copy_(bias.flatten())
    stats = _stats(actor, OBS)
    assert stats["always_output"] == pytest.approx(0.4)
    assert stats["silent_output"] == pytest.approx(0.6)
    assert stats["rate_output"] == pytest.approx(0.4)
    assert output_saturation(stats) == pytest.approx(1.0)
    assert stats["action_std"] == pytest.approx(0.0, abs=1e-7)
    assert collapse_warning(stats) is not None
    assert "100%" in collapse_warning(stats)


def test_fresh_actor_is_not_flagged():
    stats = _stats(_actor(), OBS)
    assert set(stats) == set(statistic_names())
    assert output_saturation(stats) < 0.5
    assert stats["action_std"] > 0.0
    assert collapse_warning(stats) is None


def test_pre_tanh_statistics():
    actor = _actor()
    with torch.no_grad():
        actor.readout.bias.copy_(torch.tensor([4.0, -4.0, 0.0]))
        actor.readout.weight.zero_()
    stats = _stats(actor, OBS)
    assert stats["pre_tanh_abs"] == pytest.approx(8.0 / 3.0)
    assert stats["pre_tanh_saturated"] == pytest.approx(2.0 / 3.0)


@pytest.mark.parametrize("name", ["ann", "dsrl"])
def test_actors_without_output_population_report_what_they_have(name):
    stats = _stats(_actor(name), OBS)
    assert "silent_output" not in stats
    assert math.isnan(output_saturation(stats))
    assert collapse_warning(stats) is None
    assert stats["action_std"] > 0.0
    if name == "dsrl":
        assert 0.0 <= stats["rate_hidden1"] <= 1.0
