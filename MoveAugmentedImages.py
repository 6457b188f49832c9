"""Step 5: moves the augmented copies into the training set, then removes the emptied augmented folder.

    DATA/augmented_train/<Class>/aug_cat_0.jpg   ->   DATA/train/<Class>/aug_cat_0.jpg

Nothing is overwritten:
- a copy whose content is already in train is dropped
- a copy whose name is taken by a different file gets a new name derived from its content

Class folders that train does not have are refused before anything moves.

No copy leaks a validation or test image into training. A copy stays in augmented_train, added to
DATA/move-refused.csv with the time of the run and the reason, when:
- it has the content of a validation or test image
- augmented_train/sources.csv (written by DataAugmentation.py) says it was made from an image that
  is now in validation or test (the split changed since), or in no split
- sources.csv does not list it (made by hand or by an older version), unless --move-unlisted

A run that refused a copy ends with exit status 1 once the others are moved, so a command that goes
on to train stops (a --dry-run only says what it would refuse, with 0).

Before the first copy moves, each one's source is added to DATA/augmented-copies.csv (by sha256):
in train, that record is how DataMerger.py keeps copies of another split's image out of train.
Interrupted, it can simply be run again.

Examples:
    python MoveAugmentedImages.py --data data --dry-run
    python MoveAugmentedImages.py --data data
"""

from __future__ import annotations

import sys
from argparse import Namespace

from realvsai.cli import format_table, make_parser, nonempty_path, plural, run_main, setup_logging
from realvsai.config import TrainConfig, shell_path
from realvsai.errors import UserError
from realvsai.files import working_on
from realvsai.moving import MoveReport, move_augmented, moved_copies_in_train


def parse_args(argv: list[str] | None = None) -> Namespace:
    parser = make_parser(__doc__)
    parser.add_argument("--data", type=nonempty_path, default=TrainConfig.data,
                        help="dataset folder holding train/ and augmented_train/")
    parser.add_argument("--dry-run", action="store_true", help="show what would move and change nothing")
    parser.add_argument("--move-unlisted", action="store_true",
                        help="also move copies that augmented_train/sources.csv does not list (their source is "
                             "unknown: use it only for copies you know were made from training images)")
    return parser.parse_args(argv)


def move(args: Namespace) -> None:
    with working_on([args.data], "MoveAugmentedImages.py"):
        report = move_augmented(args.data, dry_run=args.dry_run, move_unlisted=args.move_unlisted)
        moved_before = sum(1 for _ in moved_copies_in_train(args.data)) if report is None else 0  # by an earlier run
    print_summary(args, report, moved_before)
    if report is not None and report.refused_files and not args.dry_run:
        # After the summary: training on a train folder that lacks copies the user asked for must not follow.
        raise UserError(refusal_line(report))


def refusal_line(report: MoveReport) -> str:
    """The error line of a run that refused copies: how many, why, where they and their reasons are, what to do."""
    kinds = report.refused_kinds
    why = next(iter(kinds)) if len(kinds) == 1 else ", ".join(f"{count:,} {kind}" for kind, count in kinds.items())
    return (f"refused {plural(len(report.refused_files), 'copy', 'copies')} ({why}), left in {report.augmented_dir}; "
            f"the reasons are in {report.refused_path}. Do what each reason says, or delete those copies, then run "
            "MoveAugmentedImages.py again (the other copies are in train).")


def print_summary(args: Namespace, report: MoveReport | None, moved_before: int = 0) -> None:
    """What the move did (``report``; None without augmented_train, where train holds ``moved_before`` copies moved
    by an earlier run), and the next step."""
    if report is None and moved_before:
        print(f"Nothing to move: {args.data} has no augmented_train folder; {args.data}/train holds the "
              f"{plural(moved_before, 'augmented copy', 'augmented copies')} moved there already.")
        print(f"Next: python ModelTraining.py --data {shell_path(args.data)}")
        return
    if report is None:
        print(f"Nothing to move: {args.data} has no augmented_train folder. Make the copies first: "
              f"python DataAugmentation.py --data {shell_path(args.data)}")
        return
    columns = ("train before", "moved", "identical", "renamed", "refused", "train after")
    rows = [(name, *(counts[key] for key in columns)) for name, counts in report.counts.items()]
    print(format_table(("class", "train before", "moved", "identical (skipped)", "renamed", "refused",
                        "train after"), rows))
    moved, identical, renamed = (sum(counts[key] for counts in report.counts.values())
                                 for key in ("moved", "identical", "renamed"))
    verb = "Would move" if args.dry_run else "Moved"
    line = (f"{verb} {plural(moved + renamed, 'file')} into {args.data}/train ({renamed:,} under a new name); "
            f"{identical:,} already there (identical, skipped).")
    refused = len(report.refused_files)
    if refused:
        kinds = ", ".join(f"{plural(count, 'copy', 'copies')} {kind}" for kind, count in report.refused_kinds.items())
        line += (f" {'Would refuse' if args.dry_run else 'Refused'} {kinds} (left in augmented_train"
                 + (f"; reasons: {report.refused_path})." if report.refused_path else ")."))
    if args.dry_run:
        line += " Dry run: nothing was changed."
    elif report.removed_folder:
        line += f" Removed the emptied {args.data}/augmented_train."
    else:
        line += (f" Kept {args.data}/augmented_train: it still holds "
                 f"{plural(len(report.left_behind) + refused, 'file')}.")
    print(line)
    if not args.dry_run and not refused:  # after a refusal, the error line that follows says what to do
        print(f"Next: python ModelTraining.py --data {shell_path(args.data)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.quiet)
    return run_main(lambda: move(args))


if __name__ == "__main__":
    sys.exit(main())
