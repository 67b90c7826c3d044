"""Structural tests of the first-party architectures (the contract every architecture keeps, whoever
registers it, is in tests/test_contracts.py)."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch
from lipcli_builtins.architectures.layers import ConvBN
from lipcli_builtins.architectures.resnet import BasicBlock, BranchBlock
from torch import nn

from lipcli.data import DatasetInfo
from lipcli.plugin_host import PluginHost
from lipcli.registry import Registry

FIRST_PARTY = ["allcnn", "resnet34", "resnext34", "small-cnn", "mlp"]

SHAPES = {
    "digits-1x8x8": DatasetInfo("digits", 1, 8, 8, 10),
    "cifar-3x32x32": DatasetInfo("cifar", 3, 32, 32, 10),
    "mnist-1x28x28-7cls": DatasetInfo("mnist7", 1, 28, 28, 7),
}
CIFAR10 = SHAPES["cifar-3x32x32"]


@functools.cache
def _registry() -> Registry:
    # environ={}: the user's LIPCLI_PLUGINS / LIPCLI_BLOCK_PLUGINS must not change what is tested.
    return PluginHost(environ={}).registry("architecture")


@pytest.fixture(scope="module")
def architectures() -> Registry:
    return _registry()


ARCHITECTURES = _registry().names()  # parametrisation needs the names at collection time


def build(registry: Registry, name: str, info: DatasetInfo, seed: int = 0, **options: object) -> nn.Module:
    torch.manual_seed(seed)
    return registry.get(name).factory(info, **options)


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# -- discovery ------------------------------------------------------------------------------------------------


def test_first_party_architectures_are_registered(architectures: Registry) -> None:
    assert set(FIRST_PARTY) <= set(architectures.names())
    for name in FIRST_PARTY:
        assert architectures.get(name).plugin == "lipcli-architectures"
        assert architectures.get(name).description


def test_plugin_module_import_does_not_load_torch() -> None:
    code = "import sys, lipcli_builtins.architectures; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the contract every registered architecture keeps is checked in tests/test_contracts.py -------------------


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_unknown_option_is_a_type_error(architectures: Registry, name: str) -> None:
    with pytest.raises(TypeError):
        architectures.get(name).factory(CIFAR10, no_such_option=1)


# -- structure of the first-party architectures -----------------------------------------------------------------


@pytest.mark.parametrize("name", FIRST_PARTY)
@pytest.mark.parametrize("affine", [False, True])
def test_batchnorm_affine_switch(architectures: Registry, name: str, affine: bool) -> None:
    model = build(architectures, name, SHAPES["digits-1x8x8"], batchnorm_affine=affine)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert norms
    for norm in norms:
        assert norm.track_running_stats
        assert (norm.weight is not None) is affine and (norm.bias is not None) is affine
        assert len(list(norm.parameters())) == (2 if affine else 0)


def test_convbn_moves_the_bias_after_a_non_affine_batchnorm() -> None:
    plain = ConvBN(3, 8, batchnorm_affine=False)
    assert plain.conv.bias is None and not plain.bn.affine
    assert isinstance(plain.bias, nn.Parameter) and plain.bias.shape == (8,)
    affine = ConvBN(3, 8, batchnorm_affine=True)
    assert affine.conv.bias is None and affine.bn.affine and affine.bias is None
    # The bias is applied after the normalisation (so it is not cancelled by it).
    with torch.no_grad():
        plain.bias.fill_(2.0)
    no_relu = ConvBN(3, 8, relu=False)
    no_relu.load_state_dict(plain.state_dict())
    out = no_relu.train()(torch.rand(4, 3, 5, 5))
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.full((8,), 2.0), rtol=0, atol=1e-4)


def test_allcnn_layers() -> None:
    model = build(_registry(), "allcnn", CIFAR10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 96, 96, 192, 192, 192, 192, 192, 10]
    assert [c.kernel_size[0] for c in convs] == [3] * 7 + [1, 1]
    assert [c.stride[0] for c in convs] == [1, 1, 2, 1, 1, 2, 1, 1, 1]
    blocks = [m for m in model.modules() if isinstance(m, ConvBN)]
    assert [b.relu for b in blocks] == [True] * 8 + [False]
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    narrow = build(_registry(), "allcnn", CIFAR10, width=8)
    assert [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)][:4] == [8, 8, 8, 16]


@pytest.mark.parametrize("name", ["resnet34", "resnext34"])
def test_resnets_have_34_weighted_layers(name: str) -> None:
    model = build(_registry(), name, CIFAR10)
    layers = weighted_layers(model)
    assert len(layers) == 34  # stem + 15 blocks x 2 convs + 2 transitions + linear
    assert sum(isinstance(m, nn.Linear) for m in layers) == 1
    transitions = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(transitions) == 2
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 2
    shallow = build(_registry(), name, CIFAR10, blocks_per_stage=1)
    assert len(weighted_layers(shallow)) == 6 * 1 + 4


def test_resnet34_widths() -> None:
    model = build(_registry(), "resnet34", CIFAR10)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 15
    assert [b.conv1.conv.in_channels for b in blocks[::5]] == [16, 32, 64]
    assert model.classifier.in_features == 64 and model.classifier.out_features == 10
    assert build(_registry(), "resnet34", CIFAR10, width=8).classifier.in_features == 32


@pytest.mark.parametrize("cardinality", [2, 4])
def test_resnext34_grouped_branches(cardinality: int) -> None:
    options = {} if cardinality == 2 else {"cardinality": cardinality}  # 2 is the default (2x32d)
    model = build(_registry(), "resnext34", CIFAR10, **options)
    blocks = [m for m in model.modules() if isinstance(m, BranchBlock)]
    assert len(blocks) == 15
    first = blocks[0]
    assert first.conv1.conv.groups == 1
    assert (first.conv1.conv.in_channels, first.conv1.conv.out_channels) == (32, 32 * cardinality)
    assert first.conv2.conv.groups == cardinality
    assert first.conv2.conv.in_channels == first.conv2.conv.out_channels == 32 * cardinality
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(grouped) == 15 and all(m.groups == cardinality for m in grouped)
    assert model.classifier.in_features == 128


def test_branch_block_averages_its_branches() -> None:
    """With the second convolution made the identity, the block must return relu(x + mean of the branches)."""
    torch.manual_seed(0)
    block = BranchBlock(3, 2).eval()
    with torch.no_grad():
        weight = torch.zeros_like(block.conv2.conv.weight)
        weight[:, :, 1, 1] = torch.eye(3).repeat(2, 1)  # each group passes its own channels through
        block.conv2.conv.weight.copy_(weight)
        x = torch.rand(2, 3, 6, 6)
        hidden = block.conv1(x)  # eval BN with initial statistics is the identity (up to eps)
        expected = torch.relu(x + (hidden[:, :3] + hidden[:, 3:]) / 2)
        torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-4)


def test_small_models_options() -> None:
    cnn = build(_registry(), "small-cnn", CIFAR10, width=4)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv2d)] == [4, 8, 8]
    mlp = build(_registry(), "mlp", SHAPES["mnist-1x28x28-7cls"], hidden=16, depth=3)
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 16), (16, 16), (16, 16), (16, 7)]


@pytest.mark.parametrize(("name", "option"), [("allcnn", "width"), ("resnext34", "cardinality"), ("mlp", "depth")])
def test_non_positive_sizes_are_rejected(name: str, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        _registry().get(name).factory(CIFAR10, **{option: 0})
