"""An example lipcli plugin: one of each component kind, registered through lipcli's hooks.

The module imports nothing heavy: lipcli imports it at start-up to find the hooks, and each component's code
(and torch) is imported only when lipcli first builds that registry. Like every module of this plugin it
imports lipcli only through :mod:`lipcli.api`, the public plugin API; the rest of lipcli is private.
"""

from __future__ import annotations

from typing import Any

from lipcli.api import Register, hookimpl


@hookimpl
def register_architectures(register: Register) -> None:
    from lipcli_example.architecture import lenet

    register("example-lenet", lenet, "LeNet-style CNN: two 5x5 convolutions with BatchNorm, average pooling (example plugin)")


@hookimpl
def register_defences(register: Register) -> None:
    from lipcli_example.defence import LabelSmoothing

    register("example-label-smoothing", LabelSmoothing,
             "Cross-entropy with label smoothing as the step's loss; combine with j1/j2 (example plugin)")


@hookimpl
def register_attacks(register: Register) -> None:
    from lipcli_example.attack import RandomDirections

    register("example-random-directions", RandomDirections,
             "Decision-based: the closest misclassified point along random directions, by bisection (example plugin)")


@hookimpl
def register_datasets(register: Register) -> None:
    from lipcli_example.dataset import stripes

    register("example-stripes", stripes, "Generated stripe patterns in 4 orientations, with noise (example plugin)")


@hookimpl
def register_commands(app: Any) -> None:
    from lipcli_example.command import add_to

    add_to(app)
