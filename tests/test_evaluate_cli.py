"""``main.py evaluate``: scores on the demo dataset, and one-line errors for bad submissions."""

import csv
import json
import subprocess
import sys

import pytest

from core.data import ORGANS
from core.data.scan import load_masks, scan_dataset
from core.export import write_submission
from tests.conftest import REPO


def evaluate(*args):
    return subprocess.run([sys.executable, "main.py", "evaluate", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, encoding="utf-8")


@pytest.fixture(scope="module")
def truth_submission(small_demo, tmp_path_factory):
    """The small demo's ground truth written as a submission, and its dataset index."""
    index = scan_dataset(small_demo)
    path = tmp_path_factory.mktemp("truth") / "submission.csv"
    write_submission(path, ((r.id, load_masks(r)) for r in index.slices))
    return path, index


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_the_ground_truth_scores_exactly_one(small_demo, truth_submission):
    path, index = truth_submission
    done = evaluate("--data", small_demo, "--submission", path, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "dice": 1.0, "hausdorff": 0.0, "score": 1.0,
        "dice_per_organ": {organ: 1.0 for organ in ORGANS},
        "hausdorff_per_organ": {organ: 0.0 for organ in ORGANS},
        "slices": len(index.slices)}


def test_a_worse_submission_scores_what_the_metrics_say(small_demo, truth_submission, tmp_path):
    # The stomach predicted as the whole image wherever it is present: more than 10× the truth's
    # voxels, so its Hausdorff is 1 (and would not be, were prediction and truth swapped).
    _, index = truth_submission
    path = tmp_path / "submission.csv"

    def rows():
        for record in index.slices:
            masks = load_masks(record)
            masks[2] = masks[2].any()
            yield record.id, masks

    write_submission(path, rows())
    done = evaluate("--data", small_demo, "--submission", path, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["hausdorff_per_organ"]["stomach"] == 1.0
    assert result["hausdorff_per_organ"]["large_bowel"] == 0.0
    assert result["dice_per_organ"]["large_bowel"] == 1.0
    assert 0.0 < result["dice_per_organ"]["stomach"] < 0.5
    assert result["score"] == pytest.approx(0.4 * result["dice"] + 0.6 * (1 - result["hausdorff"]))
    assert result["score"] < 1.0


def test_the_table_and_a_subset_of_case_days(small_demo, truth_submission, tmp_path):
    path, index = truth_submission
    case_day = index.slices[-1].case_day
    ids = {r.id for r in index.case_days()[case_day]}
    subset = tmp_path / "subset.csv"
    rows = rows_of(path)
    with open(subset, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([rows[0]] + [row for row in rows[1:] if row[0] in ids])
    done = evaluate("--data", small_demo, "--submission", subset, "--ids", case_day)
    assert done.returncode == 0, done.stderr
    assert f"{len(ids)} slices in 1 case-day\n" in done.stdout
    assert "score = 0.4 * Dice + 0.6 * (1 - Hausdorff) = 1.0000" in done.stdout
    for organ in ORGANS:
        assert f"{organ:<14}  1.0000     0.0000" in done.stdout
    done = evaluate("--data", small_demo, "--submission", subset)
    first = index.slices[0].id
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: subset.csv: no rows for {first} and ")


def corrupt(rows, how):
    """A copy of submission ``rows`` (header first) broken in one way; returns rows, row number."""
    rows = [list(row) for row in rows]
    n = 17                                           # a row in the file, counting the header as 1
    if how == "missing id":
        del rows[1:4]
    elif how == "unknown class":
        rows[n - 1][1] = "liver"
    elif how == "duplicate row":
        rows.insert(n, list(rows[n - 1]))
        n += 1
    elif how == "bad RLE":
        rows[n - 1][2] = "5 3 9"
    elif how == "past the image":
        rows[n - 1][2] = "70000 900000"
    return rows, n


BAD_SUBMISSIONS = {
    "missing id": "error: submission.csv: no rows for {first}; every slice scored needs three rows",
    "unknown class": "error: submission.csv row {n}: unknown class 'liver'",
    "duplicate row": "error: submission.csv row {n}: second row for",
    "bad RLE": "error: submission.csv row {n}: bad RLE in 'predicted': odd number of values (3)",
    "past the image": "error: submission.csv row {n}: bad RLE in 'predicted': segmentation runs past the image "
                      "(run ends at pixel 969999 > ",
}


@pytest.mark.parametrize("how", BAD_SUBMISSIONS)
def test_bad_submissions_exit_2_with_one_line_naming_the_row(small_demo, truth_submission, tmp_path,
                                                            how):
    path, index = truth_submission
    rows, n = corrupt(rows_of(path), how)
    bad = tmp_path / "submission.csv"
    with open(bad, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    done = evaluate("--data", small_demo, "--submission", bad)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    expected = BAD_SUBMISSIONS[how].format(n=n, first=index.slices[0].id)
    assert lines[0].startswith(expected), lines[0]


def test_a_dataset_without_train_csv_or_case_day_is_a_clear_error(demo_copy, tmp_path):
    submission = tmp_path / "submission.csv"
    submission.write_text("id,class,predicted\n", encoding="utf-8")
    done = evaluate("--data", demo_copy, "--submission", submission, "--ids", "case99_day1")
    assert done.returncode == 2
    assert done.stderr.startswith("error: --ids: case-day 'case99_day1' is not in the dataset (it "
                                  "has case1_day10, ")
    (demo_copy / "train.csv").unlink()
    done = evaluate("--data", demo_copy, "--submission", submission)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: '{demo_copy}' has no train.csv, so there is no truth to score against; evaluate "
        "needs a labelled dataset"]
