"""Options shared by several commands, declared once: a command lists each as ``name: Alias = default``, so
an option has one spelling, one help text and one meaning in every command that takes it.

``--out`` of a command that writes results says what the folder holds, so it is made by
:func:`out_folder`; ``--eps`` takes one value in some commands and a value per norm in others, so it is made
by :func:`eps_option`. Flags are plain flags (``--quiet``, never ``--quiet true``), shown so in help by
:class:`lipcli.cli.help.PlainFlags`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lipcli.cli import console

VERBOSE_KEY = "lipcli.verbose"
"""``ctx.meta`` key: set by ``-v/--verbose`` before or after the command name, read where errors are shown."""


def _verbose(ctx: typer.Context, value: bool) -> None:
    if value:  # only ever set: ``lipcli -v curve`` stays verbose although curve's own -v is absent
        ctx.meta[VERBOSE_KEY] = True


Verbose = Annotated[bool, typer.Option("--verbose", "-v", callback=_verbose, help="Show tracebacks of errors.")]
ConfigFile = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="TOML experiment file.", show_default=False, dir_okay=False),
]
SetOverrides = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", "-s", metavar="SECTION.KEY=VALUE",
        help="Override one configuration key (repeatable); the value is read as TOML, e.g. --set training.lr=0.05.",
        show_default=False,
    ),
]
Recipe = Annotated[Optional[str], typer.Option("--recipe", help="Training recipe (lipcli config recipes).")]
Json = Annotated[bool, typer.Option("--json", help="Print results as JSON.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Read the data set offline from this folder.")]
Limit = Annotated[
    Optional[int],
    typer.Option("--limit", min=1, help="Evaluate the first N test images only (lipcli train's --train-limit "
                                        "counts training images)."),
]
Offset = Annotated[
    int,
    typer.Option("--offset", min=0, help="Skip the first N test images: evaluate from index N on (with --limit, "
                                         "N to N+limit-1)."),
]
Indices = Annotated[
    Optional[Path],
    typer.Option("--indices", dir_okay=False, exists=True, show_default=False,
                  help="Evaluate the test images at these indices (with --limit, the first N of them): a file of "
                       "integers, a .npy array, or a CSV with an index column such as another result's "
                       "distances.csv."),
]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch.")]
Overwrite = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace results of other settings in the output folder (refused without it)."),
]
# the commands that evaluate models (curve, attack, robust, stats): lipcli's checkpoints and anyone's models

_MODEL_FILES = ("lipcli checkpoints, exported programs (torch.export.save, .pt2) or TorchScript files "
                "(torch.jit.save). Models are programs: evaluate ones you trust")
Models = Annotated[
    Optional[list[Path]],
    typer.Argument(help=f"Models: {_MODEL_FILES}.", exists=True, dir_okay=False, show_default=False),
]
Model = Annotated[
    Optional[Path],
    typer.Argument(help=f"A model: one of {_MODEL_FILES}.", exists=True, dir_okay=False, show_default=False),
]
ModelFactory = Annotated[
    Optional[str],
    typer.Option("--model", metavar="MODULE:CALLABLE",
                 help="Instead of a file: a callable returning the nn.Module (package.module:callable, or "
                      "path/to/file.py:callable), called with num_classes= when it takes it. This imports and "
                      "runs that code: use it for code you trust.", show_default=False),
]
Weights = Annotated[
    Optional[Path],
    typer.Option("--weights", exists=True, dir_okay=False, show_default=False,
                 help="State dict for --model: a torch.save file (loaded with weights_only=True) or .safetensors."),
]
ModelDataset = Annotated[
    Optional[str],
    typer.Option("--dataset", show_default=False,
                 help="The data set a model lipcli did not train is measured on (lipcli list datasets)."),
]
DataOptions = Annotated[
    Optional[list[str]],
    typer.Option("--data-option", metavar="KEY=VALUE", show_default=False,
                 help="An option of that data set, e.g. --data-option resize=32 (repeatable; value read as TOML)."),
]
Normalize = Annotated[
    Optional[tuple[str, str]],
    typer.Option("--normalize", metavar="MEAN STD", show_default=False,
                 help="Per-channel normalisation the model expects, e.g. --normalize 0.485,0.456,0.406 "
                      "0.229,0.224,0.225: applied inside the model, so attacks and distances stay in [0, 1]."),
]


def model_spec(
    dataset: str | None, data_options: list[str] | None, factory: str | None, weights: Path | None,
    normalize: tuple[str, str] | None,
) -> Any:
    """The :class:`lipcli.models.targets.ModelSpec` the model options describe."""
    from lipcli.config.loader import parse_override
    from lipcli.models.external import Normalization, split_floats
    from lipcli.models.targets import ModelSpec

    if weights is not None and factory is None:
        raise typer.BadParameter("--weights loads a state dict into the model of --model; give --model too",
                                 param_hint="--weights")
    options = dict(parse_override(item, "--data-option", "KEY=VALUE") for item in data_options or [])
    scaling = None
    if normalize is not None:
        mean, std = (split_floats(text, f"--normalize {part}") for text, part in zip(normalize, ("MEAN", "STD")))
        scaling = Normalization(mean, std)
    return ModelSpec(dataset, options, factory, weights, scaling)


def image_selection(limit: int | None, offset: int, indices: Path | None) -> Any:
    """The :class:`lipcli.data.selection.Selection` of test images ``--limit``, ``--offset`` and ``--indices``
    choose."""
    from lipcli.data.selection import Selection, read_indices

    if indices is None:
        return Selection(limit, offset)
    return Selection(limit, offset, read_indices(indices), str(indices))


def model_paths(files: list[Path] | None, factory: str | None) -> list[Path]:
    """The model files given; none at all (no --model either) is a usage error, said before anything loads."""
    if not files and factory is None:
        raise typer.BadParameter("give model files (lipcli checkpoints, .pt2 or TorchScript) or --model",
                                 param_hint="MODELS")
    return list(files or [])


def output_anchor(files: list[Path], weights: Path | None) -> list[Path]:
    """What the default output folder is placed beside: the model files, or --model's weights file."""
    return files or ([weights] if weights is not None else [])

# the evaluation commands (curve, attack, robust)


def _norm(value: str) -> str:
    """``--norm`` in any case, checked before anything (folder names included) uses it."""
    norm = value.strip().lower()
    if norm not in ("l2", "linf"):
        raise typer.BadParameter(f"{value!r} is not a norm; use l2 or linf")
    return norm


Norm = Annotated[str, typer.Option("--norm", "-n", callback=_norm, help="Distance norm: l2 or linf.")]
Attacks = Annotated[
    Optional[list[str]], typer.Option("--attack", "-a", help="Attack name, repeatable (lipcli list attacks).")
]
AttackOptions = Annotated[
    Optional[list[str]],
    typer.Option("--attack-option", "-O", metavar="ATTACK.KEY=VALUE",
                 help="An attack parameter, e.g. -O pgd-l2.steps=40 (repeatable; value read as TOML)."),
]
Seed = Annotated[
    Optional[int],
    typer.Option(
        "--seed", min=0,
        help="Seed of the random draws of attacks (default 0): the same seed and batch size give identical results.",
        show_default=False,
    ),
]


def out_folder(help: str) -> Any:
    """``--out``/``-o``, a folder; ``help`` says what the command writes there and its default."""
    return typer.Option("--out", "-o", file_okay=False, help=help, show_default=False)


def eps_option(help: str) -> Any:
    """``--eps``: the sizes to report (or, in ``lipcli robust``, the budgets), e.g. 0.1,1.5 or 8/255."""
    return typer.Option("--eps", help=help, show_default=False)


def attack_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``-O ATTACK.KEY=VALUE`` items as ``{attack: {key: value}}``."""
    from lipcli.config.loader import parse_override

    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        dotted, value = parse_override(item, "--attack-option", "ATTACK.KEY=VALUE")
        name, _, key = dotted.rpartition(".")
        if not name or not key:
            raise typer.BadParameter(f"{item!r}: expected ATTACK.KEY=VALUE", param_hint="--attack-option")
        options.setdefault(name, {})[key] = value
    return options


def parse_eps_option(text: str, norm: str | None = None) -> list[tuple[str, float]]:
    """``0.1,1.5`` or ``8/255`` as (text, value) pairs; a bad value is a usage error of ``--eps`` (naming the
    ``norm`` whose sizes they are, where ``--eps`` takes sizes per norm)."""
    from lipcli.curves import parse_eps

    try:
        return parse_eps(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{norm}: {exc}" if norm else str(exc), param_hint="--eps") from None


def deprecated(old: str, new: str) -> None:
    """The one-line note of a deprecated option spelling that still works."""
    console.warn(f"{old} is deprecated and will be removed; use {new}")
