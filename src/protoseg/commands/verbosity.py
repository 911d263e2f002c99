"""How much the command line prints: ``-q/--quiet``, the default, ``-v/--verbose`` (``-vv``: debug).

- quiet: errors and each command's final result lines only (no progress bars, no ``note:`` lines, no
  download bars of the Hugging Face Hub);
- default: progress bars (the Hub's download bars included) and the library's notices as ``note:`` lines;
- verbose: also the ``logging`` records of protoseg and of the model libraries (transformers,
  huggingface_hub, diffusers) at INFO, or DEBUG with ``-vv``.

Both options are accepted before the command (``protoseg -q segment ...``) and after it (``protoseg
segment ... -q``); both spellings go through :func:`set_verbosity`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
from huggingface_hub.utils import logging as hub_logging

from protoseg.errors import ProtosegError

QUIET, NORMAL, VERBOSE, DEBUG = -1, 0, 1, 2

QuietOption = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Print only errors and the final result lines: no progress bars, no notes.")]
VerboseOption = Annotated[int, typer.Option(
    "--verbose", "-v", count=True, show_default=False,
    help="Log what protoseg and the model libraries do: -v at INFO, -vv at DEBUG.")]

_LIBRARY_LOGGER = logging.getLogger("protoseg")
_LEVELS = {QUIET: logging.ERROR, NORMAL: logging.WARNING, VERBOSE: logging.INFO, DEBUG: logging.DEBUG}


class _Output:
    """The verbosity of the running command and the handler printing protoseg's log records."""

    level = NORMAL
    handler: logging.Handler | None = None


class _LogLines(logging.Handler):
    """Prints protoseg's records: warnings as ``note: ...`` lines, INFO/DEBUG as ``info: logger: ...``."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            typer.echo(f"note: {record.getMessage()}", err=True)
        else:
            typer.echo(f"{record.levelname.lower()}: {record.name}: {record.getMessage()}", err=True)


def level() -> int:
    """The verbosity of the running command: :data:`QUIET`, :data:`NORMAL`, :data:`VERBOSE` or :data:`DEBUG`."""
    return _Output.level


def is_quiet() -> bool:
    """Whether ``-q/--quiet`` was given: no progress bars, no notes."""
    return _Output.level == QUIET


def set_verbosity(quiet: bool, verbose: int) -> None:
    """Apply ``-q/--quiet`` and ``-v/--verbose`` (given before or after the command; repeated ones add up).

    Raises:
        ProtosegError: quiet and verbose both asked for.
    """
    if not quiet and not verbose:
        return
    if (quiet and verbose) or (quiet and _Output.level > NORMAL) or (verbose and _Output.level == QUIET):
        raise ProtosegError("give -q/--quiet or -v/--verbose, not both")
    _Output.level = QUIET if quiet else min(DEBUG, max(_Output.level, NORMAL) + verbose)
    _apply()
    _show_hub_bars(not quiet)


def _apply() -> None:
    """The handler prints the records of the verbosity; the logger passes them on (the default: its own)."""
    if _Output.handler is not None:
        _Output.handler.setLevel(_LEVELS[_Output.level])
    _LIBRARY_LOGGER.setLevel(logging.NOTSET if _Output.level == NORMAL else _LEVELS[_Output.level])


@contextmanager
def command_output() -> Iterator[None]:
    """While one command line runs: protoseg's log records printed at the default verbosity; afterwards the
    handler is gone and the verbosity back at the default (the CLI may run again in the same process)."""
    _Output.level, _Output.handler = NORMAL, _LogLines()
    _LIBRARY_LOGGER.addHandler(_Output.handler)
    _apply()
    try:
        yield
    finally:
        _LIBRARY_LOGGER.removeHandler(_Output.handler)
        if _Output.level == QUIET:
            _show_hub_bars(True)
        _Output.level, _Output.handler = NORMAL, None
        _apply()


def _show_hub_bars(show: bool) -> None:
    """Switch the Hugging Face Hub's download bars on or off (``HF_HUB_DISABLE_PROGRESS_BARS`` has the last
    word)."""
    if not show:
        disable_progress_bars()
    elif hub_constants.HF_HUB_DISABLE_PROGRESS_BARS is not True:
        enable_progress_bars()


def model_library_output(diffusion: bool = False) -> None:
    """Set up the model libraries' output before models load: the Hub's download bars stay visible (unless
    quiet) while the weight-loading bars and load warnings of transformers (and diffusers, when
    ``diffusion``) are silenced; verbose shows their logs at INFO or DEBUG."""
    import transformers  # import time (seconds): only for commands that load models

    libraries = [hub_logging, transformers.utils.logging]
    transformers.utils.logging.disable_progress_bar()  # also turns the Hub's bars off: turned on again below
    if diffusion:
        import diffusers  # import time (seconds): only for commands that generate

        diffusers.utils.logging.disable_progress_bar()
        libraries.append(diffusers.utils.logging)
    _show_hub_bars(not is_quiet())
    for library in libraries:  # default and quiet: no retry chatter when the Hub is unreachable, no load warnings
        library.set_verbosity({VERBOSE: logging.INFO, DEBUG: logging.DEBUG}.get(_Output.level, logging.ERROR))
