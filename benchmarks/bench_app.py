"""App latency: classifying one uploaded photo vs the bare model call on the same image.

The app's side is its whole predict path from the uploaded bytes: ``inference.classify_uploads``
decodes the JPEG (Pillow, EXIF applied), resizes it to the model's image size with the model's
own Resizing layer, makes the preview and calls the model through the run's predict path
(``run.Predictor``: ``model.predict`` at fixed batch shapes). The bare side is ``model(x, training=False)``
on the already-decoded float32 tensor of the original photo (the model resizes it inside). A third side
calls the same model through a traced ``tf.function`` on that tensor: the stricter baseline, since eager
Keras pays a per-op dispatch that ``model.predict``'s compiled call does not, so app / traced is what
decoding and resizing cost. Memory on large uploads: ``bench_app_memory.py``. All use
the same ResNet101 (random weights) at image size 224 on this machine's CPU; the sides alternate,
after warm-up calls, and medians are reported with their ratios (the target: app / bare <= 1.5).

The photo is a 1024x768 JPEG made by upscaling the first image of --data (a CIFAKE picture by
default; a made colour field, "synthetic", where the default folder is missing) with detail noise added, or
your own file via --image; app.json records which (``photo.source``). The default run writes
benchmarks/results/app.json, any other only where --results says.

Example:
    python benchmarks/bench_app.py --repeats 15
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks._bench import Destination, add_results_option, existing, results_destination  # noqa: E402
from realvsai.cli import format_table, positive_int, run_main  # noqa: E402
from realvsai.errors import UserError  # noqa: E402
from realvsai.files import list_images  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifake-mini"
PHOTO_SIZE = (1024, 768)  # (width, height)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help=f"folder whose first image becomes the test photo (default: {DEFAULT_DATA}, or a made "
                             "picture where it is missing)")
    parser.add_argument("--image", type=Path, default=None, help="time this photo instead (default: none)")
    parser.add_argument("--backbone", default="resnet101", help="(default: %(default)s)")
    parser.add_argument("--image-size", type=positive_int, default=224, help="(default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=15,
                        help="timed calls of each side (default: %(default)s)")
    parser.add_argument("--warmup", type=positive_int, default=3,
                        help="untimed calls of each side first (default: %(default)s)")
    add_results_option(parser, "app")
    return parser


def photo_source(data: Path | None, image: Path | None) -> Path | None:
    """The file the photo is made from (``image``, or the first image of ``data``), or None for a made picture,
    which only a missing default folder gives: a --data or --image that does not exist is a UserError."""
    if image is not None:
        return existing(image, "--image", "a photo to time")
    if data is None and not DEFAULT_DATA.is_dir():
        return None
    folder = existing(data or DEFAULT_DATA, "--data", "a folder of images")
    sources = list_images(folder, recursive=True) if folder.is_dir() else []
    if not sources:
        raise UserError(f"{folder} holds no images. Give --data a folder of images, or --image a photo.")
    return sources[0]


def make_photo(source: Path | None, as_it_is: bool, seed: int = 0) -> bytes:
    """JPEG bytes of the photo to classify (quality 90, as a camera or phone would save it): ``source`` itself
    when ``as_it_is``, else ``source`` (or, where None, a colour field) upscaled with detail noise."""
    if as_it_is:
        return source.read_bytes()
    if source is not None:
        with Image.open(source) as opened:
            pixels = np.asarray(opened.convert("RGB").resize(PHOTO_SIZE, Image.BICUBIC), np.float32)
    else:
        ys, xs = np.mgrid[0:PHOTO_SIZE[1], 0:PHOTO_SIZE[0]]
        pixels = np.stack([xs / PHOTO_SIZE[0], ys / PHOTO_SIZE[1], 0.5 + 0 * xs], -1).astype(np.float32) * 255
    # Fine detail, so the JPEG costs what a real photo costs to decode.
    pixels += np.random.default_rng(seed).normal(0, 12, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    destination = results_destination(parser, args, "app", ("data", "image", "backbone", "image_size"))
    return run_main(lambda: measure(args, destination))


def measure(args: argparse.Namespace, destination: Destination) -> None:
    source = photo_source(args.data, args.image)
    photo = make_photo(source, as_it_is=args.image is not None)
    import tensorflow as tf

    from realvsai import inference
    from realvsai.model import build_model

    decoded, _ = inference.decode_upload(photo)
    model = build_model(2, image_size=args.image_size, backbone=args.backbone, weights=None, augment="none")
    classifier = inference.Classifier(model, ["FAKE", "REAL"], args.image_size)
    bare_input = tf.constant(decoded[None].astype(np.float32))

    def app_side() -> np.ndarray:
        return inference.classify_uploads(classifier, [("photo.jpg", photo)])[0].probabilities

    def bare_side() -> np.ndarray:
        return model(bare_input, training=False).numpy()[0]

    traced = tf.function(lambda batch: model(batch, training=False),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])

    def traced_side() -> np.ndarray:
        return traced(bare_input).numpy()[0]

    sides = {"app (bytes -> decode + resize + model)": app_side, "bare model(x, training=False)": bare_side,
             "bare model, traced tf.function": traced_side}
    for _ in range(args.warmup):
        for side in sides.values():
            side()
    agreement = float(np.max(np.abs(app_side() - bare_side())))
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, side in sides.items():  # alternated, so drifting machine load hits both sides alike
            started = time.perf_counter()
            side()
            times[name].append(time.perf_counter() - started)
    decode_times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        inference.decode_upload(photo)
        decode_times.append(time.perf_counter() - started)

    medians = {name: statistics.median(values) for name, values in times.items()}
    app_name, bare_name, traced_name = list(sides)
    ratio = medians[app_name] / medians[bare_name]
    traced_ratio = medians[app_name] / medians[traced_name]
    rows = [(name, f"{medians[name] * 1000:.1f}", f"{min(times[name]) * 1000:.1f}", f"{max(times[name]) * 1000:.1f}")
            for name in sides]
    rows.append(("  of which: decode the JPEG", f"{statistics.median(decode_times) * 1000:.1f}",
                 f"{min(decode_times) * 1000:.1f}", f"{max(decode_times) * 1000:.1f}"))
    print(f"{args.backbone} at {args.image_size} px, {decoded.shape[1]}x{decoded.shape[0]} JPEG "
          f"({len(photo) / 1024:.0f} KB), {args.repeats} alternated calls per side, {os.cpu_count()} CPUs")
    print(format_table(["side", "median ms", "min ms", "max ms"], rows))
    print(f"ratio app / bare: {ratio:.2f} (target <= 1.5); app / traced bare: {traced_ratio:.2f}; "
          f"largest probability difference app vs bare {agreement:.1e}")

    result = {
        "backbone": args.backbone, "image_size": args.image_size,
        "photo": {"source": str(source) if source is not None else "synthetic", "width": int(decoded.shape[1]),
                  "height": int(decoded.shape[0]), "bytes": len(photo)},
        "repeats": args.repeats, "median_seconds": medians, "decode_median_seconds": statistics.median(decode_times),
        "ratio_app_over_bare": ratio, "ratio_app_over_traced_bare": traced_ratio,
        "max_probability_difference": agreement,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "tensorflow": tf.__version__},
    }
    destination.write(result)


if __name__ == "__main__":
    sys.exit(main())
