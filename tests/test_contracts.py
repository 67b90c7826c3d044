"""The component contract (lipcli.contracts), for every registered component, and proof that it can fail."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from data_files import write_cifar10, write_cifar100, write_mnist_folder
from torch import nn

from lipcli import hookimpl
from lipcli.attacks import Attack
from lipcli.contracts import CHECKS, run_check, run_checks
from lipcli.data.types import DatasetInfo, DataSplits, ImageSet
from lipcli.defence import StepLoss
from lipcli.plugin_host import KINDS, PluginHost


@functools.cache
def _host() -> PluginHost:
    return PluginHost(environ={})  # every installed plugin, third-party ones included


CASES = [
    pytest.param(kind, component.name, check_name, id=f"{kind}-{component.name}-{check_name}")
    for kind in KINDS for component in _host().registry(kind) for check_name, _ in CHECKS[kind]
]


@pytest.fixture(scope="module", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A data cache holding the file-backed built-in data sets in their distributions' formats, so that their
    contract runs here (the real files cannot be downloaded); other data sets' files are not there."""
    cache = tmp_path_factory.mktemp("data-cache")
    write_cifar10(cache / "cifar10" / "cifar-10-batches-py")
    write_cifar100(cache / "cifar100" / "cifar-100-python")
    write_mnist_folder(cache / "mnist", seed=1)
    write_mnist_folder(cache / "fashion-mnist", seed=2, gz=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIPCLI_DATA_DIR", str(cache))
        yield cache


@pytest.mark.parametrize(("kind", "name", "check_name"), CASES)
def test_every_registered_component_keeps_the_contract(kind: str, name: str, check_name: str) -> None:
    check = dict(CHECKS[kind])[check_name]
    result = run_check(kind, check_name, check, _host().registry(kind).get(name), _host())
    if result.status == "skip":
        pytest.skip(result.detail)
    assert result.status == "pass", result.detail


class Broken:
    """One component of each kind that breaks the contract, each in its own way."""

    @staticmethod
    @hookimpl
    def register_architectures(register: Callable[..., None]) -> None:
        register("broken-shape", lambda info, *, batchnorm_affine=False: nn.Sequential(nn.Flatten(), nn.LazyLinear(3)),
                 "always 3 outputs")

    @staticmethod
    @hookimpl
    def register_defences(register: Callable[..., None]) -> None:
        class NaNLoss:
            def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, _: Any) -> StepLoss:
                logits = model(images)
                total = logits.sum() * torch.nan
                return StepLoss(total=total, data_loss=total, logits=logits)

        class DetachedPenalty:
            def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, _: Any) -> StepLoss:
                logits = model(images)
                data_loss = F.cross_entropy(logits, labels)
                penalty = sum(p.square().sum() for p in model.parameters()).detach()
                return StepLoss(total=data_loss + penalty, data_loss=data_loss, logits=logits, penalty=penalty)

        register("broken-nan", NaNLoss, "a NaN loss")
        register("broken-detached", DetachedPenalty, "a penalty that does not train")

    @staticmethod
    @hookimpl
    def register_attacks(register: Callable[..., None]) -> None:
        class OutOfBox(Attack):
            def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
                return images * 3 - 1

        class InPlace(Attack):
            def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
                return images.mul_(0.5)

        class Random(Attack):
            def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
                return torch.rand_like(images)  # mostly misclassified, but nowhere near the smallest distance

        register("broken-out-of-box", OutOfBox, "values outside [0, 1]")
        register("broken-random", Random, "random points")
        register("broken-in-place", InPlace, "changes the images it is given")

    @staticmethod
    @hookimpl
    def register_datasets(register: Callable[..., None]) -> None:
        def bright(*, data_dir: Any = None, download: bool = False) -> DataSplits:
            images = torch.full((4, 1, 2, 2), 2.0)
            split = ImageSet(images, torch.tensor([0, 1, 0, 1]))
            return DataSplits(DatasetInfo("bright", 1, 2, 2, 2), split, split)

        register("broken-bright", bright, "pixel values of 2")


@pytest.fixture(scope="module")
def broken_host() -> PluginHost:
    host = PluginHost(environ={})
    host.register(Broken(), "broken")
    return host


@pytest.mark.parametrize(("kind", "name", "expected"), [
    ("architecture", "broken-shape", "output shape (3, 3)"),
    ("defence", "broken-nan", "not a finite scalar"),
    ("attack", "broken-out-of-box", "not finite values in [0, 1]"),
    ("attack", "broken-in-place", "changed the images"),
    ("attack", "broken-random", "times the smallest possible one"),
    ("defence", "broken-detached", "does not reach the weights"),
    ("dataset", "broken-bright", "pixel values span [2.0, 2.0]"),
])
def test_the_contract_catches_broken_components(broken_host: PluginHost, kind: str, name: str, expected: str) -> None:
    results = [r for r in run_checks(broken_host, [kind], "broken") if r.name == name]
    assert any(r.status == "fail" and expected in r.detail for r in results), results


def test_plugins_check_command(run: Callable[..., Any], broken_host: PluginHost) -> None:
    from typer.testing import CliRunner

    from lipcli.cli.app import build_app

    result = run("plugins", "check", "--plugin", "lipcli-defences", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    own = [c for c in _host().registry("defence") if c.plugin == "lipcli-defences"]
    assert report["fail"] == 0 and report["pass"] == 2 * len(own)
    result = CliRunner().invoke(build_app(broken_host), ["plugins", "check", "--plugin", "broken"])
    assert result.exit_code == 1 and "broken-nan" in result.stdout and "fail" in result.stdout


@pytest.mark.parametrize(("args", "environ", "code", "message"), [
    (["--plugin", "lipcli-defenses"], {}, 2, "no plugin 'lipcli-defenses' is installed. Did you mean 'lipcli-defences'"),
    (["--plugin", "LIPCLI_DEFENCES", "--kind", "attacks"], {}, 1, "'lipcli-defences' registered no attacks to check"),
    (["--kind", "atacks"], {}, 2, "unknown kind 'atacks'. Did you mean 'attacks'"),
    (["--plugin", "lipcli-defences"], {"LIPCLI_BLOCK_PLUGINS": "lipcli-defences"}, 1,
     "'lipcli-defences' is not checked: it is blocked by LIPCLI_BLOCK_PLUGINS"),
])
def test_plugins_check_refuses_what_it_cannot_check(args: list[str], environ: dict[str, str], code: int,
                                                    message: str) -> None:
    """A plugin that is absent, blocked or registers nothing of the kind is an error, never "0 failed"."""
    from typer.testing import CliRunner

    from lipcli.cli.app import build_app

    result = CliRunner().invoke(build_app(PluginHost(environ=environ)), ["plugins", "check", *args])
    assert result.exit_code == code and message in result.output and len(result.output.strip().splitlines()) == 1


def test_plugins_check_fails_a_plugin_whose_hook_raises() -> None:
    from typer.testing import CliRunner

    from lipcli.cli.app import build_app

    class Raising:
        @staticmethod
        @hookimpl
        def register_attacks(register: Callable[..., None]) -> None:
            raise RuntimeError("no attacks today")

    host = PluginHost(environ={})
    host.register(Raising(), "raising")
    with pytest.warns(Warning, match="no attacks today"):
        result = CliRunner().invoke(build_app(host), ["plugins", "check", "--plugin", "raising"])
    assert result.exit_code == 1 and "is not checked: it is failed in register_attacks" in result.output


def test_the_plugin_guide_documents_every_hook_and_no_other() -> None:
    """docs/plugins.md has a heading per hook spec, with the spec's own arguments."""
    import inspect
    import re

    from lipcli import hookspecs

    guide = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    documented = dict(re.findall(r"^### `(\w+)\(([^)]*)\)`", guide, flags=re.MULTILINE))
    specs = {name: ", ".join(inspect.signature(getattr(hookspecs, name)).parameters) for name in hookspecs.hook_names()}
    assert documented == specs
