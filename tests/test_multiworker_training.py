"""ModelTraining.py on two machines: a real two-worker cluster on 127.0.0.1 trains, is killed, resumes.

Two subprocesses with TF_CONFIG (MultiWorkerMirroredStrategy, free ports) run the same command,
each with its own --out: a head epoch and a fine-tuning epoch of a tiny ResNet50. Both are killed
once the chief has backed up epoch 1, then both are started again with --resume: they restore the
head and fine-tune for epoch 2. A second cluster whose workers see different data must stop at
once, on both. Every launch is bounded by a timeout, and both workers are killed on any failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest
from conftest import REPO, free_ports, read_history_csv, write_image

from realvsai.run import load_run

LAUNCH_TIMEOUT = 600  # seconds per launch of the cluster (most of it is building and tracing ResNet50)
HEAD_EPOCHS, FINE_TUNE_EPOCHS = 1, 1


class Cluster:
    """Two ModelTraining.py workers on 127.0.0.1; their output goes to files in ``folder``."""

    def __init__(self, folder: Path, launch: str, arguments: list[list[str]], temporary: Path,
                 folders: list[Path] | None = None):
        addresses = [f"127.0.0.1:{port}" for port in free_ports(len(arguments))]
        self.logs = [folder / f"{launch}_worker{index}.txt" for index in range(len(arguments))]
        self.processes = []
        for index, worker_arguments in enumerate(arguments):
            tf_config = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
            environ = {**os.environ, "TF_CONFIG": tf_config, "TMPDIR": str(temporary), "TF_CPP_MIN_LOG_LEVEL": "3",
                       "PYTHONPATH": str(REPO)}
            with open(self.logs[index], "w") as log:
                self.processes.append(subprocess.Popen(
                    [sys.executable, str(REPO / "ModelTraining.py"), *map(str, worker_arguments)],
                    cwd=folders[index] if folders else REPO,
                    env=environ, stdout=log, stderr=subprocess.STDOUT))
        self.deadline = time.monotonic() + LAUNCH_TIMEOUT

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def output(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")

    def tails(self) -> str:
        return "\n".join(f"--- worker {index}:\n{self.output(index)[-3000:]}" for index in range(len(self.logs)))

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()

    def wait(self) -> list[int]:
        """The workers' exit codes; both are killed when the launch runs past its deadline."""
        try:
            for process in self.processes:
                process.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the two workers did not finish within {LAUNCH_TIMEOUT} s:\n{self.tails()}")
        return [process.returncode for process in self.processes]

    def kill_when(self, marker: Path) -> None:
        """Kills both workers (as a power cut would) as soon as ``marker`` exists."""
        while not marker.exists() and all(process.poll() is None for process in self.processes):
            if time.monotonic() > self.deadline:
                self.kill()
                pytest.fail(f"{marker} did not appear within {LAUNCH_TIMEOUT} s:\n{self.tails()}")
            time.sleep(0.05)
        self.kill()
        assert [process.returncode for process in self.processes] == [-signal.SIGKILL] * 2, \
            f"a worker ended before the kill:\n{self.tails()}"


def worker_temporaries(temporary: Path) -> set[str]:
    return {path.name for path in temporary.iterdir() if path.name.startswith("realvsai-")}


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory) -> dict:
    """Trains on two workers, kills both after epoch 1, resumes both to the end."""
    root = tmp_path_factory.mktemp("multiworker")
    for position, (split, count) in enumerate((("train", 4), ("validation", 2), ("test", 2))):
        for index, name in enumerate(("FAKE", "REAL")):
            for number in range(count):
                write_image(root / "data" / split / name / f"{number}.png", seed=100 * position + 10 * index + number)
    weights = root / "backbone.weights.h5"  # a stand-in for ImageNet weights: two real phases
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(weights)
    temporary = root / "tmp"
    temporary.mkdir()
    outs = [root / "chief_out", root / "worker_out"]  # the same command but --out: the worker must use neither
    settings = ["--data", root / "data", "--name", "cluster", "--weights", weights, "--backbone", "resnet50",
                "--image-size", "32", "--batch-size", "4", "--head-epochs", HEAD_EPOCHS,
                "--fine-tune-epochs", FINE_TUNE_EPOCHS, "--augment", "none", "--head-units", "8"]
    run = outs[0] / "cluster"

    first = Cluster(root, "first", [[*settings, "--out", out] for out in outs], temporary)
    try:
        first.kill_when(run / "backup" / "head" / "backup.json")
    finally:
        first.kill()
    rows_at_kill = read_history_csv(run / "history.csv")
    temporaries_at_kill = worker_temporaries(temporary)

    resumed = Cluster(root, "resumed", [["--resume", "--name", "cluster", "--out", out] for out in outs], temporary)
    try:
        codes = resumed.wait()
    finally:
        resumed.kill()
    return {"run": run, "outs": outs, "codes": codes, "first": first, "resumed": resumed,
            "rows_at_kill": rows_at_kill, "temporaries": (temporaries_at_kill, worker_temporaries(temporary))}


@pytest.mark.slow
def test_both_workers_finish_the_resumed_run(cluster_run):
    assert cluster_run["codes"] == [0, 0], cluster_run["resumed"].tails()


@pytest.mark.slow
def test_the_other_worker_waits_for_the_chiefs_finish(cluster_run):
    """It left as training ended, while the chief still evaluated: with a longer evaluation the chief's TensorFlow
    logged "The following tasks are unhealthy (stopped sending heartbeats) ... The tasks have crashed" above its
    closing line. Its closing line now comes after the chief's evaluation is written."""
    closing = cluster_run["resumed"].logs[1].stat().st_mtime  # the worker's last line is its closing line
    assert closing >= (cluster_run["run"] / "metrics.json").stat().st_mtime


@pytest.mark.slow
def test_the_workers_train_together_under_multi_worker_strategy(cluster_run):
    first = cluster_run["first"]
    assert "training with MultiWorkerMirroredStrategy: worker 0 (chief: writes the files) of 2 workers" \
        in first.output(0)
    assert "training with MultiWorkerMirroredStrategy: worker 1 of 2 workers" in first.output(1)
    config = json.loads((cluster_run["run"] / "model.json").read_text())["config"]
    assert (config["machines"], config["devices"], config["global_batch_size"]) == (2, 2, 8)


@pytest.mark.slow
def test_the_chief_writes_every_output_of_the_run(cluster_run):
    run = cluster_run["run"]
    for name in ("model.h5", "model.json", "history.csv", "training_curves.png", "metrics.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert not (run / "backup").exists()  # the resume state goes once the run has finished
    model, loaded = load_run(run)
    info = loaded.info
    assert info["class_names"] == ["FAKE", "REAL"] and "accuracy" in info["test_metrics"]
    assert model.output_shape == (None, 2)
    assert f"trained {run}" in cluster_run["resumed"].output(0)
    assert f"the chief wrote the run to {run}" in cluster_run["resumed"].output(1)


@pytest.mark.slow
def test_the_other_worker_writes_nothing_but_its_own_temporary_folder(cluster_run):
    assert not cluster_run["outs"][1].exists()
    if importlib.util.find_spec("tensorboard") is not None:  # event files are named after the writing process
        writers = {int(path.name.split(".")[-3]) for path in (cluster_run["run"] / "logs").rglob("events.out.*")}
        chiefs = {cluster_run["first"].pids[0], cluster_run["resumed"].pids[0]}
        assert writers and writers <= chiefs
    at_kill, at_end = cluster_run["temporaries"]
    assert any(name.startswith("realvsai-worker-") for name in at_kill)  # where the killed worker wrote
    assert at_end == at_kill  # the finished worker's folder is gone


@pytest.mark.slow
def test_killed_cluster_resumes_after_the_head_and_ends_with_the_requested_epochs(cluster_run):
    assert [row["epoch"] for row in cluster_run["rows_at_kill"]] == [1]
    assert "after epoch 1 (phase head)" in cluster_run["resumed"].output(0)
    rows = read_history_csv(cluster_run["run"] / "history.csv")
    assert [row["epoch"] for row in rows] == [1, 2]
    assert [row["phase"] for row in rows] == ["head", "fine_tune"]
    assert rows[:1] == cluster_run["rows_at_kill"]


@pytest.mark.slow
def test_workers_that_read_different_data_both_stop_with_a_clear_error(tmp_path):
    # The same relative --data, started from two folders: only the chief's has the data.
    folders = [tmp_path / "chief", tmp_path / "worker"]
    for index, name in enumerate(("FAKE", "REAL")):
        for split in ("train", "validation"):
            write_image(folders[0] / "data" / split / name / "0.png", seed=index)
    folders[1].mkdir()
    arguments = ["--data", "data", "--out", "models", "--name", "run", "--weights", "none", "--image-size", "32"]
    cluster = Cluster(tmp_path, "different", [arguments, arguments], tmp_path, folders)
    try:
        codes = cluster.wait()
    finally:
        cluster.kill()
    errors = [cluster.output(index).strip().splitlines()[-1] for index in range(2)]
    assert codes == [1, 1], cluster.tails()
    assert errors[0].startswith("error: the training data differs between the machines")
    assert errors[1].startswith("error: data is not an existing folder")
    assert not (folders[0] / "models").exists() and not (folders[1] / "models").exists()
