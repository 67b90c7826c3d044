"""A command: ``lipcli example-params``, the parameter count of any registered architecture."""

from __future__ import annotations

from typing import Annotated

import typer


def add_to(app: typer.Typer) -> None:
    @app.command("example-params")
    def example_params(
        ctx: typer.Context,
        arch: Annotated[str, typer.Option("--arch", help="Architecture name (lipcli list architectures).")],
        channels: Annotated[int, typer.Option(min=1, help="Image channels.")] = 3,
        size: Annotated[int, typer.Option(min=4, help="Image height and width.")] = 32,
        classes: Annotated[int, typer.Option(min=2, help="Number of classes.")] = 10,
    ) -> None:
        """Parameters of an architecture for images of a given shape (from the lipcli-example plugin)."""
        from lipcli.api import DatasetInfo

        component = ctx.obj.registry("architecture").get(arch)  # an unknown name is lipcli's usual error
        model = component.factory(DatasetInfo("shape", channels, size, size, classes), batchnorm_affine=False)
        count = sum(p.numel() for p in model.parameters())
        typer.echo(f"{component.name}: {count:,} parameters for {channels}x{size}x{size} images, {classes} classes")
