"""Tests for realvsai.demo: the synthetic REAL/FAKE dataset and the end-to-end demo run."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realvsai import demo
from realvsai.errors import UserError

SMALL = demo.DemoDataConfig(train_per_class=4, test_per_class=2, image_size=16)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by its relative path, with its bytes."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def load_class(root: Path, split: str, class_name: str) -> np.ndarray:
    """The images of one class folder as an (N, H, W, 3) float array, in file order."""
    files = sorted((root / split / class_name).glob("*.jpg"))
    return np.stack([np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) for path in files])


def checkerboard_ratio(images: np.ndarray) -> float:
    """Mean brightness of the odd-odd pixels over the even-even ones: 1 without a 2-pixel checkerboard."""
    gray = images.mean(axis=-1)
    return float(np.mean(gray[:, 1::2, 1::2].mean(axis=(1, 2)) / (gray[:, 0::2, 0::2].mean(axis=(1, 2)) + 1.0)))


@pytest.fixture(scope="module")
def balanced_set(tmp_path_factory) -> Path:
    """Enough default-setting demo images to compare the two classes' statistics."""
    root = tmp_path_factory.mktemp("demo") / "raw"
    demo.generate_demo_data(root, demo.DemoDataConfig(train_per_class=150, test_per_class=1))
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the demo tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_source_photos_ship_with_installed_packages(no_network):
    photos = demo.source_photos()
    names = [name for name, _ in photos]
    assert names[:2] == ["china.jpg", "flower.jpg"]
    for _, pixels in photos:
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        assert min(pixels.shape[:2]) >= 400


def test_generation_works_without_network(tmp_path, no_network):
    counts = demo.generate_demo_data(tmp_path / "raw", SMALL)
    assert counts["train"] == {"REAL": 4, "FAKE": 4}


def test_same_seed_gives_the_same_bytes(tmp_path):
    demo.generate_demo_data(tmp_path / "first", SMALL)
    demo.generate_demo_data(tmp_path / "second", SMALL)
    assert read_tree(tmp_path / "first") == read_tree(tmp_path / "second")


def test_another_seed_gives_other_images(tmp_path):
    demo.generate_demo_data(tmp_path / "first", SMALL)
    demo.generate_demo_data(tmp_path / "second", demo.DemoDataConfig(**{**SMALL.__dict__, "seed": 1}))
    first, second = read_tree(tmp_path / "first"), read_tree(tmp_path / "second")
    images = [key for key in first if key.endswith(".jpg")]
    assert all(first[key] != second[key] for key in images)


def test_an_image_does_not_depend_on_how_many_are_made(tmp_path):
    demo.generate_demo_data(tmp_path / "few", SMALL)
    demo.generate_demo_data(tmp_path / "more", demo.DemoDataConfig(**{**SMALL.__dict__, "train_per_class": 6}))
    for path in ("train/REAL/00003.jpg", "train/FAKE/00003.jpg", "test/FAKE/00001.jpg"):
        assert (tmp_path / "few" / path).read_bytes() == (tmp_path / "more" / path).read_bytes()


def test_layout_is_kaggle_train_test_with_the_requested_count_per_class(tmp_path):
    root = tmp_path / "raw"
    counts = demo.generate_demo_data(root, SMALL)
    found = {split: {name: len(list((root / split / name).glob("*.jpg"))) for name in ("REAL", "FAKE")}
             for split in ("train", "test")}
    assert found == counts == {"train": {"REAL": 4, "FAKE": 4}, "test": {"REAL": 2, "FAKE": 2}}
    assert sorted(path.name for path in root.iterdir()) == ["README.txt", "demo.json", "test", "train"]


def test_images_are_rgb_jpegs_of_the_requested_size(tmp_path):
    root = tmp_path / "raw"
    demo.generate_demo_data(root, SMALL)
    for path in root.rglob("*.jpg"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (16, 16))


def test_readme_marks_the_data_as_synthetic_and_settings_are_saved(tmp_path):
    root = tmp_path / "raw"
    demo.generate_demo_data(root, SMALL)
    readme = (root / "README.txt").read_text(encoding="utf-8")
    assert readme.startswith("SYNTHETIC DEMO DATA - NOT A REAL DATASET")
    assert "china.jpg" in readme and "detects nothing real" in readme
    assert json.loads((root / "demo.json").read_text(encoding="utf-8")) == SMALL.__dict__


def test_real_and_fake_have_the_same_mean_colour(balanced_set):
    real, fake = load_class(balanced_set, "train", "REAL"), load_class(balanced_set, "train", "FAKE")
    # A decoder that changed brightness by even 1 % would move these means by about 1 level.
    assert np.abs(real.mean(axis=(0, 1, 2)) - fake.mean(axis=(0, 1, 2))).max() < 1.0
    assert abs(real.std(axis=(1, 2)).mean() - fake.std(axis=(1, 2)).mean()) < 2.0


def test_real_and_fake_have_nearly_the_same_colour_histogram(balanced_set):
    real, fake = load_class(balanced_set, "train", "REAL"), load_class(balanced_set, "train", "FAKE")
    histograms = [np.histogram(images, bins=32, range=(0, 256))[0] / images.size for images in (real, fake)]
    total_variation = 0.5 * np.abs(histograms[0] - histograms[1]).sum()
    assert total_variation < 0.1  # two independent sets of 150 REAL crops differ by about 0.05


def test_only_fake_images_carry_the_checkerboard(balanced_set):
    real, fake = load_class(balanced_set, "train", "REAL"), load_class(balanced_set, "train", "FAKE")
    assert abs(checkerboard_ratio(real) - 1.0) < 0.05
    assert checkerboard_ratio(fake) > 1.25  # (1 + strength)^2 = 1.44 before JPEG and noise


def test_fake_image_is_the_decoded_twin_of_the_real_crop(tmp_path):
    root = tmp_path / "raw"
    demo.generate_demo_data(root, demo.DemoDataConfig(train_per_class=20, test_per_class=1, artefact_strength=0.0,
                                                      noise=0.0))
    real, fake = load_class(root, "train", "REAL"), load_class(root, "train", "FAKE")
    twins = np.abs(real - fake).mean(axis=(1, 2, 3))
    strangers = np.abs(real - np.roll(fake, 1, axis=0)).mean(axis=(1, 2, 3))
    assert np.all(twins < strangers)


def test_transposed_convolution_keeps_the_mean_and_draws_a_checkerboard():
    flat = np.full((4, 4, 3), 100.0, dtype=np.float32)
    plain = demo._transposed_conv_2x(flat, 0.0)
    strong = demo._transposed_conv_2x(flat, 0.2)
    np.testing.assert_allclose(plain[:-1, :-1], 100.0, rtol=1e-6)  # linear interpolation of a flat image
    assert strong.shape == (8, 8, 3)
    np.testing.assert_allclose(strong.mean(), 100.0, rtol=1e-6)
    np.testing.assert_allclose(strong[1, 1] / strong[0, 0], 1.2**2, rtol=1e-5)


def test_simulate_decoder_keeps_mean_colour_of_a_bright_image():
    rng = np.random.default_rng(0)
    bright = rng.integers(200, 256, size=(32, 32, 3), dtype=np.uint8)
    decoded = demo.simulate_decoder(bright, np.random.default_rng(1), strength=0.3, noise=2.0)
    assert decoded.dtype == np.uint8 and decoded.shape == bright.shape
    # Clipping the checkerboard's bright pixels at 255 would lose several levels without the correction.
    np.testing.assert_allclose(decoded.mean(axis=(0, 1)), bright.mean(axis=(0, 1)), atol=0.5)


def test_existing_data_of_the_same_settings_is_kept_untouched(tmp_path):
    root = tmp_path / "raw"
    demo.generate_demo_data(root, SMALL)
    stamps = {path: path.stat().st_mtime_ns for path in root.rglob("*")}
    assert demo.generate_demo_data(root, SMALL)["test"] == {"REAL": 2, "FAKE": 2}
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*")} == stamps


def test_a_folder_holding_other_files_is_refused_and_left_alone(tmp_path):
    root = tmp_path / "raw"
    (root / "train").mkdir(parents=True)
    (root / "train" / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="something other than demo data"):
        demo.generate_demo_data(root, SMALL)
    assert (root / "train" / "mine.txt").read_text() == "keep me"
    assert sorted(path.name for path in root.rglob("*")) == ["mine.txt", "train"]


def test_demo_data_of_other_settings_is_refused(tmp_path):
    root = tmp_path / "raw"
    demo.generate_demo_data(root, SMALL)
    with pytest.raises(UserError, match="other settings"):
        demo.generate_demo_data(root, demo.DemoDataConfig(**{**SMALL.__dict__, "train_per_class": 5}))


def test_an_empty_folder_is_filled(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    demo.generate_demo_data(root, SMALL)
    assert (root / "README.txt").is_file()


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    made = []

    def fail_on_the_fifth(*args, **kwargs):
        made.append(1)
        if len(made) == 5:
            raise KeyboardInterrupt
        return b"\xff\xd8 not really a jpeg"

    monkeypatch.setattr(demo, "make_image", fail_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        demo.generate_demo_data(tmp_path / "raw", SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change", [{"image_size": 15}, {"image_size": 4}, {"train_per_class": 0},
                                    {"jpeg_quality": 0}, {"artefact_strength": -0.1}])
def test_impossible_settings_raise_value_error(tmp_path, change):
    with pytest.raises(ValueError):
        demo.generate_demo_data(tmp_path / "raw", demo.DemoDataConfig(**{**SMALL.__dict__, **change}))
    assert not (tmp_path / "raw").exists()


def test_run_demo_refuses_an_existing_run_before_making_any_data(tmp_path):
    (tmp_path / "models" / "demo").mkdir(parents=True)
    (tmp_path / "models" / "demo" / "notes.txt").write_text("mine")
    config = demo.DemoConfig(data_dir=tmp_path / "data", out=tmp_path / "models",
                             data=demo.DemoDataConfig(train_per_class=4, test_per_class=2))
    with pytest.raises(UserError, match="already exists"):
        demo.run_demo(config)
    assert not (tmp_path / "data").exists()


def test_run_demo_refuses_its_unfinished_run_with_the_demo_s_resume_command(tmp_path):
    (tmp_path / "models" / "demo" / "backup").mkdir(parents=True)
    (tmp_path / "models" / "demo" / "backup" / "config.json").write_text("{}")
    config = demo.DemoConfig(data_dir=tmp_path / "data", out=tmp_path / "models",
                             data=demo.DemoDataConfig(train_per_class=4, test_per_class=2))
    with pytest.raises(UserError, match=r"has not finished.*Continue it with python ModelTraining\.py --demo --resume "
                                        r"--out "):
        demo.run_demo(config)


def test_run_demo_resume_leaves_saying_it_resumes_to_the_training(tmp_path, monkeypatch, caplog):
    """``--demo --resume`` said "resuming ... with the settings it was started with" twice: its early check of the
    run folder said it too."""
    from realvsai import training
    from realvsai.config import TrainConfig

    config = demo.DemoConfig(data_dir=tmp_path / "data", out=tmp_path / "models",
                             data=demo.DemoDataConfig(train_per_class=4, test_per_class=2))
    (tmp_path / "models" / "demo" / "backup").mkdir(parents=True)
    saved = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="demo", weights="none")
    (tmp_path / "models" / "demo" / "backup" / "config.json").write_text(json.dumps(saved.to_json()))
    demo.generate_demo_data(tmp_path / "data" / "raw", config.data)
    monkeypatch.setattr(training, "train", lambda config, resume, verbose: (config.name, resume))
    with caplog.at_level("INFO", logger="realvsai"):
        assert demo.run_demo(config, resume=True) == ("demo", True)
    assert not [record for record in caplog.records if "resuming" in record.getMessage()]
    # The split's report, without its "Next: python DataAugmentation.py ..." line: the demo trains by itself.
    assert "manifest:" in caplog.text and "Next:" not in caplog.text


def test_run_demo_resume_makes_its_data_again_where_it_is_gone(tmp_path, monkeypatch):
    """It asked for the data's new place with --data, which --demo refuses: the demo makes the same data again."""
    from realvsai import training
    from realvsai.config import TrainConfig

    config = demo.DemoConfig(data_dir=tmp_path / "data", out=tmp_path / "models",
                             data=demo.DemoDataConfig(train_per_class=4, test_per_class=2))
    (tmp_path / "models" / "demo" / "backup").mkdir(parents=True)
    saved = TrainConfig(data=tmp_path / "data", out=tmp_path / "models", name="demo", weights="none")
    (tmp_path / "models" / "demo" / "backup" / "config.json").write_text(json.dumps(saved.to_json()))
    monkeypatch.setattr(training, "train", lambda config, resume, verbose: (config.name, resume))
    assert demo.run_demo(config, resume=True) == ("demo", True)
    assert all((tmp_path / "data" / split / "REAL").is_dir() for split in ("train", "validation", "test"))


@pytest.mark.slow
def test_run_demo_makes_splits_trains_evaluates_and_marks_the_run_as_a_demo(tmp_path):
    config = demo.DemoConfig(data_dir=tmp_path / "data", out=tmp_path / "models", epochs=1, batch_size=8,
                             data=demo.DemoDataConfig(train_per_class=10, test_per_class=4))
    result = demo.run_demo(config, verbose=0)

    data_dir = tmp_path / "data"
    counts = {split: {name: len(list((data_dir / split / name).iterdir())) for name in ("REAL", "FAKE")}
              for split in ("train", "validation", "test")}
    assert counts == {"train": {"REAL": 8, "FAKE": 8}, "validation": {"REAL": 2, "FAKE": 2},
                      "test": {"REAL": 4, "FAKE": 4}}
    assert (data_dir / "README.txt").read_text(encoding="utf-8").startswith("SYNTHETIC DEMO DATA")
    run_dir = tmp_path / "models" / "demo"
    assert result.run_dir == run_dir
    info = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))
    assert info["config"]["demo"] is True
    assert info["weights"] == "none" and info["image_size"] == 32
    assert 0.0 <= info["test_metrics"]["accuracy"] <= 1.0
    assert "Demo model" in (run_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    for name in ("model.h5", "metrics.json", "training_curves.png"):
        assert (run_dir / name).is_file(), name

    from realvsai.run import read_run

    run = read_run(run_dir)  # what the app reads from models/
    assert run.info["class_names"] == ["FAKE", "REAL"]
