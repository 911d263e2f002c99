"""Segmentation outputs: label maps (PNG), colour overlays with a legend (JPEG) and a JSON sidecar.

For an image ``<stem>`` the three files are::

    <stem>.png           label map: pixel = index of the class in the class list. Up to 255 classes an
                         8-bit palette PNG (255 = background); above, a 16-bit grayscale PNG (65535 =
                         background). The class list is recorded in the PNG text chunk ``protoseg``.
    <stem>_overlay.jpg   the image with class colours blended in and a legend of the classes present
                         (inside the image when it fits, else in a panel to its right, in columns).
    <stem>.json          sidecar: classes, background value, preset, bank and bank id, protoseg version,
                         the input image and the fingerprint of the request (a rerun skips the image
                         when it is unchanged).

Each file is written atomically, the sidecar last. Every file says it was written by protoseg (PNG
text chunk, JPEG comment, sidecar field), which is how protoseg knows it may replace it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from protoseg.atomic import atomic_path

#: Label value written for background / unlabelled pixels in 8-bit label maps.
UNLABELLED = 255
#: The same in 16-bit label maps (more than 255 classes).
UNLABELLED_16 = 65535
#: Most classes a label map can hold (16-bit, one value kept for background).
MAX_CLASSES = UNLABELLED_16

_PNG_KEY = "protoseg"
_JPEG_COMMENT = b"protoseg overlay"
_SIDECAR_KIND = "protoseg segmentation"


def palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 distinct colours (golden-ratio hues, alternating lightness), deterministic."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    light = np.where(np.arange(n) % 2 == 0, 0.55, 0.4)
    sat = 0.75
    c = (1 - np.abs(2 * light - 1)) * sat
    x = c * (1 - np.abs((hues * 6) % 2 - 1))
    m = light - c / 2
    sector = (hues * 6).astype(int) % 6
    rgb = np.zeros((n, 3))
    table = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)]
    for i in range(n):
        rgb[i] = [v[i] if isinstance(v, np.ndarray) else v for v in table[sector[i]]]
    return np.clip((rgb + m[:, None]) * 255 + 0.5, 0, 255).astype(np.uint8)


def background_value(num_classes: int) -> int:
    """The label value of background pixels: 255 up to 255 classes, 65535 above (16-bit label maps)."""
    return UNLABELLED if num_classes <= 255 else UNLABELLED_16


def png_info(classes: list[str], background: int | None) -> PngImagePlugin.PngInfo:
    """A PNG text chunk ``protoseg`` recording the class list (index = label value) and background value."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(_PNG_KEY, json.dumps({"classes": classes, "background": background}, ensure_ascii=False))
    return info


def read_label_classes(path: str | Path) -> list[str] | None:
    """The class list recorded in a label map written by protoseg, or ``None``."""
    try:
        with Image.open(path) as im:
            text = getattr(im, "text", {}).get(_PNG_KEY)
        record = json.loads(text) if text else None
    except (OSError, ValueError, SyntaxError):
        return None
    return record.get("classes") if isinstance(record, dict) else None


def label_image(labels: np.ndarray, num_classes: int) -> Image.Image:
    """``labels`` int ``[H, W]`` (class index, negative = unlabelled) -> label image whose pixel values are
    the indices: a palette ("P") image up to 255 classes (255 = unlabelled), a 16-bit grayscale
    ("I;16") image above (65535 = unlabelled).

    Raises:
        ValueError: more than :data:`MAX_CLASSES` classes.
    """
    if num_classes > MAX_CLASSES:
        raise ValueError(f"label maps hold at most {MAX_CLASSES} classes")
    if num_classes > 255:
        values = np.where(labels < 0, UNLABELLED_16, labels).astype(np.uint16)
        return Image.fromarray(values)
    values = np.where(labels < 0, UNLABELLED, labels).astype(np.uint8)
    img = Image.fromarray(values, mode="P")
    pal = np.zeros((256, 3), np.uint8)
    pal[:num_classes] = palette(num_classes)
    img.putpalette(pal.flatten().tolist())
    return img


_ROW = 14  # legend row height (default bitmap font)


def overlay(image: np.ndarray, labels: np.ndarray, classes: list[str], alpha: float = 0.55) -> Image.Image:
    """Blend class colours over ``image`` (uint8 ``[H, W, 3]``) and add a legend of the classes present.

    The legend sits in the top-left corner when it fits in the image; otherwise it goes to a panel right
    of the image, wrapped into as many columns as needed (the result is then wider than the image).
    """
    colours = palette(len(classes)).astype(np.float32)
    base = image.astype(np.float32)
    painted = base.copy()
    known = labels >= 0
    painted[known] = (1 - alpha) * base[known] + alpha * colours[labels[known]]
    out = Image.fromarray(np.clip(painted + 0.5, 0, 255).astype(np.uint8))
    present = [int(i) for i in np.unique(labels) if i >= 0]
    if not present:
        return out
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(out)
    width = max(int(draw.textlength(classes[i], font=font)) for i in present) + 24
    H, W = image.shape[:2]
    height = _ROW * len(present) + 6
    if height + 8 <= H and width + 8 <= W // 2:
        draw.rectangle([4, 4, 4 + width, 4 + height], fill=(0, 0, 0))
        _legend(draw, font, present, classes, colours, 4, 4, len(present))
        return out
    per_column = max(1, (H - 6) // _ROW)
    columns = math.ceil(len(present) / per_column)
    panel = Image.new("RGB", (W + columns * (width + 4) + 4, H), (0, 0, 0))
    panel.paste(out, (0, 0))
    draw = ImageDraw.Draw(panel)
    for c in range(columns):
        chunk = present[c * per_column:(c + 1) * per_column]
        _legend(draw, font, chunk, classes, colours, W + 4 + c * (width + 4), 0, per_column)
    return panel


def _legend(draw: ImageDraw.ImageDraw, font: Any, present: list[int], classes: list[str], colours: np.ndarray,
            x: int, y: int, rows: int) -> None:
    for k, i in enumerate(present[:rows]):
        top = y + 3 + k * _ROW
        draw.rectangle([x + 4, top, x + 14, top + 10], fill=tuple(int(v) for v in colours[i]))
        draw.text((x + 18, top - 1), classes[i], fill=(255, 255, 255), font=font)


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """The files :func:`save_segmentation` writes for ``stem``: ``labels``, ``overlay``, ``sidecar``."""
    return {"labels": out_dir / f"{stem}.png", "overlay": out_dir / f"{stem}_overlay.jpg",
            "sidecar": out_dir / f"{stem}.json"}


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """A sidecar written by protoseg, or ``None`` (missing, unreadable or not protoseg's)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("kind") == _SIDECAR_KIND else None


def written_by_protoseg(path: str | Path) -> bool:
    """Whether an existing output file (label map, overlay or sidecar) says protoseg wrote it."""
    path = Path(path)
    if path.suffix == ".json":
        return read_sidecar(path) is not None
    try:
        with Image.open(path) as im:
            if path.suffix == ".png":
                return _PNG_KEY in getattr(im, "text", {})
            return im.info.get("comment") == _JPEG_COMMENT
    except (OSError, ValueError, SyntaxError):
        return False


def save_segmentation(out_dir: Path, stem: str, image: np.ndarray, labels: np.ndarray, classes: list[str],
                      meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``<stem>.png`` (label map), ``<stem>_overlay.jpg`` and, last, the ``<stem>.json`` sidecar
    (``meta`` plus classes, background value and file names), each atomically; returns the paths."""
    from protoseg import __version__

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = output_paths(out_dir, stem)
    background = background_value(len(classes))
    with atomic_path(paths["labels"]) as tmp:
        label_image(labels, len(classes)).save(tmp, format="PNG", pnginfo=png_info(classes, background))
    with atomic_path(paths["overlay"]) as tmp:
        overlay(image, labels, classes).save(tmp, format="JPEG", quality=92, comment=_JPEG_COMMENT)
    sidecar = {"kind": _SIDECAR_KIND, "protoseg_version": __version__, **(meta or {}), "classes": classes,
               "background": background, "label_bits": 8 if background == UNLABELLED else 16,
               "label_map": paths["labels"].name, "overlay": paths["overlay"].name}
    with atomic_path(paths["sidecar"]) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths
