"""The schema of ``tune_configs/*.yaml`` (documented in ``tune_configs/README.md``).

Validated with pydantic before Ray starts: an unknown key, a wrong type, an unknown method or
environment ends in one line naming the file and the key (:class:`ExperimentError`). The keys
that are run settings (``evaluation``, ``resources``, ``settings``, ``precision``, ``track``) are
derived from :class:`~spikerl_ray.settings.RunSettings`: the same names, types, defaults and help
as the flags of ``spikerl train``.
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
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from spikerl_ray.algorithms import ALGORITHMS, DEFAULT_ALGORITHM
from spikerl_ray.errors import ExperimentError, UserError
from spikerl_ray.methods import METHODS
from spikerl_ray.settings import RunSettings, check_policy, default, field_type, where

# Short metric names of the YAML and the result keys Tune reports them under.
METRICS = {
    "train_return": "env_runners/episode_return_mean",
    "eval_return": "evaluation/env_runners/episode_return_mean",
}
# Search spaces that are actor constructor arguments (of the built-in spiking actors) rather
# than run settings.
ACTOR_ARGS = ("encoder_pop", "timesteps")


def split_entry(entry: str) -> tuple[str, str, str | None]:
    """A ``methods`` entry, ``METHOD[/ALGO][@POLICY]``, as ``(method, algo, policy)``: the
    method's recipe, trained with ``ALGO`` (default TD3), with the network ``POLICY`` (a
    built-in or ``MODULE:FACTORY``, docs/actors.md) instead of the method's (None)."""
    spec, _, policy = entry.partition("@")
    method, _, algo = spec.partition("/")
    return method, algo or DEFAULT_ALGORITHM, policy or None


class _Strict(BaseModel):
    # Lax types on purpose: YAML reads 1e-5 as a string, which a float field accepts.
    model_config = ConfigDict(extra="forbid")


def yaml_place(name: str) -> tuple[str, str] | None:
    """Where the run setting ``name`` goes in a tune config, ``(section, key)`` (section ""
    for the top level), or None where an experiment sets it itself."""
    place = where(name).get("yaml", ("settings", None))
    return None if place is None else (place[0], place[1] or name)


def section_keys(section: str) -> dict[str, str]:
    """The keys of ``section`` of a tune config and the run setting each one is."""
    return {place[1]: name for name in RunSettings.model_fields
            if (place := yaml_place(name)) is not None and place[0] == section}


def _fields(section: str, optional: bool) -> dict[str, Any]:
    """pydantic field definitions of a section's run settings: their types, help and defaults
    (with ``optional``: None, meaning "not set here")."""
    out = {}
    for key, name in section_keys(section).items():
        info = RunSettings.model_fields[name]
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else \
            info.annotation
        default_value = None if optional else default(name)
        out[key] = (kind | None if optional else kind,
                    Field(default_value, description=info.description))
    return out


Evaluation = create_model("Evaluation", __base__=_Strict, **_fields("evaluation", False))
Resources = create_model("Resources", __base__=_Strict, **_fields("resources", False))
# Run settings applied to every trial (explicit, so they override the recipes).
Settings = create_model("Settings", __base__=_Strict, **_fields("settings", True))
# What a search space may vary, and the type of its values: the numeric run settings of the
# settings section, and the spiking actors' encoder population size and timesteps.
SEARCHABLE: dict[str, type] = {
    **{key: kind for key, name in section_keys("settings").items()
       if (kind := field_type(name)[0]) in (int, float)},
    **dict.fromkeys(ACTOR_ARGS, int)}


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


class _Experiment(_Strict):

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    methods: list[str] = Field(min_length=1)
    envs: list[str] = Field(min_length=1)
    seeds: list[NonNegativeInt] = Field(min_length=1)
    env_steps: PositiveInt
    evaluation: Evaluation = Evaluation()
    resources: Resources = Resources()
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
            method, algo, policy = split_entry(entry)
            if policy is not None:
                check_policy(policy)
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}; choose from "
                                 f"{', '.join(sorted(METHODS))}")
            if algo not in ALGORITHMS:
                raise ValueError(f"{entry}: unknown algorithm {algo!r}; choose from "
                                 f"{', '.join(ALGORITHMS)}")
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
    def _eval_metric_needs_evaluation(self) -> _Experiment:
        if self.scheduler and self.scheduler.metric == "eval_return" and (
                not self.evaluation.every or self.scheduler.grace_period % self.evaluation.every):
            raise ValueError("scheduler.grace_period must be a multiple of evaluation.every "
                             "(not 0) when the metric is eval_return")
        return self


# One experiment: every method x environment x seed (x search sample) is a trial. The top-level
# run settings (precision; None: each method's own; track: W&B, spikerl_ray.tracking) are derived
# like the sections.
Experiment = create_model("Experiment", __base__=_Experiment, **_fields("", True))


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
