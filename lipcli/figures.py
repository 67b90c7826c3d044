"""Error-curve figures (% of test images broken against distance): the one place lipcli draws them.

A figure is a list of :class:`Series`, one per configuration (a checkpoint, a report row, an attack), each in
its own colour, holding one distance tensor per seed. Several seeds are drawn as thin lines of the series'
colour beneath the thick curve of their mean (at each distance, the mean over seeds of the error: at an eps
of the tables it is the table's averaged cell, marked there with a dot). Thin lines rather than a band: with
the few seeds a grid trains, each seed stays readable, and a seed that crosses the others is not hidden.

Distances are on a log axis, where 0 has no place, so a narrow linear panel at the left, split from the log
axis by break marks, shows each curve's value at eps = 0 (the clean error). The tables' eps values are dotted
vertical lines, labelled as the user wrote them. The minimum over attacks (``lipcli attack``) is a wide
translucent grey band drawn beneath the attacks, so the attack that coincides with it stays in sight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lipcli.curves import error_at
from lipcli.files import atomic_write

NORM_NAMES = {"l2": "l2", "linf": "l∞"}


@dataclass(frozen=True)
class Series:
    """One configuration's curve: its legend label and its per-image distances, one tensor per seed."""

    label: str
    seeds: tuple[torch.Tensor, ...]


def mean_curve(seeds: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The step function ``mean over seeds of C_err(eps)`` as (every finite distance of any seed, the mean error
    there); seeds may hold different numbers of images (each seed's error is a fraction of its own)."""
    ordered = [s.detach().to("cpu", torch.float64).flatten().sort().values for s in seeds]
    points = torch.cat(ordered)
    points = points[torch.isfinite(points)].unique()
    errors = torch.stack([torch.searchsorted(s, points, right=True) / s.numel() for s in ordered])
    return points, errors.mean(dim=0)


def _mean_error(seeds: Sequence[torch.Tensor], eps: float) -> float:
    return sum(error_at(s.detach().cpu(), eps) for s in seeds) / len(seeds)


def describe(datasets: Iterable[str], norm: str, attacks: Iterable[str], images: Iterable[int]) -> str:
    """A figure's title: data set, norm, attacks and test-image count (several distinct values joined by '/')."""

    def distinct(values: Iterable[Any]) -> list[str]:
        return list(dict.fromkeys(str(v) for v in values))

    attack_names = distinct(attacks)
    counts = distinct(images)
    return (f"{'/'.join(distinct(datasets))} · {NORM_NAMES.get(norm, norm)} · "
            f"{'attack' if len(attack_names) == 1 else 'attacks'} {', '.join(attack_names)} · "
            f"{'/'.join(counts)} test images" + (" (they differ)" if len(counts) > 1 else ""))


def _palette(pyplot: Any, count: int) -> list[Any]:
    """Distinct colours, grey left out (it is the minimum's band): tab10's nine, or tab20's eighteen."""
    if count <= 9:
        return [c for i, c in enumerate(pyplot.get_cmap("tab10").colors) if i != 7]
    return [c for i, c in enumerate(pyplot.get_cmap("tab20").colors) if i not in (14, 15)]


def _steps(distances: torch.Tensor, errors: torch.Tensor, clean: float, low: float, high: float
           ) -> tuple[list[float], list[float]]:
    """A step curve across the log panel: the clean error at its left edge, then each distance, flat to the
    right edge (after the last finite distance the error no longer changes)."""
    keep = distances > 0
    xs, ys = distances[keep].tolist(), (100 * errors[keep]).tolist()
    return [low, *xs, high], [100 * clean, *ys, ys[-1] if ys else 100 * clean]


def _limits(series: Sequence[Series], floor: torch.Tensor | None, eps: Sequence[tuple[str, float]]
            ) -> tuple[float, float]:
    tensors = [t for s in series for t in s.seeds] + ([floor] if floor is not None else [])
    positive = [t[torch.isfinite(t) & (t > 0)].detach().cpu() for t in tensors]
    values = [float(p.min()) for p in positive if p.numel()] + [float(p.max()) for p in positive if p.numel()]
    values += [value for _, value in eps if value > 0]
    return (min(values) / 2, max(values) * 1.5) if values else (1e-3, 1.0)


def _log_ticks(axes: Any, ticker: Any, low: float, high: float) -> None:
    """Plain-number ticks (0.01, 0.1, 1) on the log axis: at 1, 2 and 5 times each power of ten when the axis
    spans up to about two decades, else at powers of ten; unlabelled minor ticks between."""
    decades = math.log10(high / low)
    subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)
    axes.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(2, 10)), numticks=12))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())


def draw(
    stem: Path,
    series: Sequence[Series],
    *,
    norm: str,
    title: str,
    eps: Sequence[tuple[str, float]] = (),
    xlabel: str | None = None,
    ylabel: str = "% error",
    floor: torch.Tensor | None = None,
) -> list[Path]:
    """Draw the series (see the module's docstring) and write ``stem``.png and .svg; return the two paths.

    ``eps``: (as written, value) pairs marked by dotted lines; ``floor``: the minimum over attacks, drawn as a
    grey band beneath the series; ``xlabel``, ``ylabel``: the axes' labels (default: adversarial distance, % error)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker
    from matplotlib.lines import Line2D

    low, high = _limits(series, floor, eps)
    figure, (zero, axes) = pyplot.subplots(
        1, 2, sharey=True, figsize=(7.0, 4.6), gridspec_kw={"width_ratios": [1, 12], "wspace": 0.04})
    colours = _palette(pyplot, len(series))
    handles: list[Any] = []

    def curve(distances: Sequence[torch.Tensor], **style: Any) -> None:
        points, errors = mean_curve(distances)
        clean = _mean_error(distances, 0.0)
        axes.step(*_steps(points, errors, clean, low, high), where="post", **style)
        zero.plot([-1, 1], [100 * clean] * 2, **{k: v for k, v in style.items() if k != "label"})

    if floor is not None:
        band = {"color": "0.5", "alpha": 0.35, "linewidth": 8, "solid_capstyle": "butt", "zorder": 1}
        curve([floor], **band)
        handles.append(Line2D([], [], **band, label="min over attacks (grey band, drawn beneath)"))
    several = any(len(s.seeds) > 1 for s in series)
    for index, one in enumerate(series):
        colour = colours[index % len(colours)]
        dashed = "--" if index >= len(colours) else "-"
        if len(one.seeds) > 1:
            for seed in one.seeds:
                curve([seed], color=colour, linewidth=0.7, alpha=0.45, linestyle=dashed, zorder=2)
        curve(one.seeds, color=colour, linewidth=1.8 if several else 1.4, linestyle=dashed, zorder=3)
        handles.append(Line2D([], [], color=colour, linewidth=1.8, linestyle=dashed,
                              label=one.label + (f" ({len(one.seeds)} seeds)" if len(one.seeds) > 1 else "")))
        marks = [value for _, value in eps if value > 0]
        axes.plot(marks, [100 * _mean_error(one.seeds, v) for v in marks], "o", color=colour, markersize=3.5,
                  zorder=4)
    if several:
        handles.append(Line2D([], [], color="0.3", linewidth=0.7, alpha=0.6,
                              label="thin: each seed; thick: mean over seeds"))
    for text, value in eps:
        if value > 0:
            axes.axvline(value, color="0.3", linestyle=":", linewidth=1.0, zorder=1.5)
            axes.text(value, 0.98, f"ε={text}", transform=axes.get_xaxis_transform(), rotation=90, va="top",
                      ha="right", fontsize=7.5, color="0.25")
    axes.set_xscale("log")
    axes.set_xlim(low, high)
    _log_ticks(axes, ticker, low, high)
    axes.set_ylim(0, 100)
    axes.set_xlabel(xlabel or f"adversarial distance ({NORM_NAMES.get(norm, norm)})")
    axes.grid(True, which="major", alpha=0.3)
    axes.grid(True, which="minor", alpha=0.1)
    axes.tick_params(axis="y", left=False)
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    zero.set_xlim(-1, 1)
    zero.set_xticks([0], ["0"])
    zero.set_ylabel(ylabel)
    zero.grid(True, axis="y", alpha=0.3)
    zero.spines["right"].set_visible(False)
    axes.spines["left"].set_visible(False)
    cut = {"marker": [(-1, -1), (1, 1)], "markersize": 8, "linestyle": "none", "color": "black", "clip_on": False}
    zero.plot([1, 1], [0, 1], transform=zero.transAxes, **cut)
    axes.plot([0, 0], [0, 1], transform=axes.transAxes, **cut)
    figure.suptitle(title, fontsize=10)
    written = []
    for suffix in (".png", ".svg"):
        target = stem.with_suffix(suffix)
        atomic_write(target, lambda handle, kind=suffix[1:]: figure.savefig(handle, format=kind, dpi=150,
                                                                                 bbox_inches="tight"))
        written.append(target)
    pyplot.close(figure)
    return written
