"""Shared fixtures: an isolated user data folder and demo datasets made by the real generator."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def studio_home(tmp_path_factory) -> Path:
    """Keep every test's cache, runs and logs out of the real user data folder."""
    home = tmp_path_factory.mktemp("studio home")
    os.environ["SEGFORMER_STUDIO_HOME"] = str(home)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    return home


@pytest.fixture(autouse=True)
def _keep_studio_home(studio_home):
    """A test that runs ``main(["--home", ...])`` in this process moves the data folder: move it
    back afterwards, so no test leaks its home into the next."""
    yield
    os.environ["SEGFORMER_STUDIO_HOME"] = str(studio_home)


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """The default demo dataset (6 cases, 8 case-days, 288 slices), read-only for tests."""
    from core.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo data") / "demo")


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A small demo dataset (4 cases, 12 slices per scan) for quick tests."""
    from core.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("small demo") / "demo", cases=4,
                                 slices_per_scan=12, seed=3)


@pytest.fixture
def demo_copy(small_demo, tmp_path) -> Path:
    """A writable copy of the small demo dataset, for tests that break it on purpose; its path has
    a space and non-ASCII characters, as real users' paths do."""
    target = tmp_path / "dätä set" / "demo"
    shutil.copytree(small_demo, target)
    return target


@pytest.fixture(scope="session")
def trained_run(demo_dataset, tmp_path_factory):
    """B0 trained for ~190 steps at 96 px on the default demo data (it must visibly learn):
    ``(run_dir, events, TrainingFinished)``. Shared by the training, prediction and viewer tests."""
    from core.config import StudioConfig, apply_overrides
    from core.session import TrainingSession

    run_dir = tmp_path_factory.mktemp("runs") / "e2e run"
    events = []
    config = apply_overrides(StudioConfig(), [
        "data.image_size=96", "data.num_folds=3", "train.batch_size=8", "train.epochs=8",
        "train.lr=1e-3", "train.log_every_n_steps=2"])
    result = TrainingSession(config, demo_dataset, run_dir, on_event=events.append).run()
    return run_dir, events, result
