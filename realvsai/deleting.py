"""Deleting a data or model folder without ever reaching beyond it (DataDeleter.py).

Nothing is followed: a symlink, given or inside the folder, is removed as a link and what it points
to survives. Protected folders (the file-system root, the home folder, the repository) and their
parents are refused outright; anything outside the allowed roots needs ``allow_outside``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from realvsai.cli import format_table, plural, progress
from realvsai.errors import UserError
from realvsai.files import as_typed, human_bytes, name_key, remove_temporaries
from realvsai.layout import MANIFEST_NAME, SPLITS, ManifestRow, read_manifest, write_manifest


@dataclasses.dataclass(frozen=True)
class DeletionPlan:
    """What deleting ``path`` removes, counted before anything is touched."""

    path: Path  # from ``locate``
    files: int  # files and symlinks
    folders: int  # including ``path`` itself when it is a folder
    num_bytes: int  # sizes as lstat sees them: a symlink counts its own few bytes, not its target
    by_child: tuple[tuple[str, int, int], ...]  # (name, files, bytes) for each entry directly in ``path``
    link: str | None = None  # where ``path`` leads when it is a symlink: removed as a link, its target kept
    manifest: Path | None = None  # the manifest.csv of the split ``path`` is in, where it lists files going
    kept_rows: tuple[ManifestRow, ...] = ()  # that manifest's rows of the files that stay
    dropped_rows: int = 0  # its rows of the files that go

    def and_rows(self) -> str:
        """The manifest rows that go with the files, in words, to end a sentence ("" for none)."""
        return f", and {plural(self.dropped_rows, 'row')} of {self.manifest}" if self.manifest else ""


def check_deletable(location: Path, protected: Sequence[Path], allowed_roots: Sequence[Path],
                    allow_outside: bool = False, repository: Path | None = None, given: Path | str | None = None
                    ) -> None:
    """Refuses (``UserError``) a missing target, a ``protected`` folder or one holding it, anything inside
    ``repository`` but outside ``allowed_roots`` (its code: even with ``allow_outside``), or anything outside
    ``allowed_roots`` (the roots themselves included) unless ``allow_outside``. What is protected is compared by
    ``name_key``, as macOS and Windows find a path (``~/REPO`` is the repository there); what is allowed, as typed.
    ``given``: the path as the user typed it, which a missing one is named as (``files.as_typed``)."""
    if not os.path.lexists(location):
        shown = location if given is None else as_typed(location, given)
        raise UserError(f"{shown} does not exist: nothing to delete. Check the path.")
    if location.parent == location:
        raise UserError(f"refusing to delete {location}: it is the root of a file system.")
    key = _key(location)
    for folder in (Path(folder).resolve() for folder in protected):
        if (folder_key := _key(folder)) == key or key in folder_key.parents:
            raise UserError(f"refusing to delete {location}: it {'is' if key == folder_key else 'holds'} the "
                            f"protected folder {folder} (the file-system root, your home folder or this "
                            "repository). Give a folder inside data/ or models/.")
    roots = [Path(root).resolve() for root in allowed_roots]
    root_keys = set(map(_key, roots))
    if repository is not None and _key(Path(repository).resolve()) in key.parents and not any(
            root == location or root in location.parents for root in roots):
        raise UserError(f"refusing to delete {location}: it is part of the repository {Path(repository).resolve()}, "
                        f"whose files DataDeleter never deletes, --allow-outside or not (only those inside "
                        f"{' or '.join(map(str, roots))}). Delete it yourself if you really mean it.")
    if not allow_outside and key in root_keys:
        raise UserError(f"refusing to delete {location} itself (it holds a README the project keeps). "
                        "Delete the folders inside it instead.")
    if key.parent in root_keys and key.name == name_key("README.md"):  # part of the repository, as its code
        raise UserError(f"refusing to delete {location}: it is the README the project keeps there. Delete the "
                        "folders beside it instead.")
    if not allow_outside and not any(root in location.parents for root in roots):
        raise UserError(f"refusing to delete {location}: it is not inside {' or '.join(map(str, roots))}. "
                        "Add --allow-outside if you really mean it.")


def _key(path: Path) -> Path:
    """``path`` as its ``name_key``: one key for the spellings macOS and Windows take for one path."""
    return Path(name_key(os.fspath(path)))


def plan_deletion(location: Path) -> DeletionPlan:
    """Counts the files, folders and bytes that deleting ``location`` removes, following no symlink."""
    entries = [(path, is_folder, 0 if is_folder else os.lstat(path).st_size)
               for path, is_folder in walk_bottom_up(location)]
    by_child: dict[str, list[int]] = {}
    for path, is_folder, size in entries[:-1]:  # the last is the location itself (if a folder)
        counts = by_child.setdefault(path[len(str(location)) + 1:].split(os.sep, 1)[0], [0, 0])
        counts[0], counts[1] = counts[0] + (not is_folder), counts[1] + size
    manifest, kept, dropped = _manifest_rows(location)
    return DeletionPlan(location, sum(not is_folder for _, is_folder, _ in entries),
                        sum(is_folder for _, is_folder, _ in entries), sum(size for _, _, size in entries),
                        tuple((name, count, size) for name, (count, size) in sorted(by_child.items())),
                        os.readlink(location) if location.is_symlink() else None, manifest, tuple(kept), dropped)


def split_manifest(location: Path) -> Path | None:
    """The manifest.csv of the split ``location`` is in (``DATA/manifest.csv`` for ``DATA/<split>/...``), or None:
    deleting there may rewrite it (``_manifest_rows``)."""
    return next((folder / MANIFEST_NAME for folder in location.parents
                 if location.relative_to(folder).parts[0] in SPLITS and (folder / MANIFEST_NAME).is_file()), None)


def _manifest_rows(location: Path) -> tuple[Path | None, list[ManifestRow], int]:
    """``split_manifest`` where it lists ``location`` or files under it, its rows of the rest, and how many name
    what goes; else (None, [], 0)."""
    manifest = split_manifest(location)
    if manifest is None:
        return None, [], 0
    going = location.relative_to(manifest.parent).as_posix()
    rows = read_manifest(manifest)
    kept = [row for row in rows if row.path != going and not row.path.startswith(f"{going}/")]
    return (manifest, kept, len(rows) - len(kept)) if len(kept) < len(rows) else (None, [], 0)


def describe(plan: DeletionPlan, max_rows: int = 20) -> str:
    """A table of what goes, per entry directly inside the target (the first ``max_rows``), and a total line."""
    if plan.link is not None:
        return f"{plan.path}: a symlink to {plan.link}; the link is removed, what it leads to is kept."
    rows = [(name, f"{count:,}", human_bytes(size)) for name, count, size in plan.by_child[:max_rows]]
    if len(plan.by_child) > max_rows:
        rows.append((f"... {len(plan.by_child) - max_rows:,} more", "", ""))
    total = (f"{plan.path}: {plural(plan.files, 'file')} and {plural(plan.folders, 'folder')}, "
             f"{human_bytes(plan.num_bytes)} in all{plan.and_rows()}.")
    return f"{format_table(['entry', 'files', 'size'], rows)}\n{total}" if rows else total


def delete_planned(plan: DeletionPlan) -> tuple[int, int]:
    """Deletes ``plan.path`` without following symlinks, after the rows of its files in the split's manifest.csv
    (a file a manifest lists is one the split placed: one missing reads as a split cut short; rows first, so that
    an interrupted run deletes the rest when run again); returns the files (and links) and folders removed."""
    if plan.manifest is not None:
        write_manifest(plan.manifest, plan.kept_rows)
    if (manifest := plan.manifest or split_manifest(plan.path)) is not None:
        # What a kill during that write left, also where it wrote the rows before it was killed (None in the plan)
        remove_temporaries(manifest.parent, [MANIFEST_NAME])
    files = folders = 0
    try:
        for path, is_folder in progress(walk_bottom_up(plan.path), total=plan.files + plan.folders,
                                        desc=f"delete {plan.path.name}"):
            (os.rmdir if is_folder else os.unlink)(path)
            folders, files = folders + is_folder, files + (not is_folder)
    except OSError as error:  # permissions, a busy mount point, a file added meanwhile
        raise UserError(f"could not delete {error.filename} ({error.strerror or error}) after deleting "
                        f"{plural(files, 'file')}. Fix the cause and run the same command again to delete the "
                        "rest.") from error
    return files, folders


def walk_bottom_up(top: Path) -> Iterator[tuple[str, bool]]:
    """Every path under ``top`` and ``top`` itself, children before their folder, as (path, is_folder).

    Symlinks come as non-folders and are never entered (``os.walk`` lists one among the folders).
    """
    if not stat.S_ISDIR(os.lstat(top).st_mode):  # a file, or a symlink even to a folder
        yield str(top), False
        return

    def fail(error: OSError) -> None:
        raise error

    for folder, folder_names, file_names in os.walk(top, topdown=False, onerror=fail, followlinks=False):
        for name in file_names:
            yield os.path.join(folder, name), False
        for name in folder_names:
            yield os.path.join(folder, name), not os.path.islink(os.path.join(folder, name))
    yield str(top), True
