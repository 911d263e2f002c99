"""The parts world: procedural images whose classes are made of parts, with exact masks.

It stands in for "Stable Diffusion + attention masks" as a source of support images, and for a
labelled dataset as a test set, so the whole offline + online + evaluation chain can be checked
end to end without pretrained weights (pair it with the ``handcrafted`` feature backend).

Scenes have a sky band over a ground of grass, road or water, and one to three objects. Objects are
built from parts with their own textures, in varying layouts and proportions:

=========  ===================================================================
car        striped body (random hue) + two or three dark checkered wheels
tree       brown bark trunk + speckled green crown (round or conical)
house      brick wall + dark roof with diagonal tiles (+ sometimes a window)
flower     thin green stem + ring of dotted petals (pink, yellow or white)
=========  ===================================================================

Some parts deliberately resemble other classes (a crown's green is grass' green, a wheel's grey is
the road's), so a single whole-object prototype is ambiguous where a part-level match is not.
Everything is deterministic given the seed.

Every scene image carries a PNG text chunk ``protoseg-partsworld`` (seed and index): that is how
:func:`is_parts_world_image` tells a parts-world scene from a photo, and how ``protoseg segment`` and the
demo keep the hand-crafted test backend away from real photos (:func:`check_synthetic_backend`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from protoseg.errors import ProtosegError

#: Class names in label order (the mask value of a pixel is its index here).
PARTS_WORLD_CLASSES: list[str] = ["sky", "grass", "road", "water", "car", "tree", "house", "flower"]
SKY, GRASS, ROAD, WATER, CAR, TREE, HOUSE, FLOWER = range(8)
IGNORE = 255

#: PNG text chunk key marking a parts-world scene image (JSON: seed and index of the scene).
SCENE_KEY = "protoseg-partsworld"


def _noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Smooth value noise in [0, 1], ``[h, w]``: a coarse random grid upsampled bilinearly."""
    gh, gw = max(h // scale, 1) + 2, max(w // scale, 1) + 2
    grid = rng.random((gh, gw)).astype(np.float32)
    img = Image.fromarray(grid).resize((w + 2 * scale, h + 2 * scale), Image.BILINEAR)
    return np.asarray(img)[scale: scale + h, scale: scale + w]


def _paint(canvas: np.ndarray, labels: np.ndarray, mask: np.ndarray, texture: np.ndarray, cls: int) -> None:
    canvas[mask] = texture[mask]
    labels[mask] = cls


def _colour(base: tuple[float, float, float], variation: np.ndarray) -> np.ndarray:
    """``base`` RGB in 0-255 modulated by ``variation [h, w]`` in [-1, 1] -> ``[h, w, 3]``."""
    return np.clip(np.asarray(base, np.float32)[None, None] * (1 + 0.25 * variation[..., None]), 0, 255)


def _ground_texture(rng: np.random.Generator, kind: int, h: int, w: int, yy: np.ndarray, xx: np.ndarray
                    ) -> np.ndarray:
    if kind == SKY:
        grad = yy / max(h, 1)
        base = np.stack([110 + 60 * grad, 160 + 50 * grad, 235 + 0 * grad], -1)
        return np.clip(base + 8 * _noise(rng, h, w, 64)[..., None], 0, 255)
    if kind == GRASS:
        n = _noise(rng, h, w, 3) * 2 - 1
        return _colour((70, 150, 60), n + 0.3 * (_noise(rng, h, w, 12) * 2 - 1))
    if kind == ROAD:
        n = rng.random((h, w)).astype(np.float32) * 2 - 1
        road = _colour((105, 105, 110), 0.5 * n)
        dash = (np.abs(yy - h * 0.5 - 0.1 * h * np.sin(xx / 60)) < 3) & ((xx // 24) % 2 == 0)
        road[dash] = (230, 230, 220)
        return road
    waves = np.sin(xx / 9.0 + 3 * np.sin(yy / 17.0)) * 0.6 + (_noise(rng, h, w, 8) * 2 - 1) * 0.4
    return _colour((50, 90, 170), waves)


def _draw_car(rng, canvas, labels, cy, cx, size):
    h, w = canvas.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    length = size * rng.uniform(1.4, 2.2)
    height = size * rng.uniform(0.45, 0.7)
    body = (np.abs(xx - cx) < length / 2) & (yy > cy - height) & (yy < cy)
    cabin = (np.abs(xx - cx - rng.uniform(-0.15, 0.15) * length) < length * rng.uniform(0.2, 0.32)) & \
        (yy > cy - height * rng.uniform(1.5, 1.9)) & (yy <= cy - height)
    hue = rng.choice([(200, 40, 40), (40, 70, 200), (230, 190, 40), (230, 230, 235)])
    stripes = np.sign(np.sin(yy / 3.0))
    _paint(canvas, labels, body | cabin, _colour(hue, 0.6 * stripes), CAR)
    n_wheels = int(rng.integers(2, 4))
    radius = height * rng.uniform(0.45, 0.6)
    for k in range(n_wheels):
        wx = cx - length / 2 + radius + k * (length - 2 * radius) / max(n_wheels - 1, 1)
        wheel = (yy - cy) ** 2 + (xx - wx) ** 2 < radius**2
        checker = np.sign(np.sin(xx / 2.0) * np.sin(yy / 2.0))
        _paint(canvas, labels, wheel, _colour((70, 70, 75), 0.8 * checker), CAR)


def _draw_tree(rng, canvas, labels, cy, cx, size):
    h, w = canvas.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    trunk_h = size * rng.uniform(0.8, 1.5)
    trunk_w = size * rng.uniform(0.15, 0.3)
    trunk = (np.abs(xx - cx) < trunk_w / 2) & (yy > cy - trunk_h) & (yy < cy)
    bark = np.sign(np.sin(xx / 1.5 + 2 * _noise(rng, h, w, 6)))
    _paint(canvas, labels, trunk, _colour((110, 70, 35), 0.7 * bark), TREE)
    crown_r = size * rng.uniform(0.6, 1.0)
    top = cy - trunk_h
    if rng.random() < 0.5:
        crown = (yy - top) ** 2 + (xx - cx) ** 2 < crown_r**2
    else:
        crown = (yy < top + crown_r * 0.3) & (yy > top - 2 * crown_r) & \
            (np.abs(xx - cx) < (yy - (top - 2 * crown_r)) * 0.45)
    speckle = (rng.random((h, w)) > 0.75).astype(np.float32) * 2 - 1
    _paint(canvas, labels, crown, _colour((60, 140, 55), 0.9 * speckle), TREE)


def _draw_house(rng, canvas, labels, cy, cx, size):
    h, w = canvas.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    width = size * rng.uniform(1.2, 2.0)
    height = size * rng.uniform(0.8, 1.3)
    wall = (np.abs(xx - cx) < width / 2) & (yy > cy - height) & (yy < cy)
    row = np.floor(yy / 8)
    mortar = (np.mod(yy, 8) < 1.5) | (np.mod(xx + 8 * np.mod(row, 2), 16) < 1.5)
    brick = np.where(mortar, 1.0, -0.4)
    _paint(canvas, labels, wall, _colour((180, 90, 60), brick), HOUSE)
    roof_h = height * rng.uniform(0.5, 0.9)
    top = cy - height
    roof = (yy <= top) & (yy > top - roof_h) & (np.abs(xx - cx) < (yy - (top - roof_h)) / roof_h * width * 0.6)
    tiles = np.sign(np.sin((xx + yy) / 2.5))
    _paint(canvas, labels, roof, _colour((60, 45, 45), 0.6 * tiles), HOUSE)
    if rng.random() < 0.6:
        win = (np.abs(xx - cx) < width * 0.12) & (np.abs(yy - (cy - height * 0.55)) < height * 0.15)
        _paint(canvas, labels, win, _colour((170, 210, 240), np.zeros((h, w), np.float32)), HOUSE)


def _draw_flower(rng, canvas, labels, cy, cx, size):
    h, w = canvas.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    stem_h = size * rng.uniform(0.8, 1.4)
    stem = (np.abs(xx - cx) < max(size * 0.06, 1.5)) & (yy > cy - stem_h) & (yy < cy)
    _paint(canvas, labels, stem, _colour((50, 130, 50), np.zeros((h, w), np.float32)), FLOWER)
    r = size * rng.uniform(0.35, 0.6)
    fy = cy - stem_h
    dist = np.sqrt((yy - fy) ** 2 + (xx - cx) ** 2)
    ang = np.arctan2(yy - fy, xx - cx)
    petals = dist < r * (0.65 + 0.35 * np.cos(int(rng.integers(5, 8)) * ang))
    dots = np.sign(np.sin(xx / 1.2) + np.sin(yy / 1.2))
    colour = rng.choice([(240, 120, 180), (245, 215, 60), (245, 245, 245)])
    _paint(canvas, labels, petals, _colour(colour, 0.35 * dots), FLOWER)
    centre = dist < r * 0.25
    _paint(canvas, labels, centre, _colour((120, 80, 20), np.zeros((h, w), np.float32)), FLOWER)


_DRAW = {CAR: _draw_car, TREE: _draw_tree, HOUSE: _draw_house, FLOWER: _draw_flower}


def render_scene(rng: np.random.Generator, size: int = 448, objects: list[int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image uint8 [size, size, 3], labels uint8 [size, size])`` (values index
    :data:`PARTS_WORLD_CLASSES`). ``objects`` picks the object classes (random 1-3 when ``None``)."""
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    canvas = np.zeros((h, w, 3), np.float32)
    labels = np.zeros((h, w), np.uint8)
    horizon = int(h * rng.uniform(0.3, 0.55))
    ground = int(rng.choice([GRASS, ROAD, WATER]))
    sky = yy < horizon + 6 * np.sin(xx / 40.0)
    _paint(canvas, labels, sky, _ground_texture(rng, SKY, h, w, yy, xx), SKY)
    _paint(canvas, labels, ~sky, _ground_texture(rng, ground, h, w, yy, xx), ground)
    if ground != GRASS and rng.random() < 0.5:  # a grass verge: stuff classes co-occur
        verge = yy > h - h * rng.uniform(0.08, 0.2)
        _paint(canvas, labels, verge, _ground_texture(rng, GRASS, h, w, yy, xx), GRASS)
    if objects is None:
        objects = [int(c) for c in rng.choice(list(_DRAW), size=int(rng.integers(1, 4)))]
    slots = np.linspace(0.2, 0.8, len(objects)) + rng.uniform(-0.05, 0.05, len(objects))
    for cls, sx in zip(objects, slots, strict=True):
        obj = rng.uniform(0.13, 0.2) * size
        cy = rng.uniform(horizon + 0.15 * (h - horizon), h - 0.05 * h)
        _DRAW[cls](rng, canvas, labels, cy, sx * w, obj)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), labels


def write_examples(root: str | Path, count: int, seed: int = 0, size: int = 448) -> Path:
    """Write ``count`` scenes in the examples layout and return ``root``::

        root/classes.txt          one class name a line (PARTS_WORLD_CLASSES)
        root/images/<stem>.png    RGB
        root/masks/<stem>.png     uint8, pixel = class index, 255 = ignore

    Scene ``i`` depends only on ``(seed, i)``; existing files are rewritten identically.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(PARTS_WORLD_CLASSES) + "\n")
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        image, labels = render_scene(rng, size)
        stem = f"scene_{i:05d}"
        Image.fromarray(image).save(root / "images" / f"{stem}.png", pnginfo=scene_info(seed, i))
        Image.fromarray(labels).save(root / "masks" / f"{stem}.png")
    return root


def scene_info(seed: int, index: int) -> PngImagePlugin.PngInfo:
    """The PNG text chunk that marks an image as parts-world scene ``index`` of ``seed``."""
    info = PngImagePlugin.PngInfo()
    info.add_text(SCENE_KEY, json.dumps({"seed": seed, "index": index}))
    return info


def is_parts_world_image(path: str | Path) -> bool:
    """Whether ``path`` is a parts-world scene as :func:`write_examples` wrote it (a PNG carrying the
    :data:`SCENE_KEY` text chunk). A photo, or a scene re-saved by another program, is not."""
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and SCENE_KEY in getattr(im, "text", {})
    except (OSError, ValueError, SyntaxError):
        return False


def check_synthetic_backend(preset: Any, images: list[Path], allowed: bool = False) -> None:
    """Refuse a preset whose features are a parts-world stand-in (``preset.synthetic``, e.g.
    ``handcrafted``) on images that are not parts-world scenes, unless ``allowed``
    (``--allow-synthetic-backend``): its labels would mean nothing there.

    Raises:
        ProtosegError: naming the first such image and both ways out.
    """
    if allowed or not getattr(preset, "synthetic", False):
        return
    others = [path for path in images if not is_parts_world_image(path)]
    if others:
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        raise ProtosegError(
            f"preset {preset.name!r} uses the hand-crafted test backend, made for parts-world scenes "
            f"(`protoseg partsworld`); {others[0]}{more} is not one, and its labels would mean nothing: "
            "use a real preset (e.g. --preset freeda-b) or add --allow-synthetic-backend")
