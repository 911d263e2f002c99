"""Banks grown without a rebuild: several banks merged into one, a bank extended by another's classes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from protoseg.bank.prototype_bank import PrototypeBank, load_bank
from protoseg.bank.storage import check_bank_out


def merge_banks(sources: Sequence[str | Path], out: str | Path) -> PrototypeBank:
    """Write at ``out`` (which must not exist) the union of the banks ``sources`` (folders or ``hf://``
    addresses, built with the same encoders); returns it."""
    check_bank_out(out)
    merged = PrototypeBank.merge([load_bank(source) for source in sources])
    merged.save(out)
    return merged


def extend_bank(bank: str | Path, new: str | Path, out: str | Path, replace: bool = False) -> PrototypeBank:
    """Write at ``out`` the bank ``bank`` with the classes of ``new`` added (``replace``: classes in both
    come from ``new``); ``out`` may be ``bank`` itself, replaced atomically. Returns the grown bank."""
    in_place = Path(out).resolve() == Path(bank).resolve()
    check_bank_out(out, overwrite=in_place)
    grown = load_bank(bank, mmap=False).extend(load_bank(new), replace_existing=replace)
    grown.save(out, overwrite=in_place)
    return grown
