"""Shared helpers of the build tests: a private tiny-model cache and bank comparison."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest


@contextmanager
def tiny_cache(folder: Path) -> Iterator[Path]:
    """Point ``PROTOSEG_CACHE`` at ``folder`` meanwhile (tiny models are created there on first use)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROTOSEG_CACHE", str(folder))
        yield folder


def assert_banks_identical(a: Path, b: Path) -> None:
    """Prototypes and keys byte-identical, tables and manifests equal."""
    assert (a / "prototypes.npy").read_bytes() == (b / "prototypes.npy").read_bytes()
    assert pq.read_table(a / "table.parquet").equals(pq.read_table(b / "table.parquet"))
    assert json.loads((a / "manifest.json").read_text()) == json.loads((b / "manifest.json").read_text())
    for name in ("keys.npy",):
        assert (a / name).is_file() == (b / name).is_file()
        if (a / name).is_file():
            np.testing.assert_array_equal(np.load(a / name), np.load(b / name))
            assert (a / name).read_bytes() == (b / name).read_bytes()
