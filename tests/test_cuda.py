"""What only a CUDA device can show: the WCAT methods' gradients there, TF32 kept out of fd's difference
quotient, AMP training, evaluation agreeing with the CPU. Marked ``cuda``: skipped without a device;
``benchmarks/gpu-check.sh`` runs them on a GPU machine."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from test_wcat import (
    _batch,
    _batch_statistics_reference,
    _bn_model,
    _cosine,
    _data_gradient,
    _library,
)
from torch import nn

from lipcli.device import select_device
from lipcli.plugin_host import PluginHost
from lipcli.precision import full_float32
from lipcli.training.trainer import train
from lipcli.engine import Engine

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def test_auto_picks_the_gpu() -> None:
    assert select_device("auto").type == "cuda"


@pytest.mark.parametrize("method", ["worst", "fd"])
def test_worst_and_fd_follow_the_batch_statistics_reference_on_the_gpu(host: PluginHost, method: str) -> None:
    """The CPU test's float64 comparison, on the device (cuDNN kernels, device-side argmax and gather)."""
    for seed in range(2):
        model = _bn_model(seed, tanh=True).to(CUDA)
        x, y = (t.to(CUDA) for t in _batch(seed))
        penalty, reference = _batch_statistics_reference(model, x, y, "l2")
        got_penalty, total = _library(host, model, x, y, method=method, fd_step=1e-6)
        gradient = total - _data_gradient(model, x, y)
        if method == "worst":
            torch.testing.assert_close(got_penalty, penalty, rtol=1e-9, atol=0)
        assert 1 - _cosine(gradient, reference) < 1e-8, seed
        assert abs(float(gradient.norm() / reference.norm()) - 1) < 1e-4, seed


def test_fd_keeps_tf32_out_of_its_difference_quotient(host: PluginHost) -> None:
    """With TF32 allowed for the training's convolutions and matrix products (cuDNN's default), fd's two
    single-example passes still run in full float32: TF32's 1e-3 rounding over h = 1e-2 would leave a 10 %
    error in the penalty and its gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Softplus(), nn.Flatten(), nn.Linear(512, 32),
        nn.BatchNorm1d(32), nn.Softplus(), nn.Linear(32, 4),
    ).double().to(CUDA)
    x, y = (t.to(CUDA) for t in _batch(0, size=64))
    penalty, reference = _batch_statistics_reference(model, x, y, "l2")
    backends = [torch.backends.cudnn.conv, torch.backends.cuda.matmul]
    previous = [b.fp32_precision for b in backends]
    try:
        for backend in backends:
            backend.fp32_precision = "tf32"
        got_penalty, total = _library(host, copy.deepcopy(model).float(), x.float(), y, method="fd")
    finally:
        for backend, value in zip(backends, previous):
            backend.fp32_precision = value
    gradient = total.double() - _data_gradient(model, x, y)
    assert abs(float(got_penalty) / float(penalty) - 1) < 2e-2
    assert 1 - _cosine(gradient, reference) < 1e-4


def test_full_float32_makes_gpu_convolutions_ieee() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 32, 16, 16, generator=generator)
    weight = torch.randn(64, 32, 3, 3, generator=generator)
    exact = nn.functional.conv2d(images.double(), weight.double())
    with full_float32():
        full = nn.functional.conv2d(images.to(CUDA), weight.to(CUDA)).cpu().double()
    torch.testing.assert_close(full, exact, rtol=1e-4, atol=1e-4)  # TF32 would be ~1e-2 off here


@pytest.mark.parametrize("method", ["exact", "worst", "fd"])
def test_j2_lip_trains_on_the_gpu_with_amp(
    engine: Engine, tiny_config: Callable[..., Any], tmp_path: Path, method: str
) -> None:
    config = tiny_config(
        tmp_path, "data.dataset=digits", "defence.name=j2-lip", "training.epochs=4", "training.device=cuda",
        "training.amp=true", "training.batch_size=64", f"defence.options.wcat.method={method!r}",
        "model.options={width=16}",
    )
    config.data.options = {}
    rows = train(config, engine).history
    assert all(row["penalty"] > 0 and row["grad_norm_max"] > 0 for row in rows)
    assert rows[-1]["test_error"] < 0.1, rows[-1]


def test_curve_on_the_gpu_matches_the_cpu(checkpoint: Path, run: Callable[..., Any], tmp_path: Path) -> None:
    """The same attack on the same images: distances agree to float32 rounding where both succeed."""
    for device in ("cpu", "cuda"):
        result = run("curve", checkpoint, "--limit", "200", "--device", device, "-q", "--out", tmp_path / device)
        assert result.exit_code == 0, result.output
    cpu, gpu = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("cpu", "cuda"))
    assert abs(cpu["clean_error"] - gpu["clean_error"]) <= 1 / 200  # one image on the boundary may flip
    assert gpu["median_distance"] == pytest.approx(cpu["median_distance"], rel=1e-2)


def test_a_streamed_folder_reaches_the_gpu_through_pinned_memory_unchanged(tmp_path: Path) -> None:
    """The DataLoader path with ``pin_memory``: the batches on the device are those read on the CPU."""
    from test_own_data import write_images

    from lipcli.data.batches import iterate_batches
    from lipcli_builtins.datasets import sources

    write_images(tmp_path, {"train": {"a": 5, "b": 4}, "test": {"a": 3, "b": 3}}, size=(9, 7))
    streamed = sources.image_folder(data_dir=str(tmp_path), stream=True, workers=2)
    held = sources.image_folder(data_dir=str(tmp_path))
    for (a, y), (b, z) in zip(iterate_batches(streamed.train, 4, CUDA), iterate_batches(held.train, 4, CUDA),
                              strict=True):
        assert a.device.type == "cuda" and torch.equal(a, b) and torch.equal(y, z)
    assert all(images.is_pinned() for images in streamed.train.images.stream(torch.arange(9).split(4), pin=True))
