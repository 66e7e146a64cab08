"""Screenshots of every page, as a newcomer sees them (demo dataset, a short CPU training run).

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/make_screenshots.py docs/screenshots

Writes data.png, train.png, train_running.png, runs.png, runs_compare.png, review_fill.png, review_contour.png,
review_errors.png, review_three_planes.png, review_fold_summary.png, review_edit.png (the eraser
part-way through a correction), figure_example.png (a *Save figure* export), runs_finetune.png and
review_loop.png (a fine-tune on corrections beside its parent; Next to review). ``--edit-only`` makes
review_edit.png alone, on the demo's true masks (seconds, no training); ``--loop-only`` the two
fine-tune shots alone (a short run, then its fine-tune: a few minutes). Takes a few minutes on a CPU (it trains B0 at 128 px for 4 epochs, then for 3 with another
learning rate, to compare the two).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _helpers(app, window, out: Path):
    """``wait_for(condition, timeout_s)`` and ``shot(name, settle_s)`` (of ``window()``)."""

    def wait_for(condition, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError("the app did not reach the state for the next screenshot")
            app.processEvents()
            time.sleep(0.02)

    def shot(name: str, settle_s: float = 1.0) -> None:
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)
        window().grab().save(str(out / name))
        print("saved", out / name, flush=True)

    return wait_for, shot


def edit_shot(page, shot) -> None:
    """review_edit.png: Edit truth on, the stomach being corrected with the eraser: a stroke
    across it, the cursor circle where the stroke ends. The corrections go to a throw-away home."""
    from PySide6.QtCore import QPointF

    page.layout_box.setCurrentIndex(0)
    result = page.result
    page.viewer.set_mode("prediction", "contour")
    page.viewer.set_mode("truth", "fill")
    stomach = result.truth[:, 2].sum((1, 2))
    page.viewer.set_slice(int(stomach.argmax()))
    page.edit.edit_box.setChecked(True)
    page.edit.organ_box.setCurrentIndex(2)
    page.edit.eraser.setChecked(True)
    page.edit.size_box.setValue(3)
    rows, cols = result.truth[page.viewer.slice_index, 2].nonzero()
    y, x0, x1 = float(rows.mean()) + 0.5, float(cols.min()) - 2.0, float(cols.mean()) + 0.5
    page._paint("start", y, x0)
    for t in range(1, 21):
        page._paint("move", y, x0 + (x1 - x0) * t / 20)
    page._paint("finish", y, x1)
    view = page.slice_view
    view._hover(view.overlay_item.mapToScene(QPointF(x1, y)))
    shot("review_edit.png", 1.0)
    page.edit.edit_box.setChecked(False)


def loop_shots(window, wait_for, shot, parent_run: Path) -> None:
    """runs_finetune.png and review_loop.png: the stomach erased on its last slices (as the
    eraser would), *Fine-tune on corrections* from the Review page, then the two runs side by side on the
    Runs page and, on Review, the fine-tune's comparison bar and the slice *Next to review* chose."""
    from PySide6.QtWidgets import QScrollArea

    from core.data.corrections import Corrections

    index = window.state.index
    corrections = Corrections.for_dataset(window.state.dataset_dir)
    # The stomach's last 6 slices, where it is smallest: the ends of organs are where the
    # UW-Madison labels are least sure.
    erased = sorted((r for r in index.slices if r.case_day == "case1_day23" and r.rles
                     and r.rles["stomach"]), key=lambda r: r.slice_num)[-6:]
    for record in erased:
        corrections.set_slice(record.id, {**record.rles, "stomach": ""})
    page = window.review_page
    window.tabs.setCurrentWidget(page)
    page.refresh_runs()
    page.select(run_dir=parent_run)
    page._update_buttons()
    page.loop.finetune_button.click()
    wait_for(lambda: window.runner.state == "idle", 1800)
    child = window.runner.run_dir
    runs = window.runs_page
    window.tabs.setCurrentWidget(runs)
    runs.refresh()
    runs.select_run(child)
    shot("runs_finetune.png", 1.5)
    window.tabs.setCurrentWidget(page)
    page.refresh_runs()
    page.select(run_dir=child)
    page.next_to_review()
    wait_for(lambda: page.ranking is not None and page.result is not None
             and not page.task.is_running, 900)
    panel = next(w for w in page.findChildren(QScrollArea) if w.widget().isAncestorOf(page.loop))
    panel.ensureWidgetVisible(page.loop)
    shot("review_loop.png", 1.5)


def _open_app(out: Path):
    """A throw-away user data folder, the app with its main window (1400×880) on the demo
    dataset: ``(window, wait_for, shot)``."""
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="studio-shots-"))
    os.environ["SEGFORMER_STUDIO_HOME"] = str(home)
    from PySide6.QtWidgets import QApplication

    from gui.app import configure_application
    from gui.main_window import MainWindow
    from gui.settings import StudioSettings

    app = QApplication(["SegFormer Studio"])
    configure_application(app)
    window = MainWindow(StudioSettings(home / "settings.ini"))
    wait_for, shot = _helpers(app, lambda: window, out)
    window.resize(1400, 880)
    window.show()
    window.data_page.create_demo()
    wait_for(lambda: window.state.index is not None, 180)
    return window, wait_for, shot


def loop_only(out: Path) -> None:
    from core.config import apply_overrides
    from gui.presets import load_preset

    window, wait_for, shot = _open_app(out)
    window.tabs.setCurrentWidget(window.train_page)
    window.train_page.form.set_config(apply_overrides(load_preset("Quick (CPU)"), [
        "data.image_size=128", "train.epochs=4", "train.lr=1e-3", "data.num_folds=3",
        "train.log_every_n_steps=2"]))
    window.train_page.start_button.click()
    wait_for(lambda: window.runner.state == "idle", 1800)
    loop_shots(window, wait_for, shot, window.runner.run_dir)
    window.close()


def edit_only(out: Path) -> None:
    window, wait_for, shot = _open_app(out)
    page = window.review_page
    window.tabs.setCurrentWidget(page)
    page.open_case_day("case1_day23")  # no run yet: the true masks only
    wait_for(lambda: page.result is not None and not page.task.is_running, 600)
    edit_shot(page, shot)
    window.close()


def main(out: Path) -> None:
    from core.config import apply_overrides
    from gui.presets import load_preset

    window, wait_for, shot = _open_app(out)
    shot("data.png")

    window.tabs.setCurrentWidget(window.train_page)
    window.train_page.apply_preset("Quick (CPU)")
    wait_for(lambda: window.train_page.memory.estimate is not None, 120)
    shot("train.png", 2.0)
    config = apply_overrides(load_preset("Quick (CPU)"), [
        "data.image_size=128", "train.epochs=4", "train.lr=1e-3", "data.num_folds=3",
        "train.log_every_n_steps=2"])
    window.train_page.form.set_config(config)
    window.train_page.start_button.click()
    wait_for(lambda: len(window.train_page.charts.mean_dice.x) >= 3, 1200)
    shot("train_running.png", 1.5)
    wait_for(lambda: window.runner.state == "idle", 1200)

    first_run = window.runner.run_dir
    # A second, shorter run with another learning rate, to compare with the first.
    window.train_page.form.set_config(apply_overrides(config, ["train.lr=3e-4", "train.epochs=3"]))
    window.train_page.start_button.click()
    wait_for(lambda: window.runner.state == "idle", 1200)
    second_run = window.runner.run_dir

    runs = window.runs_page
    window.tabs.setCurrentWidget(runs)
    runs.select_run(first_run)
    runs.name_edit.setText("B0 128 px, lr 1e-3")
    runs.note_edit.setText("baseline on the demo data")
    runs.name_edit.editingFinished.emit()
    shot("runs.png")
    runs.select_runs([first_run, second_run])
    shot("runs_compare.png", 1.5)

    page = window.review_page
    window.tabs.setCurrentWidget(page)
    page.refresh_runs()
    page.select(case_day="case1_day23")  # a non-square 360×310 case-day
    page.show_selected()
    wait_for(lambda: page.result is not None and not page.task.is_running, 600)
    result = page.result
    page.viewer.set_slice(max(range(result.depth), key=lambda i: result.truth[i].sum()))
    page.viewer.set_mode("prediction", "fill")
    page.viewer.set_mode("truth", "contour")
    shot("review_fill.png")
    page.viewer.set_mode("prediction", "contour")
    page.viewer.set_thickness(2)
    shot("review_contour.png")
    page.viewer.set_errors(True)
    shot("review_errors.png")
    page.viewer.set_errors(False)
    page.viewer.set_thickness(1)
    page.layout_box.setCurrentIndex(1)  # axial, coronal and sagittal with the cross-hair
    shown = page.viewer.slice_index
    rows = result.truth[shown].any(0).any(1).nonzero()[0]
    cols = result.truth[shown].any(0).any(0).nonzero()[0]
    if rows.size:
        page.viewer.set_cursor(int(rows.mean()), int(cols.mean()))
    shot("review_three_planes.png", 1.5)
    page.score_fold()
    wait_for(lambda: page.fold.scores and not page.task.is_running, 900)
    from PySide6.QtWidgets import QScrollArea

    panel = next(w for w in page.findChildren(QScrollArea) if w.widget().isAncestorOf(page.fold))
    panel.ensureWidgetVisible(page.fold)  # the fold summary sits at the bottom of the side panel
    shot("review_fold_summary.png", 1.5)
    page.export_view(out / "figure_example.png", scale=2)
    edit_shot(page, shot)
    loop_shots(window, wait_for, shot, first_run)
    window.close()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a not in ("--edit-only", "--loop-only")]
    target = Path(args[0]) if args else ROOT / "docs" / "screenshots"
    chosen = (edit_only if "--edit-only" in sys.argv else
              loop_only if "--loop-only" in sys.argv else main)
    chosen(target)
