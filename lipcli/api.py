"""The public API for plugin authors: the one lipcli module a plugin imports from.

Everything a plugin may use is re-exported here, and this module is the only stable surface for plugins:
every other lipcli module is private and may change in any release, so a plugin that reaches into one
(``lipcli.attacks.base``, ``lipcli.defence``, ...) can break on the next release without warning.
lipcli's own built-in plugins (``plugins/lipcli_builtins``) and the example plugin import nothing else from
lipcli, and a test (``tests/test_public_api.py``) keeps it so; the API is exercised by real code every day.

Importing this module is cheap: :data:`hookimpl`, :data:`Register` and the errors are plain Python, and every
name that needs torch is imported on first use (a module ``__getattr__``, PEP 562). So a plugin's
``__init__`` can write ``from lipcli.api import Register, hookimpl`` and still load without torch; its
components import the rest when they are built.

What is here, by use:

- plugin wiring: :data:`hookimpl`, :data:`Register` (the type of the ``register`` callable a hook receives);
- data sets: :class:`DatasetInfo`, :class:`DataSplits`, :class:`ImageSet` (with :class:`ImageFiles` for images read
  from their files a batch at a time), and the errors a user can fix:
  :class:`DataError` for files that are missing or wrong, :class:`ConfigError` for a wrong option value;
- attacks: :class:`Attack`, :class:`AttackAtBudget`, :data:`NORMS` (the attack norms, ``l2`` and ``linf``),
  :func:`distance`, :func:`largest_distance`, :func:`within_budget`, :func:`smallest_batch` (the smallest
  batch a model computes without padding, for attacks that split their calls), and the search and projection helpers
  :func:`parameter_search` (a fixed-budget attack made minimal-distance; its callable type
  :data:`AttackAt`) and :func:`box_projection`;
- gradients: :func:`input_gradient`, :func:`margin_gradients`, :func:`grad_norm` (in a norm of
  :data:`GRADIENT_NORMS`, the dual norms ``l2`` and ``l1``), :func:`cross_entropy`,
  :func:`at_least_float32`, and :func:`full_float32` for arithmetic that TF32 or bfloat16 would spoil;
- defences: :class:`Perturbation`, :class:`StepLoss`, :func:`plain_loss`, the tanh head
  (:class:`TanhHead`, :class:`WithHead`), and for several processes :func:`gather`, :func:`unwrap`,
  :func:`current`;
- architectures that bound themselves (a ``lipschitz_bound(bounds)`` method): :class:`LayerBounds` and
  :class:`BoundUnavailable`;
- error messages: :func:`did_you_mean` (`` Did you mean 'a' or 'b'?``, the closest of the known names, as lipcli's
  own errors suggest them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lipcli import hookimpl
from lipcli.errors import ConfigError, DataError
from lipcli.hookspecs import Register
from lipcli.suggestions import did_you_mean

if TYPE_CHECKING:  # what type checkers and editors see; at run time these load from _LAZY on first use
    from lipcli.attacks.base import (
        NORMS,
        Attack,
        AttackAtBudget,
        distance,
        largest_distance,
        within_budget,
    )
    from lipcli.attacks.projection import box_projection
    from lipcli.attacks.search import AttackAt, parameter_search
    from lipcli.data.image_files import ImageFiles
    from lipcli.data.types import DatasetInfo, DataSplits, ImageSet
    from lipcli.defence import Perturbation, StepLoss, plain_loss
    from lipcli.distributed import current, gather, unwrap
    from lipcli.gradients import (
        GRADIENT_NORMS,
        at_least_float32,
        cross_entropy,
        grad_norm,
        input_gradient,
        margin_gradients,
    )
    from lipcli.lipschitz.bound import LayerBounds
    from lipcli.lipschitz.operator_norms import BoundUnavailable
    from lipcli.models.exported import smallest_batch
    from lipcli.models.heads import TanhHead, WithHead
    from lipcli.precision import full_float32

_LAZY: dict[str, tuple[str, str]] = {
    "Attack": ("lipcli.attacks.base", "Attack"),
    "AttackAt": ("lipcli.attacks.search", "AttackAt"),
    "AttackAtBudget": ("lipcli.attacks.base", "AttackAtBudget"),
    "BoundUnavailable": ("lipcli.lipschitz.operator_norms", "BoundUnavailable"),
    "DataSplits": ("lipcli.data.types", "DataSplits"),
    "DatasetInfo": ("lipcli.data.types", "DatasetInfo"),
    "GRADIENT_NORMS": ("lipcli.gradients", "GRADIENT_NORMS"),
    "ImageFiles": ("lipcli.data.image_files", "ImageFiles"),
    "ImageSet": ("lipcli.data.types", "ImageSet"),
    "LayerBounds": ("lipcli.lipschitz.bound", "LayerBounds"),
    "NORMS": ("lipcli.attacks.base", "NORMS"),
    "Perturbation": ("lipcli.defence", "Perturbation"),
    "StepLoss": ("lipcli.defence", "StepLoss"),
    "TanhHead": ("lipcli.models.heads", "TanhHead"),
    "WithHead": ("lipcli.models.heads", "WithHead"),
    "at_least_float32": ("lipcli.gradients", "at_least_float32"),
    "box_projection": ("lipcli.attacks.projection", "box_projection"),
    "cross_entropy": ("lipcli.gradients", "cross_entropy"),
    "current": ("lipcli.distributed", "current"),
    "distance": ("lipcli.attacks.base", "distance"),
    "full_float32": ("lipcli.precision", "full_float32"),
    "gather": ("lipcli.distributed", "gather"),
    "grad_norm": ("lipcli.gradients", "grad_norm"),
    "input_gradient": ("lipcli.gradients", "input_gradient"),
    "largest_distance": ("lipcli.attacks.base", "largest_distance"),
    "margin_gradients": ("lipcli.gradients", "margin_gradients"),
    "parameter_search": ("lipcli.attacks.search", "parameter_search"),
    "plain_loss": ("lipcli.defence", "plain_loss"),
    "smallest_batch": ("lipcli.models.exported", "smallest_batch"),
    "unwrap": ("lipcli.distributed", "unwrap"),
    "within_budget": ("lipcli.attacks.base", "within_budget"),
}
"""Public name -> (private module, name there) for everything that imports torch: loaded on first use."""

__all__ = [
    "Attack",
    "AttackAt",
    "AttackAtBudget",
    "BoundUnavailable",
    "ConfigError",
    "DataError",
    "DataSplits",
    "DatasetInfo",
    "GRADIENT_NORMS",
    "ImageFiles",
    "ImageSet",
    "LayerBounds",
    "NORMS",
    "Perturbation",
    "Register",
    "StepLoss",
    "TanhHead",
    "WithHead",
    "at_least_float32",
    "box_projection",
    "cross_entropy",
    "current",
    "did_you_mean",
    "distance",
    "full_float32",
    "gather",
    "grad_norm",
    "hookimpl",
    "input_gradient",
    "largest_distance",
    "margin_gradients",
    "parameter_search",
    "plain_loss",
    "smallest_batch",
    "unwrap",
    "within_budget",
]


def __getattr__(name: str) -> Any:
    """A public name that needs torch, imported from its private module on first use and then kept here."""
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lipcli.api' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
