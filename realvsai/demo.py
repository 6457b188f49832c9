"""A synthetic REAL/FAKE dataset made on the spot, and the end-to-end demo that trains on it.

REAL images are random square crops of the sample photos that ship with scikit-learn and
matplotlib; FAKE images are the same crops halved and upsampled again by a stride-2 transposed
convolution whose kernel overlaps unevenly (a generator decoder's faint checkerboard; Odena et al.
2016), plus slight noise. Only the decoder's trace tells them apart.

    data/demo/raw/{train,test}/{REAL,FAKE}/*.jpg, README.txt, demo.json
    -> data/demo/{train,validation,test}/  (DataSplitD2's split)  -> models/demo/  (training, evaluation)
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from realvsai.cli import plural, progress
from realvsai.config import TrainConfig, resolve_run_dir, resume_command
from realvsai.errors import UserError
from realvsai.files import atomic_write_text
from realvsai.images import MAX_JPEG_QUALITY, MIN_JPEG_QUALITY
from realvsai.layout import TEST, TRAIN

if TYPE_CHECKING:  # TensorFlow loads only when the demo trains
    from realvsai.training import TrainResult

logger = logging.getLogger(__name__)

REAL, FAKE = "REAL", "FAKE"
README_NAME = "README.txt"
SETTINGS_NAME = "demo.json"


@dataclass(frozen=True)
class DemoDataConfig:
    """How the synthetic images are made; written to ``demo.json`` beside them."""

    train_per_class: int = 300  # images per class in raw/train (DataSplitD2 carves validation out of them)
    test_per_class: int = 100  # images per class in raw/test
    image_size: int = 32  # side of every image, in pixels (even: the decoder upsamples by 2)
    min_crop: int = 48  # smallest crop side, in pixels of the source photo; the largest is the photo's short side
    artefact_strength: float = 0.2  # extra gain of the transposed convolution's doubly covered pixels (0 = none)
    noise: float = 2.0  # standard deviation of the FAKE images' Gaussian noise, in 0..255 units
    jpeg_quality: int = 90  # the same for both classes
    seed: int = 0

    def validate(self) -> None:
        """Raises ValueError for settings that cannot make a dataset."""
        if (min(self.train_per_class, self.test_per_class) < 1 or self.image_size < 8 or self.image_size % 2
                or self.min_crop < self.image_size // 2 or min(self.artefact_strength, self.noise) < 0
                or not MIN_JPEG_QUALITY <= self.jpeg_quality <= MAX_JPEG_QUALITY):
            raise ValueError(f"impossible demo data settings: {self}; counts must be at least 1, image_size even "
                             "and at least 8, min_crop at least image_size / 2, strength and noise not negative, "
                             f"jpeg_quality in {MIN_JPEG_QUALITY}..{MAX_JPEG_QUALITY}")


def source_photos() -> list[tuple[str, np.ndarray]]:
    """The photos the demo crops from, as (file name, HxWx3 uint8 RGB), in a fixed order."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images  # imported here: it is slow to import

    samples = load_sample_images()  # china.jpg, flower.jpg
    photos = [(Path(path).name, image) for path, image in zip(samples.filenames, samples.images)]
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return [*photos, ("grace_hopper.jpg", np.asarray(image.convert("RGB")))]


def random_crop(photo: np.ndarray, rng: np.random.Generator, image_size: int, min_crop: int) -> np.ndarray:
    """A square crop, its side log-uniform from ``min_crop`` to the short side, flipped half of the time."""
    height, width = photo.shape[:2]
    largest = min(height, width)
    side = round(np.exp(rng.uniform(np.log(min(min_crop, largest)), np.log(largest))))
    top, left = (int(rng.integers(0, length - side + 1)) for length in (height, width))
    crop = Image.fromarray(photo[top:top + side, left:left + side])
    pixels = np.asarray(crop.resize((image_size, image_size), Image.Resampling.LANCZOS))
    return pixels[:, ::-1] if rng.random() < 0.5 else pixels


def _transposed_conv_2x(pixels: np.ndarray, strength: float) -> np.ndarray:
    """Upsamples by 2 along both axes as a stride-2 transposed convolution with kernel [a, 1, a].

    ``a = (1 + strength) / 2``: 0 is linear interpolation; otherwise the doubly covered pixels come
    out ``1 + strength`` times brighter. Divided by the mean gain, so the brightness is kept.
    """
    tap = (1.0 + strength) / 2.0
    for axis in (0, 1):
        values = np.moveaxis(pixels, axis, 0)
        following = np.concatenate([values[1:], values[-1:]], axis=0)  # the border pixel repeats
        upsampled = np.empty((2 * values.shape[0], *values.shape[1:]), dtype=np.float32)
        upsampled[0::2] = values
        upsampled[1::2] = tap * (values + following)
        pixels = np.moveaxis(upsampled, 0, axis)
    return pixels / ((2.0 + strength) / 2.0) ** 2


def simulate_decoder(pixels: np.ndarray, rng: np.random.Generator, strength: float, noise: float) -> np.ndarray:
    """HxWx3 uint8 (even sides) as a generator's decoder would draw it: half the resolution, upsampled
    with a checkerboard of ``strength``, plus Gaussian noise of ``noise`` (0..255 units)."""
    height, width = pixels.shape[:2]
    small = pixels.astype(np.float32).reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    decoded = _transposed_conv_2x(small, strength)
    # Halving lowers the contrast a little (measured without the checkerboard); restoring each channel's
    # spread keeps the two classes' colour histograms alike, so the trace is in the pixel pattern alone.
    plain = _transposed_conv_2x(small, 0.0)
    spread = (pixels.std(axis=(0, 1)) + 1.0) / (plain.std(axis=(0, 1)) + 1.0)
    centre = decoded.mean(axis=(0, 1))
    decoded = centre + (decoded - centre) * spread.astype(np.float32)
    decoded += rng.normal(0.0, noise, decoded.shape).astype(np.float32)
    # Clipping the checkerboard at 255 would darken bright images: bisect each channel's shift so its
    # clipped mean is the input's.
    wanted = pixels.astype(np.float32).mean(axis=(0, 1))
    low, high = np.full(3, -255.0, np.float32), np.full(3, 255.0, np.float32)
    for _ in range(24):
        shift = (low + high) / 2
        too_dark = np.clip(decoded + shift, 0, 255).mean(axis=(0, 1)) < wanted
        low, high = np.where(too_dark, shift, low), np.where(too_dark, high, shift)
    return np.rint(np.clip(decoded + (low + high) / 2, 0, 255)).astype(np.uint8)


def make_image(photos: list[tuple[str, np.ndarray]], config: DemoDataConfig, split: str, class_name: str,
               index: int) -> bytes:
    """The JPEG bytes of one demo image; REAL and FAKE image ``index`` of a split share their crop, seeded by
    (seed, split, index), so an image does not depend on how many are made."""
    split_number = (TRAIN, TEST).index(split)
    rng = np.random.default_rng([config.seed, split_number, index])
    pixels = random_crop(photos[int(rng.integers(len(photos)))][1], rng, config.image_size, config.min_crop)
    if class_name == FAKE:
        noise_rng = np.random.default_rng([config.seed, split_number, index, 1])
        pixels = simulate_decoder(pixels, noise_rng, config.artefact_strength, config.noise)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG", quality=config.jpeg_quality)
    return buffer.getvalue()


def readme_text(config: DemoDataConfig, photo_names: list[str]) -> str:
    """The README.txt that marks a folder of demo images as synthetic."""
    return f"""SYNTHETIC DEMO DATA - NOT A REAL DATASET

Made by realvsai.demo (python ModelTraining.py --demo) from the sample photos that ship inside
scikit-learn and matplotlib ({", ".join(photo_names)}). None is a real AI-generated image, and a
model trained on them detects nothing real: they only show that the training pipeline learns.

REAL: square crops of those photos at random positions and scales, {config.image_size}x{config.image_size} px.
FAKE: the same crops (FAKE/00007.jpg is REAL/00007.jpg's), halved in resolution and upsampled by a
      stride-2 transposed convolution with uneven kernel overlap (a faint 2-pixel checkerboard,
      strength {config.artefact_strength}), plus Gaussian noise (sigma {config.noise}).
Both: JPEG quality {config.jpeg_quality}, the same content, mean colour and contrast; the label is
in the decoder's trace only.

Settings (also in {SETTINGS_NAME}): {json.dumps(asdict(config))}
"""


def generate_demo_data(root: Path, config: DemoDataConfig = DemoDataConfig()) -> dict[str, dict[str, int]]:
    """Writes ``root/{train,test}/{REAL,FAKE}/*.jpg``, README.txt and demo.json; returns the images per split
    and class. The folder appears complete or not at all; when it already holds these settings' data,
    nothing is written, and a UserError when it holds anything else.
    """
    config.validate()
    root = Path(root)
    counts = {split: {REAL: count, FAKE: count}
              for split, count in ((TRAIN, config.train_per_class), (TEST, config.test_per_class))}
    if root.exists() and any(root.iterdir()):  # an empty folder counts as none: the data goes into it
        try:
            stored = json.loads((root / SETTINGS_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if stored != asdict(config):
            what = ("demo data made with other settings" if isinstance(stored, dict)
                    else "something other than demo data")
            raise UserError(f"{root} already exists and holds {what}. Delete it (or move it away) to make the demo "
                            "data again, or choose another folder.")
        logger.info("%s already holds the demo data of these settings; kept as it is", root)
        return counts
    photos = source_photos()
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        jobs = [(split, name, index) for split, per_class in counts.items()
                for name, count in per_class.items() for index in range(count)]
        for split, name, index in progress(jobs, desc="making demo images", unit="image"):
            (partial / split / name).mkdir(parents=True, exist_ok=True)
            (partial / split / name / f"{index:05d}.jpg").write_bytes(make_image(photos, config, split, name, index))
        (partial / README_NAME).write_text(readme_text(config, [name for name, _ in photos]), encoding="utf-8")
        (partial / SETTINGS_NAME).write_text(json.dumps(asdict(config), indent=2) + "\n", encoding="utf-8")
        os.chmod(partial, 0o755)  # mkdtemp makes it private; the data is meant to be read by anyone
        if root.is_dir():
            root.rmdir()  # empty (checked above); a rename cannot replace a folder everywhere
        os.rename(partial, root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # our own half-written folder, never the user's
        raise
    logger.info("made %d synthetic demo images in %s", len(jobs), root)
    return counts


@dataclass(frozen=True)
class DemoConfig:
    """The demo run: where it writes, and the small training it does (minutes on a 2-core CPU)."""

    data_dir: Path = Path("data/demo")  # raw/ (the generated Kaggle layout) and the split beside it
    out: Path = TrainConfig.out  # the run goes to OUT/NAME
    name: str = "demo"
    backbone: str = TrainConfig.backbone
    epochs: int = 5  # from scratch, one phase; validation accuracy passes 0.9 by the second
    batch_size: int = 16  # 30 steps per epoch: the from-scratch network needs steps more than images
    # The demo images differ only in a pixel-exact trace; the detector preset's whole-pixel shifts move
    # its phase and triple the epochs needed, and nothing else varies that augmentation could teach.
    augment: str = "none"
    val_fraction: float = 0.2  # of raw/train, carved out by DataSplitD2's split
    seed: int = 0
    data: DemoDataConfig = field(default_factory=DemoDataConfig)  # its image_size is the model's too


def run_demo(config: DemoConfig = DemoConfig(), *, resume: bool = False, verbose: int | str = "auto"
             ) -> TrainResult:
    """Makes the demo data in ``data_dir/raw``, splits it into ``data_dir`` as DataSplitD2 does, trains from
    scratch and evaluates into ``out/name``. Running it again reuses the data and the split."""
    from realvsai import splitting, training

    train_config = TrainConfig(
        data=Path(config.data_dir), out=Path(config.out), name=config.name, backbone=config.backbone,
        # The backbone sees the images at their own size: a resize would blur the decoder's trace.
        weights="none", image_size=config.data.image_size, batch_size=config.batch_size, head_epochs=config.epochs,
        fine_tune_epochs=0, augment=config.augment, seed=config.seed,
        # From scratch, the validation loss jumps about while the BatchNorm statistics settle (validation accuracy
        # does not); the stop rules would end a run of a few epochs early. The best epoch is kept anyway.
        stop_patience=config.epochs, early_stopping_patience=config.epochs, demo=True)
    train_config.validate()
    # Fails now, not after the data is made, where the run exists (or is not there to resume); the data, made
    # again where it is gone, is the same.
    resolve_run_dir(train_config, resume, data=train_config.data,
                    continue_with=lambda run_dir: resume_command(run_dir, ["--demo", "--resume"], DemoConfig))
    raw_dir = Path(config.data_dir) / "raw"
    logger.info("1/3 making synthetic demo images in %s", raw_dir)
    generate_demo_data(raw_dir, config.data)
    logger.info("2/3 splitting them as DataSplitD2.py does into %s", config.data_dir)
    report = splitting.split_train_test(raw_dir, config.data_dir, val_fraction=config.val_fraction,
                                        seed=config.seed)
    logger.info("%s", splitting.format_report(report, next_step=False))  # the demo trains next by itself
    readme, text = Path(config.data_dir) / README_NAME, (raw_dir / README_NAME).read_text(encoding="utf-8")
    if not readme.exists():
        atomic_write_text(readme, text)
    elif readme.read_text(encoding="utf-8") != text:  # never replaces a user's file
        logger.warning("%s exists with other content; left as it is", readme)
    logger.info("3/3 training %s from scratch at %d px for %s into %s", config.backbone,
                config.data.image_size, plural(config.epochs, "epoch"), Path(config.out) / config.name)
    return training.train(train_config, resume=resume, verbose=verbose)
