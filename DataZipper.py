"""Zip a folder (a prepared dataset, a trained model) to share it or move it to another machine.

    data/train/REAL/  data/train/FAKE/   ->   data/train.zip  (entries REAL/..., FAKE/...)

What goes in:
- entries named relative to the folder, in sorted order: the same folder always gives the same
  archive layout, and DataUnZipper.py data/train.zip recreates it as data/raw/train/
- JPEG, PNG, WebP and GIF files stored as they are (compressed already); other files deflated
- left out: symlinks, and a killed run's half-written file (a hidden .<name>.<random>.tmp)
- left out: a split's .checks.json beside its manifest.csv (only a re-run of that split reads it)

Refused before anything is written: a file name DataUnZipper.py would not give back as it is
(a backslash, a leading drive letter such as C:) or that is not UTF-8.

The archive is written under a temporary name and renamed into place only when complete (the next
run removes a killed run's partial archive); --verify reads it back first and checks every CRC-32.

Example:
    python DataZipper.py data/train --out ~/train.zip --verify
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from realvsai.archives import archive_stem, is_archive, zip_folder
from realvsai.cli import make_parser, nonempty_path, plural, run_main, setup_logging
from realvsai.errors import UserError
from realvsai.files import as_typed, human_bytes, locate, working_on


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("folder", type=nonempty_path, help="the folder to zip")
    parser.add_argument("--out", type=nonempty_path, default=None,
                        help="the archive to write (default: <folder>.zip beside the folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists (one that already holds these files is kept without it)")
    parser.add_argument("--verify", action="store_true",
                        help="read the archive back and check every CRC-32 before giving it its name")
    args = parser.parse_args(argv)
    if args.out is not None and is_archive(args.out) and not args.out.name.lower().endswith(".zip"):
        # A zip named d.tar.gz: tar refuses it, and the name misleads whoever receives it.
        stem = archive_stem(args.out)
        parser.error(f"--out {args.out} is named as a {args.out.name[len(stem):]} archive, but DataZipper.py writes "
                     f"a zip: name it {args.out.with_name(stem + '.zip')}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)

    def body() -> None:
        if not args.folder.is_dir():  # named as typed
            raise UserError(f"{args.folder} is not a folder. Give the folder to zip, e.g. data/train.")
        folder = locate(args.folder)  # "." and "link/.." named as the shell sees them; a symlinked folder's zip goes
        # beside the link
        out = args.out if args.out is not None else folder.with_name(f"{folder.name}.zip")
        if args.out is None and not args.folder.is_absolute():  # a refusal names dataset.zip, as typed, not
            out = Path(os.path.relpath(out))  # /home/me/project/dataset.zip (lexically: beside a symlinked folder)
        with working_on([out], "DataZipper.py", reading=[folder]):  # no run writes in the folder meanwhile
            result = zip_folder(folder, out, overwrite=args.overwrite, verify=args.verify)
        archive = as_typed(result.archive, args.out if args.out is not None else args.folder)
        if result.unchanged:
            count = result.stored + result.deflated
            held = ("this file (its size and CRC-32 compared" if count == 1 else
                    f"these {count:,} files (each one's size and CRC-32 compared")
            print(f"{archive} already holds {held}{', its data read back' if args.verify else ''}): "
                  "nothing written.")
            return
        left_out = (f", {plural(len(result.left_out), 'symlink or special file', 'symlinks or special files')} "
                    "left out" if result.left_out else "")
        if result.junk_left_out:
            left_out += (f", {plural(result.junk_left_out, 'macOS junk file')} (.DS_Store, ._name, __MACOSX/) left "
                         "out")
        print(f"Wrote {archive} ({human_bytes(result.archive_bytes)}): {plural(result.stored, 'file')} stored, "
              f"{result.deflated:,} deflated, {plural(result.empty_folders, 'empty folder')}{left_out}"
              f"{'; every CRC-32 verified' if args.verify else ''}.")

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
