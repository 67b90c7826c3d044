"""The experiment schema: one dataclass per TOML section, with the built-in defaults.

Every field is a plain TOML type, so a resolved configuration round-trips through the ``config.toml``
written into each run folder. Free-form ``options`` tables are passed to the chosen plugin's factory,
which owns their validation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any


@dataclass(frozen=True)
class AtLeast:
    """A number's lower bound, ``Annotated[int, AtLeast(1)]``: checked with the value's type as each layer is read,
    so the error names where the value came from."""

    low: int


PositiveInt = Annotated[int, AtLeast(1)]
NonNegativeInt = Annotated[int, AtLeast(0)]
NonNegativeFloat = Annotated[float, AtLeast(0)]

LR_SCHEDULES = ("multistep", "cosine", "cyclic")
"""The values of ``training.lr_schedule`` (see :func:`lipcli.training.optim.learning_rate`)."""


@dataclass
class DataConfig:
    """Which data set, where its files are, and the training augmentation (paper, Appendix A)."""

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    crop_padding: NonNegativeInt = 0
    """Random crop of the zero-padded image, this many pixels per side (CIFAR recipe: 4)."""
    flip: bool = False
    """Random horizontal flip."""
    cutout: NonNegativeInt = 0
    """Side of the square cutout in pixels (CIFAR-10: 16, CIFAR-100: 8); 0 disables it."""
    train_limit: PositiveInt | None = None
    """Train on the first N training images only (smoke runs)."""
    validation: Annotated[int | float, AtLeast(0)] | None = None
    """Training images held out to choose ``best.pt`` on (never the test set): a count (a whole number >= 1)
    or a fraction (0 < v < 1) of the training set after ``train_limit``, stratified by class; 0 holds out
    none (no ``best.pt``). Unset: 10 % of the training set, at most 5,000 images."""
    validation_seed: NonNegativeInt = 0
    """Seed of the held-out draw, apart from ``training.seed``: runs differing only in seed share the images."""


TANH_HEAD = "tanh-head"
"""The defence primitive that adds the tanh logit head; ``model.tanh_head = true`` adds it too."""
TANH_PRESET = "tanh"
"""The preset made of :data:`TANH_HEAD` alone (``j2-lip+tanh``)."""


@dataclass
class ModelConfig:
    """Architecture and its options."""

    arch: str = "small-cnn"
    tanh_head: bool = False
    """BatchNorm without affine parameters over the logits, then |t| tanh(z / |t|) (Appendix A.1): a shorthand for
    adding the ``tanh-head`` defence primitive first, as ``defence.name = "...+tanh"`` does."""
    batchnorm_affine: bool = False
    """The original code's BatchNorm layers have no learnable scale and shift."""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DefenceConfig:
    """The training defence: a preset or primitive names joined by ``+`` (``j2-lip+tanh``), or a list.

    ``options`` overrides parameters of the primitives a name expands to, per primitive:
    ``[defence.options.wcat] lam = 0.05``. ``primitives`` spells the defence out instead, as a list of
    tables ``{name = "at-l2", eps = 0.01}``; set either ``name`` or ``primitives``. Neither means ``j0``.
    """

    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    primitives: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """A short name for run folders and tables."""
        if self.primitives:
            return "+".join(str(p.get("name", "?")) for p in self.primitives)
        return self.name or "j0"


@dataclass
class TrainingConfig:
    """Optimiser, schedule and run control."""

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    lr: float = 0.1
    momentum: NonNegativeFloat = 0.9
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 5e-4
    """Coefficient of the explicit penalty weight_decay * sum ||W||^2 over weights (not biases or norms)."""
    lr_schedule: str = "cosine"
    """``cosine`` (default), ``multistep`` (lr_milestones, lr_gamma) or ``cyclic`` (one-cycle), set before every
    step. Cosine by default: on Fashion-MNIST (small CNN, 2 epochs, J0) it reached 13.7 % test error where a
    constant rate stayed at 22.3 %; the paper's recipes state multistep."""
    lr_milestones: list[int] = field(default_factory=list)
    """Epochs after which the learning rate is multiplied by lr_gamma (``multistep``)."""
    lr_gamma: NonNegativeFloat = 0.2
    earlier_plans: list[list[int]] = field(default_factory=list)
    """Written by ``lipcli train --resume RUN --epochs N`` on a cosine or cyclic run: ``[[epochs, until], ...]``,
    the epochs the run was planned for before each extension and the epoch count at which it was extended.
    The steps of those first ``until`` epochs followed that plan's schedule, so the run is not taken for one
    planned with its final length from the start, and training from its config.toml repeats it exactly."""
    warmup_epochs: NonNegativeFloat = 0.0
    """Linear warm-up over this many epochs, multiplying any schedule's rate by min(1, (step + 1) / warm-up steps)."""
    seed: NonNegativeInt = 0
    device: str = "auto"
    deterministic: bool = False
    """Deterministic kernels; with the CPU this makes a resumed run end with bit-identical weights."""
    channels_last: bool = False
    """NHWC memory layout for models and batches (faster convolutions on recent GPUs)."""
    sync_batchnorm: bool = False
    """With several processes (torchrun), BatchNorm statistics over the global batch (SyncBatchNorm; CUDA only)."""
    amp: bool = False
    """bfloat16 autocast of forward passes on CUDA (gradient norms and penalties stay float32); off elsewhere."""
    max_steps: PositiveInt | None = None
    """Stop after this many optimiser steps in total (smoke runs)."""


@dataclass
class EvaluationConfig:
    """Test-set evaluation done during and after training."""

    batch_size: PositiveInt = 512
    limit: PositiveInt | None = None
    """Evaluate on the first N test images only."""


@dataclass
class OutputConfig:
    """Where runs are written."""

    dir: str | None = None
    """The run folder; by default a new folder under ``root`` named from the settings and the time."""
    root: str = "runs"


@dataclass
class ExperimentConfig:
    """A whole experiment, as resolved from defaults, a recipe, a TOML file, flags and ``--set`` overrides."""

    recipe: str | None = None
    """A named recipe (``lipcli config recipes``) applied on top of the defaults, below everything else."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def defence_label(self) -> str:
        """The defence as run folders and tables name it: ``model.tanh_head = true`` shows as ``+tanh`` (the
        preset that adds the same head), unless the defence's name already contains "tanh". That is the rule run
        folders have always been named by; a stricter one would rename existing grids' folders and retrain them."""
        label = self.defence.label
        if self.model.tanh_head and TANH_PRESET not in label:
            label += f"+{TANH_PRESET}"
        return label
