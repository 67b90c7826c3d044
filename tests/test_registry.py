"""Component registries: case-insensitive names, wildcards, closest-name suggestions, duplicates, the hook contract."""

from __future__ import annotations

import inspect
import types

import pytest
import typer

from lipcli import hookimpl, hookspecs
from lipcli.errors import DuplicateNameError, LipcliError, UnknownNameError
from lipcli.plugin_host import KINDS, PluginHost, PluginWarning
from lipcli.registry import Component, Registry
from lipcli.suggestions import did_you_mean, suggest


def _factory(*args, **kwargs):
    return None


def _component(name: str, plugin: str = "test-plugin", **metadata) -> Component:
    return Component(name=name, factory=_factory, description=f"{name} description", plugin=plugin,
                     metadata=metadata)


@pytest.fixture
def registry() -> Registry:
    reg = Registry("architecture")
    for name in ("ResNet34", "resnext34", "small-cnn", "mlp", "allcnn"):
        reg.add(_component(name))
    return reg


@pytest.fixture(scope="module")
def first_party() -> PluginHost:
    return PluginHost(environ={"LIPCLI_PLUGINS": "lipcli"})  # lipcli's own plugins only


# -- Registry --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["ResNet34", "resnet34", "RESNET34", "  resnet34 "])
def test_get_is_case_insensitive_and_keeps_the_registered_spelling(registry, query):
    component = registry.get(query)
    assert component.name == "ResNet34"
    assert component.factory is _factory
    assert query in registry


def test_iteration_and_names_are_sorted_case_insensitively(registry):
    assert registry.names() == ["allcnn", "mlp", "ResNet34", "resnext34", "small-cnn"]
    assert [c.name for c in registry] == registry.names()
    assert len(registry) == 5
    assert "nosuch" not in registry


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("res*", ["ResNet34", "resnext34"]),
        ("RES*", ["ResNet34", "resnext34"]),
        ("*cnn", ["allcnn", "small-cnn"]),
        ("res?et34", ["ResNet34"]),
        ("mlp", ["mlp"]),
        ("vgg*", []),
        (None, ["allcnn", "mlp", "ResNet34", "resnext34", "small-cnn"]),
    ],
)
def test_wildcard_list(registry, pattern, expected):
    assert [c.name for c in registry.list(pattern)] == expected


def test_unknown_name_suggests_the_closest(registry):
    with pytest.raises(UnknownNameError) as excinfo:
        registry.get("resnet3")
    message = str(excinfo.value)
    assert "'resnet3'" in message and "architecture" in message
    assert "Did you mean 'ResNet34'" in message
    assert "mlp" not in message
    assert isinstance(excinfo.value, LipcliError) and excinfo.value.exit_code == 2


def test_unknown_name_with_nothing_close_lists_the_known_names(registry):
    with pytest.raises(UnknownNameError) as excinfo:
        registry.get("zzzzzz")
    message = str(excinfo.value)
    assert "Did you mean" not in message
    for name in registry.names():
        assert name in message


def test_unknown_name_in_an_empty_registry():
    with pytest.raises(UnknownNameError, match="unknown attack 'pgd'"):
        Registry("attack").get("pgd")


@pytest.mark.parametrize("name", ["", "   ", "\t"])
def test_empty_names_are_rejected(name):
    reg = Registry("dataset")
    with pytest.raises(ValueError, match="non-empty"):
        reg.add(_component(name))
    assert len(reg) == 0


def test_duplicate_in_another_case_names_both_plugins_and_keeps_the_first():
    reg = Registry("defence")
    reg.add(_component("Foo", plugin="plugin-a"))
    with pytest.raises(DuplicateNameError) as excinfo:
        reg.add(_component("foo", plugin="plugin-b"))
    message = str(excinfo.value)
    assert "'plugin-a'" in message and "'plugin-b'" in message
    assert reg.get("FOO").plugin == "plugin-a"
    assert len(reg) == 1


def test_suggest_and_did_you_mean():
    candidates = ["cifar10", "cifar100", "mnist", "fashion-mnist"]
    assert suggest("CIFAR-10", candidates)[0] == "cifar10"
    assert suggest("nothing-like-it", candidates) == []
    family = [f"tv-{m}" for m in ("alexnet", "googlenet", "resnet18", "resnet34")] + ["resnet34", "example-lenet"]
    assert suggest("lenett", family)[0] == "example-lenet"  # compared without its prefix too
    assert suggest("resnet18", family)[0] == "tv-resnet18" and suggest("tv-resnet43", family)[0] == "tv-resnet34"
    assert did_you_mean("minst", candidates).startswith(" Did you mean 'mnist'")
    assert did_you_mean("zzz", candidates) == " Known: cifar10, cifar100, fashion-mnist, mnist."
    many = [f"net{i:02d}" for i in range(20)]
    assert did_you_mean("zzz", many) == f" Known: {', '.join(many[:12])} and 8 more."
    assert did_you_mean("zzz", []) == ""


# -- registries built from first-party plugins -----------------------------------------------------------------


def test_first_party_registry_is_case_insensitive_with_wildcards(first_party):
    archs = first_party.registry("architecture")
    assert archs.get("ResNet34").name == "resnet34"
    assert archs.get("RESNET34").plugin == "lipcli-architectures"
    assert [c.name for c in archs.list("res*")] == ["resnet34", "resnext34"]
    with pytest.raises(UnknownNameError, match="'resnet34'"):
        archs.get("resnet3")


def test_first_party_datasets_and_defences_resolve(first_party):
    datasets = first_party.registry("dataset")
    for name in ("digits", "synthetic", "fashion-mnist", "mnist", "cifar10", "cifar100"):
        assert datasets.get(name.upper()).plugin == "lipcli-datasets"
    with pytest.raises(UnknownNameError, match="'cifar10'"):
        datasets.get("cifar-10x")
    assert all(c.plugin == "lipcli-defences" for c in first_party.registry("defence"))


def test_registry_is_cached_until_plugins_change():
    host = PluginHost(load_entrypoints=False)
    first = host.registry("architecture")
    assert host.registry("architecture") is first

    class Late:
        @hookimpl
        def register_architectures(self, register):
            register("late-net", _factory, "registered after the first build")

    host.register(Late(), "late")
    assert "late-net" in host.registry("architecture")


# -- the register callback and hook arguments --------------------------------------------------------------------


def test_register_callback_keeps_metadata_plugin_and_strips_names():
    class Meta:
        @hookimpl
        def register_datasets(self, register):
            register("  padded  ", _factory, "a padded name", channels=3, size=32)

    host = PluginHost(load_entrypoints=False)
    host.register(Meta(), "meta")
    component = host.registry("dataset").get("padded")
    assert component == Component("padded", _factory, "a padded name", "meta", {"channels": 3, "size": 32})


@pytest.mark.parametrize(
    ("bad_call", "match"),
    [(("", _factory, "empty"), "non-empty"), (("   ", _factory), "non-empty"), (("x", "not callable"), "callable")],
    ids=["empty", "blank", "non-callable"],
)
def test_invalid_registration_is_a_plugin_failure_that_others_survive(bad_call, match):
    class Bad:
        @hookimpl
        def register_attacks(self, register):
            register("fine-before", _factory, "discarded with the failure")
            register(*bad_call)

    class Good:
        @hookimpl
        def register_attacks(self, register):
            register("fgsm", _factory, "fast gradient sign")

    host = PluginHost(load_entrypoints=False)
    host.register(Bad(), "bad")
    host.register(Good(), "good")
    with pytest.warns(PluginWarning, match=f"'bad'.*{match}"):
        attacks = host.registry("attack")
    assert attacks.names() == ["fgsm"]


def test_hook_implementation_without_arguments_is_called():
    calls = []

    class NoArgs:
        @hookimpl
        def register_architectures(self):
            calls.append("architectures")

        @hookimpl
        def register_commands(self):
            calls.append("commands")

    host = PluginHost(load_entrypoints=False)
    assert host.register(NoArgs(), "noargs")
    assert {p.name: p.hooks for p in host.plugins()} == {"noargs": ["register_architectures", "register_commands"]}
    assert len(host.registry("architecture")) == 0
    assert calls == ["architectures"]

    host.add_commands(typer.Typer())
    assert calls == ["architectures", "commands"]
    assert {p.name: p.status for p in host.plugins()} == {"noargs": "loaded"}


def test_module_level_functions_work_as_a_plugin():
    module = types.ModuleType("module_plugin")

    @hookimpl
    def register_defences(register):
        register("module-defence", _factory, "from a module")

    module.register_defences = register_defences
    host = PluginHost(load_entrypoints=False)
    assert host.register(module, "module-plugin")
    assert host.registry("defence").get("MODULE-DEFENCE").plugin == "module-plugin"


# -- the hook contract -----------------------------------------------------------------------------------------


def test_hook_names_are_the_contract():
    assert hookspecs.hook_names() == [
        "register_architectures", "register_defences", "register_attacks", "register_datasets", "register_commands",
    ]
    assert set(KINDS.values()) <= set(hookspecs.hook_names())


@pytest.mark.parametrize("hook", hookspecs.hook_names())
def test_every_hook_spec_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and len(doc.split()) >= 3, f"hook spec {hook} has no useful docstring"
