"""The ``protoseg`` command line.

Every error a user can cause — a :class:`ProtosegError`, a usage error of the command line, a file the
system refuses to read or write — becomes one ``error: ...`` line on stderr and a non-zero exit code;
tracebacks are for bugs only. Notices of the library (e.g. a run starting fresh because its inputs
changed) are printed as ``note: ...`` lines. An interrupted command (Ctrl-C) leaves no partial file and
says that a rerun resumes. Every command takes ``-q/--quiet`` and ``-v/--verbose``, before or after its
name (:mod:`protoseg.commands.verbosity`); ``protoseg --version`` prints the version.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from protoseg.commands import COMMAND_MODULES
from protoseg.commands.verbosity import QuietOption, VerboseOption, command_output, set_verbosity
from protoseg.errors import ProtosegError
from protoseg.version import __version__

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import ClickException, NoArgsIsHelpError

app = typer.Typer(name="protoseg", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Training-free open-vocabulary semantic segmentation with generated visual prototypes.")

#: Printed when a command is interrupted (every output is written atomically and long runs are sharded).
INTERRUPTED = "interrupted; no partial file was left, and rerunning the same command resumes where it stopped"


class Interrupted(Exception):
    """A command was interrupted by the user (Ctrl-C); raised so that the CLI can say so."""


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"protoseg {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_show_version, help="Print protoseg's version and exit.")] = False,
) -> None:
    """The options given before the command: -q/--quiet, -v/--verbose and --version."""
    set_verbosity(quiet, verbose)


def _command(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` as a command: it also takes ``-q/--quiet`` and ``-v/--verbose``, and lets its
    ``KeyboardInterrupt`` reach :func:`run` (typer would turn it into a silent exit 130)."""
    signature = inspect.signature(callback, eval_str=True)

    @functools.wraps(callback)
    def wrapper(*args: Any, quiet: bool = False, verbose: int = 0, **kwargs: Any) -> Any:
        set_verbosity(quiet, verbose)
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted from None

    extra = [inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=QuietOption),
             inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=VerboseOption)]
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *extra])
    return wrapper


def _register(target: typer.Typer) -> None:
    for command in target.registered_commands:
        if command.callback is not None:
            command.callback = _command(command.callback)
    for group in target.registered_groups:
        if group.typer_instance is not None:
            _register(group.typer_instance)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"protoseg.commands.{_name}")
    except ModuleNotFoundError as exc:  # a command group not present in this build
        if exc.name != f"protoseg.commands.{_name}":
            raise
        continue
    _module.register(app)
_register(app)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Usage errors and :class:`ProtosegError` give ``error: <message>`` on stderr and exit code 2; files the
    system refuses give exit code 1; an interruption exit code 130.
    """
    with command_output():
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        result = app(args=argv, prog_name="protoseg", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx is not None else "protoseg --help")
        return 2
    except ClickException as exc:
        command = getattr(getattr(exc, "ctx", None), "command_path", "protoseg")
        typer.echo(f"error: {_one_line(exc.format_message())} (see `{command} --help`)", err=True)
        return exc.exit_code if exc.exit_code else 2
    except ProtosegError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        return 2
    except (Interrupted, KeyboardInterrupt):
        typer.echo(INTERRUPTED, err=True)
        return 130
    except OSError as exc:  # the system refused a file (permissions, disk full, read-only file system)
        where = f" {exc.filename}" if exc.filename else ""
        typer.echo(f"error: cannot access{where}: {exc.strerror or _one_line(exc)}", err=True)
        return 1


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
