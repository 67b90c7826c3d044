"""Paper-style reports from run folders: Tables 1/3/5 (robustness) and 4/6 (stability) per data set, and the
error curves of every model of a data set on one plot per norm (Figure 2).

A run folder is any folder holding a ``config.toml`` (written by ``lipcli train``); its results are read
from ``curve-l2/``, ``curve-linf/`` (``lipcli curve``'s files) and ``stats/stats.json`` (``lipcli stats``).
The robustness columns are recomputed from each image's minimal distance in ``distances.csv``, so they
are the paper's (error at l2 0.1 and 1.5, l-inf 8/255) whatever eps the curves were drawn with. Runs that
differ only by seed are one row, averaged over the seeds present (``seeds`` says how many). A result that is
missing is a blank, never an error.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from lipcli.config.loader import build_stored, load_toml
from lipcli.errors import LipcliError
from lipcli.evaluation.curves import error_at, median_distance
from lipcli.evaluation.results import DISTANCES_FILE, plot_curves
from lipcli.experiments.grid import identity_tree
from lipcli.experiments.runner import PLAN_FILE
from lipcli.files import write_text
from lipcli.training.run_dir import CONFIG_FILE


@dataclass(frozen=True)
class Column:
    """A report column: its key, its heading, and whether a larger value is better."""

    key: str
    heading: str
    larger_is_better: bool = False
    percent: bool = False


ROBUSTNESS = (
    Column("error", "% err ε=0", percent=True),
    Column("l2_median", "l2 median", larger_is_better=True),
    Column("l2_err_0.1", "% err l2 ε=0.1", percent=True),
    Column("l2_err_1.5", "% err l2 ε=1.5", percent=True),
    Column("linf_median", "l∞ median", larger_is_better=True),
    Column("linf_err_8/255", "% err l∞ ε=8/255", percent=True),
)
"""The columns of the paper's Tables 1, 3 and 5."""

STABILITY = (
    Column("grad_loss_l2", "max ‖∇ℓ‖₂"),
    Column("jac_f_2inf", "max ‖∇f‖₂,∞"),
    Column("grad_loss_l1", "max ‖∇ℓ‖₁"),
    Column("jac_f_11", "max ‖∇f‖₁,₁"),
)
"""The columns of the paper's Tables 4 and 6 (maxima over the test images)."""

PAPER_EPS = {"l2": (0.1, 1.5), "linf": (8 / 255,)}
_EPS_KEYS = {"l2": ("l2_err_0.1", "l2_err_1.5"), "linf": ("linf_err_8/255",)}


@dataclass
class Row:
    """One configuration of one data set (architecture, defence, and ``settings``: whatever else differs
    from the data set's other rows), averaged over its seeds."""

    dataset: str
    arch: str
    defence: str
    settings: str = ""
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    curves: dict[str, list[tuple[str, torch.Tensor]]] = field(default_factory=dict)

    def value(self, key: str) -> float | None:
        found = self.values.get(key, [])
        return sum(found) / len(found) if found else None


@dataclass
class Report:
    """Rows grouped by data set (in name order), each data set's rows ordered by model, defence, settings."""

    rows: dict[str, list[Row]]
    folders: int


_IN_THE_LABEL = {"data.dataset", "model.arch", "defence.name"}
"""Settings a row's label shows in full; any other that varies between rows is listed in ``settings``."""


def collect(folders: list[Path]) -> Report:
    """Every run folder below ``folders``, read into rows; unreadable configurations are an error naming them.

    Runs are one row when their configurations are equal but for the seed; what else distinguishes the rows
    of a data set (a learning rate, a model option) becomes their ``settings``."""
    run_folders = sorted({p.parent.resolve() for folder in folders for p in Path(folder).rglob(CONFIG_FILE)})
    rows: dict[str, Row] = {}
    leaves: dict[str, dict[str, Any]] = {}
    for folder in run_folders:
        try:
            config = build_stored(load_toml(folder / CONFIG_FILE))
        except LipcliError as exc:
            raise LipcliError(f"{folder}: {exc}") from None
        tree = identity_tree(config)
        tree["training"]["seed"] = None  # seeds of one configuration are one row
        if config.data.validation == 0 and _measured_best(folder):
            tree["evaluated"] = "best.pt chosen on the test error (an older lipcli)"  # its own, marked row
        flat = dict(_flatten(tree))
        identity = json.dumps(flat, sort_keys=True, default=str)
        if identity not in rows:
            defence = config.defence.label
            if config.model.tanh_head and "tanh" not in defence:
                defence += "+tanh"
            rows[identity] = Row(config.data.dataset, config.model.arch, defence)
            leaves[identity] = flat
        if _read_run(folder, rows[identity], f"s{config.training.seed}"):
            rows[identity].seeds.append(config.training.seed)
    by_dataset: dict[str, list[str]] = {}
    for identity, row in rows.items():
        by_dataset.setdefault(row.dataset, []).append(identity)
    for identities in by_dataset.values():
        keys = {k for i in identities for k in leaves[i]} - _IN_THE_LABEL
        varying = sorted(k for k in keys if len({json.dumps(leaves[i].get(k), default=str) for i in identities}) > 1)
        for i in identities:
            rows[i].settings = ", ".join(f"{k}={_show(leaves[i].get(k))}" for k in varying)
    ordered = {d: sorted((rows[i] for i in ids), key=lambda r: (r.arch, r.defence, r.settings))
               for d, ids in sorted(by_dataset.items())}
    return Report(ordered, len(run_folders))


def _measured_best(folder: Path) -> bool:
    """Whether a grid measured the run's ``best.pt``: without held-out images, only an older lipcli wrote one,
    chosen on the test error."""
    for plan in folder.glob(f"*/{PLAN_FILE}"):
        try:
            if json.loads(plan.read_text()).get("checkpoint") == "best":
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested configuration tables as dotted leaves (``model.options.width``)."""
    items: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _show(value: Any) -> str:
    return "-" if value is None or value == {} else str(value)


def _read_run(folder: Path, row: Row, seed_label: str) -> bool:
    """Add one run's values (and curves) to its row, and say whether it had any; the clean error comes from the
    first source present. A stats file that cannot be read counts as missing."""
    found: dict[str, float] = {}
    for norm in ("l2", "linf"):
        distances = read_minimum(folder / f"curve-{norm}" / DISTANCES_FILE)
        if distances is None:
            continue
        found.setdefault("error", error_at(distances, 0.0))
        found[f"{norm}_median"] = median_distance(distances)
        for key, eps in zip(_EPS_KEYS[norm], PAPER_EPS[norm], strict=True):
            found[key] = error_at(distances, eps)
        row.curves.setdefault(norm, []).append((seed_label, distances))
    try:
        stats = json.loads((folder / "stats" / "stats.json").read_text())
        found.update(grad_loss_l2=float(stats["grad_loss_l2"]["max"]), grad_loss_l1=float(stats["grad_loss_l1"]["max"]),
                     jac_f_2inf=float(stats["jac_f_2inf_max"]), jac_f_11=float(stats["jac_f_11_max"]))
        found.setdefault("error", float(stats["clean_error"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for key, value in found.items():
        if not math.isnan(value):
            row.values.setdefault(key, []).append(float(value))
    return bool(found)


def read_minimum(path: Path) -> torch.Tensor | None:
    """The ``min`` column of a ``distances.csv`` (float64, ``inf`` kept), or None when there is none."""
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        values = [float(r["min"]) for r in csv.DictReader(handle) if r.get("min") not in (None, "")]
    return torch.tensor(values, dtype=torch.float64) if values else None


def best_rows(rows: list[Row], column: Column) -> set[int]:
    """Indices of the rows holding the column's best value (ties all marked; none when all rows are equal)."""
    values = [(i, r.value(column.key)) for i, r in enumerate(rows) if r.value(column.key) is not None]
    if len(values) < 2:
        return set()
    shown = [(i, float(cell(v, column))) for i, v in values]  # compare what is printed, not hidden digits
    target = (max if column.larger_is_better else min)(v for _, v in shown)
    best = {i for i, v in shown if v == target}
    return best if len(best) < len(values) else set()


def cell(value: float | None, column: Column) -> str:
    """A value as the tables print it: blank when missing, percentages with two decimals, else 3 digits."""
    if value is None:
        return ""
    if math.isinf(value):
        return "inf"
    return f"{100 * value:.2f}" if column.percent else f"{value:.3g}"


TABLES = (("robustness", ROBUSTNESS), ("stability", STABILITY))


def markdown(report: Report) -> str:
    """Markdown tables per data set (robustness, then stability), the best value per column in bold."""
    return _render(report, _markdown_table)


def latex(report: Report) -> str:
    """LaTeX ``tabular`` environments per data set and table, the best value per column in ``\\textbf``."""
    return _render(report, _latex_table)


def _render(report: Report, table: Callable[[str, str, list[Row], tuple[Column, ...]], str]) -> str:
    parts = [table(dataset, kind, rows, columns) for dataset, rows in report.rows.items() for kind, columns in TABLES]
    return "\n".join(parts)


def label_headings(rows: list[Row]) -> list[str]:
    """The columns that name a row: model, defence, settings (only when some row has any), seeds."""
    return ["model", "defence", *(["settings"] if any(r.settings for r in rows) else []), "seeds"]


def label_cells(row: Row, headings: list[str]) -> list[str]:
    return [row.arch, row.defence, *([row.settings] if "settings" in headings else []), str(len(row.seeds))]


def _cells(rows: list[Row], columns: tuple[Column, ...], mark: Callable[[str], str]) -> list[list[str]]:
    best = {c.key: best_rows(rows, c) for c in columns}
    headings = label_headings(rows)
    return [
        label_cells(row, headings)
        + [mark(cell(row.value(c.key), c)) if i in best[c.key] else cell(row.value(c.key), c) for c in columns]
        for i, row in enumerate(rows)
    ]


def _markdown_table(dataset: str, kind: str, rows: list[Row], columns: tuple[Column, ...]) -> str:
    head = [*label_headings(rows), *(c.heading for c in columns)]
    lines = [f"### {dataset}: {kind}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in _cells(rows, columns, lambda s: f"**{s}**")]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = str.maketrans({
    "\\": "\\textbackslash{}", "%": "\\%", "_": "\\_", "&": "\\&", "#": "\\#", "$": "\\$", "{": "\\{",
    "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
})


def escape(text: str) -> str:
    """Text safe inside a LaTeX table cell."""
    return text.translate(_LATEX_SPECIAL)


def _latex_table(dataset: str, kind: str, rows: list[Row], columns: tuple[Column, ...]) -> str:
    labels = label_headings(rows)
    head = [*(escape(h) for h in labels), *(_LATEX_HEADINGS[c.key] for c in columns)]
    lines = [f"% {dataset}: {kind}", "\\begin{tabular}{" + "l" * (len(labels) - 1) + "r" * (len(columns) + 1) + "}",
             "\\hline", " & ".join(head) + " \\\\", "\\hline"]
    for cells in _cells(rows, columns, lambda s: f"\\textbf{{{s}}}"):
        lines.append(" & ".join(escape(c) if i < len(labels) else c for i, c in enumerate(cells)) + " \\\\")
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


_LATEX_HEADINGS = {
    "error": "\\% err $\\varepsilon=0$", "l2_median": "$\\ell_2$ median",
    "l2_err_0.1": "\\% err $\\ell_2$ 0.1", "l2_err_1.5": "\\% err $\\ell_2$ 1.5",
    "linf_median": "$\\ell_\\infty$ median", "linf_err_8/255": "\\% err $\\ell_\\infty$ 8/255",
    "grad_loss_l2": "$\\max\\|\\nabla\\ell\\|_2$", "jac_f_2inf": "$\\max\\|\\nabla f\\|_{2,\\infty}$",
    "grad_loss_l1": "$\\max\\|\\nabla\\ell\\|_1$", "jac_f_11": "$\\max\\|\\nabla f\\|_{1,1}$",
}


def csv_text(report: Report) -> str:
    """One line per model and data set, every column, plain numbers (blank when missing; no marking)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = [c for _, cs in TABLES for c in cs]
    writer.writerow(["dataset", "model", "defence", "settings", "seeds", *(c.key for c in columns)])
    for dataset, rows in report.rows.items():
        for row in rows:
            writer.writerow([dataset, row.arch, row.defence, row.settings, len(row.seeds),
                             *("" if row.value(c.key) is None else repr(row.value(c.key)) for c in columns)])
    return buffer.getvalue()


def write_report(report: Report, out: Path) -> list[Path]:
    """``report.md``, ``report.csv``, ``report.tex`` and the figures ``<dataset>-<norm>.png/.svg`` in ``out``."""
    written = []
    for name, text in (("report.md", markdown(report)), ("report.csv", csv_text(report)), ("report.tex", latex(report))):
        write_text(out / name, text)
        written.append(out / name)
    for dataset, rows in report.rows.items():
        for norm in ("l2", "linf"):
            curves = [
                (" ".join(filter(None, (row.arch, row.defence, row.settings)))
                 + (f" {seed}" if len(row.curves[norm]) > 1 else ""), distances)
                for row in rows for seed, distances in row.curves.get(norm, [])
            ]
            if curves:
                stem = out / f"{_safe(dataset)}-{norm}"
                written += plot_curves(stem, curves, norm, f"{dataset}: error curves ({norm})")
    return written


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def summary_json(report: Report) -> dict[str, Any]:
    """The report as JSON: per data set, the rows with every column (None where missing)."""
    columns = [c for _, cs in TABLES for c in cs]
    return {
        dataset: [{"model": r.arch, "defence": r.defence, "settings": r.settings, "seeds": r.seeds,
                   **{c.key: r.value(c.key) if r.value(c.key) is None or math.isfinite(r.value(c.key)) else None
                      for c in columns}}
                  for r in rows]
        for dataset, rows in report.rows.items()
    }
