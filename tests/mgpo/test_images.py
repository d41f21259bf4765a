import io

import numpy as np
import pytest
from PIL import Image

from mgpo.images import ImageError, ImageStore, content_hash, decode_image, load_image


def _encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_decode_image_refuses_a_decompression_bomb_before_decoding():
    # a 20000x20000 PNG of one colour is tiny on disk but 400 M pixels
    bomb = _encode(Image.new("L", (20000, 20000)))
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageError, match="decompression-bomb guard"):
        decode_image(bomb)


def test_decode_image_reports_truncated_and_corrupt_files():
    data = _encode(Image.new("RGB", (300, 300), (10, 20, 30)), "JPEG")
    with pytest.raises(ImageError, match="corrupt, truncated"):
        decode_image(data[: len(data) // 2])
    with pytest.raises(ImageError, match="not an image"):
        decode_image(b"GIF89a but not really" * 10)
    with pytest.raises(ImageError):
        decode_image(b"")


def test_decode_image_converts_cmyk_to_rgb():
    image = decode_image(_encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert image.mode == "RGB"
    r, g, b = image.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60  # cyan-free, magenta+yellow = red


def test_decode_image_composites_alpha_and_palette_transparency_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(_encode(rgba)).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255] * 256)
    palette.info["transparency"] = 0
    assert decode_image(_encode(palette, transparency=0)).getpixel((1, 1)) == (255, 255, 255)
    opaque_palette = Image.new("P", (4, 4), 0)
    opaque_palette.putpalette([0, 0, 255] * 256)
    assert decode_image(_encode(opaque_palette)).getpixel((1, 1)) == (0, 0, 255)


def test_decode_image_scales_16_bit_grey_to_8_bit():
    array = np.full((4, 4), 65535, dtype=np.uint16)
    array[0, 0] = 0
    image = decode_image(_encode(Image.fromarray(array)))
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 0)


def test_decode_image_handles_one_bit_images():
    image = decode_image(_encode(Image.new("1", (5, 5), 1)))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_decode_image_applies_exif_rotation():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    upright = decode_image(_encode(image, "JPEG", exif=exif, quality=100))
    assert upright.size == (20, 40)
    r, g, b = upright.getpixel((10, 2))  # the red edge is now on top
    assert r > 200 and g < 60


def test_the_store_reads_sizes_from_headers_upright_as_get_returns_them(tmp_path):
    store = ImageStore(tmp_path)
    exif = Image.Exif()
    exif[0x0112] = 6  # a quarter turn
    turned = store.put_bytes(_encode(Image.new("RGB", (40, 20)), "JPEG", exif=exif))
    plain = store.put_bytes(_encode(Image.new("RGB", (40, 20))))
    assert store.size(turned) == store.get(turned).size == (20, 40)
    assert store.size(plain) == store.get(plain).size == (40, 20)


def test_load_image_reports_a_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.png")


def test_image_store_names_images_by_content_and_deduplicates(tmp_path):
    store = ImageStore(tmp_path)
    data = _encode(Image.new("RGB", (10, 10), (1, 2, 3)))
    digest = store.put_bytes(data)
    assert digest == content_hash(data) and store.put_bytes(data) == digest
    assert digest in store
    assert store.get(digest).getpixel((0, 0)) == (1, 2, 3)
    assert len(list(tmp_path.rglob("*"))) == 2  # one folder, one file


def test_image_store_refuses_corrupt_bytes_and_reports_missing_images(tmp_path):
    store = ImageStore(tmp_path)
    with pytest.raises(ImageError):
        store.put_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError, match="not in the store"):
        store.get("ab" * 32)


@pytest.mark.parametrize(("size", "ratio"), [((1, 300), 300), ((8000, 30), 267)])
def test_decode_image_refuses_a_shape_the_model_cannot_take(size, ratio):
    # smart_resize refuses aspect ratios over 200; such an image used to pass upload and kill the actor
    with pytest.raises(ImageError, match=f"aspect ratio {ratio} is over the model's 200"):
        decode_image(_encode(Image.new("L", size)))
    assert decode_image(_encode(Image.new("L", (200, 1)))).size == (200, 1)  # 200 itself is allowed
