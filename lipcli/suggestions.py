"""Closest-name suggestions for error messages ("Did you mean ...?"): unknown components, keys, recipes."""

from __future__ import annotations

import difflib


def suggest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """The closest candidates to ``name`` (case-insensitive), best first."""
    lowered = {c.lower(): c for c in candidates}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)]


def did_you_mean_any(close: list[str]) -> str:
    """``Did you mean 'a' or 'b'?`` for names already found close."""
    return "Did you mean " + " or ".join(repr(c) for c in close) + "?"


def did_you_mean(name: str, candidates: list[str]) -> str:
    """A ' Did you mean ...?' suffix for error messages, or the list of valid names when nothing is close."""
    close = suggest(name, candidates)
    if close:
        return " " + did_you_mean_any(close)
    if candidates:
        return " Known: " + ", ".join(sorted(candidates)) + "."
    return ""
