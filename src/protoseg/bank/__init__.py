"""Prototype banks: the on-disk artifact between the offline and online stages."""

from protoseg.bank.grow import extend_bank, merge_banks
from protoseg.bank.index import KeyIndex
from protoseg.bank.prototype_bank import PrototypeBank, load_bank
from protoseg.bank.storage import FORMAT_VERSION, BankManifest

__all__ = ["FORMAT_VERSION", "BankManifest", "KeyIndex", "PrototypeBank", "extend_bank", "load_bank", "merge_banks"]
