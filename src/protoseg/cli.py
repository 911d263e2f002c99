"""The ``protoseg`` command line.

Every command turns :class:`ProtosegError` (and other expected failures of user input) into one line on
stderr and a non-zero exit code; tracebacks are for bugs only.
"""

from __future__ import annotations

import importlib
import sys

import typer

from protoseg.commands import COMMAND_MODULES
from protoseg.errors import ProtosegError

app = typer.Typer(name="protoseg", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Training-free open-vocabulary semantic segmentation with generated visual prototypes.")

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"protoseg.commands.{_name}")
    except ModuleNotFoundError as exc:  # a command group not present in this build
        if exc.name != f"protoseg.commands.{_name}":
            raise
        continue
    _module.register(app)
importlib.import_module("protoseg.commands.compare").register(app)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Usage errors are reported by the command-line parser itself (exit code 2); a :class:`ProtosegError`
    becomes ``error: <message>`` on stderr and exit code 2.
    """
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except ProtosegError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is kept and a rerun resumes", err=True)
        return 130
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
