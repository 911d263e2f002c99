"""Label maps as palette PNGs and colour overlays with a legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from protoseg.atomic import atomic_path

#: Label value written for background / unlabelled pixels.
UNLABELLED = 255


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


def _atomic_save(image: Image.Image, path: Path, **kwargs) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, **kwargs)


def label_image(labels: np.ndarray, num_classes: int) -> Image.Image:
    """``labels`` int ``[H, W]`` (class index, negative = unlabelled) -> palette ("P") image whose pixel
    values are the indices (255 = unlabelled)."""
    if num_classes > 255:
        raise ValueError("palette PNGs hold at most 255 classes")
    values = np.where(labels < 0, UNLABELLED, labels).astype(np.uint8)
    img = Image.fromarray(values, mode="P")
    pal = np.zeros((256, 3), np.uint8)
    pal[:num_classes] = palette(num_classes)
    img.putpalette(pal.flatten().tolist())
    return img


def overlay(image: np.ndarray, labels: np.ndarray, classes: list[str], alpha: float = 0.55) -> Image.Image:
    """Blend class colours over ``image`` (uint8 ``[H, W, 3]``) and add a legend of the classes present."""
    colours = palette(len(classes)).astype(np.float32)
    base = image.astype(np.float32)
    painted = base.copy()
    known = labels >= 0
    painted[known] = (1 - alpha) * base[known] + alpha * colours[labels[known]]
    out = Image.fromarray(np.clip(painted + 0.5, 0, 255).astype(np.uint8))
    present = [i for i in np.unique(labels) if i >= 0]
    if not present:
        return out
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(out)
    row = 14
    width = max(int(draw.textlength(classes[i], font=font)) for i in present) + 24
    height = row * len(present) + 6
    draw.rectangle([4, 4, 4 + width, 4 + height], fill=(0, 0, 0))
    for k, i in enumerate(present):
        y = 7 + k * row
        draw.rectangle([8, y, 18, y + 10], fill=tuple(int(v) for v in colours[i]))
        draw.text((22, y - 1), classes[i], fill=(255, 255, 255), font=font)
    return out


def save_segmentation(out_dir: Path, stem: str, image: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """Write ``<stem>.png`` (palette label map) and ``<stem>_overlay.jpg``, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_save(label_image(labels, len(classes)), out_dir / f"{stem}.png", format="PNG")
    _atomic_save(overlay(image, labels, classes), out_dir / f"{stem}_overlay.jpg", format="JPEG", quality=92)
