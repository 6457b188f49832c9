"""The model on every Keras backend: TensorFlow-free imports, augmentation statistics, model.h5 across backends.

Each check that needs another backend runs in a subprocess (Keras picks its backend once, at import).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_jax

REPO = Path(__file__).resolve().parent.parent
pytestmark = needs_jax  # every check here runs JAX, in a subprocess


def run_python(code: str, backend: str, timeout: int = 600, log: bool = False) -> str:
    """Runs ``code`` in a fresh interpreter under ``KERAS_BACKEND=backend``; returns its stdout, and then its stderr
    (the log) where ``log`` (fails on an error)."""
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + (result.stderr if log else "")


def test_the_model_builds_and_runs_under_jax_without_tensorflow():
    output = run_python("""
        import sys
        sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
        import numpy as np
        import keras
        from realvsai.config import PRESETS
        from realvsai.model import build_model

        images = np.random.default_rng(0).uniform(0, 255, (2, 40, 50, 3)).astype("float32")
        for preset in PRESETS:
            model = build_model(2, image_size=32, backbone="resnet50", weights=None, augment=preset, head_units=8)
            for training in (True, False):
                probabilities = keras.ops.convert_to_numpy(model(images, training=training))
                assert probabilities.shape == (2, 2) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        print(keras.backend.backend())
    """, backend="jax")
    assert output.split() == ["jax"]


# Each statistic of the model's augmentation layers on 2,000 tiny images, with the value it must be near.
AUGMENTATION_STATISTICS = """
    import json
    import numpy as np
    import keras
    from realvsai.augmentation import RandomAffine, RandomBlur, RandomCropPad

    count, height, width = 2000, 8, 16
    noise = np.random.default_rng(0).uniform(0, 255, (count, height, width, 3)).astype("float32")
    # Each pixel holds its column: the centre pixel of a moved image tells how far it moved.
    columns = np.broadcast_to(np.arange(width, dtype="float32")[None, None, :, None], noise.shape).copy()
    centre = (height // 2, width // 2)

    def run(layer, images):
        return keras.ops.convert_to_numpy(layer(images, training=True))

    blurred = run(RandomBlur((0.5, 1.0), probability=0.3, seed=1), noise)
    flipped = run(RandomCropPad(0.0, horizontal_flip=True, seed=2), columns)
    cropped = run(RandomCropPad(0.25, seed=3), columns)
    shifted = run(RandomAffine(0.0, 0.25, 0.0, 0.0, horizontal_flip=False, seed=4), columns)
    print(json.dumps({
        "blurred_fraction": float(np.mean(np.any(blurred != noise, axis=(1, 2, 3)))),
        "flipped_fraction": float(np.mean(flipped[:, 0, 0, 0] > flipped[:, 0, -1, 0])),
        "crop_shift_mean": float(np.mean(cropped[:, centre[0], centre[1], 0] - centre[1])),
        "crop_shift_std": float(np.std(cropped[:, centre[0], centre[1], 0] - centre[1])),
        "affine_shift_mean": float(np.mean(shifted[:, centre[0], centre[1], 0] - centre[1])),
        "affine_shift_std": float(np.std(shifted[:, centre[0], centre[1], 0] - centre[1])),
    }))
"""
EXPECTED_STATISTICS = {
    "blurred_fraction": 0.3,
    "flipped_fraction": 0.5,
    "crop_shift_mean": 0.0,
    "crop_shift_std": (80.0 / 12.0) ** 0.5,  # whole-pixel offsets -4 .. 4 (a quarter of 16 pixels), uniform
    "affine_shift_mean": 0.0,
    "affine_shift_std": 8.0 / 12.0**0.5,  # uniform in [-4, 4] (a quarter of 16 pixels)
}


def test_augmentation_draws_alike_on_tensorflow_and_jax():
    """The backends' random numbers differ for one seed, so their statistics are compared, not their pixels."""
    statistics = {backend: json.loads(run_python(AUGMENTATION_STATISTICS, backend).splitlines()[-1])
                  for backend in ("tensorflow", "jax")}

    for name, expected in EXPECTED_STATISTICS.items():
        on_tensorflow, on_jax = statistics["tensorflow"][name], statistics["jax"][name]
        # 2,000 draws: a standard error of about 0.011 for a fraction near 0.5 and 0.05 for a shift.
        assert on_tensorflow == pytest.approx(expected, abs=0.12), (name, statistics)
        assert on_jax == pytest.approx(expected, abs=0.12), (name, statistics)
        assert on_tensorflow == pytest.approx(on_jax, abs=0.15), (name, statistics)


SAVE_MODEL = """
    import numpy as np
    import keras
    from realvsai.model import build_model

    model = build_model(2, image_size=32, backbone="resnet50", weights=None, augment="detector", head_units=8,
                        seed=3)
    images = np.random.default_rng(0).uniform(0, 255, (3, 40, 36, 3)).astype("float32")
    model.save({model_file!r})
    np.save({predictions_file!r}, keras.ops.convert_to_numpy(model(images, training=False)))
"""
LOAD_MODEL = """
    import numpy as np
    import keras
    import realvsai.model  # registers the project's layers

    model = keras.models.load_model({model_file!r}, compile=False)
    images = np.random.default_rng(0).uniform(0, 255, (3, 40, 36, 3)).astype("float32")
    np.save({predictions_file!r}, keras.ops.convert_to_numpy(model(images, training=False)))
    print([type(layer).__name__ for layer in model.get_layer("augmentation").layers])
"""


@pytest.mark.parametrize("saved_on, loaded_on", [("tensorflow", "jax"), ("jax", "tensorflow")])
def test_model_h5_saved_on_one_backend_loads_and_predicts_the_same_on_the_other(saved_on, loaded_on, tmp_path):
    model_file, saved, loaded = tmp_path / "model.h5", tmp_path / "saved.npy", tmp_path / "loaded.npy"
    run_python(SAVE_MODEL.format(model_file=str(model_file), predictions_file=str(saved)), saved_on)

    output = run_python(LOAD_MODEL.format(model_file=str(model_file), predictions_file=str(loaded)), loaded_on)

    assert output.splitlines()[-1] == "['RandomBlur', 'RandomCropPad']"
    np.testing.assert_allclose(np.load(loaded), np.load(saved), atol=1e-4)


def test_the_training_recipe_runs_under_jax_without_tensorflow(tmp_path, make_class_folder):
    """A GPU machine set up for JAX alone trains with the project's recipe (fitting.fit_phases: its phases,
    optimizer, schedule and callbacks) from arrays in memory, as benchmarks/bench_gpu_cifake.py does there."""
    for split, seed in (("train", 0), ("validation", 1)):
        make_class_folder(tmp_path / "data" / split, {"FAKE": 4, "REAL": 4}, suffix=".jpg", seed=seed)
    output = run_python(f"""
        import sys
        from pathlib import Path
        sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
        import keras
        from realvsai import arrays, data, distributed, fitting
        from realvsai.config import TrainConfig
        from realvsai.model import build_model

        config = TrainConfig(data={str(tmp_path / "data")!r}, weights="none", backbone="resnet50", image_size=32,
                             batch_size=4, head_epochs=1, fine_tune_epochs=1, head_units=8, seed=1)
        train_images, validation_images, _ = data.scan_splits(config.data)
        (x, y), (val_x, val_y) = (arrays.load_images(images, config.image_size)
                                  for images in (train_images, validation_images))
        strategy = distributed.select_strategy({{}})
        with strategy.scope():
            model = build_model(2, image_size=32, backbone="resnet50", weights=None, augment=config.augment,
                                head_units=8, seed=config.seed)
        weights = {{0: 1.0, 1: 1.0}}
        train = lambda first_epoch, decode_ahead: arrays.EpochBatches(x, y, batch_size=4, shuffle=True,
                                                                      seed=config.seed, first_epoch=first_epoch)
        validation = arrays.EpochBatches(val_x, val_y, batch_size=4, class_weight=weights)
        # Whether model.fit's callbacks take each step's logs in a thread (Keras' private flag): else the loop
        # reads each step's loss before it dispatches the next, and the device waits on the host every step.
        from keras.src.callbacks import callback_list
        asynchronous, configure = [], callback_list.CallbackList._configure_async_dispatch
        def recording(self, callbacks):
            configure(self, callbacks)
            asynchronous.append(self._async_train)
        callback_list.CallbackList._configure_async_dispatch = recording
        history = fitting.fit_phases(model, config, Path({str(tmp_path / "run")!r}), strategy, (train, 2),
                                     (validation, 2), weights, 2, 0, False, 2)
        print(keras.backend.backend(), [(row["phase"], row["epoch"]) for row in history], asynchronous)
    """, backend="jax")
    assert output.splitlines()[-1] == "jax [('full', 1), ('full', 2)] [True]"
    assert (tmp_path / "run" / "model.h5").is_file() and (tmp_path / "run" / "history.csv").is_file()


def run_benchmark(script: str, *args: str) -> str:
    """``benchmarks/script args`` under JAX with TensorFlow blocked, as on a GPU machine set up for JAX alone: its
    output, then its log."""
    return run_python(f"""
        import runpy, sys
        sys.modules["tensorflow"] = None
        sys.argv = [{script!r}, *{list(args)!r}]
        runpy.run_path("benchmarks/{script}", run_name="__main__")
    """, backend="jax", log=True)


@pytest.mark.slow
def test_the_gpu_speed_benchmark_runs_without_tensorflow_and_merges_its_figures(tmp_path):
    results = tmp_path / "gpu.json"
    results.write_text(json.dumps({"cifake": {"test_accuracy": 0.5}}))
    common = ("--cpu", "--sizes", "32", "--backbone", "resnet50", "--batch-size", "2", "--steps", "1",
              "--warmup", "1", "--repeats", "1", "--results", str(results))

    run_benchmark("bench_gpu.py", *common, "--precisions", "float32")
    run_benchmark("bench_gpu.py", *common, "--precisions", "mixed_bfloat16", "--models", "project")

    written = json.loads(results.read_text())
    assert written["device"] == "cpu" and written["backend"] == "jax" and written["cifake"] == {"test_accuracy": 0.5}
    speeds = written["images_per_second"]
    assert set(speeds["project"]["32"]) == {"float32", "mixed_bfloat16"} and set(speeds["bare"]["32"]) == {"float32"}
    assert written["project_vs_bare"]["32"] == {
        "float32": pytest.approx(speeds["project"]["32"]["float32"] / speeds["bare"]["32"]["float32"], abs=1e-3)}
    assert written["mixed_vs_float32"]["project"]["32"]["mixed_bfloat16"] == pytest.approx(
        speeds["project"]["32"]["mixed_bfloat16"] / speeds["project"]["32"]["float32"], abs=1e-3)
    assert written["best_images_per_second"]["32"]["images_per_second"] == max(
        value for by_size in speeds.values() for value in by_size["32"].values())


@pytest.mark.slow
def test_the_cifake_gpu_run_unzips_splits_trains_and_tests_without_tensorflow(tmp_path):
    import zipfile

    from tests.conftest import write_image

    archive = tmp_path / "cifake.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for group_index, (group, count) in enumerate((("train", 10), ("test", 3))):
            for label, name in enumerate(("FAKE", "REAL")):
                for index in range(count):
                    image = write_image(tmp_path / "images" / f"{group}{name}{index}.jpg",
                                        seed=group_index * 1000 + label * 100 + index)
                    zipped.write(image, f"cifake/{group}/{name}/{index:04d}.jpg")
    results = tmp_path / "gpu.json"

    command = ("bench_gpu_cifake.py", "--zip", str(archive), "--work", str(tmp_path / "work"), "--epochs", "2",
               "--batch-size", "4", "--backbone", "resnet50", "--results", str(results))

    # A time limit no second epoch fits in: the run stops after one, and is tested all the same.
    output = first_output = run_benchmark(*command, "--time-limit", "1")

    cifake = json.loads(results.read_text())["cifake_2epochs"]
    assert (cifake["train_images"], cifake["validation_images"], cifake["test_images"]) == (16, 4, 6)
    assert (cifake["epochs"], cifake["epochs_planned"], cifake["stopped_by_time_limit"]) == (1, 2, True)
    [epoch] = cifake["epoch_seconds"]  # where an epoch's time went: its steps, validation, the run's saves
    assert set(epoch) == {"train", "validation", "saves", "total"} and min(epoch.values()) >= 0
    assert epoch["train"] > 0 and epoch["train"] + epoch["validation"] + epoch["saves"] == pytest.approx(
        epoch["total"], abs=0.2)
    assert 0 <= cifake["test_accuracy"] <= 1 and 0 <= cifake["test_argmax_accuracy"] <= 1
    assert "Epoch 2/2" not in output and "written to" in output

    # The same command without the limit continues the run: its second epoch, then the test again; one of its steps
    # traced for a profile (what keeps a GPU waiting), as a Perfetto trace.
    output = run_benchmark(*command, "--profile-steps", "1")

    cifake = json.loads(results.read_text())["cifake_2epochs"]
    assert (cifake["epochs"], cifake["epochs_planned"], cifake["stopped_by_time_limit"]) == (2, 2, False)
    assert len(cifake["epoch_seconds"]) == 1  # this command's one epoch
    assert cifake["precision_policy"] == "float32" and cifake["wall_s"] > 0
    assert 0 <= cifake["test_accuracy"] <= 1 and 0 <= cifake["test_argmax_accuracy"] <= 1
    assert "Epoch 1/2" not in output and "Epoch 2/2" in output and "written to" in output
    # ... from the images the first command decoded (a minute of a GPU command at full scale), not decoded again
    assert "decoding 16 images" in first_output and "decoding" not in output
    assert f"reading the decoded splits from {tmp_path / 'work' / 'decoded-32px.npz'}" in output
    [trace] = (tmp_path / "work" / "profile").rglob("perfetto_trace.json.gz")
    assert f"traced training step 4 of 4 of epoch 2 into {tmp_path / 'work' / 'profile'}" in output
    assert json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]


def test_a_resumed_cifake_gpu_command_reads_the_steps_the_first_compiled(tmp_path, monkeypatch):
    """On JAX the CIFAKE run keeps its compiled programs in WORK/jax-cache, where the user set no cache of their
    own: on an H200 a resumed command's first epoch took 36-42 s with them, 66-90 s compiling the steps again."""
    show = f"""
        import sys
        sys.modules["tensorflow"] = None
        from pathlib import Path
        from benchmarks import bench_gpu_cifake
        bench_gpu_cifake.keep_compiled_programs(Path({str(tmp_path / "work")!r}))
        import jax
        print(jax.config.jax_compilation_cache_dir)
    """
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert run_python(show, backend="jax").splitlines()[-1] == str(tmp_path / "work" / "jax-cache")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert run_python(show, backend="jax").splitlines()[-1] == str(tmp_path / "mine")


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_training_stopped_mid_epoch_on_jax_ends_with_its_one_line_and_exit_1(tmp_path, make_class_folder, stop):
    """On JAX a run stopped during an epoch printed its line, then crashed in the interpreter's teardown of
    TensorFlow's and XLA's runtimes: "Segmentation fault", exit 139, which Slurm and `timeout` read as a crash."""
    import signal
    import time

    for split, count in (("train", 48), ("validation", 16)):
        make_class_folder(tmp_path / "data" / split, {"FAKE": count, "REAL": count})
    environment = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO),
                   "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "ModelTraining.py"), "--data", str(tmp_path / "data"), "--out",
         str(tmp_path / "models"), "--name", "run", "--weights", "none", "--image-size", "32", "--backbone",
         "resnet50", "--head-epochs", "2", "--fine-tune-epochs", "0", "--batch-size", "16", "--augment", "none"],
        cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = []
    for line in process.stdout:
        said.append(line)
        if line.startswith("Epoch 1/"):
            time.sleep(3)  # into the first epoch: compiling its step, or running it
            process.send_signal(getattr(signal, stop))
            break
    said += process.stdout.readlines()
    assert process.wait(timeout=600) == 1, "".join(said[-20:])
    assert said[-1].startswith("error: interrupted. Continue the run with: KERAS_BACKEND=jax python ModelTraining.py "
                               "--resume")  # pasted, the command resumes on JAX, which the run started on
