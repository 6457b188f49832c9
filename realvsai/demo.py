"""A synthetic REAL/FAKE dataset made on the spot, and the end-to-end demo that trains on it.

``python ModelTraining.py --demo`` needs no download and no account: it cuts small crops out of
the photographs that ship inside scikit-learn (china.jpg, flower.jpg) and matplotlib
(grace_hopper.jpg), and makes a FAKE twin class by passing the same crops through a simulated
generator decoder. Then it runs the real pipeline on them:

    data/demo/raw/README.txt                    says the images are synthetic, and how they were made
    data/demo/raw/train/REAL|FAKE/*.jpg    ->   data/demo/train|validation|test/REAL|FAKE/  (DataSplitD2)
    data/demo/raw/test/REAL|FAKE/*.jpg          models/demo/   model.h5, model.json ("demo": true), plots,
                                                               MODEL_CARD.md, metrics.json

REAL: a square crop at a random position and scale (and a random horizontal flip) of one of the
photos, resized to ``image_size`` with a Lanczos filter. FAKE: the very same crops, each
brought down by 2 (area average) and back up by a stride-2 transposed convolution whose kernel
overlaps unevenly, as generator decoders do (Odena et al. 2016, "Deconvolution and Checkerboard
Artifacts"), plus slight Gaussian noise. Both classes hold the same crops and are saved as JPEG at
the same quality, and the decoder keeps each image's mean colour and contrast, so the one thing
that tells them apart is the decoder's trace: a faint checkerboard with a period of
two pixels and the softness of the upsampling. The images are useless for anything but showing
that the pipeline learns.
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
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from realvsai.cli import progress
from realvsai.errors import UserError
from realvsai.files import atomic_write_text
from realvsai.layout import TEST, TRAIN

if TYPE_CHECKING:  # TensorFlow loads only when the demo trains
    from realvsai.training import TrainResult

logger = logging.getLogger(__name__)

REAL, FAKE = "REAL", "FAKE"
README_NAME = "README.txt"
SETTINGS_NAME = "demo.json"
# Sample photos that ship inside scikit-learn and matplotlib: no download, no account.
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)


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
        if self.train_per_class < 1 or self.test_per_class < 1:
            raise ValueError("train_per_class and test_per_class must be at least 1")
        if self.image_size < 8 or self.image_size % 2:
            raise ValueError(f"image_size must be an even number of at least 8, got {self.image_size}")
        if self.min_crop < self.image_size // 2:
            raise ValueError(f"min_crop ({self.min_crop}) must be at least half of image_size ({self.image_size})")
        if self.artefact_strength < 0 or self.noise < 0:
            raise ValueError("artefact_strength and noise must not be negative")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


def source_photos() -> list[tuple[str, np.ndarray]]:
    """The photos the demo crops from, as (file name, HxWx3 uint8 RGB), in a fixed order.

    scikit-learn's two sample images are always there (they are part of the package); matplotlib's
    sample photo is added when the installed matplotlib ships its sample data.
    """
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images  # imported here: it is slow to import

    samples = load_sample_images()
    photos = [(Path(path).name, np.asarray(image, dtype=np.uint8))
              for path, image in zip(samples.filenames, samples.images)]
    photos = [photo for name in SKLEARN_PHOTOS for photo in photos if photo[0] == name]
    for name in MATPLOTLIB_PHOTOS:
        try:
            path = matplotlib.cbook.get_sample_data(name, asfileobj=False)
        except (OSError, ValueError):  # a matplotlib packaged without its sample data
            logger.info("matplotlib has no sample photo %s; the demo uses the other photos", name)
            continue
        with Image.open(path) as image:
            photos.append((name, np.asarray(image.convert("RGB"), dtype=np.uint8)))
    return photos


def random_crop(photo: np.ndarray, rng: np.random.Generator, image_size: int, min_crop: int) -> np.ndarray:
    """A square crop at a random position and scale, flipped half of the time, resized to ``image_size``.

    The side is drawn log-uniformly between ``min_crop`` and the photo's short side, so close-ups
    and wide views are equally common.
    """
    height, width = photo.shape[:2]
    largest = min(height, width)
    side = round(np.exp(rng.uniform(np.log(min(min_crop, largest)), np.log(largest))))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side])
    pixels = np.asarray(crop.resize((image_size, image_size), Image.Resampling.LANCZOS))
    return pixels[:, ::-1] if rng.random() < 0.5 else pixels


def _transposed_conv_2x(pixels: np.ndarray, strength: float) -> np.ndarray:
    """Upsamples by 2 along both axes as a stride-2 transposed convolution with kernel [a, 1, a].

    Even output pixels get one kernel tap (the centre), odd ones two (``a`` from each neighbour).
    With ``a = 1/2`` this is plain linear interpolation; ``a = (1 + strength) / 2`` lets the doubly
    covered pixels come out ``1 + strength`` times brighter, the uneven overlap that gives decoders
    their checkerboard. The result is divided by the mean gain, so the image's brightness is kept.
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
    """An image as a generator's decoder would draw it: half the resolution, upsampled with a checkerboard.

    Args:
        pixels: HxWx3 uint8 with even H and W.
        rng: draws the noise.
        strength: the checkerboard's strength (see ``_transposed_conv_2x``); 0 leaves only the softness.
        noise: standard deviation of the added Gaussian noise, in 0..255 units.

    Returns:
        HxWx3 uint8.
    """
    height, width = pixels.shape[:2]
    small = pixels.astype(np.float32).reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    decoded = _transposed_conv_2x(small, strength)
    # Halving the resolution lowers the contrast a little (measured on the plain interpolation, so the
    # checkerboard does not count); restoring each channel's spread keeps the colour histograms of the
    # two classes alike, so the trace stays in the pixel pattern alone.
    plain = _transposed_conv_2x(small, 0.0)
    spread = (pixels.std(axis=(0, 1)) + 1.0) / (plain.std(axis=(0, 1)) + 1.0)
    centre = decoded.mean(axis=(0, 1))
    decoded = centre + (decoded - centre) * spread.astype(np.float32)
    decoded += rng.normal(0.0, noise, decoded.shape).astype(np.float32)
    # Clipping the checkerboard's bright pixels at 255 would darken bright images a little: shift
    # each channel so that its mean after clipping is the input's, so brightness never tells the
    # classes apart. The clipped mean grows with the shift, so bisection finds it.
    wanted = pixels.astype(np.float32).mean(axis=(0, 1))
    low, high = np.full(3, -255.0, np.float32), np.full(3, 255.0, np.float32)
    for _ in range(24):
        shift = (low + high) / 2
        too_dark = np.clip(decoded + shift, 0, 255).mean(axis=(0, 1)) < wanted
        low, high = np.where(too_dark, shift, low), np.where(too_dark, high, shift)
    return np.rint(np.clip(decoded + (low + high) / 2, 0, 255)).astype(np.uint8)


def make_image(photos: list[tuple[str, np.ndarray]], config: DemoDataConfig, split: str, class_name: str,
               index: int) -> bytes:
    """The JPEG bytes of one demo image; the same arguments always give the same bytes.

    REAL image ``index`` and FAKE image ``index`` of a split are the same crop, so the two classes
    hold exactly the same content and only the decoder's trace tells them apart. Each crop has its
    own generator, seeded by (seed, split, index), so an image does not depend on how many others
    are made or in which order.
    """
    split_number = (TRAIN, TEST).index(split)
    rng = np.random.default_rng([config.seed, split_number, index])
    photo = photos[int(rng.integers(len(photos)))][1]
    pixels = random_crop(photo, rng, config.image_size, config.min_crop)
    if class_name == FAKE:
        noise_rng = np.random.default_rng([config.seed, split_number, index, 1])
        pixels = simulate_decoder(pixels, noise_rng, config.artefact_strength, config.noise)
    elif class_name != REAL:
        raise ValueError(f"class_name must be {REAL} or {FAKE}, got {class_name!r}")
    buffer = io.BytesIO()
    # 4:2:0 chroma subsampling, Pillow's default at this quality, for both classes alike.
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG", quality=config.jpeg_quality)
    return buffer.getvalue()


def readme_text(config: DemoDataConfig, photo_names: list[str]) -> str:
    """The README.txt that marks a folder of demo images as synthetic."""
    return f"""SYNTHETIC DEMO DATA - NOT A REAL DATASET

Every image below this folder was made by realvsai.demo (python ModelTraining.py --demo) from the
sample photos that ship inside scikit-learn and matplotlib ({", ".join(photo_names)}).
None of them is a real AI-generated image, and a model trained on them detects nothing real:
they exist only to show that the training pipeline runs end to end and learns.

REAL: square crops at random positions and scales of those photos, resized to
      {config.image_size}x{config.image_size} px.
FAKE: the same crops (FAKE/00007.jpg is REAL/00007.jpg's crop), each passed through a
      simulated generator decoder: halved in resolution, upsampled by a stride-2 transposed
      convolution with uneven kernel overlap (a faint 2-pixel checkerboard, strength
      {config.artefact_strength}), plus Gaussian noise (sigma {config.noise}).
Both classes: the same content, JPEG quality {config.jpeg_quality}, the same mean colour and contrast.
Train and test crops come from the same photos, so they overlap in content; the label is in
the decoder's trace only, never in the content.

Settings (also in {SETTINGS_NAME}): {json.dumps(asdict(config))}
"""


def _expected_counts(config: DemoDataConfig) -> dict[str, dict[str, int]]:
    return {split: {REAL: count, FAKE: count}
            for split, count in ((TRAIN, config.train_per_class), (TEST, config.test_per_class))}


def _check_existing(root: Path, config: DemoDataConfig) -> bool:
    """True when ``root`` already holds the demo data of ``config``; False when it does not exist.

    Raises:
        UserError: if ``root`` exists but holds something else (other settings, or not demo data).
    """
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return False  # an empty folder counts as none: the data goes into it
    settings = root / SETTINGS_NAME
    try:
        stored = json.loads(settings.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = None
    if stored != asdict(config):
        what = "demo data made with other settings" if isinstance(stored, dict) else "something other than demo data"
        raise UserError(f"{root} already exists and holds {what}. Delete it (or move it away) to make the demo "
                        "data again, or choose another folder.")
    for split, counts in _expected_counts(config).items():
        for class_name, count in counts.items():
            folder = root / split / class_name
            found = len(list(folder.glob("*.jpg"))) if folder.is_dir() else 0
            if found != count:
                raise UserError(f"{folder} holds {found} images, but the demo made {count}. Delete {root} and run "
                                "the demo again to make it afresh.")
    return True


def generate_demo_data(root: Path, config: DemoDataConfig = DemoDataConfig()) -> dict[str, dict[str, int]]:
    """Writes the synthetic dataset in the Kaggle layout: ``root/{train,test}/{REAL,FAKE}/*.jpg``.

    Also writes ``root/README.txt`` (says the data is synthetic) and ``root/demo.json`` (the settings).
    The folder appears complete or not at all: it is written under a temporary name beside ``root``
    and renamed at the end. When ``root`` already holds the data of these same settings, nothing is
    written.

    Args:
        root: the folder to create.
        config: how many images, how large, and how they are made.

    Returns:
        The number of images per split and class.

    Raises:
        ValueError: for impossible settings.
        UserError: if ``root`` exists and holds anything else than this same demo data.
    """
    config.validate()
    root = Path(root)
    counts = _expected_counts(config)
    if _check_existing(root, config):
        logger.info("%s already holds the demo data of these settings; kept as it is", root)
        return counts
    photos = source_photos()
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        jobs = [(split, class_name, index) for split, per_class in counts.items()
                for class_name, count in per_class.items() for index in range(count)]
        for split, class_name in {(split, class_name) for split, class_name, _ in jobs}:
            (partial / split / class_name).mkdir(parents=True)
        for split, class_name, index in progress(jobs, desc="making demo images", unit="image"):
            data = make_image(photos, config, split, class_name, index)
            (partial / split / class_name / f"{index:05d}.jpg").write_bytes(data)
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


# ---------------------------------------------------------------------------------------------
# The end-to-end demo


@dataclass(frozen=True)
class DemoConfig:
    """The demo run: where it writes, and the small training it does (minutes on a 2-core CPU)."""

    data_dir: Path = Path("data/demo")  # raw/ (the generated Kaggle layout) and the split beside it
    out: Path = Path("models")  # the run goes to OUT/NAME
    name: str = "demo"
    backbone: str = "resnet101"
    epochs: int = 5  # from scratch, one phase; validation accuracy passes 0.9 by the second
    batch_size: int = 16  # 30 steps per epoch: the from-scratch network needs steps more than images
    # The demo images differ only in a pixel-exact trace; the detector preset's whole-pixel shifts move
    # its phase and triple the epochs needed, and nothing else varies that augmentation could teach.
    augment: str = "none"
    val_fraction: float = 0.2  # of raw/train, carved out by DataSplitD2's split
    seed: int = 0
    data: DemoDataConfig = field(default_factory=DemoDataConfig)  # its image_size is the model's too

    @property
    def raw_dir(self) -> Path:
        return Path(self.data_dir) / "raw"


def _train_config(config: DemoConfig) -> Any:
    """The TrainConfig of the demo run: the project's defaults at demo size, from scratch."""
    from realvsai.config import TrainConfig

    values: dict[str, Any] = dict(
        data=Path(config.data_dir), out=Path(config.out), name=config.name, backbone=config.backbone,
        # The backbone sees the images at their own size: a resize would blur the decoder's trace.
        weights="none", image_size=config.data.image_size, batch_size=config.batch_size, head_epochs=config.epochs,
        fine_tune_epochs=0, augment=config.augment, seed=config.seed,
        # From scratch, val_loss jumps about while the BatchNorm statistics settle (validation accuracy
        # does not); the stop rules would end a run of a few epochs early. The best epoch is kept anyway.
        stop_patience=config.epochs, early_stopping_patience=config.epochs, demo=True)
    return TrainConfig(**values)


def _write_readme(folder: Path, text: str) -> None:
    """Writes README.txt into ``folder`` unless a different one is there (never replaces a user's file)."""
    path = Path(folder) / README_NAME
    if not path.exists():
        atomic_write_text(path, text)
    elif path.read_text(encoding="utf-8") != text:
        logger.warning("%s exists with other content; left as it is", path)


def run_demo(config: DemoConfig = DemoConfig(), *, resume: bool = False, verbose: int | str = "auto"
             ) -> TrainResult:
    """The whole pipeline on synthetic data: make it, split it as DataSplitD2 does, train, evaluate.

    Every step is the project's own: ``generate_demo_data`` writes the Kaggle layout to
    ``data_dir/raw``, ``splitting.split_train_test`` carves validation out of train into ``data_dir``,
    and ``training.train`` trains from scratch and evaluates on the test split into ``out/name``.
    Running it again reuses the data and the split, which are the same for the same settings.

    Args:
        config: sizes, folders and training settings.
        resume: continue the run ``out/name`` from its last finished epoch.
        verbose: Keras' progress output (0 silent, 1 bars, 2 one line per epoch, "auto").

    Returns:
        The training result; ``test_metrics["accuracy"]`` is the demo's test accuracy.

    Raises:
        UserError: if ``out/name`` already holds a run (without ``resume``), or a data folder holds
            something else than the demo's data.
    """
    from realvsai import splitting, training

    train_config = _train_config(config)
    train_config.validate()
    training.resolve_run_dir(train_config, resume)  # fails now, not after the data is made, when the run exists
    logger.info("1/3 making synthetic demo images in %s", config.raw_dir)
    generate_demo_data(config.raw_dir, config.data)
    logger.info("2/3 splitting them as DataSplitD2.py does into %s", config.data_dir)
    report = splitting.split_train_test(config.raw_dir, config.data_dir, val_fraction=config.val_fraction,
                                        seed=config.seed)
    logger.info("%s", splitting.format_report(report))
    _write_readme(config.data_dir, (config.raw_dir / README_NAME).read_text(encoding="utf-8"))
    logger.info("3/3 training %s from scratch at %d px for %d epochs into %s", config.backbone,
                config.data.image_size, config.epochs, Path(config.out) / config.name)
    return training.train(train_config, resume=resume, verbose=verbose)
