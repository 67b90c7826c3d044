"""``lipcli stats`` (Lipschitz statistics and bounds of models) and ``lipcli data-lipschitz`` (of data sets)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from lipcli.cli import console
from lipcli.cli.options import (
    BatchSize,
    DataDir,
    DataOptions,
    Device,
    Indices,
    Json,
    Limit,
    ModelDataset,
    ModelFactory,
    Models,
    Normalize,
    Offset,
    Overwrite,
    Quiet,
    Verbose,
    Weights,
    deprecated,
    eps_option,
    image_selection,
    model_paths,
    model_spec,
    out_folder,
    output_anchor,
    parse_eps_option,
)
from lipcli.cli.progress import command_engine
from lipcli.layout import STATS_FOLDER, data_lipschitz_folder, default_out

NORMS = ("l2", "linf")

StatsEps = Annotated[
    Optional[list[str]],
    eps_option("Attack sizes for Lemma 2.2, per norm: NORM=SIZES, e.g. --eps l2=0.1,1.5 --eps linf=4/255,8/255 "
               "(repeatable; default l2=0.1,1.5 and linf=8/255)."),
]
OldEpsL2 = Annotated[Optional[str], typer.Option("--eps-l2", hidden=True, help="Deprecated: --eps l2=SIZES.")]
OldEpsLinf = Annotated[Optional[str], typer.Option("--eps-linf", hidden=True, help="Deprecated: --eps linf=SIZES.")]
StatsOut = Annotated[
    Optional[Path],
    out_folder("Folder for stats.json and stats.csv (default: stats/ beside the checkpoint; for several "
               "checkpoints, stats/ here with a sub-folder each)."),
]
DataOut = Annotated[
    Optional[Path],
    out_folder("Folder for data-lipschitz.json and, with --curve, distances.csv, summary.json and curve.png "
               "(default: data-lipschitz-NAME/)."),
]
Dataset = Annotated[str, typer.Option("--dataset", help="Data set name (lipcli list datasets).")]
Split = Annotated[str, typer.Option("--split", help="train or test: the set whose constant is measured.")]
CurveLimit = Annotated[
    Optional[int],
    typer.Option("--limit", min=1, help="Test images for the nearest-neighbour curve (default: all)."),
]
Curve = Annotated[bool, typer.Option("--curve/--no-curve", help="Also the nearest-neighbour curve.")]


def stats_eps(
    items: list[str] | None, eps_l2: str | None = None, eps_linf: str | None = None
) -> dict[str, list[tuple[str, float]]]:
    """``--eps NORM=SIZES`` items (and the deprecated ``--eps-l2``/``--eps-linf``) as sizes per norm; a norm
    not given is left to the engine's default."""
    given: dict[str, str] = {}
    for item in items or []:
        norm, sep, sizes = item.partition("=")
        norm = norm.strip().lower()
        if not sep or norm not in NORMS:
            raise typer.BadParameter(f"{item!r}: expected NORM=SIZES with NORM l2 or linf, e.g. l2=0.1,1.5 "
                                     f"(lipcli stats reports both norms)", param_hint="--eps")
        if norm in given:
            raise typer.BadParameter(f"{norm} is given twice", param_hint="--eps")
        given[norm] = sizes
    for norm, old in (("l2", eps_l2), ("linf", eps_linf)):
        if old is None:
            continue
        deprecated(f"--eps-{norm}", f"--eps {norm}={old}")
        if norm in given:
            raise typer.BadParameter(f"--eps {norm}=... and --eps-{norm}: give one", param_hint="--eps")
        given[norm] = old
    return {norm: parse_eps_option(sizes, norm) for norm, sizes in given.items()}


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _stats_table(measured: list[Any]) -> Table:
    """A row per model, in the layout of the paper's Tables 4 and 6, plus the bound and the radii; each heading
    says which statistic over the test images it is (mean, max or median; the bound holds for every input)."""
    table = Table(title="Lipschitz statistics over the test images (max: the largest; median: of the per-image "
                  "radii; bound: Eq. (6), for every input)", title_justify="left")
    columns = ("model", "images", "% error", "mean loss", "max ‖∇ℓ‖₂", "max ‖∇f‖₂,∞", "max ‖∇ℓ‖₁", "max ‖∇f‖₁,₁",
               "bound on max ‖∇ℓ‖₂", "median certified r₂", "median estimated r₂")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for m in measured:
        s = m.summary
        certified = s["certified_radius"]["l2"]["median"] if s["certified_radius"] else None
        table.add_row(
            m.label, str(s["images"]), f"{100 * s['clean_error']:.2f}", _g(s["loss"]), _g(s["grad_loss_l2"]["max"]),
            _g(s["jac_f_2inf_max"]), _g(s["grad_loss_l1"]["max"]), _g(s["jac_f_11_max"]),
            _g(s["bound"]["grad_loss_l2"]), _g(certified), _g(s["estimated_radius"]["l2"]["median"]),
        )
    return table


def _lemma_table(measured: list[Any]) -> Table:
    table = Table(title="Lemma 2.2, first order: mean loss under an attack of size eps", title_justify="left")
    for column in ("model", "norm", "eps", "expected", "worst case (estimate)", "worst case (bound)"):
        table.add_column(column, justify="left" if column in ("model", "norm") else "right")
    for m in measured:
        for norm, rows in m.summary["lemma_2_2"].items():
            for row in rows:
                table.add_row(m.label, norm, row["eps"], _g(row["expected_loss"]), _g(row["worst_case_loss_estimate"]),
                              _g(row["worst_case_loss_bound"]))
    return table


def stats(
    ctx: typer.Context,
    models: Models = None,
    limit: Limit = None,
    offset: Offset = 0,
    indices: Indices = None,
    batch_size: BatchSize = None,
    out: StatsOut = None,
    data_dir: DataDir = None,
    dataset: ModelDataset = None,
    data_option: DataOptions = None,
    model: ModelFactory = None,
    weights: Weights = None,
    normalize: Normalize = None,
    device: Device = "auto",
    eps: StatsEps = None,
    eps_l2: OldEpsL2 = None,
    eps_linf: OldEpsLinf = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """Gradient and Jacobian norms over the test set, the Eq. (6) bound beside them, certified radii.

    Writes stats.json and stats.csv (one row per image) into --out (default: stats/ beside the checkpoint;
    for several checkpoints, stats/ here with a sub-folder each).
    """
    from lipcli.lipschitz.measure import measure_checkpoints

    sizes = stats_eps(eps, eps_l2, eps_linf)
    paths = model_paths(models, model)
    out = out or default_out(output_anchor(paths, weights), STATS_FOLDER)
    with command_engine(ctx, device, quiet=quiet) as engine:
        measured = measure_checkpoints(
            paths, engine, out=out, eps=sizes, selection=image_selection(limit, offset, indices),
            batch_size=batch_size, data_dir=data_dir, overwrite=overwrite,
            spec=model_spec(dataset, data_option, model, weights, normalize),
        )
    for m in measured:
        if m.summary["bound"]["unavailable"]:
            console.warn(f"{m.label}: no Eq. (6) bound: {m.summary['bound']['unavailable']}")
    if as_json:
        console.print_json([m.summary for m in measured])
        return
    console.out.print(_stats_table(measured))
    console.out.print(_lemma_table(measured))
    console.out.print(f"written to {out}", highlight=False)


def data_lipschitz(
    ctx: typer.Context,
    dataset: Dataset,
    split: Split = "train",
    data_dir: DataDir = None,
    data_option: DataOptions = None,
    limit: CurveLimit = None,
    curve: Curve = True,
    out: DataOut = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """Lip_{2,inf} of a data set (1 / the smallest l2 distance between images of different classes), exact.

    Exact duplicates with different labels are dropped and reported. With --curve (default), also the
    distance from each test image to the nearest training image of another class, written like lipcli
    curve's output (distances.csv, summary.json, curve.png) into --out (default: data-lipschitz-NAME/).
    """
    from lipcli.config import resolve
    from lipcli.config.loader import parse_override
    from lipcli.layout import DATA_LIPSCHITZ_FILE
    from lipcli.lipschitz.dataset_report import data_lipschitz as measure

    options = dict(parse_override(item, "--data-option", "KEY=VALUE") for item in data_option or [])
    config = resolve(None, {"data.dataset": dataset, "data.data_dir": str(data_dir) if data_dir else None,
                            "data.options": options})
    folder = out or Path(data_lipschitz_folder(config.data.dataset))
    with command_engine(ctx, device, quiet=quiet) as engine:
        report = measure(config.data, engine, split=split, out=folder, limit=limit, curve=curve, overwrite=overwrite)
    if as_json:
        console.print_json(report)
        return
    table = Table(title=f"data Lipschitz constant: {report['dataset']} ({report['split']})", title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    pair = report["pair"]
    rows = [
        ("images", str(report["images"])),
        ("dropped duplicates (different labels)", str(report["dropped_duplicates"]["count"])),
        ("smallest distance, different labels", _g(report["min_distance"])),
        ("Lip_2,inf(D) = 1 / distance", _g(report["lipschitz_2inf"])),
        ("closest pair (indices, labels)", "-" if pair is None else f"{pair['indices']}, {pair['labels']}"),
        ("seconds", f"{report['seconds']:.1f}"),
    ]
    if "nearest_distinct" in report:
        rows.append(("median test distance to another class", _g(report["nearest_distinct"]["median_distance"])))
    for row in rows:
        table.add_row(*row)
    console.out.print(table)
    console.out.print(f"written to {folder / DATA_LIPSCHITZ_FILE}", highlight=False)


def add_to(app: typer.Typer) -> None:
    app.command("stats")(stats)
    app.command("data-lipschitz")(data_lipschitz)
