"""Tests for realvsai.deleting and DataDeleter.py: what may be deleted, symlinks, confirmation, dry runs."""

from __future__ import annotations

import errno
import io
import sys
from pathlib import Path

import pytest
from conftest import REPO, one_error_line, run_script

from realvsai import deleting
from realvsai.deleting import check_deletable, delete_planned, describe, plan_deletion
from realvsai.errors import UserError
from realvsai.files import locate
from realvsai.layout import read_manifest, unplaced_rows
from realvsai.splitting import split_by_class


@pytest.fixture
def project(tmp_path) -> Path:
    """A fake repository with data/ and models/, and a folder outside it."""
    repo = tmp_path / "repo"
    for folder in ("data/raw/set/train/REAL", "data/raw/set/test", "models", "outside"):
        (repo.parent / folder if folder == "outside" else repo / folder).mkdir(parents=True)
    (repo / "data/raw/set/train/REAL/a.jpg").write_bytes(b"a" * 100)
    (repo / "data/raw/set/train/REAL/b.jpg").write_bytes(b"b" * 50)
    (repo / "data/raw/set/notes.txt").write_bytes(b"n" * 7)
    (tmp_path / "outside" / "keep.txt").write_text("must survive")
    return repo


def rules(repo: Path) -> dict:
    return {"protected": [repo], "allowed_roots": [repo / "data", repo / "models"]}


def deletable(path: Path, repo: Path, allow_outside: bool = False) -> Path:
    location = locate(path)
    check_deletable(location, **rules(repo), allow_outside=allow_outside)
    return location


# ---- the library ---------------------------------------------------------------------------------


def test_plan_counts_files_folders_and_bytes(project):
    plan = plan_deletion(locate(project / "data/raw/set"))
    assert (plan.files, plan.folders, plan.num_bytes) == (3, 4, 157)
    assert plan.by_child == (("notes.txt", 1, 7), ("test", 0, 0), ("train", 2, 150))
    assert "3 files and 4 folders" in describe(plan)


def test_describe_shortens_a_long_listing(tmp_path):
    for index in range(30):
        (tmp_path / f"{index:02d}.jpg").write_bytes(b"x")
    text = describe(plan_deletion(locate(tmp_path)), max_rows=5)
    assert "04.jpg" in text and "05.jpg" not in text
    assert "25 more" in text and "30 files and 1 folder," in text


def test_deleting_a_folder_removes_everything_in_it(project):
    plan = plan_deletion(deletable(project / "data/raw/set", project))
    assert delete_planned(plan) == (3, 4)
    assert not (project / "data/raw/set").exists()
    assert (project / "data/raw").is_dir()


def test_deleting_a_single_file(project):
    target = project / "data/raw/set/notes.txt"
    assert delete_planned(plan_deletion(deletable(target, project))) == (1, 0)
    assert not target.exists() and (project / "data/raw/set/train/REAL/a.jpg").exists()


def test_a_failure_midway_is_one_clear_error(project, monkeypatch):
    def busy(path, *args, **kwargs):
        raise OSError(errno.EBUSY, "Device or resource busy", path)

    plan = plan_deletion(deletable(project / "data/raw/set", project))
    monkeypatch.setattr(deleting.os, "rmdir", busy)
    with pytest.raises(UserError, match=r"Device or resource busy.*run the same command again"):
        delete_planned(plan)


def test_symlink_inside_the_tree_is_removed_as_a_link_and_its_target_survives(project, tmp_path):
    outside = tmp_path / "outside"
    (project / "data/raw/set/train/to_outside").symlink_to(outside, target_is_directory=True)
    (project / "data/raw/set/file_link.txt").symlink_to(outside / "keep.txt")
    plan = plan_deletion(deletable(project / "data/raw/set", project))
    assert plan.files == 5, "the two links count as files and nothing behind them is counted"
    delete_planned(plan)
    assert not (project / "data/raw/set").exists()
    assert (outside / "keep.txt").read_text() == "must survive"


def test_symlink_given_as_the_target_is_removed_not_followed(project, tmp_path):
    link = project / "data/link_to_outside"
    link.symlink_to(tmp_path / "outside", target_is_directory=True)
    location = deletable(link, project)
    assert location == link, "the link itself is the target, so it counts as inside data/"
    assert delete_planned(plan_deletion(location)) == (1, 0)
    assert not link.is_symlink()
    assert (tmp_path / "outside" / "keep.txt").exists()


def test_a_symlink_given_as_the_target_is_described_as_the_link_it_is(project, tmp_path):
    """It read "1 file and 0 folders, 20 B": the user could not tell that the folder it leads to is kept."""
    link = project / "data/link_to_outside"
    link.symlink_to(tmp_path / "outside", target_is_directory=True)
    assert describe(plan_deletion(deletable(link, project))) == (
        f"{link}: a symlink to {tmp_path / 'outside'}; the link is removed, what it leads to is kept.")


def test_deleting_a_symlink_says_the_link_was_deleted_and_its_target_kept(tmp_path):
    """It said "Deleted 1 file and 0 folders (20 B)", as if a file had gone."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("must survive")
    link = tmp_path / "link_to_outside"
    link.symlink_to(tmp_path / "outside", target_is_directory=True)

    finished = run_script("DataDeleter.py", link, "--allow-outside", "--yes")

    assert finished.returncode == 0 and not link.is_symlink()
    assert finished.stdout.splitlines()[-1] == f"Deleted the symlink {link}; {tmp_path / 'outside'} is kept."
    assert (tmp_path / "outside" / "keep.txt").read_text() == "must survive"


def test_path_through_a_symlinked_folder_is_judged_where_it_really_is(project, tmp_path):
    (project / "data/link_to_outside").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(UserError, match="not inside"):
        deletable(project / "data/link_to_outside/keep.txt", project)


def test_refuses_the_repository_and_its_parents(project):
    for path in (project, project.parent, project / "data" / ".." / ".."):
        with pytest.raises(UserError, match="protected folder"):
            deletable(path, project, allow_outside=True)


def test_refuses_the_repository_s_own_files_even_with_allow_outside(project):
    (project / "tests").mkdir()
    (project / "README.md").write_text("kept")
    for path in (project / "tests", project / "README.md"):
        with pytest.raises(UserError, match="part of the repository"):
            check_deletable(locate(path), **rules(project), allow_outside=True, repository=project)
    check_deletable(locate(project / "data" / "raw"), **rules(project), allow_outside=True, repository=project)


def test_refuses_the_file_system_root(project):
    with pytest.raises(UserError, match="root of a file system"):
        check_deletable(locate(Path("/")), protected=[], allowed_roots=[], allow_outside=True)


def test_refuses_a_protected_home_folder_but_not_what_is_inside_it(tmp_path):
    home = tmp_path / "home"
    (home / "Downloads" / "old").mkdir(parents=True)
    with pytest.raises(UserError, match="protected folder"):
        check_deletable(locate(home), protected=[home], allowed_roots=[], allow_outside=True)
    check_deletable(locate(home / "Downloads" / "old"), protected=[home], allowed_roots=[], allow_outside=True)


def test_a_protected_path_named_in_another_letter_case_is_refused_as_such(project, tmp_path):
    # One folder (or file) on macOS and Windows: compared as typed, the home folder, the repository, its code or
    # data's README named so passed as another path, and was deleted there.
    home = tmp_path / "home"
    home.mkdir()
    (project / "data" / "README.md").write_text("kept")
    for path in (tmp_path / "HOME", tmp_path / "REPO" / "tests"):  # other folders here; there they are those
        path.mkdir(parents=True)
    (project / "data" / "readme.md").write_text("kept")
    with pytest.raises(UserError, match="protected folder"):
        check_deletable(locate(tmp_path / "HOME"), protected=[home], allowed_roots=[], allow_outside=True)
    with pytest.raises(UserError, match="protected folder"):
        deletable(tmp_path / "REPO", project, allow_outside=True)
    with pytest.raises(UserError, match="part of the repository"):
        check_deletable(locate(tmp_path / "REPO" / "tests"), **rules(project), allow_outside=True, repository=project)
    with pytest.raises(UserError, match="README the project keeps"):
        deletable(project / "data" / "readme.md", project)


def test_refuses_outside_data_and_models_without_allow_outside(project, tmp_path):
    with pytest.raises(UserError, match="--allow-outside"):
        deletable(tmp_path / "outside", project)
    assert deletable(tmp_path / "outside", project, allow_outside=True) == tmp_path / "outside"


def test_refuses_the_data_folder_itself(project):
    with pytest.raises(UserError, match="folders inside it"):
        deletable(project / "data", project)


@pytest.mark.parametrize("root", ["data", "models"])
def test_the_data_or_models_folder_itself_is_refused_for_its_readme_not_as_the_repository_s_code(project, root):
    """In the repository, as DataDeleter checks it: the advice is to delete what is inside, which it may."""
    with pytest.raises(UserError, match="folders inside it") as refused:
        check_deletable(locate(project / root), **rules(project), repository=project)
    assert "never deletes" not in str(refused.value)


@pytest.mark.parametrize("root", ["data", "models"])
def test_refuses_the_readme_the_project_keeps_in_data_and_models(project, root):
    """data/ itself was refused for the README it holds, and the README deleted when named."""
    (project / root / "README.md").write_text("what goes here")
    with pytest.raises(UserError, match=rf"{root}/README\.md: it is the README the project keeps"):
        deletable(project / root / "README.md", project)


def test_missing_path_is_a_clear_error(project):
    with pytest.raises(UserError, match="does not exist"):
        deletable(project / "data/raw/nothing", project)


# ---- the script, as a user runs it ---------------------------------------------------------------------


@pytest.fixture
def outside_tree(tmp_path) -> Path:
    folder = tmp_path / "old_run"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.bin").write_bytes(b"x" * 2048)
    (folder / "b.txt").write_text("b")
    return folder


@pytest.mark.parametrize("path", ["/", str(REPO), str(REPO.parent), "."])
def test_script_refuses_root_and_repository(path):
    # --dry-run as a second guard: even a broken check could not delete anything here.
    stderr = one_error_line(run_script("DataDeleter.py", path, "--dry-run", "--allow-outside", cwd=REPO))
    assert "refusing to delete" in stderr


def test_script_refuses_the_repository_s_code_with_allow_outside():
    result = run_script("DataDeleter.py", "realvsai", "--allow-outside", "--dry-run")
    assert result.returncode == 1 and "part of the repository" in one_error_line(result)


def test_script_refuses_outside_data_and_models(outside_tree):
    stderr = one_error_line(run_script("DataDeleter.py", outside_tree, "--yes"))
    assert "--allow-outside" in stderr
    assert (outside_tree / "sub" / "a.bin").exists()


def test_script_without_terminal_refuses_unless_yes(outside_tree):
    stderr = one_error_line(run_script("DataDeleter.py", outside_tree, "--allow-outside", input_text=""))
    assert "--yes" in stderr
    assert (outside_tree / "sub" / "a.bin").exists()


def test_script_dry_run_deletes_nothing(outside_tree):
    finished = run_script("DataDeleter.py", outside_tree, "--allow-outside", "--dry-run", "--yes")
    assert finished.returncode == 0, finished.stderr
    assert "2 files and 2 folders" in finished.stdout and "nothing was deleted" in finished.stdout
    assert (outside_tree / "sub" / "a.bin").exists()


def test_script_names_a_relative_path_as_it_was_typed(outside_tree):
    """It said "/home/me/project/old_run: 2 files and 2 folders" and "Deleted ... from /home/me/project/old_run"
    for DataDeleter.py old_run."""
    finished = run_script("DataDeleter.py", "old_run", "--allow-outside", "--yes", "--quiet", cwd=outside_tree.parent)

    assert finished.returncode == 0, finished.stderr
    assert "old_run: 2 files and 2 folders" in finished.stdout and "from old_run." in finished.stdout, finished.stdout
    assert str(outside_tree) not in finished.stdout, finished.stdout


def test_script_names_a_relative_path_that_is_gone_as_it_was_typed(outside_tree):
    """A deletion killed after its last file went, before it said so, run again: "error: /home/me/project/old_run
    does not exist" for DataDeleter.py old_run."""
    finished = run_script("DataDeleter.py", "gone_run", "--allow-outside", "--yes", cwd=outside_tree.parent)

    assert "error: gone_run does not exist: nothing to delete" in one_error_line(finished)


def test_script_with_yes_deletes(outside_tree):
    finished = run_script("DataDeleter.py", outside_tree, "--allow-outside", "--yes", "--quiet")
    assert finished.returncode == 0, finished.stderr
    assert "Deleted 2 files and 2 folders" in finished.stdout
    assert not outside_tree.exists()


def test_a_protected_folder_is_refused_as_such_while_another_run_works_below_it(tmp_path):
    """DataDeleter.py / while any run works anywhere: the answer is that / is never deleted, not "wait for the
    other run" (the protection is checked before the claim, which would wait for nothing)."""
    from realvsai.files import working_on

    with working_on([tmp_path / "data"], "DataSplitD2.py"):
        stderr = one_error_line(run_script("DataDeleter.py", "/", "--dry-run", "--allow-outside", cwd=REPO))
    assert "refusing to delete" in stderr


@pytest.mark.parametrize("what", ["one image", "a class folder"])
def test_deleting_from_a_split_drops_the_manifest_rows_of_what_went(tmp_path, make_class_folder, what):
    """A split's manifest.csv listing a file that is gone reads as a split cut short: training refused the split and
    said to run the split again, which would copy the deleted image back, or to edit manifest.csv by hand."""
    split = tmp_path / "split"
    split_by_class(make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10}), split)
    train_real = split / "train" / "REAL"
    target = sorted(train_real.iterdir())[0] if what == "one image" else split / "test" / "FAKE"
    gone = {path.relative_to(split).as_posix() for path in ([target] if target.is_file() else target.iterdir())}
    before = read_manifest(split / "manifest.csv")

    result = run_script("DataDeleter.py", target, "--yes", "--allow-outside")

    assert result.returncode == 0, result.stderr
    after = read_manifest(split / "manifest.csv")
    assert [row for row in before if row.path not in gone] == after and len(after) == len(before) - len(gone)
    assert "manifest.csv" in result.stdout
    assert unplaced_rows(split) == []


@pytest.mark.parametrize("killed", ["before the rows were written", "after the rows were written"])
def test_a_deletion_run_again_after_a_kill_removes_the_manifest_s_half_written_file(tmp_path, make_class_folder,
                                                                                    killed):
    """A kill -9 while the manifest.csv was rewritten left its hidden temporary file in the split, and the same
    command run again finished the deletion (exit 0) but left it there."""
    from realvsai.layout import write_manifest

    split = tmp_path / "split"
    split_by_class(make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10}), split)
    target = split / "train" / "REAL"
    if killed == "after the rows were written":
        write_manifest(split / "manifest.csv", plan_deletion(target).kept_rows)
    leftover = split / ".manifest.csv.1a2b3c4d.tmp"
    leftover.write_text("split,class,path\ntrain,REAL,tr")

    result = run_script("DataDeleter.py", target, "--yes", "--allow-outside")

    assert result.returncode == 0, result.stderr
    assert not target.exists() and not leftover.exists()
    assert unplaced_rows(split) == []


def test_deleting_a_file_of_no_split_leaves_any_manifest_alone(tmp_path, make_class_folder):
    folder = make_class_folder(tmp_path / "raw", {"REAL": 2, "FAKE": 2})
    (tmp_path / "manifest.csv").write_text("not ours")

    assert run_script("DataDeleter.py", folder / "REAL" / "img_000.png", "--yes", "--allow-outside").returncode == 0

    assert (tmp_path / "manifest.csv").read_text() == "not ours"


def test_deleting_one_image_of_a_split_that_a_training_reads_is_refused(tmp_path, make_class_folder):
    """A folder there was refused, one file not: a kill -9 of the training then left a run that --resume refused
    (its data changed), and the deletion rewrote the manifest.csv the training had read."""
    from realvsai.data import split_folders
    from realvsai.files import working_on

    split = tmp_path / "split"
    split_by_class(make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10}), split)
    image = sorted((split / "train" / "FAKE").iterdir())[0]
    manifest = (split / "manifest.csv").read_bytes()

    with working_on([tmp_path / "models" / "run"], "ModelTraining.py", reading=split_folders(split)):
        stderr = one_error_line(run_script("DataDeleter.py", image, "--yes", "--allow-outside"))

    assert f"{image} is inside" in stderr and "which another run reads" in stderr and "wait for it" in stderr
    assert image.is_file() and (split / "manifest.csv").read_bytes() == manifest


def test_two_deletions_in_one_split_at_once_keep_each_other_s_manifest_rows_out(tmp_path, make_class_folder,
                                                                                 monkeypatch, capsys):
    """Each rewrites the split's manifest.csv from the rows it read: the second one's write brought back the row of
    the file the first had deleted, and the split read as cut short."""
    import DataDeleter

    split = tmp_path / "split"
    split_by_class(make_class_folder(tmp_path / "raw", {"REAL": 10, "FAKE": 10}), split)
    first, second = sorted((split / "train" / "FAKE").iterdir())[0], sorted((split / "train" / "REAL").iterdir())[0]
    meanwhile = []

    def delete_while_another_deletes(plan):
        meanwhile.append(run_script("DataDeleter.py", second, "--yes", "--allow-outside"))
        return delete_planned(plan)

    monkeypatch.setattr(DataDeleter, "delete_planned", delete_while_another_deletes)
    assert DataDeleter.main([str(first), "--yes", "--allow-outside", "--quiet"]) == 0

    assert not first.exists() and second.is_file()
    assert "is being worked on by DataDeleter.py" in one_error_line(meanwhile[0])
    assert unplaced_rows(split) == []


@pytest.mark.parametrize("answer", ["n\n", "\n", ""])  # no, Enter (the default), Ctrl-D
def test_answering_anything_but_yes_deletes_nothing_and_exits_1(outside_tree, monkeypatch, capsys, answer):
    """A script that deletes nothing it was asked to delete has not done its work: a caller (a shell's &&) stops."""
    import DataDeleter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    assert DataDeleter.main([str(outside_tree), "--allow-outside"]) == 1

    assert (outside_tree / "sub" / "a.bin").is_file() and (outside_tree / "b.txt").is_file()
    assert capsys.readouterr().out.strip().endswith("Nothing was deleted.")


def test_files_added_while_the_question_waits_are_not_deleted_unseen(outside_tree, monkeypatch, capsys):
    """The folder was counted, the question asked, then walked again to delete: what came meanwhile went too,
    unshown, and the last line gave the bytes counted before."""
    import DataDeleter

    def answer_while_files_arrive(question, assume_yes):
        (outside_tree / "new").mkdir()
        (outside_tree / "new" / "keep.txt").write_text("added while the question waited")
        return True

    monkeypatch.setattr(DataDeleter, "confirm", answer_while_files_arrive)
    assert DataDeleter.main([str(outside_tree), "--allow-outside"]) == 1

    assert (outside_tree / "new" / "keep.txt").is_file() and (outside_tree / "sub" / "a.bin").is_file()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "changed while" in error and "nothing was deleted" in error and "run the same command again" in error
