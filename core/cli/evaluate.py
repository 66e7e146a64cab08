"""``main.py evaluate --data DATA_DIR --submission FILE``: score a submission against train.csv.

Prints Dice, Hausdorff and the competition score (definitions in ``core.metrics``), per organ and
overall, as a table or, with ``--json``, as one JSON object. Every slice of the scored case-days needs
its three rows in the submission; ``--ids`` scores only some case-days.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, metavar="DATA_DIR",
                        help="dataset folder in the Kaggle layout, with train.csv (the truth)")
    parser.add_argument("--submission", required=True, metavar="FILE",
                        help="submission.csv with columns id,class,predicted (RLE)")
    parser.add_argument("--ids", nargs="+", metavar="CASE_DAY",
                        help="score only these case-days, e.g. case123_day20 (default: all)")
    parser.add_argument("--corrections", metavar="FILE.csv", help="score against the corrected "
                        "masks (train.csv format) where the file has them")
    parser.add_argument("--json", action="store_true",
                        help="print {dice, hausdorff, score, dice_per_organ, hausdorff_per_organ, "
                             "slices} as JSON")


def run(args) -> int:
    import json
    import sys

    import numpy as np

    from core.data.scan import load_masks, scan_dataset
    from core.errors import StudioError
    from core.export import read_submission
    from core.metrics import ScoreAccumulator

    index = scan_dataset(args.data, corrections=args.corrections)
    if not index.has_labels:
        raise StudioError(f"'{args.data}' has no train.csv, so there is no truth to score against; "
                          "evaluate needs a labelled dataset")
    groups = index.case_days()
    chosen = _choose_case_days(list(groups), args.ids)
    left_out = sum(p.severity == "error" for p in index.report.problems)
    if left_out:
        print(f"warning: the scan found {left_out} problems that leave slices out; they are not "
              f"scored (see 'main.py scan {args.data}')", file=sys.stderr)
    submission = read_submission(args.submission, {r.id: r.shape for r in index.slices},
                                 [r.id for case_day in chosen for r in groups[case_day]])
    scores = ScoreAccumulator()
    for case_day in chosen:
        records = groups[case_day]
        sizes = {r.shape for r in records}
        if len(sizes) > 1:
            raise StudioError(f"{case_day} has slices of different sizes "
                              f"({', '.join(f'{w}x{h}' for h, w in sorted(sizes))}); a scan's 3-D "
                              "Hausdorff needs one size")
        truth = np.stack([load_masks(r) for r in records])
        pred = np.stack([submission.masks(r.id) for r in records])
        scores.add_case_day(case_day, pred, truth)
    result = scores.result()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_table(result, len(chosen), args.submission)
    return 0


def _choose_case_days(available: list[str], wanted: list[str] | None) -> list[str]:
    """``wanted`` in order without repeats (all of ``available`` when None); unknown ones are errors."""
    from core.errors import StudioError

    if not wanted:
        return available
    unknown = [c for c in wanted if c not in available]
    if unknown:
        sample = ", ".join(available[:5]) + (", ..." if len(available) > 5 else "")
        raise StudioError(f"--ids: case-day '{unknown[0]}' is not in the dataset (it has {sample})")
    return list(dict.fromkeys(wanted))


def _print_table(result, case_days: int, submission: str) -> None:
    from core.data import ORGANS

    print(f"{submission}: {result.slices} slices in {case_days} case-day"
          f"{'' if case_days == 1 else 's'}")
    print()
    print(f"{'organ':<14}{'Dice':>8}{'Hausdorff':>11}")
    for organ in ORGANS:
        print(f"{organ:<14}{result.dice_per_organ[organ]:>8.4f}"
              f"{result.hausdorff_per_organ[organ]:>11.4f}")
    print(f"{'all organs':<14}{result.dice:>8.4f}{result.hausdorff:>11.4f}")
    print()
    print(f"score = 0.4 * Dice + 0.6 * (1 - Hausdorff) = {result.score:.4f}")
    print("Dice: mean over (slice, organ) pairs; pairs where both masks are empty are skipped.")
    print("Hausdorff: 3-D per case-day, in [0, 1]; an organ's row is on its own volume, 'all organs'")
    print("(the one in the score) on the union of the organs.")
