"""Experiments: tune configs (YAML), their validation, and running them with Ray Tune."""

from spikerl_ray.experiments.schema import Experiment, ExperimentError, load_experiment

__all__ = ["Experiment", "ExperimentError", "load_experiment"]
