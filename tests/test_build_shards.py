import json

import numpy as np
import pytest

from protoseg.errors import ProtosegError
from protoseg.runs import derive_seed, load_shard, prepare_work_dir, remove_work_dir, run_shards, save_shard, shard_path


def _square(items):
    return {"x": np.asarray(items, np.float64) ** 2, "name": np.asarray([f"i{i}" for i in items])}


class Killed(Exception):
    pass


def test_save_shard_roundtrip_without_pickle(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.asarray(["cat", "dog"]),
              "e": np.zeros((0, 4), np.float32), "id": np.asarray("tiny-dinov2")}
    save_shard(tmp_path / "s.npz", arrays)
    back = load_shard(tmp_path / "s.npz")
    assert set(back) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temporary file left


def test_failed_write_leaves_no_shard(tmp_path):
    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_shard(tmp_path / "s.npz", {"a": np.zeros(3), "b": Boom()})
    assert list(tmp_path.iterdir()) == []


def test_resume_skips_finished_shards_and_matches_uninterrupted(tmp_path):
    shards = [[0, 1], [2, 3], [4, 5], [6]]
    calls = []

    def work(items):
        calls.append(tuple(items))
        return _square(items)

    def kill_after_1(index):
        if index == 1:
            raise Killed

    a = prepare_work_dir(tmp_path / "a", {"n": 7})
    with pytest.raises(Killed):
        run_shards(a, shards, work, on_shard_written=kill_after_1)
    assert sorted(p.name for p in (a / "shards").iterdir()) == ["00000.npz", "00001.npz"]
    calls.clear()
    seen = []
    paths = run_shards(a, shards, work, progress=lambda *args: seen.append(args))
    assert calls == [(4, 5), (6,)]  # finished shards are not recomputed
    assert seen == [("shards", 2, 4), ("shards", 3, 4), ("shards", 4, 4)]

    b = prepare_work_dir(tmp_path / "b", {"n": 7})
    ref = run_shards(b, shards, work)
    for p, q in zip(paths, ref, strict=True):
        assert p.read_bytes() == q.read_bytes()
    assert paths == [shard_path(a, i) for i in range(4)]


def test_work_dir_of_another_build_starts_fresh_with_a_notice(tmp_path, caplog):
    work = tmp_path / "w"
    prepare_work_dir(work, {"seed": 0, "items": [1, 2]})
    save_shard(shard_path(work, 0), {"x": np.zeros(2)})
    prepare_work_dir(work, {"items": [1, 2], "seed": 0})  # same build, key order irrelevant
    assert shard_path(work, 0).is_file() and not caplog.records
    assert json.loads((work / "build.json").read_text())["description"]["seed"] == 0
    prepare_work_dir(work, {"seed": 1, "items": [1, 2]})
    assert not shard_path(work, 0).exists()  # stale shards of protoseg's own folder are discarded
    assert json.loads((work / "build.json").read_text())["description"]["seed"] == 1
    (notice,) = caplog.records
    assert "seed changed" in notice.getMessage() and "starting fresh" in notice.getMessage()


def test_work_dir_that_is_not_protosegs_is_never_written_or_removed(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(ProtosegError, match="not empty and holds no protoseg build"):
        prepare_work_dir(user, {"seed": 0})
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProtosegError, match="is a file"):
        prepare_work_dir(tmp_path / "file", {"seed": 0})
    # an empty folder the user made is used, then cleaned of protoseg's files but kept
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_work_dir(empty, {"seed": 0})
    save_shard(shard_path(empty, 0), {"x": np.zeros(2)})
    remove_work_dir(empty)
    assert empty.is_dir() and list(empty.iterdir()) == []
    made = prepare_work_dir(tmp_path / "made", {"seed": 0})
    (made / "user.txt").write_text("keep")
    remove_work_dir(made)
    assert sorted(p.name for p in made.iterdir()) == ["user.txt"]
    made = prepare_work_dir(tmp_path / "made2", {"seed": 0})
    save_shard(shard_path(made, 0), {"x": np.zeros(2)})
    remove_work_dir(made)
    assert not made.exists()  # made by protoseg and nothing else in it: removed


def test_derive_seeds_depend_only_on_identity():
    assert derive_seed(0, "cat", 3) == derive_seed(0, "cat", 3)
    seeds = {derive_seed(s, c, i) for s in (0, 1) for c in ("cat", "dog") for i in range(50)}
    assert len(seeds) == 200
    assert all(0 <= s < 2**31 for s in seeds)
