"""The benchmark scripts as a user meets them: a mistake ends in one ``error:`` line, and a run that is not the
README's never replaces the figures the README quotes (benchmarks/results/<name>.json)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, one_error_line, run_script, write_image

RECORDED = REPO / "benchmarks" / "results"


@pytest.fixture
def recorded_results():
    """The recorded results as they were; put back after the test (a failing run may have replaced one), and
    compared by the test that asks."""
    before = {path: path.read_bytes() for path in RECORDED.glob("*.json")}
    yield before
    for path in set(RECORDED.glob("*.json")) - set(before):
        path.unlink()
    for path, content in before.items():
        if path.read_bytes() != content:
            path.write_bytes(content)


def unchanged(before: dict[Path, bytes]) -> bool:
    return {path: path.read_bytes() for path in RECORDED.glob("*.json")} == before


def tiny_dataset(root: Path) -> Path:
    """root/train|test/REAL|FAKE with two 32x32 JPEGs each: a train/test tree as the split benchmark reads it."""
    for group_index, group in enumerate(("train", "test")):
        for class_index, name in enumerate(("FAKE", "REAL")):
            for index in range(2):
                write_image(root / group / name / f"{index}.jpg", seed=group_index * 100 + class_index * 10 + index)
    return root


def tiny_zip(folder: Path) -> Path:
    source = tiny_dataset(folder / "tree")
    archive = folder / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(source.rglob("*.jpg")):
            zipped.write(path, f"cifake/{path.relative_to(source).as_posix()}")
    return archive


MISSING = "/nonexistent/typo"


@pytest.mark.parametrize("script, args", [
    ("bench_accuracy.py", ["--data", MISSING]),
    ("bench_pipeline.py", ["--data", MISSING]),
    ("bench_split.py", [MISSING]),
    ("bench_split.py", ["--zip", MISSING + ".zip"]),
    ("bench_unzip.py", [MISSING + ".zip"]),
    ("bench_app.py", ["--data", MISSING, "--image-size", "32", "--repeats", "1", "--warmup", "1"]),
    ("bench_app.py", ["--image", MISSING + ".jpg", "--image-size", "32", "--repeats", "1", "--warmup", "1"]),
    ("bench_app_memory.py", ["--image", MISSING + ".jpg", "--image-size", "32", "--repeats", "1"]),
    ("bench_augmentation.py", ["--data", MISSING]),
    ("bench_large_images.py", ["--data", MISSING]),
    ("bench_gpu_cifake.py", ["--zip", MISSING + ".zip", "--work", "{tmp}/work"]),
    ("bench_write.py", ["--data", MISSING]),
])
def test_a_missing_path_is_one_error_line(script, args, tmp_path, recorded_results):
    process = run_script(f"benchmarks/{script}", *(arg.format(tmp=tmp_path) for arg in args), timeout=180)

    assert "/nonexistent/typo" in one_error_line(process)
    assert unchanged(recorded_results)


@pytest.mark.parametrize("script", ["bench_unzip.py", "bench_split.py"])
def test_a_file_that_is_not_a_zip_is_one_error_line(script, tmp_path):
    not_a_zip = tmp_path / "notes.zip"
    not_a_zip.write_text("this is not an archive\n")

    process = run_script(f"benchmarks/{script}", *([] if script == "bench_unzip.py" else ["--zip"]), not_a_zip)

    assert "notes.zip" in one_error_line(process)


@pytest.mark.parametrize("script, args", [
    ("bench_pipeline.py", ["--data", MISSING]),
    ("bench_split.py", [MISSING]),
    ("bench_unzip.py", [MISSING + ".zip"]),
    ("bench_app.py", ["--data", MISSING, "--image-size", "32", "--warmup", "1"]),
    ("bench_app_memory.py", ["--image", MISSING + ".jpg", "--image-size", "32"]),
    ("bench_augmentation.py", ["--data", MISSING]),
    ("bench_large_images.py", ["--data", MISSING]),
    ("bench_epoch_overheads.py", []),
    ("bench_gpu.py", []),
    ("bench_write.py", ["--data", MISSING]),
])
def test_no_repeats_is_a_usage_error(script, args, recorded_results):
    process = run_script(f"benchmarks/{script}", "--repeats", "0", *args, timeout=120)

    assert process.returncode == 2, process.stderr[-2000:]
    assert process.stderr.strip().splitlines()[-1].startswith(f"{script}: error: argument --repeats")
    assert unchanged(recorded_results)


def test_no_epochs_is_a_usage_error():
    process = run_script("benchmarks/bench_accuracy.py", "--epochs", "0", "--data", MISSING)

    assert process.returncode == 2 and "--epochs" in process.stderr


def test_a_failed_child_process_is_its_last_line_not_a_traceback(tmp_path):
    (tmp_path / "photos").mkdir()  # a folder, but no class folders in it

    process = run_script("benchmarks/bench_large_images.py", "--data", tmp_path / "photos", "--image-sizes", "32",
                         "--repeats", "1", "--variants", "reduced", "--results", tmp_path / "out.json", timeout=180)

    line = one_error_line(process)
    assert "Traceback" not in process.stderr and "CalledProcessError" not in line and "photos" in line


def test_a_split_run_on_another_zip_leaves_the_recorded_figures(tmp_path, recorded_results):
    process = run_script("benchmarks/bench_split.py", "--zip", tiny_zip(tmp_path), "--repeats", "1",
                         "--workdir", tmp_path)

    assert process.returncode == 0, process.stderr[-2000:]
    assert unchanged(recorded_results)
    assert "--results" in process.stdout  # how to keep the figures


def test_the_split_benchmark_deletes_no_output_until_every_run_is_done(tmp_path, monkeypatch):
    """Each run's output was deleted before the next run: on ext4, creating files within seconds of deleting
    100,000 takes up to ten times the kernel time a file, so a side's time depended on whether it came after a
    deletion (`cp -r` of the CIFAKE zip's tree: 5.5 s once, 37.4 s the next time)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_split

    outs: list[Path] = []

    def run_side(side, source, out, workers):
        assert not out.exists() and all(earlier.is_dir() for earlier in outs)
        (out / "train").mkdir(parents=True)
        outs.append(out)
        return 1.0, 1.0

    monkeypatch.setattr(bench_split, "run_side", run_side)
    assert bench_split.main([str(tiny_dataset(tmp_path / "data")), "--repeats", "2", "--workdir", str(tmp_path),
                             "--results", str(tmp_path / "mine.json")]) == 0
    assert len(outs) == 2 * len(bench_split.SIDES)


def test_a_split_run_writes_where_results_says(tmp_path, recorded_results):
    results = tmp_path / "mine.json"

    process = run_script("benchmarks/bench_split.py", tiny_dataset(tmp_path / "data"), "--repeats", "1",
                         "--workdir", tmp_path, "--results", results)

    assert process.returncode == 0, process.stderr[-2000:]
    assert '"num_files": 8' in results.read_text()
    assert unchanged(recorded_results)


def test_an_unzip_run_on_another_zip_leaves_the_recorded_figures(tmp_path, recorded_results):
    process = run_script("benchmarks/bench_unzip.py", tiny_zip(tmp_path), "--repeats", "1", "--work-dir", tmp_path)

    assert process.returncode == 0, process.stderr[-2000:]
    assert unchanged(recorded_results)
    assert "--results" in process.stdout


def test_a_small_augmentation_run_leaves_the_recorded_figures(tmp_path, recorded_results):
    data = tiny_dataset(tmp_path / "data") / "train"

    process = run_script("benchmarks/bench_augmentation.py", "--data", data, "--images", "2", "--copies", "1",
                         "--repeats", "1", "--workdir", tmp_path, timeout=300)

    assert process.returncode == 0, process.stderr[-2000:]
    assert unchanged(recorded_results)


@pytest.mark.skipif(not hasattr(__import__("os"), "O_TMPFILE"), reason="O_TMPFILE is Linux's")
def test_a_small_write_run_writes_every_file_on_both_sides_and_leaves_the_recorded_figures(tmp_path,
                                                                                          recorded_results):
    data = tiny_dataset(tmp_path / "data") / "train"

    process = run_script("benchmarks/bench_write.py", "--data", data, "--files", "700", "--repeats", "2",
                         "--workdir", tmp_path, timeout=300)

    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stderr.count("s wall") == 4  # each side twice, each run checked to hold exactly its 700 files
    assert "no name vs temporary names" in process.stdout and unchanged(recorded_results)
    assert not list(tmp_path.glob("bench_write_*"))  # removed at the end


def test_a_pipeline_run_of_one_part_leaves_the_recorded_figures(tmp_path, recorded_results):
    data = tiny_dataset(tmp_path / "data") / "train"

    process = run_script("benchmarks/bench_pipeline.py", "--data", data, "--skip", "training", "--legacy-batches",
                         "1", "--repeats", "1", timeout=300)

    assert process.returncode == 0, process.stderr[-2000:]
    assert unchanged(recorded_results)


def test_only_the_readme_run_writes_the_recorded_file():
    sys.path.insert(0, str(REPO))
    from benchmarks import _bench

    parser = _bench.argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    _bench.add_results_option(parser, "accuracy")

    def destination(*argv: str) -> Path | None:
        return _bench.results_destination(parser, parser.parse_args(argv), "accuracy", ("data", "epochs")).path

    assert destination() == destination("--repeats", "5") == RECORDED / "accuracy.json"
    assert destination("--data", str(REPO / "models" / ".." / "data")) == RECORDED / "accuracy.json"
    assert destination("--epochs", "1") is None
    assert destination("--epochs", "1", "--results", "x.json") == Path("x.json")


def test_the_app_benchmark_records_where_its_photo_came_from(tmp_path):
    photo = write_image(tmp_path / "photo.jpg", seed=1, size=(64, 48))
    results = tmp_path / "app.json"

    process = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_app.py"), "--image", str(photo),
                              "--backbone", "resnet50", "--image-size", "32", "--repeats", "1", "--warmup", "1",
                              "--results", str(results)], capture_output=True, text=True, timeout=300)

    assert process.returncode == 0, process.stderr[-2000:]
    assert f'"source": "{photo}"' in results.read_text()


def test_a_cifake_gpu_profile_is_refused_at_once_off_jax(tmp_path, monkeypatch):
    """--profile-steps traces with jax.profiler: on TensorFlow it says so before it unzips or decodes anything."""
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    process = run_script("benchmarks/bench_gpu_cifake.py", "--profile-steps", "2", "--zip", tmp_path / "missing.zip",
                         "--work", tmp_path / "work")
    assert process.returncode == 1, process.stderr
    assert process.stderr.strip().splitlines()[-1] == ("error: --profile-steps traces with jax.profiler. Run with "
                                                       "KERAS_BACKEND=jax, or leave it out.")
    assert not (tmp_path / "work").exists()


def test_a_cifake_gpu_run_at_another_image_size_or_length_is_recorded_beside_the_32px_one():
    """The upscaled runs the README quotes (--image-size 64, --epochs 20) went nowhere without --results, nor
    under a name of their own: a longer run would have taken the place of the README's 15 epochs."""
    sys.path.insert(0, str(REPO))
    from benchmarks import bench_gpu_cifake

    parser = bench_gpu_cifake.make_parser()

    def record(*argv: str) -> tuple[Path | None, str]:
        args = parser.parse_args(argv)
        return bench_gpu_cifake.destination(parser, args).path, bench_gpu_cifake.record_name(args)

    assert record() == (RECORDED / "gpu.json", "cifake")
    assert record("--image-size", "64", "--time-limit", "565") == (RECORDED / "gpu.json", "cifake_64px")
    assert record("--image-size", "64", "--epochs", "20") == (RECORDED / "gpu.json", "cifake_64px_20epochs")
    assert record("--epochs", "3") == (RECORDED / "gpu.json", "cifake_3epochs")
    assert record("--image-size", "64", "--batch-size", "64") == (None, "cifake_64px")
    assert record("--image-size", "96", "--results", "x.json") == (Path("x.json"), "cifake_96px")
