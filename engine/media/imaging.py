"""Images as files: what people send is checked by its content before any work starts and
kept under the data folder; what Confab draws is written there too, and expires.

    check_image(data, settings)      -> ImageInfo, or BadImage / LimitExceeded
    decode_data_url(url, settings)   -> bytes of a `data:image/...;base64,` URL
    save_upload(data, info, settings)-> the path a job refers to (never bytes in a job record)
    new_image_path(...), sweep(...)  generated files and their expiry

Pillow is imported where used; without it the error says what to install.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from engine.config import Settings
from engine.errors import BackendMissing, BadImage, LimitExceeded

# What Confab accepts, by the file's first bytes (never by its name or declared type).
FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
UPLOAD_KEEP_S = 24 * 3600          # uploads outlive any job that refers to them
FILE_NAME = re.compile(r"^[A-Za-z0-9_-]{8,120}\.(png|jpeg|webp)$")


@dataclass(frozen=True)
class ImageInfo:
    format: str        # png, jpeg, gif, webp, bmp
    width: int
    height: int
    size: int          # bytes

    @property
    def mime(self) -> str:
        return f"image/{self.format}"


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise BackendMissing("pillow", "images") from None
    return Image


def sniff(data: bytes) -> str | None:
    """The image format from the magic bytes, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    return None


def check_image(data: bytes, settings: Settings, what: str = "The image") -> ImageInfo:
    """Check an image people sent: bytes, type, pixels, and that it decodes completely."""
    if len(data) > settings.max_image_bytes:
        raise LimitExceeded(what, len(data), settings.max_image_bytes, "bytes", status=413)
    if not data:
        raise BadImage(f"{what} is empty.")
    kind = sniff(data)
    if kind is None:
        raise BadImage(f"{what} is not an image Confab can read (PNG, JPEG, GIF, WebP or BMP).")
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt = FORMATS.get(img.format or "")
    except Image.DecompressionBombError:
        raise LimitExceeded(f"{what}'s pixel count", "over a billion", settings.max_image_pixels,
                            "pixels", status=413) from None
    except Exception:
        raise BadImage(f"{what} looks like a {kind.upper()} file but is damaged and cannot be "
                       "read.") from None
    if fmt is None:
        raise BadImage(f"{what} is not an image Confab can read (PNG, JPEG, GIF, WebP or BMP).")
    if width * height > settings.max_image_pixels:
        raise LimitExceeded(f"{what}'s size ({width}x{height})", width * height,
                            settings.max_image_pixels, "pixels", status=413)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()                    # chunk checksums (PNG), structure
        with Image.open(io.BytesIO(data)) as img:
            img.load()                      # every pixel decodes: truncated files fail here
    except Exception:
        raise BadImage(f"{what} is a damaged or truncated {fmt.upper()} file and cannot be "
                       "read.") from None
    return ImageInfo(fmt, width, height, len(data))


_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)"
                       r"(?P<b64>;base64)?,", re.I)


def decode_data_url(url: str, settings: Settings, what: str = "The image") -> bytes:
    """The bytes of a base64 `data:` URL, refusing an oversize one before decoding it."""
    m = _DATA_URL.match(url)
    if not m or not m.group("b64"):
        raise BadImage(f"{what} must be a base64 data URL (data:image/png;base64,...).")
    payload = url[m.end():]
    if len(payload) * 3 // 4 > settings.max_image_bytes + 3:
        raise LimitExceeded(what, len(payload) * 3 // 4, settings.max_image_bytes, "bytes", status=413)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(f"{what}'s data URL is not valid base64.") from None


def to_data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


# -- files under the data folder ------------------------------------------------------------

def uploads_dir(settings: Settings) -> Path:
    return settings.data_path / "uploads" / "images"


def images_dir(settings: Settings) -> Path:
    return settings.data_path / "images"


def save_upload(data: bytes, info: ImageInfo, settings: Settings) -> str:
    """Keep a checked image under the data folder (named by its hash); returns its path."""
    folder = uploads_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.{info.format}"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


def new_image_path(settings: Settings, job_id: str, index: int, fmt: str = "png") -> Path:
    """A fresh, unguessable file name for a generated image (its name is its link)."""
    folder = images_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{job_id}-{index}-{secrets.token_urlsafe(18)}.{fmt}"


def encode_image(image, fmt: str = "png") -> bytes:
    """A PIL image as PNG, JPEG or WebP bytes."""
    out = io.BytesIO()
    pil_format = OUTPUT_FORMATS[fmt]
    if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(out, format=pil_format, **({"quality": 92} if pil_format != "PNG" else {}))
    return out.getvalue()


def expired(path: Path, ttl_s: float, now: float | None = None) -> bool:
    try:
        return (now or time.time()) - path.stat().st_mtime > ttl_s
    except FileNotFoundError:
        return True


def sweep(folder: Path, ttl_s: float, now: float | None = None) -> int:
    """Delete files older than `ttl_s`; returns how many went."""
    if not folder.is_dir():
        return 0
    now = now or time.time()
    removed = 0
    for path in folder.iterdir():
        if path.is_file() and expired(path, ttl_s, now):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def sweep_all(settings: Settings) -> int:
    return (sweep(images_dir(settings), settings.image_url_ttl_s)
            + sweep(uploads_dir(settings), max(UPLOAD_KEEP_S, settings.image_url_ttl_s)))
