"""Delete a dataset or model folder (or one file) under data/ or models/, after showing what goes.

    data/raw/cifake-trainsplit/   ->   (gone; the archive it came from is untouched)

It counts the files and bytes first and asks before deleting:
- --yes skips the question; without a terminal to ask on, it refuses unless --yes is given
- --dry-run only shows what would go

It never deletes:
- the file-system root, your home folder, this repository, or a folder holding them
  (also named in another letter case: the same folder on macOS and Windows)
- a file of the repository outside data/ and models/
- anything else outside the project's data/ and models/, unless --allow-outside
- what a symlink points to: symlinks are removed as links

Deleting images of a split (data/train/REAL/bad.png, or a class folder) removes their rows from its
manifest.csv too, so that training reads the split as finished.

Example:
    python DataDeleter.py data/raw/cifake-real-and-ai-generated-synthetic-images --dry-run
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from realvsai.cli import confirm, make_parser, nonempty_path, plural, run_main, setup_logging
from realvsai.config import DELETABLE_ROOTS, REPOSITORY
from realvsai.deleting import check_deletable, delete_planned, describe, plan_deletion, split_manifest
from realvsai.errors import UserError
from realvsai.files import as_typed, human_bytes, locate, working_on


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("path", type=nonempty_path, help="the folder or file to delete")
    parser.add_argument("--yes", action="store_true", help="delete without asking")
    parser.add_argument("--dry-run", action="store_true", help="show what would be deleted and delete nothing")
    parser.add_argument("--allow-outside", action="store_true",
                        help=f"allow deleting outside {' and '.join(map(str, DELETABLE_ROOTS))}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)

    def body() -> int:
        location = locate(args.path)
        # Before the claim: a protected folder is refused as such, whatever runs below it.
        check_deletable(location, protected=[Path(REPOSITORY.anchor), Path.home(), REPOSITORY],
                        allowed_roots=DELETABLE_ROOTS, allow_outside=args.allow_outside, repository=REPOSITORY,
                        given=args.path)
        # A run that reads a folder around it refuses it, even for one file (files.working_on); the manifest.csv
        # of a split it deletes from is rewritten: a second deletion there at once would write back its rows.
        manifest = split_manifest(location)
        with working_on([args.path, *([manifest] if manifest else [])], "DataDeleter.py"):
            return delete(args, location)

    return run_main(body)


def delete(args: argparse.Namespace, location: Path) -> int:
    """Plans, asks and deletes ``location`` (checked deletable); the exit code."""
    plan, shown = plan_deletion(location), as_typed(location, args.path)
    print(describe(dataclasses.replace(plan, path=shown)))
    if args.dry_run:
        print("Dry run: nothing was deleted.")
        return 0
    question = (f"Delete the symlink {shown} ({plan.link}, where it leads, is kept)?" if plan.link is not None else
                f"Delete {plural(plan.files, 'file')} ({human_bytes(plan.num_bytes)}) in {shown}?")
    if not confirm(question, args.yes):
        print("Nothing was deleted.")
        return 1
    if not args.yes and plan_deletion(location) != plan:  # counted again: the answer was to what was shown
        raise UserError(f"{shown} changed while the question waited, so nothing was deleted: run the same "
                        "command again to see what goes now.")
    files, folders = delete_planned(plan)
    if plan.link is not None:
        print(f"Deleted the symlink {shown}; {plan.link} is kept.")
    else:
        print(f"Deleted {plural(files, 'file')} and {plural(folders, 'folder')} ({human_bytes(plan.num_bytes)}) "
              f"from {shown}{plan.and_rows()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
