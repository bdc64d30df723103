"""The schema of ``tune_configs/*.yaml`` (documented in ``tune_configs/README.md``).

Validated with pydantic before Ray starts: an unknown key, a wrong type, an unknown method or
environment ends in one line naming the file and the key (:class:`ExperimentError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from spikerl_ray.errors import UserError
from spikerl_ray.methods import METHODS
from spikerl_ray.run import ALGOS

# What a search space may vary, and the type of its values: RunSettings fields, and the
# spiking actor's encoder population size and timesteps (actor constructor arguments).
SEARCHABLE: dict[str, type] = {
    "actor_lr": float, "critic_lr": float, "batch_size": int, "exploration_noise": float,
    "pre_tanh_penalty": float, "warmup_steps": int, "encoder_pop": int, "timesteps": int,
}
# Short metric names of the YAML and the result keys Tune reports them under.
METRICS = {
    "train_return": "env_runners/episode_return_mean",
    "eval_return": "evaluation/env_runners/episode_return_mean",
}


def split_entry(entry: str) -> tuple[str, str]:
    """A ``methods`` entry, ``METHOD`` (trained with TD3) or ``METHOD/ALGO`` (the method's
    network trained with ``ALGO``), as ``(method, algo)``."""
    method, _, algo = entry.partition("/")
    return method, algo or "td3"


class ExperimentError(UserError):
    """A tune config that cannot be run; the message is one line naming file and key."""


class _Strict(BaseModel):
    # Lax types on purpose: YAML reads 1e-5 as a string, which a float field accepts.
    model_config = ConfigDict(extra="forbid")


class Evaluation(_Strict):
    every: PositiveInt = 5  # training iterations (about 1,000 env steps each)
    episodes: PositiveInt = 10


class Resources(_Strict):
    learners: NonNegativeInt = 0  # data-parallel methods only (spikerl); 0: one local learner
    env_runners: NonNegativeInt = 0  # 0: sample in the trial's own process
    envs_per_runner: PositiveInt = 1
    cpus_per_learner: PositiveFloat = 1.0
    gpus_per_learner: NonNegativeFloat = 0.0
    # Ray custom resources each learner / env runner asks for (e.g. to pin them to node types).
    learner_resources: dict[str, PositiveFloat] = {}
    env_runner_resources: dict[str, PositiveFloat] = {}


class Settings(_Strict):
    """Run settings applied to every trial (explicit, so they override the recipes)."""

    warmup_steps: NonNegativeInt | None = None
    pre_tanh_penalty: NonNegativeFloat | None = None
    spiking_backend: Literal["auto", "fused", "torch"] | None = None
    compile: bool | None = None
    energy_monitor: bool | None = None  # default: on
    estimate_cpu_watts: PositiveFloat | None = None
    carbon_intensity: float | str | None = None  # gCO2e/kWh or a region name

    @field_validator("carbon_intensity")
    @classmethod
    def _intensity(cls, value: float | str | None) -> float | None:
        from spikerl_ray.energy.accounting import carbon_intensity

        return None if value is None else carbon_intensity(value)


class Grid(_Strict):
    grid: list[Any] = Field(min_length=1)


class Choice(_Strict):
    choice: list[Any] = Field(min_length=1)


class Uniform(_Strict):
    uniform: tuple[float, float]


class LogUniform(_Strict):
    loguniform: tuple[PositiveFloat, PositiveFloat]


def _space_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value))
    return None


Space = Annotated[
    Union[Annotated[Grid, Tag("grid")], Annotated[Choice, Tag("choice")],
          Annotated[Uniform, Tag("uniform")], Annotated[LogUniform, Tag("loguniform")]],
    Discriminator(_space_kind, custom_error_type="search_space",
                  custom_error_message="a search space is one of {grid: [...]}, "
                  "{choice: [...]}, {uniform: [low, high]}, {loguniform: [low, high]}"),
]


class Scheduler(_Strict):
    type: Literal["asha"]
    metric: Literal["train_return", "eval_return"] = "train_return"
    mode: Literal["max", "min"] = "max"
    grace_period: PositiveInt = 5  # iterations before a trial can be stopped
    reduction_factor: float = Field(3.0, gt=1.0)


class Experiment(_Strict):
    """One experiment: every method x environment x seed (x search sample) is a trial."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    methods: list[str] = Field(min_length=1)
    envs: list[str] = Field(min_length=1)
    seeds: list[NonNegativeInt] = Field(min_length=1)
    env_steps: PositiveInt
    evaluation: Evaluation = Evaluation()
    resources: Resources = Resources()
    precision: Literal["auto", "fp32", "bf16"] | None = None  # None: each method's own
    settings: Settings = Settings()
    search: dict[str, Space] = {}
    num_samples: PositiveInt = 1
    scheduler: Scheduler | None = None
    max_concurrent_trials: PositiveInt | None = None
    checkpoint_every: PositiveInt = 10  # iterations; and at the end
    max_failures: NonNegativeInt = 2  # retries of a failed trial, from its last checkpoint
    storage_path: str = "runs/tune"

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        for entry in value:
            method, algo = split_entry(entry)
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}; choose from "
                                 f"{', '.join(sorted(METHODS))}")
            if algo not in ALGOS:
                raise ValueError(f"{entry}: unknown algorithm {algo!r}; choose from "
                                 f"{', '.join(ALGOS)}")
        if len(set(value)) < len(value):
            raise ValueError("a method entry is listed twice")
        return value

    @field_validator("envs")
    @classmethod
    def _known_envs(cls, value: list[str]) -> list[str]:
        from spikerl_ray.envs import continuous_spaces

        for env in value:
            try:
                continuous_spaces(env)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("search")
    @classmethod
    def _searchable(cls, value: dict[str, Space]) -> dict[str, Space]:
        for name, space in value.items():
            if name not in SEARCHABLE:
                raise ValueError(f"cannot search {name!r}; searchable: "
                                 f"{', '.join(sorted(SEARCHABLE))}")
            kind = SEARCHABLE[name]
            values = getattr(space, "grid", None) or getattr(space, "choice", None)
            if values is not None and not all(
                    isinstance(v, kind) or (kind is float and isinstance(v, int))
                    for v in values):
                raise ValueError(f"{name}: values must be {kind.__name__}s")
            if kind is int and not isinstance(space, (Grid, Choice)):
                raise ValueError(f"{name}: an integer setting takes grid or choice")
        return value

    @model_validator(mode="after")
    def _eval_metric_needs_evaluation(self) -> "Experiment":
        if self.scheduler and self.scheduler.metric == "eval_return" and \
                self.scheduler.grace_period % self.evaluation.every:
            raise ValueError("scheduler.grace_period must be a multiple of evaluation.every "
                             "when the metric is eval_return")
        return self


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(k) for k in loc) or "(top level)"


def load_experiment(path: str | Path) -> Experiment:
    """Reads and validates a tune config; raises :class:`ExperimentError` (one line)."""
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ExperimentError(f"{path}: not valid YAML{where}: "
                              f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: expected a mapping of settings at the top level")
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = ("unknown key" if err["type"] == "extra_forbidden"
                   else err["msg"].removeprefix("Value error, "))
        raise ExperimentError(f"{path}: {_location(err['loc'])}: {message}") from None
