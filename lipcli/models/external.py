"""Models lipcli did not train: an exported program, a TorchScript file, or a factory with a state dict.

None of them is loaded by unpickling arbitrary objects. ``torch.export.load`` reads a program from its own
serialised format, ``torch.jit.load`` reads TorchScript code with TorchScript's own restricted unpickler, and
weights load with ``torch.load(weights_only=True)`` (or from a ``safetensors`` file). Only ``--model`` runs
the user's own Python code, by the user's choice.

Preprocessing belongs to the model: :class:`Normalized` puts a per-channel normalisation in front, so attacks
and distances stay in [0, 1] pixel space.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import pickle
import sys
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lipcli.checkpoint import describe_file
from lipcli.errors import CheckpointError, ConfigError, DataError
from lipcli.models.loading import state_dict_mismatch

LIPCLI, EXPORTED, TORCHSCRIPT, FACTORY = "lipcli", "torch.export", "torchscript", "factory"
INIT_SEED = 0
"""The seed a factory's model is built under, so that a model without ``--weights`` is the same every run."""


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std``, applied by the model to inputs in [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            raise ConfigError(f"normalize: give as many means as stds (one per channel), not {len(self.mean)} "
                              f"and {len(self.std)}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std) <= 0:
            raise ConfigError(f"normalize: the stds must be positive and every value finite, got mean "
                              f"{list(self.mean)}, std {list(self.std)}")

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


class Normalized(nn.Module):
    """``model`` behind a per-channel normalisation: it takes images in [0, 1]."""

    def __init__(self, model: nn.Module, normalization: Normalization) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(normalization.std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)

    def lipschitz_bound(self, bounds: Any) -> float:
        """The model's bound (:mod:`lipcli.lipschitz.bound`) times the largest factor of the normalisation, a
        diagonal map in every p-norm (the mean only shifts)."""
        return bounds(self.model) / float(self.std.min())


class ExportedModel(nn.Module):
    """An exported program as a module. Its train/eval behaviour was fixed when it was exported (its module
    refuses ``.eval()``), so mode changes stop here; a program exported with a fixed batch size gets batches
    of that size, the last one padded."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.program = program.module()
        self.batch = _static_batch(program)

    def train(self, mode: bool = True) -> ExportedModel:
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.batch is None or images.shape[0] == self.batch:
            return self.program(images)
        outputs = []
        for chunk in images.split(self.batch):
            missing = self.batch - chunk.shape[0]
            padded = torch.cat([chunk, chunk.new_zeros((missing, *chunk.shape[1:]))]) if missing else chunk
            outputs.append(self.program(padded)[: chunk.shape[0]])
        return torch.cat(outputs)


def _static_batch(program: torch.export.ExportedProgram) -> int | None:
    """The batch size the program was exported with when it is fixed (None: a dynamic batch dimension)."""
    inputs = program.graph_signature.user_inputs
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in inputs]
    if len(placeholders) != 1:
        raise CheckpointError(f"the exported program takes {len(placeholders)} inputs; lipcli evaluates a "
                              "classifier of one batch of images")
    value = placeholders[0].meta.get("val")
    first = value.shape[0] if isinstance(value, torch.Tensor) and value.dim() > 0 else None
    return first if isinstance(first, int) else None


def model_format(path: Path) -> str:
    """:data:`LIPCLI`, :data:`EXPORTED` or :data:`TORCHSCRIPT`, from the archive's member names (nothing is
    loaded); any other file is a :class:`CheckpointError` naming the accepted formats."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a lipcli checkpoint, an exported program (torch.export.save, .pt2) or a "
                              f"TorchScript file (torch.jit.save): {describe_file(path)}")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name == "archive_format" or name.endswith("/archive_format") for name in names):
        return EXPORTED
    if any(name.endswith("/constants.pkl") for name in names) and any("/code/" in name for name in names):
        return TORCHSCRIPT
    return LIPCLI


def load_file_model(path: Path, kind: str, device: torch.device) -> nn.Module:
    """The model in an exported program or TorchScript file, on ``device``, in eval mode."""
    try:
        if kind == EXPORTED:
            model: nn.Module = ExportedModel(torch.export.load(path))
        else:
            with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, still supported
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - whatever a damaged or hostile archive raises, it is refused
        raise CheckpointError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {_first_line(exc)})") from None
    return model.to(device).eval()


def load_factory_model(
    spec: str, weights: Path | None, num_classes: int, device: torch.device
) -> nn.Module:
    """``spec`` (``package.module:callable`` or ``path/to/file.py:callable``) called, with ``num_classes`` when it
    takes that argument, under a fixed seed; then ``weights`` (a state dict) loaded strictly."""
    factory = import_factory(spec)
    arguments = {"num_classes": num_classes} if _takes(factory, "num_classes") else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        try:
            model = factory(**arguments)
        except Exception as exc:  # noqa: BLE001 - the user's code: its failure is named, not a traceback of ours
            raise ConfigError(f"model: {spec} raised {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: {spec} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = read_state_dict(weights)
        mismatch = state_dict_mismatch(model, state)
        if mismatch:
            raise CheckpointError(f"{weights}: the weights do not fit {spec}: {mismatch}")
        model.load_state_dict(state)
    return model.to(device).eval()


def import_factory(spec: str) -> Any:
    """The callable ``spec`` names: ``package.module:attribute`` imported as installed, or
    ``path/to/file.py:attribute`` read from that file."""
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute.isidentifier():
        raise ConfigError(f"model: {spec!r}: expected package.module:callable or path/to/file.py:callable")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise ConfigError(f"model: {file}: no such file")
            loader = importlib.util.spec_from_file_location(f"lipcli_user_model_{file.stem}", file)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            sys.modules[loader.name] = module  # dataclasses and pickling look their module up by name
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - an import error of the user's code is a one-line error here
        raise ConfigError(f"model: cannot import {module_name} ({type(exc).__name__}: {_first_line(exc)})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"model: {module_name} has no callable {attribute!r}")
    return factory


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: a ``safetensors`` file, or a ``torch.save`` file loaded with
    ``weights_only=True`` (a dict of tensors, or one under ``state_dict`` or ``model``); a ``module.`` prefix
    on every key (DistributedDataParallel's) is dropped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{path}: reading safetensors needs the safetensors package "
                                  "(pip install safetensors)") from None
        try:
            state: Any = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a damaged file
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise CheckpointError(f"{path}: refused: it holds pickled objects beyond tensors and plain containers, "
                                  "which lipcli never unpickles") from None
        except Exception as exc:  # noqa: BLE001 - not a torch.save file
            raise CheckpointError(f"{path}: not a readable weights file ({type(exc).__name__}: "
                                  f"{_first_line(exc)})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping) and not _tensors(state):
            state = state[key]
    if not isinstance(state, Mapping) or not _tensors(state):
        raise CheckpointError(f"{path}: holds no state dict (a mapping of parameter names to tensors)")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)


def checked_output(model: nn.Module, images: torch.Tensor, num_classes: int, name: str) -> None:
    """Refuse, before any attack, a model that cannot take the data set's images or gives other than one
    score per class."""
    shape = list(images.shape[1:])
    try:
        with torch.no_grad():
            output = model(images)
    except Exception as exc:  # noqa: BLE001 - a shape mismatch shows as any error inside the user's model
        raise DataError(f"{name}: the model cannot take the data set's images of shape {shape} "
                        f"({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[1] != num_classes:
        found = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise DataError(f"{name}: the model gives {found} for {images.shape[0]} images of shape {shape}; the data "
                        f"set has {num_classes} classes, so [{images.shape[0]}, {num_classes}] is needed")


def _takes(factory: Any, name: str) -> bool:
    with contextlib.suppress(TypeError, ValueError):
        parameters = inspect.signature(factory).parameters
        return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    return False


def _tensors(state: Mapping[Any, Any]) -> bool:
    return bool(state) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def split_floats(text: str, name: str) -> tuple[float, ...]:
    """``0.485,0.456,0.406`` as floats; errors name ``name``."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{name}: expected numbers separated by commas, got {text!r}") from None

