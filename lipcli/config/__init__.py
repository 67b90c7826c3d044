"""Experiment configuration: schema, resolution of its layers, and the TOML written into each run."""

from lipcli.config.loader import build, build_stored, resolve
from lipcli.config.schema import ExperimentConfig
from lipcli.config.toml_writer import dumps

__all__ = ["ExperimentConfig", "build", "build_stored", "dumps", "resolve"]
