"""Safe image decoding and a content-addressed image store.

Every image enters the system through `decode_image`: corrupt, truncated or enormous files, and shapes the
model cannot take (aspect ratio over 200), raise `ImageError` with a clear message, before pixels are decoded; odd modes (CMYK, palette, alpha, 16-bit, 1-bit) and EXIF rotation come out as plain RGB.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mgpo.checks import image_problems

# 8K x 8K: above every benchmark we read (V*, MME-RealWorld top out near 8K a side). Past this, refuse.
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_IMAGE_BYTES = 64 * 1024 * 1024
WHITE = (255, 255, 255)


class ImageError(ValueError):
    """An image that cannot be used, with the reason."""


EXIF_ORIENTATION = 0x0112


def content_hash(data: bytes) -> str:
    """Hex sha256 of the encoded bytes: the image's name in the store and in every record."""
    return hashlib.sha256(data).hexdigest()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L"):
        # 16-bit grey: scale the used range to 8 bits rather than clipping everything to white, through a
        # 64K-entry table: no full-size float copy (an 8K x 8K image took 1.7 GB that way)
        array = np.asarray(image)
        top = max(int(array.max()) if array.size else 0, 255)
        table = (np.arange(65536, dtype=np.uint32) * 255 // top).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(table[array])
    elif image.mode == "I":
        array = np.asarray(image, dtype=np.float32)
        top = max(float(array.max()) if array.size else 0.0, 255.0)
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        lo, hi = float(array.min()), float(array.max())
        scaled = (array - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(array)
        image = Image.fromarray(scaled.astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels composited on white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode encoded image bytes into an RGB image, upright per EXIF, or raise ImageError."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"image file is {len(data)} bytes, over the {MAX_IMAGE_BYTES}-byte limit")
    try:
        with warnings.catch_warnings():
            # PIL warns (and only errors at 2x) on bombs; we check the size ourselves before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image is {width}x{height} = {width * height} pixels, over the {max_pixels}-pixel limit "
                    "(decompression-bomb guard)"
                )
            for problem in image_problems(width, height):
                raise ImageError(problem)
            image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"image refused by the decompression-bomb guard: {err}") from err
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as err:
        raise ImageError(f"image is corrupt, truncated or not an image: {err}") from err
    if width == 0 or height == 0:
        raise ImageError("image has zero width or height")
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as err:
        raise ImageError(f"image has unreadable EXIF orientation: {err}") from err
    return _to_rgb(image)


def load_image(path: str | os.PathLike[str], max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Read and decode an image file; see `decode_image`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageError(f"cannot read image {path}: {err}") from err
    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"image file {path} is {size} bytes, over the {MAX_IMAGE_BYTES}-byte limit")
    return decode_image(path.read_bytes(), max_pixels)


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class ImageStore:
    """Images stored once, named by the sha256 of their bytes: `root/ab/abcdef....` (a local or shared volume).

    Records carry these names instead of pixels, so trajectories stay small and the learner rebuilds inputs.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def put_bytes(self, data: bytes, check: bool = True) -> str:
        """Store encoded image bytes as given (after checking they decode); return their hash."""
        if check:
            decode_image(data)
        digest = content_hash(data)
        target = self.path(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # Write-then-rename so a reader never sees half a file, even with several writers.
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, target)
        return digest

    def put_file(self, path: str | os.PathLike[str]) -> str:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageError(f"cannot read image {path}: {err}") from err
        return self.put_bytes(data)

    def put_image(self, image: Image.Image) -> str:
        return self.put_bytes(encode_png(image), check=False)

    def get(self, digest: str) -> Image.Image:
        """The decoded RGB image stored under `digest`, or ImageError when it is missing or damaged."""
        path = self.path(digest)
        if not path.exists():
            raise ImageError(f"image {digest} is not in the store at {self.root}")
        return load_image(path)

    def size(self, digest: str) -> tuple[int, int]:
        """(width, height) of `get(digest)` from the file's header alone, upright per EXIF as `get` turns it."""
        with Image.open(self.path(digest)) as image:
            width, height = image.size
            transposed = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn
        return (height, width) if transposed else (width, height)

    def problems(self, digest: str) -> list[str]:
        """What makes a stored image unusable, read from its header only (cheap): missing, unreadable, too
        large, a shape the model cannot take."""
        path = self.path(digest)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
        except FileNotFoundError:
            return [f"image {digest} is not in the store at {self.root}"]
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            return [f"image {digest} is unreadable: {err}"]
        if width * height > MAX_IMAGE_PIXELS:
            return [f"image {digest} is {width}x{height}, over the {MAX_IMAGE_PIXELS}-pixel limit"]
        return [f"image {digest}: {p}" for p in image_problems(width, height)]

    def __contains__(self, digest: str) -> bool:
        return self.path(digest).exists()
