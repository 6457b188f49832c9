"""realvsai.merging: merges that never overwrite, never duplicate, never leak, and add up."""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    disk_full_at_write,
    one_error_line,
    record_disk_waits,
    run_script,
    sha256,
    snapshot,
    syncs_a_batch,
    write_image,
)
from PIL import Image, PngImagePlugin

from realvsai import files, merging, moving
from realvsai.errors import UserError
from realvsai.layout import read_manifest, write_manifest
from realvsai.merging import format_merge_report, merge_datasets
from realvsai.splitting import split_by_class, split_train_test


def make_split(root: Path, counts: dict[tuple[str, str], int], seed: int) -> Path:
    """``root/<split>/<class>/img_NNN.png`` with distinct images whose content depends on ``seed``."""
    for index_pair, ((split, class_name), count) in enumerate(sorted(counts.items())):
        for index in range(count):
            write_image(root / split / class_name / f"img_{index:03d}.png",
                        seed=seed * 10_000 + index_pair * 100 + index)
    return root


def target_of(split: Path, into: Path) -> Path:
    """A target as DataMerger leaves one: ``split``'s images and a manifest.csv that lists them (a merge refuses an
    --into of train/ and test/ alone, with neither validation/ nor manifest.csv: a download not yet split)."""
    merge_datasets([split], into)
    return into


def images(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/*.png"))


COUNTS = {("train", "REAL"): 4, ("train", "FAKE"): 4, ("test", "REAL"): 2, ("test", "FAKE"): 2}


@pytest.fixture
def first(tmp_path) -> Path:
    return make_split(tmp_path / "first", COUNTS, seed=1)


@pytest.fixture
def second(tmp_path) -> Path:
    return make_split(tmp_path / "second", COUNTS, seed=2)


def test_merge_into_a_new_folder_adds_every_file(first, second, tmp_path):
    into = tmp_path / "merged"
    report = merge_datasets([first, second], into)
    assert (report.before, report.added, report.after) == (0, 24, 24)
    assert Counter(sha256(path) for path in images(into)) == Counter(
        sha256(path) for path in images(first) + images(second))


@syncs_a_batch
def test_a_merge_waits_on_the_disk_once_a_batch_of_copies_not_once_a_copy(first, second, tmp_path, monkeypatch):
    """Each copy was fsynced: a merge of the 100,000-file CIFAKE split spent most of its 99 s waiting on the disk.
    The copies of a batch are written under temporary names, synced together, then named, and keep their source's
    modification time."""
    calls = record_disk_waits(monkeypatch)
    into = tmp_path / "merged"

    report = merge_datasets([first, second], into)

    assert report.added == 24 and len(images(into)) == 24
    assert [call for call in calls if call[1] in ("REAL", "FAKE")] == []
    assert 1 <= calls.count(("sync", "")) <= 2
    for source in images(first):
        assert (into / source.relative_to(first)).stat().st_mtime == source.stat().st_mtime
    assert not [path for path in into.rglob(".*") if path.name.endswith(".tmp")]


def test_a_merge_opens_each_source_image_once_to_check_it_and_once_to_copy_it(first, tmp_path, monkeypatch):
    """Its check read each file twice, for the sha256 of its bytes and to decode it: a third of a merge of the
    100,000-file CIFAKE split went to reading the files."""
    import builtins
    import io

    opened = Counter()
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            opened[Path(file).resolve()] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)

    merge_datasets([first], tmp_path / "merged")

    assert {path: opened[path.resolve()] for path in images(first)} == {path: 2 for path in images(first)}


def test_merge_skips_a_file_with_the_same_name_and_content(first, tmp_path):
    into = tmp_path / "merged"
    target_of(first, into)
    before = snapshot(into)
    report = merge_datasets([first], into)
    assert (report.added, report.identical) == (0, 12)
    assert snapshot(into) == before


def test_merge_never_overwrites_a_different_file_with_the_same_name(first, second, tmp_path):
    into = tmp_path / "merged"
    target_of(first, into)
    original = sha256(into / "train" / "REAL" / "img_000.png")
    report = merge_datasets([second], into)
    assert sha256(into / "train" / "REAL" / "img_000.png") == original
    incoming = second / "train" / "REAL" / "img_000.png"
    renamed = into / "train" / "REAL" / f"img_000_{sha256(incoming)[:8]}.png"
    assert sha256(renamed) == sha256(incoming)
    assert report.renamed == 12


def test_a_name_that_is_a_target_file_s_in_another_letter_case_is_renamed_on_every_system(first, second, tmp_path):
    # IMG_000.png beside img_000.png is one file on macOS and Windows: planned as a new name, it was kept on Linux
    # but renamed there, so the two systems made different datasets (and the summary's count of renamed was wrong).
    into = tmp_path / "merged"
    target_of(first, into)
    for path in images(second):
        path.rename(path.with_name(path.name.upper().replace(".PNG", ".png")))
    planned = merge_datasets([second], into, dry_run=True)
    report = merge_datasets([second], into)
    incoming = second / "train" / "REAL" / "IMG_000.png"
    assert sha256(into / "train" / "REAL" / f"IMG_000_{sha256(incoming)[:8]}.png") == sha256(incoming)
    assert not (into / "train" / "REAL" / "IMG_000.png").exists()
    assert planned.renamed == report.renamed == 12


def test_counts_before_plus_added_equal_after(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    shutil.copyfile(second / "test" / "FAKE" / "img_000.png", second / "test" / "FAKE" / "copy.png")
    report = merge_datasets([first, second], into)
    assert report.before == 12
    assert report.before + report.added == report.after == len(images(into))
    assert report.identical == 12 + 1
    assert report.added == 12


def test_content_already_in_another_split_of_the_target_is_refused(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    leaking = second / "test" / "REAL" / "leak.png"
    shutil.copyfile(first / "train" / "REAL" / "img_001.png", leaking)
    report = merge_datasets([second], into)
    assert [Path(source).name for source, _ in report.refused] == ["leak.png"]
    assert not (into / "test" / "REAL" / "leak.png").exists()
    digest = sha256(leaking)
    assert {path.parent.parent.name for path in images(into) if sha256(path) == digest} == {"train"}
    with open(into / "merge-refused.csv", newline="") as stream:
        assert [Path(row["source"]).name for row in csv.DictReader(stream)] == ["leak.png"]


def test_a_later_merge_keeps_the_refused_list_of_an_earlier_one(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    shutil.copyfile(first / "train" / "REAL" / "img_001.png", second / "test" / "REAL" / "leak.png")
    merge_datasets([second], into)
    third = make_split(tmp_path / "third", COUNTS, seed=3)
    shutil.copyfile(first / "train" / "FAKE" / "img_002.png", third / "test" / "FAKE" / "other_leak.png")
    merge_datasets([third], into)
    with open(into / "merge-refused.csv", newline="") as stream:
        assert sorted(Path(row["source"]).name for row in csv.DictReader(stream)) == ["leak.png", "other_leak.png"]


def test_a_repeated_merge_lists_each_refused_file_once_dated_by_the_latest(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    shutil.copyfile(first / "train" / "REAL" / "img_001.png", second / "test" / "REAL" / "leak.png")
    merge_datasets([second], into)
    again = merge_datasets([second], into)
    with open(into / "merge-refused.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [Path(row["source"]).name for row in rows] == ["leak.png"]
    assert rows[0]["merged_at"] == again.started


def test_content_in_two_splits_among_the_sources_is_added_once(first, second, tmp_path):
    shutil.copyfile(first / "train" / "FAKE" / "img_002.png", second / "test" / "FAKE" / "same.png")
    into = tmp_path / "merged"
    report = merge_datasets([first, second], into)
    assert len(report.refused) == 1 and report.refused[0][0].endswith("same.png")
    digest = sha256(first / "train" / "FAKE" / "img_002.png")
    assert [path.parent.parent.name for path in images(into) if sha256(path) == digest] == ["train"]


def test_content_under_another_class_of_the_target_is_refused(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    relabelled = second / "train" / "FAKE" / "same_as_real.png"
    shutil.copyfile(first / "train" / "REAL" / "img_001.png", relabelled)
    report = merge_datasets([second], into)
    assert [Path(source).name for source, _ in report.refused] == ["same_as_real.png"]
    assert "REAL" in report.refused[0][1] and "two classes" in report.refused[0][1]
    assert {path.parent.name for path in images(into) if sha256(path) == sha256(relabelled)} == {"REAL"}
    with open(into / "merge-refused.csv", newline="") as stream:
        assert [Path(row["source"]).name for row in csv.DictReader(stream)] == ["same_as_real.png"]


def test_content_under_two_classes_among_the_sources_is_refused_in_every_copy(first, second, tmp_path):
    shutil.copyfile(second / "train" / "REAL" / "img_000.png", second / "train" / "FAKE" / "also_fake.png")
    shutil.copyfile(second / "train" / "REAL" / "img_000.png", second / "test" / "FAKE" / "also_in_test.png")
    into = tmp_path / "merged"
    merge_datasets([first], into)
    report = merge_datasets([second], into)
    assert sorted(Path(source).name for source, _ in report.refused) == ["also_fake.png", "also_in_test.png",
                                                                         "img_000.png"]
    assert sha256(second / "train" / "REAL" / "img_000.png") not in {sha256(path) for path in images(into)}
    assert report.before + report.added == report.after == 12 + 12 - 1


def save_in_other_bytes(image: Path, target: Path) -> Path:
    """``image``'s pixels saved again as ``target`` (its suffix picks the format; a PNG carries a text chunk), so the
    bytes differ and the decoded pixels do not."""
    target.parent.mkdir(parents=True, exist_ok=True)
    metadata = PngImagePlugin.PngInfo()
    metadata.add_text("Comment", "saved again")
    with Image.open(image) as opened:
        opened.save(target, pnginfo=metadata) if target.suffix == ".png" else opened.save(target)
    assert sha256(target) != sha256(image)
    return target


def test_the_same_pixels_in_other_bytes_in_two_splits_among_the_sources_are_added_once(first, second, tmp_path):
    image = first / "train" / "FAKE" / "img_002.png"
    save_in_other_bytes(image, second / "test" / "FAKE" / "resaved.png")
    into = tmp_path / "merged"
    report = merge_datasets([first, second], into)
    assert [Path(source).name for source, _ in report.refused] == ["resaved.png"]
    assert str(into / "train" / "FAKE" / "img_002.png") in report.refused[0][1] and "two splits" in report.refused[0][1]
    assert not (into / "test" / "FAKE" / "resaved.png").exists()
    with open(into / "merge-refused.csv", newline="") as stream:
        assert [Path(row["source"]).name for row in csv.DictReader(stream)] == ["resaved.png"]


def merge_a_resaved_copy(first: Path, second: Path, into: Path, copy: str) -> merging.MergeReport:
    """Merges ``first``, then ``second`` holding ``first``'s train/REAL/img_001.png saved again as ``copy``."""
    merge_datasets([first], into)
    save_in_other_bytes(first / "train" / "REAL" / "img_001.png", second / copy)
    return merge_datasets([second], into)


def test_the_same_pixels_as_bmp_in_another_split_of_the_target_are_refused(first, second, tmp_path):
    into = tmp_path / "merged"
    report = merge_a_resaved_copy(first, second, into, "test/REAL/leak.bmp")
    assert [Path(source).name for source, _ in report.refused] == ["leak.bmp"]
    assert "(train)" in report.refused[0][1] and "two splits" in report.refused[0][1]
    assert not (into / "test" / "REAL" / "leak.bmp").exists()


def test_the_same_pixels_in_other_bytes_under_another_class_are_refused(first, second, tmp_path):
    into = tmp_path / "merged"
    report = merge_a_resaved_copy(first, second, into, "train/FAKE/same_as_real.png")
    assert [Path(source).name for source, _ in report.refused] == ["same_as_real.png"]
    assert "REAL" in report.refused[0][1] and "two classes" in report.refused[0][1]
    assert not (into / "train" / "FAKE" / "same_as_real.png").exists()


def test_augmented_copies_of_an_image_whose_pixels_are_in_another_split_of_the_target_are_refused(
        first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    tested = save_in_other_bytes(into / "test" / "REAL" / "img_000.png", second / "train" / "REAL" / "tested.png")
    copies = augment_and_move(second, tested)
    report = merge_datasets([second], into)
    refused = {Path(source).name: reason for source, reason in report.refused}
    assert sorted(refused) == ["aug_tested_0.jpg", "aug_tested_1.jpg", "tested.png"]
    assert "augmented copy" in refused["aug_tested_0.jpg"] and "image in test" in refused["aug_tested_0.jpg"]
    assert not {sha256(path) for path in all_images(into)} & set(copies)


def test_a_file_that_does_not_decode_is_refused_with_the_reason(first, second, tmp_path):
    broken = second / "train" / "REAL" / "broken.png"
    broken.write_bytes((second / "train" / "REAL" / "img_000.png").read_bytes()[:200])  # cut off mid-pixels
    into = tmp_path / "merged"
    report = merge_datasets([first, second], into)
    assert [Path(source).name for source, _ in report.refused] == ["broken.png"]
    assert "the image data is broken" in report.refused[0][1]
    assert not (into / "train" / "REAL" / "broken.png").exists()
    assert report.added == 24 and report.after == 24


def test_a_file_that_does_not_decode_already_in_the_target_stays_listed(first, second, tmp_path):
    into = tmp_path / "merged"
    target_of(first, into)
    (into / "train" / "REAL" / "broken.png").write_bytes(b"not an image")
    report = merge_datasets([second], into)
    assert (report.before, report.added, report.after) == (13, 12, 25)
    assert "train/REAL/broken.png" in {row.path for row in read_manifest(into / "manifest.csv")}


def test_datamerger_refuses_source_images_over_its_max_pixels(first, tmp_path, capsys):
    import DataMerger

    into = tmp_path / "merged"
    assert DataMerger.main([str(first), "--into", str(into), "--max-pixels", "100", "-q"]) == 1
    assert not list(into.glob("*/*/*.png"))
    with open(into / "merge-refused.csv", newline="") as stream:
        reasons = [row["reason"] for row in csv.DictReader(stream)]
    assert len(reasons) == 12 and all("limit of 100 pixels" in reason for reason in reasons)


def test_datamerger_that_refused_a_file_exits_1_after_merging_the_others_and_its_summary(first, second, tmp_path,
                                                                                          capsys):
    import DataMerger

    into = tmp_path / "merged"
    merge_datasets([first], into)
    shutil.copyfile(first / "train" / "REAL" / "img_001.png", second / "test" / "REAL" / "leak.png")
    assert DataMerger.main([str(second), "--into", str(into), "-q"]) == 1
    assert len(images(into)) == 24  # the 12 of first, and the 12 others of second
    out, err = capsys.readouterr()
    assert f"files in {into}: 12 before + 12 added = 24 after" in out
    [line] = err.strip().splitlines()
    assert line.startswith("error: refused 1 file ") and str(into / merging.REFUSED_NAME) in line
    assert "DataMerger.py again" in line


def test_a_merge_of_two_sources_run_again_keeps_one_row_for_each_refused_file(first, second, tmp_path):
    """A file of the second source that leaked from the first's train was refused "as the first's file" in the merge,
    and "as the target's file" when it ran again (as an interrupted merge does): two rows for one refusal, and a
    record that depended on whether the run was interrupted."""
    shutil.copyfile(first / "train" / "REAL" / "img_001.png", second / "test" / "REAL" / "leak.png")
    into = tmp_path / "merged"

    def refused() -> list[dict[str, str]]:
        with open(into / merging.REFUSED_NAME, newline="") as stream:
            return [{key: value for key, value in row.items() if key != "merged_at"} for row in csv.DictReader(stream)]

    merge_datasets([first, second], into)
    once = refused()
    merge_datasets([first, second], into)

    assert refused() == once and len(once) == 1
    assert f"same content as {into / 'train' / 'REAL' / 'img_001.png'} (train)" in once[0]["reason"]


def test_a_merge_with_a_refused_list_it_cannot_read_stops_before_merging_anything(first, second, tmp_path,
                                                                                  capsys):
    """It merged, then replaced an edited merge-refused.csv with empty rows and its own."""
    import DataMerger

    into = tmp_path / "merged"
    merge_datasets([first], into)
    (into / merging.REFUSED_NAME).write_text("merged_at;source;reason\n2026-11-01T10:00:00;a.png;two splits\n")
    shutil.copyfile(first / "train" / "REAL" / "img_001.png", second / "test" / "REAL" / "leak.png")
    before = snapshot(into)
    assert DataMerger.main([str(second), "--into", str(into), "-q"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "is not a list this project wrote" in line
    assert snapshot(into) == before


def test_datamerger_dry_run_that_would_refuse_a_file_exits_0(first, second, tmp_path, capsys):
    import DataMerger

    into = tmp_path / "merged"
    merge_datasets([first], into)
    shutil.copyfile(first / "train" / "REAL" / "img_001.png", second / "test" / "REAL" / "leak.png")
    assert DataMerger.main([str(second), "--into", str(into), "--dry-run", "-q"]) == 0
    out, err = capsys.readouterr()
    assert "refused (content already in another split" in out and ": 1" in out and err == ""


def test_dry_run_changes_nothing_and_predicts_the_real_run(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    shutil.copyfile(first / "train" / "REAL" / "img_000.png", second / "test" / "REAL" / "leak.png")
    trees = [into, first, second]
    before = [snapshot(folder) for folder in trees]
    planned = merge_datasets([second], into, dry_run=True)
    assert [snapshot(folder) for folder in trees] == before
    done = merge_datasets([second], into)
    assert (planned.before, planned.added, planned.renamed, planned.identical, planned.after, len(planned.refused)) \
        == (done.before, done.added, done.renamed, done.identical, done.after, len(done.refused))


def test_dry_run_into_a_missing_folder_creates_nothing(first, tmp_path):
    merge_datasets([first], tmp_path / "merged", dry_run=True)
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("where", ["under-a-file", "read-only", "train-is-a-file"])
def test_a_dry_run_fails_where_the_merge_would_fail_to_write(first, tmp_path, monkeypatch, where):
    """It said "0 before + 40 would be added ... dry run", exit 0, where the merge itself then failed: --into under a
    file, in a folder the user may not write in, or holding a file where the merge writes a folder."""
    import errno

    if where == "under-a-file":
        (tmp_path / "afile").write_text("mine")
        into, expected = tmp_path / "afile" / "merged", errno.ENOTDIR
    elif where == "train-is-a-file":
        (tmp_path / "merged").mkdir()
        (tmp_path / "merged" / "train").write_text("mine")
        into, expected = tmp_path / "merged", errno.ENOTDIR
    else:
        (tmp_path / "locked").mkdir()
        into, expected = tmp_path / "locked" / "merged", errno.EACCES
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **options: (
            Path(path) != tmp_path / "locked" and real_access(path, mode, **options)))  # as for a user, not root

    for dry_run in (True, False) if where != "read-only" else (True,):
        with pytest.raises(OSError) as failed:
            merge_datasets([first], into, dry_run=dry_run)
        assert failed.value.errno == expected


def test_an_interrupted_merge_is_completed_without_duplicates(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first, second], into)
    complete = Counter(sha256(path) for path in images(into))
    for path in images(into)[::2]:  # as if the merge had stopped before writing these
        path.unlink()
    report = merge_datasets([first, second], into)
    assert report.added == 12
    assert Counter(sha256(path) for path in images(into)) == complete


def test_a_merge_stopped_by_a_full_disk_in_a_batch_of_copies_leaves_no_temporary_and_is_completed(
        first, second, tmp_path, monkeypatch):
    expected = Counter(sha256(path) for path in images(first) + images(second))
    disk_full_at_write(monkeypatch, 20)  # the records, a batch of copies, then part of the next
    monkeypatch.setattr(merging, "_PLACE_CHUNK", 8)
    into = tmp_path / "merged"
    with pytest.raises(OSError, match="No space"):
        merge_datasets([first, second], into)
    assert not [path for path in into.rglob("*") if path.name.endswith(".tmp")]
    assert 0 < len(images(into)) < 24

    merge_datasets([first, second], into)

    assert Counter(sha256(path) for path in images(into)) == expected


def test_different_class_names_are_an_error_naming_both_and_rename(first, tmp_path):
    other = make_split(tmp_path / "art", {("train", "RealArt"): 2, ("train", "FAKE"): 2}, seed=3)
    with pytest.raises(UserError, match=r"\['FAKE', 'RealArt'\].*\['FAKE', 'REAL'\].*--rename"):
        merge_datasets([first, other], tmp_path / "merged")


def test_class_names_must_match_the_existing_target(first, tmp_path):
    into = make_split(tmp_path / "merged", {("train", "Real"): 1, ("train", "Fake"): 1}, seed=4)
    with pytest.raises(UserError, match="--rename"):
        merge_datasets([first], into)


def test_a_source_with_some_of_the_target_classes_adds_to_them(first, tmp_path):
    """More images of a small class alone: the usual way to grow it."""
    into = tmp_path / "merged"
    merge_datasets([first], into)
    extra = make_split(tmp_path / "extra", {("train", "REAL"): 3}, seed=5)
    report = merge_datasets([extra], into)
    assert report.added == 3 and len(list((into / "train" / "REAL").iterdir())) == 7
    assert sorted(path.name for path in (into / "train").iterdir()) == ["FAKE", "REAL"]


def test_a_new_target_takes_its_classes_from_the_source_with_the_most(first, tmp_path):
    extra = make_split(tmp_path / "extra", {("train", "REAL"): 3}, seed=5)
    assert merge_datasets([extra, first], tmp_path / "merged").added == 15


def test_a_class_the_target_has_not_is_refused(first, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    other = make_split(tmp_path / "other", {("train", "REAL"): 1, ("train", "SCAN"): 1}, seed=6)
    with pytest.raises(UserError, match=r"\['REAL', 'SCAN'\].*\['FAKE', 'REAL'\].*'SCAN'.*--rename"):
        merge_datasets([other], into)


def test_a_class_spelled_otherwise_is_refused_with_the_split_command_that_renames_it(first, tmp_path):
    """It said "re-split with --rename OLD=NEW": run into the split's own folder, that split was refused as another
    one, a second refusal to get past."""
    into = tmp_path / "merged"
    merge_datasets([first], into)
    other = make_split(tmp_path / "other", {(split, name): 2 for split in ("train", "validation", "test")
                                            for name in ("REAL", "SCAN")}, seed=6)
    with pytest.raises(UserError) as refused:
        merge_datasets([other], into)
    renamed = tmp_path / "other-renamed"
    assert (f"split it again under the names of {into}: python DataSplitD2.py {other} --out {renamed} --rename "
            f"OLD=NEW (one for each class to rename), then merge that: python DataMerger.py {renamed} --into {into}"
            in str(refused.value)), str(refused.value)
    split_train_test(other, renamed, renames={"SCAN": "FAKE"})  # what it says, OLD=NEW filled in
    assert merge_datasets([renamed], into).added == 12


def test_a_class_the_target_has_not_is_added_when_asked(tmp_path):
    """A one-class split grows into a dataset class by class: the splitter's advice for it."""
    into = make_split(tmp_path / "merged", {("train", "REAL"): 2, ("validation", "REAL"): 1, ("test", "REAL"): 1},
                      seed=9)
    other = make_split(tmp_path / "other", {("train", "FAKE"): 2, ("validation", "FAKE"): 1, ("test", "FAKE"): 1},
                       seed=10)
    with pytest.raises(UserError, match=r"To add FAKE as a new class, run again with --add-classes"):  # not "classes"
        merge_datasets([other], into)
    assert merge_datasets([other], into, add_classes=True).added == 4
    assert sorted(path.name for path in (into / "train").iterdir()) == ["FAKE", "REAL"]


@pytest.mark.parametrize("add_classes", [False, True])
def test_a_class_spelled_in_another_letter_case_is_refused_even_with_add_classes(first, tmp_path, add_classes):
    """CIFAKE's REAL/FAKE beside another download's Real/Fake: --add-classes made a 4-class dataset of them, and
    training a 4-class model (one folder on macOS and Windows)."""
    into = tmp_path / "merged"
    merge_datasets([first], into)
    other = make_split(tmp_path / "other", {("train", "Real"): 2, ("train", "Fake"): 2}, seed=6)
    with pytest.raises(UserError, match=r"\['Fake', 'Real'\].*only in letter case.*--rename Fake=FAKE --rename "
                                        r"Real=REAL"):
        merge_datasets([other], into, add_classes=add_classes)
    assert sorted(path.name for path in (into / "train").iterdir()) == ["FAKE", "REAL"]


def test_the_rename_a_case_only_class_needs_is_given_as_words_the_shell_keeps(tmp_path):
    """"--rename real photos=Real photos", pasted, split into three words."""
    into = make_split(tmp_path / "into", {("train", "Real photos"): 2, ("train", "FAKE"): 2}, seed=5)
    other = make_split(tmp_path / "other", {("train", "real photos"): 2, ("train", "FAKE"): 2}, seed=6)
    with pytest.raises(UserError, match=r"-renamed --rename 'real photos=Real photos', then merge that"):
        merge_datasets([other], into, add_classes=True)


def test_datamerger_adds_classes_with_its_flag(tmp_path):
    into = make_split(tmp_path / "merged", {("train", "REAL"): 2}, seed=11)
    other = make_split(tmp_path / "other", {("train", "FAKE"): 2}, seed=12)
    refused = run_script("DataMerger.py", other, "--into", into, "--quiet")
    assert refused.returncode == 1 and "--add-classes" in one_error_line(refused)
    assert run_script("DataMerger.py", other, "--into", into, "--add-classes", "--quiet").returncode == 0
    assert (into / "train" / "FAKE").is_dir()


def test_a_merge_that_leaves_a_class_without_validation_images_names_no_training_step(tmp_path, capsys):
    """--add-classes brought a class with train images only; the merge said "Next: ... train", which refused it."""
    import DataMerger

    into = make_split(tmp_path / "merged", {(split, name): 2 for split in ("train", "validation", "test")
                                            for name in ("FAKE", "REAL")}, seed=11)
    other = make_split(tmp_path / "other", {("train", "OTHER"): 3}, seed=12)

    assert DataMerger.main([str(other), "--into", str(into), "--add-classes", "-q"]) == 0

    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("Not ready for training: no validation images of OTHER") and "ModelTraining" not in last


@pytest.mark.parametrize("move", [False, True])
def test_files_of_a_source_that_a_merge_leaves_out_are_named(first, tmp_path, move):
    """A GIF, a TIFF and an image in a sub-folder of a class folder stayed in SOURCE, even with --move, and the merge
    named none of them (the splitters list such files in skipped.csv)."""
    write_image(first / "train" / "FAKE" / "more" / "nested.png", seed=70)
    Image.new("RGB", (8, 8)).save(first / "train" / "FAKE" / "anim.gif")
    (first / "train" / "FAKE" / ".DS_Store").write_bytes(b"view")  # macOS' own: not worth a word

    report = merge_datasets([first], tmp_path / "merged", move=move)

    left_out = {Path(path).name: reason for path, reason in report.left_out}
    assert left_out.keys() == {"nested.png", "anim.gif"}
    assert "sub-folder" in left_out["nested.png"] and "format not read here" in left_out["anim.gif"]
    assert "left out of the sources: 2 files" in format_merge_report(report)


def test_a_class_name_macos_wrote_decomposed_merges_into_the_composed_folder(tmp_path):
    """"tumör" typed on Linux (NFC) and written by macOS (NFD) print alike: one class, one folder."""
    composed, decomposed = "tum\u00f6r", "tumo\u0308r"
    into = make_split(tmp_path / "merged", {("train", composed): 2, ("train", "normal"): 2}, seed=7)
    mac = make_split(tmp_path / "mac", {("train", decomposed): 2, ("train", "normal"): 2}, seed=8)
    assert merge_datasets([mac], into).added == 4
    assert sorted(path.name for path in (into / "train").iterdir()) == ["normal", composed]
    assert len(list((into / "train" / composed).iterdir())) == 4


def test_a_target_folder_macos_renamed_is_one_class_with_its_manifest_s_spelling(tmp_path):
    """The folder on disk decomposed, manifest.csv (written before) composed: one class, not two look-alikes."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    into = tmp_path / "merged"
    merge_datasets([make_split(tmp_path / "first", {("train", composed): 2, ("train", "B"): 2}, seed=13)], into)
    (into / "train" / composed).rename(into / "train" / decomposed)
    source = make_split(tmp_path / "more", {("train", composed): 2, ("train", "B"): 2}, seed=14)
    assert merge_datasets([source], into).added == 4
    assert sorted(path.name for path in (into / "train").iterdir()) == ["B", decomposed]


def test_a_source_with_two_classes_that_print_alike_is_refused(tmp_path):
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    into = make_split(tmp_path / "merged", {("train", composed): 2, ("train", "B"): 2}, seed=15)
    source = make_split(tmp_path / "both", {("train", composed): 1, ("train", decomposed): 1}, seed=16)
    with pytest.raises(UserError, match="differ only in letter case or accent encoding"):
        merge_datasets([source], into)
    with pytest.raises(UserError, match="differ only in letter case or accent encoding"):  # into a new target too
        merge_datasets([source], tmp_path / "new")


def test_a_source_with_two_classes_that_differ_only_in_letter_case_is_refused_into_a_new_target(tmp_path):
    """REAL beside real (one folder on macOS and Windows) made a merged dataset of both, as accent twins do not."""
    source = make_split(tmp_path / "both", {("train", "REAL"): 1, ("train", "real"): 1, ("train", "FAKE"): 1},
                        seed=17)
    with pytest.raises(UserError, match=r"\['REAL', 'real'\].*differ only in letter case or accent encoding"):
        merge_datasets([source], tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_source_whose_classes_differ_in_letter_case_is_told_the_commands_that_rename_and_merge_it(tmp_path):
    """"Split that dataset again with --rename Fake=FAKE --rename Real=REAL (into a new --out)": run on its raw folder,
    the renames name no folder there; the split that takes them, and the merge after it, were left to guess."""
    from realvsai.splitting import split_train_test

    into = make_split(tmp_path / "data", {("train", "REAL"): 3, ("train", "FAKE"): 3, ("validation", "REAL"): 1,
                                          ("validation", "FAKE"): 1}, seed=20)
    art = make_split(tmp_path / "data" / "art", {("train", "Real"): 4, ("train", "Fake"): 4, ("validation", "Real"): 1,
                                                  ("validation", "Fake"): 1, ("test", "Real"): 1,
                                                  ("test", "Fake"): 1}, seed=21)
    renamed = tmp_path / "data" / "art-renamed"

    with pytest.raises(UserError) as error:
        merge_datasets([art], into)

    split = f"python DataSplitD2.py {art} --out {renamed} --rename Fake=FAKE --rename Real=REAL"
    assert split in str(error.value) and f"python DataMerger.py {renamed} --into {into}" in str(error.value)
    split_train_test(art, renamed, renames={"Fake": "FAKE", "Real": "REAL"})
    assert merge_datasets([renamed], into).added == 12


@pytest.mark.parametrize("add_classes", [False, True])
def test_a_class_in_another_letter_case_and_accent_encoding_is_refused_as_a_letter_case_twin(tmp_path, add_classes):
    """"Café" from a Mac (decomposed) beside the target's typed "café": it was no class of the target's, and
    --add-classes added it, a second class that macOS holds in the same folder."""
    composed, decomposed = "caf\u00e9", "Cafe\u0301"
    into = make_split(tmp_path / "merged", {("train", composed): 2, ("train", "B"): 2}, seed=18)
    mac = make_split(tmp_path / "mac", {("train", decomposed): 2, ("train", "B"): 2}, seed=19)
    with pytest.raises(UserError, match="differ only in letter case or accent encoding") as error:
        merge_datasets([mac], into, add_classes=add_classes)
    assert f"--rename '{decomposed}={composed}'" in str(error.value)
    # The merge it says to run again keeps --add-classes: without it, that merge was refused in turn.
    assert str(error.value).endswith(f"--into {into} --add-classes" if add_classes else f"--into {into}")
    assert sorted(path.name for path in (into / "train").iterdir()) == ["B", composed]


def test_move_removes_merged_source_files_but_keeps_refused_ones(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    shutil.copyfile(first / "train" / "REAL" / "img_000.png", second / "test" / "REAL" / "leak.png")
    report = merge_datasets([second], into, move=True)
    assert [path.name for path in images(second)] == ["leak.png"]
    assert report.added == 12 and report.after == 24



def test_the_copying_bar_counts_only_the_files_the_merge_places(first, second, tmp_path, monkeypatch):
    """A merge that added nothing showed "copying: 0%| 0/10000" standing still, then vanished: its total counted the
    files it skips as identical and those it refuses, which it never copies."""
    into = target_of(first, tmp_path / "merged")
    shutil.copyfile(first / "train" / "REAL" / "img_000.png", second / "test" / "REAL" / "leak.png")  # refused
    bars = []

    class Bar:
        def __init__(self, iterable, total=None, desc=None, **kwargs):
            self.counts = [desc, total, 0]
            bars.append(self.counts)

        def update(self, count):
            self.counts[2] += count

        def close(self):
            pass

    monkeypatch.setattr(merging, "progress", Bar)
    report = merge_datasets([first, second], into)
    assert (report.added, report.identical, len(report.refused)) == (12, 12, 1)
    assert [counts for counts in bars if counts[0] == "copying"] == [["copying", 12, 12]]
    bars.clear()
    assert merge_datasets([first, second], into).added == 0
    assert [counts for counts in bars if counts[0] == "copying"] == []

def test_manifest_lists_every_file_with_its_source(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first, second], into)
    rows = read_manifest(into / "manifest.csv")
    assert sorted(row.path for row in rows) == sorted(path.relative_to(into).as_posix() for path in images(into))
    assert all(row.sha256 == sha256(into / row.path) for row in rows)
    assert all(Path(row.source).is_file() and sha256(Path(row.source)) == row.sha256 for row in rows)


def test_a_target_file_its_manifest_does_not_list_gets_the_source_a_merge_finds_its_content_in(first, tmp_path):
    """As a merge killed between copying a file and listing it leaves the target: merged again, the file is
    "identical", and its row names the source file it came from, not none."""
    into = tmp_path / "merged"
    merge_datasets([first], into)
    rows = read_manifest(into / "manifest.csv")
    write_manifest(into / "manifest.csv", [row for row in rows if row.path != "train/REAL/img_000.png"])
    report = merge_datasets([first], into)
    assert report.added == 0
    assert read_manifest(into / "manifest.csv") == rows


def test_a_merge_killed_between_its_copies_and_their_times_gives_them_their_times_when_run_again(
        first, tmp_path, monkeypatch):
    """Killed after a batch of copies was on the disk and before their sources' times were copied, the re-run found
    them "identical" and left them with the time of the killed copy, where an uninterrupted merge keeps the
    source's."""
    stamp = 1_000_000_000
    for source in images(first):
        os.utime(source, (stamp, stamp))
    into = tmp_path / "merged"

    def killed(source, target, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(files.shutil, "copystat", killed)
        with pytest.raises(KeyboardInterrupt):
            merge_datasets([first], into)
    assert len(images(into)) == len(images(first))  # the whole batch is on the disk, without its times
    merge_datasets([first], into)
    assert {path.relative_to(into).as_posix(): path.stat().st_mtime for path in images(into)} == {
        path.relative_to(first).as_posix(): stamp for path in images(first)}


def test_merge_keeps_the_sources_of_the_targets_own_manifest(tmp_path, make_class_folder):
    art = make_class_folder(tmp_path / "art", {"REAL": 10, "FAKE": 10})
    into = tmp_path / "data"
    split_by_class(art, into)
    sources = {row.path: row.source for row in read_manifest(into / "manifest.csv")}
    merge_datasets([make_split(tmp_path / "more", COUNTS, seed=9)], into)
    after = {row.path: row.source for row in read_manifest(into / "manifest.csv")}
    assert {path: after[path] for path in sources} == sources
    assert len(after) == 20 + 12



def test_a_merge_into_a_split_decodes_only_the_files_changed_since_its_record_of_checks(tmp_path, make_class_folder,
                                                                                          decoded):
    """A merge decoded every file of its target (the 99,837 of a CIFAKE split: 34-52 s of a 90 s merge of 10,000),
    where the split's .checks.json, which a re-run of the split reuses, holds each file's check by its sha256."""
    into = tmp_path / "data"
    split_by_class(make_class_folder(tmp_path / "art", {"REAL": 10, "FAKE": 10}, suffix=".bmp"), into)
    changed, duplicated = sorted(into.glob("train/REAL/*.bmp"))[0], sorted(into.glob("test/FAKE/*.bmp"))[0]
    write_image(changed, seed=99)  # other pixels in the bytes the record no longer holds
    more = make_split(tmp_path / "more", {("train", "REAL"): 2, ("train", "FAKE"): 2, ("test", "REAL"): 1}, seed=3)
    shutil.copyfile(duplicated, more / "train" / "FAKE" / "copy.bmp")
    shutil.copyfile(changed, more / "test" / "REAL" / "changed.bmp")
    decoded.clear()
    report = merge_datasets([more], into)
    assert sorted(decoded) == sorted([changed.name, "copy.bmp", "changed.bmp", *(path.name for path in images(more))])
    assert sorted(report.refused) == sorted([
        (str(more / "test" / "REAL" / "changed.bmp"),
         f"same content as {changed} (train); adding it to test would put one image in two splits"),
        (str(more / "train" / "FAKE" / "copy.bmp"),
         f"same content as {duplicated} (test); adding it to train would put one image in two splits")])
    assert report.added == 5

def datasets_by_origin(into: Path, splits: dict[str, Path]) -> dict[str, set[str]]:
    """The ``dataset`` names manifest.csv gives the files of each of ``splits`` (by its name), by content."""
    named = {row.sha256: row.dataset for row in read_manifest(into / "manifest.csv")}
    return {name: {named[sha256(path)] for path in images(split) if sha256(path) in named}
            for name, split in splits.items()}


@pytest.fixture
def two_downloads(tmp_path, make_class_folder) -> dict[str, Path]:
    """Two different datasets that both unzip to a folder named Dataset, each split into a folder of its own."""
    splits = {}
    for seed, name in enumerate("ab", start=1):
        split_by_class(make_class_folder(tmp_path / name / "Dataset", {"REAL": 10, "FAKE": 10}, seed=seed),
                       tmp_path / name / "split")
        splits[name] = tmp_path / name / "split"
    return splits


def test_two_datasets_of_one_folder_name_stay_two_sources_after_a_merge(two_downloads, tmp_path, caplog):
    into = tmp_path / "merged"
    merge_datasets([two_downloads["a"], two_downloads["b"]], into)
    assert datasets_by_origin(into, two_downloads) == {"a": {"Dataset"}, "b": {"Dataset-2"}}
    assert "Dataset-2" in caplog.text and str(two_downloads["b"]) in caplog.text


def test_two_datasets_whose_names_differ_only_in_accent_encoding_stay_two_sources_that_print_apart(
        tmp_path, make_class_folder):
    """Two downloads that unzip to Données/, one of them on a Mac (a decomposed accent): both kept the name, so the
    per-source accuracy listed two sources that print alike."""
    decomposed, composed = "Donne\u0301es", "Donn\u00e9es"
    splits = {}
    for seed, (name, folder) in enumerate((("a", decomposed), ("b", composed)), start=1):
        split_by_class(make_class_folder(tmp_path / name / folder, {"REAL": 10, "FAKE": 10}, seed=seed),
                       tmp_path / name / "split")
        splits[name] = tmp_path / name / "split"
    into = tmp_path / "merged"
    merge_datasets([splits["a"], splits["b"]], into)
    assert datasets_by_origin(into, splits) == {"a": {decomposed}, "b": {f"{composed}-2"}}


def test_a_dataset_merged_into_a_target_with_a_source_of_its_name_gets_a_name_of_its_own(two_downloads, tmp_path):
    into = tmp_path / "data"
    split_by_class(tmp_path / "a" / "Dataset", into)  # the target's own source is called Dataset too
    merge_datasets([two_downloads["b"]], into)
    assert datasets_by_origin(into, two_downloads) == {"a": {"Dataset"}, "b": {"Dataset-2"}}


def test_merging_a_dataset_again_keeps_its_name(two_downloads, tmp_path):
    into = tmp_path / "merged"
    for source in ("a", "b", "a", "b"):  # A, then B, then each again: no Dataset-3
        merge_datasets([two_downloads[source]], into)
    assert datasets_by_origin(into, two_downloads) == {"a": {"Dataset"}, "b": {"Dataset-2"}}
    assert {row.dataset for row in read_manifest(into / "manifest.csv")} == {"Dataset", "Dataset-2"}


def test_an_interrupted_merge_completed_keeps_the_name_it_gave_a_dataset(two_downloads, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([two_downloads["a"], two_downloads["b"]], into)
    for path in images(into)[::2]:  # as if the merge had stopped before writing these
        path.unlink()
    merge_datasets([two_downloads["a"], two_downloads["b"]], into)
    assert datasets_by_origin(into, two_downloads) == {"a": {"Dataset"}, "b": {"Dataset-2"}}


def test_a_source_without_split_folders_is_an_error(tmp_path, make_class_folder):
    flat = make_class_folder(tmp_path / "flat", {"REAL": 2, "FAKE": 2})
    with pytest.raises(UserError, match=r"DataSplitD1\.py or DataSplitD2\.py"):
        merge_datasets([flat], tmp_path / "merged")


def test_datamerger_refuses_a_split_folder_as_into_before_writing_anything(first, second, tmp_path):
    """It merged "0 before + 12 added" into data/train, nesting train/, validation/ and test/ (test images
    inside the training split)."""
    data = shutil.copytree(first, tmp_path / "data")
    before = snapshot(data)
    line = one_error_line(run_script("DataMerger.py", second, "--into", data / "train"))
    assert f"--into {data / 'train'} is a split folder" in line and f"e.g. --into {data}." in line
    assert snapshot(data) == before



@pytest.mark.parametrize("inside", [("train", "REAL"), ("test", "more"), ("augmented_train",)])
def test_a_merge_into_a_folder_inside_a_split_is_refused_before_anything_is_written(first, second, tmp_path, inside):
    """--into data/train/REAL merged with exit 0, nesting train/FAKE/ of another dataset inside the class REAL,
    which a split (DataSplitD1.py --out) refuses."""
    data = tmp_path / "data"
    merge_datasets([first], data)  # a split, with its manifest.csv
    (data / "augmented_train").mkdir()
    before, paths = snapshot(data), sorted(data.rglob("*"))

    with pytest.raises(UserError, match=rf"{inside[0]}/ of the split in {re.escape(str(data))}.*"
                                        rf"--into {re.escape(str(data))}\.$"):
        merge_datasets([second], data.joinpath(*inside))

    assert snapshot(data) == before and sorted(data.rglob("*")) == paths

@pytest.mark.parametrize("name", ["train", "Validation", "TEST"])
def test_a_new_into_named_like_a_split_in_any_case_is_refused(first, tmp_path, name):
    with pytest.raises(UserError, match=f"--into .*{name} is a split folder; give the dataset folder"):
        merge_datasets([first], tmp_path / "data" / name)
    assert not (tmp_path / "data").exists()


def test_an_into_that_holds_class_folders_of_images_is_refused(first, tmp_path, make_class_folder):
    flat = make_class_folder(tmp_path / "flat", {"REAL": 2, "FAKE": 2})
    before = snapshot(flat)
    with pytest.raises(UserError, match=r"--into .*flat holds class folders of images \(FAKE, REAL\)"):
        merge_datasets([first], flat)
    assert snapshot(flat) == before


def test_an_into_that_is_a_download_not_yet_split_is_refused(first, tmp_path, make_class_folder):
    """--into data/raw/cifake (for --into data) merged into the download's train/ and test/ and added a validation/
    and a manifest.csv: the download then read as a split, never checked for duplicates, and its own split took the
    merged validation/ as the download's."""
    download = tmp_path / "raw" / "cifake"
    for seed, split in enumerate(["train", "test"]):
        make_class_folder(download / split, {"REAL": 2, "FAKE": 2}, seed=seed + 20)
    before, paths = snapshot(download), sorted(download.rglob("*"))
    with pytest.raises(UserError, match=r"^--into .*cifake is a download not yet split \(train/, test/.*nothing was "
                                        r"written.*python DataSplitD2\.py .*cifake --out data"):
        merge_datasets([first], download)
    assert snapshot(download) == before and sorted(download.rglob("*")) == paths


def test_an_into_that_holds_images_of_its_own_is_refused(first, tmp_path, make_class_folder):
    """--into flat/REAL merged train/ and test/ in among the images of REAL, which the next split of flat read as
    images of REAL."""
    flat = make_class_folder(tmp_path / "flat", {"REAL": 2, "FAKE": 2})
    before, paths = snapshot(flat), sorted(flat.rglob("*"))
    with pytest.raises(UserError, match=r"^--into .*REAL is a class folder of images \(it holds img_000\.png\)"):
        merge_datasets([first], flat / "REAL")
    assert snapshot(flat) == before and sorted(flat.rglob("*")) == paths


def test_a_dataset_folder_named_like_a_split_can_be_merged_into(first, second, tmp_path):
    into = shutil.copytree(target_of(first, tmp_path / "merged"), tmp_path / "test")  # a dataset, not a split
    report = merge_datasets([second], into)
    assert (report.before, report.added, report.after) == (12, 12, 24)


def test_a_source_that_is_a_split_folder_is_refused_naming_its_dataset_folder(first, tmp_path):
    with pytest.raises(UserError) as caught:
        merge_datasets([first / "train"], tmp_path / "merged")
    assert f"SOURCE {first / 'train'} is a split folder" in str(caught.value)
    assert str(caught.value).endswith(f"e.g. {first}.")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("flag", ["SOURCE", "--into"])
def test_the_dataset_folder_a_split_folder_refusal_names_is_quoted_where_it_has_a_space(tmp_path, flag):
    """It said "e.g. .../my data": pasted, the path was two arguments."""
    dataset = make_split(tmp_path / "my data", COUNTS, seed=1)
    other = make_split(tmp_path / "other", COUNTS, seed=2)
    sources, into = ([dataset / "train"], tmp_path / "merged") if flag == "SOURCE" else ([other], dataset / "train")
    with pytest.raises(UserError) as caught:
        merge_datasets(sources, into)
    example = shlex.quote(str(dataset))
    assert str(caught.value).endswith(f"e.g. {example}." if flag == "SOURCE" else f"e.g. --into {example}.")


def test_merging_a_folder_into_itself_is_refused(first, tmp_path):
    into = target_of(first, tmp_path / "merged")
    with pytest.raises(UserError, match="overlap"):
        merge_datasets([into], into)


def test_a_source_inside_a_split_folder_of_the_target_is_refused(tmp_path):
    nested = make_split(tmp_path / "data" / "train" / "extra", COUNTS, seed=5)
    with pytest.raises(UserError, match="overlap"):
        merge_datasets([nested], tmp_path / "data")


def test_a_source_beside_the_targets_split_folders_can_be_merged_into_it(first, tmp_path):
    into = tmp_path / "data"
    merge_datasets([first], into)
    art = make_split(into / "art", COUNTS, seed=6)
    report = merge_datasets([art], into)
    assert (report.before, report.added, report.after) == (12, 12, 24)
    assert len(images(into)) == 24  # data/art/... is not counted as part of the target


def augment_and_move(data: Path, source: Path, copies: int = 2, seed: int = 1) -> list[str]:
    """Moves ``copies`` augmented copies of ``source`` (an image in ``data/train``) into train, their source recorded
    as DataAugmentation.py records it (made without TensorFlow); returns the copies' sha256."""
    records = {}
    for k in range(copies):
        copy = write_image(data / "augmented_train" / source.parent.name / f"aug_{source.stem}_{k}.jpg",
                           seed=int(sha256(source)[:8], 16) + k)
        records[f"{source.parent.name}/{copy.name}"] = moving.CopySource(
            sha256(copy), source.relative_to(data).as_posix(), sha256(source))
    moving.add_copy_sources(data / "augmented_train", records)
    moving.record_copy_settings(data / "augmented_train", {"copies": copies, "preset": "classic", "seed": seed,
                                                           "size": "native", "batch_size": 32, "jpeg_quality": 95})
    moving.move_augmented(data)
    assert not (data / "augmented_train").exists()
    return [record.copy_sha256 for record in records.values()]


def all_images(root: Path) -> list[Path]:
    return sorted(path for path in root.glob("*/*/*") if path.suffix in (".png", ".jpg"))


def test_augmented_copies_of_an_image_in_another_split_of_the_target_are_refused(first, second, tmp_path):
    into = tmp_path / "merged"
    merge_datasets([first], into)
    tested = second / "train" / "REAL" / "tested.png"
    shutil.copyfile(into / "test" / "REAL" / "img_000.png", tested)  # in the target's test
    copies = augment_and_move(second, tested)
    report = merge_datasets([second], into)
    refused = {Path(source).name: reason for source, reason in report.refused}
    assert sorted(refused) == ["aug_tested_0.jpg", "aug_tested_1.jpg", "tested.png"]
    assert "augmented copy" in refused["aug_tested_0.jpg"] and "test" in refused["aug_tested_0.jpg"]
    assert not {sha256(path) for path in all_images(into)} & set(copies)  # the copies stayed out of train


def test_the_record_of_augmented_copies_goes_with_them_into_a_merged_dataset(first, second, tmp_path):
    copies = augment_and_move(second, second / "train" / "FAKE" / "img_001.png")
    into = merge_datasets([second], tmp_path / "merged").into
    assert set(copies) <= {sha256(path) for path in all_images(into)}
    final = tmp_path / "final"
    target_of(first, final)
    shutil.copyfile(second / "train" / "FAKE" / "img_001.png", final / "test" / "FAKE" / "held_out.png")
    report = merge_datasets([into], final)  # the copies' source is in final's test now
    assert not {sha256(path) for path in all_images(final / "train")} & set(copies)
    assert sum("augmented copy" in reason for _, reason in report.refused) == len(copies)


def test_augmented_copies_merged_into_a_new_target_are_listed_as_copies_not_in_manifest_csv(second, tmp_path):
    copies = augment_and_move(second, second / "train" / "FAKE" / "img_001.png")
    into = merge_datasets([second], tmp_path / "merged").into
    rows = read_manifest(into / "manifest.csv")
    assert not {row.sha256 for row in rows} & set(copies)
    assert len(rows) == sum(COUNTS.values()) and set(copies) <= set(moving.read_moved_copies(into))


def test_a_merge_into_a_split_with_augmented_copies_keeps_them_out_of_manifest_csv(tmp_path, make_class_folder):
    """manifest.csv lists the images a split or merge placed; the copies moved into train are listed in
    augmented-copies.csv instead. A merge rewrote the manifest with a row for each copy (no source, no dataset),
    and the split's own command, run again, then said they were "gone from SOURCE, changed, or skipped now"."""
    raw = make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10})
    data = tmp_path / "data"
    split_by_class(raw, data)
    copies = augment_and_move(data, sorted((data / "train" / "REAL").iterdir())[0])
    other = make_split(tmp_path / "other", COUNTS, seed=5)

    merge_datasets([other], data)

    rows = read_manifest(data / "manifest.csv")
    assert not {row.sha256 for row in rows} & set(copies)
    assert len(rows) == 20 + sum(COUNTS.values()) and all(row.source and row.dataset for row in rows)
    assert set(copies) <= set(moving.read_moved_copies(data))
    with pytest.raises(UserError) as refused:
        split_by_class(raw, data)
    assert f"{sum(COUNTS.values())} files it lists were merged in from other datasets" in str(refused.value)


def test_an_image_whose_augmented_copies_are_in_the_targets_train_is_refused_in_another_split(first, tmp_path):
    into = tmp_path / "merged"
    target_of(first, into)
    source = into / "train" / "REAL" / "img_000.png"
    augment_and_move(into, source)
    other = make_split(tmp_path / "other", COUNTS, seed=5)
    shutil.copyfile(source, other / "test" / "REAL" / "x.png")
    source.unlink()  # the image left train; its copies stayed
    report = merge_datasets([other], into)
    assert [Path(path).name for path, _ in report.refused] == ["x.png"]
    assert "augmented cop" in report.refused[0][1]
    assert not (into / "test" / "REAL" / "x.png").exists()


def test_a_merge_with_move_cut_short_keeps_the_records_of_what_it_moved(second, tmp_path, monkeypatch):
    copies = augment_and_move(second, second / "train" / "FAKE" / "img_001.png")
    into = tmp_path / "merged"
    real_place_file, calls = files.place_file, []

    def place_then_stop(*args, **kwargs):
        if len(calls) == 6:  # the copies (aug_*) come first in train/FAKE
            raise KeyboardInterrupt
        calls.append(args)
        return real_place_file(*args, **kwargs)

    monkeypatch.setattr(files, "place_file", place_then_stop)  # a move places each file alone (a link)
    with pytest.raises(KeyboardInterrupt):
        merge_datasets([second], into, move=True)
    monkeypatch.setattr(files, "place_file", real_place_file)
    merge_datasets([second], into, move=True)
    assert set(copies) <= set(moving.read_moved_copies(into))
    assert {row.dataset for row in read_manifest(into / "manifest.csv")} == {"second"}
    assert all(row.source for row in read_manifest(into / "manifest.csv"))


def test_the_settings_of_the_copies_go_with_them_into_a_target_without_copies(second, tmp_path):
    augment_and_move(second, second / "train" / "FAKE" / "img_001.png")
    into = merge_datasets([second], tmp_path / "merged").into
    assert (into / moving.MOVED_SETTINGS_NAME).read_bytes() == (second / moving.MOVED_SETTINGS_NAME).read_bytes()


def test_copies_of_other_settings_merged_beside_the_targets_copies_leave_no_record_to_misstate_them(
        first, second, tmp_path, caplog):
    """The target kept the record of its own copies, which then named settings half its copies were not made with
    (in the model card, and in DataAugmentation's check of new copies); and the next move wrote one again."""
    first = target_of(first, first.parent / "target")  # a target as a merge leaves one
    augment_and_move(first, first / "train" / "FAKE" / "img_001.png", seed=1)
    augment_and_move(second, second / "train" / "FAKE" / "img_001.png", seed=2)

    merge_datasets([second], first)

    assert not (first / moving.MOVED_SETTINGS_NAME).exists()
    assert "made with other settings" in caplog.text and str(first / moving.MOVED_SETTINGS_NAME) in caplog.text
    augment_and_move(first, first / "train" / "REAL" / "img_000.png", seed=3)  # a move of new copies beside them
    assert not (first / moving.MOVED_SETTINGS_NAME).exists()


def test_copies_of_the_same_settings_merged_beside_the_targets_copies_keep_its_record(first, second, tmp_path):
    first = target_of(first, first.parent / "target")  # a target as a merge leaves one
    augment_and_move(first, first / "train" / "FAKE" / "img_001.png", seed=1)
    augment_and_move(second, second / "train" / "FAKE" / "img_001.png", seed=1)
    record = (first / moving.MOVED_SETTINGS_NAME).read_bytes()

    merge_datasets([second], first)
    augment_and_move(first, first / "train" / "REAL" / "img_000.png", seed=1)

    assert (first / moving.MOVED_SETTINGS_NAME).read_bytes() == record


def test_a_training_image_named_like_a_copy_is_no_copy_where_the_record_lists_the_copies(second, tmp_path):
    """The rule DataAugmentation and training follow (``moving.MovedCopies``): a target whose train holds a
    photo called aug_holiday.jpg, but none of the copies its record lists, has no copies, so the incoming copies
    bring their settings."""
    into = target_of(make_split(tmp_path / "seventh", COUNTS, seed=7), tmp_path / "merged")
    photo = write_image(into / "train" / "REAL" / "aug_holiday.jpg", seed=11)
    moving.add_moved_copies(into, [moving.CopySource("0" * 64, "train/REAL/img_000.png", "1" * 64)])  # deleted since
    augment_and_move(second, second / "train" / "FAKE" / "img_001.png")
    report = merge_datasets([second], into)
    assert not report.refused and photo.is_file()
    assert (into / moving.MOVED_SETTINGS_NAME).read_bytes() == (second / moving.MOVED_SETTINGS_NAME).read_bytes()


def test_without_a_record_of_copies_a_file_named_like_one_in_the_targets_train_counts_as_a_copy(second, tmp_path):
    """Copies moved by a version that kept no record: their settings are unknown, so none are carried in."""
    into = target_of(make_split(tmp_path / "seventh", COUNTS, seed=7), tmp_path / "merged")
    write_image(into / "train" / "REAL" / "aug_img_000_0.jpg", seed=11)
    augment_and_move(second, second / "train" / "FAKE" / "img_001.png")
    merge_datasets([second], into)
    assert not (into / moving.MOVED_SETTINGS_NAME).exists()


def test_the_same_source_given_twice_is_refused_before_anything_is_written(first, tmp_path):
    into = tmp_path / "into"
    with pytest.raises(UserError, match="twice") as error:
        merge_datasets([first, first.parent / "." / first.name], into)
    with pytest.raises(UserError, match="twice"):
        merge_datasets([first, first], into)
    assert "\n" not in str(error.value)
    assert not into.exists()


def test_a_dry_run_says_the_settings_record_a_merge_of_other_copies_would_remove(first, second, caplog):
    first = target_of(first, first.parent / "target")  # a target as a merge leaves one
    augment_and_move(first, first / "train" / "FAKE" / "img_001.png", seed=1)
    augment_and_move(second, second / "train" / "FAKE" / "img_001.png", seed=2)

    merge_datasets([second], first, dry_run=True)

    assert (first / moving.MOVED_SETTINGS_NAME).exists()
    assert f"would remove {first / moving.MOVED_SETTINGS_NAME}" in caplog.text
