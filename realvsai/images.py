"""Is this a usable image (one pixel limit, ``pixel_problem``), and its RGB uint8 pixels (no TensorFlow)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import PIL
from PIL import ExifTags, Image, ImageOps, PngImagePlugin, UnidentifiedImageError, features

from realvsai.cli import hide_noise
from realvsai.config import CROP_GRID, MAX_IMAGE_PIXELS
from realvsai.files import IMAGE_FORMATS, format_by_start, format_not_read, map_in_threads, read_json, reading_workers
from realvsai.image_stats import format_name, is_grayscale_mode

# How the pixel limit is raised, as ``pixel_problem`` says it (the app says it its own way).
RAISE_LIMIT = ("--max-pixels raises it in DataSplitD1.py, DataSplitD2.py, DataMerger.py, DataAugmentation.py, "
               "ModelTraining.py and App.py")
# Formats tf.io.decode_image reads exactly as Pillow does, for 8-bit, unrotated images without transparency (which
# TensorFlow drops: ``_header`` sends those to Pillow, ``ALPHA_BACKGROUND``). Not BMP: TensorFlow returns a palette
# BMP's colour indices as gray levels and refuses a 1-bit one; not GIF: it paints a transparent pixel black; a WebP
# with alpha it refuses (TF 2.21).
TF_DECODABLE_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
# The most pixels TensorFlow's JPEG decoder makes: it refuses 2^29 bytes of output or more (jpeg_mem.cc, "Image too
# large"), as RGB 178,956,971 pixels and up, whatever --max-pixels allows: a 190 MP photo decoded whole (crops mode,
# DataAugmentation). ``_header`` sends a larger JPEG to Pillow, which decodes the same pixels. (Pillow's own bomb
# check, twice its MAX_IMAGE_PIXELS, is the same number; ``open_image`` puts the project's limit in its place.)
TF_JPEG_MAX_PIXELS = ((1 << 29) - 1) // 3
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# The level (every channel) a transparent pixel is seen on: white, the background a web page, a document or an
# editor's flatten puts behind a cut-out, so the model judges what the user sees; the colour stored under a
# transparent pixel is never shown (mostly black, sometimes an editor's leftovers), and a decode that dropped the
# alpha judged that. ``_as_rgb`` composites onto it (``_over_background``) on every path, training, evaluation,
# --predict, offline augmentation and the app alike, whose preview is these pixels: one truth, what the user sees
# on the page is what the model judged.
ALPHA_BACKGROUND = 255
_PILLOW_LIMIT_LOCK = threading.Lock()
# Pillow's warnings that say nothing to a user (``cli.hide_noise``): its
# DecompressionBombWarning (``open_image`` puts the project's limit in place of Pillow's), and those about a broken
# EXIF block ("Corrupt EXIF data", "Truncated File Read"), which only hides the orientation. Each would reach the
# terminal as a line of Pillow's code naming no file, even under --quiet.
_PILLOW_NOISE = (("ignore", None, Image.DecompressionBombWarning, None, 0),
                 ("ignore", None, UserWarning, re.compile(r"PIL\.TiffImagePlugin"), 0))


def quiet_pillow() -> None:
    """Hides ``_PILLOW_NOISE`` (``cli.hide_noise``); each function here that opens, decodes or reads an image's EXIF
    calls it."""
    hide_noise(*_PILLOW_NOISE)

quiet_pillow()
# An image is gray when its channels' spread (largest minus smallest, per pixel) averages at most GRAY_SPREAD
# levels: gray content saved as RGB (PNG, or JPEG: its chroma decodes equal) spreads by rounding at most, and a
# small coloured mark passes (pure red on up to 0.8 % of a scan). A mean, not a share of pixels: a 1 px mark
# decoded at 1/8 covers 8 times the share at an eighth of the spread. Faint colour noise averages out in a
# reduced decode, though, so every path (scan, split, app) judges at looks_gray's own scale, for one answer.
GRAY_SPREAD = 2.0
_GRAY_CHECK_SIDE = 64  # a large JPEG is checked at 1/8 of its sides while its short side keeps this many pixels
_HASH_BAND_BYTES = 1 << 20  # about the most ``decode_check`` and ``looks_gray`` copy of an image's pixels at once
# libjpeg decodes a JPEG at 1/2, 1/4 or 1/8 of its size in its inverse DCT, for a fraction of the
# time and memory of the full image (TensorFlow's decode_jpeg ratio, Pillow's draft: the same pixels).
# The JPEG qualities the scripts write with (DataAugmentation.py's --jpeg-quality, its settings record, the demo's):
# libjpeg's scale, which Pillow's "quality" takes.
MIN_JPEG_QUALITY, MAX_JPEG_QUALITY = 1, 100
JPEG_SCALES = (8, 4, 2)
# The reduced image keeps at least this many times the model's side, so the antialiased resize
# that follows still averages several decoded pixels into each model pixel.
JPEG_SCALE_HEADROOM = 2
# An ``image_size`` for which ``decode_scale`` is libjpeg's smallest decode, 1/8, wherever a short side allows it:
# the splitters' and DataMerger's check of a JPEG over the pixel limit at full size (``decode_check``).
SMALLEST_DECODE = 1
# The start-of-frame markers of sequential Huffman-coded JPEGs (baseline and extended), which libjpeg decodes in one
# pass when their first scan holds every component (``_one_pass_jpeg``).
_SEQUENTIAL_FRAMES = frozenset({0xC0, 0xC1})


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message says why, in words for the user."""


ANIMATED_FORMATS = ("WEBP", "PNG")  # Pillow's names of the formats read here whose frames are an animation


@dataclass(frozen=True)
class ImageHeader:
    """What the header tells about a file, and whether its pixels are gray (which takes a decode: ``looks_gray``)."""

    width: int
    height: int
    needs_pil: bool  # True when TensorFlow's decoders would not give the same pixels as load_rgb, or none whole
    image_format: str = ""  # the file format as ``image_stats.format_name`` names it: "JPEG" (also MPO), "PNG", ...
    jpeg_quality: int | None = None  # a JPEG's quality (1-100) estimated from its quantisation table
    grayscale: bool | None = None  # gray pixels (``looks_gray``); None: not checked (``read_header(gray=False)``)
    frames: int = 1  # an animation's frames (WebP, APNG), of which the first is decoded; an MPO's previews are not


# libjpeg's luminance quantisation table at quality 50 (JPEG standard, Annex K), in natural order as Pillow
# gives it; libjpeg scales it for every other quality.
_JPEG_LUMINANCE_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
_QUALITY_TABLES = np.stack([np.clip((_JPEG_LUMINANCE_TABLE * (5000 // quality if quality < 50 else 200 - 2 * quality)
                                     + 50) // 100, 1, 255) for quality in range(1, 101)])


def decode_scale(width: int, height: int, image_format: str, image_size: int | None) -> int:
    """The reduction ``load_rgb`` decodes an image of that size and ``format_name`` at for ``image_size``: a
    JPEG's ``jpeg_scale``, else 1."""
    return jpeg_scale(width, height, image_size) if image_format == "JPEG" else 1


def decoded_size(width: int, height: int, image_format: str, image_size: int | None) -> tuple[int, int]:
    """The (width, height) ``load_rgb`` (and tf.data) decodes an image of that size and ``format_name`` in for
    ``image_size``: a large JPEG's reduced (at ``decode_scale``; libjpeg rounds up), else its own."""
    scale = decode_scale(width, height, image_format, image_size)
    return -(-width // scale), -(-height // scale)


def jpeg_scale(width: int, height: int, image_size: int | None) -> int:
    """The largest of ``JPEG_SCALES`` whose decoded short side (libjpeg rounds up) is still at least
    ``JPEG_SCALE_HEADROOM`` x ``image_size``; 1 (full size) when none is, or ``image_size`` is None."""
    short_side = min(width, height)
    for scale in JPEG_SCALES if image_size else ():
        if -(-short_side // scale) >= JPEG_SCALE_HEADROOM * image_size:
            return scale
    return 1


def cover_size(width: int, height: int, crop_size: int) -> tuple[int, int]:
    """(width, height) of an image as crops mode cuts it: enlarged (``data.cover``) so its short side is at
    least ``crop_size``, or as it is. In float32, as the pipeline's graph computes it, so the sizes round alike."""
    scale = np.float32(crop_size) / np.float32(min(width, height))
    if scale <= 1:
        return width, height
    return math.ceil(np.float32(width) * scale), math.ceil(np.float32(height) * scale)


def grid_offsets(length: Any, crop_size: int) -> list[Any]:
    """Where crops mode's ``CROP_GRID`` crops of one axis start, evenly spaced from edge to edge, on an axis of
    ``length`` (once ``cover_size`` enlarged it): Python ints, or TensorFlow's where ``length`` is a tensor."""
    return [(length - crop_size) * index // (CROP_GRID - 1) for index in range(CROP_GRID)]


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) of an image stored as ``size`` once its EXIF ``orientation`` turns it upright: a quarter turn
    (orientations 5 to 8) transposes it."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else (size[0], size[1])


def pixel_problem(width: int, height: int, max_pixels: int, crop_size: int | None = None,
                  scale: int = 1) -> str | None:
    """Why an image of ``width`` x ``height`` is refused, or None: more than ``max_pixels`` pixels as a path decodes
    it: at 1/``scale`` of its sides (a JPEG decoded reduced: ``limit_scale``), as it is, or, with ``crop_size``
    (crops mode), once ``cover_size`` enlarged (a 1x300000 strip would take gigabytes)."""
    decoded = (-(-width // scale), -(-height // scale))  # libjpeg rounds up
    covered = cover_size(*decoded, crop_size) if crop_size else decoded
    if covered[0] * covered[1] <= max_pixels:
        return None
    size = f"{width}x{height} pixels" + (f", decoded at 1/{scale} of its sides as {decoded[0]}x{decoded[1]},"
                                         if scale > 1 else "")
    size += (f", enlarged to {covered[0]}x{covered[1]} for the model's {crop_size} px crops,"
             if covered != decoded else "")
    return (f"{size} is more than the limit of {max_pixels:,} pixels (a guard against decompression bombs; "
            f"{RAISE_LIMIT})")


def limit_scale(image: Image.Image, image_size: int | None) -> int:
    """The reduction at which the pixel limit counts an opened (not loaded) image on a path that decodes a JPEG
    reduced for a model of side ``image_size`` (None: a path that decodes it whole, 1): ``decode_scale``'s, or the
    scan's gray check's (``looks_gray``) where that is less reduced, for a JPEG that libjpeg decodes in one pass
    (``_one_pass_jpeg``); 1 for any other image.

    Every decode of such a JPEG on the path is then at most that size (a 200 MP phone photo: 2040x1530 for a 224 px
    model, 62 MiB for the app's decode against 1.9 GB whole, benchmark 7d), and no JPEG escapes the limit: at 1/8 of
    its sides JPEG's largest, 65535x65535 (4.3 G pixels), is 67 M pixels.
    """
    if not image_size or format_name(image.format) != "JPEG":
        return 1
    scale = min(decode_scale(*image.size, "JPEG", image_size), _gray_check_scale(image))
    return scale if scale > 1 and _one_pass_jpeg(image) else 1


def _one_pass_jpeg(image: Image.Image) -> bool:
    """Whether libjpeg decodes an opened JPEG in one pass, holding a few rows at a time: sequential (not progressive)
    and every component in its first scan. Otherwise it buffers every DCT coefficient of the whole image, 2 bytes
    each, whatever the scale it decodes at (a progressive 200 MP photo at 1/8: 584 MiB), as libjpeg's
    ``has_multiple_scans`` says: that memory is its full size's. Read from the file's markers up to its first scan,
    which Pillow has read to open it."""
    stream = image.fp
    if stream is None or image.info.get("progressive"):
        return False
    position = stream.tell()
    try:
        stream.seek(0)
        if stream.read(2) != b"\xff\xd8":
            return False
        frame, components = None, 0
        while True:
            byte = stream.read(1)
            if not byte:
                return False
            if byte != b"\xff":
                continue  # between segments only in a broken file: libjpeg skips such bytes too
            marker = stream.read(1)
            while marker == b"\xff":  # fill bytes
                marker = stream.read(1)
            if not marker:
                return False
            code = marker[0]
            if code in (0x00, 0x01) or 0xD0 <= code <= 0xD7:
                continue  # no length: a stuffed zero, TEM, or a restart marker
            payload = stream.read(max(0, int.from_bytes(stream.read(2), "big") - 2))
            if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC) and len(payload) >= 6:  # a start of frame
                frame, components = code, payload[5]
            elif code == 0xDA:  # the first scan: the number of components it holds comes first
                return frame in _SEQUENTIAL_FRAMES and bool(payload) and payload[0] == components
            elif code == 0xD9:  # the end of the image, before any scan
                return False
    except (OSError, ValueError):
        return False
    finally:
        stream.seek(position)


def open_image(source: Path | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS,
               crop_size: int | None = None, image_size: int | None = None) -> Image.Image:
    """Opens an image's header with Pillow; ImageDecodeError for a format not read here whatever the file's name
    (``files.IMAGE_FORMATS``: a TIFF or GIF named .jpg), or above ``max_pixels`` as the path decodes it
    (``pixel_problem``: a JPEG at ``limit_scale`` for a model of side ``image_size``, None: whole; crops mode's
    ``crop_size`` enlarged; Pillow's own bomb limit is replaced), Pillow's OSError, SyntaxError or ValueError for
    what it cannot open."""
    quiet_pillow()  # a JPEG's EXIF is read as it opens
    try:
        image = Image.open(source)
    except Image.DecompressionBombError:
        # Open the header again without Pillow's check, to measure the image against our limit.
        # The setting is global, so one thread at a time; the others' opens check our limit too.
        if hasattr(source, "seek"):
            source.seek(0)
        with _PILLOW_LIMIT_LOCK:
            pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = pillow_limit
    if image.format not in IMAGE_FORMATS:  # training, the split, --predict and the app read by name, then by this
        found = format_name(image.format) or "unknown"
        image.close()
        raise ImageDecodeError(format_not_read(found))
    scale = 1 if crop_size else limit_scale(image, image_size)  # crops mode takes the native pixels
    problem = pixel_problem(*image.size, max_pixels, crop_size, scale)
    if problem:
        # Named by its upright size, as every other line names it: a quarter turn swaps the sides (the count is
        # the same either way).
        try:  # a PNG's EXIF may follow its pixels, which Pillow would decode to find it: one read before them only
            exif = image.getexif() if image.format != "PNG" or "exif" in image.info else {}
            orientation = exif.get(ExifTags.Base.Orientation, 1)
        except (OSError, SyntaxError, ValueError):  # broken: as it is stored
            orientation = 1
        problem = pixel_problem(*upright_size(image.size, orientation), max_pixels, crop_size, scale)
        problem += _limit_advice(image, max_pixels, crop_size, image_size)
        image.close()
        raise ImageDecodeError(problem)
    return image


# ``downscale_command``'s and ``SEQUENTIAL_COMMAND``'s parts: opening IN.jpg needs Pillow's own bomb check off (it
# refuses a JPEG of over 178,956,970 pixels), and the copy keeps the EXIF orientation.
_PILLOW_OPENS = ('python -c "import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = None; '
                 "image = Image.open(sys.argv[1]); ")
_PILLOW_SAVES = "image.save(sys.argv[2], "
_PILLOW_ENDS = ', exif=image.getexif())" IN.jpg OUT.jpg'
# Saves a JPEG, IN.jpg, as a sequential one, OUT.jpg, that libjpeg decodes in one pass (``_one_pass_jpeg``): the same
# quantisation tables and subsampling (``quality="keep"``), so the same quality.
SEQUENTIAL_COMMAND = f"{_PILLOW_OPENS}{_PILLOW_SAVES}quality='keep'{_PILLOW_ENDS}"


def downscale_command(max_pixels: int) -> str:
    """A shell command (Pillow's, which the project installs) that saves a smaller copy of a JPEG, IN.jpg, as OUT.jpg:
    its sides at most the square root of ``max_pixels``, so within it, its EXIF orientation kept."""
    side = math.isqrt(max_pixels)
    return f"{_PILLOW_OPENS}image.thumbnail(({side}, {side})); {_PILLOW_SAVES}quality=95{_PILLOW_ENDS}"


def _limit_advice(image: Image.Image, max_pixels: int, crop_size: int | None, image_size: int | None) -> str:
    """The end of ``open_image``'s refusal of a JPEG over ``max_pixels`` whole: what makes it pass. Where the path
    decodes it whole (crops mode; no ``image_size``: DataAugmentation's plan), that it does, a command that downscales
    it and, in crops mode, a resize model. Where the path counts a sequential JPEG reduced but this one is coded in
    several scans (progressive), that, and a command that saves it as a sequential one, where that would pass. ""
    otherwise: another format (decoded whole on every path), or an image crops mode refused only once it enlarged
    it (a strip: smaller would not do)."""
    if format_name(image.format) != "JPEG" or pixel_problem(*image.size, max_pixels) is None:
        return ""
    if crop_size or not image_size:
        where = "crops mode decodes it whole" if crop_size else "this path decodes it whole"
        resize = (", or use a resize model (--input-mode resize), which counts a sequential JPEG at its reduced decode"
                  if crop_size else "")
        return f"; {where}: downscale it, e.g. {downscale_command(max_pixels)}{resize}"
    scale = min(decode_scale(*image.size, "JPEG", image_size), _gray_check_scale(image))
    if scale == 1 or _one_pass_jpeg(image) or pixel_problem(*image.size, max_pixels, scale=scale) is not None:
        return ""
    kind = "a progressive JPEG" if image.info.get("progressive") else "a JPEG whose first scan lacks a colour component"
    return (f"; as {kind} it is decoded whole (libjpeg holds all its coefficients), where a sequential one is counted "
            f"at 1/{scale} of its sides: save it as one, e.g. {SEQUENTIAL_COMMAND}")


def decode_check(path: Path | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[str | None, str | None]:
    """``(problem, pixels)``: why ``path`` is not a usable image, or None when it decodes completely (pixel count
    checked first); and then the sha256 of its decoded pixels as the model takes them (upright: ``load_rgb``'s size
    and RGB values), which the same image shares in another lossless format or mode, stored turned with an EXIF
    orientation, or saved again with other metadata. A JPEG over ``max_pixels`` at full size that libjpeg decodes
    within it at 1/8 (``limit_scale``: a 200 MP phone photo) is checked and hashed at that decode."""
    return _full_check(path, max_pixels, header=False)[:2]


def _full_check(path: Path | BinaryIO, max_pixels: int, header: bool = True
                ) -> tuple[str | None, str | None, ImageHeader | None]:
    """``decode_check``'s ``(problem, pixels)`` and, with ``header``, the image's ``read_header`` from the same
    decode (None without)."""
    try:
        with open_image(path, max_pixels, image_size=SMALLEST_DECODE) as image:  # our limit checked, Pillow quiet
            _check_png(image, path)  # before decoding, as the scan does: a bad checksum is named as such
            # Hashed whole where that is within the limit (every image it took before). A JPEG over it whole that
            # open_image took at its 1/8 decode is checked and hashed at that decode, which still reads all its data
            # (a file cut short is found): a full decode would break the limit's memory bound (a 200 MP photo: 799
            # MiB a check, and a check runs per core; 49 MiB at 1/8, benchmark 7d). Its duplicates are then found by
            # their 1/8 pixels: the same photo with other metadata shares them (and so would an image of exactly
            # those pixels, its 1/8 decode saved losslessly); one re-compressed or resized is not caught, as ever.
            reduced = 1 if pixel_problem(*image.size, max_pixels) is None else limit_scale(image, SMALLEST_DECODE)
            whole = _header(image, gray=False) if header and reduced > 1 else None  # its own size, before draft
            if reduced > 1:
                image.draft("RGB", (image.width // reduced, image.height // reduced))
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as error:  # an image whose data breaks off: as _rgb says it
                raise ImageDecodeError(f"the image data is broken ({error})") from error
            except MemoryError:  # within a raised --max-pixels, more than the machine has free (Pillow asks first)
                raise ImageDecodeError(f"too large to decode in the memory free now ({image.width}x{image.height} "
                                       "pixels): free some memory, or leave the file out") from None
            # The pixels the model takes (an RGB image's raw bytes): the same image saved as palette, gray or
            # opaque RGBA (a lossless optimiser's, an editor's) is one image, and two palette images of the same
            # indices in other colours are two. Bands are whole rows, so the hash is the whole's. Upright: a photo
            # stored turned (EXIF) and its upright export are one input. Transparency as the model sees it, on
            # ALPHA_BACKGROUND: a cut-out is its export flattened on white, whatever colours it stores under it.
            turned = image.getexif().get(ExifTags.Base.Orientation, 1) not in (0, 1)
            upright = ImageOps.exif_transpose(image) if turned else image
            digest = hashlib.sha256(f"RGB {upright.size}\n".encode())
            for band in _bands(upright):
                plain = band.mode == "RGB" and not band.has_transparency_data  # not a PNG's transparent colour
                digest.update(band.tobytes() if plain else _as_rgb(band).tobytes())
            if whole is not None:  # gray judged at 1/8, looks_gray's own scale for such a JPEG
                return None, digest.hexdigest(), dataclasses.replace(whole, grayscale=looks_gray(image))
            return None, digest.hexdigest(), _header(image) if header else None
    except FileNotFoundError:
        return "file not found", None, None
    except ImageDecodeError as error:  # too many pixels, or broken data found by _header
        return str(error), None, None
    except Image.DecompressionBombError as error:  # an animation frame larger than the image itself
        return f"too many pixels ({error})", None, None
    except UnidentifiedImageError:  # its message names a stream object: useless to a user
        return f"not a readable image ({_unidentified(path)})", None, None
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow raises OSError for truncated data and SyntaxError/ValueError for some malformed headers.
        return f"not a readable image ({type(error).__name__}: {error})", None, None


def _check_png(image: Image.Image, source: Path | bytes | BinaryIO) -> None:
    """ImageDecodeError when ``image``, a PNG decoded from ``source``, fails a chunk's CRC or lacks its end chunk.
    Pillow decodes such a file; TensorFlow's decoder (training's, --predict's) refuses it: so does every path."""
    if image.format != "PNG":
        return
    data = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        with open(data, "rb") if isinstance(data, str | os.PathLike) else contextlib.nullcontext(data) as stream:
            stream.seek(8)  # past the signature, which opening the image checked
            chunks = PngImagePlugin.ChunkStream(stream)
            chunks.verify()  # each chunk's CRC up to the end chunk; no decoding
            chunks.crc(b"IEND", b"")  # the end chunk's own, which Pillow's verify leaves unread and libpng checks
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"the image data is broken ({error})") from error


def _as_rgb(image: Image.Image) -> np.ndarray:
    """The (H, W, 3) uint8 RGB pixels of a loaded image (or band), as the model takes them: 16-bit and float
    images scaled to 8 bits rather than clipped, other modes converted by Pillow; an image with transparency (an
    alpha channel: RGBA, LA, PA, a WebP's; a palette's alpha or transparent entry: PNG's tRNS, GIF's; a PNG's
    transparent colour or gray level) composited onto ``ALPHA_BACKGROUND``, band by band (``_over_background``).
    An opaque one (every alpha 255, or no pixel of the transparent colour) keeps its pixels exactly."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        pixels = np.asarray(image)  # its own type: 2 or 4 bytes a pixel
        scale = 255.0 / 65535.0 if image.mode.startswith("I") else 255.0
        transparent = image.info.get("transparency")  # a 16-bit gray PNG's transparent level (tRNS)
        rgb = np.empty((*pixels.shape, 3), np.uint8)
        rows = max(1, _HASH_BAND_BYTES // (8 * pixels.shape[1]))  # scaled in float64 a band at a time: a 49 MP
        for top in range(0, pixels.shape[0], rows):  # scan took 40 bytes a pixel whole
            band = np.clip(np.rint(pixels[top:top + rows] * scale), 0, 255).astype(np.uint8)[..., None]
            if isinstance(transparent, int):
                band = _over_background(band, np.where(pixels[top:top + rows] == transparent, 0, 255))
            rgb[top:top + rows] = band
        return rgb
    if image.has_transparency_data:  # its RGBA copy (4 bytes a pixel) and the arithmetic's (8) a band at a time
        return _rgb_by_bands(image, 12, _band_over_background)
    if image.width * image.height * 3 <= _HASH_BAND_BYTES:
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    # A band at a time: NumPy takes an image whole through its bytes, copied twice (a 190 MP photo peaked at
    # 1.9 GB past Pillow's 760 MB).
    return _rgb_by_bands(image, 3, lambda band: np.asarray(band if band.mode == "RGB" else band.convert("RGB")))


def _rgb_by_bands(image: Image.Image, pixel_bytes: int, rgb_of: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """The (H, W, 3) uint8 pixels of ``image``, ``rgb_of`` each of its ``_bands(image, pixel_bytes)``."""
    rgb = np.empty((image.height, image.width, 3), np.uint8)
    top = 0
    for band in _bands(image, pixel_bytes):
        rgb[top:top + band.height] = rgb_of(band)
        top += band.height
    return rgb


def _band_over_background(band: Image.Image) -> np.ndarray:
    rgba = np.asarray(band if band.mode == "RGBA" else band.convert("RGBA"))  # a palette's alphas too
    return _over_background(rgba[..., :3], rgba[..., 3])


def _over_background(colours: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 ``colours`` (or (H, W, 1), gray) under ``alpha`` (H, W: 0 transparent, 255 opaque) composited
    onto ``ALPHA_BACKGROUND`` as a browser shows them: ``(colour * alpha + background * (255 - alpha)) / 255``,
    rounded (never a tie: 255 is odd). In 16-bit integers, exact: an opaque pixel keeps its colour, a transparent
    one is the background, whatever colour it stores."""
    weight = alpha.astype(np.uint16)[..., None]
    mixed = colours.astype(np.uint16)
    mixed *= weight  # at most 255 * 255, and with the background's share and the rounding 65,152: within 16 bits
    mixed += ALPHA_BACKGROUND * (255 - weight) + 127
    mixed //= 255
    return mixed.astype(np.uint8)


def _bands(image: Image.Image, pixel_bytes: int = 4) -> Iterator[Image.Image]:
    """``image`` in bands of whole rows, about ``_HASH_BAND_BYTES`` each at ``pixel_bytes`` a pixel: a 100 MP photo is
    never copied whole."""
    rows = max(1, _HASH_BAND_BYTES // (pixel_bytes * image.width))
    if rows >= image.height:  # one band: the image itself, not a copy
        yield image
        return
    for top in range(0, image.height, rows):
        yield image.crop((0, top, image.width, min(image.height, top + rows)))


def image_problem(path: Path | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why ``path`` is not a usable image, or None when it decodes completely (pixel count checked first)."""
    return decode_check(path, max_pixels)[0]


def read_and_check(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[str, str | None, str | None]:
    """``(sha256 of the bytes, problem, pixels)`` of ``path`` from one read of the file (``decode_check`` of its
    bytes, as ``inspect_file`` checks them); an OSError reading it is raised."""
    data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest(), *decode_check(_NamedBytes(data, os.path.basename(path)), max_pixels)


class _NamedBytes(io.BytesIO):
    """File bytes that Pillow's error messages name by the file's name, not a memory address."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __repr__(self) -> str:
        return repr(self.name)


# What an earlier ``inspect_file`` result must have been made with to be taken again: raise the number when a change
# gives some file another problem, pixels or header (or changes ImageHeader's fields); Pillow's decoders count too.
CHECK_VERSION = f"2, Pillow {PIL.__version__}"  # 2: a TIFF or GIF named .jpg is no image read here


def checks_made_with(max_pixels: int) -> str:
    """What a split's record of checks (``config.CHECKS_NAME``) was made with, which a reader must share to take it:
    the check's version and --max-pixels."""
    return f"{CHECK_VERSION}, --max-pixels {max_pixels}"


def read_checks(path: Path, max_pixels: int) -> dict[str, tuple[str, str | None, str | None, ImageHeader | None]]:
    """source -> (sha256, problem, pixels, header) of each file a split recorded at ``path`` with ``max_pixels``
    (``checks_made_with``); none from another check, nor from a record that does not read. A split's re-run and a
    merge into (or from) that split take each file's check from it while its bytes keep that sha256."""
    try:
        record = read_json(path)
        if not isinstance(record, dict) or record.get("checked_with") != checks_made_with(max_pixels):
            return {}
        return {source: (digest, problem, pixels, header and ImageHeader(*header))
                for source, (digest, problem, pixels, header) in record["files"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # damaged: every file is decoded again
        return {}


def inspect_file(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS,
                 known: tuple[str, str | None, str | None, ImageHeader | None] | None = None
                 ) -> tuple[bytes, str | None, str | None, str | None, ImageHeader | None]:
    """(bytes, sha256, problem, pixels, header) of a file from one read (``decode_check``'s problem and pixels);
    ``header`` is None when there is a problem. ``known``: an earlier (sha256, problem, pixels, header) of this file,
    with this ``max_pixels`` and ``CHECK_VERSION``, taken as it is when the bytes still have that sha256 (no decode)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return b"", None, f"cannot be read ({error.strerror or error})", None, None
    digest = hashlib.sha256(data).hexdigest()
    if known is not None and known[0] == digest:
        return data, *known
    problem, pixels, header = _full_check(_NamedBytes(data, os.path.basename(path)), max_pixels)
    return data, digest, problem, pixels, header


# The brands of an ISO media file's "ftyp" box that mark a HEIF photo (an iPhone's HEIC) or, among them, AVIF.
_HEIC_BRANDS = frozenset((b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"))
_AVIF_BRANDS = frozenset((b"avif", b"avis"))


def _unidentified(source: Path | BinaryIO) -> str:
    """Why Pillow found no image in ``source``: it is empty, a broken file of a format read here (by its first
    bytes: a PNG whose chunk before the pixels fails its CRC, say), or of no known image format."""
    if _is_empty(source):
        return "the file is empty"
    try:
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as stream:
                head = stream.read(64)
        else:
            source.seek(0)
            head = source.read(64)
    except (OSError, ValueError):
        head = b""
    if found := format_by_start(head):  # the first bytes of a format read here
        return f"a broken {found[0]} file (its start says {found[0]}, but Pillow cannot read its header)"
    if head[4:8] == b"ftyp":  # the box: its size, "ftyp", the major brand, a version, the compatible brands
        brands = {head[8:12], *(head[at:at + 4] for at in range(16, min(len(head), int.from_bytes(head[:4])), 4))}
        if brands & _AVIF_BRANDS:  # Pillow reads AVIF where it was built with libavif
            if "avif" in features.get_supported_modules():
                return "a broken AVIF file (its start says AVIF, but Pillow cannot read its header)"
            return format_not_read("AVIF")
        if brands & _HEIC_BRANDS:
            return format_not_read("HEIC")
    return "not an image (no known image format)"


def _is_empty(source: Path | BinaryIO) -> bool:
    """True for a file, or a stream, of no bytes."""
    try:
        return os.path.getsize(source) == 0 if isinstance(source, str | os.PathLike) else source.seek(0, 2) == 0
    except (OSError, ValueError):
        return False


def _open(source: Path | bytes | BinaryIO, max_pixels: int, crop_size: int | None = None,
          image_size: int | None = None) -> Image.Image:
    data = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        return open_image(data, max_pixels, crop_size, image_size)
    except ImageDecodeError:  # too many pixels: its message says so already
        raise
    except UnidentifiedImageError as error:
        # Pillow's message names the stream object (<_io.BytesIO object at 0x...>): useless to a user.
        raise ImageDecodeError(_unidentified(data)) from error
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, OSError) and error.errno is not None:  # the system's (permissions), not Pillow's
            raise ImageDecodeError(f"cannot be read ({error.strerror or error})") from error
        raise ImageDecodeError(f"not an image Pillow can read ({error})") from error


def read_header(source: Path | bytes | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS,
                crop_size: int | None = None, gray: bool = True, image_size: int | None = None) -> ImageHeader:
    """Upright size, format and decode route of an image, from its header, and with ``gray`` whether its pixels
    are gray (``looks_gray``: a colour mode's image is decoded, a large JPEG at 1/8). ImageDecodeError when it
    cannot, or has more than ``max_pixels`` pixels as the path decodes it (``open_image``: a large JPEG reduced for a
    resize model of side ``image_size``; with ``crop_size``, as crops mode would enlarge it)."""
    with _open(source, max_pixels, crop_size, image_size) as image:
        _check_png(image, source)
        return _header(image, gray)


def _header(image: Image.Image, gray: bool = True) -> ImageHeader:
    """``read_header``'s answer for an opened (or loaded) image."""
    quiet_pillow()
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError) as error:
        # A PNG keeps its EXIF after the pixels, so reading it reads the data: a truncated file ends here.
        raise ImageDecodeError(f"the image data is broken ({error})") from error
    # Transparency: TensorFlow's decoders drop it (channels=3), so such an image is composited by ``_as_rgb``.
    # A JPEG over TensorFlow's decoder's limit whole (``TF_JPEG_MAX_PIXELS``): on every path, the same pixels.
    needs_pil = (image.format not in TF_DECODABLE_FORMATS or image.mode in _HIGH_BIT_DEPTH_MODES
                 or (image.format == "WEBP" and image.mode != "RGB") or image.has_transparency_data
                 or orientation not in (0, 1) or getattr(image, "n_frames", 1) > 1
                 or (image.format == "JPEG" and image.width * image.height > TF_JPEG_MAX_PIXELS))
    width, height = upright_size(image.size, orientation)
    image_format, quality = format_name(image.format), _jpeg_quality(image)
    frames = getattr(image, "n_frames", 1) if image.format in ANIMATED_FORMATS else 1
    return ImageHeader(width, height, needs_pil, image_format, quality, looks_gray(image) if gray else None, frames)


def looks_gray(image: Image.Image) -> bool:
    """Whether ``image`` (opened or loaded) is gray: a gray mode, or ``gray_pixels`` (a scan saved as RGB, a small
    coloured mark allowed). Decoded to check, band by band (a large JPEG not yet loaded at 1/8 of its sides); a
    gray mode's image too, so that the scan finds its broken data as the decode does: ImageDecodeError."""
    quiet_pillow()  # our limit was checked at opening
    try:
        if (scale := _gray_check_scale(image)) > 1:
            image.draft("RGB", (image.width // scale, image.height // scale))
        image.load()
        if is_grayscale_mode(image.mode):
            return True
        spread = sum(_spread(_as_rgb(band)) for band in _bands(image))
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"the image data is broken ({error})") from error
    return bool(spread <= GRAY_SPREAD * image.width * image.height)


def _gray_check_scale(image: Image.Image) -> int:
    """The reduction ``looks_gray`` decodes an opened image at: 1/8 for a JPEG whose short side keeps
    ``_GRAY_CHECK_SIDE`` pixels at that scale, else 1."""
    return 8 if format_name(image.format) == "JPEG" and min(image.size) >= 8 * _GRAY_CHECK_SIDE else 1


def gray_pixels(pixels: np.ndarray) -> bool:
    """Whether decoded (H, W, 3) uint8 ``pixels`` are gray: their channels' spread averages at most
    ``GRAY_SPREAD`` levels (``looks_gray``'s rule, for an image decoded already)."""
    return bool(_spread(pixels) <= GRAY_SPREAD * pixels.shape[0] * pixels.shape[1])


def _spread(pixels: np.ndarray) -> int:
    """The sum over ``pixels`` (H, W, 3 uint8) of each one's largest minus smallest channel."""
    # Channel by channel: a reduction over the short channel axis took ten times as long (a 512 px image: 10 ms
    # against 0.4), which the scan of every training image and every split pays.
    # And in bands of rows: over a whole 119 MP upload its four temporaries took 480 MB.
    rows = max(1, _HASH_BAND_BYTES // max(1, pixels[0].nbytes))
    total = 0
    for start in range(0, len(pixels), rows):
        band = pixels[start:start + rows]
        red, green, blue = band[..., 0], band[..., 1], band[..., 2]
        largest, smallest = np.maximum(np.maximum(red, green), blue), np.minimum(np.minimum(red, green), blue)
        total += int((largest - smallest).sum(dtype=np.int64))
    return total


def _jpeg_quality(image: Image.Image) -> int | None:
    """The libjpeg quality whose luminance table is nearest ``image``'s (exact for libjpeg, Pillow and
    TensorFlow files); None for other formats."""
    tables = getattr(image, "quantization", None)
    table = tables.get(0) if isinstance(tables, dict) else None
    if table is None or len(table) != 64:
        return None
    distance = np.abs(_QUALITY_TABLES - np.asarray(table, dtype=np.int64)).sum(axis=1)
    return int(distance.argmin()) + 1


def read_headers(paths: Sequence[Path], max_pixels: int = MAX_IMAGE_PIXELS, desc: str = "reading headers",
                 workers: int | None = None, crop_size: int | None = None, gray: bool = True,
                 image_size: int | None = None) -> list[ImageHeader | str]:
    """Each file's ``read_header``, or why it is not a usable image, read in ``workers`` threads (by default
    ``files.reading_workers``)."""
    def read(path: Path) -> ImageHeader | str:
        try:
            return read_header(path, max_pixels, crop_size, gray, image_size)
        except ImageDecodeError as error:
            return str(error)

    paths = list(paths)
    return map_in_threads(lambda chunk: [read(path) for path in chunk], paths, workers or reading_workers(paths), desc)


def load_rgb(source: Path | bytes | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS,
             image_size: int | None = None) -> np.ndarray:
    """Decodes an image into an (H, W, 3) uint8 RGB array, upright (ImageDecodeError if it cannot, or if it has more
    than ``max_pixels`` pixels).

    With ``image_size``, a large JPEG is decoded at 1/``jpeg_scale`` of its size, as TensorFlow's
    ``decode_jpeg(ratio=...)``, and counted so against ``max_pixels`` (``open_image``); 16-bit images are scaled to
    8 bits rather than clipped.
    """
    with _open(source, max_pixels, image_size=image_size) as image:
        _check_png(image, source)
        return _rgb(image, image_size)


def load_rgb_with_header(source: Path | bytes, max_pixels: int = MAX_IMAGE_PIXELS, image_size: int | None = None,
                         crop_size: int | None = None) -> tuple[np.ndarray, ImageHeader]:
    """``load_rgb``'s pixels and ``read_header``'s header (the file's own upright size, where a large JPEG is
    decoded reduced), from one opening: reading a PNG's header decodes it (its EXIF may follow the pixels).

    Gray or not is ``looks_gray``'s answer, as the scan gives it to training and --predict: from these pixels when
    they are decoded at the scale it judges at, else from a decode at that scale (the spread of faint colour noise
    shrinks in a reduced decode, so another scale may answer otherwise).
    """
    with _open(source, max_pixels, crop_size, image_size) as image:
        _check_png(image, source)
        header = _header(image, gray=False)
        same_scale = _gray_check_scale(image) == decode_scale(*image.size, format_name(image.format), image_size)
        pixels = _rgb(image, image_size)
    if same_scale:
        return pixels, dataclasses.replace(header, grayscale=gray_pixels(pixels))
    with _open(source, max_pixels, crop_size, image_size) as image:
        return pixels, dataclasses.replace(header, grayscale=looks_gray(image))


def _rgb(image: Image.Image, image_size: int | None) -> np.ndarray:
    """``load_rgb``'s pixels of an opened image."""
    quiet_pillow()  # _open applied our limit
    try:
        scale = decode_scale(*image.size, format_name(image.format), image_size)
        if scale > 1:
            # draft picks the largest libjpeg scale keeping at least this size: exactly ``scale``.
            image.draft("RGB", (image.width // scale, image.height // scale))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # not a copy of the whole image where it is upright
        return _as_rgb(image)
    except Image.DecompressionBombError as error:  # an animation frame larger than the image itself
        raise ImageDecodeError(f"too many pixels ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"the image data is broken ({error})") from error
