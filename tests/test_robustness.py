"""Perturbations for --robustness: each does what its name says, at the strength given."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from realvsai.robustness import PERTURBATIONS, label, perturb, plot_robustness, robustness_figure


@pytest.fixture
def noisy_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)


def high_frequency_energy(pixels: np.ndarray) -> float:
    return float(np.abs(np.diff(pixels.astype(np.float64), axis=1)).mean())


def test_jpeg_recompression_matches_pillows_save_and_load_at_that_quality(noisy_image):
    buffer = io.BytesIO()
    Image.fromarray(noisy_image).save(buffer, format="JPEG", quality=30)
    expected = np.asarray(Image.open(buffer).convert("RGB"))
    np.testing.assert_array_equal(perturb(noisy_image, "jpeg", 30), expected)


def test_lower_jpeg_quality_loses_more_of_the_image(noisy_image):
    errors = [np.abs(perturb(noisy_image, "jpeg", quality).astype(int) - noisy_image).mean()
              for quality in PERTURBATIONS["jpeg"]]
    assert errors == sorted(errors)


def test_stronger_blur_removes_more_high_frequencies(noisy_image):
    energies = [high_frequency_energy(perturb(noisy_image, "blur", sigma)) for sigma in PERTURBATIONS["blur"]]
    assert high_frequency_energy(noisy_image) > energies[0] > energies[1]


def test_downscale_shrinks_each_side_by_the_factor_and_keeps_three_channels(noisy_image):
    assert perturb(noisy_image, "downscale", 0.5).shape == (24, 32, 3)
    assert perturb(noisy_image, "downscale", 0.25).shape == (12, 16, 3)
    assert perturb(np.zeros((2, 2, 3), np.uint8), "downscale", 0.25).shape == (1, 1, 3)


def test_unknown_perturbation_is_refused(noisy_image):
    with pytest.raises(ValueError, match="jpeg"):
        perturb(noisy_image, "rotate", 1)


def test_labels_name_the_strength():
    assert label("jpeg", 70) == "JPEG quality 70"
    assert label("downscale", 0.25) == "downscale ×0.25"


ACCURACIES = {kind: {strength: 0.9 - 0.1 * step for step, strength in enumerate(strengths)}
              for kind, strengths in PERTURBATIONS.items()}


def test_plot_has_one_line_per_perturbation_starting_at_the_clean_accuracy():
    axes = robustness_figure(0.95, ACCURACIES).axes[0]
    legend = {text.get_text() for text in axes.get_legend().get_texts()}
    lines = [line for line in axes.get_lines() if line.get_label() in legend]
    assert len(lines) == len(PERTURBATIONS)
    assert all(line.get_ydata()[0] == 0.95 and len(line.get_ydata()) == 1 + len(PERTURBATIONS[kind])
               for line, kind in zip(lines, PERTURBATIONS, strict=True))


def test_plot_is_saved_as_png(tmp_path):
    path = plot_robustness(0.95, ACCURACIES, tmp_path / "robustness.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
