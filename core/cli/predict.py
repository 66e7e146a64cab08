"""``main.py predict``: predict masks with a trained model; write submission.csv and mask PNGs."""

from __future__ import annotations

import sys
import time


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="RUN_DIR", help="run folder (its best checkpoint), or a "
                        "fold group (train --folds): its folds' probabilities averaged")
    source.add_argument("--checkpoint", metavar="PATH", help="a .ckpt file, a save_pretrained "
                        "folder with studio.json (a run's model/), or an exported .onnx file")
    parser.add_argument("--data", required=True, metavar="DATA_DIR", help="dataset folder (Kaggle "
                        "layout, train.csv not needed; or NIfTI / DICOM, see scan)")
    parser.add_argument("--out", required=True, metavar="submission.csv", help="submission file to "
                        "write (id,class,predicted)")
    parser.add_argument("--masks-dir", metavar="DIR", help="also write one 8-bit PNG per slice "
                        "(bit 0 large bowel, bit 1 small bowel, bit 2 stomach)")
    parser.add_argument("--overlays", action="store_true", help="with --masks-dir: also write "
                        "colour overlay PNGs")
    parser.add_argument("--ids", nargs="+", metavar="CASE_DAY", help="only these case-days, e.g. "
                        "case123_day20")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped "
                        "prediction")
    parser.add_argument("--threshold", type=float, help="probability threshold for every organ "
                        "(multilabel), replacing the tuned ones (default: the model's tuned "
                        "post-processing, else 0.5)")
    parser.add_argument("--no-postprocess", action="store_true", help="plain thresholding: ignore "
                        "the post-processing tuned for the model (thresholds, small-blob removal, "
                        "empty-slice rule)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--labels", metavar="ORGAN=N,...", help="label values of a NIfTI/DICOM "
                        "dataset's labels (see scan --labels)")
    parser.add_argument("--nifti-dir", metavar="DIR", help="also write one NIfTI label map per "
                        "case-day (1 stomach, 2 small bowel, 3 large bowel) in the scan's geometry")
    parser.add_argument("--per-organ", action="store_true", help="with --nifti-dir: also one binary "
                        "NIfTI volume per organ (overlaps kept)")
    parser.add_argument("--seg-nrrd-dir", metavar="DIR", help="also write one 3D Slicer "
                        "segmentation (.seg.nrrd) per case-day")
    parser.add_argument("--engine", choices=("torch", "onnxruntime", "auto"), default="torch",
                        help="torch (default), onnxruntime (the run's model.onnx, exported when "
                        "needed; or --checkpoint FILE.onnx) or auto (the fastest here)")


def run(args) -> int:
    from core.data.scan import read_png16, scan_dataset
    from core.errors import StudioError
    from core.export import write_mask_png, write_overlay_png, write_submission
    from core.engines import load_for_engine
    from core.predict import Predictor

    if args.overlays and not args.masks_dir:
        raise StudioError("--overlays needs --masks-dir DIR")
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise StudioError(f"--threshold {args.threshold}: choose a value between 0 and 1")
    from core.data.volumes import parse_labels
    from core.volume_export import export_volumes

    if args.per_organ and not args.nifti_dir:
        raise StudioError("--per-organ needs --nifti-dir DIR")
    model = load_for_engine(args.run or args.checkpoint, args.device, args.engine)
    index = scan_dataset(args.data, labels=parse_labels(args.labels) if args.labels else None)
    kwargs = {"postprocess": None} if args.no_postprocess else {}
    predictor = Predictor(model, index, threshold=args.threshold, tta=args.tta, **kwargs)
    if not predictor.postprocess.is_default():
        print("post-processing (tuned; --no-postprocess turns it off):\n  "
              + "\n  ".join(predictor.postprocess.describe().splitlines()), flush=True)
    start, last = time.perf_counter(), [0.0]

    def progress(event):
        now = time.monotonic()
        if event.task == "predict" and (now - last[0] > 5 or event.done == event.total):
            last[0] = now
            print(f"predicted {event.done}/{event.total} slices ({event.message})", flush=True)

    def rows():
        for result in predictor.predict_all(args.ids, progress):
            if len(result.sizes) > 1:
                sizes = ", ".join(f"{w}x{h}" for h, w in result.sizes)
                print(f"warning: {result.case_day} has slices of {len(result.sizes)} sizes "
                      f"({sizes}); each slice is predicted at its own size"
                      f"{' (no volume written)' if args.nifti_dir or args.seg_nrrd_dir else ''}",
                      file=sys.stderr)
            elif args.nifti_dir or args.seg_nrrd_dir:
                export_volumes([result], index, args.nifti_dir, args.seg_nrrd_dir, args.per_organ)
            for record, masks in zip(result.records, result.masks):
                if args.masks_dir:
                    write_mask_png(args.masks_dir, record.id, masks)
                    if args.overlays:
                        write_overlay_png(args.masks_dir, record.id, read_png16(record.path), masks)
                yield record.id, masks

    slices = write_submission(args.out, rows())
    print(f"wrote {args.out}: {slices} slices in {time.perf_counter() - start:.1f} s "
          f"(model {model.source}, {model.device})", file=sys.stdout)
    return 0
