"""The run settings, defined once: :class:`RunSettings`.

Each field carries its type (choices as ``Literal``, bounds as pydantic constraints), its
default and its help text; the ``spikerl train`` command line (:mod:`spikerl_ray.cli`) and
the YAML schema of ``spikerl tune`` (:mod:`spikerl_ray.experiments.schema`) are both derived
from it. A field's ``json_schema_extra`` says where else it appears:

- ``flag``: its command-line flag when not ``--name-with-dashes`` (None: no flag);
  ``metavar``; ``negate``: a boolean flag that sets the field False (``--no-energy``);
- ``yaml``: ``(section, key)`` in a tune config (``section`` "" for the top level); None for
  the settings that identify a trial (method, policy, algo, env, seed: the experiment's grid)
  and those that only a ``spikerl train`` run folder has. Fields without ``yaml`` go under
  ``settings`` with their own name.

Adding a setting is one field here and its use where the config is built
(:func:`spikerl_ray.algorithms.build_config`, or an algorithm's entry in
:data:`spikerl_ray.algorithms.ALGORITHMS` if only some algorithms read it).
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
)

from policies.actors import ACTORS, names_factory
from policies.spiking import BACKEND_CHOICES
from spikerl_ray.algorithms import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    get_algorithm,
    unused_settings,
)
from spikerl_ray.core.distributed import DATA_PARALLEL_REGIMES, DISTRIBUTED_BACKENDS
from spikerl_ray.core.platform import PRECISION_CHOICES, PRECISIONS
from spikerl_ray.energy.accounting import (
    CARBON_REGIONS,
    DEFAULT_CARBON_INTENSITY,
    carbon_intensity,
)
from spikerl_ray.methods import METHODS

def check_policy(value: str) -> str:
    """``value`` if it names a built-in actor or has the form ``MODULE:FACTORY``; ValueError
    otherwise (the factory itself is imported when the actor is built)."""
    if value in ACTORS or names_factory(value):
        return value
    raise ValueError(f"invalid choice: {value!r} (choose from {', '.join(sorted(ACTORS))}, "
                     "or MODULE:FACTORY for an actor of your own)")


CarbonIntensity = Annotated[NonNegativeFloat, BeforeValidator(carbon_intensity)]
Resources = dict[str, PositiveFloat]


def _setting(default: Any, help: str, **where: Any) -> Any:
    return Field(default, description=help, json_schema_extra=where or None)


class RunSettings(BaseModel):
    """What a training run is; stored as ``run.json``.

    ``method`` names a recipe of :mod:`spikerl_ray.methods` whose settings fill the fields
    left None; settings still None then take the algorithm config's defaults (PopSAN's TD3
    schedule). ``policy`` is the network alone (None: the method's, else ``spikerl``).
    :meth:`resolved` applies both and refuses settings the algorithm does not read.
    """

    model_config = ConfigDict(extra="ignore")

    method: Literal[tuple(METHODS)] | None = _setting(
        None, "network + training recipe (default: the method named like --policy, else "
        "spikerl); explicit flags override the recipe", yaml=None)
    policy: str | None = _setting(
        None, "the actor network alone (default: the method's): a built-in name or "
        "MODULE:FACTORY, a factory of your own (docs/actors.md)", yaml=None)
    algo: Literal[tuple(ALGORITHMS)] = _setting(
        DEFAULT_ALGORITHM, "the RL algorithm: " + "; ".join(f"{a.name}: {a.summary}"
                                                for a in ALGORITHMS.values()), yaml=None)
    env: str = _setting("HalfCheetah-v5", "Gymnasium id, continuous actions", yaml=None)
    seed: NonNegativeInt = _setting(0, "random seed", yaml=None)
    env_runners: NonNegativeInt = _setting(
        0, "remote env runners (0: sample in the driver process)", yaml=("resources", None))
    envs_per_runner: PositiveInt = _setting(1, "environments each env runner steps",
                                            yaml=("resources", None))
    learners: NonNegativeInt = _setting(
        0, "remote learners (0: learn in the driver process)", yaml=("resources", None))
    cpus_per_learner: PositiveFloat = _setting(1.0, "CPUs each remote learner asks for",
                                               yaml=("resources", None))
    gpus_per_learner: NonNegativeFloat = _setting(0.0, "GPUs each learner asks for",
                                                  yaml=("resources", None))
    driver_cpus: PositiveInt = _setting(
        1, "CPUs reserved for the driver, which runs a local learner and env runner: also its "
        "PyTorch threads. On a machine nothing else uses, all its CPUs run the update faster "
        "(docs/performance.md, round 3); beside busy cores more threads stall",
        metavar="N", yaml=("resources", None))
    learner_resources: Resources = _setting(
        {}, "a Ray custom resource each learner asks for, e.g. to pin learners to a node type "
        "(repeatable)", flag="--learner-resource", metavar="NAME=AMOUNT",
        yaml=("resources", None))
    env_runner_resources: Resources = _setting(
        {}, "a Ray custom resource each env runner asks for (repeatable)",
        flag="--env-runner-resource", metavar="NAME=AMOUNT", yaml=("resources", None))
    updates_per_step: PositiveFloat | None = _setting(
        None, "optimizer steps per sampled env step (default 1, PopSAN's TD3 schedule)")
    data_parallel: Literal[DATA_PARALLEL_REGIMES] | None = _setting(
        None, "with L >= 2 learners: same_steps (each optimizer step averages the L learners' "
        "batches, as many steps per env step as one learner: the default) or same_samples "
        "(the SpikeRL paper's regime: each learner does 1/L of the steps)")
    precision: Literal[PRECISION_CHOICES] | None = _setting(
        None, "learner forward/loss precision (bf16: autocast, fp32 weights; auto: bf16 where "
        "the learner's device computes it natively, else fp32; default: the method's, "
        "spikerl bf16, others fp32)", yaml=("", None))
    allreduce_dtype: Literal[PRECISIONS] = _setting(
        "fp32", "dtype of the gradient allreduce between learners")
    backend: Literal[DISTRIBUTED_BACKENDS] = _setting(
        "auto", "torch.distributed backend of the learners (auto: nccl on GPUs, gloo on CPUs)")
    spiking_backend: Literal[BACKEND_CHOICES] | None = _setting(
        None, "spiking layers: fused (hand-written BPTT), torch (plain ops) or auto (default: "
        "torch when compiled, else fused)")
    compile: bool | None = _setting(
        None, "compile the networks with torch.compile (default: on where it can run; the "
        "first update compiles for seconds)")
    async_sampling: bool = _setting(
        False, "remote env runners sample while the learners train (needs --env-runners >= 1; "
        "actions use weights one training step older)")
    warmup_steps: NonNegativeInt | None = _setting(
        None, "env steps acting uniformly at random first (default: the method's; PopSAN "
        "10000, DSRL 1000)")
    pre_tanh_penalty: NonNegativeFloat | None = _setting(
        None, "weight of the mean squared pre-tanh actor output in the actor loss (default: "
        "the method's; spikerl 1.0, others 0)")
    actor_lr: PositiveFloat | None = _setting(None, "actor learning rate (default: the "
                                              "method's, else the algorithm's)")
    critic_lr: PositiveFloat | None = _setting(None, "critic learning rate (default: the "
                                               "method's, else the algorithm's)")
    batch_size: PositiveInt | None = _setting(None, "minibatch size per learner (default: the "
                                              "algorithm's; TD3 100)")
    exploration_noise: NonNegativeFloat | None = _setting(
        None, "std of TD3's Gaussian action noise, in normalized units (default 0.1)")
    actor_kwargs: dict[str, Any] = _setting(
        {}, "keyword arguments of the actor's constructor", flag=None, yaml=None)
    eval_every: NonNegativeInt = _setting(
        5, "evaluate every N iterations of ~1000 steps (0: never), and at the end",
        yaml=("evaluation", "every"))
    eval_episodes: PositiveInt = _setting(10, "episodes per evaluation",
                                          yaml=("evaluation", "episodes"))
    energy_monitor: bool = _setting(
        True, "run no energy monitors (no energy columns, no energy.json)",
        flag="--no-energy", negate=True)
    estimate_cpu_watts: PositiveFloat | None = _setting(
        None, "where RAPL cannot be read, estimate CPU energy as W watts per busy core of the "
        "run's processes (labelled 'estimate'; default: no estimate)", metavar="W")
    carbon_intensity: CarbonIntensity = _setting(
        DEFAULT_CARBON_INTENSITY, f"gCO2e per kWh for the carbon figures, or a region "
        f"({', '.join(CARBON_REGIONS)}); default {DEFAULT_CARBON_INTENSITY:g}, the 2019 world "
        "average", metavar="G_PER_KWH")
    save_replay: bool = _setting(
        False, "store the replay memory with each checkpoint, so a resumed run continues with "
        "it (else it refills it before updating again)")
    checkpoint_every: PositiveInt = _setting(
        10, "write a checkpoint every N iterations (~1000 env steps each) and at the end",
        metavar="N", yaml=None)
    keep_checkpoints: PositiveInt = _setting(3, "keep the newest K checkpoints",
                                             metavar="K", yaml=None)
    track: Literal["none", "wandb"] = _setting(
        "none", "wandb: log metrics, config and the learning curve to Weights & Biases (pip "
        "install -e '.[wandb]'), offline by default into RUN/wandb (tune: each trial's "
        "folder); WANDB_MODE=online uploads as it trains, or later wandb sync "
        "RUN/wandb/offline-run-*",
        yaml=("", None))
    max_nonfinite_updates: PositiveInt = _setting(
        1000, "stop after N gradient updates in a row with NaN or Inf gradients (each is "
        "skipped)", metavar="N")

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        return None if value is None else check_policy(value)

    def resolved(self) -> RunSettings:
        """A copy with the policy and the recipe's settings filled in (explicit ones kept);
        ValueError for a setting the algorithm does not read."""
        entry = get_algorithm(self.algo)
        unread = set(unused_settings(self.algo))
        unused = [name for name, info in type(self).model_fields.items()
                  if name in unread and getattr(self, name) != info.default]
        if unused:
            raise ValueError(f"{self.algo.upper()} does not use these settings: "
                             f"{', '.join(unused)}")
        out = self.model_copy(deep=True)
        if self.method is not None:
            method = METHODS[self.method]
            out.policy = self.policy or method.policy
            if entry.recipes:
                for key, value in method.settings.items():
                    if getattr(out, key) is None:
                        setattr(out, key, value)
        out.policy = out.policy or "spikerl"
        return out


def default(name: str) -> Any:
    """The default of the run setting ``name``."""
    return RunSettings.model_fields[name].get_default(call_default_factory=True)


def where(name: str) -> dict[str, Any]:
    """A run setting's ``json_schema_extra`` (see the module's docstring)."""
    return RunSettings.model_fields[name].json_schema_extra or {}


def field_type(name: str) -> tuple[Any, list[Any]]:
    """A run setting's type without ``None`` and ``Annotated`` (``int``, ``Literal[...]``,
    ``dict[...]``), and the constraints and validators on it."""
    info = RunSettings.model_fields[name]
    annotation, metadata = info.annotation, list(info.metadata)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is typing.Annotated:
        metadata += annotation.__metadata__
        annotation = annotation.__origin__
    return annotation, metadata
