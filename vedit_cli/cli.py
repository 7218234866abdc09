"""Typer app: `vedit edit | download | benchmark | evaluate | train`. Thin: each command lives in vedit_cli/commands/.

One exit style for every command (README "Exit codes"):
  0 success; 1 a VeditError ("vedit: error: ...", one line) or a failed clip/threshold/regression;
  2 a usage error (click's usage line naming the option, or one line for an option the backend does not use);
  130 Ctrl-C; 2 a bug ("vedit: internal error: ...", VEDIT_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import os
import sys

import typer

from vedit_cli.errors import VeditError

app = typer.Typer(
    name="vedit",
    help="Edit videos from a text instruction with diffusion models; keeps frame count, frame rate, aspect and audio.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = ("edit", "download", "benchmark", "evaluate", "train")
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BUG = 1, 2, 130, 2


def _register_commands() -> None:
    """Each module in vedit_cli/commands exposes `register(app)`; heavy imports stay inside the command bodies."""
    import importlib

    if app.registered_commands or app.registered_groups:  # main() called again in the same process (tests)
        return
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"vedit_cli.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"vedit_cli.commands.{name}":
                continue  # command not built yet
            raise
        module.register(app)


def _click_exception_types() -> tuple[type, ...]:
    """Typer 0.29 raises the exceptions of its bundled click (typer._click); older Typers those of click."""
    types: list[type] = []
    try:
        from typer._click.exceptions import ClickException

        types.append(ClickException)
    except ImportError:  # pragma: no cover - Typer without a bundled click
        pass
    try:
        import click

        types.append(click.exceptions.ClickException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _abort_types() -> tuple[type, ...]:
    types: list[type] = [typer.Abort]
    try:
        import click

        types.append(click.exceptions.Abort)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def main() -> None:
    """Console entry point: runs the app and turns every outcome into one exit style (see the module docstring)."""
    _register_commands()
    try:
        exit_code = app(standalone_mode=False)  # click returns typer.Exit's code instead of exiting
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _interrupted()
    except VeditError as error:
        if os.environ.get("VEDIT_DEBUG") == "1":
            raise
        print(f"vedit: error: {error}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", EXIT_ERROR))
    except _click_exception_types() as error:  # usage: click's usage line, "Try ... --help", the message
        error.show()
        sys.exit(error.exit_code)
    except _abort_types():
        _interrupted()
    except Exception as error:  # a bug: one line and how to get the traceback
        if os.environ.get("VEDIT_DEBUG") == "1":
            raise
        print(f"vedit: internal error: {type(error).__name__}: {error} (set VEDIT_DEBUG=1 for the traceback)",
              file=sys.stderr)
        sys.exit(EXIT_BUG)
    if exit_code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130); outputs in progress were already removed
        _interrupted()
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


def _interrupted() -> None:
    print("vedit: interrupted; finished outputs are kept, rerun to resume", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
