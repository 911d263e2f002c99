"""The recombined world: several looks per class, parts recombined at test time, look-alike small parts.

Support (bank-building) scenes pair each class's part looks and proportions one way; held-out ``novel``
scenes recombine them in pairings and proportions the support scenes never show. Stuff regions carry
small decorations drawn with the textures of other classes' parts (clouds are plaster walls, dandelions
yellow petals, road dashes white petals, foam streaks white car paint).
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

#: How parts combine in the recombined world: ``"support"`` (the combinations and proportions of support
#: / bank-building scenes) or ``"novel"`` (held-out scenes: every object recombines its parts' looks in
#: combinations, and with proportions, the support scenes never show).
COMBOS = ("support", "novel")

_RED, _BLUE, _YELLOW, _WHITE = (200, 40, 40), (40, 70, 200), (230, 190, 40), (232, 232, 236)
_PINK = (240, 120, 180)


def _flat(rgb, h, w):
    return modulated(rgb, np.zeros((h, w), np.float32))


def _tex_stripes(rgb, yy, xx):
    """Car body paint: horizontal stripes (also the foam streaks on water)."""
    return modulated(rgb, 0.6 * np.sign(np.sin(yy / 3.0)))


def _tex_glass(h, w):
    """Car cabin glass (also house windows)."""
    return _flat((170, 210, 240), h, w)


def _tex_tinted(yy, xx):
    return modulated((55, 65, 90), 0.3 * np.sign(np.sin((xx - yy) / 4.0)))


def _tex_wheel(yy, xx):
    return modulated((70, 70, 75), 0.8 * np.sign(np.sin(xx / 2.0) * np.sin(yy / 2.0)))


def _tex_brick(rgb, yy, xx):
    row = np.floor(yy / 8)
    mortar = (np.mod(yy, 8) < 1.5) | (np.mod(xx + 8 * np.mod(row, 2), 16) < 1.5)
    return modulated(rgb, np.where(mortar, 1.0, -0.4))


def _tex_plaster(rng, h, w):
    """White plaster wall (also the clouds in the sky)."""
    return modulated((225, 222, 212), 0.25 * (noise(rng, h, w, 4) * 2 - 1))


def _tex_tiles(rgb, yy, xx):
    return modulated(rgb, 0.6 * np.sign(np.sin((xx + yy) / 2.5)))


def _tex_bark(rng, h, w, xx):
    return modulated((110, 70, 35), 0.7 * np.sign(np.sin(xx / 1.5 + 2 * noise(rng, h, w, 6))))


def _tex_birch(rng, h, w, yy):
    marks = (np.sin(yy / 5.0 + 3 * noise(rng, h, w, 8)) > 0.8).astype(np.float32)
    return modulated((225, 225, 215), -2.5 * marks)


def _tex_speckle(rng, rgb, h, w):
    return modulated(rgb, 0.9 * ((rng.random((h, w)) > 0.75).astype(np.float32) * 2 - 1))


def _tex_dots(rgb, yy, xx):
    """Flower petals (also the road's dashes and the grass' dandelions)."""
    return modulated(rgb, 0.35 * np.sign(np.sin(xx / 1.2) + np.sin(yy / 1.2)))


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
        base = modulated((105, 105, 110), 0.5 * (rng.random((h, w)).astype(np.float32) * 2 - 1))
    else:
        base = ground_texture(rng, kind, h, w, yy, xx)
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
    scene = Scene(h, w)
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
    return finish(scene)

