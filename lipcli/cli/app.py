"""The ``lipcli`` Typer app: global options, error handling at the command boundary, plugin commands.

Commands are thin: each is a module-level function of a ``*_cmd`` module, registered by its ``add_to(app)``,
that parses its options (the shared ones declared once, in :mod:`lipcli.cli.options`) and calls the engine,
which never imports Typer. Domain errors (:class:`lipcli.errors.LipcliError`) become one red line on stderr
and their exit code (1, or 2 for configuration and usage errors); ``-v/--verbose``, before or after the
command name, adds the traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from lipcli.cli import (
    config_cmd,
    console,
    experiment_cmd,
    lipschitz_cmd,
    plugins_cmd,
    robust_cmd,
    robustness_cmd,
    train_cmd,
)
from lipcli.cli.help import LipcliCommand, PlainFlags
from lipcli.cli.options import VERBOSE_KEY, Verbose
from lipcli.errors import LipcliError
from lipcli.plugin_host import PluginHost, get_host
from lipcli.version import VERSION

_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class LipcliGroup(PlainFlags, TyperGroup):
    """Turns domain errors raised anywhere below into a one-line message and an exit code; usage errors too
    (Click's own are a framed block): the message, then the help hint on a second line."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _CLICK_ERROR as exc:  # the Click Typer bundles (or the installed one, for older Typer)
            if not exc.format_message().strip():  # no arguments: the help was printed, nothing else to say
                sys.exit(exc.exit_code)
            console.error(exc.format_message())
            usage = getattr(exc, "ctx", None)
            if usage is not None:
                console.err.print(f"Try '{usage.command_path} --help' for help.", highlight=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            console.error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LipcliError as exc:
            if ctx.meta.get(VERBOSE_KEY):
                console.err.print_exception()
            console.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.error("interrupted")
            raise typer.Exit(130) from None
        except OSError as exc:  # a full disk, a vanished folder: what failed, in one line (files are atomic)
            if ctx.meta.get(VERBOSE_KEY):
                console.err.print_exception()
            where = f"{exc.filename}: " if exc.filename else ""
            console.error(f"{where}{exc.strerror or exc}")
            raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lipcli {VERSION}")
        raise typer.Exit()


VersionFlag = Annotated[
    Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
]


def main_options(version: VersionFlag = None, verbose: Verbose = False) -> None:
    """The options given before the command name (their callbacks act on them); -v also works after it."""


def build_app(host: PluginHost | None = None) -> typer.Typer:
    """The app with the built-in commands and every plugin's ``register_commands``; every command finds
    ``host`` as ``ctx.obj``."""
    host = host or get_host()
    app = typer.Typer(
        name="lipcli",
        cls=LipcliGroup,
        help="Train and measure adversarially robust image classifiers (Lipschitz regularisation of the loss).",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"obj": host},
    )
    app.callback()(main_options)
    plugins_cmd.add_to(app)
    config_cmd.add_to(app)
    train_cmd.add_to(app)
    robustness_cmd.add_to(app)
    robust_cmd.add_to(app)
    lipschitz_cmd.add_to(app)
    experiment_cmd.add_to(app)
    host.add_commands(app)
    _plain_flags(app)
    return app


def _plain_flags(app: typer.Typer) -> None:
    """Every command, plugins' included, shows its flags without a ``<bool>`` value (see :class:`PlainFlags`)."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # Typer's default; a class of the command's own is kept
            info.cls = LipcliCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _plain_flags(group.typer_instance)


def main() -> None:
    """Console-script entry point. Under torchrun (``WORLD_SIZE > 1``) every process joins the process group
    first; only rank 0 prints results and progress."""
    console.route_warnings()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        build_app()()
        return
    from lipcli import distributed

    group = distributed.setup()
    console.out.quiet = not group.main
    try:
        build_app()()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    distributed.teardown(succeeded=code == 0)
    # gloo's worker threads can abort the interpreter's own shutdown (SIGABRT after the work is done, seen now
    # and then in the tests here): everything is written and flushed, so end without that shutdown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
