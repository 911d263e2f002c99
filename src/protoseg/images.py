"""Reading user images robustly: any mode/bit depth becomes ``uint8`` RGB ``[H, W, 3]``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from protoseg.errors import ProtosegError

#: Images above this many pixels are refused (a 100-megapixel photo is ~300 MB as RGB uint8).
MAX_PIXELS = 100_000_000

#: File name endings of images protoseg reads from a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def expand_images(paths: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """Image paths with every folder replaced by the images directly in it (sorted; hidden files and other
    suffixes skipped). Files are kept as given; duplicates (the same file twice) are dropped.

    Raises:
        ProtosegError: a path does not exist, or a folder holds no image.
    """
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not found:
                raise ProtosegError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        elif not path.exists():
            raise ProtosegError(f"image not found: {path}")
        else:
            out.append(path)
    seen: set[str] = set()
    unique = []
    for path in out:
        key = str(path.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to ``uint8`` RGB ``[H, W, 3]``.

    16-bit and float images are rescaled to 0-255 from their own dynamic range (``I;16``: /257);
    alpha is composited on white; palette and grayscale images are expanded.
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(image, dtype=np.uint16).astype(np.float32) / 257.0
        return np.repeat(np.clip(arr + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return np.repeat(np.clip(scaled + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def check_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Cheap validation (header only) of an image file; returns ``(width, height)``.

    Raises:
        ProtosegError: as :func:`load_image`.
    """
    path = Path(path)
    if path.is_dir():
        raise ProtosegError(f"{path} is a folder, not an image")
    if not path.is_file():
        raise ProtosegError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ProtosegError(f"cannot read image {path}: {exc}") from exc
    _check_size(path, width, height, max_pixels)
    return width, height


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width == 0 or height == 0:
        raise ProtosegError(f"image {path} is empty ({width}x{height})")
    if width * height > max_pixels:
        raise ProtosegError(
            f"image {path} is {width}x{height} = {width * height / 1e6:.0f} MP, above the "
            f"{max_pixels / 1e6:.0f} MP limit; downscale it first"
        )


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as ``uint8`` RGB ``[H, W, 3]``, honouring EXIF orientation.

    Raises:
        ProtosegError: the file is missing, not an image, truncated, empty or larger than ``max_pixels``.
    """
    path = Path(path)
    check_image(path, max_pixels)
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb_array(image)
    except ProtosegError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ProtosegError(f"cannot read image {path}: {exc}") from exc
