import pytest

from protoseg.atomic import atomic_dir, atomic_path


def test_atomic_path_publishes_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "a.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".tmp")
        tmp.write_text("done")
    assert target.read_text() == "done"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "done" and sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_atomic_dir_refuses_or_replaces_an_existing_folder(tmp_path):
    target = tmp_path / "bank"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(OSError), atomic_dir(target) as tmp:
        (tmp / "x").write_text("2")
    assert (target / "x").read_text() == "1"
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "x").write_text("3")
    assert (target / "x").read_text() == "3" and [p.name for p in tmp_path.iterdir()] == ["bank"]
