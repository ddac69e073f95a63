"""Tests for anomalens.data.io and anomalens.data.datasets."""

from __future__ import annotations

import io
import json
import logging
import pickle
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from anomalens.data import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    NoImagesError,
    Sample,
    collect_images,
    decode_image,
    encode_png,
    folder_samples,
    iter_images,
    mvtec_samples,
    read_image,
    read_mask,
    to_uint8_rgb,
    write_png,
)
from anomalens.data.formats import image_header
from image_bombs import zero_png

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CATEGORY = "magnetic_tile"


def _check_float_rgb(img: np.ndarray, shape_hw: tuple[int, int]) -> None:
    assert img.dtype == np.float32
    assert img.shape == (*shape_hw, 3)
    assert img.flags.c_contiguous
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


def _jpeg_bytes(h: int = 64, w: int = 80) -> bytes:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


# ---------------------------------------------------------------- read_image


def test_gray_png_8bit(tmp_path: Path) -> None:
    g = _gradient()
    p = tmp_path / "gray.png"
    cv2.imwrite(str(p), g)
    img = read_image(p)
    _check_float_rgb(img, g.shape)
    np.testing.assert_allclose(img[..., 0], g / 255.0, atol=1e-6)
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def test_rgb_jpeg_channel_order(tmp_path: Path) -> None:
    bgr_red = np.zeros((16, 16, 3), np.uint8)
    bgr_red[..., 2] = 255  # pure red in OpenCV's BGR order
    p = tmp_path / "red.JPG"  # upper-case extension on purpose
    cv2.imwrite(str(p), bgr_red, [cv2.IMWRITE_JPEG_QUALITY, 100])
    img = read_image(p)
    _check_float_rgb(img, (16, 16))
    assert img[..., 0].min() > 0.95  # R
    assert img[..., 1].max() < 0.05 and img[..., 2].max() < 0.05


def test_bmp_and_exact_values(tmp_path: Path) -> None:
    bgr = np.zeros((5, 7, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R
    p = tmp_path / "x.bmp"
    cv2.imwrite(str(p), bgr)
    img = read_image(p)
    _check_float_rgb(img, (5, 7))
    np.testing.assert_allclose(img[0, 0], [30 / 255, 20 / 255, 10 / 255], atol=1e-6)


def test_png_16bit_with_12bit_data(tmp_path: Path) -> None:
    a = np.linspace(0, 4095, 40 * 30).reshape(30, 40).astype(np.uint16)
    p = tmp_path / "cam12.png"
    cv2.imwrite(str(p), a)
    img = read_image(p)
    _check_float_rgb(img, a.shape)
    assert img.max() == pytest.approx(1.0)
    np.testing.assert_allclose(img[..., 0], a / 4095.0, atol=1e-6)
    # fixed bit depth overrides the per-image heuristic
    np.testing.assert_allclose(read_image(p, bit_depth=16)[..., 0], a / 65535.0, atol=1e-6)


def test_png_16bit_full_range_rgb(tmp_path: Path) -> None:
    a = np.zeros((8, 9, 3), np.uint16)
    a[..., 2] = 65535  # R in BGR
    a[..., 1] = 32768
    p = tmp_path / "full16.png"
    cv2.imwrite(str(p), a)
    img = read_image(p)
    _check_float_rgb(img, (8, 9))
    np.testing.assert_allclose(img[0, 0], [1.0, 32768 / 65535, 0.0], atol=1e-6)


def test_tiff_16bit_gray_and_rgb(tmp_path: Path) -> None:
    a = np.linspace(0, 60000, 20 * 30).reshape(20, 30).astype(np.uint16)
    p = tmp_path / "g16.tif"
    tifffile.imwrite(p, a)
    img = read_image(p)
    _check_float_rgb(img, a.shape)
    np.testing.assert_allclose(img[..., 1], a / 65535.0, atol=1e-6)

    rgb = np.zeros((6, 4, 3), np.uint16)
    rgb[..., 0] = 4000  # R, 12-bit data
    p2 = tmp_path / "rgb16.TIFF"
    tifffile.imwrite(p2, rgb, photometric="rgb")
    img2 = read_image(p2)
    np.testing.assert_allclose(img2[0, 0], [4000 / 4095, 0.0, 0.0], atol=1e-6)


def test_tiff_float_is_clipped(tmp_path: Path) -> None:
    a = np.array([[-0.5, 0.25], [0.75, 2.0]], np.float32)
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, a)
    img = read_image(p)
    np.testing.assert_allclose(img[..., 0], [[0.0, 0.25], [0.75, 1.0]], atol=1e-6)


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 0] = 255  # blue
    bgra[..., 3] = 0  # fully transparent: alpha must be ignored, not applied
    p = tmp_path / "rgba.png"
    cv2.imwrite(str(p), bgra)
    img = read_image(p)
    _check_float_rgb(img, (10, 12))
    np.testing.assert_allclose(img[0, 0], [0.0, 0.0, 1.0])


def test_palette_and_gray_alpha_png(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")  # only used to write palette PNGs
    pal = pil.new("P", (6, 4))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    pal.putpixel((2, 1), 1)  # index 1 = red
    p = tmp_path / "pal.png"
    pal.save(p)
    img = read_image(p)
    _check_float_rgb(img, (4, 6))
    np.testing.assert_allclose(img[1, 2], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(img[0, 0], [0.0, 0.0, 0.0])

    la = pil.fromarray(np.dstack([np.full((3, 5), 100, np.uint8), np.zeros((3, 5), np.uint8)]), "LA")
    p2 = tmp_path / "la.png"
    la.save(p2)
    np.testing.assert_allclose(read_image(p2), 100 / 255.0, atol=1e-6)


def test_tiny_image_is_returned(tmp_path: Path) -> None:
    p = tmp_path / "one.png"
    cv2.imwrite(str(p), np.array([[200]], np.uint8))
    img = read_image(p)
    _check_float_rgb(img, (1, 1))


def test_unicode_path(tmp_path: Path) -> None:
    p = tmp_path / "prüfling_画像.png"
    ok, buf = cv2.imencode(".png", _gradient())
    assert ok
    p.write_bytes(buf.tobytes())
    _check_float_rgb(read_image(p), (24, 32))


def test_real_data_jpeg_reads() -> None:
    folder = DATA_ROOT / CATEGORY / "train" / "good"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    first = sorted(folder.glob("*.jpg"))[0]
    _check_float_rgb(read_image(first), cv2.imread(str(first), cv2.IMREAD_GRAYSCALE).shape)


# ------------------------------------------------------------- bad files


def _assert_read_error(path: Path, reason_part: str) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    err = info.value
    assert err.path == path
    msg = str(err)
    assert str(path) in msg and "\n" not in msg
    assert reason_part in msg.lower()
    return err


def test_missing_file(tmp_path: Path) -> None:
    _assert_read_error(tmp_path / "nope.png", "does not exist")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _assert_read_error(p, "empty")


def test_text_named_png(tmp_path: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n")
    _assert_read_error(p, "not an image")


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = _jpeg_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    # OpenCV alone would return a gray-padded partial image here.
    assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None
    _assert_read_error(p, "truncated jpeg")
    # the complete file (even with a trailer after EOI) is fine
    full = tmp_path / "full.jpg"
    full.write_bytes(data + b"\x00trailer")
    _check_float_rgb(read_image(full), (64, 80))


def test_truncated_real_jpeg(tmp_path: Path) -> None:
    folder = DATA_ROOT / CATEGORY / "test" / "crack"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    data = sorted(folder.glob("*.jpg"))[0].read_bytes()
    p = tmp_path / "real_cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    _assert_read_error(p, "truncated")


def test_truncated_png_and_bmp(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    for ext in (".png", ".bmp"):
        ok, buf = cv2.imencode(ext, img)
        assert ok
        p = tmp_path / f"cut{ext}"
        p.write_bytes(buf.tobytes()[: len(buf) // 2])
        _assert_read_error(p, "truncated")


@pytest.mark.filterwarnings("ignore:.*zero-size")
def test_zero_size_tiff(tmp_path: Path) -> None:
    p = tmp_path / "zero.tif"
    tifffile.imwrite(p, np.zeros((0, 5), np.uint8))
    _assert_read_error(p, "zero size")


def test_directory_is_error(tmp_path: Path) -> None:
    d = tmp_path / "dir.png"
    d.mkdir()
    _assert_read_error(d, "directory")


def test_error_pickles(tmp_path: Path) -> None:
    err = ImageReadError(tmp_path / "a.png", "bad\nthing")
    back = pickle.loads(pickle.dumps(err))
    assert back.path == err.path and str(back) == str(err) and "\n" not in str(back)


def test_decode_image_from_bytes_is_read_image(tmp_path: Path) -> None:
    a = np.linspace(0, 4095, 30 * 40).reshape(30, 40).astype(np.uint16)  # 12-bit data: the scale is chosen
    ok, buf = cv2.imencode(".png", a)
    assert ok
    p = tmp_path / "cam12.png"
    p.write_bytes(buf.tobytes())
    decoded = decode_image(buf.tobytes())
    _check_float_rgb(decoded, a.shape)
    assert np.array_equal(decoded, read_image(p))
    np.testing.assert_allclose(decode_image(buf.tobytes(), bit_depth=16)[..., 0], a / 65535.0, atol=1e-6)


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"", "upload", "cannot read image 'upload': file is empty (0 bytes)"),
        (
            b"hello, I am text\n",
            "notes.png",
            "cannot read image 'notes.png': not an image file (content is not PNG, JPEG, BMP or TIFF; "
            "extension '.png')",
        ),
        (
            b"hello, I am text\n",
            "upload",
            "cannot read image 'upload': not an image file (content is not PNG, JPEG, BMP or TIFF)",
        ),
        (
            _jpeg_bytes()[:-400],
            "cut.jpg",
            "cannot read image 'cut.jpg': truncated JPEG (data ends before the End-Of-Image marker FFD9)",
        ),
    ],
)
def test_decode_image_errors_name_the_data(data: bytes, name: str, message: str) -> None:
    with pytest.raises(ImageReadError) as info:
        decode_image(data, name)
    assert str(info.value) == message


# ------------------------------------------------- formats and size limits


def _tiff_bytes(image: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, **options)
    return buffer.getvalue()


def _encoded(ext: str, image: np.ndarray) -> bytes:
    if ext == ".tif":
        return _tiff_bytes(image)
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("ext", "image", "channels", "bytes_per_sample"),
    [
        (".png", np.zeros((30, 40), np.uint16), 1, 2),
        (".png", np.zeros((30, 40, 3), np.uint8), 3, 1),
        (".jpg", np.zeros((30, 40, 3), np.uint8), 3, 1),
        (".bmp", np.zeros((30, 40, 3), np.uint8), 3, 1),
        (".tif", np.zeros((30, 40, 3), np.uint16), 3, 2),
    ],
)
def test_image_header_is_read_without_decoding(ext, image, channels, bytes_per_sample) -> None:
    header = image_header(_encoded(ext, image))
    assert (header.width, header.height, header.channels, header.bytes_per_sample) == (
        40,
        30,
        channels,
        bytes_per_sample,
    )
    assert header.decoded_bytes == image.nbytes


def test_png_bomb_is_refused_before_decoding() -> None:
    bomb = zero_png(30000, 30000)  # under a megabyte, 900 million pixels
    assert len(bomb) < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError) as info:
            decode_image(bomb, "bomb.png", max_pixels=64_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "the image is 30000x30000 pixels (900000000); at most 64000000 pixels are allowed"
    assert peak < 16 * 2**20  # the pixels (900 MB) were never allocated


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_max_pixels_is_checked_for_every_format(ext: str, tmp_path: Path) -> None:
    path = tmp_path / f"frame{ext}"
    path.write_bytes(_encoded(ext, np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)))
    with pytest.raises(ImageReadError, match="40x30 pixels"):
        read_image(path, max_pixels=30 * 40 - 1)
    assert np.array_equal(read_image(path, max_pixels=30 * 40), read_image(path))


def test_many_samples_per_pixel_are_refused_by_their_memory() -> None:
    deep = _tiff_bytes(np.zeros((30, 40, 8), np.float64), photometric="minisblack", planarconfig="contig")
    with pytest.raises(ImageReadError, match="decoding would take 76800 bytes"):
        decode_image(deep, max_pixels=30 * 40)


@pytest.mark.parametrize(
    ("ext", "format_name"),
    [
        (".gif", "GIF"),
        (".webp", "WebP"),
        (".pgm", "PNM (PBM/PGM/PPM/PAM)"),
        (".pfm", "PFM"),
        (".hdr", "Radiance HDR"),
        (".ras", "Sun raster"),
    ],
)
def test_other_formats_are_refused_though_opencv_decodes_them(ext: str, format_name: str) -> None:
    image = np.full(
        (16, 16, 3), 0.5 if ext in (".pfm", ".hdr") else 128, np.float32 if ext in (".pfm", ".hdr") else np.uint8
    )
    data = _encoded(ext, image[..., 0] if ext == ".pgm" else image)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    with pytest.raises(ImageReadError) as info:
        decode_image(data, f"frame{ext}")
    assert info.value.reason == f"{format_name} content is not accepted (only PNG, JPEG, BMP or TIFF)"


def test_truncated_or_corrupt_tiff_and_png(tmp_path: Path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    tiff = _tiff_bytes(image, photometric="rgb", tile=(16, 16))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(tiff[:-100])  # the last tile is cut; skimage, the last fallback decoder, would return the rest
    _assert_read_error(cut, "truncated tiff (strip or tile 15 ends at byte")

    png_bytes = bytearray(_encoded(".png", image))
    png_bytes[60] ^= 0xFF  # inside the IDAT chunk
    flipped = tmp_path / "flipped.png"
    flipped.write_bytes(bytes(png_bytes))
    _assert_read_error(flipped, "crc mismatch in chunk 'idat'")

    bmp = _encoded(".bmp", image)
    header_only = tmp_path / "header.bmp"
    header_only.write_bytes(bmp[:20])
    _assert_read_error(header_only, "truncated bmp (header incomplete)")


def test_encode_png_keeps_rgb_order_and_values(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    back = cv2.imdecode(np.frombuffer(encode_png(rgb), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back[..., ::-1], rgb)  # OpenCV reads BGR: red stays red
    gray = np.arange(42, dtype=np.uint8).reshape(6, 7)
    assert np.array_equal(cv2.imdecode(np.frombuffer(encode_png(gray), np.uint8), cv2.IMREAD_UNCHANGED), gray)
    written = write_png(tmp_path / "new" / "prüfling.png", rgb)
    assert written.read_bytes() == encode_png(rgb)
    assert np.array_equal(to_uint8_rgb(read_image(written)), rgb)
    for bad in (rgb.astype(np.float32) / 255, rgb[..., :1], np.zeros((2, 2, 4), np.uint8)):
        with pytest.raises(ValueError):
            encode_png(bad)


# ----------------------------------------------------------- masks, output


def test_read_mask_and_resize(tmp_path: Path) -> None:
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 10:20] = 1  # any nonzero value is a defect
    m[0, 0] = 255
    p = tmp_path / "m_mask.png"
    cv2.imwrite(str(p), m)
    mask = read_mask(p)
    assert mask.dtype == bool and mask.shape == (20, 30)
    assert mask.sum() == 5 * 10 + 1
    big = read_mask(p, shape=(40, 60))
    assert big.shape == (40, 60) and big.dtype == bool
    assert big[10:20, 20:40].all() and big.sum() == 4 * (5 * 10 + 1)
    assert read_mask(p, shape=(20, 30)).sum() == mask.sum()
    with pytest.raises(ImageReadError):
        read_mask(tmp_path / "missing_mask.png")


def test_to_uint8_rgb() -> None:
    f = np.array([[0.0, 0.5, 1.2], [-1.0, np.nan, 1.0]], np.float32)
    out = to_uint8_rgb(f)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[..., 0].tolist() == [[0, 128, 255], [0, 0, 255]]
    rgb = np.random.default_rng(2).random((4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(to_uint8_rgb(rgb) / 255.0, rgb, atol=0.5 / 255 + 1e-6)


def test_image_extensions() -> None:
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


# -------------------------------------------------------------- listings


def _write_png(p: Path, value: int = 128) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(p), np.full((6, 8), value, np.uint8))
    return p


def test_collect_images_and_folder_samples(tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    _write_png(d / "b.png")
    _write_png(d / "a.PNG")
    _write_png(d / "sub" / "c.png")
    (d / "readme.txt").write_text("x")
    (d / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    single = _write_png(tmp_path / "single.bmp")

    got = collect_images([d, str(single), d / "b.png"])
    assert [p.name for p in got] == ["a.PNG", "b.png", "c.png", "single.bmp"]
    assert [p.name for p in collect_images(d, recursive=False)] == ["a.PNG", "b.png"]
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        collect_images([d, tmp_path / "does-not-exist"])

    samples = folder_samples(d, label=1, defect_type="scratch")
    assert [s.path.name for s in samples] == ["a.PNG", "b.png"]
    assert all(s.label == 1 and s.defect_type == "scratch" and s.mask_path is None for s in samples)
    assert len(folder_samples(d, recursive=True)) == 3
    with pytest.raises(FileNotFoundError):
        folder_samples(tmp_path / "missing")


def test_collect_images_searches_folders_of_folders_in_order(tmp_path: Path) -> None:
    test = tmp_path / "test"
    for name in ("good/001.png", "good/000.png", "crack/deep/000.png", "crack/000.png", "top.png"):
        _write_png(test / name)
    _write_png(test / ".thumbnails" / "000.png")  # hidden folders are not searched
    _write_png(test / "out" / "000_overlay.png")  # the folder that is skipped (a run's own output)

    found = collect_images(test, skip=[test / "out"])
    assert [p.relative_to(test).as_posix() for p in found] == [
        "crack/000.png",
        "crack/deep/000.png",
        "good/000.png",
        "good/001.png",
        "top.png",
    ]
    assert collect_images(test, recursive=False) == [test / "top.png"]


def test_inputs_without_images_raise_saying_where_and_what(tmp_path: Path) -> None:
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    with pytest.raises(NoImagesError) as caught:
        collect_images([tmp_path / "empty", tmp_path / "notes"])
    message = str(caught.value)
    assert f"'{tmp_path / 'empty'}', '{tmp_path / 'notes'}' or any sub-folder" in message
    assert all(ext in message for ext in IMAGE_EXTENSIONS)
    assert isinstance(caught.value, FileNotFoundError)
    assert str(pickle.loads(pickle.dumps(caught.value))) == message  # crosses Ray's process boundary whole
    with pytest.raises(NoImagesError, match="no input images given"):
        collect_images([])


def test_sample_to_dict_roundtrip(tmp_path: Path) -> None:
    s = Sample(tmp_path / "x.png", 1, "crack", tmp_path / "x_mask.png")
    d = json.loads(json.dumps(s.to_dict()))
    assert d == {"path": str(s.path), "label": 1, "defect_type": "crack", "mask_path": str(s.mask_path)}
    assert Sample.from_dict(d) == s
    assert Sample(tmp_path / "y.png", 0, "good", None).to_dict()["mask_path"] is None


def test_iter_images_skips_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good1 = _write_png(tmp_path / "g1.png", 10)
    bad_text = tmp_path / "bad.png"
    bad_text.write_text("nope")
    good2 = _write_png(tmp_path / "g2.png", 20)
    bad_cut = tmp_path / "cut.jpg"
    bad_cut.write_bytes(_jpeg_bytes()[:300])
    missing = tmp_path / "gone.png"
    good3 = Sample(_write_png(tmp_path / "g3.png", 30), 0, "good", None)
    items = [good1, bad_text, good2, bad_cut, missing, good3]

    errors: list = []
    with caplog.at_level(logging.WARNING, logger="anomalens.data.datasets"):
        out = list(iter_images(items, errors=errors))
    assert [item for item, _ in out] == [good1, good2, good3]
    assert [round(float(img[0, 0, 0]) * 255) for _, img in out] == [10, 20, 30]
    assert [item for item, _ in errors] == [bad_text, bad_cut, missing]
    for (item, msg), rec in zip(errors, [r for r in caplog.records if r.levelno == logging.WARNING]):
        assert str(item) in msg and str(item) in rec.getMessage()

    # skip without an errors list still works
    assert len(list(iter_images(items))) == 3

    # "raise": images before the bad file are yielded, then the error propagates
    seen = []
    with pytest.raises(ImageReadError) as info:
        for item, _ in iter_images(items, on_error="raise"):
            seen.append(item)
    assert seen == [good1] and info.value.path == bad_text
    with pytest.raises(ValueError):
        iter_images(items, on_error="ignore")  # type: ignore[arg-type]


def test_mvtec_samples_synthetic(tmp_path: Path) -> None:
    cat = tmp_path / "widget"
    _write_png(cat / "train" / "good" / "001.png")
    _write_png(cat / "test" / "good" / "000.png")
    _write_png(cat / "test" / "scratch" / "000.png")
    _write_png(cat / "test" / "scratch" / "001.png")
    _write_png(cat / "test" / "dent" / "a.jpg")
    _write_png(cat / "ground_truth" / "scratch" / "000_mask.png")
    _write_png(cat / "ground_truth" / "scratch" / "001.png")  # plain-stem mask
    _write_png(cat / "ground_truth" / "dent" / "a_mask.bmp")  # other extension

    test = mvtec_samples(tmp_path, "widget", "test")
    assert [(s.defect_type, s.path.name, s.label) for s in test] == [
        ("dent", "a.jpg", 1),
        ("good", "000.png", 0),
        ("scratch", "000.png", 1),
        ("scratch", "001.png", 1),
    ]
    masks = {(s.defect_type, s.path.name): s.mask_path for s in test}
    assert masks[("good", "000.png")] is None
    assert masks[("dent", "a.jpg")].name == "a_mask.bmp"
    assert masks[("scratch", "000.png")].name == "000_mask.png"
    assert masks[("scratch", "001.png")].name == "001.png"
    assert [s.path.name for s in mvtec_samples(tmp_path, "widget", "train")] == ["001.png"]

    with pytest.raises(FileNotFoundError, match="widget"):  # lists existing categories
        mvtec_samples(tmp_path, "gadget", "test")
    (tmp_path / "other" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="split"):
        mvtec_samples(tmp_path, "other", "test")
    with pytest.raises(ValueError):
        mvtec_samples(tmp_path, "widget", "val")  # type: ignore[arg-type]


def test_mvtec_samples_magnetic_tile() -> None:
    if not (DATA_ROOT / CATEGORY).is_dir():
        pytest.skip(f"{DATA_ROOT / CATEGORY} not available")
    train = mvtec_samples(DATA_ROOT, CATEGORY, "train")
    assert len(train) == 300
    assert all(s.label == 0 and s.defect_type == "good" and s.mask_path is None for s in train)

    test = mvtec_samples(DATA_ROOT, CATEGORY, "test")
    counts: dict[str, int] = {}
    for s in test:
        counts[s.defect_type] = counts.get(s.defect_type, 0) + 1
    assert counts == {"good": 60, "blowhole": 57, "break": 42, "crack": 28, "fray": 16, "uneven": 47}
    for s in test:
        if s.defect_type == "good":
            assert s.label == 0 and s.mask_path is None
        else:
            assert s.label == 1 and s.mask_path is not None and s.mask_path.is_file()
            assert s.mask_path.name == f"{s.path.stem}_mask.png"
    assert test == mvtec_samples(DATA_ROOT, CATEGORY, "test")  # deterministic

    # one defective sample end to end: mask matches its image's size
    s = next(s for s in test if s.label == 1)
    img = read_image(s.path)
    mask = read_mask(s.mask_path, shape=img.shape[:2])
    assert mask.shape == img.shape[:2] and mask.any()


def test_find_mask_prefers_mask_names_and_never_takes_the_image_itself(tmp_path: Path) -> None:
    from anomalens.data.datasets import find_mask, mask_index

    for name in ("a.png", "A_MASK.BMP", "b.png", "b.bmp", "c.png", ".d_mask.png"):
        (tmp_path / name).write_bytes(b"")
    index = mask_index(tmp_path)
    assert find_mask(index, "a") == tmp_path / "A_MASK.BMP"  # "<stem>_mask" before "<stem>", any case
    assert find_mask(index, "b") == tmp_path / "b.png"  # ".png" before other extensions
    assert find_mask(index, "c", beside_image=True) is None  # beside the image, "c.png" is the image
    assert find_mask(index, "d") is None  # hidden files are no masks
    assert mask_index(tmp_path / "missing") == {}
