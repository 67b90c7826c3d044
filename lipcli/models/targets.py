"""What an evaluation command attacks: a model and the test images it is measured on. A lipcli checkpoint's
are those of the data set it was trained on, read the same way training read them (``--data-dir`` points at
local files); a model lipcli did not train (:mod:`lipcli.models.external`) is measured on the data set named
for it, and checked against it before any attack runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from lipcli.config import ExperimentConfig
from lipcli.data.load import load_data
from lipcli.data.selection import EVERY, Selection
from lipcli.data.types import DatasetInfo, ImageSet
from lipcli.engine import Engine
from lipcli.errors import ConfigError, DataError
from lipcli.files import sha256
from lipcli.layout import CONFIG_FILE
from lipcli.models.external import (
    FACTORY,
    LIPCLI,
    Normalization,
    Normalized,
    checked_output,
    load_factory_model,
    load_file_model,
    module_digest,
    model_format,
)
from lipcli.models.loading import restore


@dataclass(frozen=True)
class ModelSpec:
    """How to evaluate a model lipcli did not train (``--dataset``, ``--data-option``, ``--model``,
    ``--weights``, ``--normalize``); empty for lipcli checkpoints, which name their own data set."""

    dataset: str | None = None
    data_options: Mapping[str, Any] = field(default_factory=dict)
    factory: str | None = None
    """``package.module:callable`` or ``path/to/file.py:callable`` returning the model (instead of a file)."""
    weights: Path | None = None
    normalize: Normalization | None = None

    def is_empty(self) -> bool:
        return self == ModelSpec()


@dataclass
class Target:
    """A model to evaluate: where it came from, a short label for tables and plots, and its test images."""

    path: Path
    label: str
    model: nn.Module
    config: ExperimentConfig
    info: DatasetInfo
    test: ImageSet
    sha256: str
    """Of the checkpoint or model file; for ``--model``, of the built model (structure, parameters and buffers),
    the factory's name and its code file (:func:`lipcli.models.external.module_digest`)."""
    source: dict[str, Any] | None = None
    """How a model lipcli did not train was loaded (format, factory, weights, normalisation); None for a
    lipcli checkpoint."""
    split: ImageSet | None = None
    """The whole test split :attr:`test` was chosen from (to identify the images of earlier results)."""


def load_target(
    path: Path | None, engine: Engine, *, data_dir: Path | None, selection: Selection = EVERY,
    spec: ModelSpec = ModelSpec(), label: str | None = None,
) -> Target:
    """The model on the engine's device (eval mode) and the test images ``selection`` chooses: from a lipcli
    checkpoint, an exported program or a TorchScript file at ``path``, or (``path`` None) from
    ``spec.factory``."""
    kind = FACTORY if path is None else model_format(path)
    if kind == LIPCLI:
        if not spec.is_empty():
            raise ConfigError(f"{path}: a lipcli checkpoint names its data set and takes images in [0, 1]; "
                              "--dataset, --data-option, --weights and --normalize are for other models")
        return _checkpoint_target(Path(path), engine, data_dir=data_dir, selection=selection)
    return _external_target(path, kind, engine, data_dir=data_dir, selection=selection, spec=spec, label=label)


def _checkpoint_target(path: Path, engine: Engine, *, data_dir: Path | None, selection: Selection) -> Target:
    model, config, info = restore(path, engine.device, engine.plugins)
    data_config = config.data if data_dir is None else dataclasses.replace(config.data, data_dir=str(data_dir))
    splits = load_data(data_config, engine.plugins)
    found, trained = splits.info, info
    if (found.input_shape, found.num_classes) != (trained.input_shape, trained.num_classes):
        raise DataError(
            f"{path}: the data read{f' from {data_dir}' if data_dir else ''} has images of shape "
            f"{list(found.input_shape)} in {found.num_classes} classes; the model was trained on "
            f"{list(trained.input_shape)} in {trained.num_classes} classes"
        )
    test = selection.apply(splits.test)
    return Target(path, run_label(path), model, config, info, test, sha256(path), split=splits.test)


def _external_target(
    path: Path | None, kind: str, engine: Engine, *, data_dir: Path | None, selection: Selection,
    spec: ModelSpec, label: str | None,
) -> Target:
    """A model lipcli did not train, checked against the data set named by ``spec.dataset``."""
    name = str(path) if path is not None else str(spec.factory)
    if spec.dataset is None:
        raise ConfigError(f"dataset: {name} is not a lipcli checkpoint, so it does not say which data set it "
                          "classifies: name it with --dataset (and --data-dir)")
    if path is not None and spec.weights is not None:
        raise ConfigError(f"weights: {path} holds its weights; --weights goes with --model")
    data = dataclasses.replace(ExperimentConfig().data, dataset=spec.dataset, options=dict(spec.data_options),
                               data_dir=None if data_dir is None else str(data_dir))
    config = dataclasses.replace(ExperimentConfig(), data=data)
    splits = load_data(config.data, engine.plugins)
    info = splits.info
    if path is not None:
        model = load_file_model(path, kind, engine.device)
        digest = sha256(path)
    else:
        model = load_factory_model(str(spec.factory), spec.weights, info.num_classes, engine.device)
        code = str(spec.factory).rpartition(":")[0]
        digest = module_digest(model, str(spec.factory), sha256(Path(code)) if code.endswith(".py") else "")
    if spec.normalize is not None:
        if len(spec.normalize.mean) not in (1, info.channels):
            raise ConfigError(f"normalize: {len(spec.normalize.mean)} values for images of {info.channels} "
                              "channels: give one per channel (or one for all)")
        model = Normalized(model, spec.normalize).to(engine.device).eval()
    test = selection.apply(splits.test)
    checked_output(model, test.as_float(test.read(slice(0, 4))).to(engine.device), info.num_classes, name)
    reading = engine.plugins.registry("dataset").get(spec.dataset).metadata.get("reading_options", ())
    source = {
        "format": kind, "factory": spec.factory, "weights": None if spec.weights is None else str(spec.weights),
        "normalize": None if spec.normalize is None else spec.normalize.to_dict(),
        "data_options": {key: value for key, value in spec.data_options.items() if key not in reading},
    }
    where = Path(path) if path is not None else Path(spec.weights or str(spec.factory).rpartition(":")[2])
    return Target(where, label or run_label(where), model, config, info, test, digest, source, splits.test)


def load_targets(
    paths: list[Path], out: Path, engine: Engine, *, data_dir: Path | None, selection: Selection = EVERY,
    spec: ModelSpec = ModelSpec(),
) -> list[tuple[str, Path, Target]]:
    """(label, output folder, target) per model file (or the one ``spec.factory`` model when ``paths`` is
    empty), all loaded before any work, so that every folder can be checked
    (:func:`lipcli.results_folder.claim`) before the first attack runs."""
    if spec.factory is not None and paths:
        raise ConfigError("model: give model files or --model, not both")
    if spec.factory is None and not paths:
        raise ConfigError("model: give a model file (a lipcli checkpoint, .pt2 or TorchScript) or --model")
    sources: list[Path | None] = list(paths) or [None]
    labels = [run_label(Path(p)) if p is not None else _factory_label(spec) for p in sources]
    return [(label, folder, load_target(source, engine, data_dir=data_dir, selection=selection, spec=spec,
                                        label=label))
            for source, (label, folder) in zip(sources, output_folders(labels, out))]


def target_settings(target: Target) -> dict[str, Any]:
    """What any result measured on ``target`` depends on: the model's bytes (and how it was loaded, for a model
    lipcli did not train) and the exact images."""
    settings = {
        "checkpoint_sha256": target.sha256, "dataset": target.info.name, "images": len(target.test),
        "images_sha256": target.test.sha256(),
    }
    return settings if target.source is None else {**settings, "model": target.source}


def _factory_label(spec: ModelSpec) -> str:
    """A ``--model``'s label: its weights file's stem, else the callable's name."""
    return Path(spec.weights).stem if spec.weights is not None else str(spec.factory).rpartition(":")[2]


def run_label(path: Path) -> str:
    """The run folder's name for a checkpoint inside a run folder (``runs/x/best.pt`` -> ``x``), else its stem."""
    if (path.parent / CONFIG_FILE).is_file() and path.parent.name:
        return path.parent.name
    return path.stem


def output_folders(labels: list[str], out: Path) -> list[tuple[str, Path]]:
    """(label, folder) per model: ``out`` itself for one model, else ``out/<label>`` with distinct labels, so
    no model's files overwrite another's."""
    unique = unique_labels(labels)
    return [(label, out if len(labels) == 1 else out / label) for label in unique]


def unique_labels(labels: list[str]) -> list[str]:
    """``labels`` with repeats numbered (``a``, ``a-2``, ``a-3``), so every file and curve name is distinct,
    also where a label itself looks numbered (``a``, ``a-2``, ``a`` gives ``a``, ``a-2``, ``a-3``)."""
    issued: set[str] = set()
    unique = []
    for label in labels:
        candidate, number = label, 1
        while candidate in issued:
            number += 1
            candidate = f"{label}-{number}"
        issued.add(candidate)
        unique.append(candidate)
    return unique
