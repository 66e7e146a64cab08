"""``main.py pretrained list|download``: the SegFormer (MiT) encoders on this machine; fetch one."""

from __future__ import annotations


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list the checkpoints found in the Hugging Face cache and "
                       "in the data folder's pretrained/", description="list the pretrained "
                       "SegFormer checkpoints found on this machine (name, variant, folder)")
    download = actions.add_parser("download", help="download a checkpoint from the Hugging Face "
                                  "Hub into the data folder's pretrained/", description="download "
                                  "config.json and the weights of a Hugging Face model into "
                                  "pretrained/ORG--NAME in the data folder")
    download.add_argument("repo_id", metavar="REPO_ID", help="Hugging Face model id, e.g. "
                          "nvidia/mit-b0 (nvidia/mit-b0 … nvidia/mit-b5: the MiT encoders "
                          "pretrained on ImageNet)")


def run(args) -> int:
    return _download(args.repo_id) if args.action == "download" else _list()


def _list() -> int:
    from core.pretrained import (find_pretrained, hf_cache_dir, pretrained_dir,
                                 unusable_in_pretrained_dir)

    found = find_pretrained()
    if found:
        width = max(len(checkpoint.name) for checkpoint in found)
        for checkpoint in found:
            print(f"{checkpoint.name:<{width}}  {checkpoint.variant}  {checkpoint.folder}")
        print("use one with: main.py train ... --set model.pretrained=FOLDER "
              "(and --set model.variant=VARIANT)")
    else:
        print(f"no pretrained SegFormer checkpoints found (searched the Hugging Face cache "
              f"'{hf_cache_dir()}' and '{pretrained_dir()}'); get one with 'main.py pretrained "
              "download nvidia/mit-b0', or copy a folder with config.json and model.safetensors "
              f"into '{pretrained_dir()}'")
    for folder, problem in unusable_in_pretrained_dir():
        print(f"skipped {folder}: {problem}")
    return 0


def _download(repo_id: str) -> int:
    import time

    from core.pretrained import download_pretrained, download_target

    start = time.perf_counter()
    target = download_target(repo_id.strip())  # a malformed id fails here, before anything prints
    already = target.is_dir()
    if not already:
        print(f"downloading {repo_id} into {target}", flush=True)
    checkpoint = download_pretrained(repo_id, progress=_ProgressPrinter())
    if already:
        print(f"{checkpoint.name} ({checkpoint.variant}) is already in {checkpoint.folder}")
    else:
        print(f"downloaded {checkpoint.name} (MiT-{checkpoint.variant.upper()}) in "
              f"{time.perf_counter() - start:.1f} s")
    print(f"use it with: --set model.variant={checkpoint.variant} "
          f"--set model.pretrained={checkpoint.folder}")
    return 0


class _ProgressPrinter:
    """One line per tenth of the download (a log, not a bar: it reads the same in a file)."""

    def __init__(self):
        self.printed = -1

    def __call__(self, event) -> None:
        tenth = event.done * 10 // event.total if event.total else 0
        if tenth > self.printed:
            self.printed = tenth
            print(f"  {tenth * 10:3d}% of {event.total / 1e6:.1f} MB  {event.message}", flush=True)
