"""The experiment schema: one dataclass per TOML section, with the built-in defaults.

Every field is a plain TOML type, so a resolved configuration round-trips through the ``config.toml``
written into each run folder. Free-form ``options`` tables are passed to the chosen plugin's factory,
which owns their validation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DataConfig:
    """Which data set, where its files are, and the training augmentation (paper, Appendix A)."""

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    crop_padding: int = 0
    """Random crop of the zero-padded image, this many pixels per side (CIFAR recipe: 4)."""
    flip: bool = False
    """Random horizontal flip."""
    cutout: int = 0
    """Side of the square cutout in pixels (CIFAR-10: 16, CIFAR-100: 8); 0 disables it."""
    train_limit: int | None = None
    """Train on the first N training images only (smoke runs)."""


@dataclass
class ModelConfig:
    """Architecture and its options."""

    arch: str = "small-cnn"
    tanh_head: bool = False
    """BatchNorm without affine parameters over the logits, then |t| tanh(z / |t|) (Appendix A.1)."""
    batchnorm_affine: bool = False
    """The original code's BatchNorm layers have no learnable scale and shift."""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DefenceConfig:
    """The training defence; ``j0`` is plain training."""

    name: str = "j0"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingConfig:
    """Optimiser, schedule and run control."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    """Coefficient of the explicit penalty weight_decay * sum ||W||^2 over weights (not biases or norms)."""
    lr_milestones: list[int] = field(default_factory=list)
    """Epochs after which the learning rate is multiplied by lr_gamma."""
    lr_gamma: float = 0.2
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    max_steps: int | None = None
    """Stop after this many optimiser steps in total (smoke runs)."""


@dataclass
class EvaluationConfig:
    """Test-set evaluation done during and after training."""

    batch_size: int = 512
    limit: int | None = None
    """Evaluate on the first N test images only."""


@dataclass
class OutputConfig:
    """Where runs are written."""

    dir: str | None = None
    """The run folder; by default a new folder under ``root`` named from the settings and the time."""
    root: str = "runs"


@dataclass
class ExperimentConfig:
    """A whole experiment, as resolved from defaults, a TOML file, flags and ``--set`` overrides."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
