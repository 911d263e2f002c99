import json
import os

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from protoseg.bank import KeyIndex, PrototypeBank
from protoseg.bank.columns import Categories
from protoseg.bank.index import FlatKeys
from protoseg.bank.storage import TABLE_COLUMNS, write_manifest
from protoseg.errors import ProtosegError
from protoseg.offline import import_freeda


def make_bank(rng, classes=("cat", "dog"), per_class=5, dim=8, keys=True, encoder="facebook/dinov2-base"):
    labels = [c for c in classes for _ in range(per_class)]
    protos = rng.normal(size=(len(labels), dim)).astype(np.float32)
    key = rng.normal(size=(len(labels), 4)).astype(np.float32) if keys else None
    table = {"label": labels, "text": [f"a photo of a {c}" for c in labels],
             "image_id": np.arange(len(labels)), "level": ["whole"] * len(labels)}
    return PrototypeBank.create(protos, table, method="test", feature_encoder=encoder, keys=key,
                                text_encoder="openai/clip-vit-base-patch16" if keys else None)


def test_roundtrip_fp16_memory_mapped(tmp_path, rng):
    bank = make_bank(rng)
    bank.save(tmp_path / "b")
    loaded = PrototypeBank.load(tmp_path / "b")
    assert isinstance(loaded.prototypes, np.memmap) and loaded.prototypes.dtype == np.float16
    np.testing.assert_array_equal(loaded.prototypes, bank.prototypes)
    assert loaded.table["label"].tolist() == bank.table["label"].tolist()
    assert loaded.classes == ["cat", "dog"] and len(loaded) == 10
    np.testing.assert_allclose(np.linalg.norm(loaded.keys, axis=1), 1, atol=1e-6)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["feature_dim"] == 8 and manifest["format_version"] == 1
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary leftovers


def test_save_refuses_to_overwrite_and_partial_dirs_do_not_load(tmp_path, rng):
    bank = make_bank(rng)
    bank.save(tmp_path / "b")
    with pytest.raises(ProtosegError, match="already exists"):
        bank.save(tmp_path / "b")
    (tmp_path / "half").mkdir()
    np.save(tmp_path / "half" / "prototypes.npy", np.zeros((2, 2)))
    with pytest.raises(ProtosegError, match="not a prototype bank"):
        PrototypeBank.load(tmp_path / "half")


def test_damaged_bank_gives_clear_error(tmp_path, rng):
    make_bank(rng).save(tmp_path / "b")
    (tmp_path / "b" / "table.parquet").write_bytes(b"garbage")
    with pytest.raises(ProtosegError, match="damaged"):
        PrototypeBank.load(tmp_path / "b")


def test_incompatible_encoders_are_named(rng):
    bank = make_bank(rng)
    bank.check_compatible("/models/dinov2-base", 8, "openai/clip-vit-base-patch16")  # same weights, local folder
    with pytest.raises(ProtosegError, match="dinov2-large") as err:
        bank.check_compatible("facebook/dinov2-large", 1024, "openai/clip-vit-large-patch14")
    assert "8-d" in str(err.value) and "clip-vit-large" in str(err.value)


def test_extend_and_merge(rng):
    a = make_bank(rng, ("cat", "dog"))
    b = make_bank(rng, ("car",), per_class=3)
    grown = a.extend(b)
    assert grown.classes == ["car", "cat", "dog"] and len(grown) == 13
    np.testing.assert_allclose(grown.vectors(np.arange(10, 13)), b.vectors(np.arange(3)), atol=1e-3)
    assert len(np.unique(grown.table["image_id"])) == 13  # ids offset, not colliding
    with pytest.raises(ProtosegError, match="already in the bank"):
        a.extend(make_bank(rng, ("dog",)))
    replaced = a.extend(make_bank(rng, ("dog",), per_class=2), replace_existing=True)
    assert (replaced.labels == "dog").sum() == 2 and (replaced.labels == "cat").sum() == 5
    with pytest.raises(ProtosegError, match="do(es)? not match"):
        PrototypeBank.merge([a, make_bank(rng, encoder="facebook/dinov2-large")])


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_retrieval_matches_exact_cosine_ranking(rng, kind):
    keys = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(3, 16)).astype(np.float32)
    index = KeyIndex.build(keys, kind=kind, ef_search=512)
    if kind == "hnsw":
        assert faiss.downcast_index(index.index).hnsw.efSearch == 512
    _, ids = index.search(queries, 20)
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argsort(-(qn @ kn.T), axis=1)[:, :20]
    overlap = np.mean([len(set(i) & set(e)) / 20 for i, e in zip(ids, expected, strict=True)])
    assert overlap == 1.0 if kind == "flat" else overlap >= 0.95


def test_hnsw_ef_search_survives_save_and_load(tmp_path, rng):
    labels = ["cat"] * 50
    bank = PrototypeBank.create(rng.normal(size=(50, 4)), {"label": labels}, method="t", feature_encoder="f",
                                keys=rng.normal(size=(50, 8)), text_encoder="c", index_kind="hnsw", ef_search=777)
    bank.save(tmp_path / "b")
    loaded = PrototypeBank.load(tmp_path / "b")
    assert loaded.index.kind == "hnsw" and faiss.downcast_index(loaded.index.index).hnsw.efSearch == 777


def test_import_freeda_release_replica(tmp_path, rng):
    """A small replica of FreeDA's release: per-prototype .npy files + an HNSW inner-product knn.index."""
    emb = tmp_path / "prototype_embeddings"
    emb.mkdir()
    n, dim, kdim = 30, 12, 8
    protos = rng.normal(size=(n, dim)).astype(np.float32)
    protos[7, 3] = np.nan  # FreeDA drops non-finite prototypes at load time
    keys = rng.normal(size=(n, kdim)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    names = [f"{i * 7919 % 1000:04d}_x{i}.npy" for i in range(n)]  # written in one order, indexed in sorted order
    order = sorted(names)
    for name, vec in zip(order, protos, strict=True):
        np.save(emb / name, vec)
    index = faiss.IndexHNSWFlat(kdim, 16, faiss.METRIC_INNER_PRODUCT)
    index.add(keys)
    faiss.write_index(index, str(tmp_path / "knn.index"))
    import_freeda(emb, tmp_path / "knn.index", tmp_path / "bank", feature_encoder="dinov2-test",
                  text_encoder="clip-test", dtype="float32", chunk=7)
    bank = PrototypeBank.load(tmp_path / "bank")
    ok = np.arange(n) != 7
    np.testing.assert_array_equal(bank.prototypes[ok], protos[ok])
    assert bank.table["level"][7] == "invalid" and bank.table["text"].tolist() == order
    np.testing.assert_allclose(bank.keys, keys, atol=1e-6)
    ids = bank.retrieve(keys[[3]], 1)[0]
    assert ids.tolist() == [3]  # id j -> j-th file in sorted order
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_import_refuses_mismatched_release(tmp_path, rng):
    emb = tmp_path / "e"
    emb.mkdir()
    for i in range(3):
        np.save(emb / f"{i}.npy", np.ones(4, np.float32))
    index = faiss.IndexFlatIP(4)
    index.add(np.ones((5, 4), np.float32))
    faiss.write_index(index, str(tmp_path / "knn.index"))
    with pytest.raises(ProtosegError, match="5 keys but"):
        import_freeda(emb, tmp_path / "knn.index", tmp_path / "bank")
    assert not (tmp_path / "bank").exists() and os.listdir(tmp_path) == sorted(os.listdir(tmp_path))


def _flat_ip(keys, queries, k):
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(np.ascontiguousarray(keys, dtype=np.float32))
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return index.search(np.ascontiguousarray(qn, dtype=np.float32), k)


@pytest.mark.parametrize("block_bytes", [64 << 20, 4096, 200 * 32 * 4])
def test_flat_block_search_equals_faiss_flat_ip(tmp_path, rng, block_bytes):
    """The block search over a memory-mapped keys.npy gives faiss IndexFlatIP's top-k on the same keys."""
    keys = rng.normal(size=(3000, 32)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    np.save(tmp_path / "keys.npy", keys)
    mapped = np.load(tmp_path / "keys.npy", mmap_mode="r")
    queries = rng.normal(size=(7, 32)).astype(np.float32)
    expected_scores, expected_ids = _flat_ip(keys, queries, 50)
    for source in (mapped, keys):
        scores, ids = FlatKeys(source, block_bytes=block_bytes).search(queries, 50)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert FlatKeys(mapped).search(queries, 10_000)[1].shape == (7, 3000)  # k capped at the key count


def test_flat_block_search_orders_ties_by_row(rng):
    """Equal scores (duplicated keys) come in row order, whatever the blocks; the tied set is faiss'."""
    base = rng.normal(size=(40, 8)).astype(np.float32)
    keys = np.concatenate([base] * 5)  # every key 5 times: rows r, r+40, r+80, ...
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    queries = rng.normal(size=(3, 8)).astype(np.float32)
    results = [FlatKeys(keys, block_bytes=b).search(queries, 12) for b in (64 << 20, 32 * 7, 32 * 40)]
    for _scores, ids in results[1:]:
        np.testing.assert_array_equal(ids, results[0][1])
    scores, ids = results[0]
    for s, i in zip(scores, ids, strict=True):
        assert all((a > b) or (a == b and x < y) for a, b, x, y in zip(s, s[1:], i, i[1:], strict=False))
    # the first 10 (two whole groups of 5 duplicates) are the same rows faiss returns
    _, faiss_ids = _flat_ip(keys, queries, 10)
    assert [set(r) for r in ids[:, :10]] == [set(r) for r in faiss_ids]


def test_loaded_bank_searches_keys_npy_without_reading_keys_faiss(tmp_path, rng):
    bank = make_bank(rng, per_class=40)
    bank.save(tmp_path / "b")
    assert not (tmp_path / "b" / "keys.faiss").exists()  # flat banks: keys.npy is the index
    loaded = PrototypeBank.load(tmp_path / "b")
    assert isinstance(loaded.keys, np.memmap) and isinstance(loaded.index, FlatKeys)
    queries = rng.normal(size=(4, 4)).astype(np.float32)
    _, expected = _flat_ip(np.asarray(loaded.keys), queries, 9)
    assert [r.tolist() for r in loaded.retrieve(queries, 9)] == expected.tolist()


def test_bank_of_the_old_layout_still_loads(tmp_path, rng):
    """Format 1 as older protoseg wrote it: plain string columns, a flat keys.faiss beside keys.npy."""
    bank = make_bank(rng, per_class=30)
    folder = tmp_path / "old"
    folder.mkdir()
    np.save(folder / "prototypes.npy", np.asarray(bank.prototypes))
    np.save(folder / "keys.npy", bank.keys)
    KeyIndex.build(bank.keys).write(folder / "keys.faiss")
    pq.write_table(pa.table({name: pa.array(list(bank.table[name]) if TABLE_COLUMNS[name] is str
                                            else bank.table[name]) for name in TABLE_COLUMNS}),
                   folder / "table.parquet")
    write_manifest(bank.manifest, folder / "manifest.json")
    old = PrototypeBank.load(folder)
    assert isinstance(old.table["label"], Categories) and old.table["label"].tolist() == bank.table["label"].tolist()
    assert old.table["text"].tolist() == bank.table["text"].tolist()
    assert old.rows_of("dog").tolist() == list(range(30, 60))
    queries = rng.normal(size=(3, 4)).astype(np.float32)
    _, expected = _flat_ip(bank.keys, queries, 11)
    assert [r.tolist() for r in old.retrieve(queries, 11)] == expected.tolist()
    data = (folder / "keys.faiss").read_bytes()
    (folder / "keys.faiss").write_bytes(data[:-4])  # a truncated legacy index is still named
    with pytest.raises(ProtosegError, match="keys.faiss is unreadable"):
        PrototypeBank.load(folder)


def test_save_streams_and_round_trips_a_loaded_bank(tmp_path, rng, monkeypatch):
    bank = make_bank(rng, classes=("cat", "dog", "car"), per_class=50)
    bank.save(tmp_path / "a")
    loaded = PrototypeBank.load(tmp_path / "a")
    monkeypatch.setattr("protoseg.bank.storage.BLOCK_BYTES", 256)  # many blocks
    import protoseg.bank.storage as storage

    writes = []
    original = storage._write_rows
    monkeypatch.setattr(storage, "_write_rows", lambda p, r, d, block_bytes=256: (writes.append(p.name),
                                                                                 original(p, r, d, block_bytes)))
    loaded.save(tmp_path / "b")
    assert writes == ["prototypes.npy", "keys.npy"]
    again = PrototypeBank.load(tmp_path / "b")
    np.testing.assert_array_equal(again.prototypes, bank.prototypes)
    np.testing.assert_array_equal(again.keys, bank.keys)
    for name in TABLE_COLUMNS:
        assert list(again.table[name]) == list(bank.table[name])
    assert again.manifest.bank_id == loaded.manifest.bank_id  # same contents, same id
    arrow = pq.read_table(tmp_path / "b" / "table.parquet")
    assert pa.types.is_string(arrow.schema.field("label").type)  # older readers see plain strings


def test_labels_are_categories_and_lookups_compare_codes(rng):
    bank = make_bank(rng, classes=("cat", "dog", "car"), per_class=4)
    labels = bank.table["label"]
    assert isinstance(labels, Categories) and labels.codes.dtype == np.int32
    assert sorted(labels.names.tolist()) == ["car", "cat", "dog"]
    assert (labels == "dog").tolist() == [False] * 4 + [True] * 4 + [False] * 4
    assert not (labels == "horse").any() and (labels != "horse").all()
    assert bank.rows_of("car").tolist() == [8, 9, 10, 11]
    assert labels[5] == "dog" and labels[[0, 11]].tolist() == ["cat", "car"]
    assert labels.isin(["car", "horse"]).sum() == 4
    assert labels.counts() == {"cat": 4, "dog": 4, "car": 4}
    assert np.asarray(labels).dtype == object and list(labels)[:2] == ["cat", "cat"]
    merged = PrototypeBank.merge([bank, make_bank(rng, classes=("dog", "bus"), per_class=2)])
    assert merged.table["label"].tolist()[-4:] == ["dog", "dog", "bus", "bus"]
    assert merged.rows_of("dog").tolist() == [4, 5, 6, 7, 12, 13]
