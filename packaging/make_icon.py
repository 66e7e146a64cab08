"""Draw the application icon and write it as a multi-size Windows .ico (PNG-compressed entries).

    python packaging/make_icon.py [OUT.ico]      (default: packaging/SegFormerStudio.ico)

Only numpy and OpenCV (both app dependencies) are needed — no Pillow. The icon is a dark rounded
tile with a grey MR-like slice and the three organs in the overlay colours (large bowel, small
bowel, stomach). ``build.py`` calls :func:`ensure_icon` so a fresh checkout builds without a
committed binary; delete the .ico to redraw it.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_ICON = HERE / "SegFormerStudio.ico"
SIZES = (16, 24, 32, 48, 64, 128, 256)
# BGR overlay colours: large bowel orange, small bowel green, stomach blue.
ORGAN_COLOURS = ((40, 140, 255), (90, 200, 60), (230, 140, 40))


def draw(size: int = 1024) -> np.ndarray:
    """The icon as a BGRA uint8 image of ``size`` × ``size`` (drawn large, then downsampled)."""
    s = size
    img = np.zeros((s, s, 4), np.uint8)
    tile = np.zeros((s, s), np.uint8)
    r, m = int(0.18 * s), int(0.04 * s)
    cv2.rectangle(tile, (m + r, m), (s - m - r, s - m), 255, -1)
    cv2.rectangle(tile, (m, m + r), (s - m, s - m - r), 255, -1)
    for cx, cy in ((m + r, m + r), (s - m - r, m + r), (m + r, s - m - r), (s - m - r, s - m - r)):
        cv2.circle(tile, (cx, cy), r, 255, -1, cv2.LINE_AA)
    img[..., :3] = (48, 36, 30)
    img[..., 3] = tile
    body = np.zeros((s, s), np.uint8)
    cv2.ellipse(body, (s // 2, int(0.53 * s)), (int(0.36 * s), int(0.3 * s)), 0, 0, 360, 255, -1,
                cv2.LINE_AA)
    grey = np.full((s, s, 3), 150, np.uint8)
    alpha = (body.astype(np.float32) / 255.0)[..., None] * 0.85
    img[..., :3] = (img[..., :3] * (1 - alpha) + grey * alpha).astype(np.uint8)
    shapes = (
        lambda c, col: cv2.ellipse(c, (s // 2, int(0.56 * s)), (int(0.27 * s), int(0.21 * s)), 0,
                                   200, 340, col, int(0.07 * s), cv2.LINE_AA),  # large bowel arc
        lambda c, col: cv2.circle(c, (int(0.45 * s), int(0.62 * s)), int(0.08 * s), col, -1,
                                  cv2.LINE_AA),  # small bowel
        lambda c, col: cv2.ellipse(c, (int(0.6 * s), int(0.45 * s)), (int(0.1 * s), int(0.07 * s)),
                                   -25, 0, 360, col, -1, cv2.LINE_AA),  # stomach
    )
    for shape, colour in zip(shapes, ORGAN_COLOURS):
        mask = np.zeros((s, s), np.uint8)
        shape(mask, 255)
        a = (mask.astype(np.float32) / 255.0)[..., None] * 0.9
        img[..., :3] = (img[..., :3] * (1 - a) + np.array(colour, np.float32) * a).astype(np.uint8)
    return img


def write_ico(path: Path, image: np.ndarray, sizes=SIZES) -> Path:
    """Write ``image`` (BGRA) as an .ico with one PNG-compressed entry per size (Vista and later)."""
    entries = []
    for size in sizes:
        small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode(".png", small)
        if not ok:
            raise RuntimeError(f"could not encode the {size} px icon")
        entries.append((size, png.tobytes()))
    header = struct.pack("<HHH", 0, 1, len(entries))
    offset = len(header) + 16 * len(entries)
    directory, blobs = b"", b""
    for size, data in entries:
        dim = 0 if size >= 256 else size  # 0 means 256 in an ICONDIRENTRY
        directory += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset + len(blobs))
        blobs += data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + directory + blobs)
    return path


def ensure_icon(path: Path = DEFAULT_ICON) -> Path:
    if not path.is_file():
        write_ico(path, draw())
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ICON
    print(write_ico(target, draw()))
