"""timm's models as the architecture ``timm`` (the ``timm`` extra): registered only where timm is installed, listed
without importing torch or timm, built for the data set's classes, channels and size, trainable from the command
line, refused in one line where they cannot be built."""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from test_torchvision_archs import listed_architectures
from torch import nn

from lipcli.components import call_factory, option_defaults
from lipcli.contracts import CHECKS, run_check
from lipcli.data.types import DatasetInfo
from lipcli.errors import ConfigError
from lipcli.plugin_host import PluginHost
from lipcli.references import Reference
from lipcli.registry import Component
from lipcli_builtins.architectures import timm_models

timm = pytest.importorskip("timm")

GREY = DatasetInfo("digits", 1, 8, 8, 10)
COLOUR = DatasetInfo("colour", 3, 16, 16, 7)


def build(host: PluginHost, info: DatasetInfo, options: dict[str, Any] | None = None,
          batchnorm_affine: bool = False) -> nn.Module:
    component = host.registry("architecture").get("timm")
    torch.manual_seed(0)
    return call_factory(component, options or {}, "model.options", info=info, batchnorm_affine=batchnorm_affine)


def refused(host: PluginHost, info: DatasetInfo, options: dict[str, Any]) -> str:
    """The message of the ConfigError building ``options`` raises: one line."""
    with pytest.raises(ConfigError) as caught:
        build(host, info, options)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# -- registration and listing ----------------------------------------------------------------------------------


def test_registered_only_where_timm_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "timm" in PluginHost(environ={}).registry("architecture")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "timm" else
                        find_spec(name, *args))
    registry = PluginHost(environ={}).registry("architecture")
    assert "timm" not in registry and "tv-resnet18" in registry


def test_listing_shows_it_and_imports_neither_torch_nor_timm() -> None:
    listed = listed_architectures(("torch", "timm", "torchvision"))["timm"]
    assert listed["options"] == {"name": timm_models.DEFAULT}
    assert listed["plugin"] == "lipcli-architectures"
    assert "model.options.name" in listed["description"]


def test_options_are_read_from_source(host: PluginHost) -> None:
    component = host.registry("architecture").get("timm")
    assert isinstance(component.factory, Reference)
    assert option_defaults(component) == {"name": timm_models.DEFAULT}
    assert timm.is_model(timm_models.DEFAULT)  # the extra's lowest timm has it too (timm>=1.0.10)


# -- building --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("info", [GREY, COLOUR, DatasetInfo("four", 4, 28, 20, 3)], ids=lambda i: i.name)
def test_classes_and_channels_come_from_the_data_set(host: PluginHost, info: DatasetInfo) -> None:
    model = build(host, info)
    assert type(model) is timm.models.ResNet  # timm's own module: its state dict loads into timm.create_model
    assert model.get_classifier().out_features == info.num_classes
    assert model.conv1[0].in_channels == info.channels
    assert model(torch.rand(2, *info.input_shape)).shape == (2, info.num_classes)
    plain = timm.create_model(timm_models.DEFAULT, num_classes=info.num_classes, in_chans=info.channels)
    plain.load_state_dict(model.state_dict())


def test_the_size_check_leaves_the_model_as_built(host: PluginHost) -> None:
    """The forward pass that checks the images runs in eval mode: no BatchNorm statistics move."""
    model = build(host, COLOUR)
    assert model.training
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(int(m.num_batches_tracked) == 0 and bool((m.running_var == 1).all()) for m in norms)


@pytest.mark.parametrize("info", [DatasetInfo("cifar-like", 3, 32, 32, 10), DatasetInfo("wide", 1, 16, 32, 2)],
                         ids=lambda i: i.name)
def test_a_fixed_size_model_is_built_for_the_data_sets_size(host: PluginHost, info: DatasetInfo) -> None:
    model = build(host, info, {"name": "test_vit3"})
    assert model.patch_embed.img_size == (info.height, info.width)
    assert model(torch.rand(2, *info.input_shape)).shape == (2, info.num_classes)
    plain = timm.create_model("test_vit3", num_classes=info.num_classes, in_chans=info.channels)
    with pytest.raises(AssertionError, match="doesn't match model"):  # its own size, 160x160, without lipcli's
        plain(torch.rand(2, *info.input_shape))


@pytest.mark.parametrize(("name", "info"), [("test_vit3", GREY), ("test_convnext", COLOUR)])
def test_a_model_that_cannot_take_the_images_is_a_one_line_error(host: PluginHost, name: str,
                                                                  info: DatasetInfo) -> None:
    message = refused(host, info, {"name": name})
    assert message.startswith(f"model.options.name: timm's {name} cannot take the {info.height}x{info.width} "
                              f"images of the data set {info.name!r} ("), message


@pytest.mark.parametrize(("name", "closest"), [("resnet81", "'resnet18'"), ("test_efficientnt", "'test_efficientnet'"),
                                               ("hf-hub:timm/resnet18", "'resnet18'")])
def test_an_unknown_name_suggests_the_closest(host: PluginHost, name: str, closest: str) -> None:
    """A hub name (which timm would download) is no model of timm's list either."""
    message = refused(host, COLOUR, {"name": name})
    assert message.startswith(f"model.options.name: timm {timm.__version__} has no model {name!r}. Did you mean ")
    assert closest in message, message


def test_a_pretrained_tag_is_a_name_too(host: PluginHost) -> None:
    tag = timm.models.get_pretrained_cfg(timm_models.DEFAULT).tag
    assert build(host, COLOUR, {"name": f"{timm_models.DEFAULT}.{tag}"})(torch.rand(2, 3, 16, 16)).shape == (2, 7)
    assert refused(host, COLOUR, {"name": f"{timm_models.DEFAULT}.nonsense"}).startswith(
        "model.options.name: Invalid pretrained tag (nonsense)")


@pytest.mark.parametrize("key", ["pretrained", "checkpoint_path"])
def test_pretrained_weights_are_refused(host: PluginHost, key: str) -> None:
    message = refused(host, COLOUR, {"name": "resnet18", key: True if key == "pretrained" else "w.pth"})
    assert message.startswith(f"model.options.{key}: the timm architecture is built with random weights")
    assert "--model timm.models:resnet18 --weights FILE" in message
    assert build(host, COLOUR, {"pretrained": False}) is not None  # no weights asked for: nothing to refuse


@pytest.mark.parametrize("key", ["num_classes", "in_chans", "img_size"])
def test_options_lipcli_sets_are_refused(host: PluginHost, key: str) -> None:
    assert refused(host, COLOUR, {key: 3}).startswith(f"model.options.{key}: set by lipcli from the data set")


def test_other_options_go_to_timm(host: PluginHost) -> None:
    model = build(host, COLOUR, {"drop_rate": 0.375, "drop_path_rate": 0.25})
    assert model.drop_rate == 0.375
    assert max(float(m.drop_prob) for m in model.modules() if type(m).__name__ == "DropPath") == 0.25
    with pytest.raises(ConfigError, match=r"'timm' rejected its options \{'dorp_rate': 0.2\}.*'dorp_rate'"):
        build(host, COLOUR, {"dorp_rate": 0.2})
    with pytest.raises(ConfigError, match="model.options.name: expected a string"):
        build(host, COLOUR, {"name": 18})


@pytest.mark.parametrize("affine", [False, True])
def test_batchnorm_affine(host: PluginHost, affine: bool) -> None:
    """false (lipcli's default, the paper's layout): BatchNorm's scale fixed at 1 and not trained (timm's zero
    initialisation of the last BatchNorm of each block undone), its shift trained; true: timm's affine BatchNorm."""
    model = build(host, COLOUR, batchnorm_affine=affine)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.bias.requires_grad for m in norms)
    assert all(m.weight.requires_grad == affine for m in norms)
    assert all(bool((m.weight == 1).all()) for m in norms) != affine  # zero_init_last: some are 0 when affine


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "test_vit"])
def test_double_backpropagation_where_pytorch_kernels_have_no_second_derivative(host: PluginHost, name: str) -> None:
    """MobileNetV3's hard activations and fused attention have no second derivative in PyTorch (timm's own models
    fail this): the models are built so that the gradient penalty (the contract's double-backprop check) works."""
    check_name, check = next((n, c) for n, c in CHECKS["architecture"] if n == "double-backprop")
    component = host.registry("architecture").get("timm")
    component = Component("timm", partial(component.factory, name=name), component.description, component.plugin)
    result = run_check("architecture", check_name, check, component, host)  # on 16x16 colour images
    assert result.status == "pass", result.detail
    plain = timm.create_model(name, num_classes=3, **({"img_size": 16} if "vit" in name else {}))
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    (gradient,) = torch.autograd.grad(plain(x).logsumexp(1).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for .* is not implemented"):
        gradient.square().sum().backward()


# -- from the command line -------------------------------------------------------------------------------------


def test_train_from_the_command_line_and_reload(run: Callable[..., Any], tmp_path: Path) -> None:
    sets = ["model.options.name=test_efficientnet", "data.options.size=16", "data.options.channels=3",
            "data.options.train_size=32", "data.options.test_size=16", "data.options.num_classes=3",
            "training.batch_size=16"]
    result = run("train", "--arch", "timm", "--dataset", "synthetic", *(a for s in sets for a in ("--set", s)),
                 "--max-steps", "2", "--epochs", "1", "--device", "cpu", "--quiet", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    from lipcli import load_model
    from lipcli.checkpoint import load_checkpoint

    model = load_model(tmp_path / "run" / "best.pt")
    assert type(model) is timm.models.EfficientNet and model.get_classifier().out_features == 3
    weights = load_checkpoint(tmp_path / "run" / "best.pt")["model"]
    plain = timm.create_model("test_efficientnet", num_classes=3).eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        untrained = plain(x)
        plain.load_state_dict(weights)  # timm's own parameter names
        assert torch.equal(load_model(tmp_path / "run" / "best.pt")(x), model(x))
        assert torch.allclose(model(x), plain(x), atol=1e-6)
        assert not torch.allclose(model(x), untrained)


def test_refusals_from_the_command_line_are_one_line(run: Callable[..., Any], tmp_path: Path) -> None:
    for option, fragment in (("name=resnet81", "model.options.name: timm "), ("pretrained=true", "--weights FILE")):
        result = run("train", "--arch", "timm", "--dataset", "digits", "--set", f"model.options.{option}",
                     "--max-steps", "1", "--device", "cpu", "--quiet", "--out", tmp_path / "run")
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output and fragment in lines[0], result.output
