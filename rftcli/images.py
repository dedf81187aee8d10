"""Images for the `dataset` table: read once, checked, upright, RGB, sized, encoded.

`ImageProcessor.process(data)` takes the encoded bytes of one image and returns what the table stores:

1. Decompression-bomb guard: the header is read first and an image over `max_image_pixels` (width x
   height, PIL's default limit of 89,478,485 unless changed) is refused before any pixel is decoded.
2. Decode once, apply the EXIF orientation (a phone photo stored sideways comes out upright), convert
   to RGB (transparent pixels are laid on white; palette and grey images are expanded).
3. Resize keeping the aspect ratio so that width x height <= `max_pixels` and >= `min_pixels`
   (Lanczos when shrinking, bicubic when enlarging). Sizes round down under the cap, up over the floor.
4. Encode: an image nothing was done to (already RGB, upright, in size, PNG or JPEG) keeps its bytes
   exactly; any other is written as JPEG (quality 95) when it came as JPEG, else as PNG (lossless).

Identical input bytes are processed once: results are kept in a small LRU cache keyed by content hash
(64 images, 64 MB at most; data sets such as CLEVR or RefCOCO ask many questions about one image). `sha256` of the stored bytes
is returned with each image for deduplication.

`check_table_images(path, table)` checks a stored table's images before a stage spends time on it:
every image has bytes, opens, passes Pillow's own integrity check and is within the bomb limit, so a
damaged row is named (file, row, column) before a model is loaded.

Video: `sample_frames(path, n)` decodes `n` frames spread evenly over a clip. Animated GIF/WebP/PNG
are decoded with Pillow; other files need PyAV (`pip install av`) or OpenCV (`pip install
opencv-python-headless`); without either the error says so in one line.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

PIL_DEFAULT_MAX_PIXELS = 89_478_485
"""Pillow's own decompression-bomb threshold (a 24-bit image of about 256 MB)."""

MAX_ASPECT_RATIO = 200
"""Qwen2-VL-family processors (`smart_resize`) refuse images whose long side is this many times the short."""

_EXIF_ORIENTATION = 0x0112
_ANIMATED = {".gif", ".webp", ".png", ".apng"}


class ImageError(ValueError):
    """An image cannot be used; the message is the reason, without location."""


def _stored_images(table) -> Iterator[tuple[int, int, bytes | None]]:
    """(row, image index, bytes) of a table's `images` column, 256 rows at a time (bytes are copied out)."""
    row = 0
    for batch in table.select(["images"]).to_batches(max_chunksize=256):
        for items in batch.column(0).to_pylist():
            for j, item in enumerate(items or []):
                yield row, j, (item or {}).get("bytes")
            row += 1


def check_table_images(path: Path, table, max_image_pixels: int = PIL_DEFAULT_MAX_PIXELS,
                       rows: Sequence[int] | None = None) -> None:
    """Raise a ValueError naming file, row and column for the first image of `table` (a dataset,
    rollouts or scores table) that has no bytes, cannot be read, or is over `max_image_pixels`. `rows`: the
    file's row number of each of `table`'s rows, where `table` holds only the rows a stage will use."""
    checked: set[bytes] = set()  # digests of bytes already decoded: a rollouts group repeats its prompt's image G times
    for row, j, data in _stored_images(table):
        where = f"{path}: row {row if rows is None else rows[row]}, column 'images' (image {j})"
        if not data:
            raise ValueError(f"{where}: no image bytes (only a path); rftcli prepare-data stores images in the table")
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest in checked:
            continue
        checked.add(digest)
        try:
            with _own_bomb_check(), Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > max_image_pixels:
                    raise ImageError(f"image is {w}x{h} = {w * h:,} pixels, over the {max_image_pixels:,}-pixel "
                                     "decompression-bomb limit")
                if max(w, h) > MAX_ASPECT_RATIO * max(min(w, h), 1):
                    raise ImageError(f"image is {w}x{h}, more than {MAX_ASPECT_RATIO} times longer than wide, "
                                     "which Qwen2-VL-family processors refuse")
                img.load()  # decoded whole: `verify()` passes a JPEG cut short or a PNG whose pixel data is damaged
        except ImageError as err:
            raise ValueError(f"{where}: {err}") from None
        except Exception as err:  # PIL raises many types for broken files
            raise ValueError(f"{where}: not a readable image ({type(err).__name__})") from None


@dataclass(frozen=True)
class StoredImage:
    bytes: bytes
    size: tuple[int, int]
    """(width, height) as stored."""
    original_size: tuple[int, int]
    """(width, height) as decoded, after the EXIF rotation and before resizing."""
    sha256: str
    """Hex digest of the stored bytes."""


@contextmanager
def _own_bomb_check():
    """Let our limit decide: Pillow's global limit is lifted while a header is read, and restored."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def target_size(width: int, height: int, max_pixels: int | None, min_pixels: int | None) -> tuple[int, int]:
    """The size keeping the aspect ratio with min_pixels <= w*h <= max_pixels (unchanged if inside)."""
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        scale = math.sqrt(max_pixels / pixels)
        w, h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
        while w * h > max_pixels and (w > 1 or h > 1):  # floating point may leave one pixel over
            w, h = (w - 1, h) if w >= h else (w, h - 1)
        return w, h
    if min_pixels is not None and pixels < min_pixels:
        scale = math.sqrt(min_pixels / pixels)
        return math.ceil(width * scale), math.ceil(height * scale)
    return width, height


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (dropping alpha would show black)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=95)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


class ImageProcessor:
    """Turns encoded image bytes into stored images; see the module docstring for each step."""

    def __init__(self, max_pixels: int | None = None, min_pixels: int | None = None,
                 max_image_pixels: int = PIL_DEFAULT_MAX_PIXELS, cache_size: int = 64, cache_bytes: int = 64 << 20):
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels
        self.max_image_pixels = max_image_pixels
        self._cache: OrderedDict[bytes, StoredImage] = OrderedDict()
        self._cache_size = cache_size
        self._cache_budget = cache_bytes
        self._cached = 0

    def process(self, data: bytes) -> StoredImage:
        key = hashlib.sha256(data).digest()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        stored = self._process(data)
        if len(stored.bytes) <= self._cache_budget // 8:
            self._cache[key] = stored
            self._cached += len(stored.bytes)
            while len(self._cache) > self._cache_size or self._cached > self._cache_budget:
                self._cached -= len(self._cache.popitem(last=False)[1].bytes)
        return stored

    def _open(self, data: bytes) -> Image.Image:
        try:
            with _own_bomb_check():
                img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombWarning:  # not expected with the limit lifted; kept as a guard
            raise ImageError("image refused as a decompression bomb") from None
        except Exception as err:  # PIL raises many types for broken files
            raise ImageError(f"unreadable image ({type(err).__name__})") from None
        w, h = img.size
        if w * h > self.max_image_pixels:
            raise ImageError(f"image is {w}x{h} = {w * h:,} pixels, over the {self.max_image_pixels:,}-pixel "
                             "decompression-bomb limit (raise --max-image-pixels if it is genuine)")
        return img

    def _process(self, data: bytes) -> StoredImage:
        img = self._open(data)
        fmt = img.format
        try:
            img.load()
            rotated = img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
            if rotated:
                img = ImageOps.exif_transpose(img)
            rgb = to_rgb(img)
        except ImageError:
            raise
        except Exception as err:
            raise ImageError(f"unreadable image ({type(err).__name__}: {err})") from None
        original = rgb.size
        size = target_size(*original, self.max_pixels, self.min_pixels)
        if size != original:
            resample = Image.Resampling.LANCZOS if size[0] * size[1] < original[0] * original[1] \
                else Image.Resampling.BICUBIC
            rgb = rgb.resize(size, resample)
        unchanged = not rotated and img.mode == "RGB" and size == original and fmt in ("PNG", "JPEG") \
            and not getattr(img, "is_animated", False)
        out = data if unchanged else encode(rgb, "JPEG" if fmt == "JPEG" else "PNG")
        return StoredImage(bytes=out, size=size, original_size=original, sha256=hashlib.sha256(out).hexdigest())

    def process_image(self, img: Image.Image, fmt: str = "PNG") -> StoredImage:
        """An already decoded image (a video frame): RGB, sized and encoded as `fmt`."""
        rgb = to_rgb(img)
        original = rgb.size
        if original[0] * original[1] > self.max_image_pixels:
            raise ImageError(f"frame is {original[0]}x{original[1]}, over the decompression-bomb limit")
        size = target_size(*original, self.max_pixels, self.min_pixels)
        if size != original:
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        out = encode(rgb, fmt)
        return StoredImage(bytes=out, size=size, original_size=original, sha256=hashlib.sha256(out).hexdigest())


def frame_indices(total: int, n: int) -> list[int]:
    """`n` frame numbers spread evenly over `total` frames: the middle of n equal segments."""
    if total <= n:
        return list(range(total))
    return [min(total - 1, int((i + 0.5) * total / n)) for i in range(n)]


def video_decoder() -> str | None:
    """The video library found for non-animated-image clips: "av", "cv2", or None."""
    for name in ("av", "cv2"):
        try:
            __import__(name)
            return name
        except ImportError:
            continue
    return None


def sample_frames(path: Path, n: int) -> tuple[list[Image.Image], list[int], int]:
    """(frames, their indices, total frames) for `n` frames spread over the clip at `path`."""
    if path.suffix.lower() in _ANIMATED:
        try:
            with _own_bomb_check(), Image.open(path) as clip:
                total = getattr(clip, "n_frames", 1)
                picks = frame_indices(total, n)
                frames = []
                for i in picks:
                    clip.seek(i)
                    frames.append(to_rgb(clip.convert("RGBA")))
                return frames, picks, total
        except Exception as err:
            raise ImageError(f"unreadable video ({type(err).__name__})") from None
    decoder = video_decoder()
    if decoder is None:
        raise ImageError(f"cannot decode {path.suffix or 'this'} video: install PyAV (pip install av) or OpenCV "
                         "(pip install opencv-python-headless) to sample frames, or give the frames as images")
    try:
        return _frames_av(path, n) if decoder == "av" else _frames_cv2(path, n)
    except ImageError:
        raise
    except Exception as err:
        raise ImageError(f"unreadable video ({type(err).__name__}: {err})") from None


def _frames_av(path: Path, n: int) -> tuple[list[Image.Image], list[int], int]:
    import av

    with av.open(str(path)) as container:
        total = container.streams.video[0].frames
    if not total:  # some containers do not record the frame count: count by decoding
        with av.open(str(path)) as container:
            total = sum(1 for _ in container.decode(video=0))
    picks = frame_indices(total, n)
    wanted, frames = set(picks), []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames.append(frame.to_image())
            if len(frames) == len(picks):
                break
    if not frames:
        raise ImageError("video has no decodable frames")
    return frames, picks[:len(frames)], total


def _frames_cv2(path: Path, n: int) -> tuple[list[Image.Image], list[int], int]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ImageError("unreadable video (OpenCV cannot open it)")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        picks, frames = frame_indices(total, n), []
        for i in picks:
            cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, bgr = cap.read()
            if ok:
                frames.append(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        if not frames:
            raise ImageError("video has no decodable frames")
        return frames, picks[:len(frames)], total
    finally:
        cap.release()
