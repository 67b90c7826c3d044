"""``lipcli curve`` (error curves of one or more models) and ``lipcli attack`` (attacks compared on one model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from lipcli.cli import console
from lipcli.cli.console import distance, percent
from lipcli.cli.options import (
    AttackOptions,
    Attacks,
    BatchSize,
    DataDir,
    DataOptions,
    Device,
    Indices,
    Json,
    Limit,
    Model,
    ModelDataset,
    ModelFactory,
    Models,
    Norm,
    Normalize,
    Offset,
    Overwrite,
    Quiet,
    Seed,
    Verbose,
    Weights,
    attack_options,
    eps_option,
    image_selection,
    model_paths,
    model_spec,
    out_folder,
    output_anchor,
    parse_eps_option,
)
from lipcli.cli.progress import command_engine
from lipcli.layout import attacks_folder, curve_folder, default_out

Eps = Annotated[Optional[str], eps_option("Report error at these distances, e.g. 0.1,1.5 or 8/255.")]
Out = Annotated[Optional[Path], out_folder("Folder for distances.csv, summary.json, curve.png.")]
MaskingCheckImages = Annotated[
    int,
    typer.Option("--masking-check", min=0, metavar="IMAGES",
                 help="Run the gradient-free Square attack just inside the gradient attacks' distances on this many "
                      "images and warn if it wins (0: off)."),
]
SaveAdversarials = Annotated[
    bool,
    typer.Option("--save-adversarials",
                 help="Also write adversarials.pt: per image the closest adversarial found, its distance and label."),
]
RequiredAttacks = Annotated[
    list[str], typer.Option("--attack", "-a", help="Attack name, repeatable (lipcli list attacks).")
]


def _evaluate(
    ctx: typer.Context, paths: list[Path], *, norm: str, attacks: list[str] | None, by: str,
    options: list[str] | None, selection: Any, batch_size: int | None, eps: str | None, out: Path,
    data_dir: Path | None, device: str, quiet: bool, seed: int | None, save_adversarials: bool, masking_check: int,
    overwrite: bool, spec: Any,
) -> list[Any]:
    """The curves of ``paths`` (one per model, or one per attack ``by="attack"``), warnings shown."""
    from lipcli.evaluation.minimal_distances import (
        build_attacks,
        evaluate_checkpoints,
    )

    points = None if eps is None else parse_eps_option(eps)
    built = build_attacks(attacks, attack_options(options), ctx.obj)
    with command_engine(ctx, device, quiet=quiet) as engine:
        evaluations = evaluate_checkpoints(
            paths, engine, norm=norm, attacks=built, eps=points, out=out, by=by, selection=selection,
            batch_size=batch_size, data_dir=data_dir, seed=seed, save_adversarials=save_adversarials,
            masking_check=masking_check, overwrite=overwrite, spec=spec,
        )
    for evaluation in evaluations:
        for warning in evaluation.summary["warnings"]:
            console.warn(f"{evaluation.label}: {warning}")
    return evaluations


def curve(
    ctx: typer.Context,
    models: Models = None,
    norm: Norm = "l2",
    attacks: Attacks = None,
    limit: Limit = None,
    offset: Offset = 0,
    indices: Indices = None,
    batch_size: BatchSize = None,
    eps: Eps = None,
    out: Out = None,
    data_dir: DataDir = None,
    dataset: ModelDataset = None,
    data_option: DataOptions = None,
    model: ModelFactory = None,
    weights: Weights = None,
    normalize: Normalize = None,
    device: Device = "auto",
    attack_option: AttackOptions = None,
    seed: Seed = None,
    save_adversarials: SaveAdversarials = False,
    masking_check: MaskingCheckImages = 16,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """Error curves: per test image the smallest adversarial distance found, and % error against distance.

    Writes distances.csv, summary.json and curve.png/.svg (default folder: curve-NORM beside the
    checkpoint, or in the current folder for several checkpoints, drawn on one plot). Random attacks draw
    from --seed: the same seed and batch size give the same distances.
    """
    paths = model_paths(models, model)
    out = out or default_out(output_anchor(paths, weights), curve_folder(norm))
    evaluations = _evaluate(
        ctx, paths, norm=norm, attacks=attacks, by="model", options=attack_option,
        selection=image_selection(limit, offset, indices), batch_size=batch_size, eps=eps, out=out,
        data_dir=data_dir, device=device, quiet=quiet, seed=seed,
        save_adversarials=save_adversarials, masking_check=masking_check, overwrite=overwrite,
        spec=model_spec(dataset, data_option, model, weights, normalize),
    )
    if as_json:
        console.print_json([e.summary for e in evaluations])
        return
    first = evaluations[0].summary
    table = Table(title=f"robustness ({first['norm']}, {', '.join(first['attacks'])})", title_justify="left")
    for column in ("model", "images", "% error", "median", *(f"% err @{t}" for t in first["eps"]),
                   "failures", "seconds", "queries"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for evaluation in evaluations:
        s = evaluation.summary
        table.add_row(
            evaluation.label, str(s["images"]), percent(s["clean_error"]), distance(s["median_distance"]),
            *(percent(v) for v in s["error_at"].values()), str(s["failures"]), f"{s['seconds']:.1f}",
            str(s["queries"]),
        )
    console.out.print(table)
    console.out.print(f"written to {out}", highlight=False)


def attack(
    ctx: typer.Context,
    attacks: RequiredAttacks,
    model_file: Model = None,
    norm: Norm = "l2",
    limit: Limit = None,
    offset: Offset = 0,
    indices: Indices = None,
    batch_size: BatchSize = None,
    eps: Eps = None,
    out: Out = None,
    data_dir: DataDir = None,
    dataset: ModelDataset = None,
    data_option: DataOptions = None,
    model: ModelFactory = None,
    weights: Weights = None,
    normalize: Normalize = None,
    device: Device = "auto",
    attack_option: AttackOptions = None,
    seed: Seed = None,
    save_adversarials: SaveAdversarials = False,
    masking_check: MaskingCheckImages = 16,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """Compare attacks on one model: a curve per attack, each attack's time and queries, the strongest.

    Writes distances.csv (a column per attack), summary.json and curve.png/.svg (default folder:
    attacks-NORM beside the checkpoint).
    """
    paths = model_paths([model_file] if model_file else None, model)
    out = out or default_out(output_anchor(paths, weights), attacks_folder(norm))
    (evaluation,) = _evaluate(
        ctx, paths, norm=norm, attacks=attacks, by="attack", options=attack_option,
        selection=image_selection(limit, offset, indices), batch_size=batch_size, eps=eps, out=out,
        data_dir=data_dir, device=device, quiet=quiet, seed=seed,
        save_adversarials=save_adversarials, masking_check=masking_check, overwrite=overwrite,
        spec=model_spec(dataset, data_option, model, weights, normalize),
    )
    s = evaluation.summary
    if as_json:
        console.print_json(s)
        return
    table = Table(
        title=f"attacks on {evaluation.label} ({s['norm']}, {s['images']} images, {percent(s['clean_error'])} % "
              f"clean error)", title_justify="left",
    )
    for column in ("attack", "median", *(f"% err @{t}" for t in s["eps"]), "failures", "best on",
                   "seconds", "queries/image"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for name, row in s["per_attack"].items():
        table.add_row(
            name, distance(row["median_distance"]), *(percent(v) for v in row["error_at"].values()),
            str(row["failures"]), str(row["best_on"]), f"{row['seconds']:.1f}", f"{row['queries_per_image']:.0f}",
        )
    table.add_row(
        "min over attacks", distance(s["median_distance"]), *(percent(v) for v in s["error_at"].values()),
        str(s["failures"]), "", f"{s['seconds']:.1f}", "", style="bold",
    )
    console.out.print(table)
    console.out.print(f"strongest: {s['strongest']} (smallest median distance); written to {out}", highlight=False)


def add_to(app: typer.Typer) -> None:
    app.command("curve")(curve)
    app.command("attack")(attack)
