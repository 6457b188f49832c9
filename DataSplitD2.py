"""Step 2 (CIFAKE): split a dataset that comes as train/ and test/: validation is carved out of train.

    data/raw/cifake-real-and-ai-generated-synthetic-images/   data/
      train/REAL/  train/FAKE/   ->   train/REAL/       train/FAKE/        (80 % of train)
      test/REAL/   test/FAKE/         validation/REAL/  validation/FAKE/   (20 % of train)
                                      test/REAL/        test/FAKE/         (all of test)
                                      manifest.csv   split, class, path, sha256, source, dataset
                                      skipped.csv    files left out, and why
                                      .checks.json   files' checks, settings: for a re-run

How it splits:
- each train class on its own (stratified), after sorting and a shuffle with --seed: the same files
  and seed always give the same split; test stays test
- a validation folder beside train/ and test/ (valid/, val/ or validation/, as Kaggle's 140k faces,
  or a split that DataZipper packed) is kept as validation, and nothing is carved out of train
- train/ and test/ may be in any letter case; SOURCE may also be a folder holding one such dataset,
  or a folder or two around it (a Kaggle zip often unpacks to cifake/train, cifake/test)
- a dataset with only one class is split, with a warning: a classifier needs at least two

No leakage:
- a train file identical to a test file (the same decoded pixels) is left out of train and
  validation and listed in skipped.csv: the test accuracy is never inflated by an image the model
  trained on
- a train file identical to a validation file is left out of train
- other exact duplicates stay in the split of their first copy

Left out and listed in skipped.csv:
- an image under two classes (all its copies)
- a segmentation mask beside its image (x_mask.png by x.png)
- files that are not images or do not decode, hidden files (.name), symlinked folders inside a
  class folder (not followed)
- images outside the class folders of train/, test/ (and valid/): loose in SOURCE, train/ or test/,
  or in another folder, with a warning naming some

Example:
    python DataSplitD2.py data/raw/cifake-real-and-ai-generated-synthetic-images --out data
"""

from __future__ import annotations

import argparse
import sys

from realvsai.cli import fraction, make_parser, nonempty_path, run_main, setup_logging, usage_check
from realvsai.files import working_on
from realvsai.layout import parse_renames
from realvsai.splitting import MOVE, SplitDefaults, add_split_arguments, format_report, split_train_test


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = SplitDefaults()
    parser = make_parser(__doc__)
    parser.add_argument("source", type=nonempty_path,
                        help="folder with train/<Class>/ and test/<Class>/ (or one folder holding such a folder)")
    add_split_arguments(parser, defaults)
    parser.add_argument("--val-fraction", type=fraction, default=defaults.val_fraction,
                        help="share of each train class that becomes validation")
    args = parser.parse_args(argv)
    args.rename = usage_check(parser, lambda: parse_renames(args.rename))  # {OLD: NEW}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)

    def body() -> None:
        moved = args.mode == MOVE  # SOURCE is written then (files leave it), else read: kept as it is meanwhile
        with working_on([args.out, *([args.source] if moved else [])], "DataSplitD2.py",
                        reading=[] if moved else [args.source]):
            report = split_train_test(args.source, args.out, val_fraction=args.val_fraction, seed=args.seed,
                                      mode=args.mode, renames=args.rename, overwrite=args.overwrite,
                                      workers=args.workers, max_pixels=args.max_pixels)
        print(format_report(report))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
