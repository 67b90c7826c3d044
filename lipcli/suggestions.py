"""Closest-name suggestions for error messages ("Did you mean ...?"): unknown components, keys, recipes."""

from __future__ import annotations

import difflib


KNOWN_SHOWN = 12
"""At most this many names are listed when none is close (``lipcli list`` shows them all)."""


def suggest(name: str, candidates: list[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """The closest candidates to ``name`` (case-insensitive), best first. A name is also compared without its
    prefixes (``example-lenet`` as ``lenet``, ``tv-resnet18`` as ``resnet18``), so that a family of prefixed names
    does not crowd out the one a user meant."""
    wanted = name.lower()

    def score(candidate: str) -> float:
        parts = candidate.lower().split("-")
        return max(difflib.SequenceMatcher(None, wanted, "-".join(parts[i:])).ratio() for i in range(len(parts)))

    ranked = sorted(((score(c), c) for c in candidates), key=lambda pair: -pair[0])  # stable: ties keep their order
    return [candidate for value, candidate in ranked[:n] if value >= cutoff]


def did_you_mean_any(close: list[str]) -> str:
    """``Did you mean 'a' or 'b'?`` for names already found close."""
    return "Did you mean " + " or ".join(repr(c) for c in close) + "?"


def did_you_mean(name: str, candidates: list[str]) -> str:
    """A ' Did you mean ...?' suffix for error messages, or the list of valid names when nothing is close."""
    close = suggest(name, candidates)
    if close:
        return " " + did_you_mean_any(close)
    if len(candidates) > KNOWN_SHOWN:  # a family of 80 torchvision models would fill the screen
        return f" Known: {', '.join(sorted(candidates)[:KNOWN_SHOWN])} and {len(candidates) - KNOWN_SHOWN} more."
    if candidates:
        return " Known: " + ", ".join(sorted(candidates)) + "."
    return ""
