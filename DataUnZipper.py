"""Step 1: unzip a downloaded dataset archive (.zip) into data/raw/, safely and resumably.

    ~/Downloads/cifake-real-and-ai-generated-synthetic-images.zip
      -> data/raw/cifake-real-and-ai-generated-synthetic-images/
           train/REAL/  train/FAKE/  test/REAL/  test/FAKE/

Only zip archives are read. Refused in one line that gives the command to run instead:
- a .tar.gz, .tgz, .tar, .7z or .rar file (the command that extracts it)
- one part of a split zip, .z01, .z02, ... (the command that joins the parts)

The whole archive is checked before anything is written:
- refused: entries that would land outside the target (absolute paths, "..", symlinks)
- refused: zip bombs (entries that overlap; see also --max-total-bytes, --max-ratio)
- macOS junk (__MACOSX/, .DS_Store, ._name) is skipped; an archive with nothing else (or nothing at
  all) is refused, and no folder is made

Names, times and permissions:
- entry names not marked UTF-8 are read as UTF-8 where valid, else as cp437, with a warning;
  --name-encoding reads them in the archive's encoding (shift_jis for a Japanese Windows zip)
- two entries that would be one file on macOS and Windows (IMG_1.jpg, img_1.jpg) are both
  written, the later under a name of its own (img_1_<CRC-32>.jpg), with a warning
- on Windows, a name it cannot hold (12:30?.png, CON.jpg) is written with _ in its place
  (12_30_.png, CON_.jpg), with a warning
- each file gets the archive's modification time: exact UTC where the zip has one (Info-ZIP's
  extended timestamp), else its DOS time read as local time
- a zip made on Unix gives each file its permission bits, never setuid, setgid or sticky, and the
  owner can always read and write it; folders get the umask's mode

While writing, an entry that inflates to more or fewer bytes than it declares is an error.

Re-runs and your files:
- files are written under a temporary name, then renamed: run the same command again to finish an
  interrupted run (files already there with the same size and CRC-32 are skipped)
- a file with other content is replaced only with --overwrite; no file is ever deleted
- a warning says when the target also holds files this archive does not (another download's)

For a download that holds archives (train.zip, test.zip), a line after the summary names the command
that unzips each one beside itself (data/raw/<download>/train/); once all are unzipped, the Next:
line names the split that reads them together.

Example:
    python DataUnZipper.py ~/Downloads/cifake-real-and-ai-generated-synthetic-images.zip
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from realvsai.archives import UnzipLimits, archive_stem, extract_archive, folder_beside
from realvsai.cli import byte_count, expansion_ratio, make_parser, nonempty_path, plural, run_main, setup_logging
from realvsai.config import shell_path
from realvsai.errors import UserError
from realvsai.files import as_typed, human_bytes, locate, working_on
from realvsai.layout import SPLIT_WORDS, find_class_root, find_train_test_root, name_key, split_folders_fix, subfolders
from realvsai.splitting import SplitDefaults, advised_out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    limits = UnzipLimits()
    parser = make_parser(__doc__)
    parser.add_argument("archive", type=nonempty_path, help="the .zip file to extract")
    parser.add_argument("--to", type=nonempty_path, default=None,
                        help="folder to extract into (default: data/raw/<archive name without .zip>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files whose content differs from the archive's")
    # A string default goes through byte_count like a typed value, so --help shows it as a user writes it.
    parser.add_argument("--max-total-bytes", type=byte_count, default=f"{limits.max_total_bytes / 1024**3:g}G",
                        help="refuse archives that expand to more than this many bytes (accepts 500M, 100G)")
    parser.add_argument("--max-ratio", type=expansion_ratio, default=limits.max_ratio,
                        help="refuse entries over 1 MB (and archives) that expand more than this many times "
                             "(at least 1)")
    parser.add_argument("--name-encoding", type=name_encoding, default=None,
                        help="encoding of the entry names not marked UTF-8, e.g. shift_jis, cp932, gbk, cp866 "
                             "(default: UTF-8 where valid, else cp437; like unzip -O)")
    return parser.parse_args(argv)


def name_encoding(text: str) -> str:
    """argparse type for a text encoding that keeps ASCII as it is (a file name's "/" and "." stay what they are)."""
    try:
        keeps_ascii = b"name/.txt".decode(text) == "name/.txt"
    except (LookupError, UnicodeDecodeError):  # unknown, not a text encoding (base64), or not byte-wise (utf-16)
        keeps_ascii = False
    if not keeps_ascii:
        raise argparse.ArgumentTypeError(f"{text!r} is not a known text encoding that keeps ASCII as it is; give "
                                         "one such as shift_jis, cp932, gbk, big5, euc_kr or cp866")
    return text


def unzip_command(archive: Path) -> str:
    """The command that unzips ``archive`` (one a download holds) into a folder beside it of its name."""
    return f"python DataUnZipper.py {shell_path(archive)} --to {shell_path(folder_beside(archive))}"


def next_step(folder: Path) -> str:
    """The line that names the split script that reads ``folder``: DataSplitD2.py where it holds train/ and test/ (or
    wraps a folder that does); for a download split as train/ and validation/ alone, the rename DataSplitD2 needs
    first; else DataSplitD1.py (one folder per class), which says what it finds there if neither fits. A split
    folder unzipped beside the archives of the other splits (train/ beside test.zip) names the next archive to unzip,
    then the split of the folder that holds them all."""
    if SPLIT_WORDS.get(name_key(folder.name)):  # one of a download's split archives (train.zip beside test.zip)
        packed = [path for path in sorted(folder.parent.iterdir()) if path.name.lower().endswith(".zip")
                  and SPLIT_WORDS.get(name_key(archive_stem(path))) and not path.name.startswith(".")
                  and not folder_beside(path).exists()]
        if packed:
            return f"Next: unzip {packed[0].name} too: {unzip_command(packed[0])}"
        with contextlib.suppress(UserError):
            if find_train_test_root(folder.parent) == folder.parent:
                folder = folder.parent
    with contextlib.suppress(UserError):
        out = advised_out(SplitDefaults.out, find_train_test_root(folder))
        return f"Next: python DataSplitD2.py {shell_path(folder)} --out {shell_path(out)}"
    root = folder
    with contextlib.suppress(UserError):
        root = find_class_root(folder)
        if fix := split_folders_fix(root, [child.name for child in subfolders(root)],
                                    out=lambda folder: advised_out(SplitDefaults.out, folder)):
            return f"Next: {fix}"
    return f"Next: python DataSplitD1.py {shell_path(folder)} --out {shell_path(advised_out(SplitDefaults.out, root))}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)

    def body() -> None:
        if args.archive.is_dir():  # unzipped already, or never packed
            raise UserError(f"{args.archive} is a folder, not an archive: nothing to unzip. {next_step(args.archive)}")
        # A --to as the file system finds it (through nosuch/.., extraction's own reading) for every step below.
        target = locate(args.to) if args.to is not None else Path("data/raw") / archive_stem(args.archive)
        limits = UnzipLimits(max_total_bytes=args.max_total_bytes, max_ratio=args.max_ratio)
        with working_on([target], "DataUnZipper.py", reading=[args.archive]):
            result = extract_archive(args.archive, target, overwrite=args.overwrite, limits=limits,
                                     name_encoding=args.name_encoding)
        extracted_to = as_typed(result.target, args.to if args.to is not None else target)
        print(f"Extracted {plural(result.extracted, 'file')} ({human_bytes(result.bytes_written)}) to {extracted_to}; "
              f"{result.already_there:,} already there, "
              f"{plural(result.junk_skipped, 'macOS junk entry', 'macOS junk entries')} skipped.")
        # A download that wraps the dataset's own archives: their images are still packed, unless unzipped already.
        packed = [relative for relative in result.archives if not folder_beside(extracted_to / relative).exists()]
        if packed:
            named = f"{', '.join(packed[:3])}{', ...' if len(packed) > 3 else ''}"
            print(f"It holds {plural(len(packed), 'archive')} ({named}), whose files are still packed; unzip "
                  f"{'it' if len(packed) == 1 else 'each'} beside itself, starting with: "
                  f"{unzip_command(extracted_to / packed[0])}")
        else:
            print(next_step(extracted_to))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
