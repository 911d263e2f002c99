"""What one request of the web demo may ask for, checked before anything is decoded or loaded.

Every check reads only what it must: file sizes from the file system, image sizes from the file header
(:func:`protoseg.images.check_image`), class names from the typed text. Messages name uploads by their
file name only (never the server's upload folder) and quote at most a short prefix of a typed value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from protoseg.classes import parse_class_list
from protoseg.errors import ProtosegError
from protoseg.images import check_image


@dataclass(frozen=True)
class DemoLimits:
    """Bounds on every request (the ``protoseg demo`` options of the same names).

    Attributes:
        max_pixels: pixels per image (width × height); larger images are refused from their header.
        max_file_mb: megabytes per uploaded file (Gradio refuses larger uploads before they are stored).
        max_files: images per request.
        max_classes: classes per request.
        max_class_chars: characters per class (synonyms ``a|b`` included).
        time_limit_s: seconds a request may run; it is stopped between images after that.
        queue_size: requests waiting at most; more are refused at once.
        concurrency: requests served at the same time.
        cache_size: banks (and segmenters) kept loaded; the least recently used are closed.
    """

    max_pixels: int = 16_000_000
    max_file_mb: float = 20.0
    max_files: int = 8
    max_classes: int = 50
    max_class_chars: int = 60
    time_limit_s: float = 120.0
    queue_size: int = 16
    concurrency: int = 2
    cache_size: int = 4

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_file_mb", "max_files", "max_classes", "max_class_chars", "time_limit_s",
                     "queue_size", "concurrency", "cache_size"):
            if not getattr(self, name) > 0:
                raise ProtosegError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")

    def describe(self) -> str:
        """The limits in one line, as the command prints them and the page states them."""
        return (f"{self.max_files} images of at most {self.max_pixels / 1e6:g} MP and {self.max_file_mb:g} MB, "
                f"{self.max_classes} classes of at most {self.max_class_chars} characters, "
                f"{self.time_limit_s:g} s per request; {self.concurrency} served at a time, "
                f"{self.queue_size} waiting at most")


def short(text: str, limit: int = 40) -> str:
    """``text`` on one line, cut to ``limit`` characters (``…`` marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def check_uploads(paths: Sequence[Path], limits: DemoLimits) -> None:
    """The number of files, each file's size and each image's pixel count (header only).

    Raises:
        ProtosegError: the first limit exceeded, or a file that is not a readable image — naming the file by
            its name only.
    """
    if len(paths) > limits.max_files:
        raise ProtosegError(f"{len(paths)} files; this demo takes at most {limits.max_files} images per request")
    for path in paths:
        size = path.stat().st_size
        if size > limits.max_file_mb * 1e6:
            raise ProtosegError(f"{short(path.name)} is {size / 1e6:.1f} MB; this demo takes files of at most "
                                f"{limits.max_file_mb:g} MB")
        try:
            width, height = check_image(path, max_pixels=limits.max_pixels)
        except ProtosegError:
            raise ProtosegError(f"{short(path.name)} is not an image of at most {limits.max_pixels / 1e6:g} MP "
                                "that this demo can read (downscale it first, or check the file)") from None


def check_classes_text(text: str, limits: DemoLimits) -> list[str]:
    """The class names typed in ``text``, parsed as ``protoseg segment --classes`` once their number and
    lengths are within ``limits``.

    Raises:
        ProtosegError: too long a list, too many classes, too long a name, or a list the parser refuses.
    """
    if len(text) > limits.max_classes * (limits.max_class_chars + 2):
        raise ProtosegError(f"the class list has {len(text):,} characters; this demo takes at most "
                            f"{limits.max_classes} classes of at most {limits.max_class_chars} characters")
    pieces = text.split(",")
    if len(pieces) > limits.max_classes:
        raise ProtosegError(f"{len(pieces)} classes; this demo takes at most {limits.max_classes}")
    for k, piece in enumerate(pieces, 1):
        if len(piece.strip()) > limits.max_class_chars:
            raise ProtosegError(f"class {k} ({short(piece.strip())!r}) has {len(piece.strip())} characters; this "
                                f"demo takes at most {limits.max_class_chars}")
    return parse_class_list(text)
