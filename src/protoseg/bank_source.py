"""A ``--bank`` value to a bank: a bank folder, ``hf://owner/name[@revision]``, or a published bank's name.

:func:`open_bank` is what every reader of a user-given bank calls (the segmenter, ``protoseg segment``, the
eval runner, the demo). A published name (:data:`protoseg.offline.published_banks.PUBLISHED_BANKS`, e.g.
``freeda-l``) is fetched into protoseg's cache on first use and read from there afterwards; an existing
file or folder of the same name always wins. Folders and Hub addresses go to
:func:`protoseg.bank.load_bank` unchanged.
"""

from __future__ import annotations

from pathlib import Path

from protoseg.bank import PrototypeBank, load_bank
from protoseg.offline.published_banks import resolve_published
from protoseg.runs import Progress


def bank_location(source: str | Path, progress: Progress | None = None) -> str | Path:
    """The cached folder of the published bank named ``source`` (downloaded and imported first when absent,
    ``progress`` as :func:`~protoseg.offline.published_banks.fetch_bank`), else ``source`` unchanged.

    Raises:
        ProtosegError: fetching a published bank failed.
    """
    folder = resolve_published(source, progress=progress)
    return source if folder is None else folder


def open_bank(source: str | Path | PrototypeBank, mmap: bool = True,
              progress: Progress | None = None) -> PrototypeBank:
    """The bank ``source`` names (module docstring); a loaded bank is returned as it is. ``bank.source`` of a
    published bank is its cache folder.

    Raises:
        ProtosegError: as :func:`bank_location` and :func:`protoseg.bank.load_bank`.
    """
    if isinstance(source, PrototypeBank):
        return source
    return load_bank(bank_location(source, progress), mmap)
