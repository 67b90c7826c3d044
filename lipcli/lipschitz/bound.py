"""The data-independent upper bound of the paper's Eq. (6): a product of per-layer operator norms.

For a network built from linear layers and 1-Lipschitz activations, ``||z(x) - z(x')|| <= U ||x - x'||`` in
the same p-norm on both sides, with ``U`` the product of the layers' operator norms (and ``1 + U_branch``
for a residual block ``x + branch(x)``). lipcli computes it for p = 2, l-inf and 1, so that every column of
the paper's Tables 1, 4 and 6 has a bound beside its measured maximum (see :mod:`lipcli.lipschitz.statistics`).
Unlike most implementations (the paper notes only one accounts for it), BatchNorm's scaling is included: an
eval-mode BatchNorm is the diagonal map ``x / sqrt(var + eps)`` (times its weight), folded into the
preceding convolution where the architecture says so (``ConvBN``), else bounded by its largest entry.
Layer norms are taken at the input shape each layer really sees (a probe forward pass records it): exact in
l1 and l-inf, a rigorous upper bound in l2 (:mod:`lipcli.lipschitz.operator_norms`), so ``U`` is a bound.

How a module is bounded, in order:

1. a module with a ``lipschitz_bound(bounds)`` method returns its own bound, composing its parts with the
   :class:`LayerBounds` it is given (``bounds(sub_module)``, ``bounds.linear_map(conv, scale)``,
   ``bounds.batchnorm_scale(bn)``, ``bounds.average(count)``, ``bounds.input_shape(module)``): this is how
   architectures with residual or branching structure (lipcli's own, and third-party ones) say how their
   parts combine;
2. ``nn.Sequential``: the product over its children (nested ones flattened), a BatchNorm that directly
   follows a convolution or linear layer folded into it;
3. the built-in rules below for PyTorch's layers and lipcli's tanh head;
4. anything else: :class:`BoundUnavailable`, naming the module, never a guess.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn

from lipcli.lipschitz.operator_norms import OPERATOR_NORMS, BoundUnavailable, operator_norm
from lipcli.models.heads import TanhHead


ONE_LIPSCHITZ = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.Identity, nn.Flatten, nn.Dropout, nn.Dropout2d)
"""Element-wise maps with slope at most 1 and shape changes: factor 1 in every p-norm."""


class LayerBounds:
    """Operator-norm bounds of a model's modules in one norm (``l2``, ``linf`` or ``l1``, from p to p)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], norm: str) -> None:
        if norm not in OPERATOR_NORMS:
            raise ValueError(f"unknown operator norm {norm!r}; use one of {', '.join(OPERATOR_NORMS)}")
        compiled = next((m for m in model.modules() if isinstance(m, (torch.jit.ScriptModule, torch.fx.GraphModule))),
                        None)
        if compiled is not None:
            kind = "TorchScript" if isinstance(compiled, torch.jit.ScriptModule) else "an exported or traced graph"
            raise BoundUnavailable(f"no Lipschitz rule for a compiled model ({kind}): lipcli bounds nn.Module "
                                   "layers, and it has none")
        self.norm = norm
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self._shapes = record_input_shapes(model, input_shape, self.device)
        self._cache: dict[int, float] = {}

    def __call__(self, module: nn.Module) -> float:
        """The bound of ``module`` (cached: a module shared by several paths is computed once)."""
        key = id(module)
        if key not in self._cache:
            self._cache[key] = float(self._bound(module))
        return self._cache[key]

    def _bound(self, module: nn.Module) -> float:
        own = getattr(module, "lipschitz_bound", None)
        if callable(own):
            return own(self)
        if _is_chain(module):
            return self._chain(module)
        for kinds, rule in _RULES:
            if _plain(module, kinds):
                return rule(self, module)
        raise BoundUnavailable(
            f"no Lipschitz rule for module {type(module).__name__} ({type(module).__module__}); give it a "
            f"lipschitz_bound(bounds) method (see lipcli.lipschitz.bound)"
        )

    def _chain(self, sequence: nn.Sequential) -> float:
        """The product over the layers of a (possibly nested) Sequential, a BatchNorm that directly follows a
        convolution or linear layer folded into its rows: ``||diag(s) W||``, not ``||W|| max|s|``."""
        layers = list(_flatten(sequence))
        total, index = 1.0, 0
        while index < len(layers):
            layer = layers[index]
            following = layers[index + 1] if index + 1 < len(layers) else None
            if _plain(layer, _FOLDABLE) and _plain(following, BATCHNORMS):
                total *= self.linear_map(layer, self.batchnorm_scale(following))
                index += 2
            else:
                total *= self(layer)
                index += 1
        return total

    def input_shape(self, module: nn.Module) -> tuple[int, ...]:
        """The shape (without batch) of ``module``'s input in the probe forward pass."""
        shapes = self._shapes.get(id(module), set())
        if len(shapes) != 1:
            raise BoundUnavailable(
                f"{type(module).__name__} is " + ("not called in the model's forward pass" if not shapes else
                                                  f"called at several input shapes {sorted(shapes)}")
            )
        return next(iter(shapes))

    def linear_map(self, module: nn.Module, scale: torch.Tensor | None = None) -> float:
        """The operator norm of a convolution, linear layer or average pooling (bias dropped), its outputs
        scaled per channel by ``scale`` (e.g. :meth:`batchnorm_scale` of the BatchNorm that follows)."""
        return operator_norm(module, self.input_shape(module), self.norm, scale=scale, device=self.device)

    @staticmethod
    def batchnorm_scale(norm: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
        """Per channel, the factor an eval-mode BatchNorm multiplies by: ``weight / sqrt(running_var + eps)``."""
        if norm.running_var is None:
            raise BoundUnavailable(f"{type(norm).__name__} without running statistics is not a fixed map in eval mode")
        scale = 1.0 / torch.sqrt(norm.running_var.detach().double() + norm.eps)
        return scale * norm.weight.detach().double() if norm.weight is not None else scale

    def average(self, count: int) -> float:
        """The norm of averaging ``count`` equally shaped blocks (global pooling over ``count`` positions, a
        mean over ``count`` branches): ``1/sqrt(count)`` in l2, 1 in l-inf, ``1/count`` in l1."""
        return {"l2": count ** -0.5, "linf": 1.0, "l1": 1.0 / count}[self.norm]


_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)
"""Eval-mode BatchNorms: the diagonal map ``weight * (x - mean) / sqrt(running_var + eps) + bias``."""


def _plain(module: nn.Module | None, kinds: tuple[type, ...]) -> bool:
    """An instance of one of ``kinds`` that computes what that class computes: a subclass with its own
    ``forward`` (weight standardisation, say) is not bounded from its raw weights."""
    return any(isinstance(module, kind) and type(module).forward is kind.forward for kind in kinds)


def _is_chain(module: nn.Module) -> bool:
    """A Sequential (or a subclass that keeps Sequential's forward) without a bound of its own."""
    return _plain(module, (nn.Sequential,)) and not callable(getattr(module, "lipschitz_bound", None))


def _flatten(sequence: nn.Sequential) -> Iterator[nn.Module]:
    """The layers of nested Sequentials in order (a Sequential is only composition), except those that bound
    themselves."""
    for layer in sequence:
        if _is_chain(layer):
            yield from _flatten(layer)
        else:
            yield layer


def _batchnorm(bounds: LayerBounds, module: nn.modules.batchnorm._BatchNorm) -> float:
    return float(bounds.batchnorm_scale(module).abs().max())


def _tanh_head(bounds: LayerBounds, module: TanhHead) -> float:
    """BatchNorm over the logits, then ``|t| tanh(z / |t|)``, whose slope is at most 1."""
    return _batchnorm(bounds, module.norm)


def _leaky(bounds: LayerBounds, module: nn.LeakyReLU) -> float:
    return max(1.0, abs(module.negative_slope))


_RULES: list[tuple[tuple[type, ...], Callable[[LayerBounds, nn.Module], float]]] = [
    ((*_FOLDABLE, nn.AvgPool2d, nn.AdaptiveAvgPool2d), lambda b, m: b.linear_map(m)),
    (BATCHNORMS, _batchnorm),
    ((TanhHead,), _tanh_head),
    (ONE_LIPSCHITZ, lambda b, m: 1.0),
    ((nn.LeakyReLU,), _leaky),
    ((nn.Sigmoid,), lambda b, m: 0.25),
]


def record_input_shapes(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device
) -> dict[int, set[tuple[int, ...]]]:
    """``id(module) -> the input shapes it was called at``, from one eval-mode forward pass on a zero image."""
    shapes: dict[int, set[tuple[int, ...]]] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor):
            shapes.setdefault(id(module), set()).add(tuple(inputs[0].shape[1:]))

    handles = [m.register_forward_pre_hook(record) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            dtype = next((p.dtype for p in model.parameters()), torch.float32)
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


def product_bound(model: nn.Module, input_shape: tuple[int, ...], norm: str) -> float:
    """``U`` with ``||z(x) - z(x')||_p <= U ||x - x'||_p`` for the model's outputs z, p = ``norm``."""
    return LayerBounds(model, input_shape, norm)(model)
