"""torchvision's classification models as architectures (``tv-<name>``): listed without torch, built for the data
set's classes, channels and size, trainable from the command line, refused in one line where they cannot be."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lipcli.components import call_factory, option_defaults
from lipcli.contracts import CHECKS, run_check
from lipcli.data.types import DatasetInfo
from lipcli.errors import ConfigError
from lipcli.plugin_host import PluginHost
from lipcli.references import Reference
from lipcli_builtins.architectures import torchvision_models
from lipcli_builtins.architectures.torchvision_build import Adapted, HardSigmoid, HardSwish

GREY = DatasetInfo("digits", 1, 8, 8, 10)
COLOUR = DatasetInfo("colour", 3, 16, 16, 7)


def build(host: PluginHost, arch: str, info: DatasetInfo, options: dict[str, Any] | None = None,
          batchnorm_affine: bool = False) -> nn.Module:
    component = host.registry("architecture").get(arch)
    torch.manual_seed(0)
    return call_factory(component, options or {}, "model.options", info=info, batchnorm_affine=batchnorm_affine)


def one_line(result: Any, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# -- the list of models ----------------------------------------------------------------------------------------


def test_the_factories_are_exactly_torchvisions_classification_models() -> None:
    """The static list (one factory per model, so that listing reads it without importing torchvision) equals the
    installed torchvision's: a torchvision release that adds or drops a model fails here, not silently."""
    installed = torchvision.models.list_models(module=torchvision.models)
    assert torchvision_models.models() == installed, torchvision.__version__


def test_each_factory_builds_its_own_model(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, Any, bool, dict[str, Any]]] = []
    monkeypatch.setattr(torchvision_models, "_build", lambda *args: built.append(args))
    for name in torchvision_models.models():
        getattr(torchvision_models, f"tv_{name}")("info", batchnorm_affine=True, dropout=0.5)
    assert built == [(name, "info", True, {"dropout": 0.5}) for name in torchvision_models.models()]


SIZE_RULES_OF_THEIR_OWN = {"efficientnet_v2_": "33 is conservative: every side from 1 works",
                           "swin_": "224 and 256 are the pretrained weights' size: 4 and up work",
                           "vit_": "image_size is set from the data set: a multiple of the patch size",
                           "maxvit_": "input_size is set from the data set: multiples of 7 at every stage"}


def test_smallest_sides_are_torchvisions() -> None:
    """The sizes ``lipcli list`` shows and errors name are torchvision's own ``min_size`` (of its weights'
    metadata), apart from the families whose constructor lipcli gives the size, or whose figure is the pretrained
    weights' and not what the untrained network needs (each measured, see SIZE_RULES_OF_THEIR_OWN)."""
    for name in torchvision_models.models():
        if name.startswith(tuple(SIZE_RULES_OF_THEIR_OWN)):
            continue
        sizes = {weights.meta["min_size"] for weights in torchvision.models.get_model_weights(name)}
        assert sizes == {(torchvision_models.min_side(name),) * 2}, name


def listed_architectures(heavy: tuple[str, ...]) -> dict[str, Any]:
    """``lipcli list architectures --json`` run in a fresh interpreter, by name, checked to have imported none of
    the packages ``heavy`` (nor their submodules)."""
    script = textwrap.dedent(f"""
        import json, runpy, sys, io, contextlib
        sys.argv = ["lipcli", "list", "architectures", "--json"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                runpy.run_module("lipcli", run_name="__main__")
            except SystemExit as exit:
                assert not exit.code, exit.code
        listed = {{a["name"]: a for a in json.loads(out.getvalue())["architectures"]}}
        print(json.dumps({{"listed": listed, "modules": sorted(m for m in sys.modules
                                                             if m.split(".")[0] in {heavy!r})}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["modules"] == [], report["modules"]
    return report["listed"]


def test_listing_shows_the_models_and_imports_neither_torch_nor_torchvision() -> None:
    listed = listed_architectures(("torch", "torchvision"))
    assert {f"tv-{name}" for name in torchvision_models.models()} <= set(listed)
    assert listed["tv-resnet18"]["options"] == {} and listed["tv-resnet18"]["plugin"] == "lipcli-architectures"
    assert "any size" in listed["tv-resnet18"]["description"]
    assert "at least 63x63" in listed["tv-alexnet"]["description"]


def test_options_are_read_from_source_with_the_catch_all(host: PluginHost) -> None:
    component = host.registry("architecture").get("tv-resnet18")
    assert isinstance(component.factory, Reference)
    assert component.factory.source_defaults() == {"info": inspect.Parameter.empty, "batchnorm_affine": False}
    assert option_defaults(component) == {}


# -- building --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("info", [GREY, COLOUR, DatasetInfo("mnist7", 1, 28, 28, 7)], ids=lambda i: i.name)
def test_classes_and_channels_come_from_the_data_set(host: PluginHost, info: DatasetInfo) -> None:
    model = build(host, "tv-resnet18", info)
    assert model(torch.rand(2, *info.input_shape)).shape == (2, info.num_classes)
    net = model.net if isinstance(model, Adapted) else model
    assert isinstance(net, torchvision.models.ResNet) and net.fc.out_features == info.num_classes
    if info.channels == 1:  # the grey channel, repeated to the three torchvision's first convolution takes
        x = torch.rand(2, *info.input_shape)
        model.eval()
        assert torch.equal(model(x), net(x.repeat(1, 3, 1, 1)))
    else:
        assert type(model) is torchvision.models.ResNet  # state dict keys are torchvision's


def test_other_channel_counts_are_refused(host: PluginHost) -> None:
    with pytest.raises(ConfigError, match="tv-resnet18 takes colour .* has 4-channel images"):
        build(host, "tv-resnet18", DatasetInfo("four", 4, 8, 8, 2))


@pytest.mark.parametrize(("arch", "info", "needs"), [
    ("tv-squeezenet1_1", DatasetInfo("small", 3, 16, 16, 3), "images of at least 17x17"),
    ("tv-vit_b_16", DatasetInfo("mnist", 1, 28, 28, 10), "square images whose side is a multiple of 16"),
    ("tv-maxvit_t", DatasetInfo("cifar10", 3, 32, 32, 10), "images whose sides stay multiples of 7 when halved"),
])
def test_a_model_that_cannot_take_the_images_says_what_it_needs(host: PluginHost, arch: str, info: DatasetInfo,
                                                                needs: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(host, arch, info)
    message = str(caught.value)
    assert message.startswith(f"model.arch: {arch} needs {needs}") and "\n" not in message
    assert f"{info.height}x{info.width} images" in message


def test_the_smallest_side_is_exact() -> None:
    """At torchvision's minimum a model runs; one pixel less, it is refused (before PyTorch's pooling error)."""
    info = DatasetInfo("small", 3, 17, 17, 3)
    model = torchvision_models.tv_squeezenet1_1(info)
    assert model(torch.rand(2, *info.input_shape)).shape == (2, 3)
    plain = torchvision.models.squeezenet1_1(num_classes=3)
    with pytest.raises(RuntimeError, match="too small"):
        plain(torch.rand(2, 3, 16, 16))
    assert torchvision_models.size_problem("squeezenet1_1", 16, 16) == "images of at least 17x17"


@pytest.mark.parametrize(("name", "height", "width", "fits"), [
    ("vit_b_16", 32, 32, True), ("vit_b_16", 32, 16, False), ("vit_h_14", 28, 28, True), ("vit_h_14", 32, 32, False),
    ("maxvit_t", 224, 224, True), ("maxvit_t", 221, 448, True), ("maxvit_t", 220, 224, False),
    ("resnet18", 1, 1, True), ("swin_t", 4, 4, True), ("swin_t", 3, 8, False), ("alexnet", 63, 64, True),
])
def test_size_rules(name: str, height: int, width: int, fits: bool) -> None:
    assert (torchvision_models.size_problem(name, height, width) is None) == fits


def test_maxvit_size_rule_is_torchvisions() -> None:
    """MaxViT's own check (its constructor refuses a size whose stages do not divide by 7) agrees with the rule."""
    for side in (220, 221, 224, 225):
        try:
            torchvision.models.maxvit.MaxVit(input_size=(side, side), stem_channels=8, partition_size=7,
                                             block_channels=[8, 8, 8, 8], block_layers=[1, 1, 1, 1], head_dim=4,
                                             stochastic_depth_prob=0.0, num_classes=2)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == (torchvision_models.size_problem("maxvit_t", side, side) is None), side


def test_options_go_to_torchvisions_constructor(host: PluginHost) -> None:
    model = build(host, "tv-mobilenet_v3_small", COLOUR, {"dropout": 0.375, "width_mult": 0.5})
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.375]
    assert model.features[0][0].out_channels == 8  # 16 at width_mult=1
    with pytest.raises(ConfigError, match="unexpected keyword argument 'dropuot'"):  # torchvision would ignore it
        build(host, "tv-mobilenet_v3_small", COLOUR, {"dropuot": 0.2})
    with pytest.raises(ConfigError, match=r"'tv-resnet18' rejected its options \{'widht': 2\}.*'widht'"):
        build(host, "tv-resnet18", COLOUR, {"widht": 2})
    with pytest.raises(ConfigError, match="rejected its options.*BasicBlock only supports groups=1"):
        build(host, "tv-resnet18", COLOUR, {"groups": 2})  # torchvision's own ValueError, with the option named


@pytest.mark.parametrize(("options", "message"), [
    ({"weights": "IMAGENET1K_V1"}, "model.options.weights: tv-resnet18 is built untrained"),
    ({"num_classes": 3}, "model.options.num_classes: set by lipcli from the data set"),
    ({"image_size": 32}, "model.options.image_size: set by lipcli from the data set"),
])
def test_options_lipcli_sets_are_refused(host: PluginHost, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(host, "tv-resnet18", COLOUR, options)


def test_googlenet_returns_logits_in_train_mode(host: PluginHost) -> None:
    info = DatasetInfo("small", 3, 16, 16, 4)
    model = build(host, "tv-googlenet", info).train()
    out = model(torch.rand(2, *info.input_shape))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)
    with pytest.raises(ConfigError, match="aux_logits: lipcli trains on the logits alone"):
        build(host, "tv-googlenet", info, {"aux_logits": True})


@pytest.mark.parametrize("affine", [False, True])
def test_batchnorm_affine(host: PluginHost, affine: bool) -> None:
    """false (lipcli's default, the paper's layout): BatchNorm's scale fixed at 1 and not trained, its shift
    trained; true: torchvision's affine BatchNorm."""
    from lipcli.training.optim import build_optimizer

    model = build(host, "tv-resnet18", COLOUR, batchnorm_affine=affine)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.bias.requires_grad for m in norms)
    assert all(m.weight.requires_grad == affine for m in norms)
    assert all(bool((m.weight == 1).all()) for m in norms)
    trained = {id(p) for group in build_optimizer(model, _training()).param_groups for p in group["params"]}
    assert all((id(m.weight) in trained) == affine for m in norms)


def _training() -> Any:
    from lipcli.config.schema import TrainingConfig

    return TrainingConfig()


def test_hard_activations_are_the_same_functions() -> None:
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    assert torch.allclose(HardSigmoid()(x), F.hardsigmoid(x)) and torch.allclose(HardSwish()(x), F.hardswish(x))


# -- the contract ----------------------------------------------------------------------------------------------


def test_the_contract_checks_a_few_members_and_says_why_not_the_others(host: PluginHost) -> None:
    registry = host.registry("architecture")
    check_name, check = CHECKS["architecture"][0]
    for name in torchvision_models.CHECKED:
        assert "contract_skip" not in registry.get(f"tv-{name}").metadata
    skipped = {name: run_check("architecture", check_name, check, registry.get(f"tv-{name}"), host)
               for name in ("alexnet", "vit_b_16", "shufflenet_v2_x0_5")}
    assert all(result.status == "skip" for result in skipped.values())
    assert skipped["alexnet"].detail == "needs images of at least 63x63; the contract's images are 8x8 and 16x16"
    assert "square images whose side is a multiple of 16" in skipped["vit_b_16"].detail
    assert "built by the same code as tv-resnet18" in skipped["shufflenet_v2_x0_5"].detail


@pytest.mark.parametrize("arch", ["tv-mobilenet_v3_small", "tv-vit_b_16"])
def test_double_backpropagation_where_pytorch_kernels_have_no_second_derivative(host: PluginHost, arch: str) -> None:
    """MobileNetV3's hard activations and the transformers' fused attention have no second derivative in PyTorch:
    the models are built so that the gradient penalty (the contract's double-backprop check) still trains them."""
    name, check = next((n, c) for n, c in CHECKS["architecture"] if n == "double-backprop")
    component = host.registry("architecture").get(arch)
    component = type(component)(component.name, component.factory, component.description, component.plugin)
    result = run_check("architecture", name, check, component, host)  # 16x16 colour images: a ViT-B/16 takes them
    assert result.status == "pass", result.detail


# -- from the command line -------------------------------------------------------------------------------------


def test_train_from_the_command_line(run: Callable[..., Any], tmp_path: Path) -> None:
    sets = ["data.options.size=32", "data.options.train_size=32", "data.options.test_size=16",
            "data.options.num_classes=3", "training.batch_size=16"]
    result = run("train", "--arch", "tv-resnet18", "--dataset", "synthetic", *(a for s in sets for a in ("--set", s)),
                 "--max-steps", "2", "--epochs", "1", "--device", "cpu", "--quiet", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    from lipcli import load_model

    model = load_model(tmp_path / "run" / "best.pt")
    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 3


def test_train_on_grey_digits_from_the_command_line(run: Callable[..., Any], tmp_path: Path) -> None:
    result = run("train", "--arch", "tv-resnet18", "--dataset", "digits", "--max-steps", "2", "--epochs", "1",
                 "--device", "cpu", "--quiet", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "best.pt").is_file()


def test_a_model_too_big_for_the_images_is_a_one_line_error(run: Callable[..., Any], tmp_path: Path) -> None:
    one_line(run("train", "--arch", "tv-alexnet", "--dataset", "digits", "--max-steps", "1", "--device", "cpu",
                 "--quiet", "--out", tmp_path / "run"),
             "model.arch: tv-alexnet needs images of at least 63x63; the data set 'digits' has 8x8 images")
    one_line(run("train", "--arch", "tv-resnet18", "--dataset", "digits", "--set", "model.options.widht=2",
                 "--max-steps", "1", "--device", "cpu", "--quiet", "--out", tmp_path / "run2"),
             "model.options: 'tv-resnet18' rejected its options")
