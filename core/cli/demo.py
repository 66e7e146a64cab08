"""``main.py demo OUT_DIR``: write the synthetic demo dataset."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (empty, or an old demo)")
    parser.add_argument("--cases", type=int, default=6, help="number of cases (default 6)")
    parser.add_argument("--slices", type=int, default=36, help="slices per scan (default 36)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--format", choices=("kaggle", "nifti", "nifti-flat", "dicom"),
                        default="kaggle", help="kaggle (PNG + train.csv, default), nifti (nnU-Net/"
                        "MSD: imagesTr, labelsTr, dataset.json), nifti-flat, or dicom (series + "
                        "NIfTI labels)")


def run(args) -> int:
    import time

    from core.data.demo import generate_demo_dataset

    start = time.perf_counter()
    if args.format == "kaggle":
        out = generate_demo_dataset(args.out_dir, cases=args.cases, slices_per_scan=args.slices,
                                    seed=args.seed)
    else:
        import tempfile
        from pathlib import Path

        from core.data.demo_volumes import write_demo_dicom, write_demo_nifti
        from core.errors import DatasetError

        out = Path(args.out_dir)
        if out.exists() and any(out.iterdir()):
            raise DatasetError(f"'{out}' is not empty; choose an empty folder")
        with tempfile.TemporaryDirectory() as tmp:
            kaggle = generate_demo_dataset(Path(tmp) / "demo", cases=args.cases,
                                           slices_per_scan=args.slices, seed=args.seed)
            if args.format == "dicom":
                write_demo_dicom(kaggle, out)
            else:
                write_demo_nifti(kaggle, out, "msd" if args.format == "nifti" else "flat")
    print(f"demo dataset written to {out} in {time.perf_counter() - start:.1f} s")
    return 0
