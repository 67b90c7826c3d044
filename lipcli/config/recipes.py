"""Named training recipes: TOML fragments shipped with lipcli (``lipcli/recipes/*.toml``).

A recipe sets what the paper's Appendix A fixes for a data set (epochs, schedule, weight decay,
augmentation) and leaves the architecture and the defence to the experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lipcli.config.toml_reader import load_toml
from lipcli.errors import ConfigError
from lipcli.suggestions import did_you_mean

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def describe(name: str) -> str:
    """The recipe file's first comment line."""
    for line in (RECIPES_DIR / f"{name}.toml").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def load_recipe(name: str) -> dict[str, Any]:
    """The recipe's settings; an unknown name suggests the closest."""
    path = RECIPES_DIR / f"{name.strip().lower()}.toml"
    if not path.is_file():
        raise ConfigError(f"recipe: unknown recipe {name!r}." + did_you_mean(name, recipe_names()))
    data = load_toml(path)
    if "recipe" in data:
        raise ConfigError(f"{path}: a recipe cannot name another recipe")
    return data
