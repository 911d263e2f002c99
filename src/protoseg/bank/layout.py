"""The files of a bank folder: what storage writes, verification checks and the Hub publishes."""

#: The bank's description, written last (its ``files`` and ``bank_id`` cover the data files).
MANIFEST_FILE = "manifest.json"

#: Files whose contents the ``bank_id`` covers, in hashing order (``keys.npy`` and ``keys.faiss`` optional).
DATA_FILES = ("prototypes.npy", "table.parquet", "keys.npy", "keys.faiss")
