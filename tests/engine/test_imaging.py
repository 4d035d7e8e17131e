"""Images people send are checked by their content: type, bytes, pixels, and that every pixel
decodes; generated files expire."""
from __future__ import annotations

import io
import os
import time
import zlib

import pytest

from engine.errors import BadMedia, LimitExceeded
from engine.media.imaging import check_image, decode_data_url, new_image_path, save_upload, sweep, to_data_url
from tests.conftest import make_settings

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, max_image_bytes=200_000, max_image_pixels=500_000)


def encoded(fmt: str, size=(80, 60), mode="RGB") -> bytes:
    out = io.BytesIO()
    PIL.new(mode, size, (200, 30, 30) if mode == "RGB" else 0).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt, name", [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"),
                                       ("WEBP", "webp"), ("BMP", "bmp")])
def test_real_images_pass(settings, fmt, name):
    info = check_image(encoded(fmt), settings)
    assert (info.format, info.width, info.height) == (name, 80, 60)


def with_bad_crc(png: bytes) -> bytes:
    i = png.index(b"IDAT") + 4          # flip a byte of the compressed pixels, keep the CRC
    return png[:i] + bytes([png[i] ^ 0xFF]) + png[i + 1:]


@pytest.mark.parametrize("data, word", [
    (b"%PDF-1.7 not an image", "not an image"),
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "damaged"),
    (encoded("PNG")[:-30], "damaged"),                    # truncated PNG
    (encoded("JPEG")[:len(encoded("JPEG")) // 2], "damaged"),   # truncated JPEG
    (b"\xff\xd8\xff\xe0" + os.urandom(300), "damaged"),  # JPEG header, garbage after
    (with_bad_crc(encoded("PNG")), "damaged"),
])
def test_bad_images_are_refused_by_content(settings, data, word):
    with pytest.raises(BadMedia) as info:
        check_image(data, settings)
    assert word in info.value.message and info.value.status == 400


def test_limits_on_bytes_and_pixels(settings):
    with pytest.raises(LimitExceeded) as info:
        check_image(b"\x89PNG" + bytes(200_001), settings)
    assert info.value.status == 413 and "bytes" in info.value.message
    with pytest.raises(LimitExceeded) as info:
        check_image(encoded("PNG", (1000, 600), "L"), settings)    # small file, many pixels
    assert info.value.status == 413 and "1000x600" in info.value.message


def test_decompression_bomb_is_a_limit_not_a_crash(settings):
    # a PNG header claiming 100000 x 100000 pixels
    ihdr = b"IHDR" + (100_000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    def chunk(body: bytes) -> bytes:
        return (len(body) - 4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(ihdr) + chunk(b"IDAT" + zlib.compress(b"\x00" * 64)) + chunk(b"IEND")
    with pytest.raises(LimitExceeded):
        check_image(bomb, settings)


def test_data_urls(settings):
    png = encoded("PNG")
    assert decode_data_url(to_data_url(png, "image/png"), settings) == png
    for bad in ("data:image/png,rawtext", "data:image/png;base64,%%%", "http://x/y.png"):
        with pytest.raises(BadMedia):
            decode_data_url(bad, settings)
    with pytest.raises(LimitExceeded):
        decode_data_url("data:image/png;base64," + "A" * 400_000, settings)


def test_uploads_are_kept_by_hash_and_files_expire(settings):
    png = encoded("PNG")
    path = save_upload(png, check_image(png, settings), settings)
    assert path == save_upload(png, check_image(png, settings), settings)
    generated = new_image_path(settings, "job_1", 0)
    generated.write_bytes(png)
    assert len(generated.name) > 30                   # an unguessable name: it is the link
    assert sweep(generated.parent, 60) == 0
    old = time.time() - 120
    os.utime(generated, (old, old))
    assert sweep(generated.parent, 60) == 1 and not generated.exists()
