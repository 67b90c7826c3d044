"""Paper-style reports from run folders: Tables 1/3/5 (robustness) and 4/6 (stability) per data set, and the
error curves of every model of a data set on one plot per norm (Figure 2).

A run folder is any folder holding a ``config.toml`` (written by ``lipcli train``); its results are read
from ``curve-l2/``, ``curve-linf/`` (``lipcli curve``'s files) and ``stats/stats.json`` (``lipcli stats``).
The robustness columns are recomputed from each image's minimal distance in ``distances.csv``, so they
are the paper's (error at l2 0.1 and 1.5, l-inf 8/255) whatever eps the curves were drawn with. A result that
is missing is a blank, never an error.

Runs that differ only by seed are one row. Seeds are counted by value: two folders of one configuration and one
seed hold one seed twice (a copied or re-run folder), and counting both would shrink the spread, so they are
refused, naming both. A cell over several seeds reads ``mean ± std (n)``: the sample standard deviation (n - 1)
over the n seeds that have the value; one seed prints the value alone. Seeds of a row measured on different test
images (another limit, other images) are refused too: their mean is not an error rate of any image set. Rows of
one table measured on different image sets are kept but marked (†, with a footnote) and not ranked against the
others: the reference set is the one most rows share, and the ``images`` column gives each row's count.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lipcli.config.loader import build_stored
from lipcli.config.toml_reader import load_toml
from lipcli.curves import error_at, median_distance
from lipcli.errors import LipcliError
from lipcli.experiments.grid import identity_tree
from lipcli.figures import Series, describe, draw
from lipcli.files import write_text
from lipcli.layout import (
    CONFIG_FILE,
    DISTANCES_FILE,
    PLAN_FILE,
    STATS_CSV,
    STATS_FILE,
    STATS_FOLDER,
    curve_folder,
)


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

PAPER_EPS = {"l2": (("0.1", 0.1), ("1.5", 1.5)), "linf": (("8/255", 8 / 255),)}
"""The paper's reporting points per norm, (as written, value): the ``<norm>_err_<as written>`` columns."""


@dataclass(frozen=True)
class Images:
    """The test images a result was measured on: how many, and their test indices and labels in order where its
    CSV lists them (results on the same images list the same ones; another limit, offset or subset shows in
    the indices, and other images at the same indices in the labels)."""

    count: int
    labels: tuple[int, ...] | None = None
    indices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Distances:
    """A ``distances.csv`` as the report reads it: the minimum over attacks per image, the images, the attacks."""

    minimum: torch.Tensor
    images: Images
    attacks: list[str]


@dataclass
class Run:
    """One run folder's results: values by column key, the source of each (``l2``, ``linf`` or ``stats``), the
    images each source measured, and per norm the distances and attacks."""

    folder: Path
    seed: int
    values: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    images: dict[str, Images] = field(default_factory=dict)
    curves: dict[str, Distances] = field(default_factory=dict)

    def measure(self, key: str, value: float, source: str) -> None:
        """Record a value (NaN: not measured) and the source it came from."""
        if not math.isnan(value):
            self.values[key] = float(value)
            self.sources[key] = source


@dataclass(frozen=True)
class Spread:
    """A cell over seeds: the mean, the sample standard deviation (n - 1; None for one seed or an infinite value)
    and the number of seeds that have the value."""

    mean: float
    std: float | None
    n: int


@dataclass
class Row:
    """One configuration of one data set (architecture, defence, and ``settings``: whatever else differs
    from the data set's other rows) and its runs, one per seed."""

    dataset: str
    arch: str
    defence: str
    settings: str = ""
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return " ".join(filter(None, (self.arch, self.defence, self.settings)))

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    def spread(self, key: str) -> Spread | None:
        values = [run.values[key] for run in self.runs if key in run.values]
        if not values:
            return None
        mean = statistics.fmean(values)
        finite = len(values) > 1 and all(math.isfinite(v) for v in values)
        return Spread(mean, statistics.stdev(values) if finite else None, len(values))

    def value(self, key: str) -> float | None:
        """The mean over seeds, or None when no seed has the value."""
        found = self.spread(key)
        return None if found is None else found.mean

    def images(self, columns: tuple[Column, ...]) -> frozenset[Images]:
        """The image sets behind the row's cells in these columns (empty when no source says)."""
        return frozenset(run.images[run.sources[c.key]] for run in self.runs for c in columns
                         if c.key in run.sources and run.sources[c.key] in run.images)


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
    of a data set (a learning rate, a model option) becomes their ``settings``. One seed in two folders, or
    seeds of a row measured on different test images, are an error naming the folders."""
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
            rows[identity] = Row(config.data.dataset, config.model.arch, config.defence_label)
            leaves[identity] = flat
        run = _read_run(folder, config.training.seed)
        if run is not None:
            _add_run(rows[identity], run)
    by_dataset: dict[str, list[str]] = {}
    for identity, row in rows.items():
        by_dataset.setdefault(row.dataset, []).append(identity)
    for identities in by_dataset.values():
        keys = {k for i in identities for k in leaves[i]} - _IN_THE_LABEL
        varying = sorted(k for k in keys if len({json.dumps(leaves[i].get(k), default=str) for i in identities}) > 1)
        for i in identities:
            rows[i].settings = ", ".join(f"{k}={_show(leaves[i].get(k))}" for k in varying)
    for row in rows.values():
        _check_images(row)
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


def _add_run(row: Row, run: Run) -> None:
    """A run joins its row unless the row has its seed already (see the module's docstring)."""
    twin = next((other for other in row.runs if other.seed == run.seed), None)
    if twin is not None:
        raise LipcliError(f"{twin.folder} and {run.folder}: the same configuration and seed {run.seed}; two "
                          "folders of one seed are not two seeds: report one of them")
    row.runs.append(run)
    row.runs.sort(key=lambda r: r.seed)


def _check_images(row: Row) -> None:
    """Refuse a row whose seeds were measured on different test images (per source)."""
    for source in ("l2", "linf", "stats"):
        measured = [(run, run.images[source]) for run in row.runs if source in run.images]
        for run, images in measured[1:]:
            first, reference = measured[0]
            if images != reference:
                other = " other" if images.count == reference.count else ""
                raise LipcliError(
                    f"{row.dataset} {row.label}: its seeds were measured on different test images ({source}: "
                    f"{reference.count} images in {first.folder}, {images.count}{other} in {run.folder}); measure "
                    "them on the same images (the same [evaluate] limit) or report them apart")


def _read_run(folder: Path, seed: int) -> Run | None:
    """One run's values (and curves), or None when it has none; the clean error comes from the first source
    present. A stats file that cannot be read counts as missing."""
    run = Run(folder, seed)
    for norm, points in PAPER_EPS.items():
        curve = read_distances(folder / curve_folder(norm) / DISTANCES_FILE)
        if curve is None:
            continue
        run.curves[norm], run.images[norm] = curve, curve.images
        if "error" not in run.values:
            run.measure("error", error_at(curve.minimum, 0.0), norm)
        run.measure(f"{norm}_median", median_distance(curve.minimum), norm)
        for text, eps in points:
            run.measure(f"{norm}_err_{text}", error_at(curve.minimum, eps), norm)
    try:
        stats = json.loads((folder / STATS_FOLDER / STATS_FILE).read_text())
        found = {"grad_loss_l2": float(stats["grad_loss_l2"]["max"]), "grad_loss_l1": float(stats["grad_loss_l1"]["max"]),
                 "jac_f_2inf": float(stats["jac_f_2inf_max"]), "jac_f_11": float(stats["jac_f_11_max"])}
        clean_error = float(stats["clean_error"])
    except (OSError, ValueError, KeyError, TypeError):
        return run if run.values else None
    for key, value in found.items():
        run.measure(key, value, "stats")
    if "error" not in run.values:
        run.measure("error", clean_error, "stats")
    images = _stats_images(folder / STATS_FOLDER, stats)
    if images is not None:
        run.images["stats"] = images
    return run if run.values else None


def _stats_images(folder: Path, stats: dict[str, Any]) -> Images | None:
    """The images ``lipcli stats`` measured: the labels of its stats.csv, else the count in stats.json."""
    listed = _listed(folder / STATS_CSV)
    if listed is not None:
        return listed
    return Images(int(stats["images"])) if isinstance(stats.get("images"), int) else None


def _listed(path: Path) -> Images | None:
    """The images a per-image CSV lists (None without the file or a label column)."""
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        records = list(reader)
        fields = reader.fieldnames or []
    return _images(records, fields) if records and "label" in fields else None


def _images(records: list[dict[str, str]], fields: list[str]) -> Images:
    labels = tuple(int(r["label"]) for r in records) if "label" in fields else None
    indices = tuple(int(r["index"]) for r in records) if "index" in fields else None
    return Images(len(records), labels, indices)


def read_distances(path: Path) -> Distances | None:
    """A ``distances.csv``: its ``min`` column (float64, ``inf`` kept), labels and attack columns; None when
    there is no file or no minimum."""
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        records = [r for r in reader if r.get("min") not in (None, "")]
        fields = reader.fieldnames or []
    if not records:
        return None
    return Distances(torch.tensor([float(r["min"]) for r in records], dtype=torch.float64),
                     _images(records, fields), [f for f in fields if f not in ("index", "label", "prediction", "min")])


def _number(value: float, column: Column) -> str:
    """A value as the tables print it: percentages with two decimals, else 3 significant digits."""
    if math.isinf(value):
        return "inf"
    return f"{100 * value:.2f}" if column.percent else f"{value:.3g}"


def cell(spread: Spread | None, column: Column, plus_minus: str = " ± ") -> str:
    """``mean ± std (n)`` over several seeds, the value alone for one, blank when missing."""
    if spread is None:
        return ""
    if spread.n == 1:
        return _number(spread.mean, column)
    std = "" if spread.std is None else f"{plus_minus}{_number(spread.std, column)}"
    return f"{_number(spread.mean, column)}{std} ({spread.n})"


def _counts(images: frozenset[Images]) -> list[int]:
    return sorted({i.count for i in images}, reverse=True)


@dataclass
class Table:
    """One table of one data set, ready to print: its rows, the rows measured on other test images than the
    reference set (marked, not ranked), and per column the best rows among the others."""

    dataset: str
    kind: str
    columns: tuple[Column, ...]
    rows: list[Row]
    reference: frozenset[Images]
    other_images: set[int]
    best: dict[str, set[int]]

    @property
    def labels(self) -> list[str]:
        """The columns that name a row: model, defence, settings (only when some row has any), seeds."""
        return ["model", "defence", *(["settings"] if any(r.settings for r in self.rows) else []), "seeds"]

    @property
    def headings(self) -> list[str]:
        return [*self.labels, "images", *(c.heading for c in self.columns)]

    def cells(self, index: int, *, bold: Callable[[str], str], plus_minus: str = " ± ", marker: str = "†") -> list[str]:
        row = self.rows[index]
        names = [row.arch, row.defence, *([row.settings] if "settings" in self.labels else []), str(len(row.runs))]
        images = "/".join(map(str, _counts(row.images(self.columns))))
        values = [cell(row.spread(c.key), c, plus_minus) for c in self.columns]
        return [*names, images + (marker if index in self.other_images else ""),
                *(bold(v) if index in self.best[c.key] else v for c, v in zip(self.columns, values))]

    @property
    def footnote(self) -> str | None:
        if not self.other_images:
            return None
        counts = "/".join(map(str, _counts(self.reference)))
        return (f"measured on other test images than the table's other rows ({counts} images): not ranked "
                "against them")


def tables(report: Report) -> list[Table]:
    """Every data set's robustness and stability tables, in order."""
    return [_table(dataset, kind, rows, columns) for dataset, rows in report.rows.items() for kind, columns in TABLES]


def _table(dataset: str, kind: str, rows: list[Row], columns: tuple[Column, ...]) -> Table:
    sets = [row.images(columns) for row in rows]
    shared = Counter(s for s in sets if s)
    reference = max(shared, key=lambda s: (shared[s], sum(i.count for i in s)), default=frozenset())
    other = {i for i, s in enumerate(sets) if s and s != reference}
    return Table(dataset, kind, columns, rows, reference, other, {c.key: _best(rows, c, other) for c in columns})


def _best(rows: list[Row], column: Column, skip: set[int]) -> set[int]:
    """Indices of the rows holding the column's best mean (ties all marked; none when all rows are equal)."""
    shown = [(i, float(_number(s.mean, column))) for i, r in enumerate(rows)  # compare what is printed
             if i not in skip and (s := r.spread(column.key)) is not None]
    if len(shown) < 2:
        return set()
    target = (max if column.larger_is_better else min)(v for _, v in shown)
    best = {i for i, v in shown if v == target}
    return best if len(best) < len(shown) else set()


TABLES = (("robustness", ROBUSTNESS), ("stability", STABILITY))


def markdown(report: Report) -> str:
    """Markdown tables per data set (robustness, then stability), the best value per column in bold."""
    return "\n".join(_markdown_table(t) for t in tables(report))


def latex(report: Report) -> str:
    """LaTeX ``tabular`` environments per data set and table, the best value per column in ``\\textbf``."""
    return "\n".join(_latex_table(t) for t in tables(report))


def _markdown_table(table: Table) -> str:
    head = table.headings
    lines = [f"### {table.dataset}: {table.kind}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(table.cells(i, bold=lambda s: f"**{s}**")) + " |" for i in range(len(table.rows))]
    if table.footnote:
        lines += ["", f"† {table.footnote}"]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = str.maketrans({
    "\\": "\\textbackslash{}", "%": "\\%", "_": "\\_", "&": "\\&", "#": "\\#", "$": "\\$", "{": "\\{",
    "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
})


def escape(text: str) -> str:
    """Text safe inside a LaTeX table cell."""
    return text.translate(_LATEX_SPECIAL)


def _latex_table(table: Table) -> str:
    labels = len(table.labels)
    head = [*(escape(h) for h in table.labels), "images", *(_LATEX_HEADINGS[c.key] for c in table.columns)]
    lines = [f"% {table.dataset}: {table.kind}",
             "\\begin{tabular}{" + "l" * (labels - 1) + "r" * (len(table.columns) + 2) + "}",
             "\\hline", " & ".join(head) + " \\\\", "\\hline"]
    for index in range(len(table.rows)):
        cells = table.cells(index, bold=lambda s: f"\\textbf{{{s}}}", plus_minus=" $\\pm$ ", marker="$^\\dagger$")
        lines.append(" & ".join(escape(c) if i < labels else c for i, c in enumerate(cells)) + " \\\\")
    lines += ["\\hline", "\\end{tabular}"]
    if table.footnote:
        lines.append(f"\\par{{\\footnotesize $^\\dagger$ {escape(table.footnote)}}}")
    return "\n".join(lines) + "\n"


_LATEX_HEADINGS = {
    "error": "\\% err $\\varepsilon=0$", "l2_median": "$\\ell_2$ median",
    "l2_err_0.1": "\\% err $\\ell_2$ 0.1", "l2_err_1.5": "\\% err $\\ell_2$ 1.5",
    "linf_median": "$\\ell_\\infty$ median", "linf_err_8/255": "\\% err $\\ell_\\infty$ 8/255",
    "grad_loss_l2": "$\\max\\|\\nabla\\ell\\|_2$", "jac_f_2inf": "$\\max\\|\\nabla f\\|_{2,\\infty}$",
    "grad_loss_l1": "$\\max\\|\\nabla\\ell\\|_1$", "jac_f_11": "$\\max\\|\\nabla f\\|_{1,1}$",
}


def csv_text(report: Report) -> str:
    """One line per model and data set: per table its image counts (``/`` between several) and whether they are
    other images than the table's reference set (1, marked † in the tables); per column the mean, the sample
    standard deviation and the number of seeds. Plain numbers, blank when missing, no bold."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = [k for _, columns in TABLES for c in columns for k in (c.key, f"{c.key}_std", f"{c.key}_n")]
    kinds = [k for kind, _ in TABLES for k in (f"{kind}_images", f"{kind}_other_images")]
    writer.writerow(["dataset", "model", "defence", "settings", "seeds", *kinds, *keys])
    for dataset, _, record in _records(report):
        writer.writerow([dataset, *map(_csv_value, record.values())])
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, list):
        return "/".join(map(str, value))
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value


def _records(report: Report) -> list[tuple[str, Row, dict[str, Any]]]:
    """(data set, row, the row's fields as csv_text and summary_json give them) per row."""
    by_dataset: dict[str, list[Table]] = {}
    for table in tables(report):
        by_dataset.setdefault(table.dataset, []).append(table)
    records = []
    for dataset, found in by_dataset.items():
        for index, row in enumerate(found[0].rows):
            record: dict[str, Any] = {"model": row.arch, "defence": row.defence, "settings": row.settings,
                                      "seeds": len(row.runs)}
            for table in found:
                record[f"{table.kind}_images"] = _counts(row.images(table.columns))
                record[f"{table.kind}_other_images"] = index in table.other_images
            for table in found:
                for c in table.columns:
                    spread = row.spread(c.key)
                    record[c.key] = None if spread is None else spread.mean
                    record[f"{c.key}_std"] = None if spread is None else spread.std
                    record[f"{c.key}_n"] = 0 if spread is None else spread.n
            records.append((dataset, row, record))
    return records


def write_report(report: Report, out: Path) -> list[Path]:
    """``report.md``, ``report.csv``, ``report.tex`` and the figures ``<dataset>-<norm>.png/.svg`` in ``out``:
    per configuration one colour, its seeds as thin lines under their mean, the paper's eps marked."""
    written = []
    for name, text in (("report.md", markdown(report)), ("report.csv", csv_text(report)), ("report.tex", latex(report))):
        write_text(out / name, text)
        written.append(out / name)
    for dataset, rows in report.rows.items():
        for norm, points in PAPER_EPS.items():
            drawn = [(row, [run.curves[norm] for run in row.runs if norm in run.curves]) for row in rows]
            drawn = [(row, curves) for row, curves in drawn if curves]
            if not drawn:
                continue
            curves = [c for _, found in drawn for c in found]
            title = describe([dataset], norm, [a for c in curves for a in c.attacks], [c.images.count for c in curves])
            series = [Series(row.label, tuple(c.minimum for c in found)) for row, found in drawn]
            written += draw(out / f"{_safe(dataset)}-{norm}", series, norm=norm, title=title, eps=points)
    return written


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def summary_json(report: Report) -> dict[str, Any]:
    """The report as JSON, the fields of csv_text per row (infinite values as None), the seeds listed."""
    result: dict[str, Any] = {dataset: [] for dataset in report.rows}
    for dataset, row, record in _records(report):
        result[dataset].append({**{k: None if isinstance(v, float) and not math.isfinite(v) else v
                                   for k, v in record.items()}, "seeds": row.seeds})
    return result
