"""Step 2 (class folders): split a dataset with one folder per class into train, validation and test.

    data/raw/art/                    data/
      RealArt/*.jpg         ->         train/REAL/       train/FAKE/        (70 %)
      GeneratedArt/*.jpg               validation/REAL/  validation/FAKE/   (15 %)
                                       test/REAL/        test/FAKE/         (15 %)
                                       manifest.csv   split, class, path, sha256, source, dataset
                                       skipped.csv    files left out, and why
                                       .checks.json   files' checks, settings: for a re-run

How it splits:
- each class on its own (stratified): its files sorted, shuffled with --seed and cut at --ratios,
  so the same files and seed always give the same split, whatever order the disk lists them in
- exact duplicates (the same decoded pixels, also in other bytes: PNG and BMP, a JPEG with other
  metadata) stay in the split of their first copy: no image is both trained on and tested on
- images in sub-folders of a class folder are included, their names prefixed with the sub-folder
- a dataset with only one class is split, with a warning: a classifier needs at least two

Left out and listed in skipped.csv:
- an image under two classes (all its copies)
- a segmentation mask beside its image (BUSI's benign (1)_mask.png by benign (1).png): a mask is
  not an image of its class
- files that are not images or do not decode, hidden files (.name), files beside the class folders
- a symlinked sub-folder (not followed)

SOURCE may also be the folder a zip unpacked around the dataset (data/raw/art/<Top Folder>/RealArt/,
or two deep: <Top Folder>/<Dataset>/RealArt/): while a folder holds one folder and no images, the
script looks inside it, and a line says where it found the classes.

Example, under CIFAKE's class names (so that DataMerger.py can merge it into CIFAKE's split):
    python DataSplitD1.py data/raw/art --out data/art \\
        --rename RealArt=REAL --rename GeneratedArt=FAKE
"""

from __future__ import annotations

import argparse
import sys

from realvsai.cli import make_parser, nonempty_path, run_main, setup_logging, share, usage_check
from realvsai.files import working_on
from realvsai.layout import parse_renames
from realvsai.splitting import MOVE, SplitDefaults, add_split_arguments, check_ratios, format_report, split_by_class


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SplitDefaults()
    parser = make_parser(__doc__)
    parser.add_argument("source", type=nonempty_path, help="folder with one sub-folder of images per class")
    add_split_arguments(parser, defaults)
    parser.add_argument("--ratios", type=share, nargs=3, default=list(defaults.ratios),
                        metavar=("TRAIN", "VALIDATION", "TEST"), help="shares of each class; they must add up to 1")
    args = parser.parse_args(argv)
    usage_check(parser, lambda: check_ratios(args.ratios))
    args.rename = usage_check(parser, lambda: parse_renames(args.rename))  # {OLD: NEW}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)

    def body() -> None:
        moved = args.mode == MOVE  # SOURCE is written then (files leave it), else read: kept as it is meanwhile
        with working_on([args.out, *([args.source] if moved else [])], "DataSplitD1.py",
                        reading=[] if moved else [args.source]):
            report = split_by_class(args.source, args.out, ratios=args.ratios, seed=args.seed, mode=args.mode,
                                    renames=args.rename, overwrite=args.overwrite, workers=args.workers,
                                    max_pixels=args.max_pixels)
        print(format_report(report))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
