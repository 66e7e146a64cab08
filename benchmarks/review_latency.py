"""How fast is the Review page on an already-predicted case-day? Opening one of 144 slices of
360×310 (the session has the result) must paint the first slice in < 0.5 s; scrolling must redraw
≥ 30 slices/s, in each overlay mode; with three planes, dragging the cross-hair (every step moves
both reformatted planes: coronal and sagittal recomposed and painted, the axial lines moved) must
redraw ≥ 30 times/s. The ratio column compares each rate with the one-plane fill scroll of the same
run.

    .venv/bin/python benchmarks/review_latency.py [--slices 144]

The case-day is synthetic (16-bit noise with elliptic organ masks, prediction and truth shifted), so
no model is needed; the timings include composing the overlay and painting the view. Prints a table.
Runs offscreen unless QT_QPA_PLATFORM says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HEIGHT, WIDTH = 310, 360
OPEN_GOAL_S = 0.5
SCROLL_GOAL = 30.0


def synthetic_case_day(depth: int):
    import numpy as np

    from core.data.scan import SliceRecord
    from core.metrics import score_case_day
    from core.review import CaseDayResult

    rng = np.random.default_rng(0)
    records = [SliceRecord(f"case1_day1_slice_{i + 1:04d}", 1, 1, i + 1, Path("none.png"), WIDTH,
                           HEIGHT, (1.5, 1.5)) for i in range(depth)]
    images = rng.integers(0, 3000, (depth, HEIGHT, WIDTH), dtype=np.uint16)
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    truth = np.zeros((depth, 3, HEIGHT, WIDTH), bool)
    for k, (r, c) in enumerate(((120, 120), (180, 200), (110, 250))):
        for z in range(depth):
            radius = 40 * np.sin(np.pi * z / depth) + 5
            truth[z, k] = (rows - r) ** 2 / 1.4 + (cols - c) ** 2 < radius ** 2
    prediction = np.roll(truth, 4, axis=-1)
    score = score_case_day("case1_day1", prediction, truth)
    return CaseDayResult("case1_day1", records, images, prediction, truth, score)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=144)
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    from gui.app import configure_application
    from gui.pages.review_page import ReviewPage
    from gui.state import StudioState

    app = QApplication([])
    configure_application(app)
    result = synthetic_case_day(args.slices)
    page = ReviewPage(StudioState())
    page.resize(1440, 860)
    page.show()
    app.processEvents()

    def paint() -> None:
        for view in page.views:
            if view.isVisible():
                view.viewport().repaint()
        app.processEvents()

    def scroll_rate() -> float:
        """Slices per second, stepping from the first slice to the last and painting each."""
        page.viewer.set_slice(0)
        start = time.perf_counter()
        for _ in range(result.depth - 1):
            page.viewer.step_slice(1)
            paint()
        return (result.depth - 1) / (time.perf_counter() - start)

    start = time.perf_counter()
    page.show_result(result)
    paint()
    open_s = time.perf_counter() - start

    rows = [("open (first slice painted)", f"{open_s * 1000:.0f} ms", f"< {OPEN_GOAL_S * 1000:.0f} ms",
             open_s < OPEN_GOAL_S)]
    rates: dict[str, float] = {}
    for mode in ("fill", "contour", "errors"):
        page.viewer.set_errors(mode == "errors")
        page.viewer.set_mode("prediction", "fill" if mode == "fill" else "contour")
        rate = scroll_rate()
        rows.append((f"scroll, {mode}", f"{rate:.0f} slices/s", f"≥ {SCROLL_GOAL:.0f} slices/s",
                     rate >= SCROLL_GOAL))
        rates[mode] = rate

    # Three planes: scroll the axial slice, then drag the cross-hair diagonally (row and column
    # change at every step, so both reformats are recomposed).
    page.viewer.set_errors(False)
    page.viewer.set_mode("prediction", "fill")
    page.layout_box.setCurrentIndex(1)
    app.processEvents()
    rate = scroll_rate()
    rows.append(("three planes, scroll", f"{rate:.0f} slices/s", f"≥ {SCROLL_GOAL:.0f} slices/s",
                 rate >= SCROLL_GOAL))
    rates["three planes, scroll"] = rate
    steps = min(HEIGHT, WIDTH) - 1
    page.viewer.set_cursor(0, 0)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        page.sagittal_view.lines["vertical"].setValue((step + 0.5) * 1.5)  # drag: row
        page.coronal_view.lines["vertical"].setValue((step + 0.5) * 1.5)  # drag: column
        paint()
    rate = steps / (time.perf_counter() - start)
    rows.append(("three planes, drag cross-hair", f"{rate:.0f} moves/s", f"≥ {SCROLL_GOAL:.0f} /s",
                 rate >= SCROLL_GOAL))
    rates["three planes, drag cross-hair"] = rate
    if page.viewer.cursor != (steps, steps):
        print(f"error: the cross-hair ended at {page.viewer.cursor}, not {(steps, steps)}")
        return 1

    baseline = rates["fill"]
    print(f"Review page, {args.slices} slices of {WIDTH}×{HEIGHT}")
    print(f"{'measure':<32}{'value':>16}{'goal':>18}{'vs 1-plane fill':>17}  ok")
    for name, value, goal, ok in rows:
        key = name.removeprefix("scroll, ")
        ratio = f"{rates[key] / baseline:.2f}×" if key in rates else ""
        print(f"{name:<32}{value:>16}{goal:>18}{ratio:>17}  {'yes' if ok else 'NO'}")
    page.close()
    return 0 if all(row[3] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
