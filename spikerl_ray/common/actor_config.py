"""The actor settings every algorithm config of ours has (TD3Config, SpikingSACConfig,
SpikingPPOConfig): which network of :mod:`policies` acts, how its spiking layers run, the
critics' size, and the method the settings came from."""

from __future__ import annotations

from typing import Any

from ray.util import log_once

from policies.gaussian import GaussianActor, build_gaussian_actor
from policies.spiking import BACKEND_CHOICES as SPIKING_BACKENDS
from policies.spiking import resolve_backend
from spikerl_ray.settings import check_policy

ACTOR_SETTINGS = ("method", "policy", "actor_kwargs", "spiking_backend", "critic_hiddens")


class ActorSettings:
    """Mixin for an :class:`AlgorithmConfig`: the :data:`ACTOR_SETTINGS`, taken by
    ``training()``, checked by ``validate()`` and put in the module's ``model_config``."""

    def _init_actor_settings(self) -> None:
        self.method: str | None = None  # a label for experiments and reports
        self.policy = "spikerl"
        self.actor_kwargs: dict[str, Any] = {}
        # "auto": the torch backend where the networks are compiled, else the fused BPTT one.
        self.spiking_backend = "auto"
        self.critic_hiddens: tuple[int, ...] = (256, 256)

    def _take_actor_settings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Sets the actor settings found in ``kwargs``; returns the other entries."""
        for name in ACTOR_SETTINGS:
            if name in kwargs:
                setattr(self, name, kwargs.pop(name))
        return kwargs

    def _quiet_new_stack_notice(self) -> None:
        """Consumes RLlib's one-time "running on the new API stack" notice for this
        algorithm (it exists only there), which would otherwise precede our own messages."""
        log_once(f"{self.algo_class.__name__}_on_new_api_stack")

    def _validate_actor_settings(self) -> None:
        try:
            check_policy(self.policy)
        except ValueError as exc:
            self._value_error(f"unknown policy: {exc}")
        if self.spiking_backend not in SPIKING_BACKENDS:
            self._value_error(f"spiking_backend must be one of {SPIKING_BACKENDS}, got "
                              f"{self.spiking_backend!r}")

    def _actor_model_config(self) -> dict[str, Any]:
        return {"policy": self.policy, "actor_kwargs": dict(self.actor_kwargs),
                "spiking_backend": self.spiking_backend,
                "critic_hiddens": tuple(self.critic_hiddens)}


def gaussian_policy(module: Any, *, log_std: str, squash_mean: bool) -> GaussianActor:
    """The :class:`~policies.gaussian.GaussianActor` a module's ``model_config`` names
    (``policy``, ``actor_kwargs``, ``spiking_backend``; "auto" resolved for
    ``compile_networks``)."""
    cfg = module.model_config
    return build_gaussian_actor(
        cfg.get("policy", "spikerl"), int(module.observation_space.shape[0]),
        int(module.action_space.shape[0]), log_std=log_std, squash_mean=squash_mean,
        backend=resolve_backend(cfg.get("spiking_backend", "auto"),
                                cfg.get("compile_networks", False)),
        **dict(cfg.get("actor_kwargs") or {}))
