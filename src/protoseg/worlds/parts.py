"""The parts world: scenes whose object classes are made of parts with their own textures.

Scenes have a sky band over a ground of grass, road or water, and one to three objects. Objects are
built from parts, in varying layouts and proportions:

=========  ===================================================================
car        striped body (random hue) + two or three dark checkered wheels
tree       brown bark trunk + speckled green crown (round or conical)
house      brick wall + dark roof with diagonal tiles (+ sometimes a window)
flower     thin green stem + ring of dotted petals (pink, yellow or white)
=========  ===================================================================

Some parts deliberately resemble other classes (a crown's green is grass' green, a wheel's grey is
the road's), so a single whole-object prototype is ambiguous where a part-level match is not.
Everything is deterministic given the random generator.
"""

from __future__ import annotations

import numpy as np

from protoseg.worlds.canvas import (
    CAR,
    FLOWER,
    GRASS,
    HOUSE,
    ROAD,
    SKY,
    TREE,
    WATER,
    Scene,
    finish,
    ground_texture,
    modulated,
    noise,
)


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
    scene.paint(body | cabin, modulated(hue, 0.6 * stripes), CAR, obj)
    n_wheels = int(rng.integers(2, 4))
    radius = height * rng.uniform(0.45, 0.6)
    for k in range(n_wheels):
        wx = cx - length / 2 + radius + k * (length - 2 * radius) / max(n_wheels - 1, 1)
        wheel = (yy - cy) ** 2 + (xx - wx) ** 2 < radius**2
        checker = np.sign(np.sin(xx / 2.0) * np.sin(yy / 2.0))
        scene.paint(wheel, modulated((70, 70, 75), 0.8 * checker), CAR, obj)


def _draw_tree(rng, scene, cy, cx, size):
    h, w = scene.shape
    obj = scene.new_object()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    trunk_h = size * rng.uniform(0.8, 1.5)
    trunk_w = size * rng.uniform(0.15, 0.3)
    trunk = (np.abs(xx - cx) < trunk_w / 2) & (yy > cy - trunk_h) & (yy < cy)
    bark = np.sign(np.sin(xx / 1.5 + 2 * noise(rng, h, w, 6)))
    scene.paint(trunk, modulated((110, 70, 35), 0.7 * bark), TREE, obj)
    crown_r = size * rng.uniform(0.6, 1.0)
    top = cy - trunk_h
    if rng.random() < 0.5:
        crown = (yy - top) ** 2 + (xx - cx) ** 2 < crown_r**2
    else:
        crown = (yy < top + crown_r * 0.3) & (yy > top - 2 * crown_r) & \
            (np.abs(xx - cx) < (yy - (top - 2 * crown_r)) * 0.45)
    speckle = (rng.random((h, w)) > 0.75).astype(np.float32) * 2 - 1
    scene.paint(crown, modulated((60, 140, 55), 0.9 * speckle), TREE, obj)


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
    scene.paint(wall, modulated((180, 90, 60), brick), HOUSE, obj)
    roof_h = height * rng.uniform(0.5, 0.9)
    top = cy - height
    roof = (yy <= top) & (yy > top - roof_h) & (np.abs(xx - cx) < (yy - (top - roof_h)) / roof_h * width * 0.6)
    tiles = np.sign(np.sin((xx + yy) / 2.5))
    scene.paint(roof, modulated((60, 45, 45), 0.6 * tiles), HOUSE, obj)
    if rng.random() < 0.6:
        win = (np.abs(xx - cx) < width * 0.12) & (np.abs(yy - (cy - height * 0.55)) < height * 0.15)
        scene.paint(win, modulated((170, 210, 240), np.zeros((h, w), np.float32)), HOUSE, obj)


def _draw_flower(rng, scene, cy, cx, size):
    h, w = scene.shape
    obj = scene.new_object()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    stem_h = size * rng.uniform(0.8, 1.4)
    stem = (np.abs(xx - cx) < max(size * 0.06, 1.5)) & (yy > cy - stem_h) & (yy < cy)
    scene.paint(stem, modulated((50, 130, 50), np.zeros((h, w), np.float32)), FLOWER, obj)
    r = size * rng.uniform(0.35, 0.6)
    fy = cy - stem_h
    dist = np.sqrt((yy - fy) ** 2 + (xx - cx) ** 2)
    ang = np.arctan2(yy - fy, xx - cx)
    petals = dist < r * (0.65 + 0.35 * np.cos(int(rng.integers(5, 8)) * ang))
    dots = np.sign(np.sin(xx / 1.2) + np.sin(yy / 1.2))
    colour = rng.choice([(240, 120, 180), (245, 215, 60), (245, 245, 245)])
    scene.paint(petals, modulated(colour, 0.35 * dots), FLOWER, obj)
    centre = dist < r * 0.25
    scene.paint(centre, modulated((120, 80, 20), np.zeros((h, w), np.float32)), FLOWER, obj)


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
    scene = Scene(h, w)
    horizon = int(h * rng.uniform(0.3, 0.55))
    ground = int(rng.choice([GRASS, ROAD, WATER]))
    sky = yy < horizon + 6 * np.sin(xx / 40.0)
    scene.paint(sky, ground_texture(rng, SKY, h, w, yy, xx), SKY, scene.new_object())
    scene.paint(~sky, ground_texture(rng, ground, h, w, yy, xx), ground, scene.new_object())
    if ground != GRASS and rng.random() < 0.5:  # a grass verge: stuff classes co-occur
        verge = yy > h - h * rng.uniform(0.08, 0.2)
        scene.paint(verge, ground_texture(rng, GRASS, h, w, yy, xx), GRASS, scene.new_object())
    if objects is None:
        objects = [int(c) for c in rng.choice(list(_DRAW), size=int(rng.integers(1, 4)))]
    slots = np.linspace(0.2, 0.8, len(objects)) + rng.uniform(-0.05, 0.05, len(objects))
    for cls, sx in zip(objects, slots, strict=True):
        obj = rng.uniform(0.13, 0.2) * size
        cy = rng.uniform(horizon + 0.15 * (h - horizon), h - 0.05 * h)
        _DRAW[cls](rng, scene, cy, sx * w, obj)
    return finish(scene)

