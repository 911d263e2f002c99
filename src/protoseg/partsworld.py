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


class _Scene:
    """A scene being painted: RGB ``image [h, w, 3]`` (float), class ``labels [h, w]`` and ``objects [h, w]``
    (the id of the object or stuff region that owns each pixel: what a perfect class-agnostic proposal
    generator would return)."""

    def __init__(self, h: int, w: int):
        self.image = np.zeros((h, w, 3), np.float32)
        self.labels = np.zeros((h, w), np.uint8)
        self.objects = np.zeros((h, w), np.uint8)
        self.count = 0
        self.shape = (h, w)

    def new_object(self) -> int:
        """A fresh object id (``0, 1, ...``)."""
        self.count += 1
        return self.count - 1

    def paint(self, mask: np.ndarray, texture: np.ndarray, cls: int, obj: int) -> None:
        self.image[mask] = texture[mask]
        self.labels[mask] = cls
        self.objects[mask] = obj


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


def _draw_car(rng, scene, cy, cx, size):
    h, w = scene.shape
    obj = scene.new_object()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    length = size * rng.uniform(1.4, 2.2)
    height = size * rng.uniform(0.45, 0.7)
    body = (np.abs(xx - cx) < length / 2) & (yy > cy - height) & (yy < cy)
    cabin = (np.abs(xx - cx - rng.uniform(-0.15, 0.15) * length) < length * rng.uniform(0.2, 0.32)) & \
        (yy > cy - height * rng.uniform(1.5, 1.9)) & (yy <= cy - height)
    hue = rng.choice([(200, 40, 40), (40, 70, 200), (230, 190, 40), (230, 230, 235)])
    stripes = np.sign(np.sin(yy / 3.0))
    scene.paint(body | cabin, _colour(hue, 0.6 * stripes), CAR, obj)
    n_wheels = int(rng.integers(2, 4))
    radius = height * rng.uniform(0.45, 0.6)
    for k in range(n_wheels):
        wx = cx - length / 2 + radius + k * (length - 2 * radius) / max(n_wheels - 1, 1)
        wheel = (yy - cy) ** 2 + (xx - wx) ** 2 < radius**2
        checker = np.sign(np.sin(xx / 2.0) * np.sin(yy / 2.0))
        scene.paint(wheel, _colour((70, 70, 75), 0.8 * checker), CAR, obj)


def _draw_tree(rng, scene, cy, cx, size):
    h, w = scene.shape
    obj = scene.new_object()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    trunk_h = size * rng.uniform(0.8, 1.5)
    trunk_w = size * rng.uniform(0.15, 0.3)
    trunk = (np.abs(xx - cx) < trunk_w / 2) & (yy > cy - trunk_h) & (yy < cy)
    bark = np.sign(np.sin(xx / 1.5 + 2 * _noise(rng, h, w, 6)))
    scene.paint(trunk, _colour((110, 70, 35), 0.7 * bark), TREE, obj)
    crown_r = size * rng.uniform(0.6, 1.0)
    top = cy - trunk_h
    if rng.random() < 0.5:
        crown = (yy - top) ** 2 + (xx - cx) ** 2 < crown_r**2
    else:
        crown = (yy < top + crown_r * 0.3) & (yy > top - 2 * crown_r) & \
            (np.abs(xx - cx) < (yy - (top - 2 * crown_r)) * 0.45)
    speckle = (rng.random((h, w)) > 0.75).astype(np.float32) * 2 - 1
    scene.paint(crown, _colour((60, 140, 55), 0.9 * speckle), TREE, obj)


def _draw_house(rng, scene, cy, cx, size):
    h, w = scene.shape
    obj = scene.new_object()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    width = size * rng.uniform(1.2, 2.0)
    height = size * rng.uniform(0.8, 1.3)
    wall = (np.abs(xx - cx) < width / 2) & (yy > cy - height) & (yy < cy)
    row = np.floor(yy / 8)
    mortar = (np.mod(yy, 8) < 1.5) | (np.mod(xx + 8 * np.mod(row, 2), 16) < 1.5)
    brick = np.where(mortar, 1.0, -0.4)
    scene.paint(wall, _colour((180, 90, 60), brick), HOUSE, obj)
    roof_h = height * rng.uniform(0.5, 0.9)
    top = cy - height
    roof = (yy <= top) & (yy > top - roof_h) & (np.abs(xx - cx) < (yy - (top - roof_h)) / roof_h * width * 0.6)
    tiles = np.sign(np.sin((xx + yy) / 2.5))
    scene.paint(roof, _colour((60, 45, 45), 0.6 * tiles), HOUSE, obj)
    if rng.random() < 0.6:
        win = (np.abs(xx - cx) < width * 0.12) & (np.abs(yy - (cy - height * 0.55)) < height * 0.15)
        scene.paint(win, _colour((170, 210, 240), np.zeros((h, w), np.float32)), HOUSE, obj)


def _draw_flower(rng, scene, cy, cx, size):
    h, w = scene.shape
    obj = scene.new_object()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    stem_h = size * rng.uniform(0.8, 1.4)
    stem = (np.abs(xx - cx) < max(size * 0.06, 1.5)) & (yy > cy - stem_h) & (yy < cy)
    scene.paint(stem, _colour((50, 130, 50), np.zeros((h, w), np.float32)), FLOWER, obj)
    r = size * rng.uniform(0.35, 0.6)
    fy = cy - stem_h
    dist = np.sqrt((yy - fy) ** 2 + (xx - cx) ** 2)
    ang = np.arctan2(yy - fy, xx - cx)
    petals = dist < r * (0.65 + 0.35 * np.cos(int(rng.integers(5, 8)) * ang))
    dots = np.sign(np.sin(xx / 1.2) + np.sin(yy / 1.2))
    colour = rng.choice([(240, 120, 180), (245, 215, 60), (245, 245, 245)])
    scene.paint(petals, _colour(colour, 0.35 * dots), FLOWER, obj)
    centre = dist < r * 0.25
    scene.paint(centre, _colour((120, 80, 20), np.zeros((h, w), np.float32)), FLOWER, obj)


_DRAW = {CAR: _draw_car, TREE: _draw_tree, HOUSE: _draw_house, FLOWER: _draw_flower}


def render_scene(rng: np.random.Generator, size: int = 448, objects: list[int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image uint8 [size, size, 3], labels uint8 [size, size])`` (values index
    :data:`PARTS_WORLD_CLASSES`). ``objects`` picks the object classes (random 1-3 when ``None``)."""
    image, labels, _ = render_scene_objects(rng, size, objects)
    return image, labels


def render_scene_objects(rng: np.random.Generator, size: int = 448, objects: list[int] | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`render_scene` plus ``objects uint8 [size, size]``: the id of the object or stuff region
    (sky, ground, verge) each pixel belongs to (ids ``0..K-1``)."""
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scene = _Scene(h, w)
    horizon = int(h * rng.uniform(0.3, 0.55))
    ground = int(rng.choice([GRASS, ROAD, WATER]))
    sky = yy < horizon + 6 * np.sin(xx / 40.0)
    scene.paint(sky, _ground_texture(rng, SKY, h, w, yy, xx), SKY, scene.new_object())
    scene.paint(~sky, _ground_texture(rng, ground, h, w, yy, xx), ground, scene.new_object())
    if ground != GRASS and rng.random() < 0.5:  # a grass verge: stuff classes co-occur
        verge = yy > h - h * rng.uniform(0.08, 0.2)
        scene.paint(verge, _ground_texture(rng, GRASS, h, w, yy, xx), GRASS, scene.new_object())
    if objects is None:
        objects = [int(c) for c in rng.choice(list(_DRAW), size=int(rng.integers(1, 4)))]
    slots = np.linspace(0.2, 0.8, len(objects)) + rng.uniform(-0.05, 0.05, len(objects))
    for cls, sx in zip(objects, slots, strict=True):
        obj = rng.uniform(0.13, 0.2) * size
        cy = rng.uniform(horizon + 0.15 * (h - horizon), h - 0.05 * h)
        _DRAW[cls](rng, scene, cy, sx * w, obj)
    return _finish(scene)


def _finish(scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (uint8), labels and objects with object ids renumbered ``0..K-1`` over the visible ones."""
    _, objects = np.unique(scene.objects, return_inverse=True)
    return (np.clip(scene.image + 0.5, 0, 255).astype(np.uint8), scene.labels,
            objects.reshape(scene.shape).astype(np.uint8))


# ---------------------------------------------------------------------------------------------------
# The recombined world: several looks per class, parts recombined at test time, look-alike small parts.

#: How parts combine in the recombined world: ``"support"`` (the combinations and proportions of support
#: / bank-building scenes) or ``"novel"`` (held-out scenes: every object recombines its parts' looks in
#: combinations, and with proportions, the support scenes never show).
COMBOS = ("support", "novel")

_RED, _BLUE, _YELLOW, _WHITE = (200, 40, 40), (40, 70, 200), (230, 190, 40), (232, 232, 236)
_PINK = (240, 120, 180)


def _flat(rgb, h, w):
    return _colour(rgb, np.zeros((h, w), np.float32))


def _tex_stripes(rgb, yy, xx):
    """Car body paint: horizontal stripes (also the foam streaks on water)."""
    return _colour(rgb, 0.6 * np.sign(np.sin(yy / 3.0)))


def _tex_glass(h, w):
    """Car cabin glass (also house windows)."""
    return _flat((170, 210, 240), h, w)


def _tex_tinted(yy, xx):
    return _colour((55, 65, 90), 0.3 * np.sign(np.sin((xx - yy) / 4.0)))


def _tex_wheel(yy, xx):
    return _colour((70, 70, 75), 0.8 * np.sign(np.sin(xx / 2.0) * np.sin(yy / 2.0)))


def _tex_brick(rgb, yy, xx):
    row = np.floor(yy / 8)
    mortar = (np.mod(yy, 8) < 1.5) | (np.mod(xx + 8 * np.mod(row, 2), 16) < 1.5)
    return _colour(rgb, np.where(mortar, 1.0, -0.4))


def _tex_plaster(rng, h, w):
    """White plaster wall (also the clouds in the sky)."""
    return _colour((225, 222, 212), 0.25 * (_noise(rng, h, w, 4) * 2 - 1))


def _tex_tiles(rgb, yy, xx):
    return _colour(rgb, 0.6 * np.sign(np.sin((xx + yy) / 2.5)))


def _tex_bark(rng, h, w, xx):
    return _colour((110, 70, 35), 0.7 * np.sign(np.sin(xx / 1.5 + 2 * _noise(rng, h, w, 6))))


def _tex_birch(rng, h, w, yy):
    marks = (np.sin(yy / 5.0 + 3 * _noise(rng, h, w, 8)) > 0.8).astype(np.float32)
    return _colour((225, 225, 215), -2.5 * marks)


def _tex_speckle(rng, rgb, h, w):
    return _colour(rgb, 0.9 * ((rng.random((h, w)) > 0.75).astype(np.float32) * 2 - 1))


def _tex_dots(rgb, yy, xx):
    """Flower petals (also the road's dashes and the grass' dandelions)."""
    return _colour(rgb, 0.35 * np.sign(np.sin(xx / 1.2) + np.sin(yy / 1.2)))


def _blobs(rng, region, count, radius, yy, xx, stretch=1.0):
    """Union of ``count`` ellipses (``radius`` px high, ``stretch`` times wider) centred in ``region``."""
    out = np.zeros(region.shape, bool)
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return out
    for k in rng.integers(0, len(ys), count):
        r = radius * rng.uniform(0.8, 1.2)
        out |= ((yy - ys[k]) / r) ** 2 + ((xx - xs[k]) / (r * stretch)) ** 2 < 1
    return out & region


def _rc_stuff(rng, scene, kind, region, yy, xx):
    """Paint a stuff region and its small look-alike decorations, drawn with the texture generators of
    parts of other classes: clouds are plaster walls, dandelions yellow petals, road dashes white petals,
    foam streaks white car paint."""
    h, w = scene.shape
    obj = scene.new_object()
    if kind == ROAD:
        base = _colour((105, 105, 110), 0.5 * (rng.random((h, w)).astype(np.float32) * 2 - 1))
    else:
        base = _ground_texture(rng, kind, h, w, yy, xx)
    scene.paint(region, base, kind, obj)
    unit = h / 448
    if kind == SKY:
        deco, tex = _blobs(rng, region, int(rng.integers(2, 5)), 16 * unit, yy, xx, 1.8), _tex_plaster(rng, h, w)
    elif kind == GRASS:
        deco, tex = _blobs(rng, region, int(rng.integers(3, 7)), 11 * unit, yy, xx), _tex_dots(_YELLOW, yy, xx)
    elif kind == ROAD:
        mid = yy[region].mean() if region.any() else 0.0
        lane = np.abs(yy - mid - 0.1 * h * np.sin(xx / 60)) < 7 * unit
        deco, tex = lane & ((xx // (36 * unit)) % 2 == 0) & region, _tex_dots(_WHITE, yy, xx)
    else:
        deco, tex = _blobs(rng, region, int(rng.integers(3, 6)), 9 * unit, yy, xx, 2.5), _tex_stripes(_WHITE, yy, xx)
    scene.paint(deco, tex, kind, obj)


def _rc_car(rng, scene, cy, cx, size, novel):
    h, w = scene.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    obj = scene.new_object()
    look = int(rng.integers(0, 4))
    glass = (look < 2) != novel  # support: red / blue cars have glass cabins; novel: yellow / white ones
    length = size * rng.uniform(1.4, 2.0)
    height = size * rng.uniform(0.45, 0.6)
    cabin_h = height * (rng.uniform(1.0, 1.4) if novel else rng.uniform(0.5, 0.8))
    cabin_w = length * (rng.uniform(0.3, 0.4) if novel else rng.uniform(0.2, 0.28))
    body = (np.abs(xx - cx) < length / 2) & (yy > cy - height) & (yy < cy)
    cabin = (np.abs(xx - cx) < cabin_w) & (yy > cy - height - cabin_h) & (yy <= cy - height)
    scene.paint(body, _tex_stripes((_RED, _BLUE, _YELLOW, _WHITE)[look], yy, xx), CAR, obj)
    scene.paint(cabin, _tex_glass(h, w) if glass else _tex_tinted(yy, xx), CAR, obj)
    radius = height * rng.uniform(0.4, 0.5)
    for k in range(int(rng.integers(2, 4))):
        wx = cx - length / 2 + radius + k * (length - 2 * radius) / 2
        scene.paint((yy - cy) ** 2 + (xx - wx) ** 2 < radius**2, _tex_wheel(yy, xx), CAR, obj)


#: (wall, roof), (trunk, crown), (petals, centre) look pairs of support scenes and their recombinations.
_HOUSE_LOOKS = {"support": ((0, 0), (1, 2), (2, 1)), "novel": ((0, 2), (1, 1), (2, 0))}
_TREE_LOOKS = {"support": ((0, 0), (0, 1), (1, 2)), "novel": ((1, 0), (1, 1), (0, 2))}
_FLOWER_LOOKS = {"support": ((0, 0), (1, 1), (2, 0)), "novel": ((0, 1), (1, 0), (2, 1))}


def _rc_house(rng, scene, cy, cx, size, novel):
    h, w = scene.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    obj = scene.new_object()
    wall_look, roof_look = _HOUSE_LOOKS["novel" if novel else "support"][int(rng.integers(0, 3))]
    width = size * rng.uniform(1.2, 1.8)
    height = size * rng.uniform(0.8, 1.2)
    wall = (np.abs(xx - cx) < width / 2) & (yy > cy - height) & (yy < cy)
    if wall_look == 2:
        scene.paint(wall, _tex_plaster(rng, h, w), HOUSE, obj)
    else:
        scene.paint(wall, _tex_brick(((180, 90, 60), (215, 180, 90))[wall_look], yy, xx), HOUSE, obj)
    roof_h = height * (rng.uniform(0.9, 1.3) if novel else rng.uniform(0.4, 0.65))
    top = cy - height
    roof = (yy <= top) & (yy > top - roof_h) & (np.abs(xx - cx) < (yy - (top - roof_h)) / roof_h * width * 0.6)
    scene.paint(roof, _tex_tiles(((60, 45, 45), (170, 60, 45), (60, 120, 70))[roof_look], yy, xx), HOUSE, obj)
    for k in range(int(rng.integers(1, 4))):  # small windows: car glass
        wx = cx - width / 2 + width * (k + 1) / 4
        win = (np.abs(xx - wx) < width * 0.08) & (np.abs(yy - (cy - height * 0.55)) < height * 0.12)
        scene.paint(win, _tex_glass(h, w), HOUSE, obj)


def _rc_tree(rng, scene, cy, cx, size, novel):
    h, w = scene.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    obj = scene.new_object()
    trunk_look, crown_look = _TREE_LOOKS["novel" if novel else "support"][int(rng.integers(0, 3))]
    trunk_h = size * (rng.uniform(1.3, 1.8) if novel else rng.uniform(0.6, 1.0))
    trunk_w = size * (rng.uniform(0.3, 0.4) if novel else rng.uniform(0.15, 0.25))
    trunk = (np.abs(xx - cx) < trunk_w / 2) & (yy > cy - trunk_h) & (yy < cy)
    scene.paint(trunk, _tex_bark(rng, h, w, xx) if trunk_look == 0 else _tex_birch(rng, h, w, yy), TREE, obj)
    crown_r = size * (rng.uniform(0.45, 0.6) if novel else rng.uniform(0.7, 1.0))
    crown = (yy - (cy - trunk_h)) ** 2 + (xx - cx) ** 2 < crown_r**2
    scene.paint(crown, _tex_speckle(rng, ((60, 140, 55), (215, 120, 40), (235, 150, 190))[crown_look], h, w),
                TREE, obj)


def _rc_flower(rng, scene, cy, cx, size, novel):
    h, w = scene.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    obj = scene.new_object()
    petal_look, centre_look = _FLOWER_LOOKS["novel" if novel else "support"][int(rng.integers(0, 3))]
    stem_h = size * (rng.uniform(1.2, 1.6) if novel else rng.uniform(0.6, 1.0))
    stem = (np.abs(xx - cx) < max(size * (0.12 if novel else 0.06), 1.5)) & (yy > cy - stem_h) & (yy < cy)
    scene.paint(stem, _flat((50, 130, 50), h, w), FLOWER, obj)
    r = size * (rng.uniform(0.4, 0.55) if novel else rng.uniform(0.5, 0.7))
    fy = cy - stem_h
    dist = np.sqrt((yy - fy) ** 2 + (xx - cx) ** 2)
    petals = dist < r * (0.65 + 0.35 * np.cos(int(rng.integers(5, 8)) * np.arctan2(yy - fy, xx - cx)))
    scene.paint(petals, _tex_dots((_PINK, _YELLOW, _WHITE)[petal_look], yy, xx), FLOWER, obj)
    centre = dist < r * (0.35 if novel else 0.25)
    scene.paint(centre, _flat(((120, 80, 20), (90, 20, 40))[centre_look], h, w), FLOWER, obj)


_RC_DRAW = {CAR: _rc_car, TREE: _rc_tree, HOUSE: _rc_house, FLOWER: _rc_flower}


def render_recombined_scene(rng: np.random.Generator, size: int = 448, combos: str = "support"
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene of the recombined world: ``(image uint8 [size, size, 3], labels uint8 [size, size],
    objects uint8 [size, size])``; ``combos``: ``"support"`` or ``"novel"`` (:data:`COMBOS`)."""
    if combos not in COMBOS:
        raise ValueError(f"combos must be one of {COMBOS}, got {combos!r}")
    novel = combos == "novel"
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scene = _Scene(h, w)
    horizon = int(h * rng.uniform(0.3, 0.5))
    ground = int(rng.choice([GRASS, ROAD, WATER]))
    sky = yy < horizon + 6 * np.sin(xx / 40.0)
    _rc_stuff(rng, scene, SKY, sky, yy, xx)
    _rc_stuff(rng, scene, ground, ~sky, yy, xx)
    if ground != GRASS and rng.random() < 0.5:
        _rc_stuff(rng, scene, GRASS, yy > h - h * rng.uniform(0.1, 0.2), yy, xx)
    objects = [int(c) for c in rng.choice(list(_RC_DRAW), size=int(rng.integers(2, 4)), replace=False)]
    slots = np.linspace(0.2, 0.8, len(objects)) + rng.uniform(-0.04, 0.04, len(objects))
    for cls, sx in zip(objects, slots, strict=True):
        obj = rng.uniform(0.12, 0.17) * size
        cy = rng.uniform(horizon + 0.3 * (h - horizon), h - 0.05 * h)
        _RC_DRAW[cls](rng, scene, cy, sx * w, obj, novel)
    return _finish(scene)


#: world name -> what it exercises.
WORLDS: dict[str, str] = {
    "parts": "classes made of parts; some parts resemble other classes",
    "recombined": "several looks per class, parts recombined (look pairings, proportions) in held-out "
                  "scenes, small look-alike parts inside other classes",
}


def write_examples(root: str | Path, count: int, seed: int = 0, size: int = 448, world: str = "parts",
                   combos: str = "support") -> Path:
    """Write ``count`` scenes of ``world`` (``"parts"`` or ``"recombined"``, whose ``combos`` is
    ``"support"`` or ``"novel"``) in the examples layout and return ``root``::

        root/classes.txt          one class name a line (PARTS_WORLD_CLASSES)
        root/images/<stem>.png    RGB
        root/masks/<stem>.png     uint8, pixel = class index, 255 = ignore
        root/objects/<stem>.png   uint8, pixel = id of its object or stuff region (oracle proposals)

    Scene ``i`` depends only on ``(seed, i)`` (and the world and combos); existing files are rewritten
    identically.
    """
    if world not in WORLDS:
        raise ValueError(f"world must be one of {', '.join(WORLDS)}, got {world!r}")
    root = Path(root)
    for sub in ("images", "masks", "objects"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(PARTS_WORLD_CLASSES) + "\n")
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        if world == "parts":
            image, labels, objects = render_scene_objects(rng, size)
        else:
            image, labels, objects = render_recombined_scene(rng, size, combos)
        stem = f"scene_{i:05d}"
        Image.fromarray(image).save(root / "images" / f"{stem}.png", pnginfo=scene_info(seed, i))
        Image.fromarray(labels).save(root / "masks" / f"{stem}.png")
        Image.fromarray(objects).save(root / "objects" / f"{stem}.png")
    return root


def read_objects(path: str | Path) -> np.ndarray:
    """Oracle proposals from an ``objects/<stem>.png``: bool ``[K, H, W]``, one mask per object id."""
    objects = np.asarray(Image.open(path)).astype(np.int64)
    return objects[None] == np.unique(objects)[:, None, None]


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
