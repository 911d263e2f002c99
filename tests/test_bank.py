import json
import os

import faiss
import numpy as np
import pytest

from protoseg.bank import KeyIndex, PrototypeBank
from protoseg.errors import ProtosegError
from protoseg.offline.freeda_import import import_freeda


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
