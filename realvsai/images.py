"""Decoding any image a user has into the RGB uint8 array the model takes (no TensorFlow here).

Training decodes ordinary JPEG/PNG/BMP/GIF/WebP files with TensorFlow's decoders (JPEGs with the
accurate DCT, which gives Pillow's pixels exactly); the files those decoders would get wrong
(EXIF-rotated, 16-bit, other formats) and every upload in the app go through ``load_rgb`` instead,
so both sides see the same pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from realvsai.files import MAX_IMAGE_PIXELS, TooManyPixelsError, open_image

# Formats tf.io.decode_image reads exactly as Pillow does (for 8-bit, unrotated images).
TF_DECODABLE_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "WEBP"})
_EXIF_ORIENTATION = 0x0112
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message says why, in words for the user."""


@dataclass(frozen=True)
class ImageHeader:
    """What the header tells about a file without decoding its pixels."""

    width: int
    height: int
    needs_pil: bool  # True when TensorFlow's decoders would not give the same pixels as load_rgb


def _open(source: Path | bytes | BinaryIO, max_pixels: int) -> Image.Image:
    data = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        return open_image(data, max_pixels)
    except TooManyPixelsError as error:
        raise ImageDecodeError(str(error)) from error
    except UnidentifiedImageError as error:
        # Pillow's message names the stream object (<_io.BytesIO object at 0x...>): useless to a user.
        raise ImageDecodeError("not an image (no known image format)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"not an image Pillow can read ({error})") from error


def read_header(source: Path | bytes | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageHeader:
    """Upright size and decode route of an image, from its header alone.

    Raises:
        ImageDecodeError: if it is not an image, or has more than ``max_pixels`` pixels.
    """
    with _open(source, max_pixels) as image:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        needs_pil = (
            image.format not in TF_DECODABLE_FORMATS
            or image.mode in _HIGH_BIT_DEPTH_MODES
            or orientation not in (0, 1)
            or getattr(image, "n_frames", 1) > 1
        )
        if orientation in (5, 6, 7, 8):  # a quarter turn: the upright image is transposed
            return ImageHeader(image.height, image.width, needs_pil)
        return ImageHeader(image.width, image.height, needs_pil)


def load_rgb(source: Path | bytes | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decodes an image into an (H, W, 3) uint8 RGB array, upright.

    EXIF orientation is applied; grayscale, palette, CMYK and alpha images become RGB (alpha is
    dropped, as TensorFlow's decoders drop it); 16-bit images are scaled to 8 bits rather than
    clipped; an animation gives its first frame.

    Raises:
        ImageDecodeError: if the data is not a complete image or has too many pixels.
    """
    image = _open(source, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _open applied our limit
            image.load()
            image = ImageOps.exif_transpose(image)
        if image.mode in _HIGH_BIT_DEPTH_MODES:
            pixels = np.asarray(image, dtype=np.float64)
            scale = 255.0 / 65535.0 if image.mode.startswith("I") else 255.0
            gray = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=-1)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as error:  # an animation frame larger than the image itself
        raise ImageDecodeError(f"too many pixels ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"the image data is broken ({error})") from error
    finally:
        image.close()
