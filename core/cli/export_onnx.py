"""``main.py export-onnx``: write a trained model as ONNX (dynamic batch, preprocessing in metadata)."""

from __future__ import annotations

import time


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="RUN_DIR", help="run folder (its best checkpoint)")
    source.add_argument("--checkpoint", metavar="PATH", help="a .ckpt file, or a run's model/ folder")
    parser.add_argument("--out", metavar="model.onnx", help="file to write (default: "
                        "RUN_DIR/model.onnx, which predict --engine onnxruntime --run uses)")
    parser.add_argument("--no-verify", action="store_true", help="skip comparing onnxruntime's "
                        "probabilities with the PyTorch model's on random inputs")


def run(args) -> int:
    from core.engines import export_onnx, verify_onnx

    start = time.perf_counter()
    source = args.run or args.checkpoint
    path = export_onnx(source, args.out)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    if not args.no_verify:
        difference = verify_onnx(source, path)
        print(f"onnxruntime vs torch: max abs difference of probabilities {difference:.2e}")
    return 0
