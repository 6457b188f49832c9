"""Step 3 (optional): merge split datasets into one, e.g. the Fake-or-Real art set into CIFAKE's split.

    data/art/                   data/
      train/{FAKE,REAL}/   ->   train/{FAKE,REAL}/       (CIFAKE's + the art set's)
      validation/{FAKE,REAL}/   validation/{FAKE,REAL}/
      test/{FAKE,REAL}/         test/{FAKE,REAL}/
                                manifest.csv        every image but augmented copies, and its source
                                merge-refused.csv   files refused (leakage, two labels), by merge

Classes:
- a source adds images to classes the target has (all of them, or some: more of a small class)
- a new target takes the classes of the source with the most
- --add-classes lets a source bring a class the target lacks
- split with --rename so the names match (e.g. --rename RealArt=REAL)

One image is one set of decoded pixels, as the splitters see it: saved in another lossless format or
with other metadata, it is the same content below; re-compressed (a JPEG saved again) or resized, it
has other pixels and is not caught.

Nothing is ever overwritten:
- a file whose bytes are already in the same split and class is skipped
- a name taken by other content gets a stable new name (name_<sha256[:8]>.jpg), also one taken in
  another letter case (IMG_1.jpg beside img_1.jpg: one file on macOS and Windows)

Refused, and added to merge-refused.csv with the merge's time (rows of earlier merges stay):
- a file whose content sits in ANOTHER split of the target or of the sources (the target, then the
  sources in the order given, train first, keep what they hold), so no image is both trained on and
  tested on
- every incoming copy of content under another class, in the target or the sources: one image under
  two labels would be learnt under both (keep it in its true class only and merge again)
- an augmented copy of an image in another split, and an image whose copies sit in another split:
  training would see that image (MoveAugmentedImages.py records each copy's source in
  augmented-copies.csv)
- a source file that does not decode, or has more pixels than --max-pixels (a JPEG over it whole is
  counted and compared at its 1/8 decode, as the splitters check it)

What the target records:
- each file keeps the name of the dataset it was split from (the unit of the accuracy per source)
- a dataset named as another one there (two downloads that both unzip to Dataset/) becomes
  Dataset-2, with a warning
- the augmented copies' record (and settings, where the target's train had no copies) goes with them

Folders:
- --into and each SOURCE are dataset folders (data), never one of their splits (data/train): that is
  refused before anything is written
- a SOURCE may sit inside the target folder (data/art beside data/train), just not inside its splits

Runs:
- --dry-run shows all of this and changes nothing
- the counts add up: files in the target before + added = after
- a merge that refused a file ends with exit status 1 once the others are merged (--dry-run: 0)
- an interrupted merge is completed by running the same command again

Example:
    python DataSplitD2.py data/raw/cifake-real-and-ai-generated-synthetic-images --out data
    python DataSplitD1.py data/raw/art --out data/art \\
        --rename RealArt=REAL --rename GeneratedArt=FAKE
    python DataMerger.py data/art --into data
"""

from __future__ import annotations

import argparse
import sys

from realvsai.cli import (
    bounded,
    make_parser,
    nonempty_path,
    plural,
    positive_int,
    refuse_given_twice,
    run_main,
    setup_logging,
    usage_check,
)
from realvsai.config import LIMITS, MAX_IMAGE_PIXELS
from realvsai.errors import UserError
from realvsai.files import working_on
from realvsai.merging import REFUSED_NAME, REFUSED_WHY, format_merge_report, merge_datasets
from realvsai.splitting import next_step_line, not_trainable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("sources", type=nonempty_path, nargs="+", metavar="SOURCE",
                        help="split datasets (train/, validation/, test/ with class folders) to merge")
    parser.add_argument("--into", type=nonempty_path, required=True,
                        help="the dataset folder to merge into (the one holding train/); created when missing")
    parser.add_argument("--add-classes", action="store_true",
                        help="let a source add classes --into does not have (by default a class name it lacks is "
                             "refused: often the same class spelled otherwise)")
    parser.add_argument("--move", action="store_true", help="remove each source file once its content is in --into")
    parser.add_argument("--dry-run", action="store_true", help="print what would happen and change nothing")
    parser.add_argument("--workers", type=positive_int,
                        help="threads that hash and decode the files (default: one per core, or one for small "
                             "images, such as CIFAKE's, where threads only wait on each other)")
    parser.add_argument("--max-pixels", type=bounded(int, LIMITS["max_pixels"]), default=MAX_IMAGE_PIXELS,
                        help="source images with more pixels are refused (decompression bombs); a JPEG over it is "
                             "checked at its 1/8 decode, so a 200 MP phone photo passes")
    args = parser.parse_args(argv)
    usage_check(parser, lambda: refuse_given_twice(args.sources, "SOURCE"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)

    def body() -> None:
        # Each SOURCE is written with --move (files leave it), else read: kept as it is meanwhile.
        with working_on([args.into, *(args.sources if args.move else [])], "DataMerger.py",
                        reading=[] if args.move else args.sources):
            report = merge_datasets(args.sources, args.into, move=args.move, dry_run=args.dry_run,
                                    workers=args.workers, max_pixels=args.max_pixels, add_classes=args.add_classes)
        print(format_merge_report(report))
        if report.dry_run:
            return
        if report.refused:
            # After the summary: a command that goes on to train must not take the merge for complete.
            raise UserError(
                f"refused {plural(len(report.refused), 'file')} ({REFUSED_WHY}), not merged; the reasons are in "
                f"{report.into / REFUSED_NAME} (rows merged at {report.started}). Do what each reason says, or "
                "delete those files from SOURCE, then run DataMerger.py again (the other files are merged).")
        if why := not_trainable(report.counts):
            print(f"Not ready for training: {why}. Merge a dataset that has them too, or split these classes' "
                  "images again with the others (DataSplitD1.py or DataSplitD2.py).")
        else:
            print(next_step_line(report.into))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
