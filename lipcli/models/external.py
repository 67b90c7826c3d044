"""Models lipcli did not train: an exported program, a TorchScript file, or a factory with a state dict.

Weights load with ``torch.load(weights_only=True)`` (or from a ``safetensors`` file), never unpickling an
object; an exported program's archive is checked before torch reads it (:mod:`lipcli.models.exported`).
But all three are programs: a factory is Python code, a TorchScript file runs TorchScript code when loaded
and run (which can write files), an exported program runs the operations of its graph. Evaluate models from
sources you trust.

Preprocessing belongs to the model: :class:`Normalized` puts a per-channel normalisation in front, so attacks
and distances stay in [0, 1] pixel space.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from torch.export.passes import move_to_device_pass

from lipcli.checkpoint import describe_file
from lipcli.errors import CheckpointError, ConfigError, DataError
from lipcli.models.exported import ExportedModel, check_archive
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
    if kind == EXPORTED:
        check_archive(path)
    try:
        if kind == EXPORTED:
            program = torch.export.load(path)
            if device.type != "cpu":  # constants and device arguments baked into the graph move too
                program = move_to_device_pass(program, device)
            model: nn.Module = ExportedModel(program)
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
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):  # every generator it seeds comes back
        torch.manual_seed(INIT_SEED)
        try:
            model = factory(**arguments)
        except Exception as exc:  # noqa: BLE001 - the user's code: its failure is named, not a traceback of ours
            raise ConfigError(f"model: {spec} raised {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: {spec} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = read_state_dict(weights)
        unwrapped = {key.removeprefix("module."): value for key, value in state.items()}
        if state_dict_mismatch(model, state) and all(key.startswith("module.") for key in state) \
                and not state_dict_mismatch(model, unwrapped):
            state = unwrapped  # saved from DistributedDataParallel, whose keys start with module.
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
            sys.path.insert(0, str(file.resolve().parent))  # its own imports of modules beside it
            try:
                loader.loader.exec_module(module)
            finally:
                sys.path.remove(str(file.resolve().parent))
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
    ``weights_only=True`` (a dict of tensors, or one under ``state_dict`` or ``model``)."""
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
    return dict(state)


def module_digest(model: nn.Module, *context: str) -> str:
    """SHA-256 of what a built model is: its structure (``repr``), every parameter and buffer, and ``context``
    (how it was made), so that two different models never share results."""
    digest = hashlib.sha256()
    for text in (*context, repr(model)):
        digest.update(text.encode() + b"\0")
    for key, tensor in model.state_dict().items():
        digest.update(f"{key} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checked_output(model: nn.Module, images: torch.Tensor, num_classes: int, name: str) -> None:
    """Refuse, before any attack, a model that fails on the data set's images, gives other than one score per
    class, or is not a fixed function of each image: random (dropout left on) or depending on the rest of its
    batch (BatchNorm in training mode), which would make attacks weaker and the model look robust."""
    shape = list(images.shape[1:])
    try:
        with torch.no_grad():
            output = model(images)
            again = model(images)
            alone = torch.cat([model(image[None]) for image in images])
    except Exception as exc:  # noqa: BLE001 - a shape mismatch shows as any error inside the user's model
        raise DataError(f"{name}: the model fails on the data set's images of shape {shape} "
                        f"({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[1] != num_classes:
        found = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise DataError(f"{name}: the model gives {found} for {images.shape[0]} images of shape {shape}; the data "
                        f"set has {num_classes} classes, so [{images.shape[0]}, {num_classes}] is needed")
    if not torch.allclose(output, again, rtol=1e-5, atol=1e-6):
        raise DataError(f"{name}: the model gives other scores each time for the same images (dropout left on?); "
                        "export or trace it after model.eval()")
    if not torch.allclose(output, alone, rtol=1e-3, atol=1e-4):
        raise DataError(f"{name}: an image's scores depend on the other images of its batch (BatchNorm in "
                        "training mode?); export or trace it after model.eval()")


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

