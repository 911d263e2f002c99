"""What both procedural worlds paint with: the class list, a scene canvas, noise, colours and ground textures.

A scene is painted region by region (:class:`Scene`): every painted pixel gets the texture's colour, its class
(an index into :data:`PARTS_WORLD_CLASSES`) and the id of the object or stuff region that owns it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Class names in label order (the mask value of a pixel is its index here).
PARTS_WORLD_CLASSES: list[str] = ["sky", "grass", "road", "water", "car", "tree", "house", "flower"]
SKY, GRASS, ROAD, WATER, CAR, TREE, HOUSE, FLOWER = range(8)
#: Mask value of pixels that are not scored.
IGNORE = 255


def noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Smooth value noise in [0, 1], ``[h, w]``: a coarse random grid upsampled bilinearly."""
    gh, gw = max(h // scale, 1) + 2, max(w // scale, 1) + 2
    grid = rng.random((gh, gw)).astype(np.float32)
    img = Image.fromarray(grid).resize((w + 2 * scale, h + 2 * scale), Image.BILINEAR)
    return np.asarray(img)[scale: scale + h, scale: scale + w]


class Scene:
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
        """Give the pixels of bool ``mask [h, w]`` the colours of ``texture [h, w, 3]``, class ``cls`` and object
        ``obj``."""
        self.image[mask] = texture[mask]
        self.labels[mask] = cls
        self.objects[mask] = obj


def modulated(base: tuple[float, float, float], variation: np.ndarray) -> np.ndarray:
    """``base`` RGB in 0-255 modulated by ``variation [h, w]`` in [-1, 1] -> ``[h, w, 3]``."""
    return np.clip(np.asarray(base, np.float32)[None, None] * (1 + 0.25 * variation[..., None]), 0, 255)


def ground_texture(rng: np.random.Generator, kind: int, h: int, w: int, yy: np.ndarray, xx: np.ndarray
                   ) -> np.ndarray:
    """The texture ``[h, w, 3]`` (float RGB) of stuff class ``kind`` (sky, grass, road or water) over the pixel
    grid ``yy, xx [h, w]``."""
    if kind == SKY:
        grad = yy / max(h, 1)
        base = np.stack([110 + 60 * grad, 160 + 50 * grad, 235 + 0 * grad], -1)
        return np.clip(base + 8 * noise(rng, h, w, 64)[..., None], 0, 255)
    if kind == GRASS:
        n = noise(rng, h, w, 3) * 2 - 1
        return modulated((70, 150, 60), n + 0.3 * (noise(rng, h, w, 12) * 2 - 1))
    if kind == ROAD:
        n = rng.random((h, w)).astype(np.float32) * 2 - 1
        road = modulated((105, 105, 110), 0.5 * n)
        dash = (np.abs(yy - h * 0.5 - 0.1 * h * np.sin(xx / 60)) < 3) & ((xx // 24) % 2 == 0)
        road[dash] = (230, 230, 220)
        return road
    waves = np.sin(xx / 9.0 + 3 * np.sin(yy / 17.0)) * 0.6 + (noise(rng, h, w, 8) * 2 - 1) * 0.4
    return modulated((50, 90, 170), waves)


def finish(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (uint8), labels and objects with object ids renumbered ``0..K-1`` over the visible ones."""
    _, objects = np.unique(scene.objects, return_inverse=True)
    return (np.clip(scene.image + 0.5, 0, 255).astype(np.uint8), scene.labels,
            objects.reshape(scene.shape).astype(np.uint8))
