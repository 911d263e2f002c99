"""Caption sources for FreeDA's offline stage: COCO-Captions JSON or a plain text file.

FreeDA synthesises one image per caption of COCO Captions (all five captions of every image; the
images themselves are never used). Two readers, chosen by file suffix in :func:`read_captions`:

- ``.json``: the COCO-Captions annotation format, ``{"annotations": [{"image_id": int, "id": int,
  "caption": str}, ...], ...}`` (e.g. ``captions_train2017.json``), read in file order;
- anything else: UTF-8 text, one caption a line; empty lines are skipped; ``caption_id`` is the
  0-based index among the kept captions and ``image_id`` equals it (one image per caption).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from protoseg.errors import ProtosegError
from protoseg.generate.prompts import indefinite_article


@dataclass(frozen=True)
class Caption:
    """One caption: its id (unique in the source), the id of the image it describes, and its text."""

    caption_id: int
    image_id: int
    text: str


def read_captions(path: str | Path) -> list[Caption]:
    """Captions of a COCO-Captions ``.json`` file or a text file (one caption a line).

    Captions are whitespace-normalised (newlines and runs of spaces become one space).

    Raises:
        ProtosegError: missing/unreadable file, malformed JSON, missing fields, non-integer ids,
            empty captions in JSON, duplicate caption ids, or no captions at all.
    """
    path = Path(path)
    if not path.is_file():
        raise ProtosegError(f"caption file {str(path)!r} not found; pass a COCO-Captions .json file or a "
                            "text file with one caption a line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProtosegError(f"caption file {str(path)!r} is not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start}); convert it to UTF-8") from None
    captions = _parse_coco_json(text, path) if path.suffix.lower() == ".json" else _parse_lines(text)
    if not captions:
        raise ProtosegError(f"caption file {str(path)!r} holds no captions")
    return captions


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _parse_lines(text: str) -> list[Caption]:
    lines = [_normalise(line) for line in text.splitlines()]
    return [Caption(caption_id=i, image_id=i, text=line) for i, line in enumerate(x for x in lines if x)]


def _parse_coco_json(text: str, path: Path) -> list[Caption]:
    where = f"caption file {str(path)!r}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtosegError(f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") \
            from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ProtosegError(f"{where} must be a COCO-Captions file: a JSON object with an 'annotations' list "
                            "of {'image_id', 'id', 'caption'}")
    captions: list[Caption] = []
    seen: set[int] = set()
    for i, entry in enumerate(data["annotations"]):
        if not isinstance(entry, dict):
            raise ProtosegError(f"{where}: annotations[{i}] is not an object")
        missing = [key for key in ("image_id", "id", "caption") if key not in entry]
        if missing:
            raise ProtosegError(f"{where}: annotations[{i}] lacks {', '.join(missing)}")
        ids = (entry["id"], entry["image_id"])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
            raise ProtosegError(f"{where}: annotations[{i}] has non-integer id/image_id {ids!r}")
        if not isinstance(entry["caption"], str) or not entry["caption"].strip():
            raise ProtosegError(f"{where}: annotations[{i}] (id {entry['id']}) has an empty or "
                                "non-text caption")
        if entry["id"] in seen:
            raise ProtosegError(f"{where}: caption id {entry['id']} appears more than once")
        seen.add(entry["id"])
        captions.append(Caption(caption_id=entry["id"], image_id=entry["image_id"],
                                text=_normalise(entry["caption"])))
    return captions


#: Captions written for a noun no caption source mentions (FreeDA prototypes made on demand, see
#: :mod:`protoseg.offline.ondemand`): everyday scenes in the style of COCO captions, one image each.
NOUN_CAPTIONS = (
    "{a} {noun} in a photo.",
    "a photo of {a} {noun}.",
    "{a} {noun} in the middle of a street.",
    "{a} {noun} inside a room.",
    "{a} {noun} next to some other objects.",
    "a close up of {a} {noun}.",
    "{a} {noun} seen from far away.",
    "{a} {noun} outside on a sunny day.",
)


def noun_captions(noun: str) -> list[str]:
    """:data:`NOUN_CAPTIONS` for ``noun``; each holds ``noun`` verbatim (the word whose attention is taken)."""
    return [template.format(a=indefinite_article(noun), noun=noun) for template in NOUN_CAPTIONS]
