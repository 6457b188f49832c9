"""App memory on large uploads: a phone-sized JPEG decoded reduced (libjpeg's scaled DCT) vs at full size.

The app's predict path from the uploaded bytes (``inference.classify_uploads``: decode with Pillow, EXIF
applied, prepare, preview, the run's predict path) classifies --uploads copies of one large JPEG in one
call, as when several photos are dropped on the page at once. Each variant runs in a fresh subprocess,
so one's peak cannot hide in another's: the model (ResNet101, random weights, 224 px) is built and
warmed up on a small photo first, and the growth of the peak resident memory (``ru_maxrss``) past that
point is the upload path's. "full" is the path before reduced decoding (``images.JPEG_SCALE_HEADROOM``
out of reach: the JPEG decoded at its own size). The upload path holds one full-size image at a time, so
its growth should not depend on --uploads. The target: less memory, not slower; probabilities within 1e-2
of each other (reduced decoding gives other pixels than decoding whole and resizing).

The photo is a --size JPEG (default 6000x4000, a 24 MP phone or camera photo) made from smooth colour
with detail noise, or your own file via --image. The default run writes benchmarks/results/app_memory.json,
any other only where --results says.

Example:
    python benchmarks/bench_app_memory.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._bench import Destination, add_results_option, existing, results_destination, run_child  # noqa: E402
from realvsai.cli import format_table, plural, positive_int, run_main  # noqa: E402
from realvsai.errors import UserError  # noqa: E402

VARIANTS = ("reduced", "full")  # (today, before)


def size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as a pair of ints."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 6000x4000") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides must be at least 1")
    return width, height


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=None, help="classify this JPEG instead (default: a made one)")
    parser.add_argument("--size", type=size, default=(6000, 4000),
                        help="WIDTHxHEIGHT of the made JPEG (default: 6000x4000)")
    parser.add_argument("--uploads", type=positive_int, nargs="+", default=[1, 4],
                        help="how many copies of the photo one call classifies (default: %(default)s)")
    parser.add_argument("--image-size", type=positive_int, default=224, help="model input side (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed calls per variant (default: %(default)s)")
    add_results_option(parser, "app_memory")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "UPLOADS", "PHOTO"), help=argparse.SUPPRESS)
    return parser


def make_photo(width: int, height: int, seed: int = 0) -> bytes:
    """JPEG bytes (quality 90) of a smooth colour field with detail noise, so it decodes as a photo would."""
    import numpy as np
    from PIL import Image

    rows, columns = np.ogrid[0:height, 0:width]
    pixels = np.empty((height, width, 3), np.uint8)
    noise = np.random.default_rng(seed)
    gradients = (columns * 255 // width, rows * 255 // height, (rows + columns) * 127 // (width + height))
    for channel, base in enumerate(gradients):
        pixels[..., channel] = np.clip(base + noise.integers(-24, 25, (height, width)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def measure(variant: str, uploads: int, photo_path: Path, image_size: int, repeats: int) -> dict:
    """One variant in this process: seconds per call, the peak memory and its growth past the warmed-up model."""
    import keras
    import numpy as np
    from PIL import Image

    from realvsai import images as image_io
    from realvsai import inference
    from realvsai.model import build_model

    if variant == "full":  # the path before reduced decoding: no scale keeps enough pixels
        image_io.JPEG_SCALE_HEADROOM = 2**20
    photo = photo_path.read_bytes()
    keras.utils.set_random_seed(0)  # the same random weights in every variant's process
    model = build_model(2, image_size=image_size, weights=None, augment="none")
    classifier = inference.Classifier(model, ["FAKE", "REAL"], image_size)
    small = io.BytesIO()
    Image.new("RGB", (640, 480), (120, 130, 140)).save(small, "JPEG")
    for count in sorted({1, uploads}):  # every batch shape the timed calls use, compiled before the baseline
        inference.classify_uploads(classifier, [("small.jpg", small.getvalue())] * count)
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds, probabilities = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        results = inference.classify_uploads(classifier, [(f"photo{index}.jpg", photo) for index in range(uploads)])
        seconds.append(time.perf_counter() - started)
        errors = [result.error for result in results if result.error]
        if errors:
            raise UserError(f"the app refused the photo: {errors[0]}. Give --image a JPEG the app accepts.")
        probabilities = np.stack([result.probabilities for result in results])
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds_per_call": statistics.median(seconds), "calls": seconds, "peak_rss_mib": peak_mib,
            "rss_before_uploads_mib": baseline_mib, "upload_peak_mib": peak_mib - baseline_mib,
            "probabilities": probabilities[0].tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.child:
        variant, uploads, photo = args.child
        return run_main(lambda: print(json.dumps(measure(variant, int(uploads), Path(photo), args.image_size,
                                                         args.repeats))))
    destination = results_destination(parser, args, "app_memory", ("image", "size", "uploads", "image_size"))
    return run_main(lambda: compare(args, destination))


def compare(args: argparse.Namespace, destination: Destination) -> None:
    """Each variant at each --uploads in a process of its own; their figures and ratios."""
    from PIL import Image, UnidentifiedImageError

    if args.image is not None:
        existing(args.image, "--image", "a JPEG to classify")

    with tempfile.TemporaryDirectory() as folder:
        photo = args.image or Path(folder) / "photo.jpg"
        if args.image is None:
            photo.write_bytes(make_photo(*args.size))
        try:
            with Image.open(photo) as image:
                width, height = image.size
        except UnidentifiedImageError:
            raise UserError(f"{photo} is not an image. Give --image a JPEG.") from None
        results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                               "python": platform.python_version()},
                   "photo": {"width": width, "height": height, "bytes": photo.stat().st_size},
                   "image_size": args.image_size, "repeats": args.repeats, "uploads": {},
                   "command": shlex.join(["python", "benchmarks/bench_app_memory.py", *sys.argv[1:]])}
        rows = []
        for uploads in args.uploads:
            measured = {}
            for variant in VARIANTS:
                output = run_child([sys.executable, __file__, "--image-size", str(args.image_size), "--repeats",
                                    str(args.repeats), "--child", variant, str(uploads), str(photo)],
                                   f"the {variant} variant's process")
                measured[variant] = json.loads(output.strip().splitlines()[-1])
                rows.append((f"{plural(uploads, 'upload')}, {variant}", f"{measured[variant]['seconds_per_call']:.2f}",
                             f"{measured[variant]['peak_rss_mib']:.0f}", f"{measured[variant]['upload_peak_mib']:.0f}"))
            now, then = (measured[variant] for variant in VARIANTS)
            measured["reduced / full"] = ratios = {
                "time_ratio": now["seconds_per_call"] / then["seconds_per_call"],
                "upload_memory_ratio": now["upload_peak_mib"] / then["upload_peak_mib"],
                "max_probability_difference": max(abs(a - b) for a, b in zip(now["probabilities"],
                                                                             then["probabilities"]))}
            rows.append((f"{plural(uploads, 'upload')}, reduced / full", f"{ratios['time_ratio']:.2f}x", "",
                         f"{ratios['upload_memory_ratio']:.3f}x"))
            results["uploads"][str(uploads)] = measured
    print(f"{width}x{height} JPEG ({results['photo']['bytes'] / 2**20:.1f} MiB) through the app's upload path, "
          f"ResNet101 at {args.image_size} px, {os.cpu_count()} CPUs")
    print(format_table(("upload path", "seconds per call (median)", "peak RSS MiB", "of it the uploads'"), rows))
    destination.write(results)


if __name__ == "__main__":
    sys.exit(main())
