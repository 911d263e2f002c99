"""Reading user images robustly: any mode/bit depth becomes ``uint8`` RGB ``[H, W, 3]``.

:func:`load_image` reads a file (EXIF orientation, odd modes and bit depths, decompression bombs);
:func:`as_rgb_array` is what the segmenter takes from a caller — a file, or an image already in memory
that must already be uint8 RGB (nothing in memory is converted silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from protoseg.errors import ProtosegError

#: Images above this many pixels are refused (a 100-megapixel photo is ~300 MB as RGB uint8).
MAX_PIXELS = 100_000_000

#: What :meth:`protoseg.Segmenter.segment` takes: a uint8 ``[H, W, 3]`` RGB array, a PIL image of mode
#: ``"RGB"``, or the path of an image file (:func:`as_rgb_array`).
ImageInput: TypeAlias = np.ndarray | Image.Image | str | Path

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


def as_rgb_array(image: ImageInput) -> np.ndarray:
    """``image`` as uint8 RGB ``[H, W, 3]``: a path (``str`` / ``Path``) is read with :func:`load_image`
    (EXIF orientation honoured, any mode converted); a PIL image must have mode ``"RGB"`` (taken as it
    is; EXIF orientation is not applied); an array must already be uint8 ``[H, W, 3]`` (returned as is).

    Raises:
        ProtosegError: anything else — another dtype, shape, channel count or PIL mode, an empty image, or
            another type — naming what it got and how to convert it; or a file :func:`load_image` refuses.
    """
    if isinstance(image, str | Path):
        return load_image(image)
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ProtosegError(f"PIL images must have mode 'RGB'; got mode {image.mode!r}: convert it with "
                                "image.convert('RGB') (choosing how alpha or bit depth become RGB), or pass the "
                                "file's path, which protoseg reads in any mode")
        array = np.asarray(image, dtype=np.uint8)
    elif isinstance(image, np.ndarray):
        problem = _array_problem(image)
        if problem:
            raise ProtosegError(f"images must be uint8 [H, W, 3] RGB arrays; got a {image.dtype} array of shape "
                                f"{tuple(image.shape)}; {problem}")
        array = image
    else:
        raise ProtosegError(f"images must be a uint8 [H, W, 3] RGB array, a PIL image or a file path; got "
                            f"{_type_name(image)}{_tensor_hint(image)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ProtosegError(f"the image is empty (shape {tuple(array.shape)})")
    return array


def _array_problem(image: np.ndarray) -> str | None:
    """How to turn a wrong array into uint8 ``[H, W, 3]``, or ``None`` when it is one."""
    if image.dtype.kind == "f":
        return "for values in [0, 1] convert with (x * 255).round().astype(np.uint8)"
    if image.dtype != np.uint8:
        return "scale it to 0-255 and convert with .astype(np.uint8)"
    if image.ndim == 2:
        return "a grayscale image becomes RGB with np.repeat(x[..., None], 3, axis=2)"
    if image.ndim == 3 and image.shape[2] == 4:
        return "drop (or composite) the alpha channel, e.g. x[..., :3]"
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[2] != 3:
        return "channels come last: x.transpose(1, 2, 0)"
    if image.ndim != 3 or image.shape[2] != 3:
        return "give one image with three colour channels (RGB) last"
    return None


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__


def _tensor_hint(value: Any) -> str:
    return "; convert a tensor with x.cpu().numpy()" if hasattr(value, "cpu") and hasattr(value, "numpy") else ""
