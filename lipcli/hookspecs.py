"""The plugin contract: the hooks a lipcli plugin may implement.

First-party architectures, defences, attacks and data sets (the package ``lipcli_builtins``) are registered
through exactly these hooks, from the ``lipcli`` entry-point group, like any third-party plugin. Plugins
import what they need, this module's ``Register`` included, from :mod:`lipcli.api`. An implementation may
accept a subset of a hook's arguments (pluggy passes only the ones it names), so arguments can be added
later without breaking plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    import typer

hookspec = pluggy.HookspecMarker("lipcli")

Register = Callable[..., None]
"""``register(name, factory, description, **metadata)``: adds one component to a registry. ``factory`` is a callable
or a reference ``"package.module:attribute"`` to one, imported when the component is first built
(:mod:`lipcli.references`)."""


@hookspec
def register_architectures(register: Register) -> None:
    """Add model architectures.

    Call ``register(name, factory, description)`` once per architecture. ``factory(info, *,
    batchnorm_affine, **options)`` receives the data set's :class:`lipcli.api.DatasetInfo` (channels, size,
    classes) and returns an ``nn.Module`` mapping ``[B, C, H, W]`` inputs in [0, 1] to ``[B, classes]`` logits.
    ``options`` come from the ``[model.options]`` table of the experiment file.
    """


@hookspec
def register_defences(register: Register) -> None:
    """Add training defences: primitives and presets.

    A primitive: ``register(name, factory, description)``; ``factory(**params)`` returns an object with any
    of ``prepare_model(model, info)``, ``perturb(model, images, labels) -> Perturbation`` (run in eval mode
    with parameters frozen) and ``training_loss(model, images, labels, perturbation) -> StepLoss`` (train
    mode); see :class:`lipcli.api.Perturbation` and :class:`lipcli.api.StepLoss`. A preset:
    ``register(name, factory, description, preset=True)`` with ``factory()`` returning its primitives as
    ``[(primitive_name, {param: value}), ...]``.
    """


@hookspec
def register_attacks(register: Register) -> None:
    """Add adversarial attacks used by robustness evaluation (``lipcli curve``, ``lipcli attack``).

    Call ``register(name, factory, description)`` once per attack. ``factory(**options)`` (options from
    ``-O NAME.KEY=VALUE``) returns a :class:`lipcli.api.Attack`: ``run(model, images, labels, norm)`` gets a
    batch of correctly classified images (model in eval mode, parameters frozen, queries counted) and returns
    one proposed adversarial input per image. lipcli re-classifies every proposal and measures its distance
    itself: a proposal that is not misclassified or not in [0, 1] is a failure (+inf).
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Add data sets.

    Call ``register(name, factory, description)``; ``factory(*, data_dir, download, **options)`` returns a
    :class:`lipcli.api.DataSplits` with uint8 images (0..255) or float images in [0, 1]. ``data_dir`` is a
    local folder or None; ``download`` says whether the network may be used; missing files raise
    :class:`lipcli.api.DataError`. ``options`` come from the ``[data.options]`` table of the experiment file.
    """


@hookspec
def register_commands(app: "typer.Typer") -> None:
    """Add commands to the ``lipcli`` Typer app (``@app.command()``)."""


def hook_names() -> list[str]:
    """Names of every hook in this contract, in definition order."""
    return [name for name, value in globals().items() if callable(value) and hasattr(value, "lipcli_spec")]

