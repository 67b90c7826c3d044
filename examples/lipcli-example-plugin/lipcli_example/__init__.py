"""An example lipcli plugin: one of each component kind, registered through lipcli's hooks.

The module imports nothing heavy: lipcli imports it at start-up to find the hooks, and each component is
registered by reference (``"module:attribute"``), so its code (and torch) is imported only when lipcli first
builds that component. Like every module of this plugin it
imports lipcli only through :mod:`lipcli.api`, the public plugin API; the rest of lipcli is private.
"""

from __future__ import annotations

from typing import Any

from lipcli.api import Register, hookimpl


@hookimpl
def register_architectures(register: Register) -> None:
    register("example-lenet", "lipcli_example.architecture:lenet",
             "LeNet-style CNN: two 5x5 convolutions with BatchNorm, average pooling (example plugin)")


@hookimpl
def register_defences(register: Register) -> None:
    register("example-label-smoothing", "lipcli_example.defence:LabelSmoothing",
             "Cross-entropy with label smoothing as the step's loss; combine with j1/j2 (example plugin)")


@hookimpl
def register_attacks(register: Register) -> None:
    register("example-random-directions", "lipcli_example.attack:RandomDirections",
             "Decision-based: the closest misclassified point along random directions, by bisection (example plugin)")


@hookimpl
def register_datasets(register: Register) -> None:
    register("example-stripes", "lipcli_example.dataset:stripes",
             "Generated stripe patterns in 4 orientations, with noise (example plugin)")


@hookimpl
def register_commands(app: Any) -> None:
    from lipcli_example.command import add_to

    add_to(app)
