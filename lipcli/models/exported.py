"""Exported programs (``torch.export.save``, ``.pt2``) as classifiers lipcli can attack.

``torch.export.load`` unpickles some archive members (weights or constants marked ``use_pickle``, opaque and
custom objects, sample inputs it cannot read with ``weights_only=True``), loads compiled code (AOTInductor,
ExecuTorch) and hands symbolic expressions to ``sympy.sympify``. :func:`check_archive` refuses an archive
holding any of these before torch reads it, and the module is built without the guard function torch compiles
from the archive's ``guards_code``. An exported program is still a program: it runs the operations its graph
names, so evaluate programs from sources you trust.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lipcli.errors import CheckpointError

_PLAIN_MEMBER = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/.*|models/[^/]+\.json|extra/[^/]+"
    r"|data/(weights|constants)/[^/]+_config\.json|data/weights/weight_\d+|data/constants/tensor_\d+"
    r"|data/sample_inputs/[^/]+\.pt)"
)
"""Archive members (below the archive's root folder) of a plain exported program: anything else is refused."""
_TOKEN = re.compile(r"\s+|'[A-Za-z][A-Za-z0-9_]*'|[A-Za-z_][A-Za-z0-9_]*|\d+(\.\d+)?|[-+*/%(),=<>!]")
_FLAGS = {"positive", "negative", "nonnegative", "nonzero", "integer", "real", "finite", "even", "odd", "oo"}


def check_archive(path: Path) -> None:
    """Refuse an exported program whose loading would unpickle, load compiled code, or evaluate an expression
    beyond sympy's plain arithmetic (:class:`CheckpointError` naming the member)."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            member = name.split("/", 1)[1] if "/" in name else name
            if not _PLAIN_MEMBER.fullmatch(member):
                raise _refused(path, name, "not a member of a plain exported program (compiled code or objects)")
            if member.endswith("_config.json"):
                _check_payloads(path, name, json.loads(archive.read(name)))
            elif member.startswith("data/sample_inputs/"):
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception:  # noqa: BLE001 - torch would unpickle it in full: never
                    raise _refused(path, name, "holds pickled objects beyond tensors") from None
            elif member.startswith("models/"):
                for text in _expressions(json.loads(archive.read(name))):
                    if not _plain_expression(text):
                        raise _refused(path, name, f"a symbolic expression beyond arithmetic: {text[:60]!r}")


def _check_payloads(path: Path, name: str, config: Any) -> None:
    for key, entry in (config.get("config") or {}).items() if isinstance(config, dict) else ():
        pickled = isinstance(entry, dict) and entry.get("use_pickle")
        stored = str(entry.get("path_name", "")) if isinstance(entry, dict) else ""
        if pickled or not re.fullmatch(r"(weight|tensor)_\d+", stored):
            raise _refused(path, name, f"{key!r} is stored as a pickled object")


def _expressions(tree: Any) -> list[str]:
    """Every ``expr_str`` in a serialised program (what torch gives ``sympy.sympify``)."""
    found: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found += [v for k, v in node.items() if k == "expr_str" and isinstance(v, str)]
            stack += [v for k, v in node.items() if k != "expr_str"]
        elif isinstance(node, list):
            stack += node
    return found


def _plain_expression(text: str) -> bool:
    """Sympy constructors (capitalised names), quoted symbol names, numbers, arithmetic and a few assumption
    flags: no attribute access, no dunder, no lower-case call."""
    position = 0
    while position < len(text):
        token = _TOKEN.match(text, position)
        if token is None:
            return False
        word = token.group()
        if word[0].isalpha() and not (word[0].isupper() and "__" not in word) and word not in _FLAGS:
            return False
        if word.startswith("_"):
            return False
        position = token.end()
    return True


def _refused(path: Path, member: str, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: refused: {member}: {why}; lipcli never unpickles or runs such members")


class ExportedModel(nn.Module):
    """An exported program as a module. Its train/eval behaviour was fixed when it was exported (its module
    refuses ``.eval()``), so mode changes stop here. Batches are cut to the batch sizes the program was
    exported for: at most its largest, and padded to its smallest (a fixed size is both)."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.smallest, self.largest = batch_range(program)
        self.program = program.module(check_guards=False)  # no guard code compiled from the archive

    def train(self, mode: bool = True) -> ExportedModel:
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[0]
        if self.smallest <= size <= (self.largest or size):
            return self.program(images)
        outputs = []
        for chunk in images.split(self.largest or size):
            missing = max(self.smallest - chunk.shape[0], 0)
            padded = torch.cat([chunk, chunk.new_zeros((missing, *chunk.shape[1:]))]) if missing else chunk
            outputs.append(self.program(padded)[: chunk.shape[0]])
        return torch.cat(outputs)


def smallest_batch(model: nn.Module) -> int:
    """The smallest batch ``model`` computes without padding: an exported program with a fixed batch (or a lower
    bound on it) pads every smaller call up to that size, so splitting a batch below it multiplies the work; 1 for
    any other model."""
    return max((module.smallest for module in model.modules() if isinstance(module, ExportedModel)), default=1)


def batch_range(program: torch.export.ExportedProgram) -> tuple[int, int | None]:
    """(smallest, largest or None) batch size the program takes: its dynamic batch dimension's range, or its
    fixed batch size twice."""
    inputs = program.graph_signature.user_inputs
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in inputs]
    if len(placeholders) != 1:
        raise CheckpointError(f"the exported program takes {len(placeholders)} inputs; lipcli evaluates a "
                              "classifier of one batch of images")
    value = placeholders[0].meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        raise CheckpointError("the exported program's input is not a batch of images")
    first = value.shape[0]
    if isinstance(first, int):
        return first, first
    bounds = program.range_constraints.get(first.node.expr)
    low = int(bounds.lower) if bounds is not None and bounds.lower.is_Integer else 1
    high = int(bounds.upper) if bounds is not None and bounds.upper.is_Integer else None  # not int_oo
    return max(low, 1), high
