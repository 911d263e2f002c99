"""Prototype banks: the on-disk artifact between the offline and online stages."""

from protoseg.bank.index import KeyIndex
from protoseg.bank.storage import FORMAT_VERSION, BankManifest, PrototypeBank

__all__ = ["FORMAT_VERSION", "BankManifest", "KeyIndex", "PrototypeBank"]
