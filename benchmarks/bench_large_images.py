"""Large photos through the input pipeline: JPEGs decoded reduced (libjpeg's scaled DCT) vs at full size,
and crops mode's crops cut before vs after the photo is converted to float32.

``realvsai.data.make_dataset`` (decode, resize to --image-size, batch; no cache, so every pass
decodes) over a folder of class folders of large JPEGs, at each --image-size: images/s (median of
--repeats passes after a warm-up pass) and the peak memory of the process (``ru_maxrss``), each
variant in a fresh subprocess so one's peak cannot hide in another's. "full" is the path before
reduced decoding: ``images.JPEG_SCALE_HEADROOM`` out of reach, every JPEG decoded at its own size.
"crops" is crops mode (``crops="grid"``, as ``--predict`` and ``--evaluate`` read a crops model's images:
each photo decoded at its own size, 3x3 crops of --image-size cut from it); "crops, converted whole" is
the path before ``data.cut_covered``: the whole photo converted to float32 before the crops are cut.
"all at once" is the path before ``data.decode_parallelism``: one image decoded per core at once whatever its
size; with --scans COUNT, the data is COUNT made 12000x9000 PNGs (108 MP scans, which nothing decodes reduced),
and only --variants "reduced" and "all at once" are worth running on them.
With --photos COUNT, DataAugmentation.py instead (``--copies 2`` per --presets, native size, as QA ran it) on COUNT
made 4000x3000 JPEGs (12 MP phone photos): peak RSS and wall time of today's writer beside the path before
``offline_augmentation.MAX_BATCH_PIXELS`` fell to 1 << 22 (two such copies a batch), decoded images waited as uint8
and a batch was rounded ``ROUNDING_PIXELS`` at a time; each in its own process, the copies' bytes compared.

With --huge, DataAugmentation.py (``--copies 2 --seed 42 --max-pixels 200,000,000``, native size) instead on a made
16000x11900 JPEG (190 MP: the default --max-pixels, 120,000,000, refuses it on this path, which decodes it whole)
with each preset, and the detector preset also on a 15000x11900 one (178.5 MP: that preset skips an image over
TensorFlow's JPEG limit, 178,956,970 pixels), each in its own process: peak RSS, wall time and the copies' sha256.
With --whole-too, also the whole-image path before ``offline_augmentation.BANDED_PIXELS`` (every layer on the
whole image in float32, decoded ahead by tf.data, the copies queued for the writers by count alone), which needs
about 14 GB for the 190 MP photo and 15 GB for the 178.5 MP one.

With --phone, each path that reads an image instead, on made 200 MP phone photos (16320x12240 JPEGs, sequential and
progressive) and a 12000x12000 one, each path and limit in its own process: the pixel limit's answer, wall time and
the peak RSS past the imports, under the default --max-pixels (a sequential JPEG counted at the pixels each path
decodes: ``images.limit_scale``) and under 300,000,000 (everything whole within it: what a user had to give before).

Reads ../shared/datasets/real-or-ai-photos (162 JPEGs, short side about 800-2,100 px) by default;
without it the script says so and exits 0 (a --data that does not exist is an error). The default data and
sizes write benchmarks/results/large_images.json; any other run writes only where --results says.

Examples:
    python benchmarks/bench_large_images.py
    python benchmarks/bench_large_images.py --scans 8 --image-sizes 224 --repeats 1 --variants reduced "all at once" \
        --results benchmarks/results/large_scans.json
    python benchmarks/bench_large_images.py --photos 4 --results benchmarks/results/augmentation_memory.json
    python benchmarks/bench_large_images.py --phone --results benchmarks/results/phone_photos.json
    python benchmarks/bench_large_images.py --huge --whole-too --results benchmarks/results/huge_augmentation.json
"""

from __future__ import annotations

import argparse
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
from realvsai.cli import format_table, positive_int, run_main  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "real-or-ai-photos"
VARIANTS = ("reduced", "full", "crops", "crops, converted whole", "all at once")
# --phone: the made photos (name: width, height, progressive) and the paths that read an image, for a 224 px model.
PHONE_PHOTOS = {"200 MP": (16320, 12240, False), "200 MP progressive": (16320, 12240, True),
                "144 MP": (12000, 12000, False)}
PHONE_PATHS = ("app, resize", "app, crops", "training's scan, resize", "tf.data decode, resize",
               "tf.data decode, crops", "split check")
RAISED_LIMIT = 300_000_000
# --huge: the made photos (name: width, height) and what DataAugmentation.py makes of them, under HUGE_LIMIT.
HUGE_PHOTOS = {"190 MP": (16000, 11900), "178.5 MP": (15000, 11900)}
HUGE_CASES = (("190 MP", "classic"), ("190 MP", "detector"), ("178.5 MP", "detector"))
HUGE_LIMIT = 200_000_000
PAIRS = (("reduced", "full"), ("crops", "crops, converted whole"), ("reduced", "all at once"))  # (today, before)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder of class folders of large JPEGs (default: %(default)s)")
    parser.add_argument("--image-sizes", type=positive_int, nargs="+", default=[224, 64],
                        help="model input sides to measure (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per batch (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed passes per variant (default: %(default)s)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS[:4]),
                        help="pipelines to measure (default: %(default)s)")
    parser.add_argument("--scans", type=positive_int, metavar="COUNT",
                        help="measure COUNT made 12000x9000 PNGs (108 MP scans) instead of --data")
    parser.add_argument("--photos", type=positive_int, metavar="COUNT",
                        help="augment COUNT made 4000x3000 JPEGs with DataAugmentation.py, today vs before")
    parser.add_argument("--phone", action="store_true",
                        help="measure every path that reads an image on made 200 MP phone photos instead")
    parser.add_argument("--huge", action="store_true",
                        help="augment made 190 and 178.5 MP JPEGs with DataAugmentation.py instead")
    parser.add_argument("--whole-too", action="store_true",
                        help="with --huge: also the whole-image path before banding (needs about 15 GB of memory)")
    parser.add_argument("--presets", nargs="+", choices=("detector", "classic"), default=["detector", "classic"],
                        help="with --photos: the augmentation presets to measure (default: %(default)s)")
    add_results_option(parser, "large_images")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "IMAGE_SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--augment-child", nargs=4, metavar=("VARIANT", "PRESET", "DATA", "MAX_PIXELS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--phone-child", nargs=3, metavar=("PATH", "FILE", "LIMIT"), help=argparse.SUPPRESS)
    return parser


def measure(data: Path, variant: str, image_size: int, batch_size: int, repeats: int) -> dict:
    """One variant in this process: images/s per pass and the peak resident memory."""
    import tensorflow  # noqa: F401  (loaded before the baseline: realvsai.data imports it only when a pipeline is made)

    from realvsai import data as data_module
    from realvsai import images as image_io

    if variant == "full":
        # The path before reduced decoding: no scale keeps enough pixels, so every JPEG decodes at its own size.
        image_io.JPEG_SCALE_HEADROOM = 2**20
    if variant == "all at once":  # the path before decode_parallelism: one image per core, whatever its size
        data_module.DECODE_PIXEL_BUDGET = float("inf")
    if variant == "crops, converted whole":
        import tensorflow as tf

        def cut_converted_whole(image, size, cut):  # the path before cut_covered: the whole image in float32
            return cut(data_module.cover(tf.cast(image, tf.float32), size))
        data_module.cut_covered = cut_converted_whole
    crops = "grid" if variant.startswith("crops") else None
    images = data_module.scan_images(data, crop_size=image_size if crops else None)
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rates = []
    for _ in range(repeats + 1):  # the first pass warms up (traces the graph, fills the page cache)
        dataset = data_module.make_dataset(images, batch_size=batch_size, image_size=image_size, cache_bytes=0,
                                           crops=crops)
        start = time.perf_counter()
        count = sum(int(batch.shape[0]) for batch, _ in dataset)
        rates.append(count / (time.perf_counter() - start))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # TensorFlow alone takes most of the process's memory; the growth past it is the pipeline's.
    return {"images": len(images), "images_per_second": statistics.median(rates[1:]), "passes": rates[1:],
            "peak_rss_mib": peak_mib, "rss_before_pipeline_mib": baseline_mib,
            "pipeline_peak_mib": peak_mib - baseline_mib}


def make_scans(count: int) -> Path:
    """A folder of two class folders of ``count`` 12000x9000 RGB PNGs (108 MP: A3 at 1200 dpi), in the temporary
    folder, made once."""
    import numpy as np
    from PIL import Image

    folder = Path(tempfile.gettempdir()) / f"realvsai-bench-scans-{count}"
    for number in range(count):
        path = folder / ("a" if number % 2 else "b") / f"scan{number}.png"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = np.linspace(0, 255, 9000, dtype=np.uint8)[:, None, None]
            pixels = np.broadcast_to(rows, (9000, 12000, 3)).copy()
            pixels[::97, :, number % 3] = 255  # lines, so each scan differs
            Image.fromarray(pixels).save(path, compress_level=1)
    return folder


def make_photos(count: int) -> Path:
    """A folder ``train/`` of two class folders of ``count`` 4000x3000 JPEGs (12 MP, a phone's), made once."""
    import numpy as np
    from PIL import Image

    folder = Path(tempfile.gettempdir()) / f"realvsai-bench-photos-{count}"
    rows, columns = np.mgrid[0:3000, 0:4000]
    for number in range(count):
        path = folder / "train" / ("REAL" if number % 2 else "FAKE") / f"photo{number}.jpg"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.stack([columns * 255 // 4000, rows * 255 // 3000, (columns + rows + 500 * number) % 256], -1)
            noise = np.random.default_rng(number).integers(-20, 20, pixels.shape)  # texture, as a photo has
            Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
    return folder


def make_phone_photos() -> dict[str, Path]:
    """``PHONE_PHOTOS`` as JPEGs (quality 90, 4:2:0, as a phone saves them: smooth colours and a fine noise, about
    34 MB each at 200 MP) in the temporary folder, made once."""
    return {name: made_photo("realvsai-bench-phone", name, width, height, progressive)
            for name, (width, height, progressive) in PHONE_PHOTOS.items()}


def made_photo(folder_name: str, name: str, width: int, height: int, progressive: bool = False) -> Path:
    """A made photo ``name`` of ``width`` x ``height`` (a JPEG as a phone saves it: quality 90, 4:2:0, smooth colours
    and a fine noise) in the temporary folder ``folder_name``, made once."""
    import numpy as np
    from PIL import Image

    path = Path(tempfile.gettempdir()) / folder_name / f"{name.replace(' ', '-')}.jpg"
    if path.is_file():
        return path
    path.parent.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    colours = Image.fromarray(rng.integers(0, 256, (height // 64, width // 64, 3), np.uint8))
    pixels = np.asarray(colours.resize((width, height), Image.Resampling.BILINEAR)).copy()
    for top in range(0, height, 256):  # the noise a band at a time: int16 of the whole would take 1.2 GB
        band = pixels[top:top + 256].astype(np.int16) + rng.integers(-6, 7, (min(256, height - top), width, 3))
        pixels[top:top + 256] = np.clip(band, 0, 255)
    Image.fromarray(pixels).save(path, quality=90, progressive=progressive)
    return path


def memory_mib(field: str) -> float:
    """This process's ``VmRSS`` (resident memory) or ``VmHWM`` (its peak) from /proc, in MiB. Not ``ru_maxrss``: a
    child process starts with its parent's resident memory at the fork as its peak (the photos' maker's 2.8 GB)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def read_phone_photo(path_name: str, file: Path, max_pixels: int) -> dict:
    """One path (``PHONE_PATHS``) reading ``file`` under ``max_pixels`` in this process: its refusal, or the shape it
    decoded; wall time and the peak RSS past the imports (Linux: the peak is reset to the resident memory first)."""
    if "tf.data" in path_name:
        import tensorflow as tf

        from realvsai import data as data_module
    from realvsai import images as image_io
    from realvsai import inference

    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS, so the peak below is this path's
    baseline_mib = memory_mib("VmRSS")
    start = time.perf_counter()
    shape, problem = None, None
    try:
        if path_name.startswith("app"):  # App.py: the upload's bytes, for a 224 px model
            crops = path_name.endswith("crops")
            pixels, _ = inference.decode_upload(file.read_bytes(), max_pixels, None if crops else 224,
                                                224 if crops else None)
            shape = pixels.shape
        elif path_name.startswith("training's scan"):  # and --evaluate's, --predict's: the header and gray check
            header = image_io.read_header(file, max_pixels, image_size=224)
            shape = (header.height, header.width)
        elif path_name.startswith("tf.data"):  # after the scan took it: no limit of its own, the route it gave
            crops = path_name.endswith("crops")
            pil = image_io.read_header(file, 2**62, gray=False).needs_pil  # Pillow's over TensorFlow's limit whole
            pixels = data_module.decode_rgb(tf.constant(str(file)), tf.constant(pil), None if crops else 224,
                                            max_pixels)
            shape = tuple(pixels.shape)
        else:  # DataSplitD1/D2's check and pixel hash of every file; DataMerger's is the same decode
            _, _, problem, _, _ = image_io.inspect_file(file, max_pixels)
    except image_io.ImageDecodeError as error:
        problem = str(error)
    except Exception as error:  # TensorFlow's refusal of a whole 200 MP JPEG
        problem = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    seconds = time.perf_counter() - start
    peak_mib = memory_mib("VmHWM")
    return {"accepted": problem is None, "problem": problem, "decoded_shape": shape and list(shape)[:2],
            "seconds": seconds, "peak_past_imports_mib": peak_mib - baseline_mib, "peak_rss_mib": peak_mib}


def compare_phone(args: argparse.Namespace, destination: Destination) -> None:
    """Every ``PHONE_PATHS`` on every ``PHONE_PHOTOS`` under the default limit and ``RAISED_LIMIT``, a process each."""
    from realvsai.config import MAX_IMAGE_PIXELS

    photos = make_phone_photos()
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "image_size": 224,
               "photos": {name: {"size": list(PHONE_PHOTOS[name][:2]), "progressive": PHONE_PHOTOS[name][2],
                                 "bytes": path.stat().st_size} for name, path in photos.items()},
               "paths": {}, "command": shlex.join(["python", "benchmarks/bench_large_images.py", *sys.argv[1:]])}
    rows = []
    for name, file in photos.items():
        for path_name in PHONE_PATHS:
            for limit in (MAX_IMAGE_PIXELS, RAISED_LIMIT):
                output = run_child([sys.executable, __file__, "--phone-child", path_name, str(file), str(limit)],
                                   f"the {path_name!r} process")
                measured = json.loads(output.strip().splitlines()[-1])
                results["paths"].setdefault(name, {}).setdefault(path_name, {})[f"{limit:,}"] = measured
                taken = "decoded" if "tf.data" in path_name else "taken"  # no limit of its own: the scan's
                answer = taken if measured["accepted"] else "refused" if "limit" in measured["problem"] else "fails"
                rows.append((name, path_name, f"{limit / 1e6:,.0f} MP", answer, f"{measured['seconds']:.2f}",
                             f"{measured['peak_past_imports_mib']:.0f}"))
    print(format_table(("photo", "path (224 px model)", "--max-pixels", "answer", "wall s", "peak MiB past imports"),
                       rows))
    destination.write(results)


def augment_photos(variant: str, preset: str, data: Path, max_pixels: int) -> dict:
    """DataAugmentation.py's main in this process (``variant`` "before": the writer's earlier batching, float
    buffers and rounding; "whole": every copy made on the whole image, as before banding); its wall time, peak RSS
    and the sha256 of every copy."""
    import hashlib

    import tensorflow as tf

    import DataAugmentation
    from realvsai import offline_augmentation

    if variant == "before":
        offline_augmentation.MAX_BATCH_PIXELS = 1 << 25
        offline_augmentation.ROUNDING_PIXELS = 1 << 40
        decode = offline_augmentation.decode_rgb
        offline_augmentation.decode_rgb = lambda *args, **kwargs: tf.cast(decode(*args, **kwargs), tf.float32)
    if variant in ("before", "whole"):  # no copy made in bands, every image decoded ahead, copies queued by count
        offline_augmentation.BANDED_PIXELS = offline_augmentation.DECODED_AHEAD_PIXELS = 2**62
        offline_augmentation.MAX_WAITING_BYTES = 2**62
    start = time.perf_counter()
    status = DataAugmentation.main(["--data", str(data), "--copies", "2", "--preset", preset, "--seed", "42",
                                    "--max-pixels", str(max_pixels)])
    seconds = time.perf_counter() - start
    copies = sorted((data / "augmented_train").rglob("*.jpg"))
    return {"status": status, "seconds": seconds, "copies": len(copies),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "sha256": {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in copies}}


def compare_augmentation(args: argparse.Namespace, destination: Destination) -> None:
    """Today's writer and the one before on the made photos, a process and a fresh folder each."""
    import shutil

    from realvsai.config import MAX_IMAGE_PIXELS

    photos = make_photos(args.photos)
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "photos": args.photos,
               "photo_size": [4000, 3000], "copies": 2, "presets": {},
               "command": shlex.join(["python", "benchmarks/bench_large_images.py", *sys.argv[1:]])}
    rows = []
    for preset in args.presets:
        measured = {}
        for variant in ("today", "before"):
            with tempfile.TemporaryDirectory(prefix="bench_augment_") as temporary:
                data = Path(temporary) / "data"
                shutil.copytree(photos, data)
                output = run_child([sys.executable, __file__, "--augment-child", variant, preset, str(data),
                                    str(MAX_IMAGE_PIXELS)], f"the {variant!r} augmentation's process")
            measured[variant] = json.loads(output.strip().splitlines()[-1])
            rows.append((f"{preset}, {variant}", f"{measured[variant]['seconds']:.1f}",
                         f"{measured[variant]['peak_rss_mib']:.0f}"))
        today, before = measured["today"], measured["before"]
        measured["today / before"] = {"time_ratio": today["seconds"] / before["seconds"],
                                      "peak_memory_ratio": today["peak_rss_mib"] / before["peak_rss_mib"],
                                      "same_bytes": today["sha256"] == before["sha256"]}
        rows.append((f"{preset}, today / before", f"{today['seconds'] / before['seconds']:.2f}x",
                     f"{today['peak_rss_mib'] / before['peak_rss_mib']:.2f}x"
                     f" (same bytes: {today['sha256'] == before['sha256']})"))
        results["presets"][preset] = measured
    print(format_table((f"DataAugmentation, {args.photos} photos 4000x3000 x 2 copies", "wall s", "peak RSS MiB"),
                       rows))
    destination.write(results)


def compare_huge(args: argparse.Namespace, destination: Destination) -> None:
    """``HUGE_CASES``, today's path (and with --whole-too the whole-image one), a process and a fresh folder each."""
    import shutil

    photos = {name: made_photo("realvsai-bench-huge", name, *size) for name, size in HUGE_PHOTOS.items()}
    variants = ("today", "whole") if args.whole_too else ("today",)
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "copies": 2,
               "max_pixels": HUGE_LIMIT, "photos": {name: {"size": list(HUGE_PHOTOS[name]),
                                                           "bytes": path.stat().st_size}
                                                    for name, path in photos.items()},
               "cases": {}, "command": shlex.join(["python", "benchmarks/bench_large_images.py", *sys.argv[1:]])}
    rows = []
    for name, preset in HUGE_CASES:
        measured = {}
        for variant in variants:
            with tempfile.TemporaryDirectory(prefix="bench_huge_") as temporary:
                data = Path(temporary) / "data"
                (data / "train" / "REAL").mkdir(parents=True)
                shutil.copy(photos[name], data / "train" / "REAL")
                output = run_child([sys.executable, __file__, "--augment-child", variant, preset, str(data),
                                    str(HUGE_LIMIT)], f"the {variant!r} augmentation's process")
            measured[variant] = json.loads(output.strip().splitlines()[-1])
            rows.append((f"{name}, {preset}, {variant}", measured[variant]["copies"],
                         f"{measured[variant]['seconds']:.1f}", f"{measured[variant]['peak_rss_mib']:.0f}"))
        if args.whole_too:
            measured["same_bytes"] = measured["today"]["sha256"] == measured["whole"]["sha256"]
            rows.append((f"{name}, {preset}, same bytes", measured["same_bytes"], "", ""))
        results["cases"][f"{name}, {preset}"] = measured
    print(format_table(("DataAugmentation, --copies 2", "copies", "wall s", "peak RSS MiB"), rows))
    destination.write(results)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.child:
        variant, image_size = args.child
        return run_main(lambda: print(json.dumps(measure(args.data, variant, int(image_size), args.batch_size,
                                                         args.repeats))))
    if args.augment_child:
        variant, preset, data, max_pixels = args.augment_child
        return run_main(lambda: print(json.dumps(augment_photos(variant, preset, Path(data), int(max_pixels)))))
    if args.phone_child:
        path_name, file, limit = args.phone_child
        return run_main(lambda: print(json.dumps(read_phone_photo(path_name, Path(file), int(limit)))))
    destination = results_destination(parser, args, "large_images", ("data", "image_sizes", "batch_size", "variants",
                                                                     "scans", "photos", "phone", "huge"))
    if args.huge:
        return run_main(lambda: compare_huge(args, destination))
    if args.phone:
        return run_main(lambda: compare_phone(args, destination))
    if args.photos:
        return run_main(lambda: compare_augmentation(args, destination))
    if args.scans:
        args.data = make_scans(args.scans)
    elif args.data == DEFAULT_DATA and not DEFAULT_DATA.is_dir():
        print(f"{args.data} is missing: nothing to measure. Give --data a folder of class folders of large JPEGs.")
        return 0
    return run_main(lambda: compare(args, destination))


def compare(args: argparse.Namespace, destination: Destination) -> None:
    """Each variant at each --image-sizes in a process of its own; their figures and ratios."""
    existing(args.data, "--data", "a folder of class folders of large JPEGs")
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "data": str(args.data),
               "batch_size": args.batch_size, "sizes": {},
               "command": shlex.join(["python", "benchmarks/bench_large_images.py", *sys.argv[1:]])}
    rows = []
    for image_size in args.image_sizes:
        measured = {}
        for variant in args.variants:
            output = run_child([sys.executable, __file__, "--data", str(args.data), "--batch-size",
                                str(args.batch_size), "--repeats", str(args.repeats), "--child", variant,
                                str(image_size)], f"the {variant!r} variant's process")
            measured[variant] = json.loads(output.strip().splitlines()[-1])
        for variant in args.variants:
            rows.append((f"{image_size} px, {variant}", f"{measured[variant]['images_per_second']:.1f}",
                         f"{measured[variant]['peak_rss_mib']:.0f}", f"{measured[variant]['pipeline_peak_mib']:.0f}"))
        for today, before in (pair for pair in PAIRS if set(pair) <= set(args.variants)):
            now, then = measured[today], measured[before]
            measured[f"{today} / {before}"] = ratios = {
                "speedup": now["images_per_second"] / then["images_per_second"],
                "peak_memory_ratio": now["peak_rss_mib"] / then["peak_rss_mib"],
                "pipeline_memory_ratio": now["pipeline_peak_mib"] / then["pipeline_peak_mib"]}
            rows.append((f"{image_size} px, {today} / {before}", f"{ratios['speedup']:.2f}x",
                         f"{ratios['peak_memory_ratio']:.2f}x", f"{ratios['pipeline_memory_ratio']:.2f}x"))
        results["sizes"][str(image_size)] = measured
    print(format_table(("input pipeline", "images/s (median)", "peak RSS MiB", "of it the pipeline's"), rows))
    destination.write(results)


if __name__ == "__main__":
    sys.exit(main())
