"""``main.py scan DATA_DIR``: check a dataset folder and print its report."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", help="dataset folder: Kaggle layout, "
                        "NIfTI (nnU-Net/MSD or flat) or DICOM series")
    parser.add_argument("--labels", metavar="ORGAN=N,...", help="label values of NIfTI/DICOM "
                        "labels, e.g. stomach=1,small_bowel=2,large_bowel=3 (default: dataset.json's "
                        "names); remembered for the folder")
    parser.add_argument("--corrections", metavar="FILE.csv", help="corrected masks (train.csv "
                        "format) that replace the dataset's rows for their ids")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    import json

    from core.data.scan import scan_dataset
    from core.data.volumes import parse_labels

    labels = parse_labels(args.labels) if args.labels else None
    report = scan_dataset(args.data_dir, labels=labels, corrections=args.corrections).report
    if args.json:
        data = report.to_dict()
        print(json.dumps({k: data[k] for k in ("cases", "case_days", "slices", "slices_with",
                                               "image_sizes", "corrected", "problems")}, indent=2))
        return 0
    print(f"{report.root}: {report.cases} cases, {report.case_days} case-days, {report.slices} "
          f"slices{'' if report.has_labels else ' (no train.csv: images only)'}")
    for organ, n in report.slices_with.items():
        print(f"  slices with {organ:<12} {n}")
    if args.corrections:
        print(f"  corrected slices        {report.corrected} (from {args.corrections})")
    sizes = ", ".join(f"{size} ({n})" for size, n in sorted(report.image_sizes.items()))
    print(f"  image sizes (W x H)     {sizes}")
    print(f"  problems                {len(report.problems)}")
    for p in report.problems:
        print(f"    {p.severity:<7} {p.where}: {p.message}")
    return 0
