"""``lipcli robust``: robust accuracy at fixed eps under the AutoAttack protocol (RobustBench's numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from lipcli.cli import console
from lipcli.cli.console import percent
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
from lipcli.layout import default_out, robust_folder

RobustEps = Annotated[str, eps_option("Budgets in the norm's units for inputs in [0, 1], e.g. 8/255 or 0.5,1.0.")]
Version = Annotated[
    Optional[str],
    typer.Option("--version", help="standard (APGD-CE, APGD-T, FAB-T, Square) or fast (APGD-CE, APGD-T); "
                                   "default standard. --attack names the attacks instead.", show_default=False),
]
Curves = Annotated[
    Optional[list[Path]],
    typer.Option("--curve", help="lipcli curve's distances.csv (or its folder) for the checkpoint, one per "
                                 "checkpoint: images with a minimal distance <= eps count as broken.", exists=True),
]
Out = Annotated[Optional[Path], out_folder("Folder for robust.csv and summary.json.")]


def _evaluate(
    ctx: typer.Context, paths: list[Path], *, norm: str, eps: str, version: str | None, attacks: list[str] | None,
    curve: list[Path] | None, options: list[str] | None, selection: Any, batch_size: int | None,
    data_dir: Path | None, device: str, seed: int | None, out: Path, quiet: bool, overwrite: bool, spec: Any,
) -> list[Any]:
    """Robust accuracy of ``paths``, warnings shown."""
    from lipcli.evaluation.robust import build_ensemble, ensemble_names, evaluate_robust

    points = parse_eps_option(eps)
    if not points:
        raise typer.BadParameter("give at least one eps", param_hint="--eps")
    recorded, names = ensemble_names(version, attacks)
    built, resolved = build_ensemble(names, attack_options(options), ctx.obj)
    with command_engine(ctx, device, quiet=quiet) as engine:
        evaluations = evaluate_robust(
            paths, engine, norm=norm, attacks=built, options=resolved, eps=points, out=out, version=recorded,
            seed=seed,
            curves=curve, selection=selection, batch_size=batch_size, data_dir=data_dir, overwrite=overwrite, spec=spec,
        )
    for evaluation in evaluations:
        for warning in evaluation.summary["warnings"]:
            console.warn(f"{evaluation.label}: {warning}")
    return evaluations


def robust(
    ctx: typer.Context,
    norm: Norm,
    eps: RobustEps,
    models: Models = None,
    version: Version = None,
    attacks: Attacks = None,
    curve: Curves = None,
    limit: Limit = None,
    offset: Offset = 0,
    indices: Indices = None,
    batch_size: BatchSize = None,
    data_dir: DataDir = None,
    dataset: ModelDataset = None,
    data_option: DataOptions = None,
    model: ModelFactory = None,
    weights: Weights = None,
    normalize: Normalize = None,
    device: Device = "auto",
    seed: Seed = None,
    out: Out = None,
    attack_option: AttackOptions = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """Robust accuracy at fixed eps, as RobustBench reports it: an image is robust only if every attack of
    the ensemble (run in sequence on the images still robust) fails within eps.

    Writes robust.csv (per image and eps: robust, or what broke it) and summary.json (default folder:
    robust-NORM beside the checkpoint, or in the current folder for several checkpoints).
    """
    paths = model_paths(models, model)
    out = out or default_out(output_anchor(paths, weights), robust_folder(norm))
    evaluations = _evaluate(
        ctx, paths, norm=norm, eps=eps, version=version, attacks=attacks, curve=curve,
        options=attack_option, selection=image_selection(limit, offset, indices), batch_size=batch_size,
        data_dir=data_dir, device=device, seed=seed, out=out, quiet=quiet, overwrite=overwrite,
        spec=model_spec(dataset, data_option, model, weights, normalize),
    )
    if as_json:
        console.print_json([e.summary for e in evaluations])
        return
    first = evaluations[0].summary
    table = Table(title=f"robust accuracy, % ({first['norm']}, {first['version']}: {', '.join(first['attacks'])})",
                  title_justify="left")
    for column in ("model", "images", "clean", "eps", *(f"after {name}" for name in first["attacks"]),
                   "robust", "seconds"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for evaluation in evaluations:
        s = evaluation.summary
        for number, (text, point) in enumerate(s["per_eps"].items()):
            lead = (evaluation.label, str(s["images"]), percent(s["clean_accuracy"])) if number == 0 else ("",) * 3
            table.add_row(
                *lead, text, *(percent(v) for v in point["robust_accuracy_after"].values()),
                percent(point["robust_accuracy"]),
                f"{sum(a['seconds'] for a in point['attacks'].values()):.1f}", end_section=False,
            )
        table.rows[-1].end_section = True
    console.out.print(table)
    console.out.print(f"written to {out}", highlight=False)


def add_to(app: typer.Typer) -> None:
    app.command("robust")(robust)
