"""Hostile image files: one guarded decode (pixel and byte limits, reduced JPEG decoding) and a folder index of
regular files only (no symlink out of the folder, no device, no FIFO), reads bounded by the byte limit."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from mmstack.data.images import (NOT_REGULAR, OUTSIDE, OVER_BYTES, OVER_PIXELS, UNREADABLE, ImageLimits,
                                 ImageSource, decode_image)
from mmstack.errors import ConfigError


def _jpeg(size=(400, 300), colour=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_pixel_limit_is_checked_before_decoding():
    data = _jpeg((400, 300))
    decoded, why = decode_image(data, ImageLimits(max_pixels=400 * 300))
    assert why is None and decoded.image.size == (400, 300) and decoded.size == (400, 300)
    decoded, why = decode_image(data, ImageLimits(max_pixels=400 * 300 - 1))
    assert decoded is None and why == OVER_PIXELS


def test_byte_limit_and_unreadable_bytes():
    data = _jpeg()
    assert decode_image(data, ImageLimits(max_bytes=len(data) - 1)) == (None, OVER_BYTES)
    assert decode_image(b"not an image at all") == (None, UNREADABLE)
    assert decode_image(data[:200])[1] == UNREADABLE  # truncated
    with pytest.raises(ConfigError, match="data.max_image_pixels"):
        ImageLimits.from_options({"max_image_pixels": 0})
    assert ImageLimits.from_options({"max_image_bytes": 10}) == ImageLimits(max_bytes=10)


def test_big_jpegs_are_decoded_at_reduced_scale():
    data = _jpeg((1600, 1200))
    decoded, _ = decode_image(data, draft=200)
    # libjpeg scales by 1/2, 1/4 or 1/8, keeping both sides at least the need: 1/4 (1/8 would give 150 < 200)
    assert decoded.image.size == (400, 300) and decoded.size == (1600, 1200)
    decoded, _ = decode_image(data, draft=100, max_side=128)
    assert max(decoded.image.size) == 128 and decoded.size == (1600, 1200)
    # small photos are untouched: the model sees exactly what it saw before
    small = _jpeg((120, 90))
    assert decode_image(small, draft=64)[0].image.size == (120, 90)
    assert np.array_equal(np.asarray(decode_image(small, draft=64)[0].image),
                          np.asarray(Image.open(io.BytesIO(small)).convert("RGB")))


@pytest.fixture
def hostile_folder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.jpg").write_bytes(_jpeg())
    (folder / "sub" / "nested.jpg").write_bytes(_jpeg((64, 48)))
    os.symlink(folder / "good.jpg", folder / "inside.jpg")  # a symlink within the folder is fine
    os.symlink("/dev/zero", folder / "zero.jpg")
    os.symlink("/etc/passwd", folder / "passwd.jpg")
    os.mkfifo(folder / "fifo.jpg")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "far.jpg").write_bytes(_jpeg())
    os.symlink(outside, folder / "linked_dir")  # a symlinked folder is not entered
    return folder


def test_folder_index_holds_regular_files_inside_the_folder_only(hostile_folder, caplog):
    with caplog.at_level("WARNING"):
        source = ImageSource(hostile_folder)
    assert source.ids() == ["good", "inside", "nested"]
    assert source.skipped() == {"zero.jpg": OUTSIDE, "passwd.jpg": OUTSIDE, "fifo.jpg": NOT_REGULAR}
    assert "skipped 3 image file(s): 2 a symlink out of the folder, 1 not a regular file" in caplog.text
    assert source.read_bytes("zero") is None and source.read_bytes("fifo") is None
    assert source.read_bytes("far") is None
    assert source.problems == {OUTSIDE: 1, NOT_REGULAR: 1, "missing": 1}
    assert source.open("inside").size == (400, 300)


def test_reads_are_bounded_and_checked_again_at_read_time(hostile_folder):
    source = ImageSource(hostile_folder, ImageLimits(max_bytes=2000))
    big = hostile_folder / "big.jpg"
    big.write_bytes(_jpeg((800, 600)) + b"\0" * 5000)
    source = ImageSource(hostile_folder, ImageLimits(max_bytes=2000))
    assert source.read("big") == (None, OVER_BYTES)
    # swapped for a FIFO after the folder was indexed: not opened for reading (which would block)
    good = hostile_folder / "good.jpg"
    good.unlink()
    os.mkfifo(good)
    assert source.read("good") == (None, NOT_REGULAR)
    # ... or for a symlink to a device
    (hostile_folder / "sub" / "nested.jpg").unlink()
    os.symlink("/dev/zero", hostile_folder / "sub" / "nested.jpg")
    assert source.read("nested")[0] is None


def test_limits_that_differ_from_the_defaults_change_the_image_fingerprint(hostile_folder):
    assert ImageSource(hostile_folder).fingerprint() == ImageSource(hostile_folder, ImageLimits()).fingerprint()
    assert ImageSource(hostile_folder).fingerprint() != ImageSource(hostile_folder,
                                                                    ImageLimits(max_pixels=10)).fingerprint()
