"""tf.data input straight from class folders: scan, decode in parallel, cache, shuffle, batch.

Images come out as float32 RGB 0..255, labels as int32 in ``class_names`` order. TensorFlow is imported
where a pipeline is built: the scan needs none, so a machine without it scans too (``arrays``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from realvsai import images as image_io
from realvsai.cli import default_workers, plural, progress
from realvsai.config import CROP_GRID, MAX_IMAGE_PIXELS
from realvsai.errors import UserError
from realvsai.files import list_images, same_bytes_across, sha256_file
from realvsai.image_stats import ImageFacts
from realvsai.layout import (
    MANIFEST_NAME,
    SPLITS,
    TEST,
    TRAIN,
    VALIDATION,
    alike_names,
    class_folder_of,
    find_class_folders,
    leave_out_masks,
    no_train_folder,
    refuse_unsplit_download,
    subfolders,
    unplaced_rows,
)

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)

# Decoded images are cached in memory when they take less than this; above it, decoded every epoch.
DEFAULT_CACHE_BYTES = 4 * 1024**3
# tf.data decodes one image per core at once (AUTOTUNE). Until it is resized, an image holds about 14 bytes per
# decoded pixel (its uint8 pixels, the float32 centre square, the resize's first pass): 1.5 GB for a 108 MP PNG,
# so a folder of such scans on 16 cores would take over 20 GB. Fewer at once where the largest would pass this.
DECODE_PIXEL_BUDGET = 250_000_000


def input_tensorflow():
    """TensorFlow, which reads the images (tf.data, the JPEG codec) on every Keras backend. Under another backend it
    does nothing else: the GPUs are that backend's, so they are hidden from TensorFlow before its first op, at which
    its CUDA build takes nearly all their memory (JAX then fails to allocate its own). Call it before TensorFlow's
    first op in a process; on TensorFlow it only imports it."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # an op ran already, with the GPUs visible: too late, and nothing to mend now
            logger.debug("TensorFlow started before its GPUs could be hidden from it")
    return tf


@dataclass(frozen=True)
class LabelledImages:
    """The usable images of a folder of class folders, in a fixed order (sorted per class)."""

    files: list[Path]
    labels: list[int]
    class_names: list[str]
    sizes: list[tuple[int, int]]  # (width, height) of each file
    needs_pil: list[bool]  # decode with Pillow (EXIF-rotated, 16-bit, ...) rather than TensorFlow
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why) for broken files
    formats: list[str] = field(default_factory=list)  # Pillow's format name of each file ("JPEG", ...)
    jpeg_qualities: list[int | None] = field(default_factory=list)  # each JPEG's estimated quality, else None
    grayscale: list[bool] = field(default_factory=list)  # whether each file's pixels are gray (images.looks_gray)
    max_pixels: int = MAX_IMAGE_PIXELS  # the limit the files were scanned under, which decoding keeps
    frames: list[int] = field(default_factory=list)  # an animation's frames (images.ImageHeader.frames), else 1

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> dict[str, int]:
        counted = Counter(self.labels)
        return {name: counted.get(index, 0) for index, name in enumerate(self.class_names)}

    def subset(self, indices: Sequence[int]) -> LabelledImages:
        """The images at ``indices``, in that order, with every per-file list cut alike (``skipped`` as it is)."""
        return replace(self, **{item.name: [getattr(self, item.name)[index] for index in indices]
                                for item in fields(self)
                                if item.name not in ("class_names", "skipped", "max_pixels")
                                and getattr(self, item.name)})

    def facts(self) -> list[ImageFacts]:
        """Each file's class, size, format, file size, JPEG quality and whether it is grayscale, for ``image_stats``."""
        formats = self.formats or [""] * len(self)
        qualities = self.jpeg_qualities or [None] * len(self)
        grayscale = self.grayscale or [None] * len(self)
        return [ImageFacts(self.class_names[label], width, height, image_format, path.stat().st_size, quality, gray)
                for path, label, (width, height), image_format, quality, gray
                in zip(self.files, self.labels, self.sizes, formats, qualities, grayscale)]

    @staticmethod
    def join(parts: Sequence[LabelledImages]) -> LabelledImages:
        """``parts``' images (and skipped files) one after the other; the parts share their class names."""
        return LabelledImages(class_names=list(parts[0].class_names), max_pixels=parts[0].max_pixels,
                              **{item.name: [value for part in parts for value in getattr(part, item.name)]
                                 for item in fields(LabelledImages) if item.name not in ("class_names", "max_pixels")})


def scan_images(folder: Path, class_names: Sequence[str] | None = None,
                max_pixels: int = MAX_IMAGE_PIXELS, crop_size: int | None = None, *,
                every_class: bool = False, image_size: int | None = None,
                train: LabelledImages | None = None) -> LabelledImages:
    """The images of ``folder/<Class>/`` with their headers; files without one, or with more than ``max_pixels``
    pixels as the pipeline decodes them (``images.open_image``: with ``crop_size``, once crops mode enlarged them;
    with ``image_size``, a resize model's side, a large JPEG at its reduced decode), are skipped and named.

    ``class_names`` is the label order (None: the sorted sub-folders); the folder may hold no other class
    folder. A class without a readable image (no folder, an empty one, only broken files) is kept, with a
    warning naming it (an evaluation lists it in ``missing_classes``); with ``every_class`` it is a UserError.
    ``train``, for a validation folder, are the training images: a class without validation images that has one
    image in train (one file, or exact copies of one, which a split keeps together) had none to spare, and the error
    says to get more rather than to split again.
    A UserError also if the folder is missing, has a class folder not in ``class_names``, or holds no image.
    """
    folder = Path(folder)
    found = find_class_folders(folder)
    class_names = found if class_names is None else class_names
    folder_of = class_folder_of(class_names, found)
    missing = sorted(name for name, folder_name in folder_of.items() if folder_name not in found)
    extra = sorted(set(found) - set(folder_of.values()))
    if extra:  # other names: a renamed class, or one the model does not know
        details = "; ".join(f"{what} {names}" for what, names in (("missing", missing), ("unexpected", extra)) if names)
        raise UserError(f"{folder} has class folders {sorted(found)}, but {sorted(class_names)} were expected "
                        f"({details}). Rename the folders (or re-split with --rename OLD=NEW) so the names match.")
    not_images: list[tuple[str, str]] = []
    sub_folders: list[str] = []
    candidates = [(path, label) for label, name in enumerate(class_names) if folder_of[name] in found
                  for path in list_images(folder / folder_of[name], skipped=not_images, nested=sub_folders)]
    if not_images := [(path, why) for path, why in not_images if not os.path.basename(path).startswith(".")]:
        # The example an image named without its extension where there is one: its fix is a new name
        example = min(not_images, key=lambda item: ("whose name does not end in" not in item[1], item))
        logger.warning("%s: %s in its class folders %s, left out (e.g. %s: %s)", folder,
                       plural(len(not_images), "file"),
                       "is not an image read here" if len(not_images) == 1 else "are not images read here", *example)
    if nested := [path for sub_folder in sub_folders for path in list_images(Path(sub_folder), recursive=True)]:
        logger.warning("%s: %s in sub-folders of its class folders %s left out: only the images right in a class "
                       "folder are read (move them up to use them; e.g. %s)", folder, plural(len(nested), "image"),
                       "is" if len(nested) == 1 else "are", min(nested).parent)
    label_of = dict(candidates)
    kept, skipped = leave_out_masks(list(label_of))  # as the splitters leave them out
    if skipped:
        logger.warning("%s: %s left out (e.g. %s)", folder, plural(len(skipped), "segmentation mask"),
                       min(path.as_posix() for path, _ in skipped))
    candidates = [(path, label_of[path]) for path in kept]
    results = image_io.read_headers([path for path, _ in candidates], max_pixels, desc=f"checking {folder.name}",
                                    crop_size=crop_size, image_size=image_size)
    files, labels, sizes, needs_pil, formats, qualities, grayscale, frames = [], [], [], [], [], [], [], []
    for (path, label), result in zip(candidates, results):
        if isinstance(result, str):
            logger.warning("skipping %s: %s", path, result)
            skipped.append((path, result))
            continue
        files.append(path)
        labels.append(label)
        sizes.append((result.width, result.height))
        needs_pil.append(result.needs_pil)
        formats.append(result.image_format)
        qualities.append(result.jpeg_quality)
        grayscale.append(result.grayscale)
        frames.append(result.frames)
    if not files:
        nested = next((path for name in class_names if folder_of[name] in found
                       for path in list_images(folder / folder_of[name], recursive=True)
                       if path.parent != folder / folder_of[name]), None)
        if nested is not None:  # a download's own layout: REAL/RealArt/*.jpg
            raise UserError(f"{folder} holds no readable image right in its class folders {list(class_names)}, "
                            f"only in sub-folders of them (e.g. {nested}): an image's class is the folder it is in, "
                            f"so move them up into {folder}{os.sep}<class>{os.sep}.")
        raise UserError(f"{folder} holds no readable image in {list(class_names)}. Check the folder and its files.")
    images = LabelledImages(files, labels, list(class_names), sizes, needs_pil, skipped, formats, qualities,
                            grayscale, max_pixels, frames)
    without = [repr(name) for name, count in images.counts().items() if not count]
    one = len(without) == 1
    classes = f"{'class' if one else 'classes'} {' and '.join(filter(None, [', '.join(without[:-1]), *without[-1:]]))}"
    train_files = {name: [path for path, label in zip(train.files, train.labels) if train.class_names[label] == name]
                   for name, count in images.counts().items() if not count} if train is not None else {}
    lone = {name: files for name, files in train_files.items() if _one_image(files)}
    if without and every_class and len(lone) == len(without):
        them = "it" if one else "them"
        copies = " (exact copies of one image, as a split keeps them)" if max(map(len, lone.values())) > 1 else ""
        raise UserError(f"{classes} {'has' if one else 'have'} no readable image in {folder} and 1 "
                        f"{'' if one else 'each '}in train{copies}: too few to share between training and "
                        f"validation. Add images of {them} to the dataset you split and split it again, or merge "
                        f"{them} into a split that has more (DataMerger.py).")
    if without and every_class:
        raise UserError(f"{classes} {'has' if one else 'have'} no readable image in {folder}: add some there, or "
                        "re-split the dataset so that every class has some.")
    if without:
        logger.warning("%s has no readable image of %s: counted as %s without images (an evaluation lists %s in "
                       "missing_classes)", folder, classes, "a class" if one else "classes", "it" if one else "them")
    return images


def _one_image(files: Sequence[Path]) -> bool:
    """Whether ``files`` are one image: one file, or exact copies of one (the same bytes). Reads no further than a
    second content, so a class of thousands costs two reads."""
    if not files:
        return False
    first = sha256_file(files[0])
    return all(sha256_file(path) == first for path in files[1:])


def split_folders(data_dir: Path) -> list[Path]:
    """The splits of ``data_dir`` that ``scan_splits`` reads (missing ones too): what a training claims for reading,
    with all inside them (``files.working_on``), and not ``data_dir`` itself, where a split into ``data_dir/art`` may
    go ahead meanwhile."""
    return [Path(data_dir) / split for split in SPLITS]


def scan_splits(data_dir: Path, crop_size: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
                image_size: int | None = None, digests: dict[Path, str] | None = None
                ) -> tuple[LabelledImages, LabelledImages, LabelledImages | None]:
    """The train, validation and (when there is one) test images of ``data_dir``, in train's class order;
    ``crop_size`` for crops mode, ``image_size`` for a resize model, and ``max_pixels`` (``scan_images``).
    ``digests``, when given, gets the sha256 of each file the check for identical files read, so that a caller
    that needs some of them does not read those files again.

    Raises:
        UserError: without train/ or validation/, with fewer than two classes, or with a class without training
            or validation images (the best epoch, the stop rules and the decision threshold are chosen on
            validation: they would not see it). A class without test images is evaluated as one (a warning).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir} is not an existing folder. Check --data: the split folder that holds train/ and "
                        "validation/ (DataSplitD1.py or DataSplitD2.py makes one).")
    if not (data_dir / TRAIN).is_dir():
        raise no_train_folder(data_dir, "Run DataSplitD1.py or DataSplitD2.py first, or point --data at the folder "
                                        "that holds train/ and validation/")
    refuse_unsplit_download(data_dir, "trained")  # a download's train/ and test/: the split command that fits
    if not (data_dir / VALIDATION).is_dir():
        # A split of one image a class places each in train and makes no validation folder: no split makes one
        sizes = [len(list_images(folder)) for folder in subfolders(data_dir / TRAIN)]
        if sizes and max(sizes) <= 1:
            raise UserError(f"{data_dir} has no {VALIDATION} folder, and at most 1 image a class in {TRAIN}: too "
                            "few to share between training and validation. Add images of each class to the dataset "
                            "you split and split it again (2 a class at least; 10 or more give numbers worth "
                            "reading).")
        raise UserError(f"{data_dir} has no {VALIDATION} folder: the best model and the stop rules are chosen on "
                        "it. Split off one with DataSplitD1.py or DataSplitD2.py.")
    if unplaced := unplaced_rows(data_dir):
        raise UserError(f"{data_dir} is not a finished split: its {MANIFEST_NAME} lists "
                        f"{plural(len(unplaced), 'file')} that {'is' if len(unplaced) == 1 else 'are'} not there "
                        f"(e.g. {unplaced[0].path}): run the "
                        "split or merge that made it again to finish it (what it placed is kept), or, if you removed "
                        f"them yourself, remove their rows from {MANIFEST_NAME} (DataDeleter.py removes an image's "
                        "row with it).")
    train = scan_images(data_dir / TRAIN, max_pixels=max_pixels, crop_size=crop_size, every_class=True,
                        image_size=image_size)
    if len(train.class_names) < 2:
        raise UserError(f"{data_dir / TRAIN} has one class folder ({train.class_names[0]}); a classifier needs "
                        "at least two.")
    if alike := alike_names(train.class_names):
        raise UserError(f"{data_dir / TRAIN} has class folders {alike} that differ only in letter case or accent "
                        "encoding: they would be learnt as separate classes (and are one folder on macOS and "
                        "Windows). Move the images of each such class into one folder, in every split, then train "
                        "again.")
    validation = scan_images(data_dir / VALIDATION, train.class_names, max_pixels, crop_size, every_class=True,
                             image_size=image_size, train=train)
    test = (scan_images(data_dir / TEST, train.class_names, max_pixels, crop_size, image_size=image_size)
            if (data_dir / TEST).is_dir() else None)
    _warn_of_identical_files(data_dir, {TRAIN: train, VALIDATION: validation, **({TEST: test} if test else {})},
                             {} if digests is None else digests)
    return train, validation, test


def _warn_of_identical_files(data_dir: Path, splits: dict[str, LabelledImages], digests: dict[Path, str]) -> None:
    """Warns of files with the same bytes under two classes (a class folder copied into another: learnt under both
    labels, the model cannot be right on both) and of validation or test files identical to training files (their
    numbers then count images the model trains on): the split scripts leave both out, a split made by hand may hold
    them. Only files that share their size with a file of another split or class are read, under a progress bar;
    ``digests`` gets their sha256."""
    keys = [(split, class_name) for split, images in splits.items() for class_name in images.class_names]
    groups = [[path for path, label in zip(images.files, images.labels) if label == index]
              for images in splits.values() for index in range(len(images.class_names))]
    # Nearly all of CIFAKE's 243,579 files share a size with another class's: seconds of reading.
    alike = same_bytes_across(groups, "checking for identical files", digests)
    classes: list[tuple[Path, Path]] = []  # (the file, one of another class with its bytes)
    trained: dict[str, list[tuple[Path, Path]]] = {}  # held-out split -> (its file, the training file)
    for members in ([(*keys[number], path) for number, path in content] for content in alike):
        for _split, class_name, path in members[1:]:
            if other := next((other for _, name, other in members if name != class_name), None):
                classes.append((path, other))
        if first_trained := next((path for split, _, path in members if split == TRAIN), None):
            for split, _, path in members:
                if split != TRAIN:
                    trained.setdefault(split, []).append((path, first_trained))

    def shown(path: Path) -> str:
        return Path(os.path.relpath(path, data_dir)).as_posix() if path.is_relative_to(data_dir) else str(path)

    def example(pairs: list[tuple[Path, Path]]) -> str:
        path, other = min(pairs)
        return f"e.g. {shown(path)} and {shown(other)}"

    if classes:
        logger.warning("%s in %s %s under two classes, with the same bytes as a file of another class (%s): the "
                       "model learns %s under both labels and cannot be right on both. Keep each image in the folder "
                       "of its true class only (DataSplitD1.py and DataSplitD2.py leave such images out).",
                       plural(len(classes), "file"), data_dir, "is" if len(classes) == 1 else "are", example(classes),
                       "it" if len(classes) == 1 else "them")
    for split, pairs in trained.items():
        logger.warning("%s %s the same bytes as a training file (%s): the model trains on %s, so its %s numbers "
                       "count images it has learnt. Split with DataSplitD1.py or DataSplitD2.py, which keep such "
                       "images in one split only.", plural(len(pairs), f"{split} file"),
                       "has" if len(pairs) == 1 else "have", example(pairs), "it" if len(pairs) == 1 else "them",
                       split)


def data_digest(data_dir: Path, *splits: LabelledImages) -> str:
    """Each file's path under ``data_dir``, label and size, in order: what every worker must read alike."""
    digest = hashlib.sha256(json.dumps(splits[0].class_names).encode("utf-8"))
    for images in splits:
        for path, label, size in zip(images.files, images.labels, images.sizes):
            # surrogateescape: a name that is not UTF-8 (its bytes as os.fsdecode keeps them); any other, as before
            digest.update(f"{os.path.relpath(path, data_dir)}\0{label}\0{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _fill_cache(decoded: tf.data.Dataset, count: int) -> None:
    """Reads ``decoded`` (a cached dataset of ``(pixels, label)``, ``count`` of them) to its end, which fills its
    cache: every dataset built on it reads the pixels from memory from then on. Under a progress bar."""
    with progress(None, total=count, desc="decoding", unit="image") as bar:
        for labels in decoded.map(lambda pixels, label: label).batch(1024).as_numpy_iterator():
            bar.update(len(labels))


def _resize_weights(input_length: tf.Tensor, output_length: int) -> tf.Tensor:
    """``(output_length, input_length)`` weights of the antialiased triangle filter, as ``model._resize_weights``."""
    import tensorflow as tf

    scale = tf.cast(input_length, tf.float32) / float(output_length)
    support = tf.maximum(scale, 1.0)
    centres = (tf.range(output_length, dtype=tf.float32) + 0.5) * scale
    positions = tf.range(tf.cast(input_length, tf.float32)) + 0.5
    weights = tf.nn.relu(1.0 - tf.abs(positions[None, :] - centres[:, None]) / support)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def resize_to_square(images: tf.Tensor, size: int) -> tf.Tensor:
    """The centre square of ``images`` ``(..., height, width, channels)``, resized to size x size in float32 (the
    square cut before it is cast, so a large uint8 image is never held whole as floats).

    The input pipeline's copy of the model's ``model.resize_to_square`` in TensorFlow ops: tf.data runs
    TensorFlow on every Keras backend, where a ``keras.ops`` function would run JAX's ops and fail. Not
    ``keras.layers.Resizing(crop_to_aspect_ratio=True, antialias=True)``: TensorFlow's antialiased kernel
    is up to 4e-4 off the exact weights (measured, 60 -> 32 px), while these agree with the model's to 1e-4.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = tf.cast(images[..., top:top + side, left:left + side, :], tf.float32)
    weights = _resize_weights(side, size)
    rows = tf.einsum("oh,...hwc->...owc", weights, square)
    return tf.einsum("pw,...owc->...opc", weights, rows)


def cover(image: tf.Tensor, size: int) -> tf.Tensor:
    """Float ``image`` (height, width, 3) enlarged (bilinear) so its short side is at least ``size``: to
    ``images.cover_size``, which the pixel limit measures."""
    import tensorflow as tf

    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    scale = tf.maximum(1.0, size / tf.cast(tf.minimum(height, width), tf.float32))
    new_size = tf.cast(tf.math.ceil(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32)
    return tf.cond(scale > 1.0, lambda: tf.image.resize(image, new_size), lambda: image)


def cut_covered(image: tf.Tensor, size: int, cut: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """``cut(image)`` as float32, ``image`` (uint8) first enlarged by ``cover`` where its short side is under
    ``size``: a large photo is cut before it is converted, so only the crops' pixels become float32."""
    import tensorflow as tf

    shape = tf.shape(image)
    return tf.cond(tf.minimum(shape[0], shape[1]) < size,
                   lambda: cut(cover(tf.cast(image, tf.float32), size)),
                   lambda: tf.cast(cut(image), tf.float32))


def grid_crops(image: tf.Tensor, size: int) -> tf.Tensor:
    """``(CROP_GRID**2, size, size, 3)`` float32 native-resolution crops, evenly spaced from edge to edge, in
    row order."""
    import tensorflow as tf

    def cut(image: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(image)
        tops, lefts = (image_io.grid_offsets(length, size) for length in (shape[0], shape[1]))
        return tf.stack([image[top:top + size, left:left + size, :] for top in tops for left in lefts])

    return cut_covered(image, size, cut)


def _decode_with_pil(path: bytes | np.ndarray, image_size: np.ndarray, max_pixels: np.ndarray) -> np.ndarray:
    path = path.item() if isinstance(path, np.ndarray) else path  # eager numpy_function: a 0-d array
    return image_io.load_rgb(Path(os.fsdecode(path)),
                             image_size=int(image_size) or None, max_pixels=int(max_pixels))


def decode_rgb(path: tf.Tensor, use_pil: tf.Tensor, image_size: int | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Tensor:
    """The ``(height, width, 3)`` uint8 pixels of the image file ``path``, upright, inside a tf.data map.

    Pixel for pixel what ``images.load_rgb`` gives: TensorFlow's decoders, or Pillow where ``use_pil``
    says they differ or TensorFlow's cannot decode it whole (``images.TF_JPEG_MAX_PIXELS``), refusing more than
    ``max_pixels``, as the scan did. With ``image_size``, a large JPEG
    decodes at 1/2, 1/4 or 1/8 (``images.jpeg_scale``).
    """
    import tensorflow as tf

    def with_tensorflow() -> tf.Tensor:
        contents = tf.io.read_file(path)

        # decode_image decodes JPEGs with libjpeg's fast integer DCT, which is up to 5 levels off
        # (17 for progressive files) from Pillow's accurate one; INTEGER_ACCURATE gives Pillow's
        # pixels exactly, baseline, progressive and CMYK alike, at every ratio.
        def jpeg(ratio: int) -> Callable[[], tf.Tensor]:
            return lambda: tf.io.decode_jpeg(contents, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")

        def decode_jpeg() -> tf.Tensor:
            if not image_size:
                return jpeg(1)()
            short_side = tf.reduce_min(tf.io.extract_jpeg_shape(contents)[:2])
            # jpeg_scale in the graph: the number of scales 2, 4, 8 that keep enough pixels picks the branch.
            enough = [(short_side + scale - 1) // scale >= image_io.JPEG_SCALE_HEADROOM * image_size
                      for scale in sorted(image_io.JPEG_SCALES)]
            branch = tf.add_n([tf.cast(kept, tf.int32) for kept in enough])
            return tf.switch_case(branch, [jpeg(1), *(jpeg(scale) for scale in sorted(image_io.JPEG_SCALES))])

        return tf.cond(tf.io.is_jpeg(contents), decode_jpeg,
                       lambda: tf.io.decode_image(contents, channels=3, expand_animations=False))

    def with_pillow() -> tf.Tensor:
        arguments = [path, tf.constant(image_size or 0), tf.constant(max_pixels, tf.int64)]
        return tf.numpy_function(_decode_with_pil, arguments, tf.uint8, stateful=False)

    return tf.ensure_shape(tf.cond(use_pil, with_pillow, with_tensorflow), [None, None, 3])


def kept_size(images: LabelledImages, image_size: int) -> tuple[int, int] | None:
    """The one (width, height) of ``images``, which the pipeline leaves as it is (the model resizes), or None
    when sizes differ or the images are large: those are resized here, as mixed sizes are.

    Kept only while an image's uint8 pixels take no more memory than the float32 ``image_size`` square that
    resizing here gives (a square image up to twice that side): small images, such as CIFAKE's 32 px for a
    224 px model, are cached small and enlarged by the model. A larger one would be cached large and reach
    the model whole, as float32 (32 phone photos of 4032x3024 px: 4.7 GB a batch); a JPEG that decodes
    reduced (``images.jpeg_scale``) is always above the bound.
    """
    sizes = set(images.sizes)
    if len(sizes) != 1:
        return None
    width, height = next(iter(sizes))
    return (width, height) if width * height <= 4 * image_size**2 else None  # 1 byte a value against 4


def file_dataset(images: LabelledImages, *, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """``(path, label, use_pil)`` of every file: in file order, or in a new seeded order each epoch. Paths
    travel as the bytes the file system holds, so a name that is not UTF-8 is read too."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant([os.fsencode(path) for path in images.files], tf.string), tf.constant(images.labels, tf.int32),
         tf.constant(images.needs_pil, tf.bool)))  # the types spelled out: an empty list would be float32
    return dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True) if shuffle else dataset


def decode_parallelism(images: LabelledImages, image_size: int, crops: bool = False) -> int:
    """How many of ``images`` ``make_dataset`` decodes at once: AUTOTUNE (one per core), or fewer, so that as many
    of the largest, as decoded (a JPEG reduced for ``image_size``, but whole in ``crops`` mode), hold at most
    ``DECODE_PIXEL_BUDGET`` pixels."""
    import tensorflow as tf

    largest = 0
    for (width, height), image_format in zip(images.sizes, images.formats or [""] * len(images)):
        largest = max(largest, math.prod(image_io.decoded_size(width, height, image_format,
                                                                None if crops else image_size)))
    if largest * default_workers() <= DECODE_PIXEL_BUDGET:
        return tf.data.AUTOTUNE
    return max(1, DECODE_PIXEL_BUDGET // largest)


def make_dataset(
    images: LabelledImages,
    *,
    batch_size: int,
    image_size: int,
    shuffle: bool = False,
    seed: int = 0,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    augment: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
    crops: str | None = None,
    first_epoch: int | None = None,
    drop_remainder: bool = False,
    decode_ahead: bool = True,
) -> tf.data.Dataset:
    """Batches of ``(float32 images 0..255, int32 labels)`` read from ``images``' files.

    Args:
        image_size: the side to resize to when the images differ in size or are large (``kept_size``).
        shuffle: reshuffle every epoch (seeded); False keeps the files' order.
        seed: seeds the shuffle, the random crops and ``augment``'s seeds.
        cache_bytes: the decoded images are cached in memory, for every pass, when they take at most this
            (uint8, or float32 where resized here); above it (0: always), each pass decodes them again.
        augment: ``augment(images, seed)`` on every batch, with an int64 seed pair per batch and epoch.
        crops: None resizes the whole image; else native-resolution crops: "random" one per image and
            epoch (training), "centre" the middle one of ``grid_crops`` (validation), "grid" all of them.
        first_epoch: None gives one pass (repeat it for more, each reshuffled); a number gives the
            endless passes ``first_epoch``, ``first_epoch + 1``, ..., each shuffled, cropped and augmented
            from ``(seed, epoch)`` alone: a run resumed at epoch k reads what the uninterrupted run read.
        drop_remainder: leave out each pass's last batch when it is smaller than ``batch_size``.
        decode_ahead: where the images are cached and shuffled, decode them into the cache now, under a progress
            bar: a pass's shuffle draws from all of them, so its first batch would wait for every image to decode
            with nothing on the screen (22 s for 215,613 CIFAKE images on 2 cores). False where the dataset is
            rebuilt from its graph before it is read (MirroredStrategy), with a cache of its own this would not fill,
            and where it is never read (a phase resumed as it ended: ``fitting.fit_phases``).
    """
    tf = input_tensorflow()
    uniform = None if crops else kept_size(images, image_size)
    width, height = uniform or (image_size, image_size)
    pixels = sum(w * h for w, h in images.sizes) if crops else len(images) * width * height
    cached = pixels * (3 if crops or uniform else 12) <= cache_bytes  # uint8 RGB, or float32 when resized here

    def decode(path: tf.Tensor, label: tf.Tensor, pil: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pixels = decode_rgb(path, pil, None if crops else image_size, images.max_pixels)
        if crops:
            return pixels, label
        if not uniform:
            return resize_to_square(pixels, image_size), label
        return tf.ensure_shape(pixels, [height, width, 3]), label  # uint8: a quarter of the cache

    # Uncached, the file names are shuffled before decoding, so no buffer ever holds decoded images
    # (50,000 of them at 224 px would take 30 GB); cached, the decoded images are shuffled.
    files = file_dataset(images)
    parallel = decode_parallelism(images, image_size, crops=bool(crops))
    decoded = None
    if cached:  # one cache, shared by every pass (and every epoch of first_epoch's passes)
        decoded = files.map(decode, num_parallel_calls=parallel, deterministic=True)
        decoded = decoded.ignore_errors(log_warning=True).cache()
        if shuffle and decode_ahead:
            _fill_cache(decoded, len(images))

    def one_pass(shuffle_seed, crop_seeds: tf.data.Dataset, augment_seeds: tf.data.Dataset) -> tf.data.Dataset:
        dataset = files if decoded is None else decoded
        if shuffle:
            dataset = dataset.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
        if decoded is None:
            dataset = dataset.map(decode, num_parallel_calls=parallel, deterministic=True)
            # A file changed or broken after the scan (which reads only headers) must not end a run of hours.
            dataset = dataset.ignore_errors(log_warning=True)
        if crops == "random":
            dataset = tf.data.Dataset.zip((dataset, crop_seeds)).map(
                lambda item, crop_seed: (cut_covered(item[0], image_size, lambda image: tf.image.stateless_random_crop(
                    image, [image_size, image_size, 3], crop_seed)), item[1]), num_parallel_calls=tf.data.AUTOTUNE)
        elif crops:
            middle = CROP_GRID**2 // 2
            dataset = dataset.map(lambda pixels, label: (
                grid_crops(pixels, image_size)[middle] if crops == "centre" else grid_crops(pixels, image_size),
                label), num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        if augment is not None:
            dataset = tf.data.Dataset.zip((dataset, augment_seeds)).map(
                lambda batch, batch_seed: (augment(tf.cast(batch[0], tf.float32), batch_seed), batch[1]),
                num_parallel_calls=tf.data.AUTOTUNE)
        elif uniform:
            dataset = dataset.map(lambda pixels, label: (tf.cast(pixels, tf.float32), label),
                                  num_parallel_calls=tf.data.AUTOTUNE)
        return dataset

    if first_epoch is None:
        dataset = one_pass(seed, *(tf.data.Dataset.random(seed=stream_seed, rerandomize_each_iteration=True).batch(2)
                                   for stream_seed in (seed + 1, seed)))
    else:
        def epoch_pass(epoch: tf.Tensor) -> tf.data.Dataset:
            # Sets the seed of this function's graph only (it is being traced). shuffle() checks the graph's
            # seed and its own as Python values, which fails for a tensor seed under a graph seed of 0
            # (keras.utils.set_random_seed(0)); our own seeds alone decide the numbers.
            tf.random.set_seed(1)
            key = tf.constant(seed, tf.int64) * 2**20 + epoch  # one per (seed, epoch), for 2**20 epochs

            def seeds(stream: int) -> tf.data.Dataset:  # [key, 2n + stream]: crops and augmentation apart
                return tf.data.Dataset.counter().map(lambda n: tf.stack([key, 2 * n + stream]))

            return one_pass(key, seeds(1), seeds(0))

        dataset = tf.data.Dataset.counter(first_epoch).flat_map(epoch_pass)
    return dataset.prefetch(tf.data.AUTOTUNE)
