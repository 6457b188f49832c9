"""realvsai.images: the one check of "is this a usable image", and every image a user has as upright RGB uint8."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    PHOTO_LIMIT,
    jpeg_header_only,
    on_white,
    phone_photo,
    png_header_only,
    traced_peak,
    transparent_images,
    write_image,
    write_phone_photo,
)
from PIL import Image

from realvsai import images


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_load_rgb_applies_exif_orientation():
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displays rotated 90 degrees clockwise
    data = encode(Image.fromarray(pixels), "PNG", exif=exif)

    upright = images.load_rgb(data)

    assert upright.shape == (20, 10, 3)
    assert upright[0].mean() == 255 and upright[-1].mean() == 0  # white half is now on top
    assert images.read_header(data).needs_pil


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK", "LA"])
def test_load_rgb_converts_other_modes_to_rgb(mode):
    image = Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"

    pixels = images.load_rgb(encode(image, fmt))

    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    assert abs(int(pixels.mean()) - 100) <= 3


def test_load_rgb_scales_16_bit_images_instead_of_clipping():
    image = Image.fromarray(np.full((4, 4), 65535, np.uint16))

    pixels = images.load_rgb(encode(image, "PNG"))

    assert pixels.shape == (4, 4, 3)
    assert (pixels == 255).all()
    assert images.read_header(encode(Image.fromarray(np.full((4, 4), 32768, np.uint16)), "PNG")).needs_pil


def test_load_rgb_refuses_too_many_pixels_before_decoding():
    data = encode(Image.new("RGB", (100, 100)), "PNG")

    with pytest.raises(images.ImageDecodeError, match="limit"):
        images.load_rgb(data, max_pixels=100 * 99)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_load_rgb_raises_a_clear_error_for_non_images(data):
    with pytest.raises(images.ImageDecodeError):
        images.load_rgb(data)


def test_load_rgb_raises_for_truncated_jpeg():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")

    with pytest.raises(images.ImageDecodeError, match="broken"):
        images.load_rgb(data[: len(data) // 2])


def test_ordinary_jpeg_takes_the_tensorflow_route():
    header = images.read_header(encode(Image.new("RGB", (7, 5)), "JPEG"))

    assert (header.width, header.height, header.needs_pil) == (7, 5, False)


def problem_as_error(data: bytes) -> None:
    """``image_problem`` with its answer raised, so one test covers all three readers."""
    problem = images.image_problem(io.BytesIO(data))
    if problem:
        raise images.ImageDecodeError(problem)


@pytest.mark.parametrize("read", [images.read_header, images.load_rgb, problem_as_error])
def test_a_far_too_large_image_is_refused_with_the_projects_limit_and_flag(read):
    with pytest.raises(images.ImageDecodeError) as raised:
        read(png_header_only(30_000, 30_000))  # beyond Pillow's own refusal too

    message = str(raised.value)
    assert "30000x30000" in message and f"{images.MAX_IMAGE_PIXELS:,}" in message and "--max-pixels" in message
    assert "178956970" not in message and "178,956,970" not in message  # Pillow's limit is not ours


def test_a_limit_above_pillows_own_is_honoured(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses above twice this
    header = images.read_header(encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=20_000)

    assert (header.width, header.height) == (100, 100)


def test_an_image_within_our_limit_decodes_whatever_pillows_own_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above this and refuses above twice it
    for side in (40, 100):
        assert images.load_rgb(encode(Image.new("RGB", (side, side)), "PNG")).shape == (side, side, 3)


@pytest.mark.parametrize("read", [images.read_header, images.load_rgb_with_header])  # the scan's, the app's
def test_the_pixel_limit_holds_for_the_image_crops_mode_enlarges(read):
    strip = encode(Image.new("RGB", (1, 5000)), "PNG")  # 5,000 pixels; 32x160000 once its short side covers 32

    read(strip, max_pixels=100_000)  # within the limit as it is
    with pytest.raises(images.ImageDecodeError) as raised:
        read(strip, max_pixels=100_000, crop_size=32)

    message = str(raised.value)
    assert "1x5000" in message and "32x160000" in message and "limit of 100,000 pixels" in message
    assert "--max-pixels" in message


def test_error_for_uploaded_bytes_does_not_show_python_object_names():
    with pytest.raises(images.ImageDecodeError) as raised:
        images.load_rgb(b"plain text")

    assert "object at 0x" not in str(raised.value)


# ---- image_problem: the check the split and augmentation scripts run on every file ----------------


@pytest.mark.parametrize("name", ["good.png", "good.jpg"])
def test_image_problem_accepts_a_good_image(tmp_path, name):
    assert images.image_problem(write_image(tmp_path / name, seed=1)) is None


@pytest.mark.parametrize("kind", ["empty", "text"])
def test_image_problem_names_a_file_that_is_not_an_image(tmp_path, bad_files, kind):
    problem = images.image_problem(bad_files(tmp_path)[kind])
    assert problem is not None and "not a readable image" in problem


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_truncated_image_is_named_alike_by_the_scan_and_by_the_app_s_decode(tmp_path, mode):
    """--predict's unreadable.csv said "not a readable image (OSError: image file is truncated ...)" of the file the
    app called "the image data is broken (image file is truncated ...)"."""
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)).convert(mode).save(whole, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    problem = images.image_problem(cut)
    with pytest.raises(images.ImageDecodeError) as raised:
        images.load_rgb_with_header(cut.read_bytes())
    assert problem == str(raised.value) and problem.startswith("the image data is broken (image file is truncated")


def test_the_pixel_limit_names_a_turned_photo_by_its_upright_size(tmp_path):
    """A phone photo stored sideways (EXIF orientation 6) was refused as 9180x16320 pixels, where every other line
    (the unfamiliar reason, the class profiles, the app) names it 16320x9180, as it is seen."""
    from PIL import ExifTags

    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    turned = tmp_path / "turned.jpg"
    Image.new("RGB", (60, 40), "gray").save(turned, "JPEG", exif=exif)

    assert images.read_header(turned).width == 40  # upright: 40x60
    problem = images.image_problem(turned, max_pixels=1000)
    assert problem is not None and problem.startswith("40x60 pixels is more than the limit of 1,000 pixels"), problem


@pytest.mark.parametrize("exif_first", [False, True], ids=["no-exif", "exif-before-pixels"])
def test_a_png_over_the_pixel_limit_is_refused_from_its_header_without_decoding_it(tmp_path, monkeypatch,
                                                                                  exif_first):
    """A 1.2 MB PNG of 20000x20000 pixels took 33 s and 1.6 GB to refuse in the app: the look-up of its orientation,
    for the refusal's upright size, made Pillow decode every pixel (a PNG's EXIF may follow its pixels)."""
    from PIL import ExifTags, PngImagePlugin

    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    png = tmp_path / "bomb.png"
    Image.new("RGB", (60, 40), "gray").save(png, exif=exif if exif_first else None)
    decoded = []
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda image: decoded.append(image))

    problem = images.image_problem(png, max_pixels=1000)
    upright = "40x60" if exif_first else "60x40"  # an EXIF that follows the pixels is not looked for
    assert problem is not None and problem.startswith(f"{upright} pixels is more than the limit of 1,000"), problem
    assert decoded == []


def test_image_problem_applies_its_pixel_limit(tmp_path):
    problem = images.image_problem(write_image(tmp_path / "big.png", seed=1, size=(64, 64)), max_pixels=1000)
    assert problem is not None and problem.startswith("64x64 pixels is more than the limit of 1,000 pixels")
    assert "--max-pixels" in problem


def test_image_problem_honours_a_limit_above_pillows_own(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses above twice this
    assert images.image_problem(write_image(tmp_path / "big.png", seed=1, size=(64, 64)), max_pixels=10_000) is None


def test_image_problem_of_a_missing_file(tmp_path):
    assert images.image_problem(tmp_path / "missing.png") == "file not found"


@pytest.mark.parametrize(("suffix", "expected"), [(".jpg", "JPEG"), (".png", "PNG")])
def test_read_header_names_the_file_format(tmp_path, suffix, expected):
    path = write_image(tmp_path / f"a{suffix}", seed=1)

    assert images.read_header(path).image_format == expected


def test_read_header_of_a_truncated_png_is_an_image_decode_error(tmp_path):
    path = write_image(tmp_path / "a.png", seed=1)
    path.write_bytes(path.read_bytes()[:200])

    with pytest.raises(images.ImageDecodeError, match="broken"):
        images.read_header(path)


def test_a_phone_jpeg_that_pillow_reads_as_mpo_is_reported_as_jpeg(tmp_path):
    first, second = (Image.fromarray(np.full((24, 40, 3), value, np.uint8)) for value in (60, 200))
    path = tmp_path / "phone.jpg"
    first.save(path, "MPO", save_all=True, append_images=[second])  # what most phone cameras write
    assert Image.open(path).format == "MPO"

    header = images.read_header(path)

    assert header.image_format == "JPEG"
    assert (header.width, header.height) == (40, 24)
    assert images.load_rgb(path).shape == (24, 40, 3)


@pytest.mark.parametrize("quality", [40, 83, 95])
def test_read_header_estimates_the_jpeg_quality(quality):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    assert images.read_header(encode(image, "JPEG", quality=quality)).jpeg_quality == quality
    assert images.read_header(encode(image, "PNG")).jpeg_quality is None


def test_the_pixel_limit_message_names_only_scripts_that_take_max_pixels(tmp_path):
    import importlib
    import re

    problem = images.image_problem(write_image(tmp_path / "big.png", seed=1, size=(64, 64)), max_pixels=1000)

    scripts = set(re.findall(r"(\w+)\.py", problem))
    assert {"DataSplitD1", "ModelTraining", "App"} <= scripts
    needed = {"DataSplitD1": ["src"], "DataSplitD2": ["src"], "DataMerger": ["src", "--into", "out"],
              "ModelTraining": ["--predict", "run", "--input", "in"]}
    for script in scripts:
        arguments = [*needed.get(script, []), "--max-pixels", "5"]
        assert importlib.import_module(script).parse_args(arguments).max_pixels == 5


def test_an_image_too_large_for_the_free_memory_is_a_problem_of_its_own_not_a_traceback(tmp_path, monkeypatch):
    """A BMP whose header says 50000x50000 (over a raised --max-pixels) ended DataSplitD1 in a MemoryError's traceback
    where the machine could not lend the 7.5 GB Pillow asks for before it finds the data cut short."""
    from PIL import ImageFile

    write_image(tmp_path / "huge.png", seed=1)

    def no_memory(self):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    problem, pixels = images.decode_check(tmp_path / "huge.png")
    assert pixels is None
    assert problem == ("too large to decode in the memory free now (32x32 pixels): free some memory, or leave the "
                       "file out")


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "P", "I;16", "RGBA", "CMYK"])
def test_decode_check_hashes_the_rgb_pixels_the_model_takes(tmp_path, mode, monkeypatch):
    """The pixel hash is the hash of the size and of ``load_rgb``'s pixels, band by band:
    an RGB image's is the hash of its mode, size and raw bytes whole, as it always was."""
    import hashlib

    monkeypatch.setattr(images, "_HASH_BAND_BYTES", 4 * 53 * 5)  # bands of 5 rows: 8 bands, the last one short

    pixels = np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8)
    if mode == "I;16":  # one channel of 16-bit integers
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    else:
        image = Image.fromarray(pixels).convert(mode)
    path = tmp_path / ("image.jpg" if mode == "CMYK" else "image.png")  # an Adobe CMYK JPEG
    image.save(path)
    expected = hashlib.sha256(f"RGB {image.size}\n".encode() + images.load_rgb(path).tobytes()).hexdigest()

    assert images.decode_check(path) == (None, expected)
    if mode == "RGB":
        with Image.open(path) as saved:
            saved.load()
            assert expected == hashlib.sha256(f"RGB {saved.size}\n".encode() + saved.tobytes()).hexdigest()


def test_palette_images_of_the_same_indices_in_other_colours_are_other_images(tmp_path):
    """The hash read a palette image's indices alone: two images differing only in their palettes (each colour
    another) counted as one, so the splitters called them duplicates, or left both out as one image under two
    classes."""
    indices = Image.fromarray(np.random.default_rng(0).integers(0, 4, (16, 16), np.uint8), mode="L")
    paths = []
    for number, palette in enumerate(([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255], [255] * 3 + [128] * 9)):
        image = indices.convert("P")
        image.putpalette(palette + [0] * (768 - len(palette)))
        image.save(path := tmp_path / f"{number}.png")
        paths.append(path)

    assert images.decode_check(paths[0])[1] != images.decode_check(paths[1])[1]


def test_a_16_bit_image_and_its_8_bit_copy_are_one_image(tmp_path):
    """The model takes a 16-bit image scaled to 8 bits (``load_rgb``): its 8-bit copy is the same input."""
    levels = np.random.default_rng(0).integers(0, 256, (16, 16), np.uint8)
    Image.fromarray(levels.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(levels).save(tmp_path / "eight.png")
    with Image.open(tmp_path / "deep.png") as deep:
        assert deep.mode.startswith("I")

    assert images.decode_check(tmp_path / "deep.png")[1] == images.decode_check(tmp_path / "eight.png")[1]


def test_a_deep_scan_is_scaled_to_8_bits_in_bands_not_whole_in_float64(tmp_path):
    """A 16-bit gray scan (an X-ray) took about 40 bytes a pixel as it was scaled whole in float64: two 49 MP scans
    of a --predict folder peaked at 5.2 GB. Counted by tracemalloc (NumPy's arrays included), not timed."""

    levels = np.random.default_rng(0).integers(0, 65536, (1000, 1200)).astype(np.uint16)
    path = tmp_path / "scan.png"
    Image.fromarray(levels).save(path)
    with Image.open(path) as opened:
        opened.load()
        expected = np.clip(np.rint(np.asarray(opened, np.float64) * (255 / 65535)), 0, 255)

    pixels, peak = traced_peak(lambda: images.load_rgb(path))

    assert np.array_equal(pixels, np.repeat(expected.astype(np.uint8)[..., None], 3, axis=-1))
    assert peak < 12 * levels.size  # Pillow's image (2 or 4 bytes a pixel), its array, the RGB result (3), a band


def test_a_photo_stored_turned_and_its_upright_export_are_one_image(tmp_path):
    """The hash read the stored pixels before the EXIF turn: a phone photo (orientation 6) and its upright export,
    which the model takes as the same pixels, went to validation and test; and the stored pixels without the tag,
    which the model takes turned otherwise, counted as its duplicate."""
    stored = Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.png", exif=exif)
    Image.fromarray(images.load_rgb(tmp_path / "phone.png")).save(tmp_path / "export.png")
    stored.save(tmp_path / "untagged.png")

    phone, export, untagged = (images.decode_check(tmp_path / name)[1] for name in ("phone.png", "export.png",
                                                                                     "untagged.png"))
    assert phone == export and phone != untagged


def test_decode_check_holds_no_copy_of_a_large_images_pixels(tmp_path):
    """A 100 MP photo in a split: its pixels are hashed band by band, not copied whole twice (1.1 GB peak for one
    such JPEG before, with one check per core)."""

    path = tmp_path / "large.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), np.uint8)).save(path, compress_level=0)

    (problem, _), peak = traced_peak(lambda: images.decode_check(path))

    assert problem is None and peak < 3 * 2**20  # the raw pixels: 9 MB


def test_a_photo_whose_exif_is_broken_reads_without_pillow_s_raw_warning():
    """A broken EXIF block (cut short by an editor) only hides the orientation; Pillow's UserWarning about it
    would reach the terminal as a line of its code with no file name, even under --quiet."""
    import warnings

    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "A camera maker's name long enough to be cut"
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(buffer, "JPEG", exif=exif.tobytes()[:-20])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        header = images.read_header(io.BytesIO(buffer.getvalue()))
        pixels = images.load_rgb(buffer.getvalue())
    assert pixels.shape == (header.height, header.width, 3)


def broken_pngs() -> dict[str, bytes]:
    """A PNG without its end chunk, and one whose image data chunk fails its CRC: Pillow decodes both, TensorFlow's
    decoder (training's, --predict's) refuses both."""
    data = encode(Image.fromarray(np.full((48, 64, 3), 90, np.uint8)), "PNG")
    at = data.index(b"IDAT")
    crc = at + 4 + int.from_bytes(data[at - 4:at], "big")
    # A text chunk after the pixels (where editors put metadata written late), its CRC off by one bit.
    text = b"tEXt" + b"Comment\x00late"
    late = len(text[4:]).to_bytes(4, "big") + text + ((zlib.crc32(text) ^ 1) & 0xFFFFFFFF).to_bytes(4, "big")
    return {"no end chunk": data[:-12], "bad CRC": data[:crc] + bytes([data[crc] ^ 0xFF]) + data[crc + 1:],
            "bad end chunk CRC": data[:-1] + bytes([data[-1] ^ 1]), "bad CRC after the pixels": data[:-12] + late
            + data[-12:]}


@pytest.mark.parametrize("kind", ["no end chunk", "bad CRC", "bad end chunk CRC", "bad CRC after the pixels"])
def test_a_broken_png_is_refused_with_its_reason_on_every_path(kind):
    """The app (Pillow) classified these while --predict (TensorFlow) said only "could not be decoded": every
    check refuses them alike, naming what is broken, so no path uses a file another refuses."""
    data = broken_pngs()[kind]
    problem = images.image_problem(io.BytesIO(data))
    assert problem is not None and "PNG" in problem
    with pytest.raises(images.ImageDecodeError, match="PNG"):
        images.load_rgb(data)
    with pytest.raises(images.ImageDecodeError, match="PNG"):
        images.load_rgb_with_header(data)
    with pytest.raises(images.ImageDecodeError, match="PNG"):  # the header scan of training, --predict, --evaluate
        images.read_header(data)


def test_a_file_pillow_cannot_identify_is_named_by_its_first_bytes_on_every_path():
    """A PNG whose text chunk fails its CRC is no image to Pillow at all: "no known image format" (the app) and
    "cannot identify image file <_io.BytesIO object at 0x...>" (the split's check) misled; both say what it is."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made by hand")
    data = encode(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), "PNG", pnginfo=info)
    at = data.index(b"tEXt")
    crc = at + 4 + int.from_bytes(data[at - 4:at], "big")
    for content, reason in ((data[:crc] + bytes([data[crc] ^ 0xFF]) + data[crc + 1:], "a broken PNG file"),
                            (b"just some text, not an image", "no known image format")):
        problem = images.image_problem(io.BytesIO(content))
        assert problem is not None and reason in problem and "0x" not in problem, problem
        with pytest.raises(images.ImageDecodeError, match=reason):
            images.load_rgb(content)


@pytest.mark.parametrize(("brands", "name"), [((b"heic", b"mif1heic"), "HEIC"), ((b"mif1", b"mif1heic"), "HEIC"),
                                               ((b"avif", b"mif1miaf"), "AVIF"), ((b"mif1", b"avifmiaf"), "AVIF")])
def test_an_iphone_photo_named_jpg_is_named_for_its_format_not_as_no_image(brands, name):
    """A HEIC photo renamed .jpg (a phone's export, a chat app) was "not an image (no known image format)". An
    AVIF is read where Pillow has AVIF support: one that Pillow cannot open there is a broken file."""
    from PIL import features

    major, compatible = brands
    content = b"\x00\x00\x00\x18ftyp" + major + b"\x00\x00\x00\x00" + compatible + b"\x00" * 100
    with pytest.raises(images.ImageDecodeError) as raised:
        images.load_rgb(content)
    if name == "AVIF" and "avif" in features.get_supported_modules():
        assert "a broken AVIF file (its start says AVIF, but Pillow cannot read its header)" in str(raised.value)
    else:
        article = "an" if name == "AVIF" else "a"
        assert f"{article} {name} image, a format not read here (JPEG, PNG, WebP" in str(raised.value)


@pytest.mark.parametrize("file_format", ["TIFF", "GIF"])
def test_a_tiff_or_gif_named_jpg_is_no_image_read_here_as_one_named_tiff_or_gif_is_not(tmp_path, file_format):
    """A .tiff or .gif is left out as "an image format not read here", but the same image named .jpg was decoded by
    its content, and trained on, split, predicted and answered in the app: the formats read here are JPEG, PNG, WebP
    and BMP by content too."""
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)).save(path, file_format)
    said = f"a {file_format} image, a format not read here"

    assert said in images.decode_check(path)[0]
    with pytest.raises(images.ImageDecodeError, match=said):
        images.read_header(path)
    with pytest.raises(images.ImageDecodeError, match=said):
        images.load_rgb(path.read_bytes())  # as the app decodes an upload


@pytest.mark.parametrize("file_format, extension", [("TIFF", ".tif"), ("GIF", ".gif")])
def test_an_image_of_a_format_not_read_is_told_in_one_sentence_by_its_name_or_by_its_content(tmp_path, file_format,
                                                                                            extension):
    """A scan.tif was left out as "an image format not read here (.bmp, .jfif, ...)", the same TIFF named .jpg as "a
    TIFF image, a format not read here (JPEG, PNG, WebP or BMP, ...)", and a HEIC named .jpg with another fix: one
    sentence (``files.format_not_read``), whichever way the format was found."""
    from realvsai.files import format_not_read, other_image_format

    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)).save(path, file_format)

    assert other_image_format(f"scan{extension}") == format_not_read(file_format)
    assert images.decode_check(path)[0] == format_not_read(file_format)


def test_a_split_s_record_of_checks_made_while_a_tiff_named_jpg_passed_is_not_taken(tmp_path):
    """A split's record of checks keeps each file's result by sha256: one made while a TIFF named .jpg passed the check
    would let a re-run of the split, or a merge of it, take that file as an image without decoding it again."""
    import json

    import PIL

    record = tmp_path / ".checks.json"
    record.write_text(json.dumps({"checked_with": f"1, Pillow {PIL.__version__}, --max-pixels 1000",
                                  "files": {"scan.jpg": ["ab" * 32, None, "cd" * 32, None]}}))

    assert images.read_checks(record, 1000) == {}


def test_the_gray_check_of_decoded_pixels_holds_no_full_size_temporaries():
    """It took each pixel's largest and smallest channel over the whole image at once: four temporaries of a
    third of the image each (480 MB more for a 119 MP upload, on top of its 360 MB of pixels)."""

    pixels = np.random.default_rng(0).integers(0, 256, (3000, 2000, 3), dtype=np.uint8)
    gray, peak = traced_peak(lambda: images.gray_pixels(pixels))
    assert not gray and peak < pixels.nbytes / 8


def test_a_file_the_system_will_not_read_is_named_alike_by_the_split_and_the_header_scan(tmp_path):
    # --predict and --evaluate said "not an image Pillow can read ([Errno 13] Permission denied...)" of a file the
    # split called "cannot be read (Permission denied)". A folder named like an image stands in for chmod 000,
    # which root (CI) reads anyway.
    (tmp_path / "photo.png").mkdir()

    split_says = images.inspect_file(tmp_path / "photo.png")[2]
    with pytest.raises(images.ImageDecodeError) as scan_says:
        images.read_header(tmp_path / "photo.png")

    assert split_says == str(scan_says.value) == "cannot be read (Is a directory)"


@pytest.mark.parametrize("image_format", ["JPEG", "BMP"])
def test_the_scan_refuses_a_truncated_gray_image_as_the_app_does(tmp_path, image_format):
    """A gray image was taken for gray by its mode, not decoded: training's scan counted a truncated one (in
    model.json, the card, the familiar sizes) that tf.data then dropped, and the app refused."""
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (200, 300), np.uint8), "L").save(whole, image_format)
    cut = whole.getvalue()[: len(whole.getvalue()) // 2]
    with pytest.raises(images.ImageDecodeError) as app:
        images.load_rgb_with_header(cut)

    with pytest.raises(images.ImageDecodeError) as scan:
        images.read_header(io.BytesIO(cut))

    assert str(scan.value) == str(app.value) and str(scan.value).startswith("the image data is broken")


def test_a_png_whose_pixel_data_fails_its_checksum_gets_one_reason_on_every_path(tmp_path):
    """The scan (training, --predict) said "bad header checksum in b'IDAT'", the app and the splitters "unrecognized
    data stream contents" of the same file."""
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8)).save(whole, "PNG")
    data = bytearray(whole.getvalue())
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    with pytest.raises(images.ImageDecodeError) as scan:
        images.read_header(path)
    with pytest.raises(images.ImageDecodeError) as app:
        images.load_rgb_with_header(bytes(data), image_size=32)
    with pytest.raises(images.ImageDecodeError) as predict:
        images.load_rgb(path)

    assert str(scan.value) == str(app.value) == str(predict.value) == images.decode_check(path)[0]
    assert "checksum" in str(scan.value)


@pytest.mark.parametrize("name", sorted(transparent_images()))
def test_a_transparent_pixel_decodes_as_the_white_it_shows_not_the_colour_stored_under_it(name):
    """Every decode dropped the alpha: a cut-out (an AI image on a transparent background, white-backed in a browser
    and in the app's preview) reached the model on black, or on whatever colour its editor left under it."""
    data, shown = transparent_images()[name]

    pixels, header = images.load_rgb_with_header(data)  # the app's and --predict's decode

    assert np.array_equal(images.load_rgb(data), shown)  # training's Pillow route, evaluation's arrays
    assert np.array_equal(pixels, shown) and (header.width, header.height) == (32, 32)


def test_a_16_bit_gray_png_shows_white_where_its_transparent_level_is():
    """A 16-bit gray PNG marks one level transparent (its tRNS chunk): scaled to 8 bits, it kept that level's gray."""
    levels = np.random.default_rng(0).integers(0, 65536, (16, 16)).astype(np.uint16)
    levels[:, :4] = 1234
    image = Image.fromarray(levels)
    data = encode(image, "PNG", transparency=1234)
    scaled = np.clip(np.rint(levels * (255 / 65535)), 0, 255).astype(np.uint8)

    pixels = images.load_rgb(data)

    assert np.array_equal(pixels, np.repeat(np.where(levels == 1234, 255, scaled)[..., None], 3, axis=-1))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_an_opaque_image_with_an_alpha_channel_is_its_rgb_copy_pixels_and_hash_alike(tmp_path, mode):
    """Opaque (every alpha 255, or a palette's transparent entry unused): the pixels and the pixel hash of its RGB
    copy, as before transparency counted: an ordinary dataset decodes and splits as it did."""
    import hashlib

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    if mode == "LA":
        rgb = np.repeat(rgb[..., :1], 3, axis=-1)
    if mode == "P":  # four colours; entry 4 is transparent and no pixel uses it
        rgb = np.array([(0, 0, 0), (255, 0, 0), (10, 200, 30), (255, 255, 255)], np.uint8)[rng.integers(0, 4, (24, 40))]
        image = Image.fromarray(rgb).quantize(5)
        image.save(tmp_path / "alpha.png", transparency=bytes([255] * 4 + [0]))
        assert np.array_equal(np.asarray(image.convert("RGB")), rgb)
    else:
        opaque = np.full((24, 40, 1), 255, np.uint8)
        Image.fromarray(np.dstack([rgb[..., :1] if mode == "LA" else rgb, opaque]), mode).save(tmp_path / "alpha.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with Image.open(tmp_path / "alpha.png") as saved:
        assert saved.mode == mode and saved.has_transparency_data

    assert np.array_equal(images.load_rgb(tmp_path / "alpha.png"), rgb)
    expected = hashlib.sha256(b"RGB (40, 24)\n" + rgb.tobytes()).hexdigest()
    assert images.decode_check(tmp_path / "alpha.png") == images.decode_check(tmp_path / "rgb.png") == (None, expected)


def test_a_transparent_image_and_its_copy_flattened_on_white_are_one_image(tmp_path):
    """The pixel hash read the colours stored under the transparency: a cut-out and its export on white, which the
    model takes as the same pixels, went to different splits; two cut-outs differing only under their transparent
    pixels (the junk an editor leaves there) counted as two images."""
    data, shown = transparent_images()["rgba.png"]
    (tmp_path / "cutout.png").write_bytes(data)
    Image.fromarray(shown).save(tmp_path / "flattened.png")
    with Image.open(tmp_path / "cutout.png") as cutout:
        other = np.asarray(cutout).copy()
    other[other[..., 3] == 0, :3] = (0, 255, 0)  # other junk under the same transparent pixels
    Image.fromarray(other, "RGBA").save(tmp_path / "other_junk.png")
    Image.fromarray(other[..., :3]).save(tmp_path / "alpha_dropped.png")  # what a decode without alpha saw

    cutout, flattened, other_junk, dropped = (images.decode_check(tmp_path / name)[1] for name in (
        "cutout.png", "flattened.png", "other_junk.png", "alpha_dropped.png"))

    assert cutout == flattened == other_junk != dropped


def test_a_gray_cut_out_is_gray_whatever_colour_its_transparent_pixels_store():
    """The gray check (the scan's, the app's) read the colour under the transparency: a gray cut-out whose hidden
    pixels are red was called a colour image, though the model, and the user, see it gray on white."""
    gray = np.random.default_rng(2).integers(0, 256, (32, 32), dtype=np.uint8)
    rgba = np.dstack([gray, gray, gray, np.full((32, 32), 255, np.uint8)])
    rgba[:, :12] = (255, 0, 0, 0)  # transparent, red under it
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")

    assert images.read_header(data).grayscale
    assert images.load_rgb_with_header(data)[1].grayscale


def test_a_large_cut_out_is_made_opaque_in_bands_not_whole(tmp_path):
    """Compositing a 3 MP image with transparency onto the background holds the RGB result and a band at a time,
    not float or 16-bit copies of the whole image; the pixel hash holds no copy of it at all."""
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (1500, 2000, 4), dtype=np.uint8)
    path = tmp_path / "large.png"
    Image.fromarray(rgba, "RGBA").save(path, compress_level=0)

    pixels, peak = traced_peak(lambda: images.load_rgb(path))
    (problem, _), hash_peak = traced_peak(lambda: images.decode_check(path))

    assert np.array_equal(pixels[::50, ::50], on_white(rgba[::50, ::50, :3], rgba[::50, ::50, 3]))
    assert peak < pixels.nbytes + 4 * 2**20  # the result (9 MB), and a band
    assert problem is None and hash_peak < 4 * 2**20


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK"])
def test_a_large_opaque_image_becomes_its_array_in_bands_not_through_its_whole_bytes(tmp_path, mode):
    """NumPy took a decoded image whole through Pillow's bytes, copied twice: the decode of a 190 MP photo
    (DataAugmentation's, which decodes it whole) peaked at 1.9 GB past Pillow's own 760 MB. Counted by tracemalloc
    (NumPy's arrays and Python's bytes, not Pillow's image), not timed."""
    rgb = np.random.default_rng(4).integers(0, 256, (1000, 1500, 3), dtype=np.uint8)
    path = tmp_path / ("large.jpg" if mode == "CMYK" else "large.png")
    Image.fromarray(rgb).convert(mode).save(path)
    with Image.open(path) as opened:
        expected = np.asarray(opened.convert("RGB"))

    pixels, peak = traced_peak(lambda: images.load_rgb(path))

    assert np.array_equal(pixels, expected)
    assert peak < pixels.nbytes + 4 * 2**20  # the result (4.5 MB), and a band


# ------------------------------------------------------------------ a large JPEG is counted at the pixels decoded
# A 200 MP phone photo (16320x12240) was refused on every path, though a resize model's path decodes it at 1/8 of its
# sides (2040x1530); the stand-in here is conftest's 2000x1500 photo under PHOTO_LIMIT.


def test_a_jpeg_a_resize_model_decodes_reduced_is_counted_at_the_pixels_decoded():
    data = phone_photo()

    assert images.load_rgb(data, PHOTO_LIMIT, image_size=32).shape == (188, 250, 3)  # 1/8 of its sides
    header = images.read_header(data, PHOTO_LIMIT, image_size=32)  # the scan of training, --evaluate, --predict
    assert (header.width, header.height, header.image_format, header.grayscale) == (2000, 1500, "JPEG", False)
    pixels, header = images.load_rgb_with_header(data, PHOTO_LIMIT, image_size=32)  # the app's
    assert pixels.shape == (188, 250, 3) and (header.width, header.height, header.grayscale) == (2000, 1500, False)


@pytest.mark.parametrize("read", [
    lambda data: images.load_rgb(data, PHOTO_LIMIT),  # --robustness's full-resolution decode
    lambda data: images.read_header(data, PHOTO_LIMIT),  # DataAugmentation's plan: its copies are made whole
    lambda data: images.load_rgb_with_header(data, PHOTO_LIMIT, crop_size=32),  # the app in crops mode
])
def test_a_jpeg_a_path_decodes_whole_is_counted_whole(read):
    with pytest.raises(images.ImageDecodeError) as raised:
        read(phone_photo())

    message = str(raised.value)
    assert "2000x1500 pixels is more than the limit of 1,000,000 pixels" in message and "--max-pixels" in message


def test_the_limit_counts_the_scale_the_models_side_decodes_a_jpeg_at():
    data = phone_photo()  # for a 200 px model, 1/2 keeps its short side at twice that: 1000x750 pixels

    assert images.load_rgb(data, PHOTO_LIMIT, image_size=200).shape == (750, 1000, 3)
    pixels, header = images.load_rgb_with_header(data, PHOTO_LIMIT, image_size=200)  # gray judged at 1/8 apart
    assert pixels.shape == (750, 1000, 3) and header.grayscale is False
    with pytest.raises(images.ImageDecodeError) as raised:
        images.read_header(data, 500_000, image_size=200)

    message = str(raised.value)
    assert "2000x1500 pixels, decoded at 1/2 of its sides as 1000x750," in message
    assert "limit of 500,000 pixels" in message and "--max-pixels" in message


def split_check(data: bytes, max_pixels: int) -> None:
    """The splitters' and DataMerger's check (``decode_check``), its problem raised."""
    problem = images.image_problem(io.BytesIO(data), max_pixels)
    if problem:
        raise images.ImageDecodeError(problem)


@pytest.mark.parametrize("read", [
    lambda data: images.load_rgb(data, PHOTO_LIMIT, image_size=32),
    lambda data: images.read_header(data, PHOTO_LIMIT, image_size=32),
    lambda data: split_check(data, PHOTO_LIMIT),
])
def test_a_progressive_jpeg_is_counted_whole_whatever_its_decode(read):
    """libjpeg holds every DCT coefficient of a progressive JPEG, 2 bytes each, whatever the scale it decodes at (a
    progressive 200 MP photo at 1/8: 584 MiB): its memory is its full size's."""
    read(phone_photo(progressive=True, size=(1000, 750)))  # within the limit whole
    with pytest.raises(images.ImageDecodeError, match="2000x1500 pixels is more than the limit of 1,000,000"):
        read(phone_photo(progressive=True))


def jpeg_header(width: int, height: int, scan_components: int) -> bytes:
    """A baseline JPEG's header of three components up to its first scan, which holds ``scan_components`` of them
    (fewer: the image is coded in several scans), and no data: opened, never decoded."""
    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    frame = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 0, 3, 0x11, 0])
    scan = bytes([scan_components, *(part for index in range(scan_components) for part in (index + 1, 0)), 0, 63, 0])
    return b"\xff\xd8" + segment(0xFFC0, frame) + segment(0xFFDA, scan) + b"\xff\xd9"


def test_a_jpeg_coded_in_several_scans_is_counted_whole_whatever_its_decode():
    """A sequential JPEG whose first scan lacks a component is decoded by libjpeg through a buffer of the whole
    image's DCT coefficients too, as a progressive one: a 65535x65535 one would take 25 GB at any scale."""
    with pytest.raises(images.ImageDecodeError, match="2000x1500 pixels is more than the limit"):
        images.read_header(jpeg_header(2000, 1500, scan_components=1), PHOTO_LIMIT, image_size=32)
    with pytest.raises(images.ImageDecodeError, match="broken"):  # one scan: counted reduced, and then decoded
        images.read_header(jpeg_header(2000, 1500, scan_components=3), PHOTO_LIMIT, image_size=32)


def test_a_jpeg_whose_gray_check_decodes_it_whole_is_counted_whole():
    """The scan judges gray at 1/8 only where the short side keeps 64 pixels there: a strip's is a full decode."""
    strip = phone_photo(size=(8000, 300))  # 2.4 MP; a 32 px model decodes it at 1/4

    for read in (lambda: images.read_header(strip, PHOTO_LIMIT, image_size=32),
                 lambda: split_check(strip, PHOTO_LIMIT)):
        with pytest.raises(images.ImageDecodeError, match="8000x300 pixels is more than the limit"):
            read()


def follow_the_advice(message: str, source: Path, tmp_path: Path) -> Path:
    """Runs the one Pillow command ``message`` gives (``python -c "..." IN.jpg OUT.jpg``) on ``source``; its output."""
    (code,) = re.findall(r'python -c "([^"]+)" IN\.jpg OUT\.jpg', message)
    output = tmp_path / "out.jpg"
    subprocess.run([sys.executable, "-c", code, str(source), str(output)], check=True, timeout=60)
    return output


def test_a_progressive_jpeg_refused_whole_says_why_and_the_command_that_makes_it_pass(tmp_path):
    """A progressive 200 MP photo is refused where a sequential one passes at its 1/8 decode: the refusal says so in
    its line, and the command it gives (the same pixels saved as a sequential JPEG) makes one that passes."""
    progressive = tmp_path / "progressive.jpg"
    progressive.write_bytes(phone_photo(progressive=True))
    for read in (lambda path: images.read_header(path, PHOTO_LIMIT, image_size=32),
                 lambda path: split_check(path.read_bytes(), PHOTO_LIMIT)):
        with pytest.raises(images.ImageDecodeError) as raised:
            read(progressive)

        message = str(raised.value)
        assert "\n" not in message and "2000x1500 pixels is more than the limit of 1,000,000" in message
        assert "progressive" in message and "decoded whole" in message and "sequential" in message
        sequential = follow_the_advice(message, progressive, tmp_path)
        read(sequential)  # passes
        # Saved again with its own quantisation tables: a pixel a few levels off at most, here and there.
        difference = np.abs(images.load_rgb(sequential, 10**7).astype(int) - images.load_rgb(progressive, 10**7))
        assert difference.max() <= 4 and difference.mean() < 0.1


@pytest.mark.parametrize("read, path_words", [
    (lambda data: images.read_header(data, PHOTO_LIMIT, crop_size=32), "crops mode decodes it whole"),
    (lambda data: images.load_rgb_with_header(data, PHOTO_LIMIT, crop_size=32), "crops mode decodes it whole"),
    (lambda data: images.read_header(data, PHOTO_LIMIT), "decodes it whole"),  # DataAugmentation's plan
])
def test_a_path_refusing_a_photo_it_decodes_whole_says_why_and_the_command_that_makes_it_pass(tmp_path, read,
                                                                                               path_words):
    """A 200 MP photo (conftest's stand-in) that resize mode takes at 1/8 is refused where it is decoded whole: the
    line says so, and how to make it pass (crops mode: a resize model too), with a command that does."""
    photo = write_phone_photo(tmp_path / "photo.jpg")
    with pytest.raises(images.ImageDecodeError) as raised:
        read(photo.read_bytes())

    message = str(raised.value)
    assert "\n" not in message and "2000x1500 pixels is more than the limit of 1,000,000" in message
    assert path_words in message and "--max-pixels" in message
    assert ("--input-mode resize" in message) is ("crops" in path_words)
    read(follow_the_advice(message, photo, tmp_path).read_bytes())  # passes


def test_an_image_crops_mode_enlarges_past_the_limit_is_not_told_to_shrink(tmp_path):
    strip = phone_photo(size=(4, 3000))  # 32x24000 once its short side covers 32

    with pytest.raises(images.ImageDecodeError) as raised:
        images.read_header(strip, 500_000, crop_size=32)

    assert "32x24000" in str(raised.value) and "python -c" not in str(raised.value)


def test_a_jpeg_too_large_for_tensorflows_decoder_whole_takes_pillows_route():
    """TensorFlow's JPEG decoder refuses 2^29 bytes of pixels or more (178,956,971 pixels and up, as RGB) whatever
    --max-pixels allows: a 190 MP photo was dropped as "not decodable" where it decodes whole (crops mode,
    DataAugmentation). Such a JPEG takes Pillow's route, the same pixels, on every path."""
    assert images.TF_JPEG_MAX_PIXELS == (2**29 - 1) // 3 == 178_956_970

    over = images.read_header(jpeg_header_only(16000, 11900), max_pixels=300_000_000, gray=False)
    within = images.read_header(jpeg_header_only(13000, 13000), max_pixels=300_000_000, gray=False)

    assert over.needs_pil and (over.width, over.height) == (16000, 11900) and not within.needs_pil


def reduced_pixels_hash(data: bytes) -> str:
    """The sha256 ``decode_check`` gives an image whose pixels are those of ``data`` decoded at 1/8."""
    pixels = images.load_rgb(data, PHOTO_LIMIT, image_size=32)
    return hashlib.sha256(f"RGB {pixels.shape[1::-1]}\n".encode() + pixels.tobytes()).hexdigest()


def test_the_split_s_check_hashes_a_jpeg_over_the_limit_whole_at_its_reduced_decode(tmp_path):
    """The splitters and DataMerger hash an image's decoded pixels to find duplicates: a JPEG over the limit at its
    full size is hashed at 1/8, which its duplicates share (the same photo saved with other metadata)."""
    data = phone_photo()
    phone = tmp_path / "phone.jpg"
    phone.write_bytes(data)
    commented = tmp_path / "commented.jpg"  # a COM segment after SOI: other bytes, the same pixels
    commented.write_bytes(data[:2] + b"\xff\xfe\x00\x07edited" + data[2:])

    problem, pixels = images.decode_check(phone, PHOTO_LIMIT)

    assert problem is None and pixels == reduced_pixels_hash(data)
    assert images.decode_check(commented, PHOTO_LIMIT) == (None, pixels)
    assert images.decode_check(phone)[1] != pixels  # within the default limit: its full pixels, as before


@pytest.mark.parametrize("mode, gray", [("RGB", False), ("L", True)])
def test_the_split_s_header_of_a_jpeg_over_the_limit_whole_is_its_full_sizes(tmp_path, mode, gray):
    path = write_phone_photo(tmp_path / "phone.jpg", mode=mode)

    data, _, problem, _, header = images.inspect_file(path, PHOTO_LIMIT)

    assert problem is None and (header.width, header.height, header.image_format) == (2000, 1500, "JPEG")
    assert header.grayscale is gray is images.read_header(data, PHOTO_LIMIT, image_size=32).grayscale


def test_pillow_s_bomb_warning_stays_quiet_when_another_thread_restores_the_warning_filters(monkeypatch):
    """``warnings.catch_warnings`` saves the filter list as it finds it and puts that back: not thread-safe. Around each
    open, two threads' blocks interleaved, one put back a list without the other's filter while that one was still
    opening, and Pillow's DecompressionBombWarning reached the terminal (in 2 of 3 runs of 12,000 opens of a 108 MP
    JPEG's header in four threads; also across the app's sessions, each a thread). Played here: another thread's
    block, begun after an image was opened, ends inside the next open."""
    import warnings

    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: shown.append(str(message)))
    images.read_header(io.BytesIO(encode(Image.new("RGB", (8, 8)), "PNG")))  # the filters are in place once used
    other_thread = warnings.catch_warnings()
    other_thread.__enter__()
    real_check = Image._decompression_bomb_check

    def check_as_the_other_thread_ends(size):
        other_thread.__exit__(None, None, None)
        real_check(size)

    monkeypatch.setattr(Image, "_decompression_bomb_check", check_as_the_other_thread_ends)
    with images.open_image(io.BytesIO(jpeg_header_only(12_000, 9_000)), max_pixels=200_000_000) as image:
        assert image.size == (12_000, 9_000)  # over Pillow's 89.5 MP: it warns, unless told not to

    assert shown == []
