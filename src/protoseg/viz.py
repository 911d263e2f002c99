"""Segmentation outputs: label maps (PNG), colour overlays with a legend (JPEG) and a JSON sidecar.

For an image ``<stem>`` the three files are::

    <stem>.png           label map: pixel = index of the class in the class list. Up to 255 classes an
                         8-bit palette PNG (255 = background); above, a 16-bit grayscale PNG (65535 =
                         background). The class list is recorded in the PNG text chunk ``protoseg``.
    <stem>_overlay.jpg   the image with class colours blended in, each region outlined in its full colour,
                         and a legend of the classes present whose swatches are those full colours
                         (inside the image when it fits, else in a panel to its right, in columns); with
                         ``side_by_side`` the input image left of it.
    <stem>.json          sidecar: classes, background value, preset, bank and bank id, protoseg version,
                         the input image and the fingerprint of the request (a rerun skips the image
                         when it is unchanged).

Colours: a benchmark's own palette (MMSegmentation's) when the class list is that benchmark's, else a
set of distinct colours (:func:`class_colours`). Text is DejaVu Sans (unicode), sized to the image.

Each file is written atomically, the sidecar last. Every file says it was written by protoseg (PNG
text chunk, JPEG comment, sidecar field), which is how protoseg knows it may replace it.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from protoseg.atomic import atomic_path
from protoseg.version import __version__

#: Label value written for background / unlabelled pixels in 8-bit label maps.
UNLABELLED = 255
#: The same in 16-bit label maps (more than 255 classes).
UNLABELLED_16 = 65535
#: Most classes a label map can hold (16-bit, one value kept for background).
MAX_CLASSES = UNLABELLED_16

_PNG_KEY = "protoseg"
_JPEG_COMMENT = b"protoseg overlay"
_SIDECAR_KIND = "protoseg segmentation"


#: Distinct, saturated colours for the first classes of a list that is not a benchmark's (after them,
#: golden-ratio hues at alternating lightness). Greys, white and black are left out: they vanish on photos.
_DISTINCT = ("e6194b", "3cb44b", "ffe119", "4363d8", "f58231", "911eb4", "42d4f4", "f032e6", "bfef45",
             "469990", "9a6324", "800000", "000075", "fabed4", "aaffc3")


def palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 distinct colours, deterministic; entry ``i`` does not depend on ``n``.

    The first 15 are a hand-picked set of distinct saturated colours, the rest golden-ratio hues at
    alternating lightness (all distinct).
    """
    fixed = np.array([[int(h[k:k + 2], 16) for k in (0, 2, 4)] for h in _DISTINCT], np.uint8)
    if n <= len(fixed):
        return fixed[:n].copy()
    idx = np.arange(n - len(fixed))
    hues = (idx * 0.618033988749895 + 0.1) % 1.0
    light = np.where(idx % 2 == 0, 0.55, 0.4)
    c = (1 - np.abs(2 * light - 1)) * 0.75
    x = c * (1 - np.abs((hues * 6) % 2 - 1))
    zero = np.zeros_like(c)
    sector = (hues * 6).astype(int) % 6
    table = np.stack([np.stack(t, -1) for t in [(c, x, zero), (x, c, zero), (zero, c, x), (zero, x, c),
                                                 (x, zero, c), (c, zero, x)]])  # [6, m, 3]
    rgb = table[sector, idx] + (light - c / 2)[:, None]
    generated = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.concatenate([fixed, generated])


@functools.cache
def _benchmark_palettes() -> dict[tuple[str, ...], np.ndarray]:
    """Class list (names stripped, lower case, background dropped) -> its benchmark palette, for every
    benchmark with a published palette (package data ``palettes.json``) under every name variant."""
    # import time: protoseg.datasets loads torch (seconds), wanted only when a palette is looked up
    from protoseg.datasets import dataset_classes, has_background
    from protoseg.datasets.names import COCO_STUFF_CLASSES
    from protoseg.datasets.variants import VARIANTS, class_names

    data = json.loads((resources.files("protoseg") / "data" / "palettes.json").read_text(encoding="utf-8"))
    colours = {name: np.array(rows, np.uint8) for name, rows in data["palettes"].items()}
    colours["voc20"] = colours["voc"][1:]
    # COCO-Object: background + COCO-Stuff's 80 thing classes, in COCO-Stuff's colours.
    colours["coco-object"] = np.concatenate([[[0, 0, 0]], colours["coco-stuff"][:len(COCO_STUFF_CLASSES[:80])]])
    table: dict[tuple[str, ...], np.ndarray] = {}
    for dataset, rows in colours.items():
        skip = 1 if has_background(dataset_classes(dataset)) else 0  # label 0 is background
        for variant in VARIANTS:
            names = [synonyms[0] for synonyms in class_names(dataset, variant)][skip:]
            table.setdefault(tuple(name.strip().lower() for name in names), rows[skip:])
    return table


def benchmark_palette(classes: list[str]) -> np.ndarray | None:
    """The benchmark's own palette (MMSegmentation's) when ``classes`` is a benchmark's class list (VOC,
    Pascal Context, COCO-Stuff/Object, Cityscapes, ADE20K; any name variant; case and surrounding spaces
    ignored; without the background class), else ``None``."""
    return _benchmark_palettes().get(tuple(c.strip().lower() for c in classes))


def class_colours(classes: list[str]) -> np.ndarray:
    """``[len(classes), 3]`` uint8: the benchmark palette for a benchmark's class list, else :func:`palette`."""
    known = benchmark_palette(classes)
    return known.copy() if known is not None else palette(len(classes))


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


def label_image(labels: np.ndarray, num_classes: int, colours: np.ndarray | None = None) -> Image.Image:
    """``labels`` int ``[H, W]`` (class index, negative = unlabelled) -> label image whose pixel values are
    the indices: a palette ("P") image up to 255 classes (255 = unlabelled; palette ``colours``, default
    :func:`palette`), a 16-bit grayscale ("I;16") image above (65535 = unlabelled).

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
    pal[:num_classes] = palette(num_classes) if colours is None else colours[:num_classes]
    img.putpalette(pal.flatten().tolist())
    return img


# ------------------------------------------------------------------------------------------ drawing
#: Opacity of the class colour over the image inside a region.
ALPHA = 0.55

#: Fonts tried in order for overlay text: Debian's ``fonts-dejavu-core``, then matplotlib's bundled copy.
_FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf")


@functools.cache
def font_file() -> str | None:
    """A scalable font that renders Latin, Greek, Cyrillic and many symbols (DejaVu Sans), or ``None``."""
    for candidate in _FONT_FILES:
        if Path(candidate).is_file():
            return candidate
    try:
        import matplotlib

        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    return str(bundled) if bundled.is_file() else None


@functools.cache
def legend_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The overlay font at ``size`` pixels: :func:`font_file`, else Pillow's built-in scalable font."""
    path = font_file()
    if path is not None:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def font_size_for(height: int, width: int) -> int:
    """Legend text size in pixels for an image: 1/30 of its short side, at least 11 (legible), at most 96."""
    return int(np.clip(round(min(height, width) / 30), 11, 96))


def outline_width(height: int, width: int) -> int:
    """Width in pixels of the full-colour outline inside each region's border: 1/150 of the short side, at least 2."""
    return max(2, round(min(height, width) / 150))


def outline_mask(labels: np.ndarray, width: int) -> np.ndarray:
    """bool ``[H, W]``: labelled pixels within ``width`` pixels (along rows or columns) of a pixel with
    another label — each region's inner border band."""
    edge = np.zeros(labels.shape, bool)
    for d in range(1, width + 1):
        vertical = labels[d:] != labels[:-d]
        horizontal = labels[:, d:] != labels[:, :-d]
        edge[d:] |= vertical
        edge[:-d] |= vertical
        edge[:, d:] |= horizontal
        edge[:, :-d] |= horizontal
    return edge & (labels >= 0)


def paint(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The image with class colours: inside a region the colour blended at ``alpha`` over the image, along
    its border (:func:`outline_mask`) the colour itself — exactly the colour of the legend's swatch.
    Unlabelled pixels (negative) are left as they are. Returns uint8 ``[H, W, 3]``."""
    base = image.astype(np.float32)
    painted = base.copy()
    known = labels >= 0
    table = colours.astype(np.float32)
    painted[known] = (1 - alpha) * base[known] + alpha * table[labels[known]]
    edge = outline_mask(labels, outline_width(*labels.shape))
    painted[edge] = table[labels[edge]]
    return np.clip(painted + 0.5, 0, 255).astype(np.uint8)


def class_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float ``[num_classes]``: each class's share of all pixels of the image (background counts in the
    total, so the shares sum to 1 only without background)."""
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=num_classes)[:num_classes]
    return counts / max(labels.size, 1)


@dataclass(frozen=True)
class LegendLayout:
    """Where an overlay's legend goes.

    Attributes:
        font_size, row, swatch, pad: text size, row height, swatch side and padding (pixels).
        size: ``(width, height)`` of the whole picture (wider than the image with a side panel).
        boxes: per column, its black box ``(x0, y0, x1, y1)``.
        rows: per column, the class indices it lists, top to bottom.
        text_width: the widest a name may be drawn (longer names end in "…").
    """

    font_size: int
    row: int
    swatch: int
    pad: int
    size: tuple[int, int]
    boxes: list[tuple[int, int, int, int]]
    rows: list[list[int]]
    text_width: int

    def swatch_box(self, column: int, k: int) -> tuple[int, int, int, int]:
        """The swatch square ``(x0, y0, x1, y1)`` (inclusive) of the ``k``-th row of ``column``."""
        x0, y0 = self.boxes[column][:2]
        top = y0 + self.pad + k * self.row + (self.row - self.swatch) // 2
        return x0 + self.pad, top, x0 + self.pad + self.swatch - 1, top + self.swatch - 1


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text``, shortened with "…" to at most ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if draw.textlength(text[:mid] + "…", font=font) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def legend_layout(height: int, width: int, present: list[int], classes: list[str]) -> LegendLayout:
    """Lay out the legend of ``present`` classes for an ``height`` × ``width`` image: in the top-left corner
    when it fits in the image (at most half its width), otherwise in a panel right of the image, in as many
    columns as needed. Names wider than ``max(width // 2, 14 em)`` are shortened, so nothing runs off."""
    size = font_size_for(height, width)
    font = legend_font(size)
    row, swatch, pad = round(size * 1.4), size, max(3, size // 3)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(width // 2, 14 * size)
    widest = max((min(measure.textlength(classes[i], font=font), text_width) for i in present), default=0)
    box_w = int(math.ceil(pad + swatch + pad + widest + pad))
    margin = max(4, pad)
    box_h = row * len(present) + 2 * pad
    if box_h + 2 * margin <= height and box_w + 2 * margin <= width // 2:
        return LegendLayout(size, row, swatch, pad, (width, height), [(margin, margin, margin + box_w, margin + box_h)],
                            [list(present)], text_width)
    panel_h = max(height, row + 2 * pad)
    per_column = max(1, (panel_h - 2 * pad) // row)
    columns = math.ceil(len(present) / per_column)
    boxes = [(width + c * box_w, 0, width + (c + 1) * box_w - 1, panel_h - 1) for c in range(columns)]
    rows = [list(present[c * per_column:(c + 1) * per_column]) for c in range(columns)]
    return LegendLayout(size, row, swatch, pad, (width + columns * box_w, panel_h), boxes, rows, text_width)


def overlay(image: np.ndarray, labels: np.ndarray, classes: list[str], alpha: float = ALPHA,
            colours: np.ndarray | None = None) -> Image.Image:
    """The image painted with class colours (:func:`paint`) and a legend of the classes present
    (:func:`legend_layout`): a swatch of each class's colour — the colour of its regions' outlines — and
    its name. ``colours`` default to :func:`class_colours` (a benchmark's own palette for its class list).
    """
    colours = class_colours(classes) if colours is None else colours
    painted = Image.fromarray(paint(image, labels, colours, alpha))
    present = [int(i) for i in np.unique(labels) if i >= 0]
    if not present:
        return painted
    H, W = image.shape[:2]
    layout = legend_layout(H, W, present, classes)
    out = Image.new("RGB", layout.size, (0, 0, 0))
    out.paste(painted, (0, 0))
    draw = ImageDraw.Draw(out)
    font = legend_font(layout.font_size)
    ascent, descent = font.getmetrics()
    for c, (box, rows) in enumerate(zip(layout.boxes, layout.rows, strict=True)):
        draw.rectangle(box, fill=(0, 0, 0))
        for k, i in enumerate(rows):
            x0, y0, x1, y1 = layout.swatch_box(c, k)
            draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in colours[i]))
            text_y = y0 + (layout.swatch - (ascent + descent)) // 2
            draw.text((x1 + 1 + layout.pad, text_y), _fit(draw, classes[i], font, layout.text_width),
                      fill=(255, 255, 255), font=font)
    return out


def beside_input(image: np.ndarray, picture: Image.Image, gap: int = 8) -> Image.Image:
    """``image`` (uint8 ``[H, W, 3]``) left of ``picture`` (its overlay), on white, ``gap`` pixels apart."""
    left = Image.fromarray(image)
    out = Image.new("RGB", (left.width + gap + picture.width, max(left.height, picture.height)), (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(picture.convert("RGB"), (left.width + gap, 0))
    return out


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
                      meta: dict[str, Any] | None = None, side_by_side: bool = False) -> dict[str, Path]:
    """Write ``<stem>.png`` (label map), ``<stem>_overlay.jpg`` (with ``side_by_side``: the input left of
    the overlay) and, last, the ``<stem>.json`` sidecar (``meta`` plus classes, background value and file
    names), each atomically; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = output_paths(out_dir, stem)
    background = background_value(len(classes))
    colours = class_colours(classes)
    with atomic_path(paths["labels"]) as tmp:
        label_image(labels, len(classes), colours).save(tmp, format="PNG", pnginfo=png_info(classes, background))
    picture = overlay(image, labels, classes, colours=colours)
    if side_by_side:
        picture = beside_input(image, picture)
    with atomic_path(paths["overlay"]) as tmp:
        save_jpeg(picture, tmp)
    sidecar = {"kind": _SIDECAR_KIND, "protoseg_version": __version__, **(meta or {}), "classes": classes,
               "background": background, "label_bits": 8 if background == UNLABELLED else 16,
               "label_map": paths["labels"].name, "overlay": paths["overlay"].name}
    with atomic_path(paths["sidecar"]) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths


def save_jpeg(picture: Image.Image, path: str | Path) -> None:
    """Save an overlay as protoseg's JPEG (quality 92, full-resolution colour so thin outlines keep their
    colour, the comment that marks it as protoseg's). Not atomic by itself: pass an :func:`atomic_path`."""
    picture.convert("RGB").save(path, format="JPEG", quality=92, subsampling=0, comment=_JPEG_COMMENT)
