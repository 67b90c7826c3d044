"""``lipcli run`` (an experiment grid, trained and evaluated) and ``lipcli report`` (paper-style tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from lipcli.cli import console
from lipcli.cli.options import Device, Json, Quiet, SetOverrides, Verbose, out_folder
from lipcli.cli.progress import command_engine

Experiment = Annotated[
    Path, typer.Argument(help="Experiment file with \\[grid] and \\[evaluate] tables.", exists=True, dir_okay=False)
]
RunsOut = Annotated[Optional[Path], out_folder("Folder of the runs (default: runs/<file name>).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="List the runs and what each still needs.")]
Folders = Annotated[
    list[Path], typer.Argument(help="Folders holding run folders (searched recursively).", exists=True, file_okay=False)
]
ReportOut = Annotated[
    Optional[Path],
    out_folder("Folder for report.md/.csv/.tex and the figures (default: report/ in the folder given, or here "
               "for several)."),
]


def _conflict(run: object) -> str | None:
    """The run's folder conflict, or why its folder cannot be read (a dry run lists every run regardless)."""
    from lipcli.errors import LipcliError
    from lipcli.experiments.grid_runner import configuration_conflict

    try:
        return configuration_conflict(run)  # type: ignore[arg-type]
    except LipcliError as exc:
        return f"unreadable: {exc}"


def run(
    ctx: typer.Context,
    experiment: Experiment,
    out: RunsOut = None,
    overrides: SetOverrides = None,
    dry_run: DryRun = False,
    device: Device = "auto",
    quiet: Quiet = False,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """Train and evaluate every run of an experiment grid; finished runs are skipped, interrupted ones resume.

    Each run (a combination of the \\[grid] values) is trained, then measured as \\[evaluate] says: error
    curves per norm (curve-<norm>/) and Lipschitz statistics (stats/). --set changes every run's
    configuration (not a key the grid varies). A failed run is reported and the others go on; the exit code
    is then 1.
    """
    from lipcli.experiments.grid import load_grid
    from lipcli.experiments.grid_runner import check_components, pending_stages, run_grid

    grid = load_grid(experiment, out, overrides or ())
    check_components(grid, ctx.obj)
    if dry_run:
        rows = [{"run": r.name, "folder": r.config.output.dir, "needs": pending_stages(r, grid.evaluation),
                 "conflict": _conflict(r), "settings": r.settings} for r in grid.runs]
        if as_json:
            console.print_json(rows)
            return
        table = Table(title=f"{experiment}: {len(rows)} runs", title_justify="left")
        for column in ("#", "run", "needs", "settings"):
            table.add_column(column)
        for number, row in enumerate(rows, start=1):
            settings = ", ".join(f"{k}={v}" for k, v in row["settings"].items())
            needs = row["conflict"] or ", ".join(row["needs"]) or "complete"
            table.add_row(str(number), row["run"], needs, settings)
        console.out.print(table)
        return
    with command_engine(ctx, device, quiet=quiet) as engine:
        outcomes = run_grid(grid, engine, device=device)
    failed = [o for o in outcomes if o.status == "failed"]
    if as_json:
        console.print_json([{"run": o.run.name, "folder": o.run.config.output.dir, "status": o.status,
                             "stages": o.stages, "seconds": o.seconds, "message": o.message} for o in outcomes])
    else:
        table = Table(title=f"{experiment}: {len(outcomes) - len(failed)} complete, {len(failed)} failed",
                      title_justify="left")
        for column in ("run", "status", "ran", "seconds", "message"):
            table.add_column(column, justify="right" if column == "seconds" else "left")
        for o in outcomes:
            table.add_row(o.run.name, o.status, ", ".join(o.stages) or "-", f"{o.seconds:.1f}", o.message)
        console.out.print(table)
    if failed:
        raise typer.Exit(1)


def report(
    folders: Folders,
    out: ReportOut = None,
    quiet: Quiet = False,
    as_json: Json = False,
    verbose: Verbose = False,
) -> None:
    """The paper's tables per data set (robustness: Tables 1/3/5; stability: Tables 4/6), best values
    marked, as a rich table, Markdown, CSV and LaTeX, and the models' error curves on one plot per norm.

    The report shows no progress: --quiet is accepted so that the same flags work for every command."""
    from lipcli.errors import LipcliError
    from lipcli.experiments.report import collect, summary_json, tables, write_report

    collected = collect(folders)
    if not collected.folders:
        raise LipcliError(f"no run folders (with a config.toml) under {', '.join(map(str, folders))}")
    target = out or (folders[0] / "report" if len(folders) == 1 else Path("report"))
    if not console.out.quiet:  # under torchrun only rank 0 writes (and prints)
        write_report(collected, target)
    if as_json:
        console.print_json(summary_json(collected))
        return
    for found in tables(collected):
        table = Table(title=f"{found.dataset}: {found.kind}", title_justify="left",
                      caption=found.footnote and f"† {found.footnote}", caption_justify="left")
        for heading in found.headings:
            left = heading in found.labels and heading != "seeds"
            table.add_column(heading, justify="left" if left else "right")
        for index in range(len(found.rows)):
            table.add_row(*found.cells(index, bold=lambda s: f"[bold green]{s}[/]"))
        console.out.print(table)
    console.out.print(f"{collected.folders} run folders; written to {target}", highlight=False)


def add_to(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("report")(report)
