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
default) with detail noise added, or your own file via --image.

Example:
    python benchmarks/bench_app.py --repeats 15
"""

from __future__ import annotations

import argparse
import io
import json
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

from realvsai.cli import format_table  # noqa: E402
from realvsai.files import atomic_write_text, list_images  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "cifake-mini"
RESULTS = REPO / "benchmarks" / "results" / "app.json"
PHOTO_SIZE = (1024, 768)  # (width, height)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder whose first image becomes the test photo (default: %(default)s)")
    parser.add_argument("--image", type=Path, default=None, help="time this photo instead (default: none)")
    parser.add_argument("--backbone", default="resnet101", help="(default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=224, help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls of each side (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls of each side first (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    return parser.parse_args(argv)


def make_photo(data: Path, image: Path | None, seed: int = 0) -> bytes:
    """JPEG bytes of the photo to classify (quality 90, as a camera or phone would save it)."""
    if image is not None:
        return image.read_bytes()
    sources = list_images(data, recursive=True) if data.is_dir() else []
    if sources:
        with Image.open(sources[0]) as source:
            pixels = np.asarray(source.convert("RGB").resize(PHOTO_SIZE, Image.BICUBIC), np.float32)
    else:
        ys, xs = np.mgrid[0:PHOTO_SIZE[1], 0:PHOTO_SIZE[0]]
        pixels = np.stack([xs / PHOTO_SIZE[0], ys / PHOTO_SIZE[1], 0.5 + 0 * xs], -1).astype(np.float32) * 255
    # Fine detail, so the JPEG costs what a real photo costs to decode.
    pixels += np.random.default_rng(seed).normal(0, 12, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    from realvsai import inference
    from realvsai.model import build_model

    photo = make_photo(args.data, args.image)
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
        "photo": {"width": int(decoded.shape[1]), "height": int(decoded.shape[0]), "bytes": len(photo)},
        "repeats": args.repeats, "median_seconds": medians, "decode_median_seconds": statistics.median(decode_times),
        "ratio_app_over_bare": ratio, "ratio_app_over_traced_bare": traced_ratio,
        "max_probability_difference": agreement,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "tensorflow": tf.__version__},
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
