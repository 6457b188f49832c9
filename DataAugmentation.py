"""Step 4 (optional): makes augmented copies of every training image, for MoveAugmentedImages.py.

    DATA/train/<Class>/cat.jpg   ->   DATA/augmented_train/<Class>/aug_cat_0.jpg ... aug_cat_9.jpg

The copies:
- only train is ever augmented (never validation or test)
- each keeps its image's size, unless --size N makes it N x N: the centre square, as the model sees
  an image (N x N at most --max-pixels)
- broken images are skipped with a warning naming them

Re-runs:
- names derive from the source, so running again makes only what is missing
- copies already moved into train (aug_* files, and where DATA/augmented-copies.csv exists, those
  it lists) count as made and are not augmented again
- a file under a copy's name counts as that copy when sources.csv records it with its sha256, or
  when it holds the very bytes this run makes (a run cut off before recording it)
- any other file there is never replaced nor recorded: it is kept and named, and the run ends with
  exit status 1 once the other copies are written

Each copy's random transformation is drawn from its own seed (--seed, its source's class and name,
its number):
- the same command gives byte-identical files
- neither --copies nor --batch-size changes what is done to a copy, so a higher --copies adds the
  copies a fresh run would have made (in batches of another shape, a pixel may round one level
  apart now and then: floating point)

What it records:
- DATA/augmented_train/sources.csv: each copy's source, with both files' sha256 (rows are added on
  every run), so MoveAugmentedImages.py can refuse a copy whose source is no longer a training image
- DATA/augmented_train/settings.json, before the first copy is written: what the copies depend on
  (--preset, --seed, --size, --jpeg-quality) and --copies (beside copies made before settings were
  recorded, only once a run found every one of them its own)
- a run with other settings over those copies is refused (exit 1) before it writes anything, except
  a higher --copies, which adds the missing copies
- once MoveAugmentedImages.py has moved them into train, the record is DATA/augmented-settings.json,
  and the same holds for new copies beside them

Presets:
- classic = ImageDataGenerator's rotation 20, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip,
  nearest fill, composed into one affine map per copy and interpolated once
- detector = whole-pixel crop-and-pad, flip, rare mild blur and JPEG re-compression (no resampling;
  see the README for why that matters to a real-vs-AI detector)
For detectors, prefer augmenting online during training to writing copies.

Example:
    python DataAugmentation.py --data data --copies 10 --preset classic --seed 42
"""

from __future__ import annotations

import glob
import logging
import os
import shlex
import time
from argparse import ArgumentTypeError, Namespace
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from realvsai import images
from realvsai.cli import (
    ascii_number,
    bounded,
    ctrl_c_deferred,
    exit_script,
    format_table,
    integer,
    make_parser,
    nonempty_path,
    plural,
    positive_int,
    progress,
    run_main,
    setup_logging,
    tensorflow_logs_filtered,
)
from realvsai.config import (
    LIMITS,
    MAX_IMAGE_PIXELS,
    PRESETS,
    TrainConfig,
    command_path,
    deleter_command,
    flag_name,
    shell_path,
)
from realvsai.errors import UserError
from realvsai.files import working_on
from realvsai.layout import AUGMENTED_TRAIN, TRAIN, name_key, refuse_split_folder, refuse_unsplit_download
from realvsai.moving import (
    COPY_PREFIX,
    COPY_SETTINGS,
    CopyPlan,
    changed_copy_settings,
    dataset_folders,
    has_unrecorded_copies,
    moved_copies,
    plan_copies,
    record_copy_settings,
    record_copy_sources,
    remove_copy_record_temporaries,
)

logger = logging.getLogger("realvsai.augment")

# The offline presets: training's, less "none", which would only write identical copies.
OFFLINE_PRESETS = tuple(preset for preset in PRESETS if preset != "none")


@dataclass(frozen=True)
class AugmentConfig:
    """The defaults of DataAugmentation.py (the README's)."""

    data: Path = TrainConfig.data
    copies: int = 10
    preset: str = "classic"
    seed: int = TrainConfig.seed
    size: str = "native"
    batch_size: int = 32
    jpeg_quality: int = 95
    split: str = TRAIN
    max_pixels: int = MAX_IMAGE_PIXELS


# Copies of one image worth making (and planning: each copy's name is planned before the first is written).
MAX_COPIES = 1_000


def image_size(text: str) -> int | None:
    """argparse type for --size: ``native`` (None) or a positive whole number of pixels."""
    if text.lower() == "native":
        return None
    digits = ascii_number(text)  # a number in other digits is told so, not "neither 'native' nor ..."
    try:
        return positive_int(digits)
    except ArgumentTypeError:
        raise ArgumentTypeError(f"{text!r} is neither 'native' nor a whole number of pixels") from None


def jpeg_quality(text: str) -> int:
    """argparse type for a JPEG quality, ``images.MIN_JPEG_QUALITY`` to ``images.MAX_JPEG_QUALITY``."""
    try:
        value = int(ascii_number(text))
    except ValueError:
        raise ArgumentTypeError(f"{text!r} is not a JPEG quality: give a whole number between "
                                f"{images.MIN_JPEG_QUALITY} and {images.MAX_JPEG_QUALITY}") from None
    if not images.MIN_JPEG_QUALITY <= value <= images.MAX_JPEG_QUALITY:
        raise ArgumentTypeError(f"{text} is not a JPEG quality between {images.MIN_JPEG_QUALITY} and "
                                f"{images.MAX_JPEG_QUALITY}")
    return value


def train_split(text: str) -> str:
    """argparse type for --split: train, in any letter case; augmenting another split is bad usage."""
    if text.lower() != TRAIN:
        raise ArgumentTypeError(f"refusing to augment {text!r}: only the train split is augmented (copies of "
                                "validation or test images would inflate their scores). Leave out --split, or use "
                                "--split train.")
    return TRAIN


def parse_args(argv: list[str] | None = None) -> Namespace:
    defaults = AugmentConfig()
    parser = make_parser(__doc__)
    parser.add_argument("--data", type=nonempty_path, default=defaults.data,
                        help="dataset folder holding train/<Class>/")
    parser.add_argument("--copies", type=positive_int, default=defaults.copies,
                        help=f"augmented copies per image (at most {MAX_COPIES:,})")
    parser.add_argument("--preset", choices=OFFLINE_PRESETS, default=defaults.preset,
                        help="classic: the original notebook's ImageDataGenerator settings; detector: keeps the pixel "
                             "texture a real-vs-AI detector relies on (both under Presets above)")
    parser.add_argument("--seed", type=integer, default=defaults.seed, help="same seed, same files")
    parser.add_argument("--size", type=image_size, default=defaults.size,
                        help="'native' keeps each image's size; N first takes each image's centre square at N x N, as "
                             "the model does")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                        help="images of one size augmented together, all copies each (large images: capped by "
                             "memory); no copy changes with it")
    parser.add_argument("--jpeg-quality", type=jpeg_quality, default=defaults.jpeg_quality,
                        help="quality of the written JPEG files")
    parser.add_argument("--split", type=train_split, default=defaults.split,
                        help="the split to augment: train, the only one (a copy in validation or test would "
                             "change what they measure)")
    parser.add_argument("--max-pixels", type=bounded(int, LIMITS["max_pixels"]), default=defaults.max_pixels,
                        help="images with more pixels, counted whole (a JPEG too), are skipped (decompression bombs); "
                             f"detector makes no copy over {images.TF_JPEG_MAX_PIXELS:,} pixels (TensorFlow's JPEG "
                             "limit): give --size")
    args = parser.parse_args(argv)
    if args.copies > MAX_COPIES:
        parser.error(f"--copies {args.copies} is over {MAX_COPIES:,} copies of each image; give fewer (copies of "
                     "one image differ by their transformations alone)")
    if args.size is not None and args.size * args.size > args.max_pixels:
        # The guard the sources get: a copy is decoded, augmented and encoded as a source image is (--size 9,000 on
        # 32 px sources peaks at 4.1 GB, the float32 squares the resize makes; 13.3 GB before copies were banded).
        parser.error(f"--size {args.size} makes copies of {args.size * args.size:,} pixels, over --max-pixels "
                     f"{args.max_pixels:,}; give a smaller --size (or a higher --max-pixels, if the machine has the "
                     "memory)")
    if args.preset == "detector" and args.size is not None and args.size * args.size > images.TF_JPEG_MAX_PIXELS:
        parser.error(f"--size {args.size} makes copies of {args.size * args.size:,} pixels, more than the detector "
                     f"preset can re-compress (TensorFlow's JPEG codec decodes at most {images.TF_JPEG_MAX_PIXELS:,} "
                     "pixels); give a smaller --size, or --preset classic")
    return args


def copy_settings(args: Namespace) -> dict[str, object]:
    """The settings recorded with the copies (``moving.COPY_SETTINGS``: what they depend on besides their sources,
    and how many there are) of ``args``, as their flags take them (``size``: "native" or pixels). A run with others
    would mix its copies with the earlier ones under the same names; only --copies may grow: the copies there stay,
    the new ones are added, and each image has what the summary says."""
    return {name: "native" if name == "size" and args.size is None else getattr(args, name)
            for name in COPY_SETTINGS}


def refuse_other_settings(data_dir: Path, settings: dict[str, object]) -> None:
    """``UserError`` naming the recorded and the given settings where augmented_train, or train once they are moved
    there, holds copies made with other ``settings`` (``moving.changed_copy_settings``)."""
    folder, changed = changed_copy_settings(data_dir, settings)
    if changed:
        recorded = " ".join(f"{flag_name(name)} {old}" for name, (old, _) in changed.items())
        given = " ".join(f"{flag_name(name)} {new}" for name, (_, new) in changed.items())
        remedy = (f"delete that folder ({deleter_command(folder)})" if name_key(folder.name) == AUGMENTED_TRAIN
                  else f"delete the copies there ({delete_copies_command(data_dir, folder)})")
        raise UserError(
            f"{folder} holds copies made with {recorded}, not {given}; nothing was written. Run again with "
            f"{recorded} to complete them, or {remedy} to make copies with the new settings."
        )


def leave_out_copies_too_large_to_recompress(plan: CopyPlan) -> None:
    """Moves the images whose copies of their own size the detector preset cannot make into ``plan.broken``, each
    named in a warning that says why and what to do: its JPEG re-compression is TensorFlow's, whose decoder makes
    at most ``images.TF_JPEG_MAX_PIXELS`` pixels (an image of more is decoded by Pillow, as everywhere)."""
    limit, kept = images.TF_JPEG_MAX_PIXELS, []
    for image in plan.images:
        if image.width * image.height <= limit:
            kept.append(image)
            continue
        reason = (f"{image.width}x{image.height} pixels is more than the detector preset can re-compress (TensorFlow's "
                  f"JPEG codec decodes at most {limit:,} pixels); give --size N for N x N copies, use --preset "
                  f"classic, or downscale it, e.g. {images.downscale_command(limit)}")
        logger.warning("skipping %s: %s", image.source, reason)
        plan.broken.append((image.source, reason))
    plan.images = kept


def delete_copies_command(data_dir: Path, train_dir: Path) -> str:
    """A shell command deleting the copies moved into ``train_dir``, and no training image named aug_* too
    (``moving.MovedCopies``): each of those is spared by name."""
    moved = moved_copies(data_dir)
    spared = [path for path in sorted(train_dir.glob(f"*/{COPY_PREFIX}*")) if not moved.holds(path)]
    sparing = [word for path in spared for word in ("!", "-path", glob.escape(command_path(path)))]
    return shlex.join(["find", command_path(train_dir), "-mindepth", "2", "-maxdepth", "2", "-type", "f",
                       "-name", f"{COPY_PREFIX}*", *sparing, "-delete"])


def augment(args: Namespace) -> None:
    """Plans, makes and writes the copies; prints the summary."""
    refuse_split_folder(args.data)
    refuse_unsplit_download(args.data, "written")
    started = time.perf_counter()
    settings = copy_settings(args)
    refuse_other_settings(args.data, settings)  # before planning reads every header
    # Copies there without a record of their settings are each compared with this run's, which records its
    # settings only once it found every one of them to be its own.
    unrecorded = has_unrecorded_copies(dataset_folders(args.data)[1])
    plan = plan_copies(args.data, args.copies, max_pixels=args.max_pixels, verify=unrecorded)
    if args.preset == "detector" and args.size is None:
        leave_out_copies_too_large_to_recompress(plan)
    remove_copy_record_temporaries(args.data)  # what a killed run left
    if not plan.images and not plan.broken:
        raise UserError(f"{plan.train_dir} has no images to augment. Put the training images in its class folders.")
    if plan.not_images:
        path, reason = plan.not_images[0]
        logger.warning("%s in train %s this script reads (e.g. %s: %s): skipped",
                       plural(len(plan.not_images), "file"),
                       "is not an image" if len(plan.not_images) == 1 else "are not images", path, reason)
    if plan.masks:
        logger.warning("%s in train left out (e.g. %s: %s)", plural(len(plan.masks), "segmentation mask"),
                       *plan.masks[0])
    if not any(target for image in plan.images for target in image.targets):
        already_there = sum(len(image.targets) for image in plan.images)
        print_summary(args, plan, written=0, already_there=already_there, seconds=time.perf_counter() - started)
        return

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: hide its CUDA probing chatter
    # TensorFlow: loaded only once there is work to do, which takes seconds without a bar
    logger.info("loading TensorFlow to build the augmentation (%s)", args.preset)
    from realvsai.augmentation import build_augmentation
    from realvsai.offline_augmentation import CopyReport, plan_batches, write_augmented_copies

    layers = build_augmentation(args.preset, seed=args.seed)
    batches = plan_batches(plan.images, args.seed, image_size=args.size, batch_size=args.batch_size)
    if not unrecorded:
        record_copy_settings(plan.output_dir, settings)
    report = CopyReport()
    try:
        to_make = sum(len(targets) for batch in batches for targets in batch.targets)
        with progress(None, total=to_make, desc="augmenting", unit="copy") as bar:
            write_augmented_copies(batches, layers, image_size=args.size, jpeg_quality=args.jpeg_quality,
                                   on_copies_done=bar.update, report=report, max_pixels=args.max_pixels)
    finally:  # also on Ctrl-C: the copies written so far keep their sources, so the move takes them
        with ctrl_c_deferred():  # and a Ctrl-C while they are recorded waits for the record
            record_copy_sources(plan, args.data, made=report.made)
    made = {os.path.normpath(path) for path in report.made}
    if unrecorded and not report.in_the_way and all(os.path.normpath(path) in made
                                                    for path in plan.output_dir.glob(f"*/{COPY_PREFIX}*")):
        record_copy_settings(plan.output_dir, settings)
    for source in report.undecodable:
        logger.warning("skipping %s: not a decodable image (TensorFlow could not decode it)", source)
    for path in report.in_the_way:
        logger.warning("kept %s: a file that is not a copy this run makes has its name, so that copy was not "
                       "written", path)
    existing = sum(target is None for image in plan.images for target in image.targets)
    print_summary(args, plan, written=report.written, already_there=existing + report.already_there,
                  undecodable=report.undecodable, in_the_way=len(report.in_the_way),
                  seconds=time.perf_counter() - started)
    if report.in_the_way:
        # MoveAugmentedImages.py would take those files for copies: the user sorts them out first.
        raise UserError(
            f"{plural(len(report.in_the_way), 'file')} in {plan.output_dir}: named like a copy, but not one "
            "(listed above; kept as found). Move each out of that folder (or delete it if it is a copy of an "
            "earlier run with other settings) and run the same command again."
        )


def print_summary(args: Namespace, plan: CopyPlan, written: int, already_there: int,
                  undecodable: Sequence[Path] = (), in_the_way: int = 0, seconds: float = 0.0) -> None:
    per_class: dict[str, list[int]] = {}
    for image in plan.images:
        per_class.setdefault(image.class_name, [0, 0])[0] += 1
    # Images whose header was broken (or over the pixel limit) never got planned; those that failed to decode did,
    # so they move from the images column to the skipped one.
    for source in undecodable:
        per_class[source.parent.name][0] -= 1
    for source in [source for source, _ in plan.broken] + list(undecodable):
        per_class.setdefault(source.parent.name, [0, 0])[1] += 1
    rows = [(name, images, broken) for name, (images, broken) in sorted(per_class.items())]
    print(format_table(("class", "images", "skipped"), rows))
    size = "native size" if args.size is None else f"{args.size}x{args.size}"
    # MoveAugmentedImages.py removes the augmented_train it emptied: copies made then are in train.
    gone = not written and already_there and not plan.output_dir.is_dir()
    print(
        f"Wrote {plural(written, 'copy', 'copies')} ({args.copies} per image, {args.preset}, {size})"
        + ("" if gone else f" to {plan.output_dir}")
        + f" in {seconds:.1f} s; {already_there:,} already made{' and moved into train' if gone else ''} (skipped); "
        f"{plural(len(plan.broken) + len(undecodable), 'image')} skipped (broken, or over the pixel limit: each "
        "named above); "
        f"{plural(plan.earlier_copies, 'earlier copy', 'earlier copies')} (aug_*) in train not augmented."
        + (f" {plural(in_the_way, 'other file')} in the way of a copy kept, "
           f"{'that copy' if in_the_way == 1 else 'those copies'} not written." if in_the_way else "")
    )
    if in_the_way:  # training now would miss the copies not written: the error line says what to do
        return
    if written or any(plan.output_dir.glob(f"*/{COPY_PREFIX}*")):  # copies wait in augmented_train
        print(f"Next: python MoveAugmentedImages.py --data {shell_path(args.data)}")
    elif already_there:  # every copy was moved into train already
        print(f"Next: python ModelTraining.py --data {shell_path(args.data)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)

    def body() -> None:
        with working_on([args.data], "DataAugmentation.py"):
            augment(args)

    with tensorflow_logs_filtered(args.quiet):
        return run_main(body)


if __name__ == "__main__":
    exit_script(main())
