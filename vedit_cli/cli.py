"""Typer app: `vedit edit | download | benchmark | evaluate`. Thin: each command lives in vedit_cli/commands/."""

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


def _register_commands() -> None:
    """Each module in vedit_cli/commands exposes `register(app)`; heavy imports stay inside the command bodies."""
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"vedit_cli.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"vedit_cli.commands.{name}":
                continue  # command not built yet
            raise
        module.register(app)


def main() -> None:
    """Console entry point: VeditError -> one line on stderr and exit 1; VEDIT_DEBUG=1 shows tracebacks."""
    _register_commands()
    try:
        exit_code = app(standalone_mode=False)  # click returns typer.Exit's code instead of exiting
    except VeditError as error:
        if os.environ.get("VEDIT_DEBUG") == "1":
            raise
        print(f"vedit: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("vedit: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as error:  # a bug: show one line and how to get the traceback
        import click

        if isinstance(error, click.exceptions.ClickException):
            error.show()
            sys.exit(error.exit_code)
        if isinstance(error, click.exceptions.Abort):
            print("vedit: aborted", file=sys.stderr)
            sys.exit(130)
        if os.environ.get("VEDIT_DEBUG") == "1":
            raise
        print(f"vedit: internal error: {type(error).__name__}: {error} (set VEDIT_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(2)
    if exit_code == 130:  # typer turns Ctrl-C into Exit(130); outputs in progress were already removed
        print("vedit: interrupted; finished outputs are kept, rerun to resume", file=sys.stderr)
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


if __name__ == "__main__":
    main()
