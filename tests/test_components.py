"""Calling a plugin's factory (lipcli.components): whose fault an error is, and which key it names."""

from __future__ import annotations

from typing import Any

import pytest

from lipcli.components import call_factory
from lipcli.errors import ConfigError
from lipcli.registry import Component


def _net(info: Any, *, batchnorm_affine: bool, depth: int, width: int = 8) -> dict[str, int]:
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return {"depth": depth, "width": width}


def _buggy(info: Any, *, batchnorm_affine: bool, width: int = 8) -> None:
    return len(width)  # a plugin bug: a TypeError that has nothing to do with the user's options


NET = Component("mynet", _net, "a network", "test")
BUGGY = Component("buggy", _buggy, "a buggy network", "test")


def test_options_reach_the_factory_beside_lipcli_arguments() -> None:
    assert call_factory(NET, {"depth": 3}, "model.options", info=None, batchnorm_affine=False) == {"depth": 3, "width": 8}


@pytest.mark.parametrize(("component", "options", "message"), [
    (NET, {"depth": 3, "widht": 4}, "model.options.widht: unknown option of 'mynet'. Did you mean 'width'?"),
    (NET, {"width": 4}, "model.options.depth: required by 'mynet', and not set"),
    (NET, {"depth": 3, "info": 1}, "model.options.info: set by lipcli itself"),
    (NET, {"depth": 3, "width": 0}, "model.options: 'mynet' rejected its options {'depth': 3, 'width': 0}: width must "
                                    "be positive, got 0"),
    (BUGGY, {"width": 3}, "model.options: 'buggy' rejected its options {'width': 3}"),
])
def test_the_users_mistakes_name_the_dotted_key(component: Component, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        call_factory(component, options, "model.options", info=None, batchnorm_affine=False)
    assert message in str(caught.value)


def test_without_options_a_factorys_error_stays_the_plugins() -> None:
    """Nothing the user set can be to blame: the plugin's own TypeError is raised as it is."""
    with pytest.raises(TypeError, match="has no len"):
        call_factory(BUGGY, {}, "model.options", info=None, batchnorm_affine=False)
