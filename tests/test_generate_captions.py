"""Caption readers: COCO-Captions JSON and plain text, with clear errors on malformed files."""

from __future__ import annotations

import json

import pytest

from protoseg.errors import ProtosegError
from protoseg.generate.captions import Caption, read_captions


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_coco_captions_json(tmp_path):
    path = write_json(tmp_path / "captions_val2017.json", {
        "info": {}, "images": [{"id": 139}],
        "annotations": [{"image_id": 139, "id": 7, "caption": "A woman  stands in the\n dining area. "},
                        {"image_id": 139, "id": 3, "caption": "A kitchen with a stove."},
                        {"image_id": 285, "id": 12, "caption": "A big brown bear."}]})
    assert read_captions(path) == [Caption(7, 139, "A woman stands in the dining area."),
                                   Caption(3, 139, "A kitchen with a stove."),
                                   Caption(12, 285, "A big brown bear.")]


def test_text_file_one_caption_a_line(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("\ufeffA dog on a sofa.\n\n   \nTwo cats  sleeping.\r\nA red car\n", encoding="utf-8")
    assert read_captions(path) == [Caption(0, 0, "A dog on a sofa."), Caption(1, 1, "Two cats sleeping."),
                                   Caption(2, 2, "A red car")]


@pytest.mark.parametrize(("data", "message"), [
    ([{"caption": "x"}], "must be a COCO-Captions file"),
    ({"images": []}, "must be a COCO-Captions file"),
    ({"annotations": ["a dog"]}, r"annotations\[0\] is not an object"),
    ({"annotations": [{"image_id": 1, "caption": "a dog"}]}, r"annotations\[0\] lacks id"),
    ({"annotations": [{"image_id": "1", "id": 2, "caption": "a dog"}]}, "non-integer"),
    ({"annotations": [{"image_id": 1, "id": True, "caption": "a dog"}]}, "non-integer"),
    ({"annotations": [{"image_id": 1, "id": 2, "caption": "  "}]}, "empty or non-text caption"),
    ({"annotations": [{"image_id": 1, "id": 2, "caption": "a"}, {"image_id": 1, "id": 2, "caption": "b"}]},
     "caption id 2 appears more than once"),
    ({"annotations": []}, "holds no captions"),
])
def test_malformed_json(tmp_path, data, message):
    with pytest.raises(ProtosegError, match=message):
        read_captions(write_json(tmp_path / "c.json", data))


def test_unreadable_files(tmp_path):
    with pytest.raises(ProtosegError, match="not found"):
        read_captions(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"annotations": [', encoding="utf-8")
    with pytest.raises(ProtosegError, match="not valid JSON.*line 1"):
        read_captions(broken)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("un caf\xe9".encode("latin-1"))
    with pytest.raises(ProtosegError, match="not UTF-8"):
        read_captions(latin)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ProtosegError, match="holds no captions"):
        read_captions(empty)
