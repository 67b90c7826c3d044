"""Experiment configuration: schema, resolution of its layers, and the TOML written into each run."""

from lipcli.config.loader import build, resolve
from lipcli.config.schema import ExperimentConfig
from lipcli.config.toml_writer import dumps

__all__ = ["ExperimentConfig", "build", "dumps", "resolve"]
