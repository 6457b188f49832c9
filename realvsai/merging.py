"""Merge split datasets (``train|validation|test/<Class>/``) into one, without loss, overwrite or leakage.

The merge is planned in full before anything is written, so ``dry_run`` shows exactly what a real
run would do:

- a file whose content already sits in the same split and class of the target is skipped (identical);
- a file whose name is taken by other content gets the stable name ``stem_<sha256[:8]>.ext``
  (``files.free_name``'s rule), so a re-run recognises it;
- a file whose content sits in ANOTHER split of the target, or in another split among the sources
  (first claim wins: the target, then the sources in the order given, train before validation
  before test), is refused: adding it would put one image in two splits.

Counts add up exactly: files in the target before + added = after. Because identical content is
skipped, an interrupted merge is completed by running it again, with nothing lost or doubled. The
target's ``manifest.csv`` is rewritten to list every image in it (sources carried over), and refused
files are added to ``merge-refused.csv`` with the time of their merge (earlier merges' rows stay).
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from realvsai.cli import default_workers, format_table, progress
from realvsai.errors import UserError
from realvsai.files import (
    Outcome,
    append_csv,
    free_name,
    list_images,
    map_in_threads,
    place_file,
    read_verified,
    sha256_file,
    write_new,
)
from realvsai.layout import MANIFEST_NAME, SPLITS, ManifestRow, read_manifest, read_split_classes, write_manifest

logger = logging.getLogger(__name__)

REFUSED_NAME = "merge-refused.csv"
REFUSED_FIELDS = ("merged_at", "source", "reason")


@dataclass(frozen=True)
class _File:
    """One image of a split dataset."""

    split: str
    class_name: str
    path: Path
    digest: str


@dataclass(frozen=True)
class _Action:
    """What the merge does with one source file; ``target`` is where it goes (None when refused)."""

    file: _File
    kind: str  # "add", "rename", "identical" or "refuse"
    target: Path | None = None
    reason: str = ""


@dataclass
class MergeReport:
    """What a merge did (or, with ``dry_run``, would do)."""

    into: Path
    dry_run: bool
    before: int = 0
    added: int = 0  # written, under their own name or a new one
    renamed: int = 0  # of ``added``: written under a new name because theirs was taken
    identical: int = 0  # skipped: the same content is already in that split and class
    refused: list[tuple[str, str]] = field(default_factory=list)  # (source file, reason)
    after: int = 0
    counts: Counter = field(default_factory=Counter)  # files per (split, class) after
    added_counts: Counter = field(default_factory=Counter)  # files added per (split, class)
    sources_removed: int = 0  # --move: source files removed (moved, or identical to one in the target)
    started: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))

    @property
    def refused_path(self) -> Path:
        return self.into / REFUSED_NAME


def merge_datasets(
    sources: Sequence[Path], into: Path, *, move: bool = False, dry_run: bool = False, workers: int | None = None
) -> MergeReport:
    """Merges the split datasets ``sources`` into ``into``.

    Args:
        sources: folders with ``train/``, ``validation/`` and/or ``test/``, each with class folders.
        into: the target dataset; created when missing.
        move: remove each source file once its content is safely in the target (refused files stay).
        dry_run: plan and report only; nothing is written or removed.
        workers: threads that hash files (default: two per core).

    Returns:
        The counts; ``before + added == after`` holds for a real run.

    Raises:
        UserError: for a source without split folders, class names that differ between the sources
            and the target, or a source that overlaps the target.
    """
    into = Path(into)
    sources = [Path(source) for source in sources]
    _check_folders(sources, into)
    target_classes = _target_classes(into)
    reference = (into, target_classes) if target_classes else None
    for source in sources:
        classes = sorted({name for names in read_split_classes(source).values() for name in names})
        if reference is None:
            reference = (source, classes)
        elif classes != reference[1]:
            raise UserError(
                f"{source} has classes {classes}, but {reference[0]} has {reference[1]}. Class names must match: "
                "re-split with --rename OLD=NEW (e.g. --rename RealArt=REAL) so they are spelled the same."
            )

    workers = workers or 2 * default_workers()
    existing = _hash_dataset(into, workers, "reading target")
    incoming = [file for source in sources for file in _hash_dataset(source, workers, f"reading {source.name}")]
    actions = plan_merge(existing, incoming, into)

    report = MergeReport(into=into, dry_run=dry_run, before=len(existing))
    report.refused = [(str(action.file.path), action.reason) for action in actions if action.kind == "refuse"]
    report.identical = sum(action.kind == "identical" for action in actions)
    report.renamed = sum(action.kind == "rename" for action in actions)
    to_add = [action for action in actions if action.kind in ("add", "rename")]
    report.added = len(to_add)
    report.added_counts = Counter((action.file.split, action.file.class_name) for action in to_add)
    report.counts = Counter((file.split, file.class_name) for file in existing) + report.added_counts
    if dry_run:
        report.after = report.before + report.added
        return report

    added_files = _apply(actions, move, report)
    after = _list_dataset(into)
    report.after = len(after)
    if report.before + report.added != report.after:
        logger.warning("the target held %d files, %d were added, but it now holds %d: something else changed "
                       "it during the merge", report.before, report.added, report.after)
    _update_manifest(into, existing, added_files, actions)
    if report.refused:
        # Appended: the lists of earlier merges into this folder stay, each row dated by its merge.
        append_csv(report.refused_path, REFUSED_FIELDS,
                   [(report.started, source, reason) for source, reason in report.refused])
        logger.warning("refused %d files whose content is already in another split (list: %s, rows merged at %s)",
                       len(report.refused), report.refused_path, report.started)
    return report


def plan_merge(existing: Sequence[_File], incoming: Sequence[_File], into: Path) -> list[_Action]:
    """Decides, for each incoming file in order, whether it is added, renamed, identical or refused.

    Pure: reads and writes nothing, so a dry run and a real run follow the same plan.
    """
    home: dict[str, tuple[str, str]] = {}  # sha256 -> (split that owns it, where it was first seen)
    present: dict[tuple[str, str], set[str]] = defaultdict(set)  # (split, class) -> contents
    names: dict[Path, str] = {}  # target path -> its content
    for file in existing:
        home.setdefault(file.digest, (file.split, str(file.path)))
        present[(file.split, file.class_name)].add(file.digest)
        names[file.path] = file.digest
    actions = []
    for file in incoming:
        owner, where = home.setdefault(file.digest, (file.split, str(file.path)))
        if owner != file.split:
            actions.append(_Action(file, "refuse", reason=f"same content as {where} ({owner}); adding it to "
                                                          f"{file.split} would put one image in two splits"))
            continue
        if file.digest in present[(file.split, file.class_name)]:
            actions.append(_Action(file, "identical"))
            continue
        wanted = into / file.split / file.class_name / file.path.name
        target = wanted if wanted not in names else free_name(
            wanted, file.digest, lambda candidate, digest=file.digest: names.get(candidate, digest) == digest)
        names[target] = file.digest
        present[(file.split, file.class_name)].add(file.digest)
        actions.append(_Action(file, "add" if target == wanted else "rename", target))
    return actions


def _apply(actions: Sequence[_Action], move: bool, report: MergeReport) -> list[tuple[Path, _File]]:
    """Writes the planned files; returns (target path, source file) for each file added."""
    added = []
    for folder in sorted({action.target.parent for action in actions if action.target is not None}):
        folder.mkdir(parents=True, exist_ok=True)
    for action in progress(actions, desc="moving" if move else "copying"):
        if action.kind == "refuse":
            continue
        source = action.file.path
        if action.kind == "identical":
            if move:  # its content was read from the target during this run: it is safe there
                source.unlink()
                report.sources_removed += 1
            continue
        if move or os.path.lexists(action.target):
            # place_file never overwrites: should the name have been taken since the plan, it keeps both.
            target, outcome = place_file(source, action.target, move=move, source_digest=action.file.digest)
            if outcome is Outcome.IDENTICAL:
                report.added, report.identical = report.added - 1, report.identical + 1
                report.added_counts[(action.file.split, action.file.class_name)] -= 1
                continue
        else:
            # A plain copy to a name planned free: one read, checked against the sha256 the plan used
            # (place_file would read the file twice), and written without replacing anything.
            target = action.target
            write_new(target, read_verified(source, action.file.digest))
        if move:
            report.sources_removed += 1
        added.append((target, action.file))
    return added


def _update_manifest(into: Path, existing: Sequence[_File], added: Sequence[tuple[Path, _File]],
                     actions: Sequence[_Action]) -> None:
    """Rewrites ``into/manifest.csv`` to list every image now in the target, keeping known sources."""
    manifest = into / MANIFEST_NAME
    sources = {row.path: row.source for row in read_manifest(manifest)} if manifest.is_file() else {}
    # A file an interrupted merge already wrote is "identical" now: its source is the matching file.
    matched = {(action.file.split, action.file.class_name, action.file.digest): str(action.file.path.resolve())
               for action in actions if action.kind == "identical"}
    rows = {}
    for file in existing:
        relative = file.path.relative_to(into).as_posix()
        source = sources.get(relative) or matched.get((file.split, file.class_name, file.digest), "")
        rows[relative] = ManifestRow(file.split, file.class_name, relative, file.digest, source)
    for target, file in added:
        relative = target.relative_to(into).as_posix()
        rows[relative] = ManifestRow(file.split, file.class_name, relative, file.digest, str(file.path.resolve()))
    write_manifest(manifest, sorted(rows.values(), key=ManifestRow.order))


# ----------------------------------------------------------------------------------------------
# Reading datasets


def _check_folders(sources: Sequence[Path], into: Path) -> None:
    if not sources:
        raise UserError("no SOURCE given. Name one or more split datasets to merge, e.g. data/art.")
    if into.exists() and not into.is_dir():
        raise UserError(f"--into {into} is a file, not a folder. Choose a folder, e.g. --into data.")
    resolved_into = into.resolve()
    for source in sources:
        if not source.is_dir():
            raise UserError(f"SOURCE {source} is not an existing folder. Check the path.")
        resolved = source.resolve()
        # A source beside the target's split folders (data/art with --into data) is fine; one inside
        # them would be read as a class, and a target inside a source would merge into itself.
        inside_split = any(resolved_into / split in (resolved, *resolved.parents) for split in SPLITS)
        if resolved == resolved_into or resolved in resolved_into.parents or inside_split:
            raise UserError(f"SOURCE {source} and --into {into} overlap. Keep each SOURCE out of the target's "
                            "train/, validation/ and test/ folders, and the target out of every SOURCE.")


def _target_classes(into: Path) -> list[str]:
    """The class folder names in the target's split folders; empty when it has none yet."""
    return sorted({child.name for split in SPLITS if (into / split).is_dir()
                   for child in (into / split).iterdir() if child.is_dir() and not child.name.startswith(".")})


def _list_dataset(root: Path) -> list[tuple[str, str, Path]]:
    """(split, class, path) of every image in ``root/<split>/<Class>/``, in a stable order."""
    files = []
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        for folder in sorted(child for child in (root / split).iterdir() if child.is_dir()):
            if not folder.name.startswith("."):
                files.extend((split, folder.name, path) for path in list_images(folder))
    return files


def _hash_dataset(root: Path, workers: int, desc: str) -> list[_File]:
    """Every image of ``root`` with its sha256."""
    listed = _list_dataset(root) if root.is_dir() else []
    digests = map_in_threads(lambda chunk: [sha256_file(path) for _, _, path in chunk], listed, workers, desc)
    return [_File(split, class_name, path, digest) for (split, class_name, path), digest in zip(listed, digests)]


# ----------------------------------------------------------------------------------------------
# Reporting


def format_merge_report(report: MergeReport) -> str:
    """The table of files per split and class, and the counts that must add up, for DataMerger.py."""
    classes = sorted({class_name for _, class_name in report.counts})
    splits = [split for split in SPLITS if any(report.counts[(split, name)] for name in classes)]
    rows = [[split, name, f"{report.counts[(split, name)] - report.added_counts[(split, name)]:,}",
             f"{report.added_counts[(split, name)]:,}", f"{report.counts[(split, name)]:,}"]
            for split in splits for name in classes]
    would = "would be " if report.dry_run else ""
    lines = [
        format_table(["split", "class", "before", "added", "after"], rows),
        "",
        f"files in {report.into}: {report.before:,} before + {report.added:,} {would}added = {report.after:,} after",
        f"skipped identical: {report.identical:,}; {would}renamed (name taken by other content): {report.renamed:,}; "
        f"refused for leakage (content already in another split): {len(report.refused):,}"
        + (f" (list: {report.refused_path}, rows merged at {report.started})"
           if report.refused and not report.dry_run else ""),
    ]
    if report.dry_run:
        lines.append("dry run: nothing was written or removed.")
    return "\n".join(lines)
