"""The scene mark: a PNG text chunk that tells a parts-world scene from a photo.

Every scene image :func:`protoseg.worlds.files.write_examples` writes carries a text chunk
``protoseg-partsworld`` (seed and index): that is how :func:`is_parts_world_image` tells a scene from a photo,
and how ``protoseg segment`` and the demo keep the hand-crafted test backend away from real photos
(:func:`check_synthetic_backend`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from protoseg.errors import ProtosegError

#: PNG text chunk key marking a parts-world scene image (JSON: seed and index of the scene).
SCENE_KEY = "protoseg-partsworld"


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
